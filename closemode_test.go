package wsredirect

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCloseCodec(t *testing.T) {
	short := "wss://b.example.com/rooms/1?t=x"
	long := "wss://b.example.com/rooms/1?token=" + strings.Repeat("a", 200)
	tests := []struct {
		name           string
		target         string
		inMessage      bool
		reasonMaxBytes int
	}{
		{"fits in the reason", short, false, MaxCloseReason},
		{"exactly fits", "wss://b.example.com/" + strings.Repeat("x", MaxCloseReason-len("wsr1 wss://b.example.com/")), false, MaxCloseReason},
		{"too long: message first", long, true, MaxCloseReason},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg, reason := EncodeRedirect(tc.target)
			assert.LessOrEqual(t, len(reason), tc.reasonMaxBytes)
			assert.Equal(t, tc.inMessage, msg != "")
			assert.Equal(t, tc.inMessage, IsRedirectMessage(msg))
			got, ok := ParseRedirect(reason, msg, "ws://a.example.com/x")
			require.True(t, ok)
			assert.Equal(t, tc.target, got)
		})
	}
	t.Run("move keeps path and query", func(t *testing.T) {
		reason, ok := EncodeMove(MustParseTarget("wss://c.example.com/edge/"))
		require.True(t, ok)
		assert.Equal(t, "wsr1 =wss://c.example.com/edge", reason)
		got, ok := ParseRedirect(reason, "", "wss://a.example.com/rooms/1?token="+strings.Repeat("t", 300))
		require.True(t, ok)
		assert.Equal(t, "wss://c.example.com/edge/rooms/1?token="+strings.Repeat("t", 300), got)
		_, ok = EncodeMove(MustParseTarget("wss://c.example.com/" + strings.Repeat("p", 120)))
		assert.False(t, ok)
	})
	for _, bad := range []struct{ reason, msg, current string }{
		{"", "", ""}, {"wsr2 wss://x", "", ""}, {"wsr1 ", "", ""}, {"wsr1 +", "hello", ""},
		{"wsr1 =wss://c", "", "::not a url"}, {"wsr1 =", "", "ws://a/x"}, {"wsr1 \xff", "", ""},
	} {
		_, ok := ParseRedirect(bad.reason, bad.msg, bad.current)
		assert.False(t, ok, "%+v", bad)
	}
	d, ok := ParseRetry(EncodeRetry(1500 * time.Millisecond))
	assert.True(t, ok)
	assert.Equal(t, 2*time.Second, d)
	for _, bad := range []string{"wsr1 retry=", "wsr1 retry=-1", "wsr1 retry=x", "retry=5", "wsr1 retry=999999999"} {
		_, ok := ParseRetry(bad)
		assert.False(t, ok, bad)
	}
}

// dialBrowserLike dials like a browser: with an Origin and the redirect
// subprotocol offered.
func dialBrowserLike(t *testing.T, url, origin string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"chat", RedirectSubprotocol}, HandshakeTimeout: 5 * time.Second}
	return d.Dial(url, http.Header{"Origin": {origin}})
}

// readClose reads until the close frame and returns it with the last text
// message before it.
func readClose(t *testing.T, c *websocket.Conn) (*websocket.CloseError, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var last string
	for {
		mt, msg, err := c.ReadMessage()
		if err != nil {
			ce, ok := err.(*websocket.CloseError)
			require.True(t, ok, "want a close frame, got %v", err)
			return ce, last
		}
		if mt == websocket.TextMessage {
			last = string(msg)
		}
	}
}

