package wsredirect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect/wire"
)

// TestMoveConns drains a node with live connections and checks each client
// is closed with a redirect to the owner of its key without this node,
// keeping its path and query, and that connections stay when nothing moves.
func TestMoveConns(t *testing.T) {
	clock := &fakeClock{}
	mw := shardMiddleware(t, "wss://b.example.com", abc, clock)
	ring := mw.State().fleet
	withoutB, err := newFleet([]Member{abc[0], abc[2]}, nil, nil)
	require.NoError(t, err)
	keys := keysOwnedBy(t, ring, "b", 12)

	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		untrack := mw.Track(r.URL.Query().Get("room"), c)
		defer untrack()
		defer c.Close()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	defer srv.Close()

	conns := make([]*websocket.Conn, len(keys))
	for i, k := range keys {
		c, _, err := websocket.DefaultDialer.Dial(wsURL(srv)+"/rooms/"+k+"?room="+k+"&token=secret", nil)
		require.NoError(t, err)
		defer c.Close()
		conns[i] = c
	}
	require.Eventually(t, func() bool { return mw.Tracked() == len(keys) }, 5*time.Second, 5*time.Millisecond)

	moved, cut, err := mw.MoveConns(context.Background(), MoveOptions{})
	require.NoError(t, err)
	assert.Zero(t, cut)
	assert.Zero(t, moved, "not draining and this node owns every key: nothing moves")

	mw.drainSelf(t, 0)
	moved, cut, err = mw.MoveConns(context.Background(), MoveOptions{Batch: 5, Interval: 2 * time.Millisecond})
	require.NoError(t, err)
	assert.Zero(t, cut, "every client reads: none is cut")
	tm, tc := mw.Moves()
	assert.Equal(t, uint64(len(keys)), tm, "Moves counts for metrics")
	assert.Zero(t, tc)
	assert.Equal(t, len(keys), moved)
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

	solo := shardMiddleware(t, "wss://b.example.com", []Member{abc[1]}, clock)
	_, _, err = solo.MoveConns(context.Background(), MoveOptions{})
	assert.NoError(t, err)
	_, _, err = MustNew(Options{Rules: []Rule{Path("wss://x.example.com", "/*")}}).MoveConns(context.Background(), MoveOptions{})
	assert.ErrorContains(t, err, "wsredirect: MoveConns: no members")
}

// TestMoveConnsBoundedByContext: clients that stopped reading while the app
// streams to them hold their connections' writers; their frames cannot go
// out, so they are cut, concurrently and within the context (regression:
// each cost a full second in turn, and the call reported them as moved with
// no error long after its context had ended).
func TestMoveConnsBoundedByContext(t *testing.T) {
	mw := shardMiddleware(t, "wss://b.example.com", abc, nil)
	keys := keysOwnedBy(t, mw.State().fleet, "b", 4)
	streaming := make(chan struct{}, len(keys))
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer mw.Track(r.URL.Query().Get("room"), c)()
		defer c.Close()
		chunk := make([]byte, 64<<10)
		for i := 0; ; i++ {
			if i == 1 {
				streaming <- struct{}{}
			}
			if c.WriteMessage(websocket.BinaryMessage, chunk) != nil {
				return
			}
		}
	}))
	defer srv.Close()
	for _, k := range keys {
		c, _, err := websocket.DefaultDialer.Dial(wsURL(srv)+"/rooms?room="+k, nil)
		require.NoError(t, err)
		defer c.Close() // never read
	}
	for range keys {
		select {
		case <-streaming:
		case <-time.After(5 * time.Second):
			t.Fatal("the app is not streaming")
		}
	}
	// At memory speed the kernel's buffers fill in milliseconds; then each
	// app write blocks holding the connection's writer.
	time.Sleep(300 * time.Millisecond)
	mw.drainSelf(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	moved, cut, err := mw.MoveConns(ctx, MoveOptions{})
	elapsed := time.Since(start)
	// Every write ends at the context's deadline: whether ctx.Err is set
	// when the last one returns is a race of timers, and either answer is
	// true.
	if err != nil {
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	}
	assert.Zero(t, moved, "no frame could be written")
	assert.Equal(t, len(keys), cut)
	assert.Less(t, elapsed, time.Second, "the context bounds the call")
	assert.Eventually(t, func() bool { return mw.Tracked() == 0 }, 5*time.Second, 5*time.Millisecond, "cut connections end the app's handlers")
}

