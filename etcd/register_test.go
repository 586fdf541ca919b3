package etcd

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/wire"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// An ID another live node holds with another URL is refused at Start, with
// an error naming the ID, the record and its URL; the same node restarting
// on its address takes its ID back at once; a node whose record another
// node writes over logs it and retries, never writing over it, also once
// its own lease is lost, and registers again when the ID is free.
func TestIDTaken(t *testing.T) {
	noLeaks(t)
	srv := startServer(t)
	ep := srv.endpoint()
	ops := newClient(t, ep)
	ctx := ctxT(t)
	a := startNode(t, ep, "a")
	lease := getLease(t, ops, "members/a")

	impostor := wsredirect.Member{ID: "a", URL: memberURL("elsewhere")}
	mw := wsredirect.MustNew(wsredirect.Options{Rules: []wsredirect.Rule{shardRule}, Self: impostor.URL, Members: []wsredirect.Member{impostor}})
	src, err := Start(ctx, mw, Options{Client: newClient(t, ep), Self: &impostor, Logger: newLogs(t, "impostor").logger()})
	require.Error(t, err)
	assert.Nil(t, src)
	t.Logf("Start of a second node with ID a: %v", err)
	for _, want := range []string{"wsredirect/etcd: Start: ", `member ID "a" is taken`, DefaultPrefix + "members/a", memberURL("a"), "another live node", "an ID of its own"} {
		assert.Contains(t, err.Error(), want)
	}
	assert.Equal(t, lease, getLease(t, ops, "members/a"), "a's record is left alone")
	assert.Equal(t, memberURL("a"), memberRecordOf(t, ops, "a").URL)
	leases, err := ops.Leases(ctx)
	require.NoError(t, err)
	assert.Len(t, leases.Leases, 1, "the refused node revoked the lease it was granted")
	converge(t, time.Now(), convergeBound, fleetOf("a"), a)

	// A crash, and a restart on the same address while the old lease lives.
	a.src.shutdown(false)
	a = startNode(t, ep, "a")
	assert.NotEqual(t, lease, getLease(t, ops, "members/a"), "the restarted node's record is on its new lease")
	converge(t, time.Now(), convergeBound, fleetOf("a"), a)

	// Another node writes over a's record.
	lease = getLease(t, ops, "members/a")
	other, err := ops.Grant(ctx, 30)
	require.NoError(t, err)
	_, err = ops.Put(ctx, DefaultPrefix+"members/a", memberRecord{URL: impostor.URL}.marshal(), clientv3.WithLease(other.ID))
	require.NoError(t, err)
	a.logs.waitLog(t, `member ID \"a\" is taken`, convergeBound)
	// Its own lease lost too: it registers on a new one, or tries to.
	_, err = ops.Revoke(ctx, lease)
	require.NoError(t, err)
	time.Sleep(1500 * time.Millisecond) // retries at 0.1, 0.2, 0.4, 0.8 s
	assert.Equal(t, impostor.URL, memberRecordOf(t, ops, "a").URL, "never written over")
	assert.Equal(t, other.ID, getLease(t, ops, "members/a"))
	assert.Zero(t, a.logs.count("registered again"))

	start := time.Now()
	_, err = ops.Revoke(ctx, other.ID)
	require.NoError(t, err)
	a.logs.waitLog(t, "registered again", 5*time.Second)
	t.Logf("a registered again %v after the ID was free", time.Since(start))
	assert.Equal(t, memberURL("a"), memberRecordOf(t, ops, "a").URL)
	converge(t, start, convergeBound, fleetOf("a"), a)
}

func memberRecordOf(t testing.TB, c *clientv3.Client, id string) wsredirect.Member {
	t.Helper()
	resp, err := c.Get(ctxT(t), DefaultPrefix+"members/"+id)
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1, "member record of %s", id)
	m, _, err := parseMember(id, resp.Kvs[0].Value)
	require.NoError(t, err)
	return m
}

// servingNode is a node that serves: a real HTTP server whose app tracks
// every connection under its key and reads until it ends.
type servingNode struct {
	*instance
	http *httptest.Server
}

