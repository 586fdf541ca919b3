package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/client"
)

// fleet is scenarios 2 and 3's servers: nodes a and b, each its own
// process running wsredirect with a Shard rule over {a, b} in front of an
// echo server, and NGINX proxying WebSockets to each.
type fleet struct {
	a, b  *fleetNode
	nginx *nginxProc // nil without NGINX
}

// fleetNode is one node of the fleet.
type fleetNode struct {
	id       string
	proc     *proc
	url      string // ws://127.0.0.1:port
	key      string // a room this node owns
	proxyURL string // NGINX proxying to this node; "" without NGINX
}

// path is the request path and query of a dial for n's room.
func (n *fleetNode) path() string { return "/rooms?room=" + n.key }

// startFleet starts the fleet once; scenario 3 reuses scenario 2's.
func (h *harness) startFleet(ctx context.Context) (*fleet, error) {
	if h.fleet != nil {
		return h.fleet, nil
	}
	f := &fleet{a: &fleetNode{id: "a"}, b: &fleetNode{id: "b"}}
	nodes := []*fleetNode{f.a, f.b}
	lns := make([]*net.TCPListener, len(nodes))
	var members []wsredirect.Member
	for i, n := range nodes {
		l, err := listen()
		if err != nil {
			return nil, err
		}
		lns[i], n.url = l, "ws://"+l.Addr().String()
		members = append(members, wsredirect.Member{ID: n.id, URL: n.url})
	}
	mw, err := wsredirect.New(wsredirect.Options{Members: members, Rules: []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))}})
	if err != nil {
		return nil, err
	}
	for i, n := range nodes {
		n.key = ownedKeys(mw, n.id, 1)[0]
		if n.proc, err = h.startServer("node-"+n.id, serveSpec{Mode: "node", Self: n.url, Fleet: members}, lns[i]); err != nil {
			return nil, err
		}
	}
	if h.nginxPath != "" {
		servers := make([]nginxServer, len(nodes))
		for i, n := range nodes {
			port, err := freePort()
			if err != nil {
				return nil, err
			}
			servers[i] = nginxServer{port: port, body: "location / {\n" +
				"    proxy_pass http://" + strings.TrimPrefix(n.url, "ws://") + ";\n" +
				"    proxy_http_version 1.1;\n" +
				"    proxy_set_header Upgrade $http_upgrade;\n" +
				"    proxy_set_header Connection \"upgrade\";\n" +
				"    proxy_read_timeout 1h;\n" +
				"    proxy_send_timeout 1h;\n}\n"}
			n.proxyURL = fmt.Sprintf("ws://127.0.0.1:%d", port)
		}
		if f.nginx, err = h.startNginx(ctx, "nginx-proxy", servers...); err != nil {
			return nil, err
		}
	}
	h.fleet = f
	return f, nil
}

// connectVariant is one way of reaching a room's owner. Its dials
// alternate between its two URLs, one for a room of each node, so that
// both nodes redirect and serve alike, as every node of a fleet does: a
// node that only redirected would be idle, and slower to wake, whenever a
// client came to it.
type connectVariant struct {
	name  string
	urls  [2]string // dialled in turn
	lands [2]string // where each dial of them must end: the room's owner, or NGINX
	d     *client.Dialer
	hops  int // handshakes a dial must take

	p50, p99   rounds // seconds
	hop1, hop2 rounds // a redirect's hops, p50 seconds
}

