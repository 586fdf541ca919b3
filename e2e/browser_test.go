package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsredirect/wsredirect/internal/testtool"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/ring"
	"github.com/wsredirect/wsredirect/wire"
)

// Browser tests: headless Chromium loads a page (testdata/page.html) that
// imports the helper from ScriptHandler and dials a fleet of httptest
// nodes. Everything listens on 127.0.0.1. The page records every event its
// socket dispatches in window.log, which the tests poll.

// wait bounds every poll of the page: generous, for a loaded 2-core machine.
const wait = 20 * time.Second

// echo is the subprotocol the nodes' app selects when offered.
var echo = []string{"echo"}

// TestBrowser shares one Chromium between its subtests, each in a tab of
// its own with its own page server and fleet.
func TestBrowser(t *testing.T) {
	browser := startChromium(t)

	t.Run("PlainWebSocketSeesOnly1006For307", func(t *testing.T) {
		page := newPage(t)
		f := newFleet(t, page.origin, wsredirect.ModeStatus)
		entry := f.nodes[0]
		room := f.roomNotOwnedBy(entry)
		owner := f.owner(room)
		tab := openTab(t, browser, page)

		tab.call("plain", entry.url+"/ws?room="+room)
		closed := tab.event("close", 0)

		assert.Equal(t, 1006, closed.Code, "a 3xx is a network error to script")
		assert.Empty(t, closed.Reason)
		assert.Equal(t, []string{"error", "close"}, tab.types())
		assert.NotContains(t, tab.logJSON(), strings.TrimPrefix(owner.url, "ws://"), "the Location must not be visible")
		assert.EqualValues(t, 1, entry.redirects.Load(), "the node did answer with a redirect")
		f.assertAppsReached(t, 0)
	})

	// With an app protocol the helper offers wsredirect.v1 too and knows a
	// redirect at open; without one it must not (Chromium fails a handshake
	// whose offered protocols the server ignores) and waits settleMs.
	for _, tc := range []struct {
		name      string
		protocols []string
		options   map[string]any
	}{
		{"HelperFollowsCloseCodeToOwner/AppProtocol", echo, map[string]any{}},
		// A settle longer than the default keeps a loaded machine from
		// showing the stub's open, which the helper would then take for a
		// live move.
		{"HelperFollowsCloseCodeToOwner/NoProtocol", []string{}, map[string]any{"settleMs": 250}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page := newPage(t)
			f := newFleet(t, page.origin, wsredirect.ModeAuto)
			entry := f.nodes[0]
			room := f.roomNotOwnedBy(entry)
			owner := f.owner(room)
			path := "/ws?room=" + room
			tab := openTab(t, browser, page)

			tab.call("helper", entry.url+path, tc.protocols, tc.options)
			hello := tab.greeting(0)
			tab.call("send", "ping")
			echo := tab.event("message", 1)

			assert.Equal(t, owner.name, hello.Node)
			assert.Equal(t, "room="+room, hello.Query)
			assert.Equal(t, "ping", echo.Data)
			assert.Equal(t, []string{"redirect", "open", "message", "message"}, tab.types(), "the redirect stub's open is not the app's")
			redirect := tab.event("redirect", 0)
			assert.Equal(t, redirectDetail{From: entry.url + path, To: owner.url + path, Code: wire.CloseRedirect}, *redirect.Detail)
			open := tab.event("open", 0)
			assert.Equal(t, owner.url+path, open.URL)
			assert.Equal(t, strings.Join(tc.protocols, ""), open.Protocol, "the app's protocol")
			assert.Equal(t, []string{owner.url + path}, open.Hops)
			f.assertAppsReached(t, 1)
		})
	}

	t.Run("HelperFollowsTargetTooLongForCloseReason", func(t *testing.T) {
		page := newPage(t)
		f := newFleet(t, page.origin, wsredirect.ModeAuto)
		entry := f.nodes[0]
		room := f.roomNotOwnedBy(entry)
		owner := f.owner(room)
		query := "room=" + room + "&token=" + strings.Repeat("t0K", 100)
		target := owner.url + "/ws?" + query
		require.Greater(t, len(target), wire.MaxReason)
		tab := openTab(t, browser, page)

		tab.call("helper", entry.url+"/ws?"+query, echo, map[string]any{})
		hello := tab.greeting(0)

		assert.Equal(t, owner.name, hello.Node)
		assert.Equal(t, query, hello.Query, "the owner sees the whole query")
		assert.Equal(t, target, tab.event("redirect", 0).Detail.To)
		assert.Equal(t, []string{"redirect", "open", "message"}, tab.types(), "the out-of-band target is not an app message")
	})

	t.Run("LiveDrainMovesOpenPageToNextOwner", func(t *testing.T) {
		page := newPage(t)
		f := newFleet(t, page.origin, wsredirect.ModeAuto)
		a := f.nodes[0]
		room := f.roomOwnedBy(a)
		next := f.nodeAt(f.ring.OwnerWithout(ring.Hash(room), f.index(a)))
		path := "/ws?room=" + room
		tab := openTab(t, browser, page)

		tab.call("helper", a.url+path, echo, map[string]any{"moveJitterMs": 100})
		require.Equal(t, a.name, tab.greeting(0).Node)
		require.Eventually(t, func() bool { return a.mw.Tracked() == 1 }, wait, 10*time.Millisecond)

		// Every node is told a drains, as a control plane would: peers
		// that still counted a as the key's owner would send the client
		// straight back to it. a's middleware moves its tracked
		// connection by itself.
		f.drain(a)
		requireMoved(t, a, 1)

		hello := tab.greeting(1)
		assert.Equal(t, next.name, hello.Node, "the key's owner once a is gone")
		assert.Equal(t, "room="+room, hello.Query)
		redirect := tab.event("redirect", 0)
		assert.Equal(t, redirectDetail{From: a.url + path, To: next.url + path, Code: wire.CloseRedirect, Live: true}, *redirect.Detail)
		assert.Equal(t, []string{"open", "message", "redirect", "open", "message"}, tab.types(), "the app sees no close")
		assert.Equal(t, next.url+path, tab.event("open", 1).URL)
		require.Eventually(t, func() bool { return a.mw.Tracked() == 0 }, wait, 10*time.Millisecond, "a's app saw the close")
	})

	t.Run("DisallowedOriginGetsNoConnection", func(t *testing.T) {
		page := newPage(t)
		elsewhere := newPage(t) // another port: another origin
		f := newFleet(t, page.origin, wsredirect.ModeAuto)
		entry := f.nodes[0]
		room := f.roomNotOwnedBy(entry)
		tab := openTab(t, browser, elsewhere)

		tab.call("helper", entry.url+"/ws?room="+room, echo, map[string]any{})
		closed := tab.event("close", 0)

		assert.Equal(t, 1006, closed.Code)
		assert.Equal(t, []string{"error", "close"}, tab.types(), "no redirect is followed")
		assert.EqualValues(t, 1, entry.refusals.Load(), "the middleware refused the upgrade for its Origin (403)")
		assert.Zero(t, entry.redirects.Load(), "no redirect was decided")
		f.assertAppsReached(t, 0)
	})

	t.Run("ResolveConnectsInOneDial", func(t *testing.T) {
		page := newPage(t)
		f := newFleet(t, page.origin, wsredirect.ModeAuto)
		entry := f.nodes[0]
		room := f.roomNotOwnedBy(entry)
		owner := f.owner(room)
		// Any node answers for the fleet; the page asks its own origin, as
		// ResolveHandler sends no CORS headers.
		page.mux.Handle("/resolve/", http.StripPrefix("/resolve", entry.mw.ResolveHandler()))
		tab := openTab(t, browser, page)

		tab.call("helper", entry.url+"/ws?room="+room, echo, map[string]any{"resolve": "/resolve"})
		hello := tab.greeting(0)

		assert.Equal(t, owner.name, hello.Node)
		open := tab.event("open", 0)
		assert.Equal(t, owner.url+"/ws?room="+room, open.URL)
		assert.Empty(t, open.Hops)
		assert.Equal(t, []string{"open", "message"}, tab.types())
		assert.Zero(t, entry.upgrades.Load(), "the entry node was never dialled")
	})

	t.Run("RetryAfter4503ReconnectsToFirstURL", func(t *testing.T) {
		page := newPage(t)
		f := newFleet(t, page.origin, wsredirect.ModeAuto)
		only := f.nodes[0]
		require.NoError(t, only.mw.SetMembers(wsredirect.Member{ID: only.name, URL: only.url}))
		require.NoError(t, only.mw.DrainMember(only.name, time.Now(), 0)) // no member left: 503, sent as 4503 "wsr1 retry=1"
		tab := openTab(t, browser, page)

		tab.call("helper", only.url+"/ws?room=r", echo, map[string]any{"retryJitterMs": 200})
		require.Eventually(t, func() bool { return only.refusals.Load() > 0 }, wait, 5*time.Millisecond)
		require.NoError(t, only.mw.DrainMember(only.name, time.Time{}, 0))
		hello := tab.greeting(0)

		assert.Equal(t, only.name, hello.Node)
		assert.Equal(t, []string{"open", "message"}, tab.types(), "the retry is invisible to the app")
		assert.Equal(t, only.url+"/ws?room=r", tab.event("open", 0).URL)
	})
}

