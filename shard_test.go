package wsredirect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeyFuncs(t *testing.T) {
	req := func(target string, edit func(r *http.Request)) *http.Request {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		if edit != nil {
			edit(r)
		}
		return r
	}
	tests := []struct {
		name string
		fn   KeyFunc
		req  *http.Request
		key  string
		ok   bool
	}{
		{"query", QueryKey("room"), req("/ws?a=1&room=42&room=43", nil), "42", true},
		{"query escaped value", QueryKey("room"), req("/ws?room=caf%C3%A9+bar", nil), "café bar", true},
		{"query escaped name", QueryKey("room id"), req("/ws?room+id=7", nil), "7", true},
		{"query prefix of another name", QueryKey("room"), req("/ws?rooms=1", nil), "", false},
		{"query empty value", QueryKey("room"), req("/ws?room=", nil), "", false},
		{"query bad escape", QueryKey("room"), req("/ws?room=%zz", nil), "", false},
		{"query absent", QueryKey("room"), req("/ws", nil), "", false},
		{"header", HeaderKey("x-tenant"), req("/ws", func(r *http.Request) { r.Header.Set("X-Tenant", "acme") }), "acme", true},
		{"header absent", HeaderKey("X-Tenant"), req("/ws", nil), "", false},
		{"cookie", CookieKey("uid"), req("/ws", func(r *http.Request) {
			r.Header["Cookie"] = []string{"a=1; uid2=x", `theme=dark; uid="u-9"`}
		}), "u-9", true},
		{"cookie absent", CookieKey("uid"), req("/ws", func(r *http.Request) { r.Header.Set("Cookie", "uidx=1") }), "", false},
		{"path value", PathValueKey("room"), req("/rooms/9", func(r *http.Request) { r.SetPathValue("room", "9") }), "9", true},
		{"path value absent", PathValueKey("room"), req("/rooms/9", nil), "", false},
		{"first key falls back", FirstKey(QueryKey("room"), HeaderKey("X-Room"), lobby), req("/ws", nil), "lobby", true},
		{"first key takes first", FirstKey(QueryKey("room"), lobby), req("/ws?room=3", nil), "3", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key, ok := tc.fn(tc.req)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.key, key)
		})
	}
}

// TestPathValueKeyInChi: chi v5 routes set path values, so PathValueKey
// serves chi users with no chi-specific key func.
func TestPathValueKeyInChi(t *testing.T) {
	var got string
	r := chi.NewRouter()
	r.Get("/rooms/{room}", func(w http.ResponseWriter, r *http.Request) {
		got, _ = PathValueKey("room")(r)
	})
	r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/rooms/42", nil))
	assert.Equal(t, "42", got)
}

