package wsredirect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coderws "github.com/coder/websocket"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect/internal/testtool"
	"github.com/wsredirect/wsredirect/ring"
	"github.com/wsredirect/wsredirect/wire"
)

// trackingServer is an app that tracks each connection under its room
// with wrap's Conn and reads until the connection ends, handing what it
// reads to got.
func trackingServer(t *testing.T, mw *Middleware, wrap func(r *http.Request, c *websocket.Conn) Conn) (srv *httptest.Server, got chan string) {
	t.Helper()
	got = make(chan string, 1000)
	up := websocket.Upgrader{}
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		defer mw.Track(r.URL.Query().Get("room"), wrap(r, c))()
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			got <- string(p)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

// assertMoves checks mw's counters, which a move adds to once its frame
// is written: a moment after the client may have seen it.
func assertMoves(t *testing.T, mw *Middleware, moved, cut int) {
	t.Helper()
	assert.EventuallyWithT(t, func(c *assert.CollectT) {
		m, k := mw.Moves()
		assert.Equal(c, uint64(moved), m, "moved")
		assert.Equal(c, uint64(cut), k, "cut")
	}, 5*time.Second, 5*time.Millisecond)
}

func plainGorilla(_ *http.Request, c *websocket.Conn) Conn { return GorillaConn(c, nil) }

// dialRooms opens a raw gorilla client per key.
func dialRooms(t *testing.T, srv *httptest.Server, keys []string) []*websocket.Conn {
	t.Helper()
	conns := make([]*websocket.Conn, len(keys))
	for i, k := range keys {
		c, _, err := websocket.DefaultDialer.Dial(wsURL(srv)+"/rooms/"+k+"?room="+k+"&token=secret", nil)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		conns[i] = c
	}
	return conns
}

// TestTrackMovesOnDrain: a drain moves every tracked connection by itself,
// each to the owner of its key without this node, path and query kept; and
// nothing moves while this node owns every key.
func TestTrackMovesOnDrain(t *testing.T) {
	mw := shardMiddleware(t, "wss://b.example.com", abc, &fakeClock{})
	withoutB := testFleet(t, []Member{abc[0], abc[2]})
	keys := keysOwnedBy(t, mw.State().fleet, "b", 12)
	srv, _ := trackingServer(t, mw, plainGorilla)
	conns := dialRooms(t, srv, keys)
	require.Eventually(t, func() bool { return mw.Tracked() == len(keys) }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, mw.SetMembers(abc...), "a change that moves nothing")
	time.Sleep(50 * time.Millisecond)
	moved, cut := mw.Moves()
	assert.Zero(t, moved+cut, "this node owns every key: nothing moves")

	mw.drainSelf(t, 0)
	for i, c := range conns {
		ce, _ := readClose(t, c)
		require.Equal(t, wire.CloseRedirect, ce.Code)
		current := wsURL(srv) + "/rooms/" + keys[i] + "?room=" + keys[i] + "&token=secret"
		got, ok := wire.ParseRedirect(ce.Text, "", current)
		require.True(t, ok)
		owner := withoutB.ringOwner(keys[i]).URL
		assert.Equal(t, fmt.Sprintf("%s/rooms/%s?room=%s&token=secret", owner, keys[i], keys[i]), got)
	}
	assert.Eventually(t, func() bool { return mw.Tracked() == 0 }, 5*time.Second, 5*time.Millisecond, "apps see the close and untrack")
	assertMoves(t, mw, len(keys), 0)
}

// TestTrackMovesOverRamp: a ramped drain moves each connection when the
// ramp reaches its key, not all at its end, and each once.
func TestTrackMovesOverRamp(t *testing.T) {
	clock := &fakeClock{}
	mw := shardMiddleware(t, "wss://b.example.com", abc, clock)
	keys := keysOwnedBy(t, mw.State().fleet, "b", 40)
	srv, _ := trackingServer(t, mw, plainGorilla)
	conns := dialRooms(t, srv, keys)
	require.Eventually(t, func() bool { return mw.Tracked() == len(keys) }, 5*time.Second, 5*time.Millisecond)

	const ramp = 10 * time.Second
	mw.drainSelf(t, ramp)
	closed := make([]chan *websocket.CloseError, len(conns))
	for i, c := range conns {
		closed[i] = make(chan *websocket.CloseError, 1)
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					ce, _ := err.(*websocket.CloseError)
					closed[i] <- ce
					return
				}
			}
		}()
	}
	isClosed := func(i int) bool { return len(closed[i]) > 0 }
	for _, f := range []float64{0.3, 0.7, 1} {
		clock.advance(time.Duration(f*float64(ramp)) - time.Duration(clock.t.Load()))
		want := 0
		for _, k := range keys {
			if f >= 1 || rampPoint(ring.Hash(k)) < f {
				want++
			}
		}
		require.Eventually(t, func() bool {
			n := 0
			for i := range conns {
				if isClosed(i) {
					n++
				}
			}
			return n == want
		}, 5*time.Second, 5*time.Millisecond, "at %.0f%% of the ramp, the keys it reached have moved", f*100)
		for i, k := range keys {
			assert.Equal(t, f >= 1 || rampPoint(ring.Hash(k)) < f, isClosed(i), "key %s at %.0f%%", k, f*100)
		}
	}
	for i := range conns {
		assert.Equal(t, wire.CloseRedirect, (<-closed[i]).Code)
	}
	assertMoves(t, mw, len(keys), 0)
}

