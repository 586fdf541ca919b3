package client_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/client"
	"github.com/wsredirect/wsredirect/internal/wstest"
)

// ownedFleet is three nodes running the real middleware with one rule:
// /rooms/* lives on owner, wherever the request arrives. The owner serves
// it; the others redirect there.
type ownedFleet struct {
	owner atomic.Pointer[wsredirect.Target]
	nodes map[string]*fleetNode
}

type fleetNode struct {
	*node
	url      string       // ws://127.0.0.1:port
	requests atomic.Int64 // handshakes that reached the node, whatever the answer
	broken   atomic.Int64 // status to answer every request with, 0: none
}

func startOwnedFleet(t *testing.T) *ownedFleet {
	t.Helper()
	f := &ownedFleet{nodes: map[string]*fleetNode{}}
	for _, name := range []string{"A", "B", "C"} {
		n := &fleetNode{node: &node{name: name}}
		n.Server = httptest.NewUnstartedServer(nil)
		n.url = "ws://" + n.Listener.Addr().String()
		mw := wsredirect.MustNew(wsredirect.Options{Self: n.url, Rules: []wsredirect.Rule{
			wsredirect.NewRule("owner", func(r *http.Request, s *wsredirect.State) wsredirect.Decision {
				if !strings.HasPrefix(r.URL.Path, "/rooms/") {
					return wsredirect.Decision{}
				}
				return wsredirect.Decision{Action: wsredirect.Redirect, Target: f.owner.Load()}
			}),
		}})
		app := mw.Handler(http.HandlerFunc(n.serve))
		n.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.requests.Add(1)
			if code := n.broken.Load(); code != 0 {
				w.WriteHeader(int(code))
				return
			}
			app.ServeHTTP(w, r)
		})
		n.Start()
		t.Cleanup(n.Close)
		f.nodes[name] = n
	}
	f.move("B")
	return f
}

// move makes name the owner of every room.
func (f *ownedFleet) move(name string) {
	f.owner.Store(wsredirect.MustParseTarget(f.nodes[name].url))
}

// requests returns how many handshakes each node saw, as "A=1 B=2 C=0".
func (f *ownedFleet) requests() string {
	return fmt.Sprintf("A=%d B=%d C=%d", f.nodes["A"].requests.Load(), f.nodes["B"].requests.Load(), f.nodes["C"].requests.Load())
}

// hopsOf renders hops as "URL status" with node names for URLs, a
// remembered hop marked with "*", so one assertion shows the chain.
func (f *ownedFleet) hopsOf(hops []client.Hop) []string {
	out := make([]string, len(hops))
	for i, h := range hops {
		u := h.URL
		for name, n := range f.nodes {
			u = strings.Replace(u, n.url, name, 1)
		}
		if h.Remembered {
			u = "*" + u
		}
		out[i] = fmt.Sprintf("%s %d", u, h.Status)
	}
	return out
}

// dialEcho dials u with d, checks the connection echoes from want, and
// returns the hops.
func dialEcho(t *testing.T, f *ownedFleet, d *client.Dialer, u string, want string) []string {
	t.Helper()
	c, _, hops, err := d.DialTrace(context.Background(), u, nil)
	require.NoError(t, err)
	defer c.Close()
	path := strings.TrimPrefix(u, f.nodes["A"].url)
	assert.Equal(t, want+" "+path+": hi", echo(t, c, "hi"))
	return f.hopsOf(hops)
}

