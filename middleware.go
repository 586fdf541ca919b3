package wsredirect

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
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
	// [ParseTarget] takes, such as "ws://127.0.0.1:8080". A redirect to Self
	// that keeps the request's path is served here instead, so every node
	// of a fleet can run the same rules; one that rewrites the path is
	// still sent. A node of a fleet must spell Self as its member's URL
	// (New refuses another name of the same loopback socket, and a node
	// that redirects clients to itself says so at Warn); a front door that
	// is no member leaves it empty. Default: none, every redirect is sent.
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

	// DrainRetryAfter is the Retry-After sent when a key's owner drains and
	// no other member is left to take it. Default: 5 seconds.
	DrainRetryAfter time.Duration

	// MoveGrace is how long a tracked connection has to end once it is
	// sent its move's close frame, before it is closed under the app (see
	// [Middleware.Track]). Default: 5 seconds.
	MoveGrace time.Duration

	// OnDecision, when set, is called once for every upgrade request with
	// the decision taken (Pass when nothing redirected or refused), before
	// the response is written, with Decision.Close and Decision.Elapsed
	// filled in. It runs on the request path: keep it fast. Metrics hook in
	// here (package prom in this repository). A panic in it is recovered
	// and logged. Default: nil, which costs nothing.
	OnDecision func(r *http.Request, d Decision)

	// Logger receives what the middleware has to say: membership changes
	// and drains starting or ending at Info (counts, not lists), rule bugs
	// (a panic, a redirect without a target, a bad status) at Error with
	// the rule's name, and each decision at Debug. Default: nil, no logging
	// and no cost.
	Logger *slog.Logger
}

// State is the immutable configuration an upgrade request is decided
// against: rules, fleet and this node's place in it. A [Middleware] swaps
// whole States, so a request sees one consistent set and never a mix of an
// old and a new one.
type State struct {
	rules          []Rule
	self           *Target
	httpLocation   bool
	trustForwarded bool
	onDecision     func(*http.Request, Decision)
	logger         *slog.Logger
	mode           Mode
	origins        []originPattern

	fleet           *fleet
	loopWarned      *atomic.Bool // shared by the States of one Middleware
	drainRetryAfter time.Duration
	moveGrace       time.Duration
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
	state      atomic.Pointer[State]
	changing   sync.Mutex // held by update: one state change at a time
	live       liveSet
	moved, cut atomic.Uint64 // tracked connections, since New
}

// New checks opts and builds a Middleware. Errors name the option or rule at
// fault and start with "wsredirect:".
func New(opts Options) (*Middleware, error) {
	s := &State{
		httpLocation:    opts.HTTPLocation,
		trustForwarded:  opts.TrustForwardedHost,
		onDecision:      opts.OnDecision,
		logger:          opts.Logger,
		mode:            opts.Mode,
		drainRetryAfter: opts.DrainRetryAfter,
		moveGrace:       cmp.Or(opts.MoveGrace, defaultMoveGrace),
		loopWarned:      new(atomic.Bool),
		now:             time.Now,
	}
	if s.drainRetryAfter == 0 {
		s.drainRetryAfter = 5 * time.Second
	} else if s.drainRetryAfter < 0 {
		return nil, errors.New("wsredirect: Options.DrainRetryAfter is negative")
	}
	if opts.MoveGrace < 0 {
		return nil, errors.New("wsredirect: Options.MoveGrace is negative")
	}
	if opts.Mode > ModeClose {
		return nil, errorf("Options.Mode: unknown mode %d", opts.Mode)
	}
	var err error
	if s.origins, err = parseOrigins(opts.Origins); err != nil {
		return nil, errorf("Options.Origins: %v", err)
	}
	if opts.Self != "" {
		if s.self, err = parseTarget(opts.Self); err != nil {
			return nil, errorf("Options.Self: %v", err)
		}
	}
	if err = checkDrainStarts(opts.Members, s.now()); err != nil {
		return nil, errorf("Options.Members: %v", err)
	}
	if s.fleet, err = newFleet(opts.Members, s.self, nil); err != nil {
		return nil, errorf("Options.Members: %v", err)
	}
	if s.rules, err = checkRules(opts.Rules, s.fleet); err != nil {
		return nil, err
	}
	if err := s.fleet.checkSelf(s.self); err != nil {
		return nil, err
	}
	m := &Middleware{}
	m.live.conns = make(map[*tracked]struct{})
	m.live.kick = make(chan struct{}, 1)
	m.live.slots = make(chan struct{}, maxMoving)
	m.state.Store(s)
	return m, nil
}

