package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheck runs the -check path as main does: a fleet, Go clients through
// the front door, a drain and an undrain, each client verified.
func TestCheck(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"-check", "-clients", "100", "-addr", "127.0.0.1:0"}, &stdout, &stderr)

	require.Equal(t, exitOK, code, "stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	first, rest, _ := strings.Cut(stdout.String(), "\n")
	assert.Regexp(t, `^front door: http://127\.0\.0\.1:\d+$`, first)
	assert.Contains(t, rest, "check passed")
	assert.Regexp(t, `clients +100 in 33 rooms`, rest)
	assert.Regexp(t, `hops +max 1 per connect, max 1 per move`, rest)
	t.Logf("\n%s%s", &stdout, &stderr)
}

// TestCheckFailsWhenTheFleetDisagrees breaks the fleet's agreement: the
// front door alone believes a node drains, so it sends that node's rooms to
// a peer that sends them back. Clients still land on the owner, by two
// redirects instead of one, and the check must say so.
func TestCheckFailsWhenTheFleetDisagrees(t *testing.T) {
	f, err := startFleet("127.0.0.1:0", 3)
	require.NoError(t, err)
	defer f.shutdown(&bytes.Buffer{})
	require.NoError(t, f.front.mw.DrainMember(f.nodes[0].id, time.Now(), 0))

	var stdout bytes.Buffer
	err = check(t.Context(), f, 30, &stdout, &bytes.Buffer{})

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
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
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
	out := &syncBuffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-nodes", "2"}, out, out) }()
	var front string
	require.Eventually(t, func() bool {
		m := regexp.MustCompile(`^front door: (http://\S+)\n`).FindStringSubmatch(out.String())
		if m != nil {
			front = m[1]
		}
		return m != nil
	}, 5*time.Second, 10*time.Millisecond)

	res, err := http.Get(front + "/")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode, "the page")

	// A client in a room, to be told to retry later when the fleet stops.
	_, redirect, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(front, "http")+"/rooms/lobby", nil)
	require.ErrorIs(t, err, websocket.ErrBadHandshake, "gorilla follows no redirect")
	assert.Equal(t, http.StatusTemporaryRedirect, redirect.StatusCode, "the front door serves no room")
	ring := getRing(t, front, "lobby")
	c, _, err := websocket.DefaultDialer.Dial(memberURL(ring, ring.Owner)+"/rooms/lobby", nil)
	require.NoError(t, err)
	defer c.Close()
	_, hello, err := c.ReadMessage()
	require.NoError(t, err)
	assert.JSONEq(t, `{"node":"`+ring.Owner+`","room":"lobby"}`, string(hello))

	cancel()
	select {
	case code := <-done:
		assert.Equal(t, exitOK, code)
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after the context ended")
	}
	_, _, err = c.ReadMessage()
	var ce *websocket.CloseError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, 4503, ce.Code, "the last node out tells clients to retry later")
	assert.Contains(t, out.String(), "draining: 1 open connection(s) told to retry later")
}

// TestControl drives the control API and checks that every node and the
// front door agree on drains.
func TestControl(t *testing.T) {
	f, err := startFleet("127.0.0.1:0", 2)
	require.NoError(t, err)
	defer f.shutdown(&bytes.Buffer{})
	servers := []string{f.front.url}
	for _, n := range f.nodes {
		servers = append(servers, "http"+strings.TrimPrefix(n.url, "ws"))
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
					assert.Equal(t, since, m.Since.String(), "one start time everywhere")
					assert.Equal(t, 1.0, m.Fraction)
				}
			}
		}
		return owner
	}

	owner := agree(map[string]bool{}, "lobby")
	other := f.nodes[0].id
	if other == owner {
		other = f.nodes[1].id
	}

	code, body := post("/api/nodes/"+owner+"/drain", f.front.url)
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, other, agree(map[string]bool{owner: true}, "lobby"), "the other node takes the room")

	code, body = post("/api/nodes/"+other+"/drain", "")
	assert.Equal(t, http.StatusConflict, code, body)
	assert.Contains(t, body["error"], "last node serving")

	code, _ = post("/api/nodes/"+owner+"/undrain", "http://evil.example")
	assert.Equal(t, http.StatusForbidden, code, "only the page's origin may drain")
	code, _ = post("/api/nodes/nobody/undrain", "")
	assert.Equal(t, http.StatusNotFound, code)

	code, body = post("/api/nodes/"+owner+"/undrain", "")
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, owner, agree(map[string]bool{}, "lobby"))
}

func getRing(t *testing.T, server, key string) ringView {
	t.Helper()
	res, err := http.Get(server + "/debug/ring?key=" + key)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	var v ringView
	require.NoError(t, json.NewDecoder(res.Body).Decode(&v))
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

// syncBuffer is a bytes.Buffer safe for the writer run is and a reader
// polling it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
