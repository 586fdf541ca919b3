package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
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
	return scriptedWith(t, &upgrader, tls, script)
}

// scriptedStub is scripted with the upgrader of a stub: it selects the
// marker, as a wsredirect server accepting only to close does.
func scriptedStub(t *testing.T, script func(c *websocket.Conn, r *http.Request)) *httptest.Server {
	t.Helper()
	return scriptedWith(t, &wstest.StubUpgrader, false, script)
}

func scriptedWith(t *testing.T, up *websocket.Upgrader, tls bool, script func(c *websocket.Conn, r *http.Request)) *httptest.Server {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
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
		stub       bool
	}{
		{"target in the close reason", "/room/1", false},
		{"target in the close reason, on a stub", "/room/1", true},
		{"target in a message before the close, on a stub", "/room/1?token=" + long, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := wsURL(b.Server, tc.path)
			msg, _ := wire.EncodeRedirect(target)
			require.Equal(t, tc.path != "/room/1", msg != "", "the case covers the intended encoding")
			script := func(c *websocket.Conn, r *http.Request) { wstest.CloseRedirect(c, target) }
			a := scripted(t, false, script)
			if tc.stub {
				a = scriptedStub(t, script)
			}

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

// TestConnRedirectMessagesAreTheApps: on the application's connection a
// "wsr1 " message is the application's, whatever it says, and a close
// that needs one as its target ("wsr1 +") is an ordinary close: data
// cannot move a Conn.
func TestConnRedirectMessagesAreTheApps(t *testing.T) {
	var elsewhere atomic.Int64
	target := scripted(t, false, func(c *websocket.Conn, r *http.Request) { elsewhere.Add(1) })
	lines := []string{
		"wsr1 " + wsURL(target, "/x"),
		"wsr1 =" + wsURL(target, ""),
		"wsr1 retry=30",
		"wsr1 +",
		"wsr1 move?",
		"data",
		"wsr1 " + wsURL(target, "/y"),
	}
	a := scripted(t, false, func(c *websocket.Conn, r *http.Request) {
		for _, l := range lines {
			c.WriteMessage(websocket.TextMessage, []byte(l))
		}
		wstest.CloseWith(c, "", wire.CloseRedirect, "wsr1 +")
	})
	var d client.Dialer
	c, _, err := d.Connect(context.Background(), wsURL(a, "/"), nil)
	require.NoError(t, err)
	defer c.Close()
	var got []string
	for range lines {
		_, p, err := c.ReadMessage(context.Background())
		require.NoError(t, err)
		got = append(got, string(p))
	}
	assert.Equal(t, lines, got)
	_, _, err = c.ReadMessage(context.Background())
	assert.True(t, websocket.IsCloseError(err, wire.CloseRedirect), "%v", err)
	assert.Zero(t, elsewhere.Load())
	assert.Len(t, c.Hops(), 1)
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

// TestConnCheckRedirectVeto: CheckRedirect sees every move by a close
// frame before the connection it moves is given up, and a veto keeps the
// Conn: it dials the URL it was on again, with the header it had there,
// and reads on. A veto where that cannot help ends the Conn: a redirect of
// that dial, the move of a stub (which never was the application's
// connection), and a second move of the connection the veto went back to
// before it carried a message.
func TestConnCheckRedirectVeto(t *testing.T) {
	b := startGreeter(t, "B", false, nil)
	bHost := strings.TrimPrefix(b.URL, "http://")
	errVeto := errors.New("not B")
	var vetted []string
	d := client.Dialer{CheckRedirect: func(next *url.URL, _ http.Header, via []client.Hop) error {
		vetted = append(vetted, next.String())
		if next.Host == bHost {
			return errVeto
		}
		return nil
	}}
	target := wsURL(b.Server, "/x")

	// A visit is how a serves its nth upgrade; a nil one answers it with
	// a 307 to B instead.
	type visit func(n int64, c *websocket.Conn)
	moveAfterOneMessage := func(n int64, c *websocket.Conn) {
		c.WriteMessage(websocket.TextMessage, []byte("A"+strconv.FormatInt(n, 10)))
		if _, p, err := c.ReadMessage(); err == nil && string(p) == "go" {
			wstest.CloseRedirect(c, target)
			return
		}
	}
	echoes := func(n int64, c *websocket.Conn) {
		name := "A" + strconv.FormatInt(n, 10)
		c.WriteMessage(websocket.TextMessage, []byte(name))
		for {
			_, p, err := c.ReadMessage()
			if err != nil || c.WriteMessage(websocket.TextMessage, []byte(name+": "+string(p))) != nil {
				return
			}
		}
	}
	movesAtOnce := func(_ int64, c *websocket.Conn) { wstest.CloseRedirect(c, target) }
	start := func(t *testing.T, up *websocket.Upgrader, visits ...visit) (srv *httptest.Server, auth *[]string) {
		var n atomic.Int64
		auth = new([]string)
		var mu sync.Mutex
		srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			i := n.Add(1)
			mu.Lock()
			*auth = append(*auth, r.Header.Get("Authorization"))
			mu.Unlock()
			v := visits[min(int(i), len(visits))-1]
			if v == nil {
				http.Redirect(w, r, target, http.StatusTemporaryRedirect)
				return
			}
			c, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			v(i, c)
		}))
		t.Cleanup(srv.Close)
		return srv, auth
	}
	connect := func(t *testing.T, srv *httptest.Server) *client.Conn {
		vetted = nil
		c, _, err := d.Connect(context.Background(), wsURL(srv, "/x"), http.Header{"Authorization": {"Bearer a"}})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	read := func(t *testing.T, c *client.Conn) string {
		t.Helper()
		_, p, err := c.ReadMessage(context.Background())
		require.NoError(t, err)
		return string(p)
	}

	t.Run("the Conn stays where it was", func(t *testing.T) {
		a, auth := start(t, &upgrader, moveAfterOneMessage, echoes)
		c := connect(t, a)
		assert.Equal(t, "A1", read(t, c))
		require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("go")))
		assert.Equal(t, "A2", read(t, c), "dialled the URL it was on again")
		require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("hi")))
		assert.Equal(t, "A2: hi", read(t, c))
		assert.Equal(t, []string{target}, vetted)
		assert.Equal(t, []string{"Bearer a", "Bearer a"}, *auth, "the vetoed hop to another origin dropped nothing")
		b.mu.Lock()
		assert.Empty(t, b.headers, "B was never dialled")
		b.mu.Unlock()
		hops := c.Hops()
		require.Len(t, hops, 2)
		assert.Equal(t, client.Hop{URL: wsURL(a, "/x"), Status: 101, Close: wire.CloseRedirect, Location: target}, withoutElapsed(hops[0]))
		assert.Equal(t, client.Hop{URL: wsURL(a, "/x"), Status: 101}, withoutElapsed(hops[1]))
		assert.Empty(t, client.Remembered(&d, wsURL(a, "/x")))
	})

	t.Run("a redirect of the dial back is vetted again", func(t *testing.T) {
		a, _ := start(t, &upgrader, moveAfterOneMessage, nil)
		c := connect(t, a)
		assert.Equal(t, "A1", read(t, c))
		require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("go")))
		_, _, err := c.ReadMessage(context.Background())
		require.ErrorIs(t, err, errVeto)
		var cerr *client.Error
		require.ErrorAs(t, err, &cerr)
		assert.Equal(t, []int{101, 307}, statuses(cerr.Hops))
		assert.Equal(t, []string{target, target}, vetted)
	})

	t.Run("a stub's redirect is a dial's", func(t *testing.T) {
		a, _ := start(t, &wstest.StubUpgrader, movesAtOnce)
		c := connect(t, a)
		_, _, err := c.ReadMessage(context.Background())
		require.ErrorIs(t, err, errVeto)
		assert.Equal(t, []int{101}, statuses(c.Hops()))
	})

	t.Run("moved again before a message", func(t *testing.T) {
		a, _ := start(t, &upgrader, moveAfterOneMessage, movesAtOnce)
		c := connect(t, a)
		assert.Equal(t, "A1", read(t, c))
		require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("go")))
		_, _, err := c.ReadMessage(context.Background())
		require.ErrorIs(t, err, errVeto)
		assert.Equal(t, []int{101, 101}, statuses(c.Hops()))
		assert.Equal(t, []string{target, target}, vetted)
	})
}

