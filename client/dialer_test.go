package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect/client"
	"github.com/wsredirect/wsredirect/wire"
)

func TestDialFollowsRedirectStatuses(t *testing.T) {
	b := startNode(t, "B", false, nil)
	for _, status := range []int{301, 302, 303, 307, 308} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			a := redirectTo(t, status, func(r *http.Request) string { return wsURL(b.Server, r.URL.RequestURI()) })
			var d client.Dialer
			c, resp, hops, err := d.DialTrace(context.Background(), wsURL(a, "/room?id=7"), nil)
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
			assert.Equal(t, []int{status, 101}, statuses(hops))
			assert.Equal(t, wsURL(a, "/room?id=7"), hops[0].URL)
			assert.Equal(t, wsURL(b.Server, "/room?id=7"), hops[0].Location)
			assert.Equal(t, wsURL(b.Server, "/room?id=7"), hops[1].URL)
			assert.Equal(t, "B /room?id=7: hi", echo(t, c, "hi"))
		})
	}
}

func TestDialHopCap(t *testing.T) {
	// Every /n redirects to /n+1: only the cap ends the chain.
	endless := redirectTo(t, http.StatusTemporaryRedirect, func(r *http.Request) string {
		n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		return "/" + strconv.Itoa(n+1)
	})
	tests := []struct {
		name     string
		maxHops  int
		wantHops int // responses seen: the redirects followed plus the refused one
	}{
		{"default is 10", 0, 11},
		{"configured", 3, 4},
		{"negative follows none", -1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := client.Dialer{MaxHops: tc.maxHops}
			_, resp, err := d.DialContext(context.Background(), wsURL(endless, "/0"), nil)
			require.ErrorIs(t, err, client.ErrTooManyHops)
			var cerr *client.Error
			require.ErrorAs(t, err, &cerr)
			assert.Len(t, cerr.Hops, tc.wantHops)
			assert.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode, "the last response comes back, as from gorilla")
			assert.Equal(t, "/"+strconv.Itoa(tc.wantHops), cerr.Hops[len(cerr.Hops)-1].Location)
		})
	}
}

func TestDialLoop(t *testing.T) {
	var a, b atomic.Pointer[string]
	srvA := redirectTo(t, http.StatusFound, func(*http.Request) string { return *b.Load() })
	srvB := redirectTo(t, http.StatusFound, func(*http.Request) string { return *a.Load() })
	aURL, bURL := wsURL(srvA, "/x"), wsURL(srvB, "/y")
	// The loop is spelled differently each time round: case, default
	// port, http scheme. It is still the same URL.
	aLoc := "HTTP://" + strings.TrimPrefix(aURL, "ws://")
	a.Store(&aLoc)
	b.Store(&bURL)

	var d client.Dialer
	_, _, err := d.DialContext(context.Background(), aURL, nil)
	require.ErrorIs(t, err, client.ErrLoop)
	var cerr *client.Error
	require.ErrorAs(t, err, &cerr)
	assert.Equal(t, []int{302, 302}, statuses(cerr.Hops))
	assert.Equal(t, "wsredirect/client: "+aURL+" 302 → "+bURL+" 302 → "+aLoc+": redirect loop", err.Error())
}

