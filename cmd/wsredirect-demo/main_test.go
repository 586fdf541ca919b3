package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wsredirect/wsredirect/internal/testtool"
	"github.com/wsredirect/wsredirect/wire"
)

// TestCheck runs the -check path as main does: etcd, a fleet, Go clients
// through the front door, a drain and an undrain, a crash and a restart,
// each client verified.
func TestCheck(t *testing.T) {
	var stdout, stderr testtool.Buffer
	code := run(t.Context(), []string{"-check", "-clients", "100", "-addr", "127.0.0.1:0"}, &stdout, &stderr)

	require.Equal(t, exitOK, code, "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	first, rest, _ := strings.Cut(stdout.String(), "\n")
	assert.Regexp(t, `^front door: http://127\.0\.0\.1:\d+$`, first)
	assert.Contains(t, rest, "check passed")
	assert.Regexp(t, `clients +100 in 33 rooms`, rest)
	assert.Regexp(t, `hops +max 1 per connect, max 1 per move`, rest)
	assert.Regexp(t, `crash +node-\d stopped without revoking its lease: \d+ connections broke; etcd dropped it after \d`, rest)
	assert.Regexp(t, `moved on restart +\d+ back to node-\d, on a new lease`, rest)
	t.Logf("\n%s%s", stdout.String(), stderr.String())
}

// TestCheckFailsWhenTheFleetDisagrees breaks the fleet's agreement: the
// front door alone believes a node drains (set on its middleware, not in
// etcd), so it sends that node's rooms to a peer that sends them back.
// Clients still land on the owner, by two redirects instead of one, and the
// check must say so.
func TestCheckFailsWhenTheFleetDisagrees(t *testing.T) {
	f, _ := startTestFleet(t, 3)
	require.NoError(t, f.front.mw.DrainMember(f.nodes[0].id, time.Now(), 0))

	var stdout bytes.Buffer
	err := check(t.Context(), f, 30, &stdout, io.Discard)

	require.Error(t, err)
	assert.ErrorContains(t, err, "connect: ")
	assert.ErrorContains(t, err, "took 2 redirects to connect; want 1")
	assert.Empty(t, stdout.String(), "no table for a failed check")
	t.Log(err)
}

func TestRunRefuses(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	// An endpoint where nothing answers: the port of a listener closed.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	nothing := closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"AddrInUse", []string{"-addr", busy.Addr().String()}, exitFailed, "-addr 127.0.0.1:0"},
		{"AddrNotLoopback", []string{"-addr", "0.0.0.0:0"}, exitFailed, "loopback only"},
		{"OneNode", []string{"-nodes", "1"}, exitUsage, "-nodes must be 2 to 16"},
		{"NoClients", []string{"-check", "-clients", "0"}, exitUsage, "-clients"},
		{"Argument", []string{"extra"}, exitUsage, "unexpected argument"},
		{"ShortTTL", []string{"-ttl", "1s"}, exitUsage, "-ttl must be 2s to 1m"},
		{"NegativeRamp", []string{"-ramp", "-1s"}, exitUsage, "-ramp must be 0 to 1m"},
		{"NoEndpoint", []string{"-etcd", " , "}, exitUsage, "-etcd lists no endpoint"},
		{"BadPrefix", []string{"-prefix", "/"}, exitUsage, "-prefix must start with /"},
		{"EtcdUnreachable", []string{"-addr", "127.0.0.1:0", "-etcd", nothing}, exitFailed, "does not answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr testtool.Buffer
			code := run(t.Context(), tc.args, &stdout, &stderr)
			assert.Equal(t, tc.code, code)
			assert.Empty(t, stdout.String(), "nothing started")
			assert.Contains(t, stderr.String(), tc.want)
		})
	}
}

