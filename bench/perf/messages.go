package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// messageSize is the payload of every echo: a small binary message, such
// as a chat line or a game tick, where per-message costs show.
const messageSize = 64

// messageVariant is one way of reaching b's echo server once connected.
type messageVariant struct {
	name            string
	url             string
	pids            func() ([]int, error) // the server-side processes whose CPU counts
	rttP50, rttP99, // one connection, seconds
	rate, // round trips/s over cfg.msgConns connections
	cpu rounds // server CPU seconds per round trip in the rate run
}

// messages is scenario 3: what a connection costs after the redirect,
// direct to b against through NGINX.
func (h *harness) messages(ctx context.Context) ([]row, error) {
	const (
		scenRTT  = "3 after the redirect: echo round trip, 1 connection, p50 / p99"
		scenRate = "3 after the redirect: echo round trips/s, %d connections"
		scenCPU  = "3 after the redirect: server CPU per round trip"
	)
	f, err := h.startFleet(ctx)
	if err != nil {
		return nil, err
	}
	if f.nginx == nil {
		return []row{{scenario: strings.TrimSuffix(scenRTT, ", p50 / p99"), variant: "direct vs NGINX proxy", figure: "—", met: toolHint("nginx-light")}}, nil
	}
	b := f.b
	direct := &messageVariant{name: "direct to the owner", url: b.url + b.path(),
		pids: func() ([]int, error) { return []int{b.proc.pid()}, nil }}
	proxied := &messageVariant{name: "through NGINX proxy", url: b.proxyURL + b.path(),
		pids: func() ([]int, error) {
			w, err := f.nginx.worker()
			return []int{b.proc.pid(), w}, err
		}}
	variants := []*messageVariant{direct, proxied}
	for _, v := range variants { // warm-up
		if _, err := roundTrips(ctx, v.url, 500); err != nil {
			return nil, fmt.Errorf("%s: %w", v.name, err)
		}
	}
	h.progress("   %d round trips of %d bytes on 1 connection, then %v of %d connections, per variant per round, %d rounds",
		h.cfg.roundTrips, messageSize, h.cfg.msgDuration, h.cfg.msgConns, h.cfg.rounds)
	for r := range h.cfg.rounds {
		var line []string
		for i := range variants {
			v := variants[(i+r)%len(variants)]
			samples, err := roundTrips(ctx, v.url, h.cfg.roundTrips)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", v.name, err)
			}
			v.rttP50 = append(v.rttP50, percentile(samples, 50).Seconds())
			v.rttP99 = append(v.rttP99, percentile(samples, 99).Seconds())
			pids, err := v.pids()
			if err != nil {
				return nil, err
			}
			rate, cpu, busy, err := echoLoad(ctx, v.url, h.cfg.msgConns, h.cfg.msgDuration, pids)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", v.name, err)
			}
			v.rate = append(v.rate, rate)
			v.cpu = append(v.cpu, cpu.Seconds())
			line = append(line, fmt.Sprintf("%s rtt %s, %s/s, %s CPU (%s)", shortName(v.name), fmtSec(v.rttP50[r]), fmtCount(v.rate[r]), fmtSec(v.cpu[r]), busy))
		}
		h.progress("   round %d/%d: %s", r+1, h.cfg.rounds, strings.Join(line, "; "))
	}

	rttRatio := ratio(proxied.rttP50, direct.rttP50)
	rateRatio := ratio(direct.rate, proxied.rate)
	cpuRatio := ratio(proxied.cpu, direct.cpu)
	return []row{
		{scenario: scenRTT, variant: direct.name, figure: fmtSec(direct.rttP50.median()) + " / " + fmtSec(direct.rttP99.median()),
			spread: "p50 " + spreadOf(direct.rttP50, fmtSec), ratio: "1.00×", target: "—", met: "—"},
		{variant: proxied.name, figure: fmtSec(proxied.rttP50.median()) + " / " + fmtSec(proxied.rttP99.median()),
			spread: "p50 " + spreadOf(proxied.rttP50, fmtSec),
			ratio:  ratioCell(rttRatio) + " direct (p50); p99 " + fmtRatio(ratio(proxied.rttP99, direct.rttP99).median()),
			target: "direct beats proxied", met: beats(rttRatio.median(), "faster")},
		{scenario: fmt.Sprintf(scenRate, h.cfg.msgConns), variant: direct.name, figure: fmtCount(direct.rate.median()) + "/s",
			spread: spreadOf(direct.rate, fmtCount), ratio: ratioCell(rateRatio) + " proxied", target: "direct beats proxied", met: beats(rateRatio.median(), "more")},
		{variant: proxied.name, figure: fmtCount(proxied.rate.median()) + "/s", spread: spreadOf(proxied.rate, fmtCount), ratio: "1.00×", target: "—", met: "—"},
		{scenario: scenCPU, variant: direct.name + " (echo server process)", figure: fmtSec(direct.cpu.median()),
			spread: spreadOf(direct.cpu, fmtSec), ratio: "1.00×", target: "—", met: "—"},
		{variant: proxied.name + " (echo server + NGINX worker)", figure: fmtSec(proxied.cpu.median()),
			spread: spreadOf(proxied.cpu, fmtSec), ratio: ratioCell(cpuRatio) + " direct", target: "direct beats proxied", met: beats(cpuRatio.median(), "less CPU")},
	}, nil
}