// TestTrackMovesBack: the successor of a draining member takes its keys'
// clients; when the drain ends, it moves them back by itself.
func TestTrackMovesBack(t *testing.T) {
	mw := shardMiddleware(t, "wss://a.example.com", abc, nil)
	require.NoError(t, mw.DrainMember("b", time.Now(), 0))
	var keys []string
	for _, k := range keysOwnedBy(t, mw.State().fleet, "b", 40) {
		if o, _ := mw.State().Owner(k); o.ID == "a" {
			keys = append(keys, k)
		}
	}
	require.NotEmpty(t, keys)
	srv, _ := trackingServer(t, mw, plainGorilla)
	conns := dialRooms(t, srv, keys)
	require.Eventually(t, func() bool { return mw.Tracked() == len(keys) }, 5*time.Second, 5*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	moved, _ := mw.Moves()
	require.Zero(t, moved, "a serves b's keys while b drains")

	require.NoError(t, mw.DrainMember("b", time.Time{}, 0))
	for i, c := range conns {
		ce, _ := readClose(t, c)
		require.Equal(t, wire.CloseRedirect, ce.Code)
		got, ok := wire.ParseRedirect(ce.Text, "", "ws://a/rooms?room="+keys[i])
		require.True(t, ok)
		assert.Equal(t, "wss://b.example.com/rooms?room="+keys[i], got, "back to b")
	}
}

// TestTrackMovesOnce (regression: a second MoveConns within a client's
// Grace counted it cut and closed it): changes in quick succession tell a
// connection once, and one that answers is never cut.
func TestTrackMovesOnce(t *testing.T) {
	mw := shardMiddleware(t, "wss://b.example.com", abc, nil)
	keys := keysOwnedBy(t, mw.State().fleet, "b", 6)
	var sends sync.Map // room → count of cues
	srv, _ := trackingServer(t, mw, func(r *http.Request, c *websocket.Conn) Conn {
		room := r.URL.Query().Get("room")
		var mu sync.Mutex
		return GorillaConn(c, func(text string) error {
			n, _ := sends.LoadOrStore(room, new(int))
			mu.Lock()
			defer mu.Unlock()
			*n.(*int)++
			return c.WriteMessage(websocket.TextMessage, []byte(text))
		})
	})
	conns := dialRooms(t, srv, keys)
	require.Eventually(t, func() bool { return mw.Tracked() == len(keys) }, 5*time.Second, 5*time.Millisecond)
	for range 3 {
		mw.drainSelf(t, 0)
		mw.undrainSelf(t)
		require.NoError(t, mw.SetMembers(abc[0], abc[2], abc[1]))
	}
	mw.drainSelf(t, 0)
	// Clients that answer the cue, as this module's clients do.
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, p, err := c.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, wire.Cue, string(p))
		require.NoError(t, c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second)))
		ce, _ := readClose(t, c)
		assert.Equal(t, wire.CloseRedirect, ce.Code, "the server's answer to the client's close carries the move")
	}
	assert.Eventually(t, func() bool { return mw.Tracked() == 0 }, 5*time.Second, 5*time.Millisecond)
	assertMoves(t, mw, len(keys), 0)
	sends.Range(func(room, n any) bool {
		assert.Equal(t, 1, *n.(*int), "room %s cued once", room)
		return true
	})
}