// MustNew is like [New] but panics on error, for configuration written in
// code: r.Use(wsredirect.MustNew(opts).Handler).
func MustNew(opts Options) *Middleware {
	m, err := New(opts)
	if err != nil {
		panic(err)
	}
	return m
}

// Handler wraps next: upgrade requests are decided, everything else goes
// straight to next. Its shape is what routers take: r.Use(mw.Handler).
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
	observed := s.onDecision != nil || s.logger != nil
	var start time.Time
	if observed {
		start = time.Now()
	}
	d := s.decide(r)
	if d.Close = s.closes(r, d); d.Close && !s.originAllowed(r) {
		// The upgrade that would carry the close frame is refused, as the
		// app's own upgrader would refuse it: a refusal, counted as one.
		d = Decision{Action: Refuse, Status: http.StatusForbidden, Rule: d.Rule, Member: d.Member}
	}
	if observed {
		s.observe(r, &d, start)
	}
	if d.Action == Pass {
		h.next.ServeHTTP(w, r)
		return
	}
	s.respond(w, r, d)
}

// observe completes d for Options.OnDecision and reports it there and to
// the logger.
func (s *State) observe(r *http.Request, d *Decision, start time.Time) {
	d.Elapsed = time.Since(start)
	if s.onDecision != nil {
		s.report(r, *d)
	}
	if s.logger != nil && s.logger.Enabled(r.Context(), slog.LevelDebug) {
		s.logger.LogAttrs(r.Context(), slog.LevelDebug, "wsredirect: upgrade decided",
			slog.String("action", d.Action.String()), slog.String("rule", d.Rule), slog.String("target", d.Target.String()),
			slog.String("member", d.Member), slog.Int("status", d.Status), slog.Bool("close", d.Close))
	}
}

