// Package wsredirect sends each connecting WebSocket client to the right
// server before the connection is upgraded: by host, by path, by shard key
// over a fleet, or away from a draining node.
//
// The middleware looks at upgrade requests only (RFC 6455 over HTTP/1.1 and
// RFC 8441 over HTTP/2); every other request goes straight to the wrapped
// handler at the cost of a header lookup. An upgrade is decided by
// [Options.Rules], in order, first decision wins, against one immutable
// [State] read from an atomic pointer: a rule may redirect (307 with an
// absolute Location built from a configured [Target]), refuse (503 with
// Retry-After) or abstain; a request no rule decides, or one whose target is
// this node, goes on to the wrapped handler, which upgrades it.
//
// Browsers never follow a redirect on a WebSocket handshake: to them any 3xx
// is a failed connection with close code 1006. So in [ModeAuto], the
// default, a request with an Origin header is accepted and closed at once
// with [CloseRedirect] and the target, which script can read; the
// JavaScript helper ([ScriptHandler]) and this module's Go client follow it.
// Fleets shard keys with [Shard] over Options.Members and move clients off a
// draining node with [Middleware.Drain] and [Middleware.MoveConns].
//
//	mw, err := wsredirect.New(wsredirect.Options{
//		Self:  "wss://a.example.com",
//		Rules: []wsredirect.Rule{wsredirect.Path("/legacy/*", "wss://b.example.com")},
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	r := chi.NewRouter()
//	r.Use(mw.Handler)
package wsredirect

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Options configures a [Middleware]. Only Rules is required.
type Options struct {
	// Rules decide upgrade requests, in order; the first that does not
	// abstain wins. Required: New reports an empty list, and any rule built
	// with bad arguments, as an error.
	Rules []Rule

	// Self is this node's own base URL as clients reach it, in the form
	// [ParseTarget] takes. A redirect to Self is served here instead, so
	// every node of a fleet can run the same rules. Default: none, every
	// redirect is sent.
	Self string

	// Mode says how decisions reach clients: a status code, or a close frame
	// browsers can read. Default: ModeAuto, a close frame for requests with
	// an Origin header (browsers) and a status for the rest.
	Mode Mode

	// Origins lists the page origins allowed to receive a close-frame
	// decision, as "https://app.example.com" or "https://*.example.com";
	// others get 403, so the redirect path is no way around the app's own
	// origin check. Default: same origin only (the Origin's host equals the
	// request's host).
	Origins []string

	// HTTPLocation makes Locations use http/https instead of ws/wss, for
	// clients that only follow http(s) URLs. Default: ws/wss, which RFC 6455
	// clients expect.
	HTTPLocation bool

	// TrustForwardedHost makes rules select by the host a proxy forwarded
	// (the first X-Forwarded-Host value, else the first host= of Forwarded)
	// instead of r.Host. Set it only behind a proxy that overwrites those
	// headers: clients can send any value. Either way the header only
	// selects among configured targets and never appears in a Location.
	// Default: false.
	TrustForwardedHost bool

	// Members is the fleet [Shard] rules spread keys over. Each member's URL
	// is its target; the member whose URL equals Self is this node. Default:
	// none, which New reports as an error when a Shard rule needs them.
	Members []Member

	// DrainRetryAfter is the Retry-After sent when this node drains and no
	// other member is left to take its keys. Default: 5 seconds.
	DrainRetryAfter time.Duration

	// Now is the clock drain ramps are measured with. Default: time.Now.
	Now func() time.Time

	// OnDecision, when set, is called once for every upgrade request with
	// the decision taken (Pass when nothing redirected or refused), before
	// the response is written. It runs on the request path: keep it fast.
	// Default: nil, which costs nothing.
	OnDecision func(r *http.Request, d Decision)
}

// State is the immutable configuration an upgrade request is decided
// against. A [Middleware] swaps whole States, so a request sees one
// consistent set of rules and never a mix of an old and a new one.
type State struct {
	rules          []Rule
	self           *Target
	httpLocation   bool
	trustForwarded bool
	onDecision     func(*http.Request, Decision)
	mode           Mode
	origins        []originPattern

	fleet           *fleet
	drainRetryAfter time.Duration
	now             func() time.Time
}

// Self returns this node's target, or nil when Options.Self is empty.
func (s *State) Self() *Target { return s.self }

// Host returns the host rules select by: r.Host, or the forwarded host when
// Options.TrustForwardedHost is set and the request has one.
func (s *State) Host(r *http.Request) string {
	if s.trustForwarded {
		if h := forwardedHost(r.Header); h != "" {
			return h
		}
	}
	return r.Host
}

// Middleware redirects WebSocket upgrade requests. Build it with [New]; it is
// safe for concurrent use, including the Set methods while serving.
type Middleware struct {
	state atomic.Pointer[State]
	live  liveSet
}