// startChromium starts the browser the subtests open tabs in, or skips.
func startChromium(t *testing.T) context.Context {
	t.Helper()
	path, err := findChromium()
	if err != nil {
		testtool.Missing(t, err.Error())
	}
	var output testtool.Buffer
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// Containers often have a tiny /dev/shm, which crashes tabs.
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.CombinedOutput(&output),
	)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	// The context of the first Run owns the browser, so it has no timeout;
	// the wait for it is bounded here instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(browser) }()
	select {
	case err := <-started:
		require.NoError(t, err, "starting %s:\n%s", path, output.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not start in 30s:\n%s", path, output.String())
	}
	return browser
}

// page is a server on its own origin that serves the test page and the helper.
type page struct {
	url, origin string
	mux         *http.ServeMux
}

func newPage(t *testing.T) *page {
	t.Helper()
	html, err := os.ReadFile(filepath.Join("testdata", "page.html"))
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("GET /wsredirect.js", wsredirect.ScriptHandler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(html)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &page{url: srv.URL + "/", origin: srv.URL, mux: mux}
}

// node is one member of a fleet: the middleware in front of an app that
// greets with its name and the query it was dialled with, then echoes.
type node struct {
	name, url string // url is the member URL, ws://127.0.0.1:port
	mw        *wsredirect.Middleware

	upgrades, redirects, refusals atomic.Int32 // decisions of the middleware
	reached                       atomic.Int32 // requests that got to the app
}

type fleet struct {
	nodes   []*node
	members []wsredirect.Member
	ring    *ring.Ring
}

// newFleet starts three nodes that shard by the query parameter room and
// accept pages from origin; their app greets, then echoes.
func newFleet(t *testing.T, origin string, mode wsredirect.Mode) *fleet {
	t.Helper()
	return startFleet(t, origin, mode, func(n *node) http.Handler { return n.app(origin) })
}

// startFleet is newFleet with each node's app made by app.
func startFleet(t *testing.T, origin string, mode wsredirect.Mode, app func(*node) http.Handler) *fleet {
	t.Helper()
	f := &fleet{}
	var servers []*httptest.Server
	for _, name := range []string{"a", "b", "c"} {
		srv := httptest.NewUnstartedServer(nil)
		servers = append(servers, srv)
		n := &node{name: name, url: "ws://" + srv.Listener.Addr().String()}
		f.nodes = append(f.nodes, n)
		f.members = append(f.members, wsredirect.Member{ID: name, URL: n.url})
	}
	for i, n := range f.nodes {
		n.mw = wsredirect.MustNew(wsredirect.Options{
			Self:    n.url,
			Members: f.members,
			Rules:   []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))},
			Origins: []string{origin},
			Mode:    mode,
			// Short, so the 4503 test waits one second, not five.
			DrainRetryAfter: time.Second,
			OnDecision: func(r *http.Request, d wsredirect.Decision) {
				n.upgrades.Add(1)
				switch d.Action {
				case wsredirect.Redirect:
					n.redirects.Add(1)
				case wsredirect.Refuse:
					n.refusals.Add(1)
				}
			},
		})
		servers[i].Config.Handler = n.mw.Handler(app(n))
		servers[i].Start()
		t.Cleanup(servers[i].Close)
	}
	nodes := make([]ring.Node, len(f.members))
	for i, m := range f.members {
		nodes[i] = ring.Node{ID: m.ID, Weight: m.Weight}
	}
	var err error
	f.ring, err = ring.New(nodes)
	require.NoError(t, err)
	return f
}