// TestCuedMove: with a send func, a move is cued through the app's own
// writes; a client that closes on the cue has everything it wrote before
// read by the app and learns where to go from the server's answer to its
// close; one that ignores the cue gets the close frame a second later, even
// with a shorter grace; and a client that closes without a cue gets the
// usual echo, so a forged cue can move nobody.
func TestCuedMove(t *testing.T) {
	mw, err := New(Options{Self: "wss://b.example.com", Members: abc, Rules: []Rule{Shard(QueryKey("room"))}, MoveGrace: 100 * time.Millisecond})
	require.NoError(t, err)
	withoutB := testFleet(t, []Member{abc[0], abc[2]})
	keys := keysOwnedBy(t, mw.State().fleet, "b", 3)
	srv, got := trackingServer(t, mw, func(_ *http.Request, c *websocket.Conn) Conn {
		var mu sync.Mutex
		return GorillaConn(c, func(text string) error {
			mu.Lock()
			defer mu.Unlock()
			return c.WriteMessage(websocket.TextMessage, []byte(text))
		})
	})
	conns := dialRooms(t, srv, keys)
	answering, ignoring, unprompted := conns[0], conns[1], conns[2]
	require.Eventually(t, func() bool { return mw.Tracked() == 3 }, 5*time.Second, 5*time.Millisecond)

	// A close the server did not prompt: the echo, nothing else.
	require.NoError(t, unprompted.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second)))
	ce, _ := readClose(t, unprompted)
	assert.Equal(t, websocket.CloseNormalClosure, ce.Code, "no move was cued: the echo")
	assert.Empty(t, ce.Text)
	require.Eventually(t, func() bool { return mw.Tracked() == 2 }, 5*time.Second, 5*time.Millisecond)

	start := time.Now()
	mw.drainSelf(t, 0)
	for _, c := range []*websocket.Conn{answering, ignoring} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		mt, p, err := c.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, websocket.TextMessage, mt)
		assert.Equal(t, wire.Cue, string(p), "the cue names no target")
	}
	for _, m := range []string{"one", "two", "three"} {
		require.NoError(t, answering.WriteMessage(websocket.TextMessage, []byte(m)))
	}
	require.NoError(t, answering.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second)))
	for _, want := range []string{"one", "two", "three"} {
		select {
		case m := <-got:
			assert.Equal(t, want, m)
		case <-time.After(5 * time.Second):
			t.Fatalf("the app never read %q", want)
		}
	}
	ce, _ = readClose(t, answering)
	require.Equal(t, wire.CloseRedirect, ce.Code, "the answer to the client's close")
	target, ok := wire.ParseRedirect(ce.Text, "", wsURL(srv)+"/rooms/"+keys[0]+"?room="+keys[0])
	require.True(t, ok)
	assert.Equal(t, withoutB.ringOwner(keys[0]).URL+"/rooms/"+keys[0]+"?room="+keys[0]+"&token=secret", target+"&token=secret")
	assert.Less(t, time.Since(start), cueWait, "answered at once, not after the fallback")

	ce, _ = readClose(t, ignoring)
	assert.Equal(t, wire.CloseRedirect, ce.Code, "the close frame follows for a client that ignores the cue")
	assert.GreaterOrEqual(t, time.Since(start), cueWait)
	assert.Eventually(t, func() bool { return mw.Tracked() == 0 }, 5*time.Second, 5*time.Millisecond)
	assertMoves(t, mw, 2, 0)
}

// TestCueFails: a send that fails, blocks or panics cuts the connection
// within the write timeout, and a panic is logged with its stack.
func TestCueFails(t *testing.T) {
	var logs testtool.Buffer
	mw, err := New(Options{Self: "wss://b.example.com", Members: abc, Rules: []Rule{Shard(QueryKey("room"))},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	keys := keysOwnedBy(t, mw.State().fleet, "b", 3)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		ended := make(chan struct{})
		defer close(ended)
		send := func(string) error { panic("the app's bug") }
		switch r.URL.Query().Get("room") {
		case keys[0]:
			send = func(string) error { return errors.New("the app's writer is gone") }
		case keys[1]:
			// As a write blocked on a client that stopped reading: until
			// the connection is closed.
			send = func(string) error { <-ended; return net.ErrClosed }
		}
		defer mw.Track(r.URL.Query().Get("room"), GorillaConn(c, send))()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	conns := dialRooms(t, srv, keys)
	require.Eventually(t, func() bool { return mw.Tracked() == 3 }, 5*time.Second, 5*time.Millisecond)
	start := time.Now()
	mw.drainSelf(t, 0)
	require.Eventually(t, func() bool { _, cut := mw.Moves(); return cut == 3 }, 5*time.Second, 5*time.Millisecond)
	assert.Less(t, time.Since(start), moveWriteTimeout+time.Second)
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := c.ReadMessage()
		assert.Error(t, err, "cut: the connection is closed under the app")
	}
	moved, _ := mw.Moves()
	assert.Zero(t, moved)
	assert.Contains(t, logs.String(), "send panicked")
	assert.Contains(t, logs.String(), "live_test.go", "with the stack")
}

// TestSendNeverAfterUntrack (regression: an app that closes its writer's
// queue when it untracks crashed with "send on closed channel" in the
// announce goroutine): untrack waits for a send in progress, and no send
// starts after it returns.
func TestSendNeverAfterUntrack(t *testing.T) {
	mw := shardMiddleware(t, "wss://b.example.com", abc, nil)
	keys := keysOwnedBy(t, mw.State().fleet, "b", 50)
	up := websocket.Upgrader{}
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		queue := make(chan string, 1)
		var untracked atomic.Bool
		untrack := mw.Track(r.URL.Query().Get("room"), GorillaConn(c, func(text string) error {
			if untracked.Load() {
				t.Error("send after untrack returned")
			}
			queue <- text
			return nil
		}))
		wg.Go(func() {
			defer c.Close()
			untrack()
			untracked.Store(true)
			close(queue) // as an app that ends its writer would
		})
	}))
	defer srv.Close()
	dialRooms(t, srv, keys[:25])
	mw.drainSelf(t, 0) // the rest are told as they are tracked
	dialRooms(t, srv, keys[25:])
	wg.Wait()
	assert.Eventually(t, func() bool { return mw.Tracked() == 0 }, 5*time.Second, 5*time.Millisecond)
}