func TestDialLocationForms(t *testing.T) {
	b := startNode(t, "B", false, nil)
	var target atomic.Value
	a := redirectTo(t, http.StatusTemporaryRedirect, func(*http.Request) string { return target.Load().(string) })
	bHost := strings.TrimPrefix(b.URL, "http://")
	tests := []struct {
		name     string
		location string
		dial     string // on a
		want     string // URL of the final hop
	}{
		{"absolute ws", "ws://" + bHost + "/p?q=1", "/", "ws://" + bHost + "/p?q=1"},
		{"absolute http maps to ws", "http://" + bHost + "/p", "/", "ws://" + bHost + "/p"},
		{"scheme-relative", "//" + bHost + "/p", "/", "ws://" + bHost + "/p"},
		{"upper-case host and default path", "ws://" + strings.ToUpper(bHost), "/", "ws://" + bHost + "/"},
		{"fragment dropped", "ws://" + bHost + "/p#frag", "/", "ws://" + bHost + "/p"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target.Store(tc.location)
			var d client.Dialer
			c, _, hops, err := d.DialTrace(context.Background(), wsURL(a, tc.dial), nil)
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, tc.want, hops[len(hops)-1].URL)
		})
	}

	// Relative Locations resolve against the URL that answered, so they
	// stay on that server: a 307 then an upgrade at another path.
	relative := startNode(t, "R", false, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if to := r.URL.Query().Get("to"); to != "" {
				w.Header().Set("Location", to)
				w.WriteHeader(http.StatusTemporaryRedirect)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	rel := []struct {
		name, dial, wantURI string
	}{
		{"absolute path", "/a/b?to=/c%3Fk%3Dv", "/c?k=v"},
		{"path-relative", "/a/b?to=c", "/a/c"},
		{"dot-dot", "/a/b?to=../c", "/c"},
		{"query only", "/a/b?to=%3Fk%3Dv", "/a/b?k=v"},
	}
	for _, tc := range rel {
		t.Run("relative "+tc.name, func(t *testing.T) {
			var d client.Dialer
			c, _, hops, err := d.DialTrace(context.Background(), wsURL(relative.Server, tc.dial), nil)
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, []int{307, 101}, statuses(hops))
			assert.Equal(t, "R "+tc.wantURI+": m", echo(t, c, "m"))
		})
	}
}

func TestDialTLS(t *testing.T) {
	secure := startNode(t, "S", true, nil)
	plain := startNode(t, "P", false, nil)
	var location atomic.Value
	redirector := startNode(t, "R", true, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", location.Load().(string))
			w.WriteHeader(http.StatusTemporaryRedirect)
		})
	})
	tests := []struct {
		name           string
		location       string
		allowDowngrade bool
		wantErr        error
		wantLast       string
	}{
		{"wss to wss", wsURL(secure.Server, "/"), false, nil, wsURL(secure.Server, "/")},
		{"https maps to wss", secure.URL + "/", false, nil, wsURL(secure.Server, "/")},
		{"wss to ws refused", wsURL(plain.Server, "/"), false, client.ErrDowngrade, ""},
		{"http to ws refused too", plain.URL + "/", false, client.ErrDowngrade, ""},
		{"wss to ws allowed", wsURL(plain.Server, "/"), true, nil, wsURL(plain.Server, "/")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			location.Store(tc.location)
			d := client.Dialer{AllowDowngrade: tc.allowDowngrade}
			d.TLSClientConfig = trusting(secure.Server)
			c, _, hops, err := d.DialTrace(context.Background(), wsURL(redirector.Server, "/"), nil)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				assert.Equal(t, []int{307}, statuses(hops), "nothing is dialled after a refused downgrade")
				return
			}
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, tc.wantLast, hops[len(hops)-1].URL)
		})
	}
}

func TestDialCredentials(t *testing.T) {
	a, b := credentialNodes(t)

	secret := http.Header{
		"Authorization":       {"Bearer s3cret"},
		"Cookie":              {"session=s3cret"},
		"Proxy-Authorization": {"Basic cHJveHk6cw=="},
		"X-Trace":             {"kept"},
	}
	tests := []struct {
		name     string
		path     string
		landOn   *node
		wantKept bool
	}{
		{"same origin keeps them", "/same", a, true},
		{"other port drops them", "/cross", b, false},
		{"dropped for the rest of the chain, even back on the first origin", "/back", a, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d client.Dialer
			c, _, err := d.DialContext(context.Background(), wsURL(a.Server, tc.path), secret)
			require.NoError(t, err)
			defer c.Close()
			got := tc.landOn.lastHeader(t)
			assert.Equal(t, "kept", got.Get("X-Trace"))
			for _, k := range []string{"Authorization", "Cookie", "Proxy-Authorization"} {
				if tc.wantKept {
					assert.Equal(t, secret.Get(k), got.Get(k), k)
				} else {
					assert.Empty(t, got.Values(k), k)
				}
			}
		})
	}
	t.Run("caller's header is not modified", func(t *testing.T) {
		assert.Equal(t, "Bearer s3cret", secret.Get("Authorization"))
	})

	t.Run("user info becomes Basic auth and is dropped cross-origin", func(t *testing.T) {
		var d client.Dialer
		u := strings.Replace(wsURL(a.Server, "/same"), "ws://", "ws://alice:pw@", 1)
		c, _, hops, err := d.DialTrace(context.Background(), u, nil)
		require.NoError(t, err)
		c.Close()
		assert.Equal(t, "Basic YWxpY2U6cHc=", a.lastHeader(t).Get("Authorization"))
		assert.NotContains(t, hops[0].URL, "alice", "hops never show user info")

		u = strings.Replace(wsURL(a.Server, "/cross"), "ws://", "ws://alice:pw@", 1)
		c, _, err = d.DialContext(context.Background(), u, nil)
		require.NoError(t, err)
		c.Close()
		assert.Empty(t, b.lastHeader(t).Get("Authorization"))
	})
}

