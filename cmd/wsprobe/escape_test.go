package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestClean(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"ws://b.example/rooms/7?x=1", "ws://b.example/rooms/7?x=1"},
		{"héllo wörld, 日本語 🙂 \\x1b stays", "héllo wörld, 日本語 🙂 \\x1b stays"},
		{"\x1b[2J\x1b]0;title\x07", `\x1b[2J\x1b]0;title\x07`},
		{"over\rwrite", `over\rwrite`},
		{"two\nlines\tand tab", `two\nlines\tand tab`},
		{"nul\x00del\x7f", `nul\x00del\x7f`},
		{"c1 \u009b31m", `c1 \u009b31m`},
		{"bidi \u202egnp.exe", `bidi \u202egnp.exe`},
		{"zero\u200bwidth", `zero\u200bwidth`},
		{"line\u2028sep", `line\u2028sep`},
		{"tag \U000E0041", `tag \U000e0041`},
		{"bad \xff\xfe utf8", `bad \xff\xfe utf8`},
		{"real \uFFFD replacement", "real \uFFFD replacement"},
		{"nbsp\u00a0ok", "nbsp\u00a0ok"},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, clean(tc.in), "clean(%q)", tc.in)
	}
}
