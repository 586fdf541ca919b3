package wsredirect

import (
	"net/http"
	"strings"
)

// IsUpgrade reports whether r opens a WebSocket: an RFC 6455 handshake over
// HTTP/1.1 ([IsHTTP1Upgrade]) or an RFC 8441 extended CONNECT over HTTP/2
// ([IsExtendedConnect]). It allocates nothing.
func IsUpgrade(r *http.Request) bool {
	return IsHTTP1Upgrade(r) || IsExtendedConnect(r)
}

// IsHTTP1Upgrade reports whether r is an RFC 6455 opening handshake: method
// GET, HTTP/1.1 or later, a Connection header listing the token "upgrade" and
// an Upgrade header listing the token "websocket". Both headers are
// comma-separated token lists matched case-insensitively across every header
// line; a line holding anything but tokens (such as "x;y, Upgrade") does not
// match, and neither does a longer token ("Upgrade-Insecure",
// "websocket/13"). Sec-WebSocket-Key and -Version are left to the upgrader.
func IsHTTP1Upgrade(r *http.Request) bool {
	if r.Method != http.MethodGet || r.ProtoMajor != 1 || r.ProtoMinor < 1 {
		return false
	}
	return headerHasToken(r.Header["Upgrade"], "websocket") &&
		headerHasToken(r.Header["Connection"], "upgrade")
}

// IsExtendedConnect reports whether r is an RFC 8441 WebSocket handshake: an
// HTTP/2 CONNECT carrying the pseudo-header ":protocol: websocket". Go's
// server delivers such requests only when the process started with
// GODEBUG=http2xconnect=1.
func IsExtendedConnect(r *http.Request) bool {
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

// asciiEqualFold compares s with lower, which must be lower-case ASCII.
func asciiEqualFold(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// hostPattern is a compiled host to match: exact ("chat.example.com") or a
// wildcard over subdomains ("*.example.com" matches a.example.com and
// a.b.example.com, not example.com), with or without a port.
type hostPattern struct {
	name     string // lower case, without "*." and port; for wildcards it starts with "."
	port     string // "" matches any port
	wildcard bool
}

func parseHostPattern(p string) (hostPattern, bool) {
	var hp hostPattern
	if rest, ok := strings.CutPrefix(p, "*."); ok {
		hp.wildcard = true
		p = rest
	}
	name, port := splitHostPort(p)
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == "" || strings.ContainsAny(name, "*/?#@ ") || (port != "" && !isDigits(port)) {
		return hp, false
	}
	if hp.wildcard {
		name = "." + name
	}
	hp.name, hp.port = name, port
	return hp, true
}

// match reports whether host, as sent in a Host header, matches the pattern.
func (hp *hostPattern) match(host string) bool {
	name, port := splitHostPort(host)
	if hp.port != "" && port != hp.port {
		return false
	}
	name = strings.TrimSuffix(name, ".")
	if hp.wildcard {
		return len(name) > len(hp.name) && asciiEqualFold(name[len(name)-len(hp.name):], hp.name)
	}
	return asciiEqualFold(name, hp.name)
}

// splitHostPort splits "host:port", "[v6]:port", "host" and "[v6]" without
// failing: a request's Host header is matched, not validated.
func splitHostPort(hostport string) (host, port string) {
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return hostport, ""
		}
		host, rest := hostport[1:end], hostport[end+1:]
		if p, ok := strings.CutPrefix(rest, ":"); ok {
			return host, p
		}
		return host, ""
	}
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && strings.IndexByte(hostport[:i], ':') < 0 {
		return hostport[:i], hostport[i+1:]
	}
	return hostport, ""
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// pathPattern is a compiled path to match: exact ("/ws") or a subtree
// ("/ws/*" matches /ws, /ws/ and /ws/anything, but not /wsx). Patterns are
// matched against the request's escaped path, so "%2F" never acts as a
// separator.
type pathPattern struct {
	path   string // without the trailing "/*"
	prefix bool
}

func parsePathPattern(p string) (pathPattern, bool) {
	var pp pathPattern
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?#%") || strings.Count(p, "*") > 1 {
		return pp, false
	}
	if rest, ok := strings.CutSuffix(p, "/*"); ok {
		pp.prefix, p = true, rest
	} else if strings.Contains(p, "*") {
		return pp, false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f {
			return pp, false
		}
	}
	pp.path = p
	return pp, true
}

// match reports whether the escaped path matches and, for a subtree, returns
// the part after the pattern's path (empty or starting with "/").
func (pp *pathPattern) match(escaped string) (rest string, ok bool) {
	if !pp.prefix {
		return "", escaped == pp.path
	}
	rest, ok = strings.CutPrefix(escaped, pp.path)
	if !ok || (rest != "" && rest[0] != '/') {
		return "", false
	}
	return rest, true
}