func startServingNode(t *testing.T, endpoint, id string) *servingNode {
	t.Helper()
	hs := httptest.NewUnstartedServer(nil)
	self := wsredirect.Member{ID: id, URL: "ws://" + hs.Listener.Addr().String()}
	mw := wsredirect.MustNew(wsredirect.Options{Rules: []wsredirect.Rule{shardRule}, Self: self.URL, Members: []wsredirect.Member{self}})
	up := websocket.Upgrader{}
	hs.Config.Handler = mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		defer mw.Track(r.URL.Query().Get("k"), wsredirect.GorillaConn(c, nil))()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	hs.Start()
	t.Cleanup(hs.Close)
	return &servingNode{instance: startInstance(t, endpoint, id, &self, mw, nil), http: hs}
}

// moved is what a client saw of its move.
type moved struct {
	at     time.Time
	code   int
	target string
}

// dialKeys connects a raw gorilla client to n for each key, which records
// the close it gets; answer: it echoes the close, as clients do.
func dialKeys(t *testing.T, n *servingNode, keys []string, answer bool) []chan moved {
	t.Helper()
	out := make([]chan moved, len(keys))
	for i, k := range keys {
		url := n.self.URL + "/rooms?k=" + k
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		out[i] = make(chan moved, 1)
		if !answer {
			continue
		}
		go func() {
			for {
				_, _, err := c.ReadMessage()
				if err == nil {
					continue
				}
				var ce *websocket.CloseError
				m := moved{at: time.Now()}
				if errors.As(err, &ce) {
					m.code = ce.Code
					m.target, _ = wire.ParseRedirect(ce.Text, "", url)
				}
				out[i] <- m
				return
			}
		}()
	}
	require.Eventually(t, func() bool { return n.mw.Tracked() == len(keys) }, 5*time.Second, 5*time.Millisecond)
	return out
}

// keysOf returns n keys that member id owns in in's fleet.
func keysOf(in *instance, id string, n int) []string {
	var keys []string
	st := in.mw.State()
	for _, k := range testKeys {
		if o, _ := st.Owner(k); o.ID == id {
			keys = append(keys, k)
			if len(keys) == n {
				break
			}
		}
	}
	return keys
}

