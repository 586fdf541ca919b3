package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/client"
)

// drainSpec sizes one live drain.
type drainSpec struct {
	Conns  int
	Ramp   time.Duration // the drain's: its keys are handed off over it
	Window time.Duration // the bound for every client to be back on its owner
}

// drainResult is what one live drain did.
type drainResult struct {
	Took     time.Duration // the drain's start until the last client is open on its owner
	Moved    int           // Moves() of the drained node: sent their close frame
	Cut      int           // and closed under the app instead
	Arrived  int           // connections the receiving nodes accepted
	Lost     int           // clients whose Conn ended instead of moving
	Left     int           // connections the drained node still tracks at the end
	PeakRate float64
}

const bucket = 100 * time.Millisecond

// drainRamp is scenario 4's ramp. The figure this row replaced came from
// MoveConns' default pacing, 5,000 connections in batches of 1,000 with
// four pauses of 0.5–1.5 s between them, about 4 s in all; a 4 s ramp
// spreads the same moves over the same span, evenly instead of in bursts.
const drainRamp = 4 * time.Second

// liveDrain is scenario 4, each round in a fresh copy of perf that runs on
// every CPU: it holds both the fleet and its 5,000 clients, and it does not
// share a core with earlier servers.
func (h *harness) liveDrain(ctx context.Context) ([]row, error) {
	scen := fmt.Sprintf("4 live drain: %s connections moved off a node (automatic, %v ramp)", fmtCount(float64(h.cfg.drainConns)), h.cfg.drainRamp)
	var took, peak rounds
	allIn, lost, cut := true, 0, 0
	for r := range h.cfg.rounds {
		res, err := h.drainRound(ctx)
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", r+1, err)
		}
		took = append(took, res.Took.Seconds())
		cut += res.Cut
		peak = append(peak, res.PeakRate)
		// A client is lost when its Conn ended or it never came back on an
		// owner; a cut connection is one its client reconnects from, but
		// the drain did not move it as it should have.
		lost += max(res.Lost, h.cfg.drainConns-res.Arrived)
		if res.Took > h.cfg.drainWindow || res.Arrived != h.cfg.drainConns || res.Left != 0 ||
			res.Moved != h.cfg.drainConns || res.Cut != 0 {
			allIn = false
		}
		h.progress("   round %d/%d: last of %s back on its owner after %s: moved %d, cut %d, arrived %d, lost %d, left on b %d; peak %s reconnects/s at one node",
			r+1, h.cfg.rounds, fmtCount(float64(h.cfg.drainConns)), fmtSec(res.Took.Seconds()),
			res.Moved, res.Cut, res.Arrived, res.Lost, res.Left, fmtCount(res.PeakRate))
	}
	perSec := func(x float64) string { return fmtCount(x) + "/s" }
	return []row{
		{scenario: scen, variant: "time until every client is open on its owner", figure: fmtSec(took.median()), spread: spreadOf(took, fmtSec),
			ratio:  fmt.Sprintf("%.0f%% of the window", 100*took.median()/h.cfg.drainWindow.Seconds()),
			target: fmt.Sprintf("within the %v drain window, none lost", h.cfg.drainWindow), met: metCell(allIn && lost == 0) + fmt.Sprintf(" (%d lost, %d cut)", lost, cut)},
		{variant: "peak reconnects at one receiving node (100 ms buckets)", figure: fmtCount(peak.median()) + "/s", spread: spreadOf(peak, perSec),
			ratio: "—", target: "—", met: "—"},
	}, nil
}

// drainRound runs one live drain in a child process and reads its result.
func (h *harness) drainRound(ctx context.Context) (drainResult, error) {
	spec, _ := json.Marshal(serveSpec{Mode: "drain", Drain: &drainSpec{Conns: h.cfg.drainConns, Ramp: h.cfg.drainRamp, Window: h.cfg.drainWindow}})
	var out bytes.Buffer
	all := fmt.Sprintf("0-%d", cpuCount()-1)
	p, err := h.startProc("drain", all, []string{h.self}, []string{serveEnv + "=" + string(spec)}, nil, &out)
	if err != nil {
		return drainResult{}, err
	}
	if err := p.wait(ctx, 2*time.Minute+h.cfg.drainWindow); err != nil {
		return drainResult{}, fmt.Errorf("drain child: %w", err)
	}
	var res drainResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return drainResult{}, fmt.Errorf("drain child printed %q: %w", out.String(), err)
	}
	return res, nil
}

// drainNode is one node of the drained fleet.
type drainNode struct {
	url  string
	srv  *http.Server
	mw   *wsredirect.Middleware
	hits []atomic.Int64 // connections accepted, per 100 ms since the drain began
}

