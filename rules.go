package wsredirect

import (
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode"
	"unicode/utf8"
)

// Action is what a [Decision] does with an upgrade request.
type Action uint8

const (
	// Pass abstains: the next rule is asked, and when no rule decides the
	// request goes on to the wrapped handler (the app's upgrader).
	Pass Action = iota
	// Redirect sends the client to Decision.Target.
	Redirect
	// Refuse answers with Decision.Status (503 by default) and Retry-After.
	Refuse
)

func (a Action) String() string {
	switch a {
	case Pass:
		return "pass"
	case Redirect:
		return "redirect"
	case Refuse:
		return "refuse"
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// Decision is the outcome of a rule. The zero Decision abstains; a user rule
// redirects with Decision{Action: Redirect, Target: t} and refuses with
// Decision{Action: Refuse, RetryAfter: 10 * time.Second}.
type Decision struct {
	Action Action
	// Target is where a Redirect sends the client. A redirect to the node's
	// own target (Options.Self) that keeps the request's path is served
	// here instead: Decide reports it as Pass with Target and Rule set.
	Target *Target
	// Path, when not empty, replaces the request's escaped path in the
	// Location; the query string is always kept. By default the Location
	// has the path the client asked for, from the request line, so an
	// http.StripPrefix in front of the middleware does not lose it; a
	// target's own path goes before it.
	Path string
	// Status is the response code. For Redirect: 301, 302, 307 or 308 (an
	// RFC 8441 CONNECT gets 307 for 302 and 308 for 301, which keep its
	// method), or 0 for the rule's [Rule.WithStatus], 307 by default; any
	// other is the rule's bug, answered 500 and logged. For Refuse: 400 to
	// 599, 0 meaning 503.
	Status int
	// RetryAfter, when positive, is sent with a Refuse as Retry-After in
	// whole seconds, rounded up, and at most a day.
	RetryAfter time.Duration
	// Rule is the name of the rule that decided; the engine sets it.
	Rule string
	// Member is the ID of the fleet member a Shard rule chose ("" for
	// other rules); the engine sets it.
	Member string

	// Close and Elapsed are set by the middleware for Options.OnDecision:
	// whether the answer went out as a close frame (browsers) rather than
	// a status, and how long the rules took. Rules leave them zero.
	Close   bool
	Elapsed time.Duration
}

// RuleFunc is the shape of every rule, built in or written by users: given an
// upgrade request and the configuration it is decided against, it returns a
// Decision or abstains with the zero Decision. It runs on the request path
// and must not modify r; s is immutable and safe to keep.
type RuleFunc func(r *http.Request, s *State) Decision

// Rule is a named [RuleFunc] as configured in [Options.Rules]. Rules built
// with bad arguments carry their error until [New] reports it, so a rule list
// reads as one literal.
type Rule struct {
	name         string
	fn           RuleFunc
	status       int // redirect status; 0 = 307
	needsMembers bool
	err          error
}

// NewRule names a user rule; the name is reported to Options.OnDecision.
// The name must be printable UTF-8 of at most 64 bytes: it becomes a metric
// label and a log field.
func NewRule(name string, fn RuleFunc) Rule {
	r := Rule{name: name, fn: fn}
	switch {
	case fn == nil:
		r.err = errors.New("nil RuleFunc")
	case !printable(name, maxRuleName):
		r.name = "user rule"
		r.err = fmt.Errorf("name %q: want printable UTF-8 of at most %d bytes (it becomes a metric label)", truncate(name, 80), maxRuleName)
	}
	return r
}

// Bounds of the names that become metric labels and log fields.
const (
	maxRuleName = 64
	maxMemberID = 256
)

// printable reports whether s is non-empty, valid UTF-8 of at most max
// bytes with no control or other unprintable characters.
func printable(s string, max int) bool {
	if s == "" || len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if !unicode.IsPrint(c) {
			return false
		}
	}
	return true
}

// truncate cuts s to at most n bytes for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Name returns the rule's name.
func (r Rule) Name() string { return r.name }

// WithStatus returns a copy of the rule whose redirects use code: 307
// (default) or 308, which keep the method, or 302 or 301 for clients that
// expect them. An RFC 8441 CONNECT is always redirected with a status that
// keeps its method: 302 is sent as 307 and 301 as 308. Other codes are an
// error reported by [New].
func (r Rule) WithStatus(code int) Rule {
	switch code {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		r.status = code
	default:
		r.err = errors.Join(r.err, fmt.Errorf("redirect status %d: use 301, 302, 307 or 308", code))
	}
	return r
}

// Host returns a rule that redirects requests for any of hosts to target.
// A host is exact ("chat.example.com") or a wildcard over subdomains
// ("*.example.com", which does not match example.com itself); matching is
// case-insensitive and ignores the request's port unless the pattern has one
// ("chat.example.com:8443"). The host matched is r.Host, or the forwarded
// host when Options.TrustForwardedHost is set.
func Host(target string, hosts ...string) Rule {
	t, err := parseTarget(target)
	if err != nil {
		return Rule{name: "host", err: err}
	}
	if len(hosts) == 0 {
		return Rule{name: "host", err: errors.New("no hosts to match")}
	}
	pats := make([]hostPattern, len(hosts))
	for i, h := range hosts {
		p, ok := parseHostPattern(h)
		if !ok {
			return Rule{name: "host", err: hostPatternError(h)}
		}
		pats[i] = p
	}
	return NewRule("host", func(r *http.Request, s *State) Decision {
		host := s.Host(r)
		for i := range pats {
			if pats[i].match(host) {
				return Decision{Action: Redirect, Target: t}
			}
		}
		return Decision{}
	})
}

// Path returns a rule that redirects requests whose path matches pattern to
// target, keeping path and query. Patterns are matched against the escaped
// path:
//
//	"/ws"      exactly /ws
//	"/ws/*"    /ws, /ws/ and everything below, but not /wsx
//	"/ws/"     /ws/ and everything below, not /ws (net/http's meaning)
//
// Wildcard segments such as "/rooms/{id}" are an error reported by [New].
func Path(target, pattern string) Rule {
	return pathRule(target, pattern, "", false)
}

// PathRewrite is like [Path] but replaces the pattern's path with
// replacement: PathRewrite("wss://b.example.com", "/v1/*", "/v2") sends
// /v1/rooms/9?t=x to wss://b.example.com/v2/rooms/9?t=x.
func PathRewrite(target, pattern, replacement string) Rule {
	return pathRule(target, pattern, replacement, true)
}

func pathRule(target, pattern, replacement string, rewrite bool) Rule {
	name := "path"
	pp, err := parsePathPattern(pattern)
	if err != nil {
		return Rule{name: name, err: err}
	}
	if rewrite {
		if rp, err := parsePathPattern(replacement); err != nil || rp.prefix || replacement == "/" {
			return Rule{name: name, err: fmt.Errorf("replacement %q: want a path such as /v2", replacement)}
		}
	}
	t, err := parseTarget(target)
	if err != nil {
		return Rule{name: name, err: err}
	}
	return NewRule(name, func(r *http.Request, s *State) Decision {
		rest, ok := pp.match(r.URL.EscapedPath())
		if !ok {
			return Decision{}
		}
		d := Decision{Action: Redirect, Target: t}
		if rewrite {
			d.Path = replacement + rest
		}
		return d
	})
}
