package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/client"
	"github.com/wsredirect/wsredirect/internal/wstest"
	"github.com/wsredirect/wsredirect/wire"
)

// recorder is a node's app: it records, per connection, the numbers a
// client streams to it.
type recorder struct {
	mu     sync.Mutex
	conns  [][]int
	closes []int // the close code each connection ended with, -1 for none
	// subprotocols selected by each connection's upgrade: the app's
	// upgrader selects none, whatever the client offers.
	subprotocols []string
}

// handler is the app; cue: it tracks connections with a send func, so
// moves are cued in the stream, rather than by close frame alone.
func (rec *recorder) handler(mw *wsredirect.Middleware, cue bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		var send func(string) error
		if cue {
			var wmu sync.Mutex // the app's write lock: it writes nothing else here
			send = func(text string) error {
				wmu.Lock()
				defer wmu.Unlock()
				return c.WriteMessage(websocket.TextMessage, []byte(text))
			}
		}
		defer mw.Track(r.URL.Query().Get("room"), wsredirect.GorillaConn(c, send))()
		defer c.Close()
		rec.mu.Lock()
		rec.subprotocols = append(rec.subprotocols, c.Subprotocol())
		i := len(rec.conns)
		rec.conns = append(rec.conns, nil)
		rec.mu.Unlock()
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				code := -1
				if ce, ok := err.(*websocket.CloseError); ok {
					code = ce.Code
				}
				rec.mu.Lock()
				rec.closes = append(rec.closes, code)
				rec.mu.Unlock()
				return
			}
			n, _ := strconv.Atoi(string(p))
			rec.mu.Lock()
			rec.conns[i] = append(rec.conns[i], n)
			rec.mu.Unlock()
		}
	})
}

func (rec *recorder) received() (all []int, perConn [][]int) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, c := range rec.conns {
		perConn = append(perConn, append([]int(nil), c...))
		all = append(all, c...)
	}
	return all, perConn
}

// TestStreamThroughLiveDrain: a client writes a steady numbered stream
// while its node drains and the middleware moves it by itself, by close
// frame (GorillaConn without send) or cued in the stream first (with
// send): every number reaches exactly one of the old or the new node's
// app, in order on each, none missing, and the cue never reaches the
// client's application.
func TestStreamThroughLiveDrain(t *testing.T) {
	for _, cue := range []bool{false, true} {
		t.Run(map[bool]string{false: "close frame", true: "cued"}[cue], func(t *testing.T) {
			streamThroughLiveDrain(t, cue)
		})
	}
}

