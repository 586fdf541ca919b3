package prom_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/prom"
)

// discardWriter is a ResponseWriter reused across iterations, as a server
// reuses its per-connection buffers, so figures show the middleware's own
// allocations rather than a recorder's. (The root module's, which is not
// importable from here.)
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header               { return w.h }
func (w *discardWriter) WriteHeader(code int)              { w.code = code }
func (w *discardWriter) Write(p []byte) (int, error)       { return len(p), nil }
func (w *discardWriter) WriteString(s string) (int, error) { return len(s), nil }
func (w *discardWriter) reset()                            { clear(w.h) }

var nop = http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})

// browserishGet is an ordinary request, as the root module's passthrough
// benchmark sends.
func browserishGet() *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://chat.example.com/static/app.js?v=3", nil)
	r.Header.Set("Accept", "*/*")
	r.Header.Set("Accept-Encoding", "gzip, deflate, br")
	r.Header.Set("Accept-Language", "en-GB,en;q=0.9")
	r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0")
	r.Header.Set("Connection", "keep-alive")
	r.Header.Set("Cookie", "session=abc123")
	return r
}

func upgradeTo(target string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	return r
}

func benchServe(b *testing.B, h http.Handler, r *http.Request) {
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		h.ServeHTTP(w, r)
	}
}

// collected builds a Middleware from opts with a registered Collector
// attached, as the package documentation wires it; without is opts as
// they are.
func collected(opts wsredirect.Options) *wsredirect.Middleware {
	m := prom.New()
	opts.OnDecision = m.OnDecision
	mw := wsredirect.MustNew(opts)
	m.Watch(mw)
	prometheus.NewRegistry().MustRegister(m)
	return mw
}

// BenchmarkPassthrough measures a request that is not an upgrade going
// through the middleware, without and with a Collector: the Collector must
// cost it nothing, since OnDecision runs for upgrades only.
func BenchmarkPassthrough(b *testing.B) {
	opts := wsredirect.Options{Rules: []wsredirect.Rule{wsredirect.Host("wss://b.example.net", "chat.example.com")}}
	b.Run("without", func(b *testing.B) {
		benchServe(b, wsredirect.MustNew(opts).Handler(nop), browserishGet())
	})
	b.Run("with-collector", func(b *testing.B) {
		benchServe(b, collected(opts).Handler(nop), browserishGet())
	})
}

// fleet64 is a 64-member fleet whose node 0 is this node, sharding by the
// room query parameter, and a key that node owns (pass) and one another
// node does (redirect).
func fleet64() (opts wsredirect.Options, own, other string) {
	members := make([]wsredirect.Member, 64)
	for i := range members {
		members[i] = wsredirect.Member{ID: fmt.Sprintf("node-%d", i), URL: fmt.Sprintf("wss://n%d.example.com", i)}
	}
	opts = wsredirect.Options{Self: members[0].URL, Members: members, Rules: []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))}}
	st := wsredirect.MustNew(opts).State()
	for i := 0; own == "" || other == ""; i++ {
		key := fmt.Sprintf("room-%d", i)
		if m, _ := st.Owner(key); m.ID == members[0].ID {
			own = key
		} else {
			other = key
		}
	}
	return opts, own, other
}

// BenchmarkDecision measures whole upgrade decisions through the
// middleware, without and with a Collector: a shard redirect to another of
// 64 members written as a 307, and a shard key this node owns passed to
// the app. The difference is OnDecision plus the two clock reads the
// middleware makes for Decision.Elapsed when OnDecision is set.
func BenchmarkDecision(b *testing.B) {
	opts, own, other := fleet64()
	for _, tc := range []struct{ name, key string }{{"redirect", other}, {"pass", own}} {
		r := upgradeTo("http://chat.example.com/rooms?room=" + tc.key + "&token=abc")
		b.Run(tc.name+"/without", func(b *testing.B) {
			benchServe(b, wsredirect.MustNew(opts).Handler(nop), r)
		})
		b.Run(tc.name+"/with-collector", func(b *testing.B) {
			benchServe(b, collected(opts).Handler(nop), r)
		})
	}
}

// BenchmarkOnDecision measures the Collector's own share: one decision
// counted, its label set already seen, from one goroutine and from
// GOMAXPROCS at once (-cpu to vary).
func BenchmarkOnDecision(b *testing.B) {
	m := prom.New()
	d := wsredirect.Decision{Action: wsredirect.Redirect, Rule: "shard", Member: "node-7", Status: 307, Elapsed: 180 * time.Nanosecond}
	m.OnDecision(nil, d)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.OnDecision(nil, d)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.OnDecision(nil, d)
			}
		})
	})
}

// TestNoAllocations holds the benchmarks' allocation figures in every
// test run: a passthrough with a Collector attached allocates nothing, and
// neither does counting a decision whose label set was seen before.
func TestNoAllocations(t *testing.T) {
	opts := wsredirect.Options{Rules: []wsredirect.Rule{wsredirect.Host("wss://b.example.net", "chat.example.com")}}
	h, r, w := collected(opts).Handler(nop), browserishGet(), &discardWriter{h: http.Header{}}
	if n := testing.AllocsPerRun(1000, func() { w.reset(); h.ServeHTTP(w, r) }); n != 0 {
		t.Errorf("passthrough with a Collector: %v allocations, want 0", n)
	}
	m := prom.New()
	for _, d := range []wsredirect.Decision{
		{Action: wsredirect.Pass, Rule: "shard", Member: "node-0"},
		{Action: wsredirect.Redirect, Rule: "shard", Member: "node-7", Status: 307, Close: true},
		{Action: wsredirect.Refuse, Rule: "maintenance", Status: 503},
	} {
		m.OnDecision(nil, d)
		if n := testing.AllocsPerRun(1000, func() { m.OnDecision(nil, d) }); n != 0 {
			t.Errorf("OnDecision(%v): %v allocations, want 0", d.Action, n)
		}
	}
}
