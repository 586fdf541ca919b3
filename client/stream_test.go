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
}

// handler is the app; announce: it registers connections with TrackSend,
// so moves are announced in the stream, rather than with Track.
func (rec *recorder) handler(mw *wsredirect.Middleware, announce bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		var send func(string) error
		if announce {
			var wmu sync.Mutex // the app's write lock: it writes nothing else here
			send = func(text string) error {
				wmu.Lock()
				defer wmu.Unlock()
				return c.WriteMessage(websocket.TextMessage, []byte(text))
			}
		}
		defer mw.TrackSend(r.URL.Query().Get("room"), c, send)()
		defer c.Close()
		rec.mu.Lock()
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
// while its node drains and moves it, by close frame (Track) or by an
// announcement first (TrackSend): every number reaches exactly one of the
// old or the new node's app, in order on each, none missing.
func TestStreamThroughLiveDrain(t *testing.T) {
	for _, announce := range []bool{false, true} {
		t.Run(map[bool]string{false: "close frame", true: "announced"}[announce], func(t *testing.T) {
			streamThroughLiveDrain(t, announce)
		})
	}
}

func streamThroughLiveDrain(t *testing.T, announce bool) {
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
		srvs[i].Config.Handler = mws[i].Handler(recs[i].handler(mws[i], announce))
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
	go func() { // moves happen while the Conn reads
		for {
			if _, _, err := c.ReadMessage(ctx); err != nil {
				return
			}
		}
	}()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		time.Sleep(50 * time.Millisecond)
		for _, mw := range mws {
			require.NoError(t, mw.DrainMember("a", time.Now(), 0))
		}
		moved, cut, err := mws[0].MoveConns(ctx, wsredirect.MoveOptions{})
		assert.NoError(t, err)
		assert.Equal(t, 1, moved)
		assert.Zero(t, cut)
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
	// close frame echoes its code; a close on an announcement is normal.
	require.Eventually(t, func() bool {
		recs[0].mu.Lock()
		defer recs[0].mu.Unlock()
		return len(recs[0].closes) == 1
	}, 5*time.Second, 10*time.Millisecond)
	want := map[bool]int{false: wire.CloseRedirect, true: websocket.CloseNormalClosure}[announce]
	assert.Equal(t, []int{want}, recs[0].closes)
	hops := c.Hops()
	require.Len(t, hops, 2)
	assert.Equal(t, wire.CloseRedirect, hops[0].Close)
	assert.Equal(t, members[1].URL+"/ws?room="+room, hops[1].URL)
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