// beats says by how much direct beat proxied, given the ratio in direct's
// favour (above 1 when it won).
func beats(x float64, what string) string {
	if x <= 1 {
		return "**no**"
	}
	return fmt.Sprintf("yes, %.2f× %s", x, what)
}

// roundTrips opens a connection to url and times n echo round trips of
// messageSize bytes, one after the other.
func roundTrips(ctx context.Context, url string, n int) ([]time.Duration, error) {
	c, err := dialEcho(ctx, url)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	msg := make([]byte, messageSize)
	samples := make([]time.Duration, 0, n)
	c.SetReadDeadline(time.Now().Add(time.Minute))
	for range n {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		start := time.Now()
		if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			return nil, err
		}
		if _, _, err := c.ReadMessage(); err != nil {
			return nil, err
		}
		samples = append(samples, time.Since(start))
	}
	return samples, nil
}

// echoLoad runs conns connections to url for d, each sending its next
// message when the echo of the last one arrives, and returns the round
// trips completed per second and the CPU the processes pids used per round
// trip meanwhile.
func echoLoad(ctx context.Context, url string, conns int, d time.Duration, pids []int) (rate float64, cpuPer time.Duration, busy string, err error) {
	cs := make([]*websocket.Conn, conns)
	defer func() {
		for _, c := range cs {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range cs {
		c, err := dialEcho(ctx, url)
		if err != nil {
			return 0, 0, "", err
		}
		cs[i] = c
	}
	self0, cpu0, err := cpuTimes(pids)
	if err != nil {
		return 0, 0, "", err
	}
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	start := time.Now()
	stop := start.Add(d)
	for _, c := range cs {
		wg.Go(func() {
			msg := make([]byte, messageSize)
			c.SetReadDeadline(stop.Add(30 * time.Second))
			n := int64(0)
			for time.Now().Before(stop) && ctx.Err() == nil {
				if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
					errs <- err
					break
				}
				if _, _, err := c.ReadMessage(); err != nil {
					errs <- err
					break
				}
				n++
			}
			total.Add(n)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	self1, cpu1, err := cpuTimes(pids)
	if err != nil {
		return 0, 0, "", err
	}
	select {
	case err := <-errs:
		return 0, 0, "", err
	default:
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, "", err
	}
	n := total.Load()
	if n == 0 {
		return 0, 0, "", errors.New("no round trip completed")
	}
	// How busy each side was, in cores: a side near its cores' count
	// bounds the rate.
	busy = fmt.Sprintf("server %.0f%%, client %.0f%% of a core", 100*(cpu1-cpu0).Seconds()/elapsed.Seconds(), 100*(self1-self0).Seconds()/elapsed.Seconds())
	return float64(n) / elapsed.Seconds(), (cpu1 - cpu0) / time.Duration(n), busy, nil
}

// dialEcho opens a plain connection to the echo server (no redirect on the
// way: scenario 3 measures what comes after it).
func dialEcho(ctx context.Context, url string) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	return c, err
}
