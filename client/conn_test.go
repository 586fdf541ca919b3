package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect/client"
	"github.com/wsredirect/wsredirect/internal/wstest"
	"github.com/wsredirect/wsredirect/wire"
)

// scripted upgrades every request and runs script on the connection.
func scripted(t *testing.T, tls bool, script func(c *websocket.Conn, r *http.Request)) *httptest.Server {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		script(c, r)
	})
	var srv *httptest.Server
	if tls {
		srv = httptest.NewTLSServer(h)
	} else {
		srv = httptest.NewServer(h)
	}
	t.Cleanup(srv.Close)
	return srv
}

func TestConnFollowsCloseRedirect(t *testing.T) {
	b := startGreeter(t, "B", false, nil)
	long := strings.Repeat("t0k3n", 40)
	tests := []struct {
		name, path string
	}{
		{"target in the close reason", "/room/1"},
		{"target in a message before the close", "/room/1?token=" + long},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := wsURL(b.Server, tc.path)
			msg, _ := wire.EncodeRedirect(target)
			require.Equal(t, tc.path != "/room/1", msg != "", "the case covers the intended encoding")
			a := scripted(t, false, func(c *websocket.Conn, r *http.Request) { wstest.CloseRedirect(c, target) })

			var d client.Dialer
			c, resp, err := d.Connect(context.Background(), wsURL(a, "/"), nil)
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)

			_, p, err := c.ReadMessage(context.Background())
			require.NoError(t, err)
			assert.Equal(t, "B "+tc.path, string(p), "the first message the application sees is the new server's")

			hops := c.Hops()
			require.Len(t, hops, 2)
			assert.Equal(t, client.Hop{URL: wsURL(a, "/"), Status: 101, Close: wire.CloseRedirect, Location: target}, withoutElapsed(hops[0]))
			assert.Equal(t, target, hops[1].URL)

			require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("hi")))
			_, p, err = c.ReadMessage(context.Background())
			require.NoError(t, err)
			assert.Equal(t, "B "+tc.path+": hi", string(p))
		})
	}
}

// TestConnFollowsAnnouncedMove: a move announced in a message (the
// middleware's TrackSend) is followed once the Conn has closed the old
// connection itself: what the application wrote before the announcement
// reaches the old server ahead of the Conn's close (code 1000), what the
// old server sent after it is still delivered, and writes from then on go
// to the new server. A server that never answers the close does not hold
// the move beyond a bound.
func TestConnFollowsAnnouncedMove(t *testing.T) {
	for _, answers := range []bool{true, false} {
		t.Run(map[bool]string{true: "server answers the close", false: "server never reads"}[answers], func(t *testing.T) {
			client.SetLeaveAnswer(t, 300*time.Millisecond)
			b := startGreeter(t, "B", false, nil)
			type result struct {
				got   []string
				close int
			}
			done := make(chan result, 1)
			stop := make(chan struct{})
			t.Cleanup(func() { close(stop) })
			a := scripted(t, false, func(c *websocket.Conn, r *http.Request) {
				reason, _ := wire.EncodeMove(wsURL(b.Server, ""))
				c.WriteMessage(websocket.TextMessage, []byte("before"))
				_, p, _ := c.ReadMessage() // the client is writing: "go"
				var res result
				res.got = append(res.got, string(p))
				c.WriteMessage(websocket.TextMessage, []byte(reason))
				c.WriteMessage(websocket.TextMessage, []byte("after"))
				if !answers {
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

			c, _, err := (&client.Dialer{}).Connect(context.Background(), wsURL(a, "/rooms/1?t=x"), nil)
			require.NoError(t, err)
			defer c.Close()
			_, p, err := c.ReadMessage(context.Background())
			require.NoError(t, err)
			assert.Equal(t, "before", string(p))
			require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("go")))
			_, p, err = c.ReadMessage(context.Background())
			require.NoError(t, err)
			assert.Equal(t, "after", string(p), "sent after the announcement, before the close: delivered")
			require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("queued")))
			start := time.Now()
			_, p, err = c.ReadMessage(context.Background())
			require.NoError(t, err)
			assert.Equal(t, "B /rooms/1?t=x", string(p), "moved to the announced base, path and query kept")
			_, p, err = c.ReadMessage(context.Background())
			require.NoError(t, err)
			assert.Equal(t, "B /rooms/1?t=x: queued", string(p), "the write after the announcement went to the new server")
			hops := c.Hops()
			require.Len(t, hops, 2)
			assert.Equal(t, wire.CloseRedirect, hops[0].Close)
			if answers {
				res := <-done
				assert.Equal(t, []string{"go"}, res.got)
				assert.Equal(t, websocket.CloseNormalClosure, res.close, "the Conn closed the old connection itself")
			} else {
				assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond, "it waited for the close to be answered")
			}
		})
	}
}

