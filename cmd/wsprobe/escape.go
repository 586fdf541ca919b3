package main

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// clean returns server-supplied text fit for a terminal: what a terminal
// would act on rather than show (escape sequences, bell, carriage return,
// newline, bidi overrides) is escaped as Go would write it, ESC as \x1b,
// CR as \r, U+202E as \u202e; bytes that are not UTF-8 as \xNN. Printable
// UTF-8, spaces included, is kept as is, and so is a backslash: the output
// is for reading, not for unquoting.
func clean(s string) string {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !shown(r, n) {
			break
		}
		i += n
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case shown(r, n):
			b.WriteString(s[i : i+n])
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < utf8.RuneSelf:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xFFFF:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += n
	}
	return b.String()
}

// shown reports whether a decoded rune is printed as is: a graphic
// character (letters, marks, numbers, punctuation, symbols, spaces), not a
// control, format or separator character, nor a byte that did not decode.
func shown(r rune, size int) bool {
	if r < utf8.RuneSelf {
		return r >= ' ' && r != 0x7f
	}
	return !(r == utf8.RuneError && size == 1) && unicode.IsGraphic(r)
}