// TestShardMountings: the mountings a user writes, in chi and ServeMux side
// by side: those that wrap the route's own handler shard; those that wrap
// a router above the route find no key, serve every room here, and say so
// once at Warn (regression: only a Debug line).
func TestShardMountings(t *testing.T) {
	chat := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "served here") })
	for _, tc := range []struct {
		name   string
		mount  func(mw *Middleware) http.Handler
		shards bool
	}{
		{"ServeMux: mux.Handle(pattern, mw.Handler(h))", func(mw *Middleware) http.Handler {
			mux := http.NewServeMux()
			mux.Handle("GET /rooms/{room}", mw.Handler(chat))
			return mux
		}, true},
		{"chi: r.With(mw.Handler).Get(pattern, h)", func(mw *Middleware) http.Handler {
			r := chi.NewRouter()
			r.With(mw.Handler).Get("/rooms/{room}", chat)
			return r
		}, true},
		{"chi: r.Route with r.With inside", func(mw *Middleware) http.Handler {
			r := chi.NewRouter()
			r.Route("/rooms", func(r chi.Router) { r.With(mw.Handler).Get("/{room}", chat) })
			return r
		}, true},
		{"ServeMux: mw.Handler(mux) around it all", func(mw *Middleware) http.Handler {
			mux := http.NewServeMux()
			mux.Handle("GET /rooms/{room}", chat)
			return mw.Handler(mux)
		}, false},
		{"ServeMux: a pattern with another name", func(mw *Middleware) http.Handler {
			mux := http.NewServeMux()
			mux.Handle("GET /rooms/{id}", mw.Handler(chat))
			return mux
		}, false},
		{"chi: r.Use(mw.Handler) in the router", func(mw *Middleware) http.Handler {
			r := chi.NewRouter()
			r.Use(mw.Handler)
			r.Get("/rooms/{room}", chat)
			return r
		}, false},
		{"chi: r.Use inside r.Route", func(mw *Middleware) http.Handler {
			r := chi.NewRouter()
			r.Route("/rooms", func(r chi.Router) { r.Use(mw.Handler); r.Get("/{room}", chat) })
			return r
		}, false},
		{"chi: r.Use inside a mounted sub-router", func(mw *Middleware) http.Handler {
			sub := chi.NewRouter()
			sub.Use(mw.Handler)
			sub.Get("/{room}", chat)
			r := chi.NewRouter()
			r.Mount("/rooms", sub)
			return r
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			mw := MustNew(Options{Self: abc[1].URL, Members: abc, Rules: []Rule{Shard(PathValueKey("room"))},
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			h := tc.mount(mw)
			key := keysOwnedBy(t, mw.State().fleet, "c", 1)[0]
			for range 3 {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, upgradeTo("http://b.example.com/rooms/"+key))
				if tc.shards {
					assert.Equal(t, http.StatusTemporaryRedirect, w.Code, "sent to the owner")
					assert.Equal(t, "wss://c.example.com/rooms/"+key, w.Header().Get("Location"))
				} else {
					assert.Equal(t, "served here", w.Body.String(), "no key: every node serves every room")
				}
			}
			if tc.shards {
				assert.NotContains(t, logs.String(), "found no key")
			} else {
				assert.Equal(t, 1, strings.Count(logs.String(), "level=WARN"), "warned once per rule: %s", logs.String())
				assert.Contains(t, logs.String(), `msg="wsredirect: a Shard rule found no key in an upgrade, which is served here unsharded`)
				assert.Contains(t, logs.String(), "path=/rooms/"+key)
			}
		})
	}
}

// lobby is a fallback key func, as the FirstKey doc shows it.
func lobby(*http.Request) (string, bool) { return "lobby", true }

// abc is three members on example hosts; node b is Self.
var abc = []Member{
	{ID: "a", URL: "wss://a.example.com"},
	{ID: "b", URL: "wss://b.example.com"},
	{ID: "c", URL: "wss://c.example.com"},
}

// fakeClock is an injected clock for drain ramps.
type fakeClock struct{ t atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.t.Add(int64(d)) }

func shardMiddleware(t *testing.T, self string, members []Member, clock *fakeClock) *Middleware {
	t.Helper()
	opts := Options{Self: self, Members: members, Rules: []Rule{Shard(QueryKey("room"))}, DrainRetryAfter: 7 * time.Second}
	mw, err := New(opts)
	require.NoError(t, err)
	if clock != nil {
		mw.setClock(clock.now)
	}
	return mw
}

func roomRequest(room string) *http.Request {
	return upgradeTo("http://b.example.com/rooms?room=" + room)
}

// keysOwnedBy returns n keys the ring gives to member id.
func keysOwnedBy(t *testing.T, ring *fleet, id string, n int) []string {
	t.Helper()
	var keys []string
	for i := 0; len(keys) < n; i++ {
		k := fmt.Sprintf("room-%d", i)
		if ring.ringOwner(k).ID == id {
			keys = append(keys, k)
		}
		require.Less(t, i, 100*n, "ring gives %s no keys", id)
	}
	return keys
}