func streamThroughLiveDrain(t *testing.T, cue bool) {
	const n = 3000
	names := []string{"a", "b"}
	srvs := make([]*httptest.Server, len(names))
	members := make([]wsredirect.Member, len(names))
	for i, name := range names {
		srvs[i] = httptest.NewUnstartedServer(nil)
		members[i] = wsredirect.Member{ID: name, URL: "ws://" + srvs[i].Listener.Addr().String()}
	}
	mws := make([]*wsredirect.Middleware, len(names))
	recs := make([]*recorder, len(names))
	for i := range names {
		mws[i] = wsredirect.MustNew(wsredirect.Options{Self: members[i].URL, Members: members, Rules: []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))}})
		recs[i] = &recorder{}
		srvs[i].Config.Handler = mws[i].Handler(recs[i].handler(mws[i], cue))
		srvs[i].Start()
		t.Cleanup(srvs[i].Close)
	}
	room := ""
	for i := 0; room == ""; i++ {
		if m, _ := mws[0].State().Owner("room-" + strconv.Itoa(i)); m.ID == "a" {
			room = "room-" + strconv.Itoa(i)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := (&client.Dialer{}).Connect(ctx, members[0].URL+"/ws?room="+room, nil)
	require.NoError(t, err)
	defer c.Close()
	surfaced := make(chan string, 10)
	go func() { // moves happen while the Conn reads
		for {
			_, p, err := c.ReadMessage(ctx)
			if err != nil {
				return
			}
			surfaced <- string(p)
		}
	}()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		time.Sleep(50 * time.Millisecond)
		// b first: a moves its connection the moment it learns, and b
		// would send it back if it had not heard yet.
		for _, mw := range []*wsredirect.Middleware{mws[1], mws[0]} {
			assert.NoError(t, mw.DrainMember("a", time.Now(), 0))
		}
	}()
	for i := 1; i <= n; i++ {
		require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(i))), "message %d", i)
		if i%10 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	<-drained

	var oldNode, newNode []int
	require.Eventually(t, func() bool {
		a, _ := recs[0].received()
		b, _ := recs[1].received()
		oldNode, newNode = a, b
		return len(a)+len(b) >= n
	}, 10*time.Second, 10*time.Millisecond, "all %d numbers arrive", n)
	_, aConns := recs[0].received()
	_, bConns := recs[1].received()
	require.Len(t, aConns, 1)
	require.Len(t, bConns, 1, "the client moved once")
	assert.NotEmpty(t, oldNode, "the drain happened mid-stream")
	assert.NotEmpty(t, newNode, "the drain happened mid-stream")
	// In order on each node, and together exactly 1..n: the old node got a
	// prefix, the new one the rest.
	assert.Equal(t, seq(1, len(oldNode)), oldNode)
	assert.Equal(t, seq(len(oldNode)+1, n), newNode)
	// The old node's app saw the client's close: an answer to the move's
	// close frame echoes its code; the close on a cue is the client's own,
	// normal, and the server's answer to it carried the move.
	require.Eventually(t, func() bool {
		recs[0].mu.Lock()
		defer recs[0].mu.Unlock()
		return len(recs[0].closes) == 1
	}, 5*time.Second, 10*time.Millisecond)
	want := map[bool]int{false: wire.CloseRedirect, true: websocket.CloseNormalClosure}[cue]
	assert.Equal(t, []int{want}, recs[0].closes)
	moved, cut := mws[0].Moves()
	assert.Equal(t, uint64(1), moved)
	assert.Zero(t, cut)
	hops := c.Hops()
	require.Len(t, hops, 2)
	assert.Equal(t, wire.CloseRedirect, hops[0].Close)
	assert.Equal(t, members[1].URL+"/ws?room="+room, hops[1].URL)
	select {
	case p := <-surfaced:
		t.Errorf("the application received %q: the servers sent it nothing", p)
	default:
	}
	assert.Equal(t, []string{""}, recs[0].subprotocols, "the app's upgrader selected no subprotocol: the marker was offered, and that is fine")
	t.Logf("%d numbers: %d to the old node, %d to the new one", n, len(oldNode), len(newNode))
}

func seq(from, to int) []int {
	s := []int{}
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// TestMoveQueueOverflowAndFailure: writes during a move queue up to the
// limit, the next one fails with ErrQueueFull, and when the move fails the
// queued messages come back in the error instead of being dropped.
func TestMoveQueueOverflowAndFailure(t *testing.T) {
	a := scripted(t, false, func(c *websocket.Conn, r *http.Request) {
		wstest.CloseWith(c, "", wire.CloseRetry, wire.EncodeRetry(time.Second))
	})

	d := client.Dialer{MaxQueuedMessages: 2, MaxRetries: 1, Jitter: func(time.Duration) time.Duration { return 0 }}
	waiting := make(chan struct{})
	release := make(chan struct{})
	client.SetSleep(&d, func(ctx context.Context, _ time.Duration) error {
		close(waiting)
		<-release
		return errors.New("server gone")
	})
	c, _, err := d.Connect(context.Background(), wsURL(a, "/"), nil)
	require.NoError(t, err)
	readErr := make(chan error, 1)
	go func() {
		_, _, err := c.ReadMessage(context.Background())
		readErr <- err
	}()
	<-waiting // the server asked to retry: the Conn is moving
	require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("one")))
	require.NoError(t, c.WriteMessage(websocket.BinaryMessage, []byte("two")))
	err = c.WriteMessage(websocket.TextMessage, []byte("three"))
	require.ErrorIs(t, err, client.ErrQueueFull)
	close(release)

	err = <-readErr
	var ce *client.Error
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, []client.Message{{Type: websocket.TextMessage, Data: []byte("one")}, {Type: websocket.BinaryMessage, Data: []byte("two")}}, ce.Unsent)
	assert.ErrorAs(t, c.WriteMessage(websocket.TextMessage, []byte("four")), &ce, "writes after a failed move fail")
}
