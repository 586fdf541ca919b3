package main

import (
	"math"
	"sync"
	"time"
)

const (
	sampleEvery = 500 * time.Millisecond
	samplesKept = 120 // a minute
)

// stats samples, every sampleEvery, each node's open connections and the
// redirects per second to it (by any server: new clients sent there), and
// the front door's redirects per second, keeping the last samplesKept for
// the page's charts.
type stats struct {
	f *fleet

	mu    sync.Mutex
	times []int64 // Unix milliseconds
	nodes map[string]*series
	front series
	last  map[string]uint64 // redirect counts at the last sample; "" is the front door's
	lastT time.Time
}

// series is one server's samples, oldest first.
type series struct {
	Conns []int     `json:"conns,omitempty"`
	Rate  []float64 `json:"rate"` // redirects per second: to the node; the front door's
}

// statsView is the answer of GET /api/stats.
type statsView struct {
	Every int64              `json:"every"` // milliseconds between samples
	Times []int64            `json:"t"`
	Nodes map[string]*series `json:"nodes"`
	Front *series            `json:"front"`
}

func newStats(f *fleet) *stats {
	s := &stats{f: f, nodes: map[string]*series{}, last: map[string]uint64{}}
	s.sample(time.Now()) // the counters' starting point
	return s
}

func (s *stats) run() {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-s.f.ctx.Done():
			return
		case now := <-t.C:
			s.sample(now)
		}
	}
}

func (s *stats) sample(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := s.lastT.IsZero()
	dt := now.Sub(s.lastT).Seconds()
	rate := func(key string, count uint64) float64 {
		prev, seen := s.last[key]
		s.last[key] = count
		if !seen || dt <= 0 {
			return 0
		}
		return math.Round(float64(count-prev)/dt*10) / 10
	}
	for _, n := range s.f.nodes {
		r := rate(n.id, n.redirected.Load())
		if first {
			continue
		}
		sr := s.nodes[n.id]
		if sr == nil {
			sr = &series{}
			s.nodes[n.id] = sr
		}
		sr.Conns = keep(append(sr.Conns, n.tracked()))
		sr.Rate = keep(append(sr.Rate, r))
	}
	fr := rate("", s.f.front.redirects.Load())
	s.lastT = now
	if first {
		return
	}
	s.front.Rate = keep(append(s.front.Rate, fr))
	s.times = keep(append(s.times, now.UnixMilli()))
}

// keep drops the samples older than samplesKept.
func keep[T any](s []T) []T {
	if len(s) > samplesKept {
		return append(s[:0], s[len(s)-samplesKept:]...)
	}
	return s
}

func (s *stats) view() statsView {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := statsView{Every: sampleEvery.Milliseconds(), Times: append([]int64(nil), s.times...), Nodes: map[string]*series{}}
	for id, sr := range s.nodes {
		v.Nodes[id] = &series{Conns: append([]int(nil), sr.Conns...), Rate: append([]float64(nil), sr.Rate...)}
	}
	v.Front = &series{Rate: append([]float64(nil), s.front.Rate...)}
	return v
}
