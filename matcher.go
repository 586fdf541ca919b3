package wsredirect

import (
	"net/http"
)

// IsUpgrade reports whether r opens a WebSocket: an RFC 6455 handshake over
// HTTP/1.1 or an RFC 8441 extended CONNECT over HTTP/2. It checks what
// routing needs and allocates nothing; Sec-WebSocket-Key and -Version are
// left to the upgrader, which answers a bad one with 400.
func IsUpgrade(r *http.Request) bool {
	return isHTTP1Upgrade(r) || isExtendedConnect(r)
}

// isHTTP1Upgrade reports whether r is an RFC 6455 opening handshake: method
// GET, HTTP/1.1 or later, a Connection header listing the token "upgrade" and
// an Upgrade header listing the token "websocket". Both headers are
// comma-separated token lists matched case-insensitively across every header
// line; a line holding anything but tokens (such as "x;y, Upgrade") does not
// match, and neither does a longer token ("Upgrade-Insecure",
// "websocket/13"). Sec-WebSocket-Key and -Version are left to the upgrader.
func isHTTP1Upgrade(r *http.Request) bool {
	if r.Method != http.MethodGet || r.ProtoMajor != 1 || r.ProtoMinor < 1 {
		return false
	}
	return headerHasToken(r.Header["Upgrade"], "websocket") &&
		headerHasToken(r.Header["Connection"], "upgrade")
}

// isExtendedConnect reports whether r is an RFC 8441 WebSocket handshake: an
// HTTP/2 CONNECT carrying the pseudo-header ":protocol: websocket". Go's
// server delivers such requests only when the process started with
// GODEBUG=http2xconnect=1.
func isExtendedConnect(r *http.Request) bool {
	if r.Method != http.MethodConnect || r.ProtoMajor != 2 {
		return false
	}
	p := r.Header[":protocol"]
	return len(p) == 1 && len(p[0]) == len("websocket") && lettersEqualFold(p[0], "websocket")
}

// headerHasToken reports whether any of the header lines is a well-formed
// token list containing token (given in lower case).
func headerHasToken(lines []string, token string) bool {
	for _, line := range lines {
		if listHasToken(line, token) {
			return true
		}
	}
	return false
}

// listHasToken parses one header line as #token (RFC 9110 §5.6.1): elements
// separated by commas with optional whitespace, empty elements allowed. It
// returns false for a line with any element that is not a token, so a
// malformed line never counts as a match. token is lower-case letters.
func listHasToken(s, token string) bool {
	if len(s) == len(token) {
		// The common line is the token alone; nothing else of that length
		// can contain it.
		return lettersEqualFold(s, token)
	}
	found := false
	for i := 0; i < len(s); {
		for i < len(s) && listClass[s[i]] == classSpace {
			i++
		}
		// The element sought is compared whole rather than scanned.
		if end := i + len(token); end <= len(s) && s[i]|0x20 == token[0] && lettersEqualFold(s[i:end], token) &&
			(end == len(s) || listClass[s[end]] != classToken) {
			found, i = true, end
		} else {
			for i < len(s) && listClass[s[i]] == classToken {
				i++
			}
		}
		for i < len(s) && listClass[s[i]] == classSpace {
			i++
		}
		if i < len(s) {
			if s[i] != ',' {
				return false
			}
			i++
		}
	}
	return found
}

// lettersEqualFold compares s with lower, which must be lower-case ASCII
// letters of the same length: setting bit 0x20 folds only 'A'-'Z' onto
// them, so it can be done a word at a time.
func lettersEqualFold(s, lower string) bool {
	const fold8, fold4 = 0x2020202020202020, 0x20202020
	switch n := len(lower); {
	case n >= 8:
		return load64(s, 0)|fold8 == load64(lower, 0) && load64(s, n-8)|fold8 == load64(lower, n-8)
	case n >= 4:
		return load32(s, 0)|fold4 == load32(lower, 0) && load32(s, n-4)|fold4 == load32(lower, n-4)
	}
	for i := 0; i < len(lower); i++ {
		if s[i]|0x20 != lower[i] {
			return false
		}
	}
	return true
}

// load64 and load32 read little-endian words; the compiler turns each into
// one load.
func load64(s string, i int) uint64 {
	_ = s[i+7]
	return uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
		uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
}

func load32(s string, i int) uint32 {
	_ = s[i+3]
	return uint32(s[i]) | uint32(s[i+1])<<8 | uint32(s[i+2])<<16 | uint32(s[i+3])<<24
}

// Classes of bytes in a token list.
const (
	classOther = iota
	classToken // RFC 9110 tchar
	classSpace // OWS: space or tab
	classComma
)

var listClass = func() (t [256]uint8) {
	for c := '0'; c <= '9'; c++ {
		t[c] = classToken
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = classToken
		t[c-'a'+'A'] = classToken
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = classToken
	}
	t[' '], t['\t'], t[','] = classSpace, classSpace, classComma
	return t
}()
