package prom_test

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/prom"
)

// The wiring README.md's Metrics section shows (TestReadmeInSync keeps the
// two the same): the Collector counts decisions through Options.OnDecision
// and reads the Middleware it watches when /metrics is scraped.
func Example() {
	var chat http.Handler = http.NotFoundHandler() // your app's WebSocket handler

	reg := prometheus.NewRegistry()
	opts := wsredirect.Options{
		Rules: []wsredirect.Rule{wsredirect.Path("wss://b.example.com", "/legacy/*")},
	}

	m := prom.New()                // a prometheus.Collector
	opts.OnDecision = m.OnDecision // counts each upgrade's decision
	mw := wsredirect.MustNew(opts) // your middleware, built as before
	m.Watch(mw)                    // gauges and move counters read from mw at scrape time
	reg.MustRegister(m)            // or prometheus.MustRegister(m), the default registry

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("GET /", mw.Handler(chat))

	// One upgrade to redirect, then a scrape.
	up := httptest.NewRequest(http.MethodGet, "/legacy/rooms/1", nil)
	up.Header.Set("Connection", "Upgrade")
	up.Header.Set("Upgrade", "websocket")
	up.Header.Set("Sec-WebSocket-Version", "13")
	up.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	mux.ServeHTTP(httptest.NewRecorder(), up)
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for sc := bufio.NewScanner(w.Body); sc.Scan(); {
		if line := sc.Text(); strings.HasPrefix(line, "wsredirect_upgrades") || strings.HasPrefix(line, "wsredirect_members ") {
			fmt.Println(line)
		}
	}
	// Output:
	// wsredirect_members 0
	// wsredirect_upgrades_redirected_total{answer="status",member="",rule="path"} 1
	// wsredirect_upgrades_total 1
}

// An OnDecision of your own keeps working beside the Collector's: call
// both from one func.
func ExampleCollector_OnDecision() {
	m := prom.New()
	audit := func(r *http.Request, d wsredirect.Decision) {
		fmt.Println(d.Action, r.URL.Path, "by", d.Rule)
	}
	opts := wsredirect.Options{
		Rules: []wsredirect.Rule{wsredirect.Path("wss://b.example.com", "/legacy/*")},
		OnDecision: func(r *http.Request, d wsredirect.Decision) {
			m.OnDecision(r, d)
			audit(r, d)
		},
	}
	mw := wsredirect.MustNew(opts)
	m.Watch(mw)

	up := httptest.NewRequest(http.MethodGet, "/legacy/rooms/1", nil)
	up.Header.Set("Connection", "Upgrade")
	up.Header.Set("Upgrade", "websocket")
	up.Header.Set("Sec-WebSocket-Version", "13")
	up.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	mw.Handler(http.NotFoundHandler()).ServeHTTP(httptest.NewRecorder(), up)
	// Output:
	// redirect /legacy/rooms/1 by path
}
