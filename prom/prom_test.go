package prom_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/prom"
)

// chatApp is the app behind the middleware: it upgrades, registers
// connections that name a room with Track, greets them once tracked, and
// reads until the connection ends. A connection asked to ?flood writes to a
// client that does not read, so its writer is held when a drain comes.
type chatApp struct {
	mw      *wsredirect.Middleware
	flooded atomic.Int64 // bytes the flood writers have written
}

func (a *chatApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{}
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	q := r.URL.Query()
	if room := q.Get("room"); room != "" {
		defer a.mw.Track(room, wsredirect.GorillaConn(c, nil))()
	}
	if c.WriteMessage(websocket.TextMessage, []byte("hello")) != nil {
		return
	}
	if q.Has("flood") {
		go func() {
			big := make([]byte, 1<<20)
			for c.WriteMessage(websocket.BinaryMessage, big) == nil {
				a.flooded.Add(int64(len(big)))
			}
		}()
	}
	for {
		if _, _, err := c.NextReader(); err != nil {
			return
		}
	}
}

// node is one fleet member's server: its middleware mounted on /, and on
// /metrics a registry holding its Collector.
type node struct {
	srv  *httptest.Server
	mw   *wsredirect.Middleware
	app  *chatApp
	base string // ws://127.0.0.1:port
}

func (n *node) metricsURL() string { return n.srv.URL + "/metrics" }

// startNode starts a server at an address known before its middleware is
// built, so the address can be its Self.
func startNode(t *testing.T, build func(self string, m *prom.Collector) wsredirect.Options) *node {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	n := &node{srv: srv, app: &chatApp{}, base: "ws://" + srv.Listener.Addr().String()}
	m := prom.New()
	opts := build(n.base, m)
	n.mw = wsredirect.MustNew(opts)
	n.app.mw = n.mw
	m.Watch(n.mw)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", n.mw.Handler(n.app))
	srv.Config.Handler = mux
	srv.Start()
	t.Cleanup(srv.Close)
	return n
}

// dialer dials one handshake and follows nothing.
var dialer = websocket.Dialer{HandshakeTimeout: 10 * time.Second}

type answer struct {
	status   int    // the handshake's status when it failed
	location string // its Location
	close    int    // the close code when the upgrade was accepted and closed at once
	conn     *websocket.Conn
}

// dial makes one handshake to base+path. host, when set, is the Host header;
// origin, when set, makes it a browser's handshake. A redirected or refused
// handshake's status, or the close code of a close-frame answer, is in the
// answer; a handshake the app took returns its connection after the app's
// greeting (so it is tracked), closed when the test ends.
func dial(t *testing.T, base, path, host, origin string) answer {
	t.Helper()
	h := http.Header{}
	if host != "" {
		h.Set("Host", host)
	}
	if origin != "" {
		h.Set("Origin", origin)
	}
	c, resp, err := dialer.Dial(base+path, h)
	if err != nil {
		require.ErrorIs(t, err, websocket.ErrBadHandshake, "dial %s", path)
		return answer{status: resp.StatusCode, location: resp.Header.Get("Location")}
	}
	t.Cleanup(func() { c.Close() })
	_, msg, err := c.ReadMessage()
	if err == nil && string(msg) == "hello" {
		return answer{conn: c}
	}
	// A close-frame answer: for a redirect a text message first, then the
	// close.
	for err == nil {
		_, _, err = c.ReadMessage()
	}
	var ce *websocket.CloseError
	require.ErrorAs(t, err, &ce, "dial %s", path)
	return answer{close: ce.Code}
}

