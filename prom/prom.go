// Package prom exports what a [wsredirect.Middleware] decides and the state
// of its fleet as Prometheus metrics. A [Collector] counts each upgrade's
// decision through Options.OnDecision and reads the Middleware's members,
// drains and live connections when it is scraped:
//
//	m := prom.New()                // a prometheus.Collector
//	opts.OnDecision = m.OnDecision // counts each upgrade's decision
//	mw := wsredirect.MustNew(opts) // your middleware, built as before
//	m.Watch(mw)                    // gauges and move counters read from mw at scrape time
//	reg.MustRegister(m)
//
// The metrics, with their labels:
//
//	wsredirect_upgrades_total                                    counter: upgrades decided
//	wsredirect_upgrades_passed_total{rule}                       counter: passed to the app
//	wsredirect_upgrades_redirected_total{rule, member, answer}   counter: redirected
//	wsredirect_upgrades_refused_total{rule, code, answer}        counter: refused
//	wsredirect_decision_duration_seconds                         histogram: Decision.Elapsed
//	wsredirect_members                                           gauge: fleet members
//	wsredirect_members_draining                                  gauge: members with a drain recorded
//	wsredirect_self_draining                                     gauge: 1 while this node drains
//	wsredirect_self_drain_ratio                                  gauge: share of its keys handed off
//	wsredirect_tracked_connections                               gauge: Middleware.Tracked
//	wsredirect_connections_moved_total                           counter: tracked connections moved
//	wsredirect_connections_cut_total                             counter: tracked connections cut
//
// rule is the name of the rule that decided ("" when none did), member the
// fleet member a Shard rule chose ("" for other targets), code the HTTP
// status of a refusal (500: a bug in the rule), and answer "status" or
// "close" (a close frame, for browsers). Those are all the labels: never
// anything a client sends (keys, paths, hosts, URLs), so the number of
// series is bounded by the configuration whatever the traffic. (Counters of
// members that left the fleet stay until the process restarts, as
// Prometheus counters do; give user rules fixed names.)
//
// Every metric is named wsredirect_…; to prefix them or add labels (one
// Collector per Middleware when a process runs several), register through
// [prometheus.WrapRegistererWithPrefix] or [prometheus.WrapRegistererWith].
package prom

import (
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsredirect/wsredirect"
)

// decisionBuckets are the upper bounds of the decision time histogram:
// 100 ns to 10 ms. Built-in rules decide in tens to hundreds of
// nanoseconds; the upper buckets catch slow user rules.
var decisionBuckets = [...]time.Duration{
	100, 250, 500,
	1 * time.Microsecond, 2500, 5 * time.Microsecond,
	10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond,
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	1 * time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond,
}

