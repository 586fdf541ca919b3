package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/ring"
	"github.com/wsredirect/wsredirect/wire"
)

// TestStreamAcrossLiveDrain (issues 14, 18): a page streams numbered
// messages through the helper to a node while the node drains, and keeps
// streaming through the move and after it. The node's middleware moves the
// tracked connection by itself once the drain is set. The helper queues
// what the page sends while the connection moves and sends it on the new
// connection first, so the old node's app gets a prefix of the stream, the
// new node's app the rest, in order, nothing twice, and every queued
// message reaches the new node.
//
// With the app tracking its connections through GorillaConn with its send
// func ("cued"), the move comes first as the cue in the stream; the page
// closes the socket itself on reading it, the middleware answers that
// close with the move, and nothing may be lost: what the page sent before
// the cue reaches the old node, everything after it the new node. With no
// send func ("close frame") Chromium loses messages, not the helper, and
// that is tolerated and logged: its network process answers the server's
// close frame at once and drops what the page sends after that, while the
// page sees the socket CLOSING only a moment later. What the page sent in
// that moment went out on the old socket as far as it can tell, and never
// arrives: a run of numbers right after the old node's last, each sent
// straight on the old socket, not queued. The page sends a burst of
// messages every 3 ms (STREAM_BURST, default 10): measured at 20 on
// 2026-12-04 (go test -count=30), the close-frame case lost 10 to 45
// messages in 8 runs of 30 and 1,311 in a ninth, the cued case none in 30.
// At 20 a move's queue can outgrow maxQueuedMessages (1024): one cued run
// of the 30 reported 36 sends as "queue full", which fails the test.
func TestStreamAcrossLiveDrain(t *testing.T) {
	browser := startChromium(t)
	page := newPage(t)
	for _, cue := range []bool{true, false} {
		t.Run(map[bool]string{true: "cued", false: "close frame"}[cue], func(t *testing.T) {
			streamAcrossLiveDrain(t, browser, page, cue)
		})
	}
}

