package wsredirect

import (
	"errors"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// KeyFunc extracts the shard key (a room, a user, a tenant) from an upgrade
// request. ok is false when the request has none. A KeyFunc runs on the
// request path: the built-in ones allocate only to unescape.
type KeyFunc func(r *http.Request) (key string, ok bool)

// QueryKey takes the key from the first query parameter called name; an
// empty value counts as no key.
func QueryKey(name string) KeyFunc {
	return func(r *http.Request) (string, bool) {
		return queryValue(r.URL.RawQuery, name)
	}
}

// HeaderKey takes the key from the first value of header name.
func HeaderKey(name string) KeyFunc {
	name = textproto.CanonicalMIMEHeaderKey(name)
	return func(r *http.Request) (string, bool) {
		if v := r.Header[name]; len(v) > 0 && v[0] != "" {
			return v[0], true
		}
		return "", false
	}
}

// CookieKey takes the key from the first cookie called name.
func CookieKey(name string) KeyFunc {
	return func(r *http.Request) (string, bool) {
		return cookieValue(r.Header["Cookie"], name)
	}
}

// PathValueKey takes the key from the wildcard name of the net/http
// ServeMux pattern that matched ([http.Request.PathValue]). Mount the
// middleware on the pattern's handler so the value exists.
func PathValueKey(name string) KeyFunc {
	return func(r *http.Request) (string, bool) {
		v := r.PathValue(name)
		return v, v != ""
	}
}

// ChiParamKey takes the key from chi's URL parameter name. chi sets URL
// parameters while routing, so add the middleware with r.With or inside the
// route; under a top-level r.Use the parameter does not exist yet.
func ChiParamKey(name string) KeyFunc {
	return func(r *http.Request) (string, bool) {
		v := chi.URLParam(r, name)
		return v, v != ""
	}
}

// FirstKey tries each KeyFunc in order and returns the first key found.
// With [StaticKey] last it gives keyless requests a fallback owner.
func FirstKey(fns ...KeyFunc) KeyFunc {
	return func(r *http.Request) (string, bool) {
		for _, f := range fns {
			if k, ok := f(r); ok {
				return k, true
			}
		}
		return "", false
	}
}

// StaticKey always returns key.
func StaticKey(key string) KeyFunc {
	return func(*http.Request) (string, bool) { return key, true }
}

// Shard returns a rule that sends each upgrade to the member of
// Options.Members that owns its key on the consistent-hash [Ring]. The key
// is required on purpose: every call site states what the fleet shards by.
//
// When the owner is this node (Options.Self), the rule decides to serve
// here, so later rules cannot move a key away from its owner. When this node
// is draining ([Middleware.Drain]), keys it owns go instead to the member
// that will own them once it is gone, so a client moves once; with no other
// member left the request is refused with 503 and Options.DrainRetryAfter.
// A request without a key is left to the next rule (and then to the app):
// use [FirstKey] with [StaticKey] to give such requests an owner instead.
func Shard(key KeyFunc) Rule {
	if key == nil {
		return Rule{name: "shard", err: errors.New("nil KeyFunc")}
	}
	r := NewRule("shard", func(r *http.Request, s *State) Decision {
		k, ok := key(r)
		if !ok || s.ring.Len() == 0 {
			return Decision{}
		}
		h := hashKey(k)
		owner := s.ring.ownerOf(h)
		if owner == s.selfIndex && s.moves(h) {
			owner = s.ring.ownerWithoutOf(h, s.selfIndex)
			if owner < 0 {
				return RefuseWith(http.StatusServiceUnavailable, s.drainRetryAfter)
			}
		}
		return RedirectTo(s.memberTargets[owner])
	})
	r.needsMembers = true
	return r
}

// moves reports whether this node, draining, hands off the key with hash h
// now. During a ramp a key moves once the drained fraction passes the
// key's own point in [0, 1), so the set of moved keys only grows.
func (s *State) moves(h uint64) bool {
	on, fraction := s.Draining()
	if !on {
		return false
	}
	return fraction >= 1 || rampPoint(h) < fraction
}

// rampPoint maps the hash bits the ring leaves free to [0, 1).
func rampPoint(h uint64) float64 {
	return float64(h&freeHashBits) / float64(freeHashBits+1)
}

// Draining reports whether this node is draining and the fraction of its
// keys being handed off now: 1 without a ramp, rising linearly from 0 to 1
// over the ramp given to [Middleware.Drain].
func (s *State) Draining() (on bool, fraction float64) {
	if s.drainStart.IsZero() {
		return false, 0
	}
	if s.drainRamp <= 0 {
		return true, 1
	}
	elapsed := s.now().Sub(s.drainStart)
	switch {
	case elapsed <= 0:
		return true, 0
	case elapsed >= s.drainRamp:
		return true, 1
	}
	return true, float64(elapsed) / float64(s.drainRamp)
}

// Ring returns the consistent-hash ring over Options.Members; it has no
// members when none are configured.
func (s *State) Ring() *Ring { return s.ring }

// SelfIndex returns this node's index in [Ring.Members], or -1 when this node
// is not a member.
func (s *State) SelfIndex() int { return s.selfIndex }

// Drain marks this node as draining: new upgrades for keys it owns go to the
// members that will own them once it is gone (see [Shard]). With ramp > 0
// the share of its keys handed off rises linearly from 0 to 1 over ramp, so
// a drain does not send every client to its peers at once. Calling Drain
// again restarts the ramp. Connections already open are the app's to close
// (they were upgraded); this only steers new ones.
func (m *Middleware) Drain(ramp time.Duration) {
	m.update(func(s *State) {
		s.drainStart, s.drainRamp = s.now(), ramp
	})
}

// Undrain ends a drain: this node takes its keys again.
func (m *Middleware) Undrain() {
	m.update(func(s *State) { s.drainStart, s.drainRamp = time.Time{}, 0 })
}

// Draining reports the drain in force now; see [State.Draining].
func (m *Middleware) Draining() (on bool, fraction float64) {
	return m.state.Load().Draining()
}

// SetMembers replaces the fleet. The ring is built before the swap, so
// requests see the old members or the new ones, never a mix. On error the
// members in force are kept.
func (m *Middleware) SetMembers(members ...Member) error {
	ring, targets, err := buildMembers(members)
	if err != nil {
		return err
	}
	var needed error
	m.update(func(s *State) {
		if ring.Len() == 0 && s.needsMembers() {
			needed = errors.New("wsredirect: SetMembers: no members, and a Shard rule needs them")
			return
		}
		s.ring, s.memberTargets = ring, targets
		s.selfIndex = selfIndex(targets, s.self)
	})
	return needed
}

// buildMembers checks members and builds their ring and targets, indexed
// like [Ring.Members].
func buildMembers(members []Member) (*Ring, []*Target, error) {
	ring, err := NewRing(members)
	if err != nil {
		return nil, nil, err
	}
	sorted := ring.Members()
	targets := make([]*Target, len(sorted))
	for i, mem := range sorted {
		t, err := ParseTarget(mem.URL)
		if err != nil {
			return nil, nil, errors.New("wsredirect: member " + mem.ID + ": " + unprefixed(err).Error())
		}
		for j := range i {
			if targets[j].Equal(t) {
				return nil, nil, errors.New("wsredirect: members " + sorted[j].ID + " and " + mem.ID + " have the same URL " + t.String())
			}
		}
		targets[i] = t
	}
	return ring, targets, nil
}

func selfIndex(targets []*Target, self *Target) int {
	for i, t := range targets {
		if t.Equal(self) {
			return i
		}
	}
	return -1
}

func (s *State) needsMembers() bool {
	for _, r := range s.rules {
		if r.needsMembers {
			return true
		}
	}
	return false
}

// queryValue returns the first value of name in a raw query, unescaping only
// when it has to.
func queryValue(rawQuery, name string) (string, bool) {
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		k, v, _ := strings.Cut(pair, "=")
		if k != name {
			if !strings.ContainsAny(k, "%+") {
				continue
			}
			if uk, err := url.QueryUnescape(k); err != nil || uk != name {
				continue
			}
		}
		if strings.ContainsAny(v, "%+") {
			var err error
			if v, err = url.QueryUnescape(v); err != nil {
				return "", false
			}
		}
		return v, v != ""
	}
	return "", false
}

// cookieValue returns the value of the first cookie called name in the
// Cookie header lines, without its optional quotes.
func cookieValue(lines []string, name string) (string, bool) {
	for _, line := range lines {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok || k != name {
				continue
			}
			if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, v != ""
		}
	}
	return "", false
}