func TestRememberSkipsTheRedirect(t *testing.T) {
	f := startOwnedFleet(t)
	u := f.nodes["A"].url + "/rooms/42?user=ann"
	var d client.Dialer

	assert.Equal(t, []string{"A/rooms/42?user=ann 307", "B/rooms/42?user=ann 101"}, dialEcho(t, f, &d, u, "B"))
	assert.Equal(t, "A=1 B=1 C=0", f.requests())
	assert.Equal(t, f.nodes["B"].url+"/rooms/42?user=ann", client.Remembered(&d, u))

	assert.Equal(t, []string{"*B/rooms/42?user=ann 101"}, dialEcho(t, f, &d, u, "B"), "the reconnect goes straight to the target")
	assert.Equal(t, "A=1 B=2 C=0", f.requests(), "the first node saw no second request")

	t.Run("Connect too, and its copy of the Dialer shares the memory", func(t *testing.T) {
		c, _, err := d.Connect(context.Background(), u, nil)
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, []string{"*B/rooms/42?user=ann 101"}, f.hopsOf(c.Hops()))
		assert.Equal(t, "A=1 B=3 C=0", f.requests())

		// A fresh Dialer's first use is Connect: the memory it creates is
		// the Dialer's, not only the copy's.
		var d2 client.Dialer
		v := f.nodes["A"].url + "/rooms/7"
		c2, _, err := d2.Connect(context.Background(), v, nil)
		require.NoError(t, err)
		c2.Close()
		assert.Equal(t, []string{"A/rooms/7 307", "B/rooms/7 101"}, f.hopsOf(c2.Hops()))
		assert.Equal(t, []string{"*B/rooms/7 101"}, dialEcho(t, f, &d2, v, "B"))
	})

	t.Run("other URLs, other keys", func(t *testing.T) {
		assert.Equal(t, []string{"A/rooms/42?user=bob 307", "B/rooms/42?user=bob 101"},
			dialEcho(t, f, &d, f.nodes["A"].url+"/rooms/42?user=bob", "B"), "the query is part of the key")
		assert.Equal(t, []string{"A/lobby 101"}, dialEcho(t, f, &d, f.nodes["A"].url+"/lobby", "A"), "nothing to remember")
	})
}

func TestRememberStale(t *testing.T) {
	f := startOwnedFleet(t)
	u := f.nodes["A"].url + "/rooms/1"
	var d client.Dialer
	dialEcho(t, f, &d, u, "B")

	f.move("C")
	assert.Equal(t, []string{"*B/rooms/1 307", "C/rooms/1 101"}, dialEcho(t, f, &d, u, "C"), "one more redirect, from the remembered node")
	assert.Equal(t, "A=1 B=2 C=1", f.requests())
	assert.Equal(t, f.nodes["C"].url+"/rooms/1", client.Remembered(&d, u), "updated")
	assert.Equal(t, []string{"*C/rooms/1 101"}, dialEcho(t, f, &d, u, "C"))

	t.Run("back on the first URL: forgotten", func(t *testing.T) {
		f.move("A")
		assert.Equal(t, []string{"*C/rooms/1 307", "A/rooms/1 101"}, dialEcho(t, f, &d, u, "A"))
		assert.Empty(t, client.Remembered(&d, u))
		assert.Equal(t, []string{"A/rooms/1 101"}, dialEcho(t, f, &d, u, "A"))
	})
}

func TestRememberedTargetFails(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fail     func(b *fleetNode)
		wantHops []string
	}{
		{"down", func(b *fleetNode) { b.Close() }, []string{"*B/rooms/1 0", "A/rooms/1 307", "C/rooms/1 101"}},
		{"answers 404", func(b *fleetNode) { b.broken.Store(404) }, []string{"*B/rooms/1 404", "A/rooms/1 307", "C/rooms/1 101"}},
		{"answers 503", func(b *fleetNode) { b.broken.Store(503) }, []string{"*B/rooms/1 503", "A/rooms/1 307", "C/rooms/1 101"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startOwnedFleet(t)
			u := f.nodes["A"].url + "/rooms/1"
			var d client.Dialer
			dialEcho(t, f, &d, u, "B")

			tc.fail(f.nodes["B"])
			f.move("C")
			assert.Equal(t, tc.wantHops, dialEcho(t, f, &d, u, "C"), "back to the URL as given, where the server decides")
			assert.Equal(t, f.nodes["C"].url+"/rooms/1", client.Remembered(&d, u))
		})
	}

	t.Run("the server still sends there: its error, no loop", func(t *testing.T) {
		f := startOwnedFleet(t)
		u := f.nodes["A"].url + "/rooms/1"
		var d client.Dialer
		dialEcho(t, f, &d, u, "B")
		f.nodes["B"].Close()
		_, _, hops, err := d.DialTrace(context.Background(), u, nil)
		require.Error(t, err)
		assert.NotErrorIs(t, err, client.ErrLoop)
		assert.Equal(t, []string{"*B/rooms/1 0", "A/rooms/1 307", "B/rooms/1 0"}, f.hopsOf(hops))
		assert.Contains(t, err.Error(), "(remembered) → ")
		assert.Empty(t, client.Remembered(&d, u))
	})

	t.Run("a context that ends on the remembered target ends the dial", func(t *testing.T) {
		f := startOwnedFleet(t)
		u := f.nodes["A"].url + "/rooms/1"
		var d client.Dialer
		dialEcho(t, f, &d, u, "B")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, _, hops, err := d.DialTrace(ctx, u, nil)
		require.ErrorIs(t, err, context.Canceled)
		assert.Len(t, hops, 1)
		assert.Equal(t, "A=1 B=1 C=0", f.requests())
	})
}