func (n *node) app(origin string) http.Handler {
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
		// Moved by a close frame: this app writes from its read loop, with
		// no lock a send func could share (see stream_test.go for cues).
		defer n.mw.Track(r.URL.Query().Get("room"), wsredirect.GorillaConn(c, nil))()
		hello, _ := json.Marshal(greeting{Node: n.name, Query: r.URL.RawQuery})
		if c.WriteMessage(websocket.TextMessage, hello) != nil {
			return
		}
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if c.WriteMessage(mt, p) != nil {
				return
			}
		}
	})
}

// index is n's index on the ring, which numbers members by ID.
func (f *fleet) index(n *node) int {
	for i := range f.ring.Len() {
		if f.ring.Node(i).ID == n.name {
			return i
		}
	}
	panic("not a member: " + n.name)
}

func (f *fleet) nodeAt(i int) *node {
	id := f.ring.Node(i).ID
	for _, n := range f.nodes {
		if n.name == id {
			return n
		}
	}
	panic("no node " + id)
}

func (f *fleet) owner(room string) *node { return f.nodeAt(f.ring.Owner(ring.Hash(room))) }

func (f *fleet) roomOwnedBy(n *node) string    { return f.room(func(o *node) bool { return o == n }) }
func (f *fleet) roomNotOwnedBy(n *node) string { return f.room(func(o *node) bool { return o != n }) }