// TestServe runs the demo as a user does, until the context ends.
func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	out := &testtool.Buffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-nodes", "2"}, out, out) }()
	var front string
	require.Eventually(t, func() bool {
		m := regexp.MustCompile(`(?m)^front door: (http://\S+)\n`).FindStringSubmatch(out.String())
		if m != nil {
			front = m[1]
		}
		return m != nil
	}, 30*time.Second, 10*time.Millisecond)
	assert.Regexp(t, `(?m)^etcd: 127\.0\.0\.1:\d+ \(embedded, removed on exit\), keys under /wsredirect-demo/$`, out.String())
	assert.Contains(t, out.String(), "wsredirect/etcd: members applied", "the sources log to the terminal")

	res, err := http.Get(front + "/")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode, "the page")

	// A client in a room, to be told to retry later when the fleet stops.
	_, redirect, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(front, "http")+"/rooms/lobby", nil)
	require.ErrorIs(t, err, websocket.ErrBadHandshake, "gorilla follows no redirect")
	assert.Equal(t, http.StatusTemporaryRedirect, redirect.StatusCode, "the front door serves no room")
	ring := getRing(t, front, "lobby")
	owner := memberURL(ring, ring.Owner)
	c, _, err := websocket.DefaultDialer.Dial(owner+"/rooms/lobby", nil)
	require.NoError(t, err)
	defer c.Close()
	_, hello, err := c.ReadMessage()
	require.NoError(t, err)
	assert.JSONEq(t, `{"node":"`+ring.Owner+`","room":"lobby"}`, string(hello))

	// Metrics, on every server.
	for _, srv := range []string{front, "http" + strings.TrimPrefix(owner, "ws")} {
		metrics := get(t, srv+"/metrics")
		assert.Contains(t, metrics, "wsredirect_members 2", srv)
		assert.Contains(t, metrics, "wsredirect_upgrades_total", srv)
	}
	assert.Contains(t, get(t, front+"/metrics"), `wsredirect_upgrades_redirected_total{answer="status",member="`+ring.Owner+`",rule="shard"} 1`)
	assert.Contains(t, get(t, "http"+strings.TrimPrefix(owner, "ws")+"/metrics"), "wsredirect_tracked_connections 1")

	// The node cues the move in the stream; a client that answers the cue
	// by closing learns from the node's answer to retry later, well before
	// the second after which the close frame would follow anyway.
	cancel()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	mt, msg, err := c.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, websocket.TextMessage, mt)
	require.True(t, wire.IsCue(string(msg)), "a cue, got %q", msg)
	closed := time.Now()
	require.NoError(t, c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second)))
	_, _, err = c.ReadMessage()
	var ce *websocket.CloseError
	require.ErrorAs(t, err, &ce)
	assert.Less(t, time.Since(closed), 800*time.Millisecond, "the answer to the client's close, not the frame sent a second after the cue")
	assert.Equal(t, wire.CloseRetry, ce.Code, "the last node out tells clients to retry later")
	_, ok := wire.ParseRetry(ce.Text)
	assert.True(t, ok, ce.Text)
	select {
	case code := <-done:
		assert.Equal(t, exitOK, code)
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after the context ended")
	}
	assert.Contains(t, out.String(), "draining: 1 open connection(s) told to retry later")
	assert.Contains(t, out.String(), "stopped")
}

