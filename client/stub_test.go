package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
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

// TestConnStub: a connection that selected the marker is a stub; what it
// sends besides a target is the application's after all, and one that
// never closes does not hold the Conn for longer than the bound.
func TestConnStub(t *testing.T) {
	t.Run("a stub that sends data is the application's", func(t *testing.T) {
		a := scriptedStub(t, func(c *websocket.Conn, r *http.Request) {
			c.WriteMessage(websocket.TextMessage, []byte("wsr1 ws://elsewhere/"))
			c.WriteMessage(websocket.TextMessage, []byte("data"))
			wstest.CloseWith(c, "", wire.CloseRedirect, "wsr1 +")
		})
		c, resp, err := (&client.Dialer{}).Connect(context.Background(), wsURL(a, "/"), nil)
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, wire.Subprotocol, resp.Header.Get("Sec-Websocket-Protocol"), "the first hop is a stub")
		assert.Empty(t, c.Subprotocol(), "the marker is never the application's subprotocol")
		var got []string
		for range 2 {
			_, p, err := c.ReadMessage(context.Background())
			require.NoError(t, err)
			got = append(got, string(p))
		}
		assert.Equal(t, []string{"wsr1 ws://elsewhere/", "data"}, got)
		_, _, err = c.ReadMessage(context.Background())
		assert.True(t, websocket.IsCloseError(err, wire.CloseRedirect), "%v", err)
	})
	t.Run("a stub that never closes", func(t *testing.T) {
		client.SetLeaveAnswer(t, 200*time.Millisecond)
		a := scriptedStub(t, func(c *websocket.Conn, r *http.Request) {
			c.WriteMessage(websocket.TextMessage, []byte("wsr1 ws://elsewhere/"))
			c.ReadMessage()
		})
		c, _, err := (&client.Dialer{}).Connect(context.Background(), wsURL(a, "/"), nil)
		require.NoError(t, err)
		defer c.Close()
		_, p, err := c.ReadMessage(context.Background())
		require.NoError(t, err)
		assert.Equal(t, "wsr1 ws://elsewhere/", string(p), "not a target: delivered")
		_, _, err = c.ReadMessage(context.Background())
		assert.ErrorContains(t, err, "selected subprotocol "+wire.Subprotocol+" but did not redirect")
	})
}

// TestDialFollowsStubs: DialContext, which returns a plain connection,
// follows a stub like a 3xx and never returns one; a stub that does not
// redirect ends the chain.
func TestDialFollowsStubs(t *testing.T) {
	client.SetLeaveAnswer(t, 300*time.Millisecond)
	b := startGreeter(t, "B", false, nil)
	long := "/rooms/1?token=" + strings.Repeat("k", 200)
	toB := scriptedStub(t, func(c *websocket.Conn, r *http.Request) {
		wstest.CloseRedirect(c, wsURL(b.Server, r.URL.RequestURI()))
	})
	var visits atomic.Int64
	retry := scriptedStub(t, func(c *websocket.Conn, r *http.Request) {
		if visits.Add(1) == 1 {
			wstest.CloseWith(c, "", wire.CloseRetry, wire.EncodeRetry(time.Second))
			return
		}
		wstest.CloseRedirect(c, wsURL(b.Server, r.URL.RequestURI()))
	})
	t.Run("redirect", func(t *testing.T) {
		var d client.Dialer
		ws, resp, hops, err := d.DialTrace(context.Background(), wsURL(toB, long), nil)
		require.NoError(t, err)
		defer ws.Close()
		assert.Empty(t, ws.Subprotocol())
		assert.Empty(t, resp.Header.Get("Sec-Websocket-Protocol"), "the response is the application's connection's")
		require.Len(t, hops, 2)
		assert.Equal(t, client.Hop{URL: wsURL(toB, long), Status: 101, Close: wire.CloseRedirect, Location: wsURL(b.Server, long)}, withoutElapsed(hops[0]))
		_, p, err := ws.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, "B "+long, string(p))
		assert.Equal(t, wsURL(b.Server, long), client.Remembered(&d, wsURL(toB, long)))
	})
	t.Run("retry", func(t *testing.T) {
		d := client.Dialer{Jitter: func(time.Duration) time.Duration { return 0 }}
		var slept time.Duration
		client.SetSleep(&d, func(_ context.Context, d time.Duration) error { slept += d; return nil })
		ws, _, hops, err := d.DialTrace(context.Background(), wsURL(retry, "/r"), nil)
		require.NoError(t, err)
		defer ws.Close()
		assert.Equal(t, time.Second, slept)
		require.Len(t, hops, 3)
		assert.Equal(t, wire.CloseRetry, hops[0].Close)
		assert.Equal(t, wire.CloseRedirect, hops[1].Close)
	})

	silent := scriptedStub(t, func(c *websocket.Conn, r *http.Request) {
		wstest.CloseWith(c, "", websocket.CloseNormalClosure, "bye")
	})
	chatty := scriptedStub(t, func(c *websocket.Conn, r *http.Request) {
		c.WriteMessage(websocket.TextMessage, []byte("hello"))
		c.ReadMessage()
	})
	stuck := scriptedStub(t, func(c *websocket.Conn, r *http.Request) { c.ReadMessage() })
	garbled := scriptedStub(t, func(c *websocket.Conn, r *http.Request) {
		wstest.CloseWith(c, "", wire.CloseRedirect, "go elsewhere")
	})
	vetoed := errors.New("not there")
	for _, tc := range []struct {
		name    string
		srv     *httptest.Server
		d       client.Dialer
		wantErr string
		is      error
	}{
		{"closes without a redirect", silent, client.Dialer{}, "selected subprotocol " + wire.Subprotocol + " but did not redirect: websocket: close 1000", nil},
		{"sends data", chatty, client.Dialer{}, "did not redirect: it sent a data message", nil},
		{"never closes", stuck, client.Dialer{}, "did not redirect", nil},
		{"reason not a redirect", garbled, client.Dialer{}, "close 4307 with a reason that is not a wsredirect v1 redirect", nil},
		{"hop cap", toB, client.Dialer{MaxHops: -1}, "", client.ErrTooManyHops},
		{"veto", toB, client.Dialer{CheckRedirect: func(*url.URL, http.Header, []client.Hop) error { return vetoed }}, "", vetoed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tc.d.DialContext(context.Background(), wsURL(tc.srv, "/"), nil)
			var cerr *client.Error
			require.ErrorAs(t, err, &cerr)
			if tc.is != nil {
				assert.ErrorIs(t, err, tc.is)
			} else {
				assert.ErrorContains(t, err, tc.wantErr)
			}
			assert.Equal(t, []int{101}, statuses(cerr.Hops))
		})
	}
}
