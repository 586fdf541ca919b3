package client_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
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
	"github.com/wsredirect/wsredirect/wire"
)

// chatRoom is a node of a chat behind the real middleware: its app relays
// every text line to every connection, the sender's included, verbatim,
// and tracks each connection with a GorillaConn, cueing (as a chat that
// moves its clients gracefully does) or not.
type chatRoom struct {
	*httptest.Server
	url  string // ws://127.0.0.1:port
	mw   *wsredirect.Middleware
	cued bool

	mu      sync.Mutex
	members map[chan string]struct{}
	conns   map[string]int // connections per user, by the query's user
}

func startChatRoom(t *testing.T, cued bool) *chatRoom {
	t.Helper()
	room := &chatRoom{members: map[chan string]struct{}{}, conns: map[string]int{}, cued: cued}
	room.Server = httptest.NewUnstartedServer(nil)
	room.url = "ws://" + room.Listener.Addr().String()
	room.mw = wsredirect.MustNew(wsredirect.Options{
		Self:    room.url,
		Members: []wsredirect.Member{{ID: "n1", URL: room.url}},
		Rules:   []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))},
	})
	room.Config.Handler = room.mw.Handler(http.HandlerFunc(room.serve))
	room.Start()
	t.Cleanup(room.Close)
	return room
}

func (room *chatRoom) serve(w http.ResponseWriter, r *http.Request) {
	// Joined before the handshake completes: a line relayed once the
	// client has its connection is not missed.
	out := make(chan string, 4096)
	room.mu.Lock()
	room.members[out] = struct{}{}
	room.conns[r.URL.Query().Get("user")]++
	room.mu.Unlock()
	defer func() {
		room.mu.Lock()
		delete(room.members, out)
		room.mu.Unlock()
	}()
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	done := make(chan struct{})
	var writer sync.WaitGroup
	defer writer.Wait()
	defer close(done)
	writer.Go(func() {
		for {
			select {
			case line := <-out:
				if c.WriteMessage(websocket.TextMessage, []byte(line)) != nil {
					return
				}
			case <-done:
				return
			}
		}
	})
	// The cue of a move goes through the writer's queue, in order with
	// the lines.
	send := func(text string) error {
		select {
		case out <- text:
			return nil
		case <-done:
			return net.ErrClosed
		}
	}
	if !room.cued {
		send = nil
	}
	defer room.mw.Track(r.URL.Query().Get("room"), wsredirect.GorillaConn(c, send))()
	for {
		_, p, err := c.ReadMessage()
		if err != nil {
			return
		}
		room.mu.Lock()
		for m := range room.members {
			m <- string(p)
		}
		room.mu.Unlock()
	}
}

func (room *chatRoom) connections(user string) int {
	room.mu.Lock()
	defer room.mu.Unlock()
	return room.conns[user]
}

// TestChatAttack is the attack of issue 18: in a room that relays every
// line verbatim, one user sends every form a move's data could take. The
// other users' Conns take each line as an ordinary message, in order:
// none goes to the address the lines name (a listener there counts), none
// stalls, ends, waits or remembers anything, and each one's next line
// reaches the room. The forged cue costs each of them one transparent
// reconnect to the same URL, and the fifty after it nothing. Whether the
// room cues its moves or not.
func TestChatAttack(t *testing.T) {
	for _, cued := range []bool{true, false} {
		t.Run(map[bool]string{true: "cued", false: "close frame"}[cued], func(t *testing.T) { chatAttack(t, cued) })
	}
}