func TestConnFollowsMoveToBase(t *testing.T) {
	// A live drain moves every connection to the same path and query on
	// another base in one close frame, whatever the query's length.
	b := startGreeter(t, "B", false, nil)
	a := scripted(t, false, func(c *websocket.Conn, r *http.Request) {
		reason, ok := wire.EncodeMove(wsURL(b.Server, ""))
		if ok {
			wstest.CloseWith(c, "", wire.CloseRedirect, reason)
		}
	})
	path := "/room/9?token=" + strings.Repeat("k", 300)
	var d client.Dialer
	c, _, err := d.Connect(context.Background(), wsURL(a, path), nil)
	require.NoError(t, err)
	defer c.Close()
	_, p, err := c.ReadMessage(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "B "+path, string(p))
	hops := c.Hops()
	require.Len(t, hops, 2)
	assert.Equal(t, wsURL(b.Server, path), hops[1].URL)
}

func withoutElapsed(h client.Hop) client.Hop {
	h.Elapsed = 0
	return h
}

func TestConnCloseRedirectRules(t *testing.T) {
	t.Run("loop", func(t *testing.T) {
		var bURL atomic.Value
		a := scripted(t, false, func(c *websocket.Conn, r *http.Request) { wstest.CloseRedirect(c, bURL.Load().(string)) })
		b := scripted(t, false, func(c *websocket.Conn, r *http.Request) { wstest.CloseRedirect(c, wsURL(a, "/")) })
		bURL.Store(wsURL(b, "/"))

		var d client.Dialer
		c, _, err := d.Connect(context.Background(), wsURL(a, "/"), nil)
		require.NoError(t, err)
		defer c.Close()
		_, _, err = c.ReadMessage(context.Background())
		require.ErrorIs(t, err, client.ErrLoop)
		assert.Equal(t, []int{101, 101}, statuses(c.Hops()))
		_, _, again := c.ReadMessage(context.Background())
		assert.Equal(t, err, again, "the Conn is done")
	})

	t.Run("hop cap", func(t *testing.T) {
		var self atomic.Value
		endless := scripted(t, false, func(c *websocket.Conn, r *http.Request) {
			n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
			wstest.CloseRedirect(c, self.Load().(string)+"/"+strconv.Itoa(n+1))
		})
		self.Store(wsURL(endless, ""))
		d := client.Dialer{MaxHops: 3}
		c, _, err := d.Connect(context.Background(), wsURL(endless, "/0"), nil)
		require.NoError(t, err)
		defer c.Close()
		_, _, err = c.ReadMessage(context.Background())
		require.ErrorIs(t, err, client.ErrTooManyHops)
		assert.Len(t, c.Hops(), 4)
	})

	t.Run("HTTP redirects and moves share one hop cap", func(t *testing.T) {
		b := startGreeter(t, "B", false, nil)
		a := scripted(t, false, func(c *websocket.Conn, r *http.Request) { wstest.CloseRedirect(c, wsURL(b.Server, "/")) })
		r := redirectTo(t, http.StatusTemporaryRedirect, func(*http.Request) string { return wsURL(a, "/") })
		d := client.Dialer{MaxHops: 1}
		c, _, err := d.Connect(context.Background(), wsURL(r, "/"), nil)
		require.NoError(t, err)
		defer c.Close()
		_, _, err = c.ReadMessage(context.Background())
		require.ErrorIs(t, err, client.ErrTooManyHops)
	})

	t.Run("downgrade", func(t *testing.T) {
		plain := startGreeter(t, "P", false, nil)
		a := scripted(t, true, func(c *websocket.Conn, r *http.Request) { wstest.CloseRedirect(c, wsURL(plain.Server, "/")) })
		var d client.Dialer
		d.TLSClientConfig = trusting(a)
		c, _, err := d.Connect(context.Background(), wsURL(a, "/"), nil)
		require.NoError(t, err)
		defer c.Close()
		_, _, err = c.ReadMessage(context.Background())
		require.ErrorIs(t, err, client.ErrDowngrade)
	})

	t.Run("credentials dropped across origins", func(t *testing.T) {
		b := startGreeter(t, "B", false, nil)
		a := scripted(t, false, func(c *websocket.Conn, r *http.Request) { wstest.CloseRedirect(c, wsURL(b.Server, "/")) })
		var d client.Dialer
		c, _, err := d.Connect(context.Background(), wsURL(a, "/"), http.Header{"Authorization": {"Bearer x"}, "X-Keep": {"1"}})
		require.NoError(t, err)
		defer c.Close()
		_, _, err = c.ReadMessage(context.Background())
		require.NoError(t, err)
		assert.Empty(t, b.lastHeader(t).Get("Authorization"))
		assert.Equal(t, "1", b.lastHeader(t).Get("X-Keep"))
	})

	t.Run("unknown close code is the application's", func(t *testing.T) {
		a := scripted(t, false, func(c *websocket.Conn, r *http.Request) { wstest.CloseWith(c, "", 4000, "bye") })
		var d client.Dialer
		c, _, err := d.Connect(context.Background(), wsURL(a, "/"), nil)
		require.NoError(t, err)
		defer c.Close()
		_, _, err = c.ReadMessage(context.Background())
		assert.True(t, websocket.IsCloseError(err, 4000), err)
	})

	t.Run("redirect message without a close is swallowed, later data is not", func(t *testing.T) {
		a := scripted(t, false, func(c *websocket.Conn, r *http.Request) {
			c.WriteMessage(websocket.TextMessage, []byte("wsr1 ws://elsewhere/"))
			c.WriteMessage(websocket.TextMessage, []byte("data"))
			wstest.CloseWith(c, "", websocket.CloseNormalClosure, "")
		})
		var d client.Dialer
		c, _, err := d.Connect(context.Background(), wsURL(a, "/"), nil)
		require.NoError(t, err)
		defer c.Close()
		_, p, err := c.ReadMessage(context.Background())
		require.NoError(t, err)
		assert.Equal(t, "data", string(p))
		_, _, err = c.ReadMessage(context.Background())
		assert.True(t, websocket.IsCloseError(err, websocket.CloseNormalClosure), err)
	})
}

