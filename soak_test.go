package wsredirect

// The soak test of issue 11: a fleet over loopback under churn.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect/client"
)

// Shape of the soak. The handshake count is WSREDIRECT_SOAK when set.
const (
	soakHandshakes      = 10_000 // default; -short runs 2,000
	soakMinChanges      = 52     // membership changes, at least; more for long runs
	soakDrainCycles     = 2      // drain and undrain of one member: with a ramp, then without
	soakDrainRamp       = 400 * time.Millisecond
	soakDrainLead       = 100 * time.Millisecond // drains take effect this long after they are announced
	soakWorkers         = 48                     // concurrent clients
	soakOvertimeWorkers = 8                      // clients still dialling once the handshakes are done but the churn is not
	soakClients         = 400                    // rooms, one client each
	soakCore            = 3                      // members always in the fleet; one more, the spare, joins and leaves
	soakDialTimeout     = 15 * time.Second
	soakMaxNodeDelay    = 2 * time.Millisecond // between telling one node and the next
)

// soakVersion is one configuration of the fleet, as the churn tells every
// node in turn: the fleet each node builds from version v of the members
// (sharing rings between versions that place keys alike: a ring is 2 MB),
// to ask who owned a key under it. The fleet is per node because during a drain
// the answer depends on who asks: the drainer's successor takes a key at
// once, the others when the ramp reaches it.
type soakVersion struct {
	fleets []*fleet // by node index
}

// ownerAt is State.Owner as node i sees it under this version at a given
// time (drain ramps depend on it).
func (v *soakVersion) ownerAt(i int, key string, at time.Time) string {
	return soakOwner(&State{fleet: v.fleets[i], now: func() time.Time { return at }}, key)
}

func soakOwner(s *State, key string) string {
	m, ok := s.Owner(key)
	if !ok {
		return ""
	}
	return m.ID
}

// soakNode is one server of the fleet. The churn, the only writer of its
// Middleware, brackets every change with two counters: pend is set to the
// version before it is applied and done after (the node's State is swapped
// in between), so a request that reads done before its decision and pend
// after it knows its decision was taken under a version in [done, pend].
type soakNode struct {
	i    int // index in the fleet
	id   string
	url  string
	srv  *httptest.Server
	mw   *Middleware
	pend atomic.Int64
	done atomic.Int64
}

type soakBeforeKey struct{}

type soakBefore struct {
	version int64
	at      time.Time
}

// soakStats are the counts the run reports.
type soakStats struct {
	attempts, handshakes, httpHops      atomic.Int64
	checks, violations                  atomic.Int64
	loops, tooManyHops, otherFailures   atomic.Int64
	postChurn, postChurnFailures        atomic.Int64
	postChurnWrongOwner, postChurnHops2 atomic.Int64
	greetingMismatch, echoFailures      atomic.Int64

	mu      sync.Mutex
	samples []string // first problems, for the log
}

func (st *soakStats) sample(format string, args ...any) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.samples) < 12 {
		st.samples = append(st.samples, fmt.Sprintf(format, args...))
	}
}