func streamAcrossLiveDrain(t *testing.T, browser context.Context, page *page, cue bool) {
	burst := 10
	if b, err := strconv.Atoi(os.Getenv("STREAM_BURST")); err == nil && b > 0 {
		burst = b
	}
	f, rec := newStreamFleet(t, page.origin, cue)
	a := f.nodes[0]
	room := f.roomOwnedBy(a)
	next := f.nodeAt(f.ring.OwnerWithout(ring.Hash(room), f.index(a)))
	path := "/ws?room=" + room
	tab := openTab(t, browser, page)

	// A fixed jitter (Math.random is 0.5 in the page: the move waits
	// 150 ms), so the page sends a few dozen messages while it moves.
	tab.do(chromedp.Evaluate[chromedp.Void](streamJS))
	tab.call("helper", a.url+path, echo, map[string]any{"moveJitterMs": 300})
	require.Equal(t, a.name, tab.greeting(0).Node)
	require.Eventually(t, func() bool { return a.mw.Tracked() == 1 }, wait, 10*time.Millisecond)

	tab.call("startStream", 3, burst)
	tab.poll(`stream.sent >= 80*` + strconv.Itoa(burst))

	f.drain(a)
	requireMoved(t, a, 1)

	hello := tab.greeting(1)
	require.Equal(t, next.name, hello.Node, "the key's owner once a is gone")
	// Until 80 more went out on the new connection, or the stream broke.
	tab.poll(`stream.sent >= stream.atOpen[0] + 80*` + strconv.Itoa(burst) + ` || stream.errors.length > 0`)
	n := evalJS[int](tab, `stopStream()`)
	s := evalJS[streamState](tab, `stream`)
	require.NotEmpty(t, s.AtOpen, "the new connection never opened: %v", s.Errors)

	// Until the last number is in and a's app saw the close.
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) && (!slices.Contains(rec[next].last(), n) || a.mw.Tracked() != 0) {
		time.Sleep(10 * time.Millisecond)
	}

	old, fresh := rec[a].snapshot(), rec[next].snapshot()
	var third [][]int
	for _, o := range f.nodes {
		if o != a && o != next {
			third = append(third, rec[o].snapshot()...)
		}
	}
	t.Logf("N=%d: %s got %d, %s got %d, %d of them queued during the move (%d..%d); page errors: %v",
		n, a.name, total(old), next.name, total(fresh), len(s.Queued), first(s.Queued), lastOf(s.Queued), s.Errors)

	assert.Empty(t, s.Errors, "no error events, nothing thrown by send")
	assert.Empty(t, third, "the third node saw no connection")
	require.Len(t, old, 1, "connections to %s", a.name)
	require.Len(t, fresh, 1, "connections to %s", next.name)
	require.NotEmpty(t, s.Queued, "some messages were queued during the move")
	assert.Positive(t, len(old[0]), "the old node got the start of the stream")

	// The queued numbers are a run that starts the new node's share.
	q0 := s.Queued[0]
	assert.Equal(t, seq(q0, q0+len(s.Queued)-1), s.Queued, "queued: one run, from the move on")
	assert.Equal(t, seq(q0, n), fresh[0], "the new node: every number from the first queued, in order")
	// The old node: a prefix 1..k in order. What lies between it and the
	// first queued number was sent straight on the old socket and lost.
	lastOld := lastOf(old[0])
	require.Equal(t, seq(1, lastOld), old[0], "the old node: a prefix of the stream, in order: %s", describeGaps(seq(1, n), old[0], fresh[0]))
	lost := seq(lastOld+1, q0-1)
	// The page closed first, on the cue, with 1000 (the middleware
	// answered with the move); on a close frame it echoes the server's code.
	t.Logf("the old connection's close from the page: %v", rec[a].ended())
	if cue {
		assert.Equal(t, []int{1000}, rec[a].ended(), "cued: the page closed first, on the cue")
		assert.Empty(t, lost, "cued: nothing lost at the boundary")
	} else if len(lost) > 0 {
		t.Logf("Chromium dropped %v: sent on the old socket while the page still saw it OPEN, just as the browser answered the close", lost)
		assert.Subset(t, s.Direct, lost, "the lost numbers were sent straight on the old socket")
	}
	assert.Empty(t, rec[a].bad, "malformed messages at %s", a.name)
	assert.Empty(t, rec[next].bad, "malformed messages at %s", next.name)
	redirect := tab.event("redirect", 0)
	assert.Equal(t, redirectDetail{From: a.url + path, To: next.url + path, Code: wire.CloseRedirect, Live: true}, *redirect.Detail)
	assert.Equal(t, []string{"open", "message", "redirect", "open", "message"}, tab.types(), "the app sees no close")
}

// streamJS adds to the test page a stream of numbered messages on its
// helper (window.ws), sent every ms milliseconds from startStream(ms) until
// stopStream(), which returns how many were sent. stream.queued lists the
// numbers the helper queued, found by peeking at its private queue (test
// only); stream.direct the last few it sent straight on the first socket;
// stream.atOpen how many had been sent at each "open" after the first;
// stream.errors every error event's detail and anything send throws.
const streamJS = `
Math.random = () => 0.5;
window.stream = { sent: 0, queued: [], direct: [], atOpen: [], errors: [], timer: null };
window.startStream = (ms, burst = 1) => {
  const s = window.stream, ws = window.ws;
  ws.addEventListener("open", () => s.atOpen.push(s.sent));
  ws.addEventListener("error", (e) => s.errors.push(JSON.stringify(e.detail ?? null)));
  s.timer = setInterval(() => {
    for (let i = 0; i < burst; i++) {
      const n = s.sent + 1, before = ws._queue.length;
      try {
        ws.send(String(n));
        s.sent = n;
      } catch (err) {
        s.errors.push(String(err));
        clearInterval(s.timer);
        return;
      }
      if (ws._queue.length > before) s.queued.push(n);
      else if (s.queued.length === 0) s.direct = [...s.direct.slice(-99), n];
    }
  }, ms);
  return true;
};
window.stopStream = () => (clearInterval(window.stream.timer), window.stream.sent);
`

type streamState struct {
	Sent   int      `json:"sent"`
	Queued []int    `json:"queued"`
	Direct []int    `json:"direct"`
	AtOpen []int    `json:"atOpen"`
	Errors []string `json:"errors"`
}

// evalJS evaluates expr in the tab's page and decodes its value.
func evalJS[T any](tb *tab, expr string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, wait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	require.NoError(tb.t, err, "evaluating %s", expr)
	return v
}