// report calls Options.OnDecision: a panic in it is the hook's bug, logged
// with its stack, and must not take the upgrade down with it.
func (s *State) report(r *http.Request, d Decision) {
	defer func() {
		if p := recover(); p != nil && s.logger != nil {
			s.logger.LogAttrs(r.Context(), slog.LevelError, "wsredirect: OnDecision panicked",
				slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
		}
	}()
	s.onDecision(r, d)
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
	return m.update(func(s *State) (err error) {
		s.rules, err = checkRules(rules, s.fleet)
		return err
	})
}

// update is the one way the State changes: change edits a copy of the
// current State, which is swapped in unless change fails. Changes take
// turns rather than retry on a newer State: a change can build rings for
// milliseconds, and retrying would let a stream of quick changes starve a
// slow one forever. Requests never wait: they load the State in force.
func (m *Middleware) update(change func(*State) error) error {
	m.changing.Lock()
	defer m.changing.Unlock()
	s := *m.state.Load()
	if err := change(&s); err != nil {
		return err
	}
	m.state.Store(&s)
	m.kickMover()
	return nil
}

func checkRules(rules []Rule, f *fleet) ([]Rule, error) {
	if len(rules) == 0 {
		return nil, errors.New("wsredirect: no rules: Options.Rules is empty")
	}
	for i, r := range rules {
		if r.err == nil && r.fn == nil {
			r.err = errors.New("zero Rule: build rules with Host, Path, Shard or NewRule")
		}
		if r.err == nil && r.needsMembers && f.ring.Len() == 0 {
			r.err = errors.New("Options.Members is empty")
		}
		if r.err != nil {
			return nil, errorf("rule %d (%s): %v", i, r.name, r.err)
		}
	}
	return append([]Rule(nil), rules...), nil
}

func errorf(format string, args ...any) error {
	return fmt.Errorf("wsredirect: "+format, args...)
}

// decide runs the rules; see [Decision] for what the result means. A
// request whose target is not a path ("GET *") is decided by no rule: a
// Location cannot be built from it, and the app's upgrader refuses it.
func (s *State) decide(r *http.Request) Decision {
	if p := r.URL.Path; p == "" || p[0] != '/' {
		return Decision{}
	}
	for i := range s.rules {
		rule := &s.rules[i]
		d, panicked, stack := s.run(rule, r)
		if panicked != nil {
			return s.ruleBug(r, Decision{Rule: rule.name}, fmt.Sprintf("panic: %v", panicked), slog.String("stack", stack))
		}
		if d.Action == Pass {
			continue
		}
		d.Rule = rule.name
		switch d.Action {
		case Redirect:
			if d.Target == nil || d.Target.ws == "" {
				return s.ruleBug(r, d, "redirect without a target (build targets with ParseTarget)")
			}
			if d.Target.Equal(s.self) && (d.Path == "" || d.Path == r.URL.EscapedPath()) {
				// Sent to the very node and path it asked for.
				return Decision{Action: Pass, Target: d.Target, Rule: d.Rule, Member: d.Member}
			}
			switch d.Status {
			case 0:
				d.Status = rule.status
			case http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			default:
				return s.ruleBug(r, d, fmt.Sprintf("redirect status %d: use 301, 302, 307 or 308", d.Status))
			}
			d.Status = redirectStatus(d.Status, r.Method)
			if s.logger != nil && !s.loopWarned.Load() && (d.Path == "" || d.Path == r.URL.EscapedPath()) && d.Target.isNodeOf(r) {
				s.warnLoop(r, d)
			}
		case Refuse:
			if d.Status == 0 {
				d.Status = http.StatusServiceUnavailable
			} else if d.Status < 400 || d.Status > 599 {
				return s.ruleBug(r, d, fmt.Sprintf("refusal status %d", d.Status))
			}
		default:
			return s.ruleBug(r, d, "unknown action "+d.Action.String())
		}
		return d
	}
	return Decision{}
}

// warnLoop says, once, that a rule sends a client back to the node it came
// to: Options.Self is unset or spelt otherwise than the member's URL, so
// this node does not know itself, and its clients see a redirect loop.
func (s *State) warnLoop(r *http.Request, d Decision) {
	if !s.loopWarned.CompareAndSwap(false, true) {
		return
	}
	s.logger.LogAttrs(r.Context(), slog.LevelWarn, "wsredirect: a rule redirects clients to the node they came to: "+
		"is Options.Self this node's URL, spelt as its member's? (logged once)",
		slog.String("rule", d.Rule), slog.String("target", d.Target.String()), slog.String("self", s.self.String()), slog.String("host", r.Host))
}

// run asks one rule, turning its panic into a value: a user rule's bug
// must not take the request (or, under http.ErrAbortHandler's rules, the
// connection) down unexplained.
func (s *State) run(rule *Rule, r *http.Request) (d Decision, panicked any, stack string) {
	defer func() {
		if p := recover(); p != nil {
			panicked, stack = p, string(debug.Stack())
		}
	}()
	return rule.fn(r, s), nil, ""
}

// ruleBug turns a decision no response can carry into a 500, so a broken
// user rule shows up instead of being guessed around, and logs why (the
// Decision names only the rule, so metrics labelled by it stay bounded).
func (s *State) ruleBug(r *http.Request, d Decision, why string, attrs ...slog.Attr) Decision {
	if s.logger != nil {
		attrs = append([]slog.Attr{slog.String("rule", d.Rule), slog.String("error", why)}, attrs...)
		s.logger.LogAttrs(r.Context(), slog.LevelError, "wsredirect: rule bug", attrs...)
	}
	return Decision{Action: Refuse, Status: http.StatusInternalServerError, Rule: d.Rule}
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
