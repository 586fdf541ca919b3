package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect/client"
	"github.com/wsredirect/wsredirect/wire"
)

// TestConnCue: the cue makes the Conn close the connection itself, and
// the server's answer to that close decides. What the application wrote
// before the cue reaches the old server ahead of the Conn's close (code
// 1000), what the old server sent after the cue is delivered, and what the
// application writes from then on goes to the next connection. A move
// (4307, 4503) is followed and the cue dropped; an echo (1000, 1005) or no
// answer in time proves the cue false: it is delivered as an ordinary
// message and the Conn dials the URL it is on again, transparently; any
// other close is the application's.
func TestConnCue(t *testing.T) {
	tests := []struct {
		name   string
		answer func(c *websocket.Conn, b string) // how the old server answers the Conn's close; b: where to move it
		want   []string                          // what the application reads from the cue on
		// wantErr is the close code ending the Conn after want, 0: none.
		wantErr   int
		hop0Close int
		hop1      string // "A" or "B": where the Conn is after the cue
	}{
		{
			name:      "server answers with a move",
			answer:    moveAnswer(wire.CloseRedirect, func(b string) string { r, _ := wire.EncodeMove(b); return r }),
			want:      []string{"after", "B /rooms/1?t=x", "B /rooms/1?t=x: queued"},
			hop0Close: wire.CloseRedirect,
			hop1:      "B",
		},
		{
			name:      "server answers with a retry",
			answer:    moveAnswer(wire.CloseRetry, func(string) string { return wire.EncodeRetry(time.Second) }),
			want:      []string{"after", "A again", "A again: queued"},
			hop0Close: wire.CloseRetry,
			hop1:      "A",
		},
		{
			name:      "server echoes: the cue was not its own",
			answer:    func(*websocket.Conn, string) {},
			want:      []string{wire.Cue, "after", "A again", "A again: queued"},
			hop0Close: websocket.CloseNormalClosure,
			hop1:      "A",
		},
		{
			name: "server echoes without a code",
			answer: func(c *websocket.Conn, _ string) {
				c.SetCloseHandler(func(int, string) error {
					return c.WriteControl(websocket.CloseMessage, nil, time.Now().Add(time.Second))
				})
			},
			want:      []string{wire.Cue, "after", "A again", "A again: queued"},
			hop0Close: websocket.CloseNoStatusReceived,
			hop1:      "A",
		},
		{
			name:      "server never answers",
			answer:    nil,
			want:      []string{wire.Cue, "after", "A again", "A again: queued"},
			hop0Close: 0,
			hop1:      "A",
		},
		{
			name:    "server closes for its own reasons",
			answer:  moveAnswer(websocket.CloseGoingAway, func(string) string { return "bye" }),
			want:    []string{wire.Cue, "after"},
			wantErr: websocket.CloseGoingAway,
		},
		{
			name:    "a move whose reason does not parse is a close",
			answer:  moveAnswer(wire.CloseRedirect, func(string) string { return "wsr1 +" }),
			want:    []string{wire.Cue, "after"},
			wantErr: wire.CloseRedirect,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client.SetLeaveAnswer(t, 300*time.Millisecond)
			b := startGreeter(t, "B", false, nil)
			type result struct {
				got   []string
				close int
			}
			done := make(chan result, 1)
			stop := make(chan struct{})
			t.Cleanup(func() { close(stop) })
			var visits atomic.Int64
			a := scripted(t, false, func(c *websocket.Conn, r *http.Request) {
				if visits.Add(1) > 1 {
					if c.WriteMessage(websocket.TextMessage, []byte("A again")) == nil {
						if _, p, err := c.ReadMessage(); err == nil {
							c.WriteMessage(websocket.TextMessage, []byte("A again: "+string(p)))
						}
					}
					c.ReadMessage()
					return
				}
				c.WriteMessage(websocket.TextMessage, []byte("before"))
				_, p, _ := c.ReadMessage() // the client is writing: "go"
				res := result{got: []string{string(p)}}
				if tc.answer != nil {
					tc.answer(c, wsURL(b.Server, ""))
				}
				c.WriteMessage(websocket.TextMessage, []byte(wire.Cue))
				c.WriteMessage(websocket.TextMessage, []byte("after"))
				if tc.answer == nil {
					<-stop
					return
				}
				for {
					_, p, err := c.ReadMessage()
					if err != nil {
						var ce *websocket.CloseError
						if errors.As(err, &ce) {
							res.close = ce.Code
						}
						done <- res
						return
					}
					res.got = append(res.got, string(p))
				}
			})

			// A Conn that misses a cue would wait for it forever.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var d client.Dialer
			client.SetSleep(&d, func(context.Context, time.Duration) error { return nil })
			u := wsURL(a, "/rooms/1?t=x")
			c, _, err := d.Connect(ctx, u, nil)
			require.NoError(t, err)
			defer c.Close()
			_, p, err := c.ReadMessage(ctx)
			require.NoError(t, err)
			assert.Equal(t, "before", string(p))
			require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("go")))
			var got []string
			for len(got) < len(tc.want) {
				_, p, err := c.ReadMessage(ctx)
				require.NoError(t, err, "after %q", got)
				got = append(got, string(p))
				if string(p) == "after" {
					// The cue is being answered, or was: this write is
					// queued for the next connection, or fails with the
					// Conn.
					err := c.WriteMessage(websocket.TextMessage, []byte("queued"))
					if tc.wantErr == 0 {
						require.NoError(t, err)
					}
				}
			}
			assert.Equal(t, tc.want, got)
			if tc.wantErr != 0 {
				_, _, err := c.ReadMessage(ctx)
				assert.True(t, websocket.IsCloseError(err, tc.wantErr), "%v", err)
				return
			}
			if tc.answer != nil {
				res := <-done
				assert.Equal(t, []string{"go"}, res.got, "nothing written after the cue reached the old server")
				assert.Equal(t, websocket.CloseNormalClosure, res.close, "the Conn closed the old connection itself")
			}
			hops := c.Hops()
			require.Len(t, hops, 2)
			assert.Equal(t, tc.hop0Close, hops[0].Close)
			wantURL := map[string]string{"A": u, "B": wsURL(b.Server, "/rooms/1?t=x")}[tc.hop1]
			assert.Equal(t, wantURL, hops[1].URL)
			if tc.hop1 == "A" && tc.hop0Close != wire.CloseRetry {
				assert.Empty(t, client.Remembered(&d, u), "a false cue is not a redirect")
			}
		})
	}
}