// connect is scenario 2: dial + handshake latency, one dial at a time.
func (h *harness) connect(ctx context.Context) ([]row, error) {
	const scen = "2 connect: dial + handshake, p50 / p99"
	f, err := h.startFleet(ctx)
	if err != nil {
		return nil, err
	}
	a, b := f.a, f.b
	dialer := func() *client.Dialer {
		return &client.Dialer{Dialer: websocket.Dialer{HandshakeTimeout: 5 * time.Second}}
	}
	oneRedirect := dialer()
	oneRedirect.RememberRedirects = -1 // the redirect on every dial
	owners := [2]string{b.url + b.path(), a.url + a.path()}
	others := [2]string{a.url + b.path(), b.url + a.path()} // each room at the node that does not own it
	variants := []*connectVariant{
		{name: "direct to the owner (baseline)", urls: owners, lands: owners, d: dialer(), hops: 1},
		{name: "one redirect (client.Dialer, RememberRedirects: -1)", urls: others, lands: owners, d: oneRedirect, hops: 2},
		{name: "remembered redirect (RememberRedirects default)", urls: others, lands: owners, d: dialer(), hops: 1},
	}
	if f.nginx != nil {
		proxies := [2]string{b.proxyURL + b.path(), a.proxyURL + a.path()}
		variants = append(variants, &connectVariant{name: "through NGINX proxy", urls: proxies, lands: proxies, d: dialer(), hops: 1})
	}
	// A first dial of each URL fills the remembered variant's memory: it
	// goes through the redirect.
	for _, v := range variants {
		for _, u := range v.urls {
			c, _, _, err := v.d.DialTrace(ctx, u, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", v.name, err)
			}
			c.Close()
		}
	}
	h.progress("   %d dials per variant per round, the %d variants taking turns dial by dial in shuffled order, %d rounds", h.cfg.dials, len(variants), h.cfg.rounds)
	rng := rand.New(rand.NewPCG(13, 13))
	for r := -1; r < h.cfg.rounds; r++ { // round -1 warms up
		n := h.cfg.dials
		if r < 0 {
			n = min(n, 50)
		}
		samples := make([][]time.Duration, len(variants))
		hops := make([][2][]time.Duration, len(variants))
		for i := range n {
			// Dial by dial, each variant in turn, in an order shuffled
			// each turn: what a dial costs depends on what the one before
			// left behind (a server still awake, or still closing its
			// connections), so no variant may always follow the same one,
			// nor itself.
			for _, k := range rng.Perm(len(variants)) {
				took, hs, err := dialOnce(ctx, variants[k], i%2)
				if err != nil {
					return nil, err
				}
				samples[k] = append(samples[k], took)
				for x := range min(len(hs), 2) {
					hops[k][x] = append(hops[k][x], hs[x])
				}
			}
		}
		if r < 0 {
			continue
		}
		var line []string
		for k, v := range variants {
			v.p50 = append(v.p50, percentile(samples[k], 50).Seconds())
			v.p99 = append(v.p99, percentile(samples[k], 99).Seconds())
			note := ""
			if v.hops == 2 {
				v.hop1 = append(v.hop1, percentile(hops[k][0], 50).Seconds())
				v.hop2 = append(v.hop2, percentile(hops[k][1], 50).Seconds())
				note = fmt.Sprintf(" (307 hop %s + upgrade hop %s)", fmtSec(v.hop1[r]), fmtSec(v.hop2[r]))
			}
			line = append(line, fmt.Sprintf("%s %s/%s%s", shortName(v.name), fmtSec(v.p50[r]), fmtSec(v.p99[r]), note))
		}
		h.progress("   round %d/%d (p50/p99): %s", r+1, h.cfg.rounds, strings.Join(line, ", "))
	}

	base := variants[0]
	rows := []row{{
		scenario: scen, variant: base.name, figure: fmtSec(base.p50.median()) + " / " + fmtSec(base.p99.median()),
		spread: "p50 " + spreadOf(base.p50, fmtSec), ratio: "1.00×", target: "—", met: "—",
	}}
	for _, v := range variants[1:] {
		w := row{variant: v.name, figure: fmtSec(v.p50.median()) + " / " + fmtSec(v.p99.median()), spread: "p50 " + spreadOf(v.p50, fmtSec)}
		if v.hops == 2 {
			w.figure += fmt.Sprintf(" (hops: 307 %s + upgrade %s)", fmtSec(v.hop1.median()), fmtSec(v.hop2.median()))
		}
		rat := ratio(v.p50, base.p50)
		w.ratio = ratioCell(rat) + " direct (p50); p99 " + fmtRatio(ratio(v.p99, base.p99).median())
		switch {
		case v.hops == 2:
			w.target, w.met = "≤ 2.10× direct (p50)", metCell(rat.median() <= 2.1)
		case strings.HasPrefix(v.name, "remembered"):
			w.target, w.met = "≤ 1.10× direct (p50)", metCell(rat.median() <= 1.1)
		default:
			w.target, w.met = "reference", "—"
		}
		rows = append(rows, w)
	}
	floor, err := h.redirectFloor(ctx)
	if err != nil {
		return nil, err
	}
	rows = append(rows, floor)
	if f.nginx == nil {
		rows = append(rows, row{variant: "through NGINX proxy", figure: "—", met: toolHint("nginx-light")})
	}
	return rows, nil
}

