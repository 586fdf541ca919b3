package wsredirect

import (
	"errors"
	"log/slog"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/wsredirect/wsredirect/ring"
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

// PathValueKey takes the key from the wildcard name of the route that
// matched ([http.Request.PathValue]): a net/http ServeMux pattern
// ("/rooms/{room}") or a chi v5 route, which sets path values too. Routers
// set them while routing, so wrap the route's own handler:
//
//	mux.Handle("GET /rooms/{room}", mw.Handler(chat))     // ServeMux
//	r.With(mw.Handler).Get("/rooms/{room}", chat)          // chi
//
// These find no key, and so shard nothing (the first such upgrade is
// logged at Warn): mw.Handler(mux) around a whole ServeMux, chi's r.Use
// (mw.Handler) in the router or sub-router that holds the route (r.Route,
// r.Mount), and a pattern whose wildcard has another name ({id} for
// PathValueKey("room")).
func PathValueKey(name string) KeyFunc {
	return func(r *http.Request) (string, bool) {
		v := r.PathValue(name)
		return v, v != ""
	}
}

// FirstKey tries each KeyFunc in order and returns the first key found.
// A last func that always returns a key, such as
//
//	func(*http.Request) (string, bool) { return "lobby", true }
//
// gives keyless requests a fallback owner.
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

// Shard returns a rule that sends each upgrade to the member of
// Options.Members that owns its key (placed by package ring). The key
// is required on purpose: every call site states what the fleet shards by.
//
// When the owner is this node (Options.Self), the rule decides to serve
// here, so later rules cannot move a key away from its owner. A draining
// member's keys go to the members that will own them once it is gone (see
// [Member.DrainingSince]), so a client moves once; when every member that
// could take a key is draining, the request is refused with 503 and
// Options.DrainRetryAfter. A request without a key is left to the next rule
// (and then to the app): use [FirstKey] with a fallback to give such
// requests an owner instead. The first such request is logged at Warn
// (Options.Logger), since a mounting that hides the key from the rule turns
// sharding off: see [PathValueKey].
func Shard(key KeyFunc) Rule {
	if key == nil {
		return Rule{name: "shard", err: errors.New("nil KeyFunc")}
	}
	var warned atomic.Bool
	r := NewRule("shard", func(r *http.Request, s *State) Decision {
		k, ok := key(r)
		if !ok {
			if s.logger != nil && !warned.Load() && warned.CompareAndSwap(false, true) {
				s.logger.LogAttrs(r.Context(), slog.LevelWarn, noKeyWarning, slog.String("rule", "shard"), slog.String("path", r.URL.Path))
			}
			return Decision{}
		}
		owner := s.owner(ring.Hash(k))
		if owner < 0 {
			return Decision{Action: Refuse, RetryAfter: s.drainRetryAfter}
		}
		return Decision{Action: Redirect, Target: s.fleet.targets[owner], Member: s.fleet.members[owner].ID}
	})
	r.needsMembers = true
	return r
}

// noKeyWarning is logged the first time a Shard rule finds no key: such an
// upgrade goes to the app on whichever node it reached, so a mounting that
// never shows the key to the rule turns sharding off without an error.
const noKeyWarning = "wsredirect: a Shard rule found no key in an upgrade, which is served here unsharded " +
	"(logged once per rule). PathValueKey sees a pattern's values only when the middleware wraps the route's own " +
	"handler: mux.Handle(\"GET /rooms/{room}\", mw.Handler(h)) or chi's r.With(mw.Handler).Get(\"/rooms/{room}\", h), " +
	"not mw.Handler(mux) or r.Use(mw.Handler) above the route; the name must be the pattern's ({room} for " +
	"PathValueKey(\"room\")). QueryKey, HeaderKey, CookieKey: the client sent none. Give keyless upgrades an owner " +
	"with FirstKey and a fallback."

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