// TestScrapeAfterRealHandshakes drives real handshakes, redirected, passed
// and refused, by status and by close frame, through a mounted middleware
// and a live drain, then reads the counts back from a real /metrics
// endpoint.
func TestScrapeAfterRealHandshakes(t *testing.T) {
	// b and c are the other members: plain servers that upgrade.
	b := httptest.NewServer(&chatApp{})
	t.Cleanup(b.Close)
	c := httptest.NewServer(&chatApp{})
	t.Cleanup(c.Close)
	bURL, cURL := "ws"+strings.TrimPrefix(b.URL, "http"), "ws"+strings.TrimPrefix(c.URL, "http")

	a := startNode(t, func(self string, m *prom.Collector) wsredirect.Options {
		return wsredirect.Options{
			Self:       self,
			Members:    []wsredirect.Member{{ID: "a", URL: self}, {ID: "b", URL: bURL}, {ID: "c", URL: cURL}},
			OnDecision: m.OnDecision,
			Rules: []wsredirect.Rule{
				wsredirect.Host(bURL, "old.example.com"),
				wsredirect.Path(cURL, "/legacy/*"),
				wsredirect.NewRule("maintenance", func(r *http.Request, _ *wsredirect.State) wsredirect.Decision {
					if r.URL.Path == "/maint" {
						return wsredirect.Decision{Action: wsredirect.Refuse, RetryAfter: 3 * time.Second}
					}
					return wsredirect.Decision{}
				}),
				wsredirect.NewRule("quota", func(r *http.Request, _ *wsredirect.State) wsredirect.Decision {
					if r.URL.Path == "/quota" {
						return wsredirect.Decision{Action: wsredirect.Refuse, Status: http.StatusTooManyRequests}
					}
					return wsredirect.Decision{}
				}),
				wsredirect.NewRule("buggy", func(r *http.Request, _ *wsredirect.State) wsredirect.Decision {
					if r.URL.Path == "/bug" {
						return wsredirect.Decision{Action: wsredirect.Redirect} // no Target: a rule bug
					}
					return wsredirect.Decision{}
				}),
				wsredirect.Shard(wsredirect.QueryKey("room")),
			},
		}
	})
	aHost := strings.TrimPrefix(a.base, "ws://")
	browser := "http://" + aHost // a page on a's own origin

	want := map[string]float64{}
	count := func(series string) { want[series]++ }
	const (
		redirected = "wsredirect_upgrades_redirected_total"
		refused    = "wsredirect_upgrades_refused_total"
		passed     = "wsredirect_upgrades_passed_total"
	)

	// Host: three clients by status, one browser by close frame (its Origin
	// is the old host's, as a page there would send).
	for range 3 {
		ans := dial(t, a.base, "/chat", "old.example.com", "")
		require.Equal(t, http.StatusTemporaryRedirect, ans.status)
		require.Equal(t, bURL+"/chat", ans.location)
		count(redirected + `{answer="status",member="",rule="host"}`)
	}
	require.Equal(t, 4307, dial(t, a.base, "/chat", "old.example.com", "http://old.example.com").close)
	count(redirected + `{answer="close",member="",rule="host"}`)

	// Path.
	for range 2 {
		require.Equal(t, http.StatusTemporaryRedirect, dial(t, a.base, "/legacy/rooms/1?token=secret", "", "").status)
		count(redirected + `{answer="status",member="",rule="path"}`)
	}
	require.Equal(t, 4307, dial(t, a.base, "/legacy/rooms/2", "", browser).close)
	count(redirected + `{answer="close",member="",rule="path"}`)

	// Refusals: a 503 reaches browsers as close code 4503; other codes stay
	// statuses, a rule's bug (500) included.
	for range 2 {
		require.Equal(t, http.StatusServiceUnavailable, dial(t, a.base, "/maint", "", "").status)
		count(refused + `{answer="status",code="503",rule="maintenance"}`)
	}
	require.Equal(t, 4503, dial(t, a.base, "/maint", "", browser).close)
	count(refused + `{answer="close",code="503",rule="maintenance"}`)
	require.Equal(t, http.StatusTooManyRequests, dial(t, a.base, "/quota", "", "").status)
	require.Equal(t, http.StatusTooManyRequests, dial(t, a.base, "/quota", "", browser).status)
	count(refused + `{answer="status",code="429",rule="quota"}`)
	count(refused + `{answer="status",code="429",rule="quota"}`)
	require.Equal(t, http.StatusInternalServerError, dial(t, a.base, "/bug", "", browser).status)
	count(refused + `{answer="status",code="500",rule="buggy"}`)

	// No rule decides: the app takes it.
	for range 2 {
		require.NotNil(t, dial(t, a.base, "/lobby", "", "").conn)
		count(passed + `{rule=""}`)
	}

	// Shard: keys a owns are served here and tracked; the rest go to their
	// owner, by status or, for browsers, by close frame.
	st := a.mw.State()
	var own []string // keys served by a
	var live []*websocket.Conn
	for i := range 30 {
		key := fmt.Sprintf("room-%d", i)
		owner, ok := st.Owner(key)
		require.True(t, ok)
		if owner.ID == "a" {
			ans := dial(t, a.base, "/rooms?room="+key, "", "")
			require.NotNil(t, ans.conn, "key %s", key)
			own = append(own, key)
			live = append(live, ans.conn)
			count(passed + `{rule="shard"}`)
			continue
		}
		if i%4 == 0 {
			require.Equal(t, 4307, dial(t, a.base, "/rooms?room="+key, "", browser).close)
			count(redirected + `{answer="close",member="` + owner.ID + `",rule="shard"}`)
			continue
		}
		ans := dial(t, a.base, "/rooms?room="+key, "", "")
		require.Equal(t, http.StatusTemporaryRedirect, ans.status)
		require.Equal(t, owner.URL+"/rooms?room="+key, ans.location)
		count(redirected + `{answer="status",member="` + owner.ID + `",rule="shard"}`)
	}
	require.GreaterOrEqual(t, len(own), 2, "a owns too few of the keys for the drain below")

	// One more of a's rooms, whose client stops reading while the app
	// floods it: its writer stays held, so the drain has to cut it.
	floodKey := own[0]
	flood := dial(t, a.base, "/rooms?room="+floodKey+"&flood", "", "")
	require.NotNil(t, flood.conn)
	count(passed + `{rule="shard"}`)
	waitStalled(t, &a.app.flooded)

	total := 0.0
	for _, v := range want {
		total += v
	}
	_, got := scrape(t, a.metricsURL())
	assert.Equal(t, want, decisions(got), "decision counters")
	assert.Equal(t, total, got["wsredirect_upgrades_total"])
	assert.Equal(t, total, got["wsredirect_decision_duration_seconds_count"])
	assert.Equal(t, total, got[`wsredirect_decision_duration_seconds_bucket{le="+Inf"}`])
	assert.Positive(t, got["wsredirect_decision_duration_seconds_sum"])
	assert.Equal(t, map[string]float64{
		"wsredirect_members":                 3,
		"wsredirect_members_draining":        0,
		"wsredirect_self_draining":           0,
		"wsredirect_self_drain_ratio":        0,
		"wsredirect_tracked_connections":     float64(len(live) + 1),
		"wsredirect_connections_moved_total": 0,
		"wsredirect_connections_cut_total":   0,
	}, fleetSeries(got))

	// a drains at once: the middleware moves every tracked connection by
	// itself, the flooded one by cutting it.
	require.NoError(t, a.mw.DrainMember("a", time.Now(), 0))
	require.Eventually(t, func() bool {
		moved, cut := a.mw.Moves()
		return moved+cut == uint64(len(live)+1)
	}, 10*time.Second, 10*time.Millisecond)
	moved, cut := a.mw.Moves()
	require.Equal(t, uint64(len(live)), moved)
	require.Equal(t, uint64(1), cut)
	var err error
	for _, c := range live {
		var ce *websocket.CloseError
		for err = nil; err == nil; _, _, err = c.ReadMessage() {
		}
		require.ErrorAs(t, err, &ce)
		require.Equal(t, 4307, ce.Code)
	}
	require.Eventually(t, func() bool { return a.mw.Tracked() == 0 }, 10*time.Second, 10*time.Millisecond)

	// New clients of a's rooms now go to their successors.
	for _, key := range own {
		owner, _ := a.mw.State().Owner(key)
		require.NotEqual(t, "a", owner.ID)
		require.Equal(t, http.StatusTemporaryRedirect, dial(t, a.base, "/rooms?room="+key, "", "").status)
		count(redirected + `{answer="status",member="` + owner.ID + `",rule="shard"}`)
	}

	text, got := scrape(t, a.metricsURL())
	assert.Equal(t, want, decisions(got), "decision counters")
	assert.Equal(t, map[string]float64{
		"wsredirect_members":                 3,
		"wsredirect_members_draining":        1,
		"wsredirect_self_draining":           1,
		"wsredirect_self_drain_ratio":        1,
		"wsredirect_tracked_connections":     0,
		"wsredirect_connections_moved_total": float64(len(live)),
		"wsredirect_connections_cut_total":   1,
	}, fleetSeries(got))

	// Nothing a client sent is a label value: not its key, path, host or
	// query.
	for _, secret := range []string{"room-", "secret", "legacy/", "old.example.com", "lobby", "127.0.0.1"} {
		assert.NotContains(t, text, secret)
	}
	if testing.Verbose() {
		t.Logf("scrape after the drain:\n%s", text)
	}

	t.Run("promtool", func(t *testing.T) { promtoolCheck(t, text) })
}