func TestDialCheckRedirect(t *testing.T) {
	b := startNode(t, "B", false, nil)
	a := redirectTo(t, http.StatusTemporaryRedirect, func(r *http.Request) string { return wsURL(b.Server, "/") })
	errVeto := errors.New("not there")
	tests := []struct {
		name     string
		hook     func(next *url.URL, h http.Header, via []client.Hop) error
		wantErr  error
		wantAuth string
	}{
		{
			name:    "veto",
			hook:    func(*url.URL, http.Header, []client.Hop) error { return errVeto },
			wantErr: errVeto,
		},
		{
			name: "re-add credentials for the new origin",
			hook: func(next *url.URL, h http.Header, via []client.Hop) error {
				if next.Host == strings.TrimPrefix(b.URL, "http://") {
					h.Set("Authorization", "Bearer for-b")
				}
				return nil
			},
			wantAuth: "Bearer for-b",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var seen []client.Hop
			d := client.Dialer{CheckRedirect: func(next *url.URL, h http.Header, via []client.Hop) error {
				seen = append([]client.Hop(nil), via...)
				assert.Empty(t, h.Get("Authorization"), "the hook sees the header after stripping")
				return tc.hook(next, h, via)
			}}
			c, _, err := d.DialContext(context.Background(), wsURL(a, "/"), http.Header{"Authorization": {"Bearer for-a"}})
			assert.Equal(t, []int{307}, statuses(seen))
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				var cerr *client.Error
				require.ErrorAs(t, err, &cerr)
				assert.Len(t, cerr.Hops, 1)
				return
			}
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, tc.wantAuth, b.lastHeader(t).Get("Authorization"))
		})
	}
}

// refusing answers 503 with Retry-After until refusals run out, then
// upgrades.
func refusing(t *testing.T, retryAfter string, refusals int) *node {
	var left atomic.Int64
	left.Store(int64(refusals))
	return startNode(t, "N", false, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if left.Add(-1) >= 0 {
				w.Header().Set("Retry-After", retryAfter)
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
}

func TestDialRetryAfter(t *testing.T) {
	tests := []struct {
		name       string
		retryAfter string
		refusals   int
		maxRetries int
		maxDelay   time.Duration
		wantSleeps []time.Duration
		wantHops   []int
		wantErr    error
	}{
		{"retried after delay plus jitter", "2", 2, 0, 0, []time.Duration{2*time.Second + 7*time.Millisecond, 2*time.Second + 7*time.Millisecond}, []int{503, 503, 101}, nil},
		{"HTTP date", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat), 1, 0, 2 * time.Hour, nil, []int{503, 101}, nil},
		{"retries capped", "1", 5, 2, 0, []time.Duration{time.Second + 7*time.Millisecond, time.Second + 7*time.Millisecond}, []int{503, 503, 503}, websocket.ErrBadHandshake},
		{"negative never retries", "1", 1, -1, 0, nil, []int{503}, websocket.ErrBadHandshake},
		{"delay over the cap is not waited for", "60", 1, 0, 0, nil, []int{503}, websocket.ErrBadHandshake},
		{"no Retry-After is final", "", 1, 0, 0, nil, []int{503}, websocket.ErrBadHandshake},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := refusing(t, tc.retryAfter, tc.refusals)
			var slept []time.Duration
			d := client.Dialer{
				MaxRetries:    tc.maxRetries,
				MaxRetryDelay: tc.maxDelay,
				Jitter:        func(time.Duration) time.Duration { return 7 * time.Millisecond },
			}
			client.SetSleep(&d, func(ctx context.Context, d time.Duration) error {
				slept = append(slept, d)
				return ctx.Err()
			})
			c, _, hops, err := d.DialTrace(context.Background(), wsURL(n.Server, "/"), nil)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
			} else {
				require.NoError(t, err)
				c.Close()
			}
			assert.Equal(t, tc.wantHops, statuses(hops))
			if tc.name == "HTTP date" {
				require.Len(t, slept, 1)
				assert.InDelta(t, time.Hour, slept[0], float64(2*time.Second))
				return
			}
			assert.Equal(t, tc.wantSleeps, slept)
			if len(tc.wantSleeps) > 0 {
				assert.Positive(t, hops[0].RetryAfter)
			}
		})
	}

	t.Run("real timer", func(t *testing.T) {
		n := refusing(t, "0", 1)
		d := client.Dialer{Jitter: func(time.Duration) time.Duration { return time.Millisecond }}
		c, _, hops, err := d.DialTrace(context.Background(), wsURL(n.Server, "/"), nil)
		require.NoError(t, err)
		c.Close()
		assert.Equal(t, []int{503, 101}, statuses(hops))
	})
}

