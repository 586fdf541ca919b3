package wsredirect

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Target is a place clients can be sent to: a configured base URL with a
// scheme, host, optional port and optional path prefix. A redirect's Location
// is the target followed by the request's (possibly rewritten) path and its
// query, so its authority only ever comes from configuration.
type Target struct {
	// Base URLs without a trailing slash in both scheme families; ws is
	// also the target's identity.
	ws, http string
	// What tells a request to this very node (isNodeOf): the Host header
	// clients send (default port dropped), the port (default included),
	// the host's IP when it is one, whether the host is a loopback name,
	// and whether there is a path prefix.
	authority string
	port      int
	ip        net.IP
	loopback  bool
	prefixed  bool
}

// ParseTarget parses a base URL such as "wss://b.example.com" or
// "http://10.0.0.7:8080/ws". The scheme is ws, wss, http or https (http maps
// to ws and https to wss); the URL has a host and no query, fragment or user
// info, and a port, when given, is 1-65535. Default ports and a port's
// leading zeros are dropped, the host is lower-cased and a trailing slash is
// removed, so equal places compare equal. A path is a prefix: the request's
// path follows it in a Location ("ws://b:9001/edge" sends /rooms/1 to
// ws://b:9001/edge/rooms/1).
func ParseTarget(s string) (*Target, error) {
	t, err := parseTarget(s)
	if err != nil {
		return nil, errorf("%v", err)
	}
	return t, nil
}

// wantTarget is what every target error shows, since "host:port" without a
// scheme is the usual slip.
const wantTarget = "want a base URL such as ws://127.0.0.1:8080 or wss://chat.example.com"

// parseTarget is ParseTarget with errors that do not repeat the package
// prefix, for the errors of rules and options to wrap.
func parseTarget(s string) (*Target, error) {
	if scheme, rest, ok := strings.Cut(s, "//"); ok && !strings.HasSuffix(scheme, ":") && isScheme(scheme) {
		return nil, fmt.Errorf("target %q: a colon is missing after the scheme: want %s://%s", s, strings.ToLower(scheme), rest)
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		if !strings.Contains(s, "://") && s != "" {
			// host:port, the usual slip.
			return nil, fmt.Errorf("target %q: no scheme: want ws://%s or wss://%s", s, strings.TrimLeft(s, "/"), strings.TrimLeft(s, "/"))
		}
		return nil, fmt.Errorf("target %q: %s", s, wantTarget)
	}
	var secure bool
	switch strings.ToLower(u.Scheme) {
	case "ws", "http":
	case "wss", "https":
		secure = true
	default:
		return nil, fmt.Errorf("target %q: scheme must be ws, wss, http or https: %s", s, wantTarget)
	}
	switch {
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("target %q: no host: %s", s, wantTarget)
	case u.User != nil:
		return nil, fmt.Errorf("target %q: user info is not allowed", s)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("target %q: query and fragment are not allowed", s)
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	for i := 0; i < len(host); i++ {
		if c := host[i]; c <= ' ' || c >= 0x7f {
			return nil, fmt.Errorf("target %q: the host must be ASCII: write an international name in its xn-- form", s)
		}
	}
	if port != "" {
		// One place, one spelling: ws://h:0080 is ws://h, and no port
		// outside 1-65535 is a place at all.
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("target %q: port %s: want 1-65535", s, port)
		}
		port = strconv.Itoa(n)
	}
	portN := 80
	if secure {
		portN = 443
	}
	if port != "" {
		portN, _ = strconv.Atoi(port)
	}
	if (port == "80" && !secure) || (port == "443" && secure) {
		port = ""
	}
	authority := host
	if strings.Contains(host, ":") {
		authority = "[" + host + "]"
	}
	if port != "" {
		authority = net.JoinHostPort(host, port)
	}
	prefix := strings.TrimSuffix(u.EscapedPath(), "/")
	wsScheme, httpScheme := "ws://", "http://"
	if secure {
		wsScheme, httpScheme = "wss://", "https://"
	}
	ip := net.ParseIP(host)
	return &Target{
		ws:        wsScheme + authority + prefix,
		http:      httpScheme + authority + prefix,
		authority: authority,
		port:      portN,
		ip:        ip,
		loopback:  host == "localhost" || ip != nil && ip.IsLoopback(),
		prefixed:  prefix != "",
	}, nil
}

// isScheme reports whether s is one of the schemes a target may have.
func isScheme(s string) bool {
	switch strings.ToLower(s) {
	case "ws", "wss", "http", "https":
		return true
	}
	return false
}

// MustParseTarget is like [ParseTarget] but panics on error. It is meant for
// targets written in code, such as those a user rule redirects to.
func MustParseTarget(s string) *Target {
	t, err := ParseTarget(s)
	if err != nil {
		panic(err)
	}
	return t
}

// String returns the target's base URL with a ws or wss scheme, or "<nil>".
func (t *Target) String() string {
	if t == nil {
		return "<nil>"
	}
	return t.ws
}

// Equal reports whether t and u name the same place (scheme family, host,
// port and path prefix).
func (t *Target) Equal(u *Target) bool {
	return t != nil && u != nil && t.ws == u.ws
}

// isNodeOf reports whether t names the node that received r, at the path it
// asked for: r came in on t's port, at t's IP (any loopback address for a
// loopback name), or for a host name, with t's authority as its Host. The
// local socket, which no client chooses, is required: a client that sends a
// node's name as Host to another node or port makes no node look like its
// own target. A redirect there only brings the client back.
func (t *Target) isNodeOf(r *http.Request) bool {
	if t.prefixed {
		return false
	}
	a, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr)
	switch {
	case !ok || a.Port != t.port:
		return false
	case t.ip != nil:
		return t.ip.Equal(a.IP)
	case t.loopback:
		return a.IP.IsLoopback()
	}
	return strings.EqualFold(t.authority, r.Host)
}

// location builds the absolute URL a client is sent to: the target's base,
// then path and query made safe to follow it. Whatever a rule returns, the
// scheme, host and port stay the target's: the path always starts with "/"
// (so "@evil.com", ".evil.com" or ":1234" cannot extend the authority), and
// every byte a URL may not carry raw — controls, space, non-ASCII, and a "?"
// or "#" in the path — is percent-encoded, so no Location header or close
// reason ever holds a control character or invalid UTF-8.
func (t *Target) location(httpScheme bool, path, rawQuery string) string {
	base := t.ws
	if httpScheme {
		base = t.http
	}
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	path = escapeRaw(path, true)
	if rawQuery == "" {
		return base + path
	}
	return base + path + "?" + escapeRaw(rawQuery, false)
}

// escapeRaw percent-encodes the bytes of an already escaped path or query
// that must not appear raw in a URL, leaving valid escapes as they are (a
// "%" that starts none is encoded itself). It allocates only when there is
// something to encode.
func escapeRaw(s string, path bool) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if mustEscape(s, i, path) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		if c := s[i]; mustEscape(s, i, path) {
			b = append(b, '%', hex[c>>4], hex[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

func mustEscape(s string, i int, path bool) bool {
	c := s[i]
	if c == '%' {
		return i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2])
	}
	return c <= ' ' || c >= 0x7f || c == '#' || c == '"' || c == '<' || c == '>' || c == '\\' ||
		c == '^' || c == '`' || c == '{' || c == '|' || c == '}' || (path && c == '?')
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