// liveDrainChild runs one drain, in this process, and prints its
// drainResult on stdout. Nodes a, b and c run wsredirect with a Shard rule;
// spec.Conns client.Conns, reading, are connected to b with keys b owns and
// tracked there; every node is told b drains from now over spec.Ramp, and
// nothing else: b's middleware sends each connection its close frame as the
// ramp reaches its key. The connections the receivers accept are counted
// in 100 ms buckets until every client is back.
func liveDrainChild(spec drainSpec) error {
	raiseFileLimit()
	ids := []string{"a", "b", "c"}
	nodes := make([]*drainNode, len(ids))
	var members []wsredirect.Member
	lns := make([]net.Listener, len(ids))
	for i, id := range ids {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		lns[i] = l
		nodes[i] = &drainNode{url: "ws://" + l.Addr().String(), hits: make([]atomic.Int64, int((spec.Window+30*time.Second)/bucket))}
		members = append(members, wsredirect.Member{ID: id, URL: nodes[i].url})
	}
	var drainStart atomic.Int64 // unix nanos; 0 until the drain begins
	var arrived atomic.Int64
	var lastArrival atomic.Int64
	up := websocket.Upgrader{}
	for i, n := range nodes {
		var err error
		n.mw, err = wsredirect.New(wsredirect.Options{Self: n.url, Members: members, Rules: []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))}})
		if err != nil {
			return err
		}
		app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			defer n.mw.Track(r.URL.Query().Get("room"), wsredirect.GorillaConn(c, nil))()
			if t0 := drainStart.Load(); t0 != 0 {
				now := time.Now().UnixNano()
				if b := int((now - t0) / int64(bucket)); b < len(n.hits) {
					n.hits[b].Add(1)
				}
				arrived.Add(1)
				lastArrival.Store(now)
			}
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		})
		n.srv = &http.Server{Handler: n.mw.Handler(app), ReadHeaderTimeout: 10 * time.Second}
		go n.srv.Serve(lns[i])
	}
	b := nodes[1]

	keys := ownedKeys(b.mw, "b", spec.Conns)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := &client.Dialer{Dialer: websocket.Dialer{HandshakeTimeout: 10 * time.Second}}
	var lost atomic.Int64
	var readers sync.WaitGroup
	conns := make([]*client.Conn, len(keys))
	var dialErr error
	var mu sync.Mutex
	var dialers sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i, k := range keys {
		sem <- struct{}{}
		dialers.Go(func() {
			defer func() { <-sem }()
			dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
			defer dcancel()
			c, _, err := d.Connect(dctx, b.url+"/rooms?room="+k, nil)
			if err != nil {
				mu.Lock()
				dialErr = errors.Join(dialErr, err)
				mu.Unlock()
				return
			}
			conns[i] = c
			readers.Go(func() {
				for {
					if _, _, err := c.ReadMessage(ctx); err != nil {
						if ctx.Err() == nil {
							lost.Add(1)
						}
						return
					}
				}
			})
		})
	}
	dialers.Wait()
	if dialErr != nil {
		return fmt.Errorf("connecting to b: %w", dialErr)
	}
	if err := waitFor(30*time.Second, func() bool { return b.mw.Tracked() == len(keys) }); err != nil {
		return fmt.Errorf("b tracks %d of %d connections", b.mw.Tracked(), len(keys))
	}

	start := time.Now()
	drainStart.Store(start.UnixNano())
	// b is told last: its moves begin when it is, and a moved client must
	// find its new owner knowing already.
	for _, n := range []*drainNode{nodes[0], nodes[2], b} {
		if err := n.mw.DrainMember("b", start, spec.Ramp); err != nil {
			return err
		}
	}
	// Every client back, or the window (plus a grace for the last of
	// them) gone.
	waitFor(time.Until(start.Add(spec.Window+5*time.Second)), func() bool { return int(arrived.Load()) >= len(keys) })
	var res drainResult
	res.Arrived = int(arrived.Load())
	if last := lastArrival.Load(); last != 0 {
		res.Took = time.Duration(last - start.UnixNano())
	}
	waitFor(10*time.Second, func() bool { return b.mw.Tracked() == 0 })
	res.Left = b.mw.Tracked()
	res.Lost = int(lost.Load())
	moved, cut := b.mw.Moves()
	res.Moved, res.Cut = int(moved), int(cut)
	for _, n := range nodes {
		if n == b {
			continue
		}
		for i := range n.hits {
			res.PeakRate = max(res.PeakRate, float64(n.hits[i].Load())/bucket.Seconds())
		}
	}

	cancel()
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	readers.Wait()
	js, _ := json.Marshal(res)
	_, err := fmt.Fprintln(os.Stdout, strings.TrimSpace(string(js)))
	return err
}

// waitFor polls cond every 10 ms for up to d.
func waitFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}