// decisions returns the per-label-set decision counters.
func decisions(series map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for _, p := range []string{"wsredirect_upgrades_passed_", "wsredirect_upgrades_redirected_", "wsredirect_upgrades_refused_"} {
		for k, v := range only(series, p) {
			out[k] = v
		}
	}
	return out
}

// fleetSeries returns the series read from the Middleware at scrape time.
func fleetSeries(series map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for _, p := range []string{"wsredirect_members", "wsredirect_self_", "wsredirect_tracked_", "wsredirect_connections_"} {
		for k, v := range only(series, p) {
			out[k] = v
		}
	}
	return out
}

// waitStalled waits until a flood writer has stopped making progress: its
// client's receive window and the kernel's buffers are full, and its write
// holds the connection's writer.
func waitStalled(t *testing.T, written *atomic.Int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	last, since := written.Load(), time.Now()
	for time.Since(since) < 300*time.Millisecond {
		require.True(t, time.Now().Before(deadline), "the flood writer never stalled (%d bytes written)", last)
		time.Sleep(20 * time.Millisecond)
		if n := written.Load(); n != last || n == 0 {
			last, since = n, time.Now()
		}
	}
}

// TestCardinalityBounded sends 10,000 upgrades with distinct keys, paths,
// hosts and queries, redirected, passed and refused, and checks that the
// series are the same few as after the first hundred.
func TestCardinalityBounded(t *testing.T) {
	m := prom.New()
	members := []wsredirect.Member{
		{ID: "a", URL: "ws://a.example.net"}, {ID: "b", URL: "ws://b.example.net"}, {ID: "c", URL: "ws://c.example.net"},
	}
	mw := wsredirect.MustNew(wsredirect.Options{
		Self:       "ws://a.example.net",
		Members:    members,
		Mode:       wsredirect.ModeStatus,
		OnDecision: m.OnDecision,
		Rules: []wsredirect.Rule{
			wsredirect.Host("ws://eu.example.net", "*.eu.example.com"),
			wsredirect.Path("ws://legacy.example.net", "/legacy/*"),
			wsredirect.NewRule("shed", func(r *http.Request, _ *wsredirect.State) wsredirect.Decision {
				if strings.HasPrefix(r.URL.Path, "/busy/") {
					return wsredirect.Decision{Action: wsredirect.Refuse}
				}
				return wsredirect.Decision{}
			}),
			wsredirect.Shard(wsredirect.QueryKey("room")),
		},
	})
	m.Watch(mw)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	h := mw.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))

	seriesAfter := func(n int) (count int, values map[string]bool) {
		fams, err := reg.Gather()
		require.NoError(t, err)
		values = map[string]bool{}
		for _, f := range fams {
			count += len(f.GetMetric())
			for _, mt := range f.GetMetric() {
				for _, l := range mt.GetLabel() {
					values[l.GetName()+"="+l.GetValue()] = true
				}
			}
		}
		return count, values
	}
	send := func(from, to int) {
		for i := from; i < to; i++ {
			var target string
			switch i % 4 {
			case 0:
				target = fmt.Sprintf("http://tenant-%d.eu.example.com/chat?t=%d", i, i)
			case 1:
				target = fmt.Sprintf("http://chat.example.com/legacy/rooms/%d?t=%d", i, i)
			case 2:
				target = fmt.Sprintf("http://chat.example.com/busy/%d", i)
			default:
				target = fmt.Sprintf("http://chat.example.com/rooms?room=key-%d&t=%d", i, i)
			}
			h.ServeHTTP(httptest.NewRecorder(), upgradeTo(target))
		}
	}
	send(0, 100)
	early, _ := seriesAfter(100)
	send(100, 10_000)
	late, values := seriesAfter(10_000)
	assert.Equal(t, early, late, "series after 100 and after 10,000 distinct upgrades")
	// upgrades, 4 redirect series (host, path, shard to b, shard to c), one
	// refusal, one pass (shard to a), 7 fleet series, and the histogram.
	assert.Equal(t, 1+4+1+1+7+1, late)
	for v := range values {
		for _, client := range []string{"key-", "tenant-", "rooms", "busy", "example.com"} {
			assert.NotContains(t, v, client, "label %s", v)
		}
	}
	assert.Equal(t, 6, prom.Cached(m), "label sets resolved")
}