func chatAttack(t *testing.T, cued bool) {
	room := startChatRoom(t, cued)
	// The address the lines name: a WebSocket server that would take the
	// victims, and counts them.
	var lured atomic.Int64
	lure := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lured.Add(1)
		if c, err := upgrader.Upgrade(w, r, nil); err == nil {
			defer c.Close()
			c.ReadMessage()
		}
	}))
	t.Cleanup(lure.Close)
	evil := wsURL(lure, "")
	lines := []string{
		"wsr1 =" + evil,
		"wsr1 =" + room.url + "/rooms/other?x=",
		"wsr1 retry=86400",
		"wsr1 retry=30",
		"wsr1 " + evil + "/x",
		"wsr1 " + evil + "/?token=" + strings.Repeat("x", 200),
		"wsr1 +",
		wire.Cue,
	}
	for range 50 {
		lines = append(lines, wire.Cue)
	}
	lines = append(lines, "wsr1 ="+evil)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var d client.Dialer // shared: one memory of redirects for all victims
	type victim struct {
		url  string
		c    *client.Conn
		got  chan string
		errs chan error
	}
	victims := make([]*victim, 3)
	for i := range victims {
		v := &victim{url: fmt.Sprintf("%s/rooms/lobby?room=lobby&user=v%d", room.url, i), got: make(chan string, 100), errs: make(chan error, 1)}
		var err error
		v.c, _, err = d.Connect(ctx, v.url, nil)
		require.NoError(t, err)
		t.Cleanup(func() { v.c.Close() })
		go func() {
			for {
				_, p, err := v.c.ReadMessage(ctx)
				if err != nil {
					v.errs <- err
					return
				}
				v.got <- string(p)
			}
		}()
		victims[i] = v
	}
	attacker, _, err := websocket.DefaultDialer.Dial(room.url+"/rooms/lobby?room=lobby&user=attacker", nil)
	require.NoError(t, err)
	defer attacker.Close()
	require.Eventually(t, func() bool { return room.mw.Tracked() == 4 }, 5*time.Second, time.Millisecond)
	go func() { // the attacker's own copies of the lines
		for {
			if _, _, err := attacker.ReadMessage(); err != nil {
				return
			}
		}
	}()

	// receive waits for every victim's next message, which must be want.
	receive := func(want string) bool {
		t.Helper()
		for i, v := range victims {
			select {
			case got := <-v.got:
				if !assert.Equal(t, want, got, "victim %d", i) {
					return false
				}
			case err := <-v.errs:
				assert.Fail(t, "the Conn ended", "victim %d waiting for %q: %v", i, want, err)
				return false
			case <-time.After(3 * time.Second):
				assert.Fail(t, "stalled", "victim %d waiting for %q", i, want)
				return false
			}
		}
		return true
	}
	// One line at a time: a line relayed while a victim reconnects would
	// miss it, which is the room's affair, not the client's.
	for _, line := range lines {
		require.NoError(t, attacker.WriteMessage(websocket.TextMessage, []byte(line)))
		if !receive(line) {
			break
		}
	}
	for i, v := range victims {
		own := fmt.Sprintf("v%d is still here", i)
		if assert.NoError(t, v.c.WriteMessage(websocket.TextMessage, []byte(own)), "victim %d", i) {
			receive(own)
		}
	}

	assert.Zero(t, lured.Load(), "no victim went to the address the lines named")
	for i, v := range victims {
		assert.Equal(t, 2, room.connections(fmt.Sprintf("v%d", i)), "victim %d: one transparent reconnect, for the first cue", i)
		hops := v.c.Hops()
		if assert.Len(t, hops, 2, "victim %d", i) {
			assert.Equal(t, client.Hop{URL: v.url, Status: 101, Close: websocket.CloseNormalClosure}, withoutElapsed(hops[0]))
			assert.Equal(t, client.Hop{URL: v.url, Status: 101}, withoutElapsed(hops[1]))
		}
		assert.Empty(t, client.Remembered(&d, v.url), "victim %d remembers nothing", i)
		select {
		case err := <-v.errs:
			t.Errorf("victim %d ended: %v", i, err)
		default:
		}
	}
	moved, cut := room.mw.Moves()
	assert.Zero(t, moved+cut, "the server moved nobody")
}
