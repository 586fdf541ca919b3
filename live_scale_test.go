package wsredirect

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect/client"
)

// TestLiveDrainAtScale drains a node holding thousands of open connections,
// a tenth of them from clients that never read while the app streams to
// them: the middleware moves every connection by itself as the drain's
// ramp reaches its key, every reading client ends on its key's owner, and
// the stuck ones are cut. 5,000 connections by
// default (1,000 under -race, whose goroutine limit 5,000 would pass;
// make test runs the full size without it); WSREDIRECT_LIVE_CONNS sets
// another size.
func TestLiveDrainAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of connections")
	}
	n := 5000
	if raceEnabled {
		n = 1000
	}
	if v := os.Getenv("WSREDIRECT_LIVE_CONNS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(t, err, "WSREDIRECT_LIVE_CONNS")
	}
	stuckN := n / 10

	type node struct {
		name string
		srv  *httptest.Server
		mw   *Middleware
	}
	names := []string{"a", "b", "c"}
	nodes := make([]*node, len(names))
	var members []Member
	for i, name := range names {
		nodes[i] = &node{name: name, srv: httptest.NewUnstartedServer(nil)}
		members = append(members, Member{ID: name, URL: "ws://" + nodes[i].srv.Listener.Addr().String()})
	}
	up := websocket.Upgrader{}
	for i, nd := range nodes {
		nd.mw = MustNew(Options{Self: members[i].URL, Members: members, Rules: []Rule{Shard(QueryKey("room"))}, MoveGrace: 2 * time.Second})
		nd.srv.Config.Handler = nd.mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer nd.mw.Track(r.URL.Query().Get("room"), GorillaConn(c, nil))()
			defer c.Close()
			if r.URL.Query().Has("stuck") {
				// Small buffers, so a client that does not read blocks
				// the app's writes within kilobytes.
				c.NetConn().(*net.TCPConn).SetWriteBuffer(4 << 10)
				chunk := make([]byte, 16<<10)
				for c.WriteMessage(websocket.BinaryMessage, chunk) == nil {
				}
				return
			}
			hello, _ := json.Marshal(nd.name)
			if c.WriteMessage(websocket.TextMessage, hello) != nil {
				return
			}
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}))
		nd.srv.Start()
		t.Cleanup(nd.srv.Close)
	}
	b := nodes[1]
	f := b.mw.State().fleet
	keys := keysOwnedBy(t, f, "b", n)

	// Readers connect straight to b, which owns their keys, and report the
	// node greeting them after each (re)connection.
	d := &client.Dialer{Dialer: websocket.Dialer{HandshakeTimeout: 10 * time.Second}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	landed := make([]atomic.Value, n-stuckN)
	var wg sync.WaitGroup
	var dialErrs atomic.Int32
	sem := make(chan struct{}, 64)
	for i := range landed {
		sem <- struct{}{}
		c, _, err := d.Connect(ctx, "ws"+b.srv.URL[len("http"):]+"/rooms?room="+keys[i], nil)
		<-sem
		if err != nil {
			dialErrs.Add(1)
			continue
		}
		c2 := c
		wg.Go(func() {
			defer c2.Close()
			for {
				_, p, err := c2.ReadMessage(ctx)
				if err != nil {
					return
				}
				var name string
				if json.Unmarshal(p, &name) == nil {
					landed[i].Store(name)
				}
			}
		})
	}
	require.Zero(t, dialErrs.Load(), "dials to the owner")
	// Stuck clients: tiny read buffers, and they never read.
	stuckDialer := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(4 << 10)
		}
		return c, err
	}}
	for _, k := range keys[n-stuckN:] {
		c, _, err := stuckDialer.Dial("ws"+b.srv.URL[len("http"):]+"/rooms?stuck&room="+k, nil)
		require.NoError(t, err)
		defer c.Close()
	}
	require.Eventually(t, func() bool { return b.mw.Tracked() == n }, 30*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond) // the stuck clients' buffers fill

	// Over a second's ramp: the moves go out as it reaches their keys.
	const ramp = time.Second
	since := time.Now()
	for _, nd := range nodes {
		require.NoError(t, nd.mw.DrainMember("b", since, ramp))
	}
	var moved, cut uint64
	require.Eventually(t, func() bool {
		moved, cut = b.mw.Moves()
		return moved+cut == uint64(n)
	}, 30*time.Second, 10*time.Millisecond, "every connection is moved or cut, once")
	took := time.Since(since)
	assert.GreaterOrEqual(t, cut, uint64(stuckN), "every stuck client is cut")
	assert.Eventually(t, func() bool { return b.mw.Tracked() == 0 }, 30*time.Second, 20*time.Millisecond, "b holds no connection")
	moved, cut = b.mw.Moves()
	assert.Equal(t, uint64(n), moved+cut, "no connection is counted twice")

	wrong := 0
	assert.Eventually(t, func() bool {
		wrong = 0
		for i := range landed {
			want, _ := b.mw.State().Owner(keys[i])
			if got, _ := landed[i].Load().(string); got != want.ID {
				wrong++
			}
		}
		return wrong == 0
	}, 30*time.Second, 50*time.Millisecond, "every reading client ends on its key's owner")
	t.Logf("%d connections (%d stuck), ramp %v: all told after %v, moved %d, cut %d; readers on the wrong node: %d", n, stuckN, ramp, took.Round(time.Millisecond), moved, cut, wrong)
	cancel()
	wg.Wait()
}