// Leave drains through etcd, moves every tracked connection to its key's
// new owner as the ramp reaches the key, returns once they have ended, and
// takes the node out of the fleet; when its context ends first, it moves
// and closes what is left and says so.
func TestLeave(t *testing.T) {
	noLeaks(t)
	srv := startServer(t)
	ep := srv.endpoint()
	ops := newClient(t, ep)

	t.Run("graceful", func(t *testing.T) {
		a, b := startServingNode(t, ep, "a"), startServingNode(t, ep, "b")
		converge(t, time.Now(), convergeBound, []wsredirect.Member{selfOf(a), selfOf(b)}, a.instance, b.instance)
		keys := keysOf(a.instance, "a", 30)
		got := dialKeys(t, a, keys, true)

		const ramp = 1500 * time.Millisecond
		start := time.Now()
		err := a.src.Leave(ctxT(t), ramp)
		took := time.Since(start)
		require.NoError(t, err)
		since := start.Add(300 * time.Millisecond) // the nodes' Settle
		var times []time.Duration
		for i := range keys {
			var m moved
			select {
			case m = <-got[i]:
			default:
				t.Fatalf("Leave returned before client %d moved", i)
			}
			assert.Equal(t, wire.CloseRedirect, m.code)
			assert.Equal(t, b.self.URL+"/rooms?k="+keys[i], m.target)
			times = append(times, m.at.Sub(since))
		}
		slices.Sort(times)
		t.Logf("Leave (Settle 300 ms, ramp %v) returned after %v; the %d clients moved from %v to %v after since", ramp, took.Round(time.Millisecond), len(keys), times[0].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond))
		assert.Greater(t, times[0], -50*time.Millisecond, "nothing moves before since")
		assert.Less(t, times[0], ramp/3, "the first keys move early in the ramp")
		assert.Greater(t, times[len(times)-1], 2*ramp/3, "the last keys move late in the ramp")
		assert.Less(t, times[len(times)-1], ramp+time.Second)
		assert.Zero(t, a.mw.Tracked())
		moved, cut := a.mw.Moves()
		assert.Equal(t, uint64(len(keys)), moved)
		assert.Zero(t, cut)
		_, ok := tryLease(t, ops, "members/a")
		assert.False(t, ok, "a's record is gone")
		converge(t, time.Now(), convergeBound, []wsredirect.Member{selfOf(b)}, b.instance)
		require.NoError(t, b.src.Close())
	})

	t.Run("ctx ends first", func(t *testing.T) {
		a, b := startServingNode(t, ep, "a"), startServingNode(t, ep, "b")
		converge(t, time.Now(), convergeBound, []wsredirect.Member{selfOf(a), selfOf(b)}, a.instance, b.instance)
		dialKeys(t, a, keysOf(a.instance, "a", 5), false) // clients that never answer
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := a.src.Leave(ctx, 0)
		t.Logf("Leave with clients that never answer, ctx of 1.5 s: %v after %v", err, time.Since(start).Round(time.Millisecond))
		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.True(t, strings.HasPrefix(err.Error(), "wsredirect/etcd: Leave: "), err.Error())
		assert.Less(t, time.Since(start), 3*time.Second)
		_, ok := tryLease(t, ops, "members/a")
		assert.False(t, ok, "a left all the same")
		require.NoError(t, b.src.Close())
	})

	t.Run("front door", func(t *testing.T) {
		a := startNode(t, ep, "a")
		front := startFront(t, ep, "front")
		err := front.src.Leave(ctxT(t), 0)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "wsredirect/etcd: Leave: no Options.Self")
		require.NoError(t, a.src.Close())
	})
}

func selfOf(n *servingNode) wsredirect.Member {
	m := *n.self
	m.Weight = 1
	return m
}

// TestRecordWrittenOverByHand (regression: `etcdctl put …/members/a
// '{"url":"ws://evil.test:8080"}'` stayed, and every node sent a's rooms
// there): a registered node restores its own record, written over on no
// lease, and warns; the fleet goes back to its URL.
func TestRecordWrittenOverByHand(t *testing.T) {
	noLeaks(t)
	srv := startServer(t)
	ep := srv.endpoint()
	ops := newClient(t, ep)
	a, b := startNode(t, ep, "a"), startNode(t, ep, "b")
	converge(t, time.Now(), convergeBound, fleetOf("a", "b"), a, b)

	_, err := ops.Put(ctxT(t), DefaultPrefix+"members/a", `{"url":"ws://evil.test:8080"}`)
	require.NoError(t, err)
	a.logs.waitLog(t, "member record was written over by hand (on no lease); restoring it", convergeBound)
	waitFor(t, convergeBound, "a's record restored", func() bool { return memberRecordOf(t, ops, "a").URL == memberURL("a") })
	converge(t, time.Now(), convergeBound, fleetOf("a", "b"), a, b)
	assert.NotZero(t, getLease(t, ops, "members/a"), "back on a's lease, so it goes when a does")
	for _, in := range []*instance{a, b} {
		for _, m := range in.mw.State().Members() {
			assert.NotContains(t, m.URL, "evil.test")
		}
	}
}

// Start against an etcd nobody answers at says where it looked.
func TestStartNamesTheEndpoints(t *testing.T) {
	addr := freeAddr(t)
	self := wsredirect.Member{ID: "a", URL: memberURL("a")}
	mw := wsredirect.MustNew(wsredirect.Options{Rules: []wsredirect.Rule{shardRule}, Self: self.URL, Members: []wsredirect.Member{self}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := Start(ctx, mw, Options{Client: newClient(t, addr), Self: &self, Logger: newLogs(t, "a").logger()})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "wsredirect/etcd: Start: registering a with etcd at "+addr+": ")
}