func TestShardDecisions(t *testing.T) {
	mw := shardMiddleware(t, "wss://b.example.com", abc, nil)
	ring := mw.State().fleet
	for _, id := range []string{"a", "c"} {
		for _, k := range keysOwnedBy(t, ring, id, 20) {
			d := mw.Decide(roomRequest(k))
			assert.Equal(t, Redirect, d.Action, k)
			assert.Equal(t, "wss://"+id+".example.com", d.Target.String(), k)
			assert.Equal(t, "shard", d.Rule)
		}
	}
	for _, k := range keysOwnedBy(t, ring, "b", 20) {
		d := mw.Decide(roomRequest(k))
		assert.Equal(t, Pass, d.Action, "self owns %s", k)
		assert.Equal(t, "shard", d.Rule)
	}
	assert.Equal(t, Decision{}, mw.Decide(upgradeTo("http://b.example.com/rooms")), "no key: abstain")
}

func TestDrain(t *testing.T) {
	clock := &fakeClock{}
	mw := shardMiddleware(t, "wss://b.example.com", abc, clock)
	ring := mw.State().fleet
	withoutB, err := newFleet([]Member{abc[0], abc[2]}, nil, nil)
	require.NoError(t, err)
	own := keysOwnedBy(t, ring, "b", 400)
	others := append(keysOwnedBy(t, ring, "a", 50), keysOwnedBy(t, ring, "c", 50)...)

	t.Run("hands each key to its owner without self", func(t *testing.T) {
		mw.drainSelf(t, 0)
		on, frac := mw.State().Draining()
		assert.True(t, on)
		assert.Equal(t, 1.0, frac)
		for _, k := range own {
			d := mw.Decide(roomRequest(k))
			require.Equal(t, Redirect, d.Action, k)
			assert.Equal(t, withoutB.ringOwner(k).URL, d.Target.String(), "moved once, to the post-drain owner: %s", k)
		}
		for _, k := range others {
			d := mw.Decide(roomRequest(k))
			assert.Equal(t, ring.ringOwner(k).URL, d.Target.String(), "keys of other members unaffected: %s", k)
		}
		mw.undrainSelf(t)
		on, _ = mw.State().Draining()
		assert.False(t, on)
		assert.Equal(t, Pass, mw.Decide(roomRequest(own[0])).Action, "undrained: served here again")
	})

	t.Run("ramp moves a growing share, each key once", func(t *testing.T) {
		mw.drainSelf(t, 100*time.Second)
		moved := map[string]bool{}
		for _, step := range []float64{0, 0.25, 0.5, 0.75, 1} {
			on, frac := mw.State().Draining()
			assert.True(t, on)
			assert.InDelta(t, step, frac, 1e-9)
			n := 0
			for _, k := range own {
				if mw.Decide(roomRequest(k)).Action == Redirect {
					n++
					moved[k] = true
				} else {
					assert.False(t, moved[k], "a key that moved never comes back during a ramp: %s", k)
				}
			}
			assert.InDelta(t, step, float64(n)/float64(len(own)), 0.08, "share moved at fraction %.2f", step)
			clock.advance(25 * time.Second)
		}
		clock.advance(time.Hour)
		_, frac := mw.State().Draining()
		assert.Equal(t, 1.0, frac)
		mw.undrainSelf(t)
	})

	t.Run("alone: 503 with Retry-After", func(t *testing.T) {
		solo := shardMiddleware(t, "wss://b.example.com", abc[1:2], clock)
		assert.Equal(t, Pass, solo.Decide(roomRequest("x")).Action)
		solo.drainSelf(t, 0)
		w := run(t, solo, roomRequest("x"))
		assert.Equal(t, http.StatusServiceUnavailable, w.Code)
		assert.Equal(t, "7", w.Header().Get("Retry-After"))
		assert.Equal(t, "no-store", w.Header().Get("Cache-Control"))
	})
}