// Collector is a [prometheus.Collector] for one Middleware: counters and a
// histogram fed by [Collector.OnDecision], and gauges and move counters
// read from the Middleware given to [Collector.Watch] at scrape time. Build
// it with [New]; it is safe for concurrent use.
type Collector struct {
	passed     *prometheus.CounterVec
	redirected *prometheus.CounterVec
	refused    *prometheus.CounterVec

	// fast finds a decision's counter by where its label strings are
	// stored: one hash of a fixed-size key and no allocation. The engine
	// hands OnDecision the same rule name and member ID strings each time,
	// so the few entries settle early. It is copied on write and started
	// afresh when full, so strings that keep changing (a member list
	// rebuilt from a control plane) cannot grow it.
	fast atomic.Pointer[map[fastKey]prometheus.Counter]
	mu   sync.Mutex // serializes changes to fast and series
	// series maps each label set seen to its counter, by value.
	series map[seriesKey]prometheus.Counter

	// elapsed is the decision time histogram, kept as plain atomic
	// counters (two adds a decision) and exposed at scrape time; its count
	// is wsredirect_upgrades_total too.
	elapsed struct {
		counts [len(decisionBuckets) + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
		sum    atomic.Int64                            // nanoseconds
	}

	mw atomic.Pointer[wsredirect.Middleware]

	upgrades, elapsedDesc                                           *prometheus.Desc
	members, draining, selfDraining, selfRatio, tracked, moved, cut *prometheus.Desc
}

// seriesKey is the labels of one decision counter: action picks the
// metric, and only the fields that metric is labelled by are set.
type seriesKey struct {
	action wsredirect.Action
	close  bool
	code   int
	rule   string
	member string
}

// fastKey is a seriesKey with its strings as pointer and length: the
// pointers keep the strings alive, and a string's bytes never change, so
// equal fastKeys are equal seriesKeys. Its fields leave no padding, so it
// hashes and compares as one block of memory.
type fastKey struct {
	rule, member       *byte
	ruleLen, memberLen int
	meta               uint64 // action | close<<8 | code<<16
}

// maxFast bounds the fast map; more entries than that mean the strings
// keep changing, and it starts afresh.
const maxFast = 1024

func (k *seriesKey) fast() fastKey {
	meta := uint64(k.action) | uint64(k.code)<<16
	if k.close {
		meta |= 1 << 8
	}
	return fastKey{
		rule: unsafe.StringData(k.rule), ruleLen: len(k.rule),
		member: unsafe.StringData(k.member), memberLen: len(k.member),
		meta: meta,
	}
}

// Label values of "answer".
const (
	answerStatus = "status"
	answerClose  = "close"
)

// New returns a Collector. Set its OnDecision as Options.OnDecision before
// building the Middleware, give the Middleware to Watch, and register the
// Collector.
func New() *Collector {
	c := &Collector{
		passed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsredirect_upgrades_passed_total",
			Help: `Upgrade requests passed to the wrapped handler, by the rule that served them here ("" when no rule decided).`,
		}, []string{"rule"}),
		redirected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsredirect_upgrades_redirected_total",
			Help: `Upgrade requests redirected, by rule, fleet member sent to ("" for targets that are not members) and answer (status: an HTTP redirect; close: a close frame, for browsers).`,
		}, []string{"rule", "member", "answer"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsredirect_upgrades_refused_total",
			Help: "Upgrade requests refused, by rule, HTTP status code (500: a bug in the rule) and answer (status or close).",
		}, []string{"rule", "code", "answer"}),
		upgrades: prometheus.NewDesc("wsredirect_upgrades_total",
			"WebSocket upgrade requests decided by the middleware: passed, redirected and refused.", nil, nil),
		elapsedDesc: prometheus.NewDesc("wsredirect_decision_duration_seconds",
			"Time the rules took to decide an upgrade request.", nil, nil),
		members: prometheus.NewDesc("wsredirect_members",
			"Fleet members, draining ones included.", nil, nil),
		draining: prometheus.NewDesc("wsredirect_members_draining",
			"Fleet members with a drain recorded, started or scheduled.", nil, nil),
		selfDraining: prometheus.NewDesc("wsredirect_self_draining",
			"1 when this node (Options.Self) is a draining member, else 0.", nil, nil),
		selfRatio: prometheus.NewDesc("wsredirect_self_drain_ratio",
			"Share of this node's keys handed off by its drain, from 0 to 1 over its ramp.", nil, nil),
		tracked: prometheus.NewDesc("wsredirect_tracked_connections",
			"Open WebSocket connections registered with Track.", nil, nil),
		moved: prometheus.NewDesc("wsredirect_connections_moved_total",
			"Tracked connections the middleware moved as their key's owner changed: sent their close frame or cue.", nil, nil),
		cut: prometheus.NewDesc("wsredirect_connections_cut_total",
			"Tracked connections the middleware closed under the app because their move's close frame or cue could not be written in time.", nil, nil),
	}
	c.fast.Store(&map[fastKey]prometheus.Counter{})
	c.series = map[seriesKey]prometheus.Counter{}
	return c
}

// OnDecision counts one upgrade's decision; its shape is
// Options.OnDecision's. It does not allocate once a label set has been
// seen. To keep an OnDecision of your own, call both:
//
//	opts.OnDecision = func(r *http.Request, d wsredirect.Decision) {
//		m.OnDecision(r, d)
//		mine(r, d)
//	}
func (c *Collector) OnDecision(_ *http.Request, d wsredirect.Decision) {
	k := seriesKey{action: d.Action, rule: d.Rule}
	switch d.Action {
	case wsredirect.Pass:
	case wsredirect.Redirect:
		k.member, k.close = d.Member, d.Close
	default:
		k.action, k.code, k.close = wsredirect.Refuse, d.Status, d.Close
	}
	ctr, ok := (*c.fast.Load())[k.fast()]
	if !ok {
		ctr = c.add(k)
	}
	ctr.Inc()
	i := 0
	for i < len(decisionBuckets) && d.Elapsed > decisionBuckets[i] {
		i++
	}
	c.elapsed.counts[i].Add(1)
	c.elapsed.sum.Add(int64(d.Elapsed))
}

