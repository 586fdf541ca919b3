package client_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/client"
	"github.com/wsredirect/wsredirect/wire"
)

// The dialer against the real middleware: the redirect it writes is the
// one the dialer has to get right.
func TestDialThroughMiddleware(t *testing.T) {
	b := startNode(t, "B", false, nil)
	var refused atomic.Bool
	mw := wsredirect.MustNew(wsredirect.Options{Rules: []wsredirect.Rule{
		wsredirect.Path(wsURL(b.Server, ""), "/rooms/*"),
		wsredirect.Host(wsURL(b.Server, ""), "moved.example"),
		wsredirect.NewRule("drain once", func(r *http.Request, s *wsredirect.State) wsredirect.Decision {
			if r.URL.Path == "/drain" && refused.CompareAndSwap(false, true) {
				return wsredirect.Decision{Action: wsredirect.Refuse, RetryAfter: time.Second}
			}
			return wsredirect.Decision{}
		}),
	}})
	a := startNode(t, "A", false, mw.Handler)

	tests := []struct {
		name      string
		path      string
		header    http.Header
		wantHops  []int
		wantReply string
	}{
		{"path rule", "/rooms/42?user=ann", nil, []int{307, 101}, "B /rooms/42?user=ann: hello"},
		{"host rule", "/lobby", http.Header{"Host": {"moved.example"}}, []int{307, 101}, "B /lobby: hello"},
		{"no rule decides", "/lobby", nil, []int{101}, "A /lobby: hello"},
		{"refusal retried", "/drain", nil, []int{503, 101}, "A /drain: hello"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var slept time.Duration
			var d client.Dialer
			client.SetSleep(&d, func(ctx context.Context, d time.Duration) error {
				slept += d
				return nil
			})
			c, resp, hops, err := d.DialTrace(context.Background(), wsURL(a.Server, tc.path), tc.header)
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
			assert.Equal(t, tc.wantHops, statuses(hops))
			assert.Equal(t, tc.wantReply, echo(t, c, "hello"))
			if tc.wantHops[0] == 307 {
				assert.Equal(t, wsURL(b.Server, tc.path), hops[0].Location, "an absolute ws Location")
			}
			if tc.wantHops[0] == 503 {
				assert.Equal(t, time.Second, hops[0].RetryAfter)
				assert.GreaterOrEqual(t, slept, time.Second)
			}
		})
	}

	t.Run("Host override not carried to another origin", func(t *testing.T) {
		assert.Equal(t, strings.TrimPrefix(b.URL, "http://"), b.lastHeader(t).Get("Host"), "B saw its own host")
	})
}

// TestStubThroughMiddleware: a middleware in ModeClose answers every
// client with a close frame, here with a target too long for the close
// reason, which goes in a message first ("wsr1 +"). The connection
// selected the marker, so it is known as a stub, and Connect and DialTrace
// both follow it.
func TestStubThroughMiddleware(t *testing.T) {
	b := startGreeter(t, "B", false, nil)
	mw := wsredirect.MustNew(wsredirect.Options{Mode: wsredirect.ModeClose, Rules: []wsredirect.Rule{
		wsredirect.Path(wsURL(b.Server, ""), "/rooms/*"),
	}})
	a := startNode(t, "A", false, mw.Handler)
	path := "/rooms/1?token=" + strings.Repeat("t", 200)
	target := wsURL(b.Server, path)
	msg, reason := wire.EncodeRedirect(target)
	require.NotEmpty(t, msg, "the case covers a target in a message")
	require.Equal(t, "wsr1 +", reason)
	wantHop0 := client.Hop{URL: wsURL(a.Server, path), Status: 101, Close: wire.CloseRedirect, Location: target}

	t.Run("Connect", func(t *testing.T) {
		c, resp, err := (&client.Dialer{}).Connect(context.Background(), wsURL(a.Server, path), nil)
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, wire.Subprotocol, resp.Header.Get("Sec-Websocket-Protocol"), "the middleware selected the marker")
		_, p, err := c.ReadMessage(context.Background())
		require.NoError(t, err)
		assert.Equal(t, "B "+path, string(p))
		hops := c.Hops()
		require.Len(t, hops, 2)
		assert.Equal(t, wantHop0, withoutElapsed(hops[0]))
		assert.Equal(t, target, hops[1].URL)
	})
	t.Run("DialTrace", func(t *testing.T) {
		ws, _, hops, err := (&client.Dialer{}).DialTrace(context.Background(), wsURL(a.Server, path), nil)
		require.NoError(t, err)
		defer ws.Close()
		require.Len(t, hops, 2)
		assert.Equal(t, wantHop0, withoutElapsed(hops[0]))
		_, p, err := ws.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, "B "+path, string(p))
	})
}