func TestMembersErrors(t *testing.T) {
	shard := Shard(QueryKey("room"))
	tests := []struct {
		name    string
		members []Member
		want    string
	}{
		{"shard without members", nil, "wsredirect: rule 0 (shard): Options.Members is empty"},
		{"bad member URL", []Member{{ID: "a", URL: "ftp://a"}}, `wsredirect: Options.Members: member a: target "ftp://a": scheme must be`},
		{"same URL twice", []Member{{ID: "a", URL: "ws://h:1"}, {ID: "b", URL: "http://h:1/"}}, "wsredirect: Options.Members: members a and b have the same URL ws://h:1"},
		{"duplicate ID", []Member{{ID: "a", URL: "ws://h:1"}, {ID: "a", URL: "ws://h:2"}}, `wsredirect: Options.Members: member ID "a" is given twice`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Options{Members: tc.members, Rules: []Rule{shard}})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	// SetMembers checks a set as New does, and on error keeps the fleet
	// (regression: duplicates were accepted and the dropped members kept).
	mw := shardMiddleware(t, "wss://b.example.com", abc, nil)
	assert.EqualError(t, mw.SetMembers(abc[0], abc[0], abc[0]), `wsredirect: SetMembers: member ID "a" is given twice`)
	ids := func() (ids []string) {
		for _, m := range mw.State().Members() {
			ids = append(ids, m.ID)
		}
		return ids
	}
	assert.Equal(t, []string{"a", "b", "c"}, ids())
	require.NoError(t, mw.SetMembers(abc[0], abc[1]))
	assert.Equal(t, []string{"a", "b"}, ids())
	_, err := New(Options{Members: abc, Rules: []Rule{Shard(nil)}})
	assert.ErrorContains(t, err, "wsredirect: rule 0 (shard): nil KeyFunc")

	mw = shardMiddleware(t, "wss://b.example.com", abc, nil)
	assert.ErrorContains(t, mw.SetMembers(), "no members, and a Shard rule needs them")
	assert.Equal(t, 3, mw.State().fleet.ring.Len(), "members kept on error")
}

// TestSetMembersUnderLoad swaps the abc while requests are decided: every
// decision is one a whole member set would make.
func TestSetMembersUnderLoad(t *testing.T) {
	two := abc[:2]
	mw := shardMiddleware(t, "wss://b.example.com", abc, nil)
	rings := map[int]*fleet{3: mw.State().fleet}
	r2, err := newFleet(two, nil, nil)
	require.NoError(t, err)
	rings[2] = r2

	stop := churn(func(i int) {
		set := abc
		if i%2 == 0 {
			set = two
		}
		assert.NoError(t, mw.SetMembers(set...))
	})
	var wg sync.WaitGroup
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				k := fmt.Sprintf("k-%d-%d", g, i)
				s := mw.State()
				d := s.decide(roomRequest(k))
				want := rings[s.fleet.ring.Len()]
				owner := want.ringOwner(k).URL
				if d.Action == Pass {
					assert.Equal(t, "wss://b.example.com", owner)
				} else {
					assert.Equal(t, owner, d.Target.String())
				}
			}
		}(g)
	}
	wg.Wait()
	stop()
}