// New checks opts and builds a Middleware. Errors name the option or rule at
// fault and start with "wsredirect:".
func New(opts Options) (*Middleware, error) {
	s := &State{
		httpLocation:   opts.HTTPLocation,
		trustForwarded: opts.TrustForwardedHost,
		onDecision:     opts.OnDecision,
		mode:           opts.Mode,

		drainRetryAfter: opts.DrainRetryAfter,
		now:             opts.Now,
	}
	if s.drainRetryAfter == 0 {
		s.drainRetryAfter = 5 * time.Second
	} else if s.drainRetryAfter < 0 {
		return nil, errors.New("wsredirect: Options.DrainRetryAfter is negative")
	}
	if s.now == nil {
		s.now = time.Now
	}
	if opts.Mode > ModeClose {
		return nil, errorf("Options.Mode: unknown mode %d", opts.Mode)
	}
	var err error
	if s.origins, err = parseOrigins(opts.Origins); err != nil {
		return nil, err
	}
	if opts.Self != "" {
		t, err := ParseTarget(opts.Self)
		if err != nil {
			return nil, fmt.Errorf("wsredirect: Options.Self: %w", unprefixed(err))
		}
		s.self = t
	}
	if s.fleet, err = newFleet(opts.Members, s.self, nil); err != nil {
		return nil, err
	}
	if s.rules, err = checkRules(opts.Rules, s.fleet.ring); err != nil {
		return nil, err
	}
	m := &Middleware{}
	m.state.Store(s)
	return m, nil
}

// MustNew is like [New] but panics on error, for configuration written in
// code.
func MustNew(opts Options) *Middleware {
	m, err := New(opts)
	if err != nil {
		panic(err)
	}
	return m
}

// Handler returns the middleware for opts in the shape routers take, as
// r.Use(wsredirect.Handler(opts)). Panics if opts are invalid (see [New]);
// keep the [Middleware] from New instead when you need to update it.
func Handler(opts Options) func(http.Handler) http.Handler {
	return MustNew(opts).Handler
}

// Handler wraps next: upgrade requests are decided, everything else goes
// straight to next.
func (m *Middleware) Handler(next http.Handler) http.Handler {
	return &handler{m: m, next: next}
}

type handler struct {
	m    *Middleware
	next http.Handler
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !mayUpgrade(r) || !IsUpgrade(r) {
		h.next.ServeHTTP(w, r)
		return
	}
	s := h.m.state.Load()
	d := s.decide(r)
	if s.onDecision != nil {
		s.onDecision(r, d)
	}
	switch {
	case d.Action == Pass:
		h.next.ServeHTTP(w, r)
	case d.Action == Redirect && s.closeMode(r):
		msg, reason := EncodeRedirect(location(r, d, s.httpLocation))
		s.closeWith(w, r, msg, CloseRedirect, reason)
	case d.Status == http.StatusServiceUnavailable && s.closeMode(r):
		// Only "come back later" has a close code; any other refusal,
		// such as a rule's bug, is a status the browser reports as 1006.
		s.closeWith(w, r, "", CloseRetry, EncodeRetry(d.RetryAfter))
	case d.Action == Redirect:
		s.writeRedirect(w, r, d)
	default:
		writeRefuse(w, d)
	}
}

// mayUpgrade is the inlined fast path for ordinary requests: one header
// lookup, and none for methods other than GET.
func mayUpgrade(r *http.Request) bool {
	if r.Method == http.MethodGet {
		_, ok := r.Header["Upgrade"]
		return ok
	}
	return r.Method == http.MethodConnect
}

// State returns the configuration in force now.
func (m *Middleware) State() *State { return m.state.Load() }

// Decide evaluates the rules for r as the middleware would, without writing
// anything. Requests that are not upgrades are decided too; the middleware
// never asks.
func (m *Middleware) Decide(r *http.Request) Decision {
	return m.state.Load().decide(r)
}

// SetRules replaces the rules. Requests already being decided finish with
// the old ones. On error the rules in force are kept.
func (m *Middleware) SetRules(rules ...Rule) error {
	var err error
	m.update(func(s *State) {
		var checked []Rule
		if checked, err = checkRules(rules, s.fleet.ring); err == nil {
			s.rules = checked
		}
	})
	return err
}

// update swaps in a modified copy of the current State.
func (m *Middleware) update(change func(*State)) {
	for {
		old := m.state.Load()
		s := *old
		change(&s)
		if m.state.CompareAndSwap(old, &s) {
			return
		}
	}
}

func checkRules(rules []Rule, ring *Ring) ([]Rule, error) {
	if len(rules) == 0 {
		return nil, errors.New("wsredirect: no rules: Options.Rules is empty")
	}
	for i, r := range rules {
		if r.err == nil && r.fn == nil {
			r.err = errors.New("zero Rule: build rules with Host, Path, NewRule and friends")
		}
		if r.err == nil && r.needsMembers && ring.Len() == 0 {
			r.err = errors.New("Options.Members is empty")
		}
		if r.err != nil {
			return nil, fmt.Errorf("wsredirect: rule %d (%s): %w", i, r.name, unprefixed(r.err))
		}
	}
	return append([]Rule(nil), rules...), nil
}