func TestCloseMode(t *testing.T) {
	appReached := false
	var mu sync.Mutex
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		appReached = true
		mu.Unlock()
	})
	longQuery := "token=" + strings.Repeat("z", 200)
	newServer := func(opts Options) *httptest.Server {
		srv := httptest.NewServer(MustNew(opts).Handler(app))
		t.Cleanup(srv.Close)
		return srv
	}
	redirecting := Options{Rules: []Rule{Path("/*", "wss://b.example.com")}}

	t.Run("browser gets close 4307 with the target", func(t *testing.T) {
		srv := newServer(redirecting)
		c, resp, err := dialBrowserLike(t, wsURL(srv)+"/rooms/1?t=x", srv.URL)
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, RedirectSubprotocol, resp.Header.Get("Sec-WebSocket-Protocol"))
		ce, _ := readClose(t, c)
		assert.Equal(t, CloseRedirect, ce.Code)
		got, ok := ParseRedirect(ce.Text, "", "")
		require.True(t, ok)
		assert.Equal(t, "wss://b.example.com/rooms/1?t=x", got)
	})
	t.Run("long target arrives in a message", func(t *testing.T) {
		srv := newServer(redirecting)
		c, _, err := dialBrowserLike(t, wsURL(srv)+"/rooms/1?"+longQuery, srv.URL)
		require.NoError(t, err)
		defer c.Close()
		ce, last := readClose(t, c)
		assert.Equal(t, CloseRedirect, ce.Code)
		assert.LessOrEqual(t, len(ce.Text), MaxCloseReason)
		got, ok := ParseRedirect(ce.Text, last, "")
		require.True(t, ok)
		assert.Equal(t, "wss://b.example.com/rooms/1?"+longQuery, got)
	})
	t.Run("refusal is close 4503 with the delay", func(t *testing.T) {
		srv := newServer(Options{Rules: []Rule{NewRule("full", func(*http.Request, *State) Decision {
			return RefuseWith(0, 3*time.Second)
		})}})
		c, _, err := dialBrowserLike(t, wsURL(srv)+"/x", srv.URL)
		require.NoError(t, err)
		defer c.Close()
		ce, _ := readClose(t, c)
		assert.Equal(t, CloseRetry, ce.Code)
		d, ok := ParseRetry(ce.Text)
		assert.True(t, ok)
		assert.Equal(t, 3*time.Second, d)
	})
	t.Run("a refusal other than 503 stays a status", func(t *testing.T) {
		srv := newServer(Options{Rules: []Rule{NewRule("forbidden", func(*http.Request, *State) Decision {
			return RefuseWith(http.StatusForbidden, 0)
		})}})
		_, resp, err := dialBrowserLike(t, wsURL(srv)+"/x", srv.URL)
		require.ErrorIs(t, err, websocket.ErrBadHandshake)
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	})
	t.Run("cross origin refused by default", func(t *testing.T) {
		srv := newServer(redirecting)
		_, resp, err := dialBrowserLike(t, wsURL(srv)+"/x", "https://evil.example.org")
		require.ErrorIs(t, err, websocket.ErrBadHandshake)
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
		assert.Empty(t, resp.Header.Get("Location"))
	})
	t.Run("configured origins allowed, others refused", func(t *testing.T) {
		opts := redirecting
		opts.Origins = []string{"https://app.example.com", "https://*.pages.example.com"}
		srv := newServer(opts)
		for origin, ok := range map[string]bool{
			"https://app.example.com": true, "https://x.pages.example.com": true, "https://app.example.com:443": true,
			"http://app.example.com": false, "https://app.example.com:8443": false, srv.URL: false, "null": false,
		} {
			c, resp, err := dialBrowserLike(t, wsURL(srv)+"/x", origin)
			if ok {
				require.NoError(t, err, origin)
				c.Close()
			} else {
				require.Error(t, err, origin)
				assert.Equal(t, http.StatusForbidden, resp.StatusCode, origin)
			}
		}
	})
	t.Run("no Origin: status in auto mode, close in close mode", func(t *testing.T) {
		srv := newServer(redirecting)
		_, resp, err := websocket.DefaultDialer.Dial(wsURL(srv)+"/x", nil)
		require.ErrorIs(t, err, websocket.ErrBadHandshake)
		assert.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)

		opts := redirecting
		opts.Mode = ModeClose
		srv = newServer(opts)
		c, _, err := websocket.DefaultDialer.Dial(wsURL(srv)+"/x", nil)
		require.NoError(t, err)
		defer c.Close()
		ce, _ := readClose(t, c)
		assert.Equal(t, CloseRedirect, ce.Code)
	})
	t.Run("status mode never accepts", func(t *testing.T) {
		opts := redirecting
		opts.Mode = ModeStatus
		srv := newServer(opts)
		_, resp, err := dialBrowserLike(t, wsURL(srv)+"/x", srv.URL)
		require.ErrorIs(t, err, websocket.ErrBadHandshake)
		assert.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)
	})
	mu.Lock()
	assert.False(t, appReached, "decided requests never reach the app")
	mu.Unlock()

	_, err := New(Options{Rules: redirecting.Rules, Origins: []string{"app.example.com"}})
	assert.ErrorContains(t, err, `wsredirect: Options.Origins: "app.example.com"`)
	_, err = New(Options{Rules: redirecting.Rules, Mode: 9})
	assert.ErrorContains(t, err, "wsredirect: Options.Mode: unknown mode 9")
}