// TestCoderConn: a coder/websocket app's connections move too, through
// CoderConn, with a real coder/websocket server and client: a close frame
// naming the new owner.
func TestCoderConn(t *testing.T) {
	mw := shardMiddleware(t, "wss://b.example.com", abc, nil)
	withoutB := testFleet(t, []Member{abc[0], abc[2]})
	keys := keysOwnedBy(t, mw.State().fleet, "b", 3)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := coderws.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		defer mw.Track(r.URL.Query().Get("room"), CoderConn(c))()
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conns := make([]*coderws.Conn, len(keys))
	for i, k := range keys {
		c, _, err := coderws.Dial(ctx, wsURL(srv)+"/rooms?room="+k, nil)
		require.NoError(t, err)
		defer c.CloseNow()
		conns[i] = c
	}
	require.Eventually(t, func() bool { return mw.Tracked() == len(keys) }, 5*time.Second, 5*time.Millisecond)
	mw.drainSelf(t, 0)
	for i, c := range conns {
		_, _, err := c.Read(ctx)
		var ce coderws.CloseError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, coderws.StatusCode(wire.CloseRedirect), ce.Code)
		got, ok := wire.ParseRedirect(ce.Reason, "", wsURL(srv)+"/rooms?room="+keys[i])
		require.True(t, ok)
		assert.Equal(t, withoutB.ringOwner(keys[i]).URL+"/rooms?room="+keys[i], got)
	}
	assert.Eventually(t, func() bool { return mw.Tracked() == 0 }, 5*time.Second, 5*time.Millisecond)
	assertMoves(t, mw, len(keys), 0)
}

// TestShutdown: on a node that is not draining, Shutdown moves every
// tracked connection at once and returns when they have ended; clients that
// do not answer are closed when its context ends.
func TestShutdown(t *testing.T) {
	t.Run("moves and waits", func(t *testing.T) {
		mw := shardMiddleware(t, "wss://b.example.com", abc, nil)
		keys := keysOwnedBy(t, mw.State().fleet, "b", 5)
		srv, _ := trackingServer(t, mw, plainGorilla)
		conns := dialRooms(t, srv, keys)
		require.Eventually(t, func() bool { return mw.Tracked() == len(keys) }, 5*time.Second, 5*time.Millisecond)
		for _, c := range conns {
			go func() { // clients that answer the close, as any does
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						return
					}
				}
			}()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, mw.Shutdown(ctx))
		assert.Zero(t, mw.Tracked())
		on, f := mw.State().Draining()
		assert.True(t, on && f == 1, "new upgrades go elsewhere too")
		moved, cut := mw.Moves()
		assert.Equal(t, uint64(len(keys)), moved, "counted when Shutdown returns")
		assert.Zero(t, cut)
	})
	t.Run("context ends", func(t *testing.T) {
		mw, err := New(Options{Self: "wss://b.example.com", Members: abc, Rules: []Rule{Shard(QueryKey("room"))}, MoveGrace: time.Minute})
		require.NoError(t, err)
		keys := keysOwnedBy(t, mw.State().fleet, "b", 3)
		srv, _ := trackingServer(t, mw, plainGorilla)
		conns := dialRooms(t, srv, keys) // never read, never answer
		require.Eventually(t, func() bool { return mw.Tracked() == len(keys) }, 5*time.Second, 5*time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		assert.ErrorIs(t, mw.Shutdown(ctx), context.DeadlineExceeded)
		assert.Less(t, time.Since(start), time.Second, "not the minute of MoveGrace")
		for _, c := range conns {
			ce, _ := readClose(t, c)
			assert.Equal(t, wire.CloseRedirect, ce.Code, "the frame went out before the connection was closed")
		}
		assert.Eventually(t, func() bool { return mw.Tracked() == 0 }, 5*time.Second, 5*time.Millisecond)
	})
}