func errorf(format string, args ...any) error {
	return fmt.Errorf("wsredirect: "+format, args...)
}

// unprefixed keeps nested errors from repeating the package prefix.
func unprefixed(err error) error {
	if msg, ok := strings.CutPrefix(err.Error(), "wsredirect: "); ok {
		return prefixless{msg, err}
	}
	return err
}

type prefixless struct {
	msg string
	err error
}

func (e prefixless) Error() string { return e.msg }
func (e prefixless) Unwrap() error { return e.err }

// decide runs the rules; see [Decision] for what the result means.
func (s *State) decide(r *http.Request) Decision {
	for i := range s.rules {
		rule := &s.rules[i]
		d := rule.fn(r, s)
		if d.Action == Pass {
			continue
		}
		d.Rule = rule.name
		switch d.Action {
		case Redirect:
			if d.Target == nil {
				return ruleBug(d, "redirect without a target")
			}
			if d.Target.Equal(s.self) {
				return Decision{Action: Pass, Target: d.Target, Rule: d.Rule}
			}
			d.Status = redirectStatus(rule.status, r.Method)
		case Refuse:
			if d.Status == 0 {
				d.Status = http.StatusServiceUnavailable
			} else if d.Status < 400 || d.Status > 599 {
				return ruleBug(d, "refusal status "+strconv.Itoa(d.Status))
			}
		default:
			return ruleBug(d, "unknown action "+d.Action.String())
		}
		return d
	}
	return Decision{}
}

// ruleBug turns a decision no response can carry into a 500, so a broken
// user rule shows up instead of being guessed around.
func ruleBug(d Decision, why string) Decision {
	return Decision{Action: Refuse, Status: http.StatusInternalServerError, Rule: d.Rule + ": " + why}
}

// redirectStatus keeps the method of an RFC 8441 CONNECT: 301 and 302 let
// clients retry as GET.
func redirectStatus(configured int, method string) int {
	switch {
	case configured == 0:
		return http.StatusTemporaryRedirect
	case method == http.MethodConnect && configured == http.StatusFound:
		return http.StatusTemporaryRedirect
	case method == http.MethodConnect && configured == http.StatusMovedPermanently:
		return http.StatusPermanentRedirect
	}
	return configured
}

// Prebuilt header values, assigned without copying on every response.
var (
	noStore   = []string{"no-store"}
	textPlain = []string{"text/plain; charset=utf-8"}
)

// location is where d sends the client of r.
func location(r *http.Request, d Decision, httpScheme bool) string {
	path := d.Path
	if path == "" {
		path = r.URL.EscapedPath()
	}
	return d.Target.location(httpScheme, path, r.URL.RawQuery)
}

func (s *State) writeRedirect(w http.ResponseWriter, r *http.Request, d Decision) {
	h := w.Header()
	h["Location"] = []string{location(r, d, s.httpLocation)}
	h["Cache-Control"] = noStore
	h["Content-Type"] = textPlain
	w.WriteHeader(d.Status)
	io.WriteString(w, redirectBody(d.Status))
}

func redirectBody(status int) string {
	switch status {
	case http.StatusMovedPermanently:
		return "301 Moved Permanently: this WebSocket endpoint is served elsewhere (see Location)\n"
	case http.StatusFound:
		return "302 Found: this WebSocket endpoint is served elsewhere (see Location)\n"
	case http.StatusPermanentRedirect:
		return "308 Permanent Redirect: this WebSocket endpoint is served elsewhere (see Location)\n"
	}
	return "307 Temporary Redirect: this WebSocket endpoint is served elsewhere (see Location)\n"
}

func writeRefuse(w http.ResponseWriter, d Decision) {
	h := w.Header()
	if d.RetryAfter > 0 {
		h["Retry-After"] = []string{strconv.FormatInt(retrySeconds(d.RetryAfter), 10)}
	}
	h["Cache-Control"] = noStore
	h["Content-Type"] = textPlain
	w.WriteHeader(d.Status)
	io.WriteString(w, strconv.Itoa(d.Status)+" "+http.StatusText(d.Status)+": this node cannot take WebSocket connections now\n")
}

// forwardedHost returns the first host a proxy forwarded, or "".
func forwardedHost(h http.Header) string {
	if v := h["X-Forwarded-Host"]; len(v) > 0 {
		first, _, _ := strings.Cut(v[0], ",")
		return strings.TrimSpace(first)
	}
	if v := h["Forwarded"]; len(v) > 0 {
		first, _, _ := strings.Cut(v[0], ",")
		for _, pair := range strings.Split(first, ";") {
			k, val, _ := strings.Cut(strings.TrimSpace(pair), "=")
			if strings.EqualFold(k, "host") {
				return strings.Trim(val, `"`)
			}
		}
	}
	return ""
}