// recorder is a node app's record of the numbers it read, per connection,
// in the order it read them.
type recorder struct {
	mu    sync.Mutex
	conns [][]int
	bad   []string
	closeCodes
}

// closeCodes records the close code each connection of an app read from
// its client, -1 for none: who closed first, and how.
type closeCodes struct {
	mu    sync.Mutex
	codes []int
}

func (c *closeCodes) end(err error) {
	code := -1
	if ce, ok := errors.AsType[*websocket.CloseError](err); ok {
		code = ce.Code
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.codes = append(c.codes, code)
}

func (c *closeCodes) ended() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.codes)
}

func (r *recorder) open() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conns = append(r.conns, []int{})
	return len(r.conns) - 1
}

func (r *recorder) add(conn int, p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, err := strconv.Atoi(string(p))
	if err != nil {
		r.bad = append(r.bad, string(p))
		return
	}
	r.conns[conn] = append(r.conns[conn], v)
}

func (r *recorder) snapshot() [][]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]int, len(r.conns))
	for i, c := range r.conns {
		out[i] = slices.Clone(c)
	}
	return out
}

// last returns the number each connection read last.
func (r *recorder) last() []int {
	var out []int
	for _, c := range r.snapshot() {
		if len(c) > 0 {
			out = append(out, c[len(c)-1])
		}
	}
	return out
}

func total(conns [][]int) int {
	n := 0
	for _, c := range conns {
		n += len(c)
	}
	return n
}

// seq returns from..to.
func seq(from, to int) []int {
	out := []int{}
	for v := from; v <= to; v++ {
		out = append(out, v)
	}
	return out
}

func first(s []int) int {
	if len(s) == 0 {
		return 0
	}
	return s[0]
}

func lastOf(s []int) int {
	if len(s) == 0 {
		return 0
	}
	return s[len(s)-1]
}

// newStreamFleet is newFleet with an app that greets as newFleet's does,
// then only reads: it records every message into the node's recorder and
// keeps reading until the client's close arrives, whatever the middleware
// wrote meanwhile (newFleet's echo app stops at its first write after the
// move's close frame, which would lose what the client still sends).
func newStreamFleet(t *testing.T, origin string, cue bool) (*fleet, map[*node]*recorder) {
	t.Helper()
	rec := map[*node]*recorder{}
	f := startFleet(t, origin, wsredirect.ModeAuto, func(n *node) http.Handler {
		rec[n] = &recorder{}
		return n.recordingApp(origin, rec[n], cue)
	})
	return f, rec
}

// recordingApp is the nodes' app; cue: it tracks connections through
// GorillaConn with the send func it writes through (one lock), so moves
// are cued; else with none, so they are close frames.
func (n *node) recordingApp(origin string, rec *recorder, cue bool) http.Handler {
	up := websocket.Upgrader{
		Subprotocols: echo,
		CheckOrigin:  func(r *http.Request) bool { return r.Header.Get("Origin") == origin },
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.reached.Add(1)
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		conn := rec.open()
		var wmu sync.Mutex
		write := func(text string) error {
			wmu.Lock()
			defer wmu.Unlock()
			return c.WriteMessage(websocket.TextMessage, []byte(text))
		}
		hello, _ := json.Marshal(greeting{Node: n.name, Query: r.URL.RawQuery})
		if write(string(hello)) != nil {
			return
		}
		if !cue {
			write = nil
		}
		defer n.mw.Track(r.URL.Query().Get("room"), wsredirect.GorillaConn(c, write))()
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				rec.end(err)
				return
			}
			rec.add(conn, p)
		}
	})
}

// describeGaps says what is wrong with the stream the two nodes got.
func describeGaps(want, old, moved []int) string {
	seen := map[int]int{}
	for _, v := range slices.Concat(old, moved) {
		seen[v]++
	}
	var missing, twice []int
	for _, v := range want {
		switch seen[v] {
		case 0:
			missing = append(missing, v)
		case 1:
		default:
			twice = append(twice, v)
		}
	}
	return fmt.Sprintf("missing %v, more than once %v; the old node got %d (%d..%d), the new node %d (%d..%d)",
		missing, twice, len(old), first(old), lastOf(old), len(moved), first(moved), lastOf(moved))
}