func TestDialContextBoundsChain(t *testing.T) {
	// b takes the request and never answers until the client gives up.
	arrived := make(chan struct{}, 1)
	stall := startNode(t, "stall", false, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			<-r.Context().Done()
		})
	})
	a := redirectTo(t, http.StatusTemporaryRedirect, func(*http.Request) string { return wsURL(stall.Server, "/") })

	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		var d client.Dialer
		_, _, err := d.DialContext(ctx, wsURL(a, "/"), nil)
		<-arrived
		require.ErrorIs(t, err, context.DeadlineExceeded)
		var cerr *client.Error
		require.ErrorAs(t, err, &cerr)
		assert.Equal(t, []int{307, 0}, statuses(cerr.Hops))
	})

	t.Run("cancel mid-handshake", func(t *testing.T) {
		// gorilla watches only the deadline; the dialer must watch cancel.
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-arrived
			cancel()
		}()
		var d client.Dialer
		_, _, err := d.DialContext(ctx, wsURL(a, "/"), nil)
		require.ErrorIs(t, err, context.Canceled)
	})

	t.Run("while waiting to retry", func(t *testing.T) {
		n := refusing(t, "20", 1)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		var d client.Dialer
		start := time.Now()
		_, _, err := d.DialContext(ctx, wsURL(n.Server, "/"), nil)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, time.Since(start), 10*time.Second)
	})
}

func TestDialNetworkError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	var d client.Dialer
	_, resp, err := d.DialContext(context.Background(), "ws://"+addr+"/", nil)
	assert.Nil(t, resp)
	var cerr *client.Error
	require.ErrorAs(t, err, &cerr)
	require.Len(t, cerr.Hops, 1)
	assert.Zero(t, cerr.Hops[0].Status, "no response: a network error")
	assert.True(t, strings.HasPrefix(err.Error(), fmt.Sprintf("wsredirect/client: ws://%s/: ", addr)), err.Error())
}

func TestDialBadURL(t *testing.T) {
	var d client.Dialer
	for _, u := range []string{"ftp://x/", "ws:///nohost", "://"} {
		_, _, err := d.DialContext(context.Background(), u, nil)
		require.Error(t, err, u)
		assert.True(t, strings.HasPrefix(err.Error(), "wsredirect/client: "), err.Error())
	}
}

func TestDialGorillaOptionsApplyToEveryHop(t *testing.T) {
	b := startNode(t, "B", false, nil)
	a := redirectTo(t, http.StatusTemporaryRedirect, func(*http.Request) string { return wsURL(b.Server, "/") })
	var dials atomic.Int64
	d := client.Dialer{}
	d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		var nd net.Dialer
		return nd.DialContext(ctx, network, addr)
	}
	d.Subprotocols = []string{"chat"}
	c, _, err := d.Dial(wsURL(a, "/"), nil)
	require.NoError(t, err)
	c.Close()
	assert.EqualValues(t, 2, dials.Load())
	assert.Equal(t, "chat, "+wire.Subprotocol, b.lastHeader(t).Get("Sec-Websocket-Protocol"), "the marker after the app's own")
}