// TestFleetEndToEnd runs three real servers, each with the same middleware
// and members and itself as Self, and checks that clients land on the owner
// of their room whichever node they dial first.
func TestFleetEndToEnd(t *testing.T) {
	names := []string{"n1", "n2", "n3"}
	servers := make([]*httptest.Server, len(names))
	members := make([]Member, len(names))
	for i, name := range names {
		servers[i] = httptest.NewUnstartedServer(nil)
		members[i] = Member{ID: name, URL: "ws://" + servers[i].Listener.Addr().String()}
	}
	up := websocket.Upgrader{}
	for i, srv := range servers {
		mw := MustNew(Options{Self: members[i].URL, Members: members, Rules: []Rule{Shard(QueryKey("room"))}})
		name := names[i]
		srv.Config.Handler = mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			c.WriteMessage(websocket.TextMessage, []byte(name))
		}))
		srv.Start()
		defer srv.Close()
	}
	ring, err := newFleet(members, nil, nil)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < 30; i++ {
		room := fmt.Sprintf("room-%d", i)
		owner := ring.ringOwner(room).ID
		entry := members[i%len(members)].URL + "/rooms?room=" + room

		t.Run(room+"/gorilla by hand", func(t *testing.T) {
			url, hops := entry, 0
			for {
				c, resp, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
				if err == nil {
					_, msg, err := c.ReadMessage()
					c.Close()
					require.NoError(t, err)
					assert.Equal(t, owner, string(msg))
					break
				}
				require.NotNil(t, resp, "dial %s: %v", url, err)
				require.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)
				url = resp.Header.Get("Location")
				hops++
				require.LessOrEqual(t, hops, 1, "one redirect at most: every node agrees on the owner")
			}
		})
		t.Run(room+"/coder follows", func(t *testing.T) {
			c, _, err := coder.Dial(ctx, entry, nil)
			require.NoError(t, err)
			defer c.CloseNow()
			_, msg, err := c.Read(ctx)
			require.NoError(t, err)
			assert.Equal(t, owner, string(msg))
			assert.False(t, strings.Contains(string(msg), "error"))
		})
	}
}

// FuzzQueryValue checks the allocation-free query scan against net/url.
func FuzzQueryValue(f *testing.F) {
	for _, s := range []string{"room=1", "a=1&room=caf%C3%A9+x", "room+id=7&room=", "room=%zz", "&&room=2", "room"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, ok := queryValue(raw, "room")
		want := ""
		// url.ParseQuery skips pairs it cannot unescape; queryValue stops
		// at the first such pair it would have used, so compare only
		// queries net/url reads whole.
		q, err := url.ParseQuery(raw)
		if err != nil || strings.Contains(raw, ";") {
			return
		}
		if v := q["room"]; len(v) > 0 {
			want = v[0]
		}
		if got != want || ok != (want != "") {
			t.Fatalf("queryValue(%q) = %q, %v; net/url says %q", raw, got, ok, want)
		}
	})
}

// TestUpdateMembersKeepsConcurrentDrains: a membership source that swaps
// the set with UpdateMembers, keeping the drain fields in force, loses none
// of the drains DrainMember sets meanwhile (as a read of State().Members()
// followed by SetMembers would, when a drain lands between the two), and
// a source that changes the set without pause does not starve the drains
// (regression: state changes retried on a newer State, and each drain,
// which builds a ring, lost every race to the quicker swaps).
func TestUpdateMembersKeepsConcurrentDrains(t *testing.T) {
	var members []Member
	for i := range 8 {
		members = append(members, Member{ID: fmt.Sprintf("m%02d", i), URL: fmt.Sprintf("wss://m%02d.example.com", i)})
	}
	extra := Member{ID: "zz", URL: "wss://zz.example.com"}
	mw := shardMiddleware(t, "wss://m00.example.com", members, nil)
	since := time.Unix(1700000000, 0)

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		// The source: DNS says the set flips between with and without zz;
		// drains in force are kept.
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			next := slices.Clone(members)
			if i%2 == 0 {
				next = append(next, extra)
			}
			assert.NoError(t, mw.UpdateMembers(func(current []Member) ([]Member, error) {
				for j := range next {
					if k := memberIndex(current, next[j].ID); k >= 0 {
						next[j].DrainingSince, next[j].DrainRamp = current[k].DrainingSince, current[k].DrainRamp
					}
				}
				return next, nil
			}))
		}
	})
	for _, m := range members[1:] {
		require.NoError(t, mw.DrainMember(m.ID, since, time.Minute))
	}
	close(done)
	wg.Wait()
	for _, m := range mw.State().Members() {
		if m.ID != "m00" && m.ID != "zz" {
			assert.True(t, m.DrainingSince.Equal(since), "the drain of %s was kept", m.ID)
		}
	}
	assert.ErrorContains(t, mw.UpdateMembers(func([]Member) ([]Member, error) { return nil, errors.New("no answer") }),
		"wsredirect: UpdateMembers: no answer")
}