func (f *fleet) room(want func(owner *node) bool) string {
	for i := range 1000 {
		room := fmt.Sprintf("room-%d", i)
		if want(f.owner(room)) {
			return room
		}
	}
	panic("no such room in 1000")
}

// drain marks n as draining, from now, on every node of the fleet.
func (f *fleet) drain(n *node) {
	since := time.Now()
	for _, o := range f.nodes {
		if err := o.mw.DrainMember(n.name, since, 0); err != nil {
			panic(err)
		}
	}
}

// requireMoved waits until n's middleware has moved want tracked
// connections, and checks it cut none.
func requireMoved(t *testing.T, n *node, want uint64) {
	t.Helper()
	require.Eventually(t, func() bool { moved, _ := n.mw.Moves(); return moved >= want }, wait, 10*time.Millisecond,
		"%s moved no connection", n.name)
	moved, cut := n.mw.Moves()
	assert.Equal(t, want, moved, "connections %s moved", n.name)
	assert.Zero(t, cut, "connections %s cut", n.name)
}

func (f *fleet) assertAppsReached(t *testing.T, want int32) {
	t.Helper()
	var got int32
	for _, n := range f.nodes {
		got += n.reached.Load()
	}
	assert.Equal(t, want, got, "requests that reached an app handler")
}

type greeting struct {
	Node  string `json:"node"`
	Query string `json:"query"`
}