func TestResolveHandler(t *testing.T) {
	mw := MustNew(Options{
		Self:    "wss://a.example.com",
		Members: abc,
		Rules: []Rule{
			Path("/old/*", "wss://legacy.example.com"),
			Path("/full/*", "wss://a.example.com"),
			NewRule("closed", func(r *http.Request, s *State) Decision {
				if strings.HasPrefix(r.URL.Path, "/closed") {
					return RefuseWith(0, 4*time.Second)
				}
				return Decision{}
			}),
		},
	})
	mux := http.NewServeMux()
	mux.Handle("/resolve/", http.StripPrefix("/resolve", mw.ResolveHandler()))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		path, body string
		status     int
	}{
		{"/resolve/old/rooms/1?t=x", `{"url":"wss://legacy.example.com/old/rooms/1?t=x"}`, 200},
		{"/resolve/full/1", `{"url":"wss://a.example.com/full/1"}`, 200},
		{"/resolve/elsewhere", `{"url":null}`, 200},
		{"/resolve/closed", `{"retryAfter":4}`, 503},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tc.path)
			require.NoError(t, err)
			defer resp.Body.Close()
			var got, want any
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
			require.NoError(t, json.Unmarshal([]byte(tc.body), &want))
			assert.Equal(t, want, got)
			assert.Equal(t, tc.status, resp.StatusCode)
			assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		})
	}
	resp, err := http.Post(srv.URL+"/resolve/x", "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

// TestMoveConns drains a node with live connections and checks each client
// is closed with a redirect to the owner of its key without this node,
// keeping its path and query, and that connections stay when nothing moves.
func TestMoveConns(t *testing.T) {
	clock := &fakeClock{}
	mw := shardMiddleware(t, "wss://b.example.com", abc, clock)
	ring := mw.State().Ring()
	withoutB, err := NewRing([]Member{abc[0], abc[2]})
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

	moved, err := mw.MoveConns(context.Background(), MoveOptions{})
	require.NoError(t, err)
	assert.Zero(t, moved, "not draining and this node owns every key: nothing moves")

	mw.Drain(0)
	moved, err = mw.MoveConns(context.Background(), MoveOptions{Batch: 5, Interval: 2 * time.Millisecond})
	require.NoError(t, err)
	assert.Equal(t, len(keys), moved)
	for i, c := range conns {
		ce, _ := readClose(t, c)
		require.Equal(t, CloseRedirect, ce.Code)
		current := wsURL(srv) + "/rooms/" + keys[i] + "?room=" + keys[i] + "&token=secret"
		got, ok := ParseRedirect(ce.Text, "", current)
		require.True(t, ok)
		owner := withoutB.Members()[withoutB.Owner(keys[i])].URL
		assert.Equal(t, fmt.Sprintf("%s/rooms/%s?room=%s&token=secret", owner, keys[i], keys[i]), got)
	}
	assert.Eventually(t, func() bool { return mw.Tracked() == 0 }, 5*time.Second, 5*time.Millisecond, "apps see the close and untrack")

	solo := shardMiddleware(t, "wss://b.example.com", []Member{abc[1]}, clock)
	_, err = solo.MoveConns(context.Background(), MoveOptions{})
	assert.NoError(t, err)
	_, err = MustNew(Options{Rules: []Rule{Path("/*", "wss://x.example.com")}}).MoveConns(context.Background(), MoveOptions{})
	assert.ErrorContains(t, err, "wsredirect: MoveConns: no members")
}

func TestResolveCORS(t *testing.T) {
	mw := MustNew(Options{Origins: []string{"https://app.example.com"}, Rules: []Rule{Path("/*", "wss://b.example.com")}})
	for origin, allowed := range map[string]bool{"https://app.example.com": true, "https://evil.example.org": false} {
		r := httptest.NewRequest(http.MethodGet, "http://api.example.com/rooms/1", nil)
		r.Header.Set("Origin", origin)
		w := httptest.NewRecorder()
		mw.ResolveHandler().ServeHTTP(w, r)
		want := ""
		if allowed {
			want = origin
		}
		assert.Equal(t, want, w.Header().Get("Access-Control-Allow-Origin"), origin)
	}
}