// moveAnswer makes a connection's close handler answer the client's close
// with code and reason(b), as the middleware does after a cue.
func moveAnswer(code int, reason func(b string) string) func(c *websocket.Conn, b string) {
	return func(c *websocket.Conn, b string) {
		c.SetCloseHandler(func(int, string) error {
			return c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason(b)), time.Now().Add(time.Second))
		})
	}
}

// verbatim is a node whose app sends every text message back as it came,
// as a chat room relays a line to its sender, and counts its connections.
func verbatim(t *testing.T) (srv *httptest.Server, conns *atomic.Int64) {
	t.Helper()
	conns = new(atomic.Int64)
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conns.Add(1) // before the handshake: counted once the client is connected
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil || c.WriteMessage(mt, p) != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv, conns
}

// TestConnForgedCueBudget: a cue another client wrote costs one
// transparent reconnect to the same URL, and nothing more for a minute:
// cues within the budget are only messages. The application sees every
// cue as a message, in order with the rest, and never an error.
func TestConnForgedCueBudget(t *testing.T) {
	srv, conns := verbatim(t)
	var now atomic.Pointer[time.Time]
	start := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	now.Store(&start)
	var d client.Dialer
	client.SetClock(&d, func() time.Time { return *now.Load() })
	u := wsURL(srv, "/rooms/1?user=v")
	c, _, err := d.Connect(context.Background(), u, nil)
	require.NoError(t, err)
	defer c.Close()
	read := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, p, err := c.ReadMessage(ctx)
		require.NoError(t, err)
		return string(p)
	}

	require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte(wire.Cue)))
	require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("right after")))
	assert.Equal(t, wire.Cue, read(), "a false cue is delivered")
	assert.Equal(t, "right after", read(), "whether the old node or the new one echoed it")
	assert.EqualValues(t, 2, conns.Load(), "one reconnect")
	hops := c.Hops()
	require.Len(t, hops, 2)
	assert.Equal(t, client.Hop{URL: u, Status: 101, Close: websocket.CloseNormalClosure}, withoutElapsed(hops[0]))
	assert.Equal(t, client.Hop{URL: u, Status: 101}, withoutElapsed(hops[1]), "the same URL again")

	for range 50 {
		require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte(wire.Cue)))
	}
	require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("end")))
	for i := range 50 {
		require.Equal(t, wire.Cue, read(), "cue %d", i)
	}
	assert.Equal(t, "end", read())
	assert.EqualValues(t, 2, conns.Load(), "cues within the budget are only messages")

	later := start.Add(client.CueBudget)
	now.Store(&later)
	require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte(wire.Cue)))
	assert.Equal(t, wire.Cue, read())
	require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("still here")))
	assert.Equal(t, "still here", read())
	assert.EqualValues(t, 3, conns.Load(), "a minute later, one more reconnect")
	assert.Empty(t, client.Remembered(&d, u), "a false cue is not a redirect")
}