func TestRememberOff(t *testing.T) {
	f := startOwnedFleet(t)
	u := f.nodes["A"].url + "/rooms/1"
	d := client.Dialer{RememberRedirects: -1}
	for range 3 {
		assert.Equal(t, []string{"A/rooms/1 307", "B/rooms/1 101"}, dialEcho(t, f, &d, u, "B"))
	}
	c, _, err := d.Connect(context.Background(), u, nil)
	require.NoError(t, err)
	c.Close()
	assert.Equal(t, []string{"A/rooms/1 307", "B/rooms/1 101"}, f.hopsOf(c.Hops()))
	assert.Equal(t, "A=4 B=4 C=0", f.requests())

	t.Run("negative MaxHops: no redirect, remembered or not", func(t *testing.T) {
		var d client.Dialer
		dialEcho(t, f, &d, u, "B")
		d.MaxHops = -1
		_, _, hops, err := d.DialTrace(context.Background(), u, nil)
		require.ErrorIs(t, err, client.ErrTooManyHops)
		assert.Equal(t, []string{"A/rooms/1 307"}, f.hopsOf(hops))
	})
}

func TestRememberExpires(t *testing.T) {
	f := startOwnedFleet(t)
	u := f.nodes["A"].url + "/rooms/1"
	for _, tc := range []struct {
		name     string
		remember time.Duration
		lifetime time.Duration
	}{
		{"default 10 minutes", 0, 10 * time.Minute},
		{"configured", time.Minute, time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now()
			var mu sync.Mutex
			d := client.Dialer{RememberRedirects: tc.remember}
			client.SetClock(&d, func() time.Time {
				mu.Lock()
				defer mu.Unlock()
				return now
			})
			advance := func(by time.Duration) {
				mu.Lock()
				now = now.Add(by)
				mu.Unlock()
			}
			dialEcho(t, f, &d, u, "B")
			advance(tc.lifetime / 2)
			assert.Equal(t, []string{"*B/rooms/1 101"}, dialEcho(t, f, &d, u, "B"))
			advance(tc.lifetime/2 - time.Nanosecond)
			assert.Equal(t, []string{"*B/rooms/1 101"}, dialEcho(t, f, &d, u, "B"), "a use does not extend it")
			advance(time.Nanosecond)
			assert.Equal(t, []string{"A/rooms/1 307", "B/rooms/1 101"}, dialEcho(t, f, &d, u, "B"), "expired")
			assert.Equal(t, []string{"*B/rooms/1 101"}, dialEcho(t, f, &d, u, "B"), "remembered afresh")
		})
	}
}

func TestRememberBounded(t *testing.T) {
	f := startOwnedFleet(t)
	var d client.Dialer
	client.SetMaxRemembered(&d, 2)
	room := func(i int) string { return f.nodes["A"].url + fmt.Sprintf("/rooms/%d", i) }
	for i := range 3 {
		dialEcho(t, f, &d, room(i), "B")
	}
	assert.Empty(t, client.Remembered(&d, room(0)), "the oldest went")
	assert.NotEmpty(t, client.Remembered(&d, room(1)))
	assert.NotEmpty(t, client.Remembered(&d, room(2)))
	assert.Equal(t, []string{"A/rooms/0 307", "B/rooms/0 101"}, dialEcho(t, f, &d, room(0), "B"))
	assert.Empty(t, client.Remembered(&d, room(1)), "then the next oldest")
	assert.Equal(t, []string{"*B/rooms/2 101"}, dialEcho(t, f, &d, room(2), "B"))

	t.Run("the default bound", func(t *testing.T) {
		assert.Equal(t, 1024, client.MaxRemembered)
	})
}

