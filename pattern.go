package wsredirect

import (
	"fmt"
	"net/url"
	"strings"
)

// Host, path and origin patterns, compiled once when a rule or the Options
// are built and matched against request data without allocating.

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

// hostPatternError says how a bad host pattern is spelt right, when that can
// be told.
func hostPatternError(p string) error {
	hint := `want a host name such as "chat.example.com", "chat.example.com:8443" or "*.example.com"`
	switch {
	case strings.Contains(p, "://"):
		if u, err := url.Parse(p); err == nil && u.Host != "" {
			hint = fmt.Sprintf("want the host alone: %q", u.Host)
		}
	case strings.HasPrefix(p, "*") && !strings.HasPrefix(p, "*."):
		hint = fmt.Sprintf("a wildcard stands for whole labels: want %q", "*."+strings.TrimLeft(p, "*"))
	case strings.ContainsAny(p, "/?#"):
		if host, _, _ := strings.Cut(p, "/"); host != "" && !strings.ContainsAny(host, "?#") {
			hint = fmt.Sprintf("want the host alone: %q", host)
		}
	}
	return fmt.Errorf("bad host pattern %q: %s", p, hint)
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

// pathPattern is a compiled path to match against the request's escaped
// path, so "%2F" never acts as a separator. Three forms:
//
//	/ws       exactly /ws
//	/ws/*     /ws, /ws/ and everything below (not /wsx)
//	/ws/      /ws/ and everything below, not /ws (net/http's meaning)
type pathPattern struct {
	path      string // without the trailing "/*" or "/"
	prefix    bool
	needSlash bool // the trailing-slash form: path itself does not match
}

func parsePathPattern(p string) (pathPattern, error) {
	var pp pathPattern
	if !strings.HasPrefix(p, "/") {
		return pp, fmt.Errorf("path pattern %q: want a path starting with /, such as /ws or /ws/*", p)
	}
	if i := strings.Index(p, "/:"); i >= 0 {
		// chi's and Express's old wildcard syntax, which would match only
		// a literal ":id".
		return pp, fmt.Errorf("path pattern %q: wildcards like :name are not supported: write %q to match every path below %s",
			p, p[:i+1]+"*", p[:i+1])
	}
	if i := strings.IndexByte(p, '{'); i >= 0 {
		return pp, fmt.Errorf("path pattern %q: wildcards like {name} are not supported: write %q to match every path below %s",
			p, p[:strings.LastIndexByte(p[:i], '/')+1]+"*", p[:strings.LastIndexByte(p[:i], '/')+1])
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f || c == '?' || c == '#' || c == '%' {
			return pp, fmt.Errorf("path pattern %q: byte %q is not allowed: write the path unescaped, without query or fragment", p, c)
		}
	}
	switch rest, ok := strings.CutSuffix(p, "/*"); {
	case ok:
		pp.prefix, p = true, rest
	case strings.HasSuffix(p, "/"):
		pp.prefix, pp.needSlash, p = true, true, p[:len(p)-1]
	}
	if strings.Contains(p, "*") {
		return pp, fmt.Errorf("path pattern %q: * stands only as the last segment: want /exact, /subtree/ or /subtree/*", p)
	}
	pp.path = p
	return pp, nil
}

// match reports whether the escaped path matches and, for a subtree, returns
// the part after the pattern's path (empty or starting with "/").
func (pp *pathPattern) match(escaped string) (rest string, ok bool) {
	if !pp.prefix {
		return "", escaped == pp.path
	}
	rest, ok = strings.CutPrefix(escaped, pp.path)
	if !ok || (rest != "" && rest[0] != '/') || (rest == "" && pp.needSlash) {
		return "", false
	}
	return rest, true
}

// originPattern is a compiled entry of Options.Origins. An origin is
// scheme, host and port: without a port, the pattern means the scheme's
// default port, not any port.
type originPattern struct {
	scheme, port string
	host         hostPattern
}

func parseOrigins(origins []string) ([]originPattern, error) {
	pats := make([]originPattern, 0, len(origins))
	for _, o := range origins {
		scheme, host, ok := strings.Cut(o, "://")
		hp, hok := parseHostPattern(host)
		if !ok || !hok || (scheme != "http" && scheme != "https") {
			return nil, fmt.Errorf("%q: want scheme://host[:port], such as https://app.example.com or https://*.example.com", o)
		}
		port := hp.port
		if port == "" {
			port = defaultPort(scheme)
		}
		hp.port = ""
		pats = append(pats, originPattern{scheme: scheme, port: port, host: hp})
	}
	return pats, nil
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}