func TestConnCloseRetry(t *testing.T) {
	var visits atomic.Int64
	a := scripted(t, false, func(c *websocket.Conn, r *http.Request) {
		if visits.Add(1) == 1 {
			wstest.CloseWith(c, "", wire.CloseRetry, wire.EncodeRetry(2*time.Second))
			return
		}
		c.WriteMessage(websocket.TextMessage, []byte("welcome back "+r.Header.Get("Authorization")))
		c.ReadMessage()
	})
	var slept []time.Duration
	d := client.Dialer{Jitter: func(time.Duration) time.Duration { return 3 * time.Millisecond }}
	client.SetSleep(&d, func(ctx context.Context, d time.Duration) error {
		slept = append(slept, d)
		return nil
	})
	c, _, err := d.Connect(context.Background(), wsURL(a, "/"), http.Header{"Authorization": {"Bearer x"}})
	require.NoError(t, err)
	defer c.Close()
	_, p, err := c.ReadMessage(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "welcome back Bearer x", string(p), "a retry goes back to the first URL with the caller's header")
	assert.Equal(t, []time.Duration{2*time.Second + 3*time.Millisecond}, slept)
	hops := c.Hops()
	require.Len(t, hops, 2)
	assert.Equal(t, wire.CloseRetry, hops[0].Close)
	assert.Equal(t, 2*time.Second, hops[0].RetryAfter)
}

func TestConnChainEndsWithData(t *testing.T) {
	// a → b → a is a loop only when no data flowed: here each node serves
	// the client before moving it on, as nodes draining one after the
	// other would.
	var visitsA atomic.Int64
	var bURL atomic.Value
	a := scripted(t, false, func(c *websocket.Conn, r *http.Request) {
		if visitsA.Add(1) == 1 {
			c.WriteMessage(websocket.TextMessage, []byte("A1"))
			wstest.CloseRedirect(c, bURL.Load().(string))
			return
		}
		c.WriteMessage(websocket.TextMessage, []byte("A2"))
		c.ReadMessage()
	})
	b := scripted(t, false, func(c *websocket.Conn, r *http.Request) {
		c.WriteMessage(websocket.TextMessage, []byte("B"))
		wstest.CloseRedirect(c, wsURL(a, "/"))
	})
	bURL.Store(wsURL(b, "/"))

	var d client.Dialer
	c, _, err := d.Connect(context.Background(), wsURL(a, "/"), nil)
	require.NoError(t, err)
	defer c.Close()
	var got []string
	for range 3 {
		_, p, err := c.ReadMessage(context.Background())
		require.NoError(t, err)
		got = append(got, string(p))
	}
	assert.Equal(t, []string{"A1", "B", "A2"}, got)
	assert.Equal(t, []string{wsURL(b, "/"), wsURL(a, "/")}, []string{c.Hops()[0].URL, c.Hops()[1].URL})
}

func TestConnReadHonoursContext(t *testing.T) {
	quiet := startNode(t, "Q", false, nil)
	var d client.Dialer
	c, _, err := d.Connect(context.Background(), wsURL(quiet.Server, "/"), nil)
	require.NoError(t, err)
	defer c.Close()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err = c.ReadMessage(ctx)
	require.ErrorIs(t, err, context.Canceled)
}

func TestConnReadKeepsWorkingAfterUnusedContext(t *testing.T) {
	// A context that ends after its read returned must not fail the next
	// read.
	b := startNode(t, "B", false, nil)
	var d client.Dialer
	c, _, err := d.Connect(context.Background(), wsURL(b.Server, "/"), nil)
	require.NoError(t, err)
	defer c.Close()
	for i := range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(i))))
		_, p, err := c.ReadMessage(ctx)
		cancel()
		require.NoError(t, err)
		assert.Equal(t, "B /: "+strconv.Itoa(i), string(p))
	}
}