// The Host override routes, so it is part of the key.
func TestRememberKeyHasHost(t *testing.T) {
	b := startNode(t, "B", false, nil)
	mw := wsredirect.MustNew(wsredirect.Options{Rules: []wsredirect.Rule{wsredirect.Host(wsURL(b.Server, ""), "moved.example")}})
	a := startNode(t, "A", false, mw.Handler)
	var d client.Dialer
	moved := http.Header{"Host": {"moved.example"}}
	for _, want := range [][]int{{307, 101}, {101}} {
		c, _, hops, err := d.DialTrace(context.Background(), wsURL(a.Server, "/lobby"), moved)
		require.NoError(t, err)
		assert.Equal(t, "B /lobby: x", echo(t, c, "x"))
		c.Close()
		assert.Equal(t, want, statuses(hops))
	}
	c, _, hops, err := d.DialTrace(context.Background(), wsURL(a.Server, "/lobby"), nil)
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, "A /lobby: x", echo(t, c, "x"), "without the override, A serves it")
	assert.Equal(t, []int{101}, statuses(hops))
}

func TestRememberCredentials(t *testing.T) {
	a, b := credentialNodes(t)

	for _, tc := range []struct {
		name     string
		path     string
		landOn   *node
		wantKept bool
	}{
		{"same origin keeps them", "/same", a, true},
		{"other origin drops them", "/cross", b, false},
		{"dropped on the way, so dropped straight there too", "/back", a, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d client.Dialer
			for i, wantLen := range []int{0, 1} {
				// The second dial brings a new token: the caller's
				// header, not the first chain's, is what is sent.
				token := fmt.Sprintf("Bearer t%d", i)
				_, _, hops, err := d.DialTrace(context.Background(), wsURL(a.Server, tc.path), http.Header{"Authorization": {token}, "X-Trace": {"kept"}})
				require.NoError(t, err)
				if wantLen == 1 {
					require.Len(t, hops, 1)
					assert.True(t, hops[0].Remembered)
				}
				got := tc.landOn.lastHeader(t)
				assert.Equal(t, "kept", got.Get("X-Trace"))
				if tc.wantKept {
					assert.Equal(t, token, got.Get("Authorization"))
				} else {
					assert.Empty(t, got.Values("Authorization"))
				}
			}
		})
	}

	t.Run("CheckRedirect is asked, and can add credentials back", func(t *testing.T) {
		var vias [][]client.Hop
		d := client.Dialer{CheckRedirect: func(next *url.URL, h http.Header, via []client.Hop) error {
			vias = append(vias, append([]client.Hop(nil), via...))
			assert.Empty(t, h.Get("Authorization"), "the hook sees the header after stripping")
			h.Set("Authorization", "Bearer for-b")
			return nil
		}}
		for range 2 {
			c, _, err := d.DialContext(context.Background(), wsURL(a.Server, "/cross"), http.Header{"Authorization": {"Bearer for-a"}})
			require.NoError(t, err)
			c.Close()
			assert.Equal(t, "Bearer for-b", b.lastHeader(t).Get("Authorization"))
		}
		require.Len(t, vias, 2)
		assert.Equal(t, []int{307}, statuses(vias[0]))
		require.Len(t, vias[1], 1)
		assert.Equal(t, client.Hop{URL: wsURL(a.Server, "/cross"), Location: wsURL(b.Server, "/end")}, vias[1][0], "the first URL, not dialled, pointing at the target")
	})

	t.Run("a veto of the remembered target skips the memory", func(t *testing.T) {
		var calls int
		d := client.Dialer{CheckRedirect: func(next *url.URL, h http.Header, via []client.Hop) error {
			calls++
			if calls == 2 {
				return fmt.Errorf("not now")
			}
			return nil
		}}
		for range 2 {
			c, _, err := d.DialContext(context.Background(), wsURL(a.Server, "/cross"), nil)
			require.NoError(t, err)
			c.Close()
		}
		_, _, hops, err := d.DialTrace(context.Background(), wsURL(a.Server, "/cross"), nil)
		require.NoError(t, err)
		assert.Equal(t, []int{101}, statuses(hops), "remembered again by the second chain")
		assert.Equal(t, 4, calls)
	})
}

func TestRememberDowngrade(t *testing.T) {
	plain := startNode(t, "P", false, nil)
	redirector := startNode(t, "R", true, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", wsURL(plain.Server, "/"))
			w.WriteHeader(http.StatusTemporaryRedirect)
		})
	})
	d := client.Dialer{AllowDowngrade: true}
	d.TLSClientConfig = trusting(redirector.Server)
	u := wsURL(redirector.Server, "/")
	for _, want := range [][]int{{307, 101}, {101}} {
		c, _, hops, err := d.DialTrace(context.Background(), u, nil)
		require.NoError(t, err)
		c.Close()
		assert.Equal(t, want, statuses(hops))
	}
	d.AllowDowngrade = false
	_, _, hops, err := d.DialTrace(context.Background(), u, nil)
	require.ErrorIs(t, err, client.ErrDowngrade, "a remembered ws target is no way around the rule")
	assert.Equal(t, []int{307}, statuses(hops))
}