// add resolves the counter for a label set, or for its strings' storage,
// not seen before.
func (c *Collector) add(k seriesKey) prometheus.Counter {
	c.mu.Lock()
	defer c.mu.Unlock()
	fk := k.fast()
	old := *c.fast.Load()
	if ctr, ok := old[fk]; ok {
		return ctr
	}
	ctr, ok := c.series[k]
	if !ok {
		answer := answerStatus
		if k.close {
			answer = answerClose
		}
		// The core refuses rule names and member IDs that are no valid
		// label, but a Decision may come from anywhere: label values are
		// made valid rather than let a request panic here.
		rule, member := labelValue(k.rule), labelValue(k.member)
		switch k.action {
		case wsredirect.Pass:
			ctr = c.passed.WithLabelValues(rule)
		case wsredirect.Redirect:
			ctr = c.redirected.WithLabelValues(rule, member, answer)
		default:
			ctr = c.refused.WithLabelValues(rule, strconv.Itoa(k.code), answer)
		}
		c.series[k] = ctr
	}
	m := map[fastKey]prometheus.Counter{}
	if len(old) < maxFast {
		m = maps.Clone(old)
	}
	m[fk] = ctr
	c.fast.Store(&m)
	return ctr
}

// labelValue makes s a valid label value of bounded length: invalid UTF-8
// becomes U+FFFD, and more than 128 bytes is cut.
func labelValue(s string) string {
	if len(s) > 128 {
		s = s[:128]
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// Watch makes the Collector report mw's fleet and live connections when it
// is scraped: members, drains, tracked connections and how many of them
// the middleware moved, or cut, as their keys' owners changed (see
// [wsredirect.Middleware.Moves]). Until then those metrics are left out; a
// later Watch replaces mw, and Watch(nil) stops reporting them.
func (c *Collector) Watch(mw *wsredirect.Middleware) {
	c.mw.Store(mw)
}

// Describe implements [prometheus.Collector].
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	c.passed.Describe(ch)
	c.redirected.Describe(ch)
	c.refused.Describe(ch)
	for _, d := range []*prometheus.Desc{c.upgrades, c.elapsedDesc, c.members, c.draining, c.selfDraining, c.selfRatio, c.tracked, c.moved, c.cut} {
		ch <- d
	}
}

// Collect implements [prometheus.Collector].
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.passed.Collect(ch)
	c.redirected.Collect(ch)
	c.refused.Collect(ch)

	var n uint64
	buckets := make(map[float64]uint64, len(decisionBuckets))
	for i, le := range decisionBuckets {
		n += c.elapsed.counts[i].Load()
		buckets[le.Seconds()] = n
	}
	n += c.elapsed.counts[len(decisionBuckets)].Load()
	sum := time.Duration(c.elapsed.sum.Load()).Seconds()
	ch <- prometheus.MustNewConstMetric(c.upgrades, prometheus.CounterValue, float64(n))
	ch <- prometheus.MustNewConstHistogram(c.elapsedDesc, n, sum, buckets)

	mw := c.mw.Load()
	if mw == nil {
		return
	}
	s := mw.State()
	members := s.Members()
	draining := 0
	for _, m := range members {
		if !m.DrainingSince.IsZero() {
			draining++
		}
	}
	on, ratio := s.Draining()
	moved, cut := mw.Moves()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	gauge(c.members, float64(len(members)))
	gauge(c.draining, float64(draining))
	gauge(c.selfDraining, b2f(on))
	gauge(c.selfRatio, ratio)
	gauge(c.tracked, float64(mw.Tracked()))
	ch <- prometheus.MustNewConstMetric(c.moved, prometheus.CounterValue, float64(moved))
	ch <- prometheus.MustNewConstMetric(c.cut, prometheus.CounterValue, float64(cut))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