// TestControl drives the control API: drains and undrains through etcd,
// on which every node and the front door agree, then a crash, whose node
// the fleet drops once its lease expires, and a restart. The page's JSON
// follows along.
func TestControl(t *testing.T) {
	f, logs := startTestFleet(t, 2)
	servers := []string{f.front.url}
	for _, n := range f.nodes {
		servers = append(servers, n.httpURL())
	}
	post := func(path, origin string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, f.front.url+path, nil)
		require.NoError(t, err)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		var body map[string]any
		require.NoError(t, json.NewDecoder(res.Body).Decode(&body))
		return res.StatusCode, body
	}
	agree := func(wantDraining map[string]bool, key string) string {
		t.Helper()
		var owner, since string
		for i, srv := range servers {
			ring := getRing(t, srv, key)
			if i == 0 {
				owner = ring.Owner
				assert.Empty(t, ring.Self)
				assert.False(t, ring.Member)
			} else {
				assert.True(t, ring.Member, srv)
				assert.Equal(t, owner, ring.Owner, "%s agrees with the front door on %s", srv, key)
			}
			for _, m := range ring.Members {
				assert.Equal(t, wantDraining[m.ID], m.Draining, "%s: %s draining", srv, m.ID)
				if m.Draining {
					if since == "" {
						since = m.Since.String()
					}
					assert.Equal(t, since, m.Since.String(), "one start time everywhere: the record's")
					assert.Equal(t, 1.0, m.Fraction)
				}
			}
		}
		return owner
	}
	nodesView := func() map[string]nodeView {
		t.Helper()
		var v fleetView
		require.NoError(t, json.Unmarshal([]byte(get(t, f.front.url+"/api/nodes")), &v))
		byID := map[string]nodeView{}
		for _, n := range v.Nodes {
			byID[n.ID] = n
		}
		return byID
	}

	owner := agree(map[string]bool{}, "lobby")
	other := f.nodes[0].id
	if other == owner {
		other = f.nodes[1].id
	}

	start := time.Now()
	code, body := post("/api/nodes/"+owner+"/drain", f.front.url)
	require.Equal(t, http.StatusOK, code, body)
	assert.GreaterOrEqual(t, time.Since(start), 3*time.Second, "a drain takes effect Settle after its record is written, then ramps")
	assert.Equal(t, other, agree(map[string]bool{owner: true}, "lobby"), "the other node takes the room")
	v := nodesView()[owner]
	assert.Equal(t, "draining", v.State)
	require.NotNil(t, v.Op)
	assert.Equal(t, "drain", v.Op.Kind)
	assert.Equal(t, "done", v.Op.Phase)
	assert.False(t, v.Op.Active)

	code, body = post("/api/nodes/"+other+"/drain", "")
	assert.Equal(t, http.StatusConflict, code, body)
	assert.Contains(t, body["error"], "last node serving")
	code, body = post("/api/nodes/"+other+"/crash", "")
	assert.Equal(t, http.StatusConflict, code, body)
	assert.Contains(t, body["error"], "last node serving")

	code, _ = post("/api/nodes/"+owner+"/undrain", "http://evil.example")
	assert.Equal(t, http.StatusForbidden, code, "only the page's origin may drain")
	// Regression: an unknown action was answered in plain text.
	code, body = post("/api/nodes/"+owner+"/explode", "")
	assert.Equal(t, http.StatusNotFound, code)
	assert.Contains(t, body["error"], "no API POST /api/nodes/"+owner+"/explode: there are GET /api/nodes", "JSON, as every other error")
	code, _ = post("/api/nodes/nobody/undrain", "")
	assert.Equal(t, http.StatusNotFound, code)

	code, body = post("/api/nodes/"+owner+"/undrain", "")
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, owner, agree(map[string]bool{}, "lobby"))

	// A crash: etcd lists the node until its lease expires.
	code, body = post("/api/nodes/"+owner+"/crash", "")
	require.Equal(t, http.StatusOK, code, body)
	v = nodesView()[owner]
	assert.False(t, v.Up)
	if v.State == "down" { // unless the lease expired already
		assert.True(t, v.Listed)
		assert.Equal(t, owner, getRing(t, f.front.url, "lobby").Owner, "the front door still sends the room to the crashed node")
	}
	code, body = post("/api/nodes/"+owner+"/drain", "")
	assert.Equal(t, http.StatusConflict, code, body)
	assert.Contains(t, body["error"], "restart it first")
	require.NoError(t, f.waitGone(t.Context(), owner))
	assert.Equal(t, "gone", nodesView()[owner].State)
	assert.Equal(t, other, getRing(t, f.front.url, "lobby").Owner, "once the lease expired, the room goes to the other node")
	assert.Equal(t, other, getRing(t, servers[1+indexOf(f, other)], "lobby").Owner)

	code, body = post("/api/nodes/"+owner+"/restart", "")
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, owner, agree(map[string]bool{}, "lobby"), "restarted, on its address, the node has its room back")
	assert.Equal(t, "serving", nodesView()[owner].State)
	code, body = post("/api/nodes/"+owner+"/restart", "")
	assert.Equal(t, http.StatusConflict, code, body)

	var stats statsView
	require.NoError(t, json.Unmarshal([]byte(get(t, f.front.url+"/api/stats")), &stats))
	assert.EqualValues(t, 500, stats.Every)
	assert.NotEmpty(t, stats.Times)
	for _, n := range f.nodes {
		require.Contains(t, stats.Nodes, n.id)
		assert.Len(t, stats.Nodes[n.id].Conns, len(stats.Times))
	}

	// A second demo on the same etcd and prefix would mix the fleets.
	cfg := f.cfg
	cfg.etcd = f.endpoints
	_, err := startFleet(t.Context(), cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "another demo uses it?")

	assert.Contains(t, logs.String(), `msg="demo: node crashed`)
	assert.Contains(t, logs.String(), `msg="wsredirect/etcd: draining" node=`+owner)
}

