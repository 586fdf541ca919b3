package wsredirect

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect/wire"
)

// dialBrowserLike dials like a browser: with an Origin and the redirect
// subprotocol offered.
func dialBrowserLike(t *testing.T, url, origin string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"chat", wire.Subprotocol}, HandshakeTimeout: 5 * time.Second}
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
	redirecting := Options{Rules: []Rule{Path("wss://b.example.com", "/*")}}

	t.Run("browser gets close 4307 with the target", func(t *testing.T) {
		srv := newServer(redirecting)
		c, resp, err := dialBrowserLike(t, wsURL(srv)+"/rooms/1?t=x", srv.URL)
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, wire.Subprotocol, resp.Header.Get("Sec-WebSocket-Protocol"))
		ce, _ := readClose(t, c)
		assert.Equal(t, wire.CloseRedirect, ce.Code)
		got, ok := wire.ParseRedirect(ce.Text, "", "")
		require.True(t, ok)
		assert.Equal(t, "wss://b.example.com/rooms/1?t=x", got)
	})
	t.Run("long target arrives in a message", func(t *testing.T) {
		srv := newServer(redirecting)
		c, _, err := dialBrowserLike(t, wsURL(srv)+"/rooms/1?"+longQuery, srv.URL)
		require.NoError(t, err)
		defer c.Close()
		ce, last := readClose(t, c)
		assert.Equal(t, wire.CloseRedirect, ce.Code)
		assert.LessOrEqual(t, len(ce.Text), wire.MaxReason)
		got, ok := wire.ParseRedirect(ce.Text, last, "")
		require.True(t, ok)
		assert.Equal(t, "wss://b.example.com/rooms/1?"+longQuery, got)
	})
	t.Run("refusal is close 4503 with the delay", func(t *testing.T) {
		srv := newServer(Options{Rules: []Rule{NewRule("full", func(*http.Request, *State) Decision {
			return Decision{Action: Refuse, RetryAfter: 3 * time.Second}
		})}})
		c, _, err := dialBrowserLike(t, wsURL(srv)+"/x", srv.URL)
		require.NoError(t, err)
		defer c.Close()
		ce, _ := readClose(t, c)
		assert.Equal(t, wire.CloseRetry, ce.Code)
		d, ok := wire.ParseRetry(ce.Text)
		assert.True(t, ok)
		assert.Equal(t, 3*time.Second, d)
	})
	t.Run("a refusal other than 503 stays a status", func(t *testing.T) {
		srv := newServer(Options{Rules: []Rule{NewRule("forbidden", func(*http.Request, *State) Decision {
			return Decision{Action: Refuse, Status: http.StatusForbidden}
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
		mw := MustNew(opts)
		for origin, ok := range map[string]bool{
			"https://app.example.com": true, "https://x.pages.example.com": true, "https://app.example.com:443": true,
			"http://app.example.com": false, "https://app.example.com:8443": false, srv.URL: false, "null": false,
		} {
			r := upgradeTo(srv.URL + "/x")
			r.Header.Set("Origin", origin)
			assert.Equal(t, ok, mw.CheckOrigin(r), "the app's upgrader agrees through CheckOrigin: %s", origin)
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
		assert.Equal(t, wire.CloseRedirect, ce.Code)
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