func TestRememberNothingAfterRetry(t *testing.T) {
	n := refusing(t, "1", 1)
	var d client.Dialer
	client.SetSleep(&d, func(context.Context, time.Duration) error { return nil })
	u := wsURL(n.Server, "/")
	c, _, hops, err := d.DialTrace(context.Background(), u, nil)
	require.NoError(t, err)
	c.Close()
	assert.Equal(t, []int{503, 101}, statuses(hops))
	assert.Empty(t, client.Remembered(&d, u))
}

// A Conn moved by a close code: the memory follows it, for the URL first
// dialled.
func TestRememberCloseCodeMove(t *testing.T) {
	c3 := startGreeter(t, "C", false, nil)
	// b greets, and moves the connection to c when told to.
	b := scripted(t, false, func(c *websocket.Conn, r *http.Request) {
		if c.WriteMessage(websocket.TextMessage, []byte("B")) != nil {
			return
		}
		if _, _, err := c.ReadMessage(); err == nil {
			wstest.CloseRedirect(c, wsURL(c3.Server, r.URL.RequestURI()))
		}
	})
	var aConns atomic.Int64
	a := scripted(t, false, func(c *websocket.Conn, r *http.Request) {
		aConns.Add(1)
		wstest.CloseRedirect(c, wsURL(b, r.URL.RequestURI()))
	})
	u := wsURL(a, "/rooms/1")
	var d client.Dialer
	conn, _, err := d.Connect(context.Background(), u, nil)
	require.NoError(t, err)
	defer conn.Close()
	_, p, err := conn.ReadMessage(context.Background())
	require.NoError(t, err)
	require.Equal(t, "B", string(p))
	assert.Equal(t, wsURL(b, "/rooms/1"), client.Remembered(&d, u), "the close-code redirect at connect")

	require.NoError(t, conn.WriteMessage(websocket.TextMessage, []byte("move")))
	_, p, err = conn.ReadMessage(context.Background())
	require.NoError(t, err)
	require.Equal(t, "C /rooms/1", string(p))
	assert.Equal(t, wsURL(c3.Server, "/rooms/1"), client.Remembered(&d, u), "the live move")

	ws, _, hops, err := d.DialTrace(context.Background(), u, nil)
	require.NoError(t, err)
	ws.Close()
	require.Len(t, hops, 1)
	assert.Equal(t, wsURL(c3.Server, "/rooms/1"), hops[0].URL)
	assert.True(t, hops[0].Remembered)
	assert.EqualValues(t, 1, aConns.Load())
}

// Many goroutines share one zero Dialer from its very first dial, by
// DialContext and Connect, on a few URLs: all land on the owner, and -race
// sees the memory's creation and use.
func TestRememberConcurrent(t *testing.T) {
	f := startOwnedFleet(t)
	var d client.Dialer
	var wg sync.WaitGroup
	const workers, dials = 16, 10
	errs := make(chan error, workers*dials)
	for w := range workers {
		wg.Go(func() {
			for i := range dials {
				u := f.nodes["A"].url + fmt.Sprintf("/rooms/%d", (w+i)%4)
				var (
					reply []byte
					err   error
				)
				if i%2 == 0 {
					var c *websocket.Conn
					if c, _, err = d.DialContext(context.Background(), u, nil); err == nil {
						if err = c.WriteMessage(websocket.TextMessage, []byte("x")); err == nil {
							_, reply, err = c.ReadMessage()
						}
						c.Close()
					}
				} else {
					var c *client.Conn
					if c, _, err = d.Connect(context.Background(), u, nil); err == nil {
						if err = c.WriteMessage(websocket.TextMessage, []byte("x")); err == nil {
							_, reply, err = c.ReadMessage(context.Background())
						}
						c.Close()
					}
				}
				if err == nil && !strings.HasPrefix(string(reply), "B ") {
					err = fmt.Errorf("landed on %q", reply)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	assert.LessOrEqual(t, f.nodes["A"].requests.Load(), int64(workers*dials/2), "most dials skipped A")
	assert.EqualValues(t, workers*dials, f.nodes["B"].requests.Load())
}