// TestMoveConnsAnnounces (issue 14): a connection registered with
// TrackSend is told of its move first in its own stream, through the
// app's send, as the text of the close reason; a client that closes on it
// has everything it sent before read by the app, and one that does not
// (this raw client) gets the close frame a second later all the same,
// even with a shorter Grace.
// A send that fails or blocks cuts the connection.
func TestMoveConnsAnnounces(t *testing.T) {
	mw := shardMiddleware(t, "wss://b.example.com", abc, nil)
	keys := keysOwnedBy(t, mw.State().fleet, "b", 3)
	withoutB, err := newFleet([]Member{abc[0], abc[2]}, nil, nil)
	require.NoError(t, err)
	got := make(chan string, 100)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		ended := make(chan struct{})
		defer close(ended)
		var wmu sync.Mutex
		send := func(text string) error {
			wmu.Lock()
			defer wmu.Unlock()
			return c.WriteMessage(websocket.TextMessage, []byte(text))
		}
		switch r.URL.Query().Get("send") {
		case "fails":
			send = func(string) error { return errors.New("the app's writer is gone") }
		case "blocks":
			// As a write blocked on a client that stopped reading: until
			// the connection is closed.
			send = func(string) error { <-ended; return net.ErrClosed }
		}
		defer mw.TrackSend(r.URL.Query().Get("room"), c, send)()
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			got <- string(p)
		}
	}))
	defer srv.Close()

	dial := func(k, send string) *websocket.Conn {
		c, _, err := websocket.DefaultDialer.Dial(wsURL(srv)+"/rooms?room="+k+"&send="+send, nil)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	answering, ignoring := dial(keys[0], ""), dial(keys[1], "")
	require.Eventually(t, func() bool { return mw.Tracked() == 2 }, 5*time.Second, 5*time.Millisecond)
	mw.drainSelf(t, 0)
	start := time.Now()
	// A Grace shorter than announceWait: it counts from the close frame,
	// which the client that ignores the announcement still gets.
	moved, cut, err := mw.MoveConns(context.Background(), MoveOptions{Grace: 100 * time.Millisecond})
	require.NoError(t, err)
	assert.Equal(t, 2, moved)
	assert.Zero(t, cut)

	// The announcement is the close reason, as a text message.
	for i, c := range []*websocket.Conn{answering, ignoring} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		mt, p, err := c.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, websocket.TextMessage, mt)
		code, reason, ok := wire.Announced(string(p))
		require.True(t, ok, "announcement %q", p)
		assert.Equal(t, wire.CloseRedirect, code)
		target, ok := wire.ParseRedirect(reason, "", wsURL(srv)+"/rooms?room="+keys[i])
		require.True(t, ok)
		assert.Equal(t, withoutB.ringOwner(keys[i]).URL+"/rooms?room="+keys[i], target)
	}
	// A client that answers: what it writes before its close reaches the app.
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
	// One that does not: the close frame, a second later.
	ce, _ := readClose(t, ignoring)
	assert.Equal(t, wire.CloseRedirect, ce.Code)
	assert.GreaterOrEqual(t, time.Since(start), announceWait)
	assert.Eventually(t, func() bool { return mw.Tracked() == 0 }, 5*time.Second, 5*time.Millisecond)

	// Sends that fail or block: cut, within the write timeout.
	fails, blocks := dial(keys[2], "fails"), dial(keys[0], "blocks")
	require.Eventually(t, func() bool { return mw.Tracked() == 2 }, 5*time.Second, 5*time.Millisecond)
	start = time.Now()
	moved, cut, err = mw.MoveConns(context.Background(), MoveOptions{})
	require.NoError(t, err)
	assert.Zero(t, moved)
	assert.Equal(t, 2, cut)
	assert.Less(t, time.Since(start), moveWriteTimeout+time.Second)
	for _, c := range []*websocket.Conn{fails, blocks} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := c.ReadMessage()
		assert.Error(t, err, "cut: the connection is closed under the app")
	}
}
