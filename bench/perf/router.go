package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// routerTarget is where every scenario 1 variant sends clients; nothing
// dials it.
const routerTarget = "ws://127.0.0.1:9001"

// routerVariant is one server answering scenario 1's requests.
type routerVariant struct {
	name     string
	url      string // what wrk requests
	location string // the Location it must answer
	stat     int    // index in the Go router's connection counts, or -1
	pid      int    // the server process whose CPU is read
	rates    rounds // requests/s
	cpu      rounds // server CPU seconds per request
}

// routerCapacity is scenario 1: requests/s of upgrade-shaped requests
// answered with a 307, each variant driven by the same wrk (one thread,
// cfg.wrkConns keep-alive connections, cfg.wrkDuration) in the same round.
func (h *harness) routerCapacity(ctx context.Context) ([]row, error) {
	const scen = "1 router capacity: upgrades answered with 307, req/s (wrk)"
	if h.wrkPath == "" {
		return []row{{scenario: scen, variant: "all variants", figure: "—", met: toolHint("wrk")}}, nil
	}
	const members = 64
	lns := make([]*net.TCPListener, 4)
	for i := range lns {
		l, err := listen()
		if err != nil {
			return nil, err
		}
		lns[i] = l
	}
	addrs := make([]string, len(lns))
	for i, l := range lns {
		addrs[i] = l.Addr().String()
	}
	router, err := h.startServer("go-router", serveSpec{Mode: "router", Target: routerTarget, Members: members}, lns...)
	if err != nil {
		return nil, err
	}
	// The key is one the Shard rule's node sends elsewhere; the Host rule
	// and the others ignore it. Every variant gets the same path and query.
	_, shard, err := routerMiddlewares(routerTarget, members)
	if err != nil {
		return nil, err
	}
	key := foreignKey(shard, shardMembers(members)[0].URL)
	owner, _ := shard.State().Owner(key)
	uri := routerPath + "?room=" + key
	variants := []*routerVariant{
		{name: "hand-written Go handler (baseline)", url: "http://" + addrs[2] + uri, location: routerTarget + uri, stat: 2, pid: router.pid()},
		{name: "wsredirect, Host rule", url: "http://" + addrs[0] + uri, location: routerTarget + uri, stat: 0, pid: router.pid()},
		{name: fmt.Sprintf("wsredirect, Shard rule, %d members", members), url: "http://" + addrs[1] + uri, location: owner.URL + uri, stat: 1, pid: router.pid()},
	}
	nginxNote := toolHint("nginx-light")
	if h.nginxPath != "" {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		ng, err := h.startNginx(ctx, "nginx-router", nginxServer{port: port, body: "location / {\n" +
			"    add_header Cache-Control no-store always;\n" +
			"    return 307 " + routerTarget + "$request_uri;\n}\n"})
		if err != nil {
			return nil, err
		}
		worker, err := ng.worker()
		if err != nil {
			return nil, err
		}
		variants = append(variants, &routerVariant{name: "NGINX return 307 (C reference)", url: fmt.Sprintf("http://127.0.0.1:%d%s", port, uri), location: routerTarget + uri, stat: -1, pid: worker})
	}
	for _, v := range variants {
		if err := checkRedirect(ctx, v.url, v.location); err != nil {
			return nil, fmt.Errorf("%s: %w", v.name, err)
		}
	}
	statsURL := "http://" + addrs[3] + "/"
	for _, v := range variants {
		if h.cfg.warmup <= 0 {
			break
		}
		if _, err := h.runWrk(ctx, v.url, h.cfg.warmup, h.cfg.wrkConns); err != nil {
			return nil, fmt.Errorf("%s: warm-up: %w", v.name, err)
		}
	}
	// Each round runs every variant cfg.wrkPasses times, in an order and
	// then its reverse (ABCD DCBA ABCD DCBA, each round starting from
	// another variant), so a load that drifts during the round weighs on
	// every variant alike. Beside requests/s, the server's CPU time per
	// request is read from /proc: what another process takes from the
	// core lowers the first, not the second.
	h.progress("   wrk -t1 -c%d, %d variants × %d runs of %v per round in ABCD-DCBA order, %d rounds (warmed up)", h.cfg.wrkConns, len(variants), h.cfg.wrkPasses, h.cfg.wrkDuration, h.cfg.rounds)
	for r := range h.cfg.rounds {
		var order []*routerVariant
		for pass := range h.cfg.wrkPasses {
			for i := range variants {
				if pass%2 == 1 {
					i = len(variants) - 1 - i
				}
				order = append(order, variants[(i+r)%len(variants)])
			}
		}
		requests := map[*routerVariant]int64{}
		elapsed := map[*routerVariant]time.Duration{}
		cpu := map[*routerVariant]time.Duration{}
		wrkCPU := map[*routerVariant]time.Duration{}
		for _, v := range order {
			var before, after []int64
			if v.stat >= 0 {
				if err := getJSON(ctx, statsURL, &before); err != nil {
					return nil, err
				}
			}
			cpu0, err := cpuTime(v.pid)
			if err != nil {
				return nil, err
			}
			res, err := h.runWrk(ctx, v.url, h.cfg.wrkDuration, h.cfg.wrkConns)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", v.name, err)
			}
			cpu1, err := cpuTime(v.pid)
			if err != nil {
				return nil, err
			}
			if res.errors > 0 {
				return nil, fmt.Errorf("%s: wrk saw %d errors in %d requests", v.name, res.errors, res.requests)
			}
			if v.stat >= 0 {
				if err := getJSON(ctx, statsURL, &after); err != nil {
					return nil, err
				}
				// wrk opens its connections, plus one to check the address
				// first, and reconnects only when a server closes: a server
				// that did would be measured on connection setup instead.
				if n := after[v.stat] - before[v.stat]; n > int64(h.cfg.wrkConns+1) {
					return nil, fmt.Errorf("%s: %d connections for wrk's %d: keep-alive broken", v.name, n, h.cfg.wrkConns)
				}
			}
			requests[v] += res.requests
			elapsed[v] += res.elapsed
			cpu[v] += cpu1 - cpu0
			wrkCPU[v] += res.cpu
		}
		var line []string
		for _, v := range variants {
			v.rates = append(v.rates, float64(requests[v])/elapsed[v].Seconds())
			v.cpu = append(v.cpu, cpu[v].Seconds()/float64(requests[v]))
			// How busy each side's core was: a side near 100 % bounds
			// the rate.
			line = append(line, fmt.Sprintf("%s %s (%s CPU/req; server %.0f%%, wrk %.0f%% busy)", shortName(v.name), fmtCount(v.rates[r]), fmtSec(v.cpu[r]),
				100*cpu[v].Seconds()/elapsed[v].Seconds(), 100*wrkCPU[v].Seconds()/elapsed[v].Seconds()))
		}
		h.progress("   round %d/%d: %s", r+1, h.cfg.rounds, strings.Join(line, ", "))
	}

	base := variants[0]
	var rows []row
	for i, v := range variants {
		w := row{variant: v.name, figure: fmt.Sprintf("%s req/s; %s CPU/req", fmtCount(v.rates.median()), fmtSec(v.cpu.median())), spread: spreadOf(v.rates, fmtCount)}
		rat := ratio(v.rates, base.rates)
		cpuRat := fmtRatio(ratio(base.cpu, v.cpu).median())
		switch {
		case i == 0:
			w.scenario, w.ratio, w.target, w.met = scen, "1.00×", "—", "—"
		case v.stat >= 0:
			w.ratio, w.target, w.met = ratioCell(rat)+" hand-written; by CPU/req "+cpuRat, "≥ 0.95× hand-written", metCell(rat.median() >= 0.95)
			if rat.median() < 0.95 {
				h.progress("   %s missed its target: profile the Go router with -only 1 -cpuprofile DIR, then go tool pprof -top DIR/go-router.pprof", v.name)
			}
		default:
			w.ratio, w.target, w.met = ratioCell(rat)+" hand-written; by CPU/req "+cpuRat, "reference", "—"
		}
		rows = append(rows, w)
	}
	if h.nginxPath == "" {
		rows = append(rows, row{variant: "NGINX return 307", figure: "—", met: nginxNote})
	}
	return rows, nil
}

// checkRedirect makes one upgrade-shaped request to url and checks the
// answer is the 307 every variant must send.
func checkRedirect(ctx context.Context, url, location string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	setUpgradeHeaders(req.Header)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	var errs []error
	if resp.StatusCode != http.StatusTemporaryRedirect {
		errs = append(errs, fmt.Errorf("status %d, want 307", resp.StatusCode))
	}
	if got := resp.Header.Get("Location"); got != location {
		errs = append(errs, fmt.Errorf("Location %q, want %q", got, location))
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		errs = append(errs, fmt.Errorf("Cache-Control %q, want no-store", got))
	}
	return errors.Join(errs...)
}

// setUpgradeHeaders makes h an RFC 6455 upgrade request's: the four
// headers, with the RFC's sample key (wrkScript sets the same).
func setUpgradeHeaders(h http.Header) {
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", "websocket")
	h.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	h.Set("Sec-WebSocket-Version", "13")
}

// shortName is a variant's name for progress lines.
func shortName(name string) string {
	if i := strings.IndexAny(name, "(,"); i > 0 && !strings.HasPrefix(name, "wsredirect") {
		return strings.TrimSpace(name[:i])
	}
	return name
}