// TestClients adds simulated clients, which the charts count, and that a
// crash sends back through the front door once the lease expired.
func TestClients(t *testing.T) {
	f, _ := startTestFleet(t, 2)
	f.bots.add(20)
	require.Eventually(t, func() bool { return f.tracked() == 20 }, 10*time.Second, 10*time.Millisecond)

	victim := f.nodes[0]
	if victim.tracked() == 0 {
		victim = f.nodes[1]
	}
	require.NoError(t, f.crash(t.Context(), victim.id))
	require.NoError(t, f.waitGone(t.Context(), victim.id))
	require.Eventually(t, func() bool { return f.tracked() == 20 }, 10*time.Second, 10*time.Millisecond,
		"every client back, on the node left")

	f.bots.removeAll()
	require.Eventually(t, func() bool { return f.tracked() == 0 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, 0, f.bots.count())
}

// startTestFleet starts a fleet on an embedded etcd, with a short lease and
// drain ramp, stopped when the test ends; logs collects what it logs.
func startTestFleet(t *testing.T, nodes int) (*fleet, *testtool.Buffer) {
	t.Helper()
	logs := &testtool.Buffer{}
	cfg := config{
		addr: "127.0.0.1:0", nodes: nodes, prefix: "/wsredirect-demo/", ttl: 2 * time.Second, ramp: time.Second,
		logger: newLogger(logs, slog.LevelInfo), logOutput: logs,
	}
	f, err := startFleet(t.Context(), cfg)
	require.NoError(t, err, "logs:\n%s", logs.String())
	t.Cleanup(func() {
		f.shutdown(io.Discard)
		if t.Failed() {
			t.Logf("fleet logs:\n%s", logs.String())
		}
	})
	return f, logs
}

func indexOf(f *fleet, id string) int {
	for i, n := range f.nodes {
		if n.id == id {
			return i
		}
	}
	return -1
}

func get(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode, url)
	var b bytes.Buffer
	_, err = b.ReadFrom(res.Body)
	require.NoError(t, err)
	return b.String()
}

func getRing(t *testing.T, server, key string) ringView {
	t.Helper()
	var v ringView
	require.NoError(t, json.Unmarshal([]byte(get(t, server+"/debug/ring?key="+key)), &v))
	require.Equal(t, key, v.Key)
	return v
}

func memberURL(v ringView, id string) string {
	for _, m := range v.Members {
		if m.ID == id {
			return m.URL
		}
	}
	return ""
}