// TestSoak runs a fleet of real servers on loopback, each with the same
// Shard rule and members and itself as Self, while concurrent Go clients
// (package client, which follows the 307s) make thousands of handshakes
// and the membership changes under them: a spare member joins and leaves,
// weights change, one member drains and undrains. Nodes are told one after
// the other, as a control plane would, so for a moment some know and some
// do not; a client caught between them during a membership change can be
// sent in a loop, which the client stops. Those dials are counted, not
// failed. Drains are announced a moment ahead of their since, in any
// order; undrains to the undrained node first.
//
// It checks that
//   - no node accepts an upgrade for a key it did not own: the app behind
//     the middleware asks every version of the members the decision can
//     have been taken under (see soakNode) whether this node owned the key
//     as it sees ownership (during a drain the successor takes a key at
//     once, the others when the ramp reaches it), at the request's start
//     or at the app's (ramps move keys with time, one way), and counts a
//     violation when none says so;
//   - every dial after the churn succeeds, with at most one redirect, on
//     the final owner of its key; every client, including those whose dial
//     failed during the churn, then connects once more and holds its
//     connection on its key's final owner.
//
// WSREDIRECT_SOAK=100000 runs 100,000 handshakes instead of 10,000.
func TestSoak(t *testing.T) {
	target := soakHandshakes
	if testing.Short() {
		target = 2_000
	}
	if v := os.Getenv("WSREDIRECT_SOAK"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "WSREDIRECT_SOAK is a number of handshakes")
		require.Positive(t, n, "WSREDIRECT_SOAK")
		target = n
	}
	changes := max(soakMinChanges, target/1000)
	postTarget := max(target/20, 500) // connections opened after the churn, at least
	if testing.Short() {
		changes = 20
	}

	runtime.GC()
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	heapBefore := mem.HeapInuse
	start := time.Now()

	// The fleet: core members n1..n3 and the spare n4, which starts out.
	nodes := make([]*soakNode, soakCore+1)
	byHost := make(map[string]*soakNode)
	for i := range nodes {
		srv := httptest.NewUnstartedServer(nil)
		n := &soakNode{i: i, id: fmt.Sprintf("n%d", i+1), url: "ws://" + srv.Listener.Addr().String(), srv: srv}
		nodes[i] = n
		byHost[srv.Listener.Addr().String()] = n
	}
	spare, drainer := nodes[soakCore], nodes[1]
	current := make([]Member, soakCore)
	for i := range current {
		current[i] = Member{ID: nodes[i].id, URL: nodes[i].url}
	}

	steps := soakPlan(changes, soakDrainCycles)
	versions := make([]*soakVersion, len(steps)+1) // written before any node sees the version
	rings := make(map[string]*fleet)               // by placement
	selves := make([]*Target, len(nodes))
	for i, n := range nodes {
		var err error
		selves[i], err = parseTarget(n.url)
		require.NoError(t, err)
	}
	newVersion := func(members []Member) (*soakVersion, error) {
		v := &soakVersion{fleets: make([]*fleet, len(nodes))}
		sig := soakPlacement(members)
		for i := range nodes {
			f, err := newFleet(members, selves[i], rings[sig])
			if err != nil {
				return nil, err
			}
			rings[sig], v.fleets[i] = f, f
		}
		return v, nil
	}
	var err error
	versions[0], err = newVersion(current)
	require.NoError(t, err)

	var st soakStats
	var app sync.WaitGroup
	up := websocket.Upgrader{}
	for _, n := range nodes {
		n.mw = MustNew(Options{Self: n.url, Members: current, Rules: []Rule{Shard(QueryKey("room"))}})
		serve := n.mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			app.Add(1)
			defer app.Done()
			at, hi := time.Now(), n.pend.Load()
			before := r.Context().Value(soakBeforeKey{}).(soakBefore)
			key := r.URL.Query().Get("room")
			st.checks.Add(1)
			if !soakOwned(versions, before.version, hi, n, key, before.at, at) {
				st.violations.Add(1)
				st.sample("violation: %s accepted room %s; versions %d..%d name %s",
					n.id, key, before.version, hi, soakOwners(versions, before.version, hi, n, key, before.at, at))
			}
			c, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			if err := c.WriteMessage(websocket.TextMessage, []byte(n.id)); err != nil {
				return
			}
			for {
				mt, msg, err := c.ReadMessage()
				if err != nil {
					return
				}
				if err := c.WriteMessage(mt, msg); err != nil {
					return
				}
			}
		}))
		n.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			before := soakBefore{version: n.done.Load(), at: time.Now()}
			serve.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), soakBeforeKey{}, before)))
		})
		n.srv.Start()
	}
	defer func() {
		for _, n := range nodes {
			n.srv.Close()
		}
	}()

	keys := make([]string, soakClients)
	for i := range keys {
		keys[i] = fmt.Sprintf("room-%d", i)
	}
	failedDuringChurn := make([]atomic.Bool, len(keys))

	ctx := t.Context()
	if dl, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-30*time.Second))
		defer cancel()
	}

	// The churn: step j goes out no sooner than (j+1)/(len(steps)+1) of 80%
	// of the handshakes have been tried, so it spans the run however fast
	// the clients are. The churn is usually the slower (a membership change
	// rebuilds every node's ring, ~0.1 s each under the race detector), and
	// the clients go on until it ends.
	var churnDone atomic.Bool
	var final atomic.Pointer[soakVersion]
	var churnTime time.Duration
	var memberChanges, drains int
	churnErr := make(chan error, 1)
	go func() {
		churnErr <- func() error {
			defer churnDone.Store(true)
			rng := rand.New(rand.NewPCG(uint64(start.UnixNano()), 11))
			churnStart := time.Now()
			span := int64(target) * 8 / 10
			for j, step := range steps {
				for st.attempts.Load() < int64(j+1)*span/int64(len(steps)+1) {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					time.Sleep(time.Millisecond)
				}
				v := int64(j + 1)
				order := slices.Clone(nodes)
				var apply func(n *soakNode) error
				switch step {
				case soakMembers:
					current = soakChangeMembers(rng, current, spare)
					apply = func(n *soakNode) error { return n.mw.SetMembers(current...) }
					rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
					memberChanges++
				case soakDrain, soakDrainNoRamp:
					// A since a moment ahead, longer than the news takes
					// to reach every node (a drain rebuilds no ring), so
					// the order nodes hear of it in does not matter.
					since, ramp := time.Now().Add(soakDrainLead), soakDrainRamp
					if step == soakDrainNoRamp {
						ramp = 0
					}
					soakSetDrain(current, drainer.id, since, ramp)
					apply = func(n *soakNode) error { return n.mw.DrainMember(drainer.id, since, ramp) }
					rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
					drains++
				case soakUndrain:
					soakSetDrain(current, drainer.id, time.Time{}, 0)
					apply = func(n *soakNode) error { return n.mw.DrainMember(drainer.id, time.Time{}, 0) }
					// Tell the undrained node first.
					order = append([]*soakNode{drainer}, slices.DeleteFunc(order, func(n *soakNode) bool { return n == drainer })...)
				}
				var err error
				if versions[v], err = newVersion(current); err != nil {
					return fmt.Errorf("step %d (%s): %w", j, step, err)
				}
				for i, n := range order {
					if i > 0 {
						time.Sleep(time.Duration(rng.Int64N(int64(soakMaxNodeDelay))))
					}
					n.pend.Store(v)
					if err := apply(n); err != nil {
						return fmt.Errorf("step %d (%s) on %s: %w", j, step, n.id, err)
					}
					n.done.Store(v)
					// The reference must be what the node holds: the same
					// members, and the same owner for every key at one time.
					held := *n.mw.State()
					if got, want := held.Members(), versions[v].fleets[n.i].members; !slices.EqualFunc(got, want, soakSameMember) {
						return fmt.Errorf("step %d on %s: node holds %v, reference %v", j, n.id, got, want)
					}
					at := time.Now()
					held.now = func() time.Time { return at }
					for _, k := range keys {
						if got, want := soakOwner(&held, k), versions[v].ownerAt(n.i, k, at); got != want {
							return fmt.Errorf("step %d on %s: room %s owned by %s, by %s in the reference", j, n.id, k, got, want)
						}
					}
				}
			}
			churnTime = time.Since(churnStart)
			final.Store(versions[len(steps)])
			return nil
		}()
	}()

	// The clients.
	d := &client.Dialer{Dialer: websocket.Dialer{HandshakeTimeout: soakDialTimeout}}
	var next atomic.Int64
	var workers sync.WaitGroup
	for w := range soakWorkers {
		workers.Go(func() {
			for ctx.Err() == nil {
				if st.handshakes.Load() >= int64(target) {
					if churnDone.Load() && st.postChurn.Load() >= int64(postTarget) {
						return
					}
					if w >= soakOvertimeWorkers {
						// Overtime, while the churn finishes: a few clients
						// keep it under traffic.
						return
					}
				}
				i := int(next.Add(1)-1) % len(keys)
				entry := nodes[rand.IntN(len(nodes))]
				post := final.Load() // non-nil: the dial starts after the churn
				st.attempts.Add(1)
				c, landed, err := soakDial(ctx, d, entry, keys[i], byHost, &st)
				if err != nil {
					switch {
					case post != nil:
						st.postChurnFailures.Add(1)
						st.sample("after the churn: %v", err)
					case errors.Is(err, client.ErrLoop):
						st.loops.Add(1)
					case errors.Is(err, client.ErrTooManyHops):
						st.tooManyHops.Add(1)
					default:
						st.otherFailures.Add(1)
						st.sample("during the churn: %v", err)
					}
					if post == nil {
						failedDuringChurn[i].Store(true)
					}
					continue
				}
				if post != nil {
					st.postChurn.Add(1)
					if owner := post.ownerAt(entry.i, keys[i], time.Now()); landed.greeting != owner {
						st.postChurnWrongOwner.Add(1)
						st.sample("after the churn: room %s on %s, final owner %s", keys[i], landed.greeting, owner)
					}
					if landed.hops > 2 {
						st.postChurnHops2.Add(1)
						st.sample("after the churn: room %s took %d handshakes from %s", keys[i], landed.hops, entry.id)
					}
				}
				c.Close()
			}
		})
	}
	workers.Wait()
	require.NoError(t, <-churnErr, "churn")
	require.NoError(t, ctx.Err(), "the soak ran out of time")
	fin := final.Load()
	require.NotNil(t, fin)

	// Every node agrees with the reference on the final owners.
	for _, k := range keys {
		want := fin.ownerAt(0, k, time.Now())
		for _, n := range nodes {
			require.Equal(t, want, soakOwner(n.mw.State(), k), "room %s on %s", k, n.id)
			require.Equal(t, want, fin.ownerAt(n.i, k, time.Now()), "room %s on %s, reference", k, n.id)
		}
	}

	// Every client connects once more, those that failed during the churn
	// included, and holds its connection on its key's final owner.
	finals := make([]*websocket.Conn, len(keys))
	var wrongOwners, finalFailures, failedThenOK atomic.Int64
	var fw sync.WaitGroup
	var fnext atomic.Int64
	for range soakWorkers {
		fw.Go(func() {
			for i := int(fnext.Add(1) - 1); i < len(keys); i = int(fnext.Add(1) - 1) {
				entry := nodes[rand.IntN(len(nodes))]
				c, landed, err := soakDial(ctx, d, entry, keys[i], byHost, &st)
				if err != nil {
					finalFailures.Add(1)
					st.sample("final dial: %v", err)
					continue
				}
				finals[i] = c
				if owner := fin.ownerAt(0, keys[i], time.Now()); landed.greeting != owner {
					wrongOwners.Add(1)
					st.sample("final: room %s on %s, final owner %s", keys[i], landed.greeting, owner)
				} else if failedDuringChurn[i].Load() {
					failedThenOK.Add(1)
				}
			}
		})
	}
	fw.Wait()
	open := 0
	for _, c := range finals {
		if c != nil {
			open++
			c.Close()
		}
	}
	for _, n := range nodes {
		n.srv.Close()
	}
	appDone := make(chan struct{})
	go func() { app.Wait(); close(appDone) }()
	appFinished := true
	select {
	case <-appDone:
	case <-time.After(10 * time.Second):
		appFinished = false
		t.Error("app handlers still running 10s after every client closed")
	}
	elapsed := time.Since(start)

	failedClients := 0
	for i := range failedDuringChurn {
		if failedDuringChurn[i].Load() {
			failedClients++
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&mem)
	heapEnd := mem.HeapInuse // servers closed, fleet still referenced
	// Drop the fleet and the reference rings: what stays is what the run
	// left behind. Not while an app handler may still read versions.
	heapAfter := heapEnd
	if appFinished {
		versions, rings, finals, fin, nodes, byHost = nil, nil, nil, nil, nil, nil
		final.Store(nil)
		runtime.GC()
		runtime.ReadMemStats(&mem)
		heapAfter = mem.HeapInuse
	}

	failedDials := st.loops.Load() + st.tooManyHops.Load() + st.otherFailures.Load()
	t.Logf("soak: %d nodes (%d core + a spare), %d workers, %d rooms, race detector %v", soakCore+1, soakCore, soakWorkers, len(keys), raceEnabled)
	t.Logf("handshakes: %d opened connections (%d after the churn, %d in the final round), %d HTTP handshakes with redirects, %d dials tried",
		st.handshakes.Load(), st.postChurn.Load(), open, st.httpHops.Load(), st.attempts.Load()+int64(len(keys)))
	t.Logf("churn: %d membership changes and %d drains (one undrain each) on %d nodes in %v",
		memberChanges, drains, soakCore+1, churnTime.Round(time.Millisecond))
	t.Logf("failed during the churn: %d dials (%d loops, %d over the hop limit, %d other) by %d clients; %d of them on the final owner afterwards",
		failedDials, st.loops.Load(), st.tooManyHops.Load(), st.otherFailures.Load(), failedClients, failedThenOK.Load())
	t.Logf("ownership: %d accepts checked, %d violations; after the churn: %d failed dials, %d wrong owners, %d with more than one redirect; final round: %d wrong owners, %d failed dials",
		st.checks.Load(), st.violations.Load(), st.postChurnFailures.Load(), st.postChurnWrongOwner.Load(), st.postChurnHops2.Load(), wrongOwners.Load(), finalFailures.Load())
	t.Logf("heap in use: %.1f MiB before, %.1f MiB at the end (fleet closed, rings still referenced), %.1f MiB after dropping them; wall time %v",
		mib(heapBefore), mib(heapEnd), mib(heapAfter), elapsed.Round(time.Millisecond))
	for _, s := range st.samples {
		t.Log(s)
	}

	assert.GreaterOrEqual(t, st.handshakes.Load(), int64(target), "handshakes")
	assert.Equal(t, changes, memberChanges, "membership changes")
	assert.Equal(t, soakDrainCycles, drains, "drains")
	assert.Zero(t, st.violations.Load(), "upgrades accepted by a node that did not own the key")
	assert.Positive(t, st.checks.Load())
	assert.Zero(t, st.otherFailures.Load(), "dials that failed during the churn other than by a loop or the hop limit")
	assert.Zero(t, st.greetingMismatch.Load(), "greetings from a node other than the one the client reached")
	assert.Zero(t, st.echoFailures.Load(), "echoes")
	assert.Positive(t, st.postChurn.Load(), "dials after the churn")
	assert.Zero(t, st.postChurnFailures.Load(), "dials that failed after the churn")
	assert.Zero(t, st.postChurnWrongOwner.Load(), "dials after the churn that landed on another node than the final owner")
	assert.Zero(t, st.postChurnHops2.Load(), "dials after the churn redirected more than once")
	assert.Zero(t, finalFailures.Load(), "final dials that failed")
	assert.Zero(t, wrongOwners.Load(), "final connections on another node than the final owner")
	assert.Equal(t, len(keys), open, "final connections")
	assert.Equal(t, int64(failedClients), failedThenOK.Load(), "clients that failed during the churn, on the final owner afterwards")
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// soakLanding is where a dial ended.
type soakLanding struct {
	greeting string // the name the node greeted with
	hops     int    // HTTP handshakes, the opening one included
}

// soakDial dials room key from entry, following redirects, and checks the
// greeting names the node reached and the connection echoes. The
// connection is returned open.
func soakDial(ctx context.Context, d *client.Dialer, entry *soakNode, key string, byHost map[string]*soakNode, st *soakStats) (*websocket.Conn, soakLanding, error) {
	dctx, cancel := context.WithTimeout(ctx, soakDialTimeout)
	defer cancel()
	c, _, hops, err := d.DialTrace(dctx, entry.url+"/soak?room="+key, nil)
	if err != nil {
		var ce *client.Error
		if errors.As(err, &ce) {
			st.httpHops.Add(int64(len(ce.Hops)))
		}
		return nil, soakLanding{}, err
	}
	st.httpHops.Add(int64(len(hops)))
	st.handshakes.Add(1)
	land := soakLanding{hops: len(hops)}
	reached := "?"
	host, _, _ := strings.Cut(strings.TrimPrefix(hops[len(hops)-1].URL, "ws://"), "/")
	if n := byHost[host]; n != nil {
		reached = n.id
	}
	c.SetReadDeadline(time.Now().Add(soakDialTimeout))
	_, msg, err := c.ReadMessage()
	if err != nil {
		st.echoFailures.Add(1)
		st.sample("greeting on %s for room %s: %v", reached, key, err)
		return c, land, nil
	}
	land.greeting = string(msg)
	if land.greeting != reached {
		st.greetingMismatch.Add(1)
		st.sample("room %s: reached %s, greeted by %s", key, reached, land.greeting)
	}
	ping := []byte("ping " + key)
	if err := c.WriteMessage(websocket.TextMessage, ping); err != nil {
		st.echoFailures.Add(1)
		return c, land, nil
	}
	if _, echo, err := c.ReadMessage(); err != nil || string(echo) != string(ping) {
		st.echoFailures.Add(1)
		st.sample("echo on %s for room %s: %q, %v", reached, key, echo, err)
	}
	return c, land, nil
}

// soakOwned reports whether node n owned key, as it sees ownership, under
// any version in [lo, hi], at from or at to.
func soakOwned(versions []*soakVersion, lo, hi int64, n *soakNode, key string, from, to time.Time) bool {
	for v := lo; v <= hi; v++ {
		if versions[v].ownerAt(n.i, key, from) == n.id || versions[v].ownerAt(n.i, key, to) == n.id {
			return true
		}
	}
	return false
}

// soakOwners lists who owned key under versions lo..hi, for a report.
func soakOwners(versions []*soakVersion, lo, hi int64, n *soakNode, key string, from, to time.Time) string {
	var b strings.Builder
	for v := lo; v <= hi; v++ {
		fmt.Fprintf(&b, " v%d:%s/%s", v, versions[v].ownerAt(n.i, key, from), versions[v].ownerAt(n.i, key, to))
	}
	return b.String()
}

type soakStep int

const (
	soakMembers soakStep = iota
	soakDrain
	soakDrainNoRamp
	soakUndrain
)

func (s soakStep) String() string {
	return [...]string{"members", "drain with a ramp", "drain", "undrain"}[s]
}

// soakPlan interleaves changes membership changes with cycles of drain and
// undrain, a few membership changes apart, the last undrain well before the
// end so the final view has no drain.
func soakPlan(changes, cycles int) []soakStep {
	var steps []soakStep
	seg := changes / (cycles + 1) // membership changes before each drain
	hold := max(1, seg/3)         // membership changes while draining
	m := 0
	for c := range cycles {
		for ; m < (c+1)*seg; m++ {
			steps = append(steps, soakMembers)
		}
		if c%2 == 0 {
			steps = append(steps, soakDrain)
		} else {
			steps = append(steps, soakDrainNoRamp)
		}
		for range hold {
			steps = append(steps, soakMembers)
			m++
		}
		steps = append(steps, soakUndrain)
	}
	for ; m < changes; m++ {
		steps = append(steps, soakMembers)
	}
	return steps
}

// soakChangeMembers makes one membership change: the spare joins or
// leaves, or n1's or n3's weight flips. Eight placements in all, so the
// reference rings stay few.
func soakChangeMembers(rng *rand.Rand, members []Member, spare *soakNode) []Member {
	members = slices.Clone(members)
	switch rng.IntN(3) {
	case 0:
		if i := slices.IndexFunc(members, func(m Member) bool { return m.ID == spare.id }); i >= 0 {
			return slices.Delete(members, i, i+1)
		}
		return append(members, Member{ID: spare.id, URL: spare.url})
	case 1:
		members[0].Weight = 3 - max(members[0].Weight, 1) // 1 ↔ 2
	default:
		members[2].Weight = 4 - max(members[2].Weight, 1) // 1 ↔ 3
	}
	return members
}

func soakSetDrain(members []Member, id string, since time.Time, ramp time.Duration) {
	for i := range members {
		if members[i].ID == id {
			members[i].DrainingSince, members[i].DrainRamp = since, ramp
		}
	}
}

// soakPlacement is what places keys: IDs and weights.
func soakPlacement(members []Member) string {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "%s:%d,", m.ID, max(m.Weight, 1))
	}
	return b.String()
}

func soakSameMember(a, b Member) bool {
	return a.ID == b.ID && a.URL == b.URL && a.Weight == b.Weight &&
		a.DrainingSince.Equal(b.DrainingSince) && a.DrainRamp == b.DrainRamp
}
