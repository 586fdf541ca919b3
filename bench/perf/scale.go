package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect"
)

// scale is scenario 5: what a decision costs as the fleet grows, and what
// a live connection costs the server.
func (h *harness) scale(ctx context.Context) ([]row, error) {
	rows, err := h.decideCost(ctx)
	if err != nil {
		return nil, err
	}
	mem, err := h.connMemory(ctx)
	if err != nil {
		return nil, err
	}
	return append(rows, mem...), nil
}

// decideCost times Decide by a Shard rule on a prebuilt upgrade request that
// the node redirects, at 8, 64 and 1,024 members, sizes interleaved in each
// round. It runs in this process, on the load generators' CPU.
func (h *harness) decideCost(ctx context.Context) ([]row, error) {
	const scen = "5 scale: Decide by a Shard rule (ns, allocations per decision)"
	sizes := []int{8, 64, 1024}
	type size struct {
		mw     *wsredirect.Middleware
		r      *http.Request
		ns     rounds
		allocs float64
	}
	ss := make([]*size, len(sizes))
	for i, n := range sizes {
		ms := shardMembers(n)
		mw, err := wsredirect.New(wsredirect.Options{Self: ms[0].URL, Members: ms, Rules: []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))}})
		if err != nil {
			return nil, err
		}
		r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1"+routerPath+"?room="+foreignKey(mw, ms[0].URL), nil)
		setUpgradeHeaders(r.Header)
		if d := mw.Decide(r); d.Action != wsredirect.Redirect {
			return nil, fmt.Errorf("%d members: decision %v, want a redirect", n, d.Action)
		}
		ss[i] = &size{mw: mw, r: r}
	}
	iters := h.cfg.decideIters        // 300,000 take about 20 ms
	for r := range h.cfg.rounds + 1 { // round 0 warms up
		var line []string
		for i := range ss {
			s := ss[(i+r)%len(ss)]
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			start := time.Now()
			for range iters {
				s.mw.Decide(s.r)
			}
			took := time.Since(start)
			runtime.ReadMemStats(&m1)
			if r > 0 {
				s.ns = append(s.ns, float64(took.Nanoseconds())/float64(iters))
				s.allocs = float64(m1.Mallocs-m0.Mallocs) / float64(iters)
				line = append(line, fmt.Sprintf("%d members %s", len(s.mw.State().Members()), fmtNs(s.ns[r-1])))
			}
		}
		if r > 0 {
			h.progress("   Decide round %d/%d: %s", r, h.cfg.rounds, strings.Join(line, ", "))
		}
	}
	var rows []row
	for i, s := range ss {
		w := row{variant: fmt.Sprintf("%s members", fmtCount(float64(sizes[i]))),
			figure: fmt.Sprintf("%s, %.0f allocs", fmtNs(s.ns.median()), s.allocs), spread: spreadOf(s.ns, fmtNs), target: "—", met: "—"}
		if i == 0 {
			w.scenario, w.ratio = scen, "1.00×"
		} else {
			w.ratio = ratioCell(ratio(s.ns, ss[0].ns)) + " 8 members"
		}
		rows = append(rows, w)
	}
	return rows, nil
}

// connMemory measures the server's memory per live connection: each round a
// fresh track server (its own process, on the servers' CPU) is sent
// cfg.trackConns connections, and its live heap and stacks are read before
// and after. It also measures Track's own registry entry, in this process.
func (h *harness) connMemory(ctx context.Context) ([]row, error) {
	n := h.cfg.trackConns
	scen := fmt.Sprintf("5 scale: server memory per live connection at %s connections", fmtCount(float64(n)))
	var heap, stack rounds
	for r := range h.cfg.rounds {
		hp, st, err := h.memRound(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", r+1, err)
		}
		heap, stack = append(heap, hp), append(stack, st)
		h.progress("   memory round %d/%d: %s connections: heap +%s, stacks +%s per connection", r+1, h.cfg.rounds, fmtCount(float64(n)), fmtBytes(hp), fmtBytes(st))
	}
	track := trackCost(max(n, 10000)) // fewer would drown in the GC's noise
	h.progress("   Track's registry entry: %s per connection", fmtBytes(track))
	return []row{
		{scenario: scen, variant: "live heap (gorilla connection, its buffers, Track)", figure: fmtBytes(heap.median()), spread: spreadOf(heap, fmtBytes),
			ratio: "—", target: "—", met: "—"},
		{variant: "goroutine stacks (one reader per connection)", figure: fmtBytes(stack.median()), spread: spreadOf(stack, fmtBytes), ratio: "—", target: "—", met: "—"},
		{variant: "of the heap, Track's registry entry", figure: fmtBytes(track), spread: "—",
			ratio: fmt.Sprintf("%.1f%% of the heap", 100*track/heap.median()), target: "—", met: "—"},
	}, nil
}

// memRound opens n connections to a fresh track server and returns its
// live heap and stack growth per connection.
func (h *harness) memRound(ctx context.Context, n int) (heap, stack float64, err error) {
	srv, err := listen()
	if err != nil {
		return 0, 0, err
	}
	ctl, err := listen()
	if err != nil {
		return 0, 0, err
	}
	addr, ctlURL := srv.Addr().String(), "http://"+ctl.Addr().String()+"/"
	p, err := h.startServer("track", serveSpec{Mode: "track"}, srv, ctl)
	if err != nil {
		return 0, 0, err
	}
	defer p.stop()
	var before, after memStats
	if err := getJSON(ctx, ctlURL, &before); err != nil {
		return 0, 0, err
	}
	conns := make([]*websocket.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var dialErr error
	sem := make(chan struct{}, 32)
	for i := range conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := dialEcho(ctx, fmt.Sprintf("ws://%s/rooms?room=room-%d", addr, i))
			if err != nil {
				mu.Lock()
				dialErr = err
				mu.Unlock()
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	if dialErr != nil {
		return 0, 0, dialErr
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := getJSON(ctx, ctlURL, &after); err != nil {
			return 0, 0, err
		}
		if after.Tracked == n {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("the track server tracks %d of %d connections", after.Tracked, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	heap = (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(n)
	stack = (float64(after.StackInuse) - float64(before.StackInuse)) / float64(n)
	return heap, stack, nil
}

// trackCost is the live heap one Track registration adds, its GorillaConn
// adapter and the untrack func kept as an app keeps them, measured over n
// registrations. Nothing moves them, so the adapters need no connection.
func trackCost(n int) float64 {
	mw := wsredirect.MustNew(wsredirect.Options{Rules: []wsredirect.Rule{wsredirect.Path("ws://127.0.0.1:9001", "/elsewhere")}})
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("room-%d", i)
	}
	untrack := make([]func(), n)
	before := readMem(0)
	for i := range keys {
		untrack[i] = mw.Track(keys[i], wsredirect.GorillaConn(nil, nil))
	}
	after := readMem(mw.Tracked())
	runtime.KeepAlive(untrack)
	runtime.KeepAlive(keys)
	return (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(n)
}

// fmtBytes writes a size: 312 B, 9.4 KiB.
func fmtBytes(b float64) string {
	if b < 1024 {
		return fmt.Sprintf("%.0f B", b)
	}
	return fmt.Sprintf("%.1f KiB", b/1024)
}