// TestWithoutWatch: decisions are counted before Watch, and the fleet's
// metrics appear once a Middleware is watched.
func TestWithoutWatch(t *testing.T) {
	m := prom.New()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	m.OnDecision(nil, wsredirect.Decision{Action: wsredirect.Redirect, Rule: "r", Member: "m1", Close: true, Elapsed: 300 * time.Nanosecond})
	m.OnDecision(nil, wsredirect.Decision{Action: wsredirect.Refuse, Status: 503, Rule: "r", Elapsed: 3 * time.Microsecond})
	m.OnDecision(nil, wsredirect.Decision{Elapsed: time.Microsecond})
	fams, err := reg.Gather()
	require.NoError(t, err)
	got := flatten(mapOf(fams))
	assert.Equal(t, map[string]float64{
		`wsredirect_upgrades_redirected_total{answer="close",member="m1",rule="r"}`: 1,
		`wsredirect_upgrades_refused_total{answer="status",code="503",rule="r"}`:    1,
		`wsredirect_upgrades_passed_total{rule=""}`:                                 1,
	}, decisions(got))
	assert.Equal(t, 3.0, got["wsredirect_upgrades_total"])
	assert.Equal(t, 0.0, got[`wsredirect_decision_duration_seconds_bucket{le="2.5e-07"}`])
	assert.Equal(t, 1.0, got[`wsredirect_decision_duration_seconds_bucket{le="5e-07"}`])
	assert.Equal(t, 2.0, got[`wsredirect_decision_duration_seconds_bucket{le="1e-06"}`])
	assert.Equal(t, 3.0, got[`wsredirect_decision_duration_seconds_bucket{le="5e-06"}`])
	assert.Empty(t, fleetSeries(got))

	mw := wsredirect.MustNew(wsredirect.Options{Rules: []wsredirect.Rule{wsredirect.Path("ws://b.example.net", "/x")}})
	m.Watch(mw)
	fams, err = reg.Gather()
	require.NoError(t, err)
	assert.Equal(t, map[string]float64{
		"wsredirect_members":                 0,
		"wsredirect_members_draining":        0,
		"wsredirect_self_draining":           0,
		"wsredirect_self_drain_ratio":        0,
		"wsredirect_tracked_connections":     0,
		"wsredirect_connections_moved_total": 0,
		"wsredirect_connections_cut_total":   0,
	}, fleetSeries(flatten(mapOf(fams))))
	m.Watch(nil)
	fams, err = reg.Gather()
	require.NoError(t, err)
	assert.Empty(t, fleetSeries(flatten(mapOf(fams))))
}