// TestConnSubprotocol: every hop offers the marker after the
// application's subprotocols, from Dialer.Subprotocols or from a
// Sec-WebSocket-Protocol header; Subprotocol is the one the application's
// server selected, never the marker.
func TestConnSubprotocol(t *testing.T) {
	var offered sync.Map // path → offered subprotocols
	chat := websocket.Upgrader{Subprotocols: []string{"v2"}}
	b := scriptedWith(t, &chat, false, func(c *websocket.Conn, r *http.Request) {
		offered.Store("b", websocket.Subprotocols(r))
		c.WriteMessage(websocket.TextMessage, []byte("B"))
		c.ReadMessage()
	})
	a := scriptedStub(t, func(c *websocket.Conn, r *http.Request) {
		offered.Store("a", websocket.Subprotocols(r))
		wstest.CloseRedirect(c, wsURL(b, "/"))
	})
	for _, tc := range []struct {
		name   string
		d      client.Dialer
		header http.Header
	}{
		{"Dialer.Subprotocols", client.Dialer{Dialer: websocket.Dialer{Subprotocols: []string{"v1", "v2"}}}, nil},
		{"header", client.Dialer{}, http.Header{"Sec-Websocket-Protocol": {"v1, v2"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := tc.d.Connect(context.Background(), wsURL(a, "/"), tc.header)
			require.NoError(t, err)
			defer c.Close()
			assert.Empty(t, c.Subprotocol(), "on the stub")
			_, p, err := c.ReadMessage(context.Background())
			require.NoError(t, err)
			assert.Equal(t, "B", string(p))
			assert.Equal(t, "v2", c.Subprotocol())
			for _, node := range []string{"a", "b"} {
				got, _ := offered.Load(node)
				assert.Equal(t, []string{"v1", "v2", wire.Subprotocol}, got, node)
			}
		})
	}
}