// dialOnce dials v's URL i, checks the dial took v's hops and landed where
// it must, closes the connection, and returns the time from the start of
// the dial to the open connection and each hop's (client.Hop.Elapsed).
func dialOnce(ctx context.Context, v *connectVariant, i int) (time.Duration, []time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	c, _, trace, err := v.d.DialTrace(ctx, v.urls[i], nil)
	took := time.Since(start)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", v.name, err)
	}
	c.Close()
	if len(trace) != v.hops || trace[len(trace)-1].URL != v.lands[i] {
		return 0, nil, fmt.Errorf("%s: dial of %s took hops %+v, want %d ending at %s", v.name, v.urls[i], trace, v.hops, v.lands[i])
	}
	hops := make([]time.Duration, len(trace))
	for i, h := range trace {
		hops[i] = h.Elapsed
	}
	return took, hops, nil
}

// redirectFloor is a diagnostic beside scenario 2: the same two-node fleet,
// direct against one redirect, with the client and both nodes in this one
// process on one CPU, so no dial waits for another process to be
// scheduled. What is left is what the code paths cost: the separate-process
// figures above add the scheduling of two server processes per redirect.
func (h *harness) redirectFloor(ctx context.Context) (row, error) {
	var nodes [2]*fleetNode
	var members []wsredirect.Member
	var lns [2]net.Listener
	for i, id := range []string{"a", "b"} {
		l, err := listen()
		if err != nil {
			return row{}, err
		}
		defer l.Close()
		lns[i], nodes[i] = l, &fleetNode{id: id, url: "ws://" + l.Addr().String()}
		members = append(members, wsredirect.Member{ID: id, URL: nodes[i].url})
	}
	for i, n := range nodes {
		mw, err := wsredirect.New(wsredirect.Options{Self: n.url, Members: members, Rules: []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))}})
		if err != nil {
			return row{}, err
		}
		n.key = ownedKeys(mw, n.id, 1)[0]
		srv := &http.Server{Handler: mw.Handler(echo()), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(lns[i])
		defer srv.Close()
	}
	a, b := nodes[0], nodes[1]
	redirect := &client.Dialer{RememberRedirects: -1}
	owners := [2]string{b.url + b.path(), a.url + a.path()}
	variants := []*connectVariant{
		{name: "direct", urls: owners, lands: owners, d: &client.Dialer{}, hops: 1},
		{name: "one redirect", urls: [2]string{a.url + b.path(), b.url + a.path()}, lands: owners, d: redirect, hops: 2},
	}
	rng := rand.New(rand.NewPCG(13, 13))
	for r := -1; r < h.cfg.rounds; r++ {
		samples := make([][]time.Duration, len(variants))
		for i := range h.cfg.dials {
			for _, k := range rng.Perm(len(variants)) {
				took, _, err := dialOnce(ctx, variants[k], i%2)
				if err != nil {
					return row{}, err
				}
				samples[k] = append(samples[k], took)
			}
		}
		if r < 0 {
			continue
		}
		for k, v := range variants {
			v.p50 = append(v.p50, percentile(samples[k], 50).Seconds())
		}
		h.progress("   one process, round %d/%d (p50): direct %s, one redirect %s", r+1, h.cfg.rounds, fmtSec(variants[0].p50[r]), fmtSec(variants[1].p50[r]))
	}
	rat := ratio(variants[1].p50, variants[0].p50)
	return row{variant: "diagnostic: one redirect with client and both nodes in one process", figure: fmt.Sprintf("%s (direct %s)", fmtSec(variants[1].p50.median()), fmtSec(variants[0].p50.median())),
		spread: "p50 " + spreadOf(variants[1].p50, fmtSec), ratio: ratioCell(rat) + " direct in one process (p50)", target: "— (the code paths' share)", met: "—"}, nil
}