// TestInvalidLabelsNeverPanic (regression: a member ID that was not UTF-8
// made every upgrade for its rooms panic inside the collector): label
// values are made valid and bounded.
func TestInvalidLabelsNeverPanic(t *testing.T) {
	m := prom.New()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	assert.NotPanics(t, func() {
		m.OnDecision(nil, wsredirect.Decision{Action: wsredirect.Redirect, Rule: "r\xff", Member: "evil\xff\xfe", Close: true})
		m.OnDecision(nil, wsredirect.Decision{Action: wsredirect.Pass, Rule: strings.Repeat("x", 1<<20)})
	})
	fams, err := reg.Gather()
	require.NoError(t, err)
	got := decisions(flatten(mapOf(fams)))
	assert.Equal(t, 1.0, got["wsredirect_upgrades_redirected_total{answer=\"close\",member=\"evil\uFFFD\",rule=\"r\uFFFD\"}"], "%v", got)
	assert.Equal(t, 1.0, got[`wsredirect_upgrades_passed_total{rule="`+strings.Repeat("x", 128)+`"}`])
}

func mapOf[F interface{ GetName() string }](fams []F) map[string]F {
	out := map[string]F{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

// TestConcurrentDecisionsAndScrapes counts decisions of new and known label
// sets from many goroutines while scrapes run, for the race detector and
// for exact totals.
func TestConcurrentDecisionsAndScrapes(t *testing.T) {
	m := prom.New()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	const goroutines, each = 8, 2000
	stop := make(chan struct{})
	scraped := make(chan error)
	go func() {
		var err error
		for {
			select {
			case <-stop:
				scraped <- err
				return
			default:
				if _, e := reg.Gather(); e != nil {
					err = errors.Join(err, e)
				}
			}
		}
	}()
	done := make(chan struct{})
	for g := range goroutines {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range each {
				m.OnDecision(nil, wsredirect.Decision{
					Action: wsredirect.Redirect, Rule: "shard", Member: fmt.Sprint("m", (i+g)%25), Close: i%2 == 0,
				})
			}
		}()
	}
	for range goroutines {
		<-done
	}
	close(stop)
	require.NoError(t, <-scraped)
	fams, err := reg.Gather()
	require.NoError(t, err)
	got := only(flatten(mapOf(fams)), "wsredirect_upgrades_redirected_total")
	assert.Len(t, got, 50)
	sum := 0.0
	for _, v := range got {
		sum += v
	}
	assert.Equal(t, float64(goroutines*each), sum)
	assert.Equal(t, 50, prom.Cached(m))
}

// TestFreshStrings: label strings with the same bytes in new storage each
// time, as a member list rebuilt from a control plane hands out, count as
// the same series, and the fast map stays bounded.
func TestFreshStrings(t *testing.T) {
	m := prom.New()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	const n = 5000
	for i := range n {
		m.OnDecision(nil, wsredirect.Decision{
			Action: wsredirect.Redirect, Rule: strings.Clone("shard"), Member: strings.Clone(fmt.Sprint("m", i%5)),
		})
	}
	fams, err := reg.Gather()
	require.NoError(t, err)
	got := decisions(flatten(mapOf(fams)))
	want := map[string]float64{}
	for i := range 5 {
		want[fmt.Sprintf(`wsredirect_upgrades_redirected_total{answer="status",member="m%d",rule="shard"}`, i)] = n / 5
	}
	assert.Equal(t, want, got)
	assert.Equal(t, 5, prom.Cached(m))
	assert.LessOrEqual(t, prom.FastLen(m), 1024)
}