type redirectDetail struct {
	From string `json:"from"`
	To   string `json:"to"`
	Code int    `json:"code"`
	Live bool   `json:"live"`
}

// event is one entry of the page's window.log.
type event struct {
	Type     string          `json:"type"`
	URL      string          `json:"url"`
	Protocol string          `json:"protocol"`
	Hops     []string        `json:"hops"`
	Data     string          `json:"data"`
	Code     int             `json:"code"`
	Reason   string          `json:"reason"`
	Detail   *redirectDetail `json:"detail"`
}

// tab is a browser tab showing a test page.
type tab struct {
	t       *testing.T
	ctx     context.Context
	mu      sync.Mutex
	console []string
}

func openTab(t *testing.T, browser context.Context, p *page) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	tb := &tab{t: t, ctx: ctx}
	require.NoError(t, chromedp.Do(ctx)) // opens the tab, bound to ctx
	t.Cleanup(func() {
		if t.Failed() {
			tb.dumpOnFailure()
		}
		cancel()
	})
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			tb.mu.Lock()
			tb.console = append(tb.console, m.String())
			tb.mu.Unlock()
		}
	}()
	tb.do(chromedp.Navigate(p.url))
	tb.poll(`window.ready === true`)
	return tb
}

func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, wait)
	defer cancel()
	require.NoError(tb.t, chromedp.Do(ctx, actions...))
}

// poll waits until expr is truthy in the page and returns its value as JSON.
func (tb *tab) poll(expr string) []byte {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, wait+5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Poll[[]byte](expr,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(wait)))
	require.NoError(tb.t, err, "waiting for %s", expr)
	return v
}

// call calls the page's window[fn] with JSON arguments.
func (tb *tab) call(fn string, args ...any) {
	tb.t.Helper()
	js, err := json.Marshal(args)
	require.NoError(tb.t, err)
	tb.do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`window[%q](...%s)`, fn, js)))
}

// event waits for the k-th event of a type and returns it. It fails at once
// when the socket closes without it: nothing follows a close.
func (tb *tab) event(typ string, k int) event {
	tb.t.Helper()
	raw := tb.poll(fmt.Sprintf(`log.filter((e) => e.type === %q)[%d] || (log.some((e) => e.type === "close") && {type: "closed"})`, typ, k))
	var ev event
	require.NoError(tb.t, json.Unmarshal(raw, &ev))
	require.Equal(tb.t, typ, ev.Type, "%s #%d never came", typ, k)
	return ev
}

// greeting waits for the k-th message and decodes it as a node's greeting.
func (tb *tab) greeting(k int) greeting {
	tb.t.Helper()
	var g greeting
	require.NoError(tb.t, json.Unmarshal([]byte(tb.event("message", k).Data), &g))
	return g
}

// types lists the types of the events recorded so far.
func (tb *tab) types() []string {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, wait)
	defer cancel()
	types, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`log.map((e) => e.type)`))
	require.NoError(tb.t, err)
	return types
}

// logJSON returns the page's event log, or the error reading it.
func (tb *tab) logJSON() string {
	ctx, cancel := context.WithTimeout(tb.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify(window.log)`))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return s
}

// dumpOnFailure logs the page's events and console and saves a screenshot.
func (tb *tab) dumpOnFailure() {
	tb.t.Logf("page log: %s", tb.logJSON())
	tb.mu.Lock()
	tb.t.Logf("console:\n%s", strings.Join(tb.console, "\n"))
	tb.mu.Unlock()
	ctx, cancel := context.WithTimeout(tb.ctx, 5*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.t.Logf("screenshot: %v", err)
		return
	}
	name := filepath.Join(os.TempDir(), strings.NewReplacer("/", "_", " ", "_").Replace(tb.t.Name())+".png")
	if err := os.WriteFile(name, png, 0o644); err != nil {
		tb.t.Logf("screenshot: %v", err)
		return
	}
	tb.t.Logf("screenshot: %s", name)
}
