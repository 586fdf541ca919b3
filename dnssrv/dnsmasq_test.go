package dnssrv_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wsredirect/wsredirect/internal/testtool"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/dnssrv"
)

// dnsmasqBin returns Debian's dnsmasq: /usr/sbin, which is not on every
// user's PATH, else the first on PATH.
func dnsmasqBin(t *testing.T) string {
	t.Helper()
	const sbin = "/usr/sbin/dnsmasq"
	if _, err := os.Stat(sbin); err == nil {
		return sbin
	}
	if p, err := exec.LookPath("dnsmasq"); err == nil {
		return p
	}
	testtool.Missing(t, "the DNS SRV tests need dnsmasq: apt-get install dnsmasq-base (no "+sbin+", none on PATH)")
	return ""
}

// dnsmasq is a DNS server on loopback serving the records it was last
// started with. Its resolver follows it across restarts, which may change
// its port.
type dnsmasq struct {
	t     *testing.T
	bin   string
	addr  atomic.Pointer[string] // host:port; "" before the first start
	dials atomic.Int64           // by resolvers, which dial once per query

	cmd     *exec.Cmd
	exited  chan struct{}
	out     *testtool.Buffer
	queries int // SRV queries logged by earlier runs
}

// startDNSMasq starts dnsmasq with records (dnsmasq flags such as
// --srv-host=...) and stops it when the test ends.
func startDNSMasq(t *testing.T, records ...string) *dnsmasq {
	d := &dnsmasq{t: t, bin: dnsmasqBin(t)}
	d.addr.Store(new(string))
	t.Cleanup(d.stop)
	d.start(records...)
	return d
}

// start runs dnsmasq on a free port of 127.0.0.1 (UDP and TCP), waiting
// until it serves. Ports are drawn below the ephemeral range, where
// TIME-WAIT sockets of other tests' connections, which dnsmasq cannot bind
// over, are rare; a port in use is retried with another.
func (d *dnsmasq) start(records ...string) {
	d.t.Helper()
	for attempt := 1; ; attempt++ {
		port := 20000 + rand.IntN(12000)
		err := d.run(port, records)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "in use") || attempt == 10 {
			d.t.Fatalf("dnsmasq on port %d: %v", port, err)
		}
	}
}

func (d *dnsmasq) run(port int, records []string) error {
	args := append([]string{
		"--no-daemon", "--no-resolv", "--no-hosts",
		"--conf-file=/dev/null", // no /etc/dnsmasq.conf
		"--pid-file",            // none
		"--port=" + strconv.Itoa(port), "--listen-address=127.0.0.1", "--bind-interfaces",
		"--local=/test/", // answers NXDOMAIN, not REFUSED, for the names it lacks
		"--log-queries",
	}, records...)
	out := &testtool.Buffer{}
	cmd := exec.Command(d.bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("exited: %s\n%s", cmd.ProcessState, out)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			d.t.Fatalf("dnsmasq did not serve on %s within 10 s:\n%s", addr, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.cmd, d.exited, d.out = cmd, exited, out
	d.addr.Store(&addr)
	d.t.Logf("dnsmasq serving on %s: %s", addr, strings.Join(records, " "))
	return nil
}

// stop ends dnsmasq, if it runs, and waits for it to exit.
func (d *dnsmasq) stop() {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	d.queries += d.srvQueries()
	d.cmd = nil
}

// restart stops dnsmasq and starts it again with other records.
func (d *dnsmasq) restart(records ...string) {
	d.t.Helper()
	d.stop()
	d.start(records...)
}

// srvQueries returns how many SRV queries the running dnsmasq has logged.
func (d *dnsmasq) srvQueries() int {
	if d.cmd == nil {
		return 0
	}
	return strings.Count(d.out.String(), "query[SRV]")
}

// totalQueries returns how many SRV queries every run has logged.
func (d *dnsmasq) totalQueries() int { return d.queries + d.srvQueries() }

// resolver returns a resolver that asks only this dnsmasq, wherever it
// serves when asked.
func (d *dnsmasq) resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			d.dials.Add(1)
			var dialer net.Dialer
			return dialer.DialContext(ctx, network, *d.addr.Load())
		},
	}
}

// logRecorder is a slog.Handler keeping the records logged, as text.
type logRecorder struct {
	mu   sync.Mutex
	recs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { panic("not used") }
func (l *logRecorder) WithGroup(string) slog.Handler            { panic("not used") }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, b.String())
	return nil
}

// since returns the records logged after the first n.
func (l *logRecorder) since(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.recs[min(n, len(l.recs)):]...)
}

func (l *logRecorder) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs)
}

// hasRecord reports whether a record after the first n has every one of
// parts.
func (l *logRecorder) hasRecord(n int, parts ...string) bool {
	for _, r := range l.since(n) {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(r, p)
		}
		if ok {
			return true
		}
	}
	return false
}

const (
	waitFor = 10 * time.Second
	tick    = 10 * time.Millisecond
)

// TestWatchDNSMasq runs Watch against a real DNS server through a fleet's
// life: first members, an unchanged answer, a change, empty answers, the
// server gone, and its return.
func TestWatchDNSMasq(t *testing.T) {
	dns := startDNSMasq(t,
		"--srv-host=_chat._tcp.fleet.test,node-a.test,9001,0,10",
		"--srv-host=_chat._tcp.fleet.test,node-b.test,9002,0,0",
		"--host-record=node-a.test,127.0.0.1",
		"--host-record=node-b.test,127.0.0.1",
	)

	// A node of the fleet, with a member to start with that DNS does not
	// list (New refuses a Shard rule without members).
	mw, err := wsredirect.New(wsredirect.Options{
		Self:    "ws://node-a.test:9001/chat",
		Members: []wsredirect.Member{{ID: "seed", URL: "ws://seed.test:1"}},
		Rules:   []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))},
	})
	require.NoError(t, err)

	logs := &logRecorder{}
	ctx, cancel := context.WithCancel(context.Background())
	watchErr := make(chan error, 1)
	go func() {
		watchErr <- dnssrv.Watch(ctx, mw, dnssrv.Options{
			Service: "chat", Name: "fleet.test.",
			Scheme: "ws", Path: "/chat",
			Interval: 100 * time.Millisecond,
			Resolver: dns.resolver(),
			Logger:   slog.New(logs),
		})
	}()
	stopped := false
	stopWatch := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-watchErr:
			assert.NoError(t, err, "Watch's return when its context ends")
		case <-time.After(5 * time.Second):
			t.Error("Watch did not return within 5 s of its context's end")
		}
	}
	t.Cleanup(stopWatch)
	defer func() {
		if t.Failed() {
			t.Logf("Watch's log:\n%s", strings.Join(logs.since(0), "\n"))
		}
	}()

	members := func() []wsredirect.Member { return mw.State().Members() }
	a := wsredirect.Member{ID: "node-a.test:9001", URL: "ws://node-a.test:9001/chat", Weight: 10}
	b := wsredirect.Member{ID: "node-b.test:9002", URL: "ws://node-b.test:9002/chat", Weight: 1}
	c := wsredirect.Member{ID: "node-c.test:9003", URL: "ws://node-c.test:9003/chat", Weight: 5}

	// awaitQueries waits until dnsmasq has answered n more SRV queries, so
	// that Watch has seen the answer at least n-1 times.
	awaitQueries := func(n int) {
		t.Helper()
		want := dns.totalQueries() + n
		require.Eventually(t, func() bool { return dns.totalQueries() >= want }, waitFor, tick,
			"dnsmasq was not asked %d more times", n)
	}
	// keepsMembers checks that the members stay want, State and all, over
	// a few lookups.
	keepsMembers := func(want []wsredirect.Member) {
		t.Helper()
		st := mw.State()
		awaitQueries(3)
		assert.Equal(t, want, members())
		assert.Same(t, st, mw.State(), "SetMembers was called")
	}

	t.Run("first answer", func(t *testing.T) {
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			assert.Equal(c, []wsredirect.Member{a, b}, members())
		}, waitFor, tick)
		assert.True(t, logs.hasRecord(0, "INFO dnssrv: members changed", "members=2", "added=[node-a.test:9001 node-b.test:9002] removed=[seed]"), logs.since(0))

		// The node finds itself among the members: it serves its keys and
		// sends the others to b.
		var served, sent int
		for i := range 200 {
			r := httptest.NewRequest(http.MethodGet, "http://fleet.test/chat?room=r"+strconv.Itoa(i), nil)
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
			switch d := mw.Decide(r); {
			case d.Action == wsredirect.Pass:
				served++
			case d.Action == wsredirect.Redirect && d.Target.String() == b.URL:
				sent++
			default:
				t.Errorf("room r%d: %+v", i, d)
			}
		}
		assert.Positive(t, served, "rooms served here")
		assert.Positive(t, sent, "rooms sent to b")
	})

	t.Run("same answer sets nothing", func(t *testing.T) {
		keepsMembers([]wsredirect.Member{a, b})
	})

	since := time.Now().Add(time.Hour).Truncate(time.Second)
	require.NoError(t, mw.DrainMember(a.ID, since, time.Minute))
	drainedA := a
	drainedA.DrainingSince, drainedA.DrainRamp = since, time.Minute

	t.Run("a drain is no change", func(t *testing.T) {
		keepsMembers([]wsredirect.Member{drainedA, b})
	})

	t.Run("changed records", func(t *testing.T) {
		// b becomes a backup (priority 10), which is left out while a
		// priority 0 record is listed; c joins.
		dns.restart(
			"--srv-host=_chat._tcp.fleet.test,node-a.test,9001,0,10",
			"--srv-host=_chat._tcp.fleet.test,node-b.test,9002,10,1",
			"--srv-host=_chat._tcp.fleet.test,node-c.test,9003,0,5",
		)
		require.EventuallyWithT(t, func(col *assert.CollectT) {
			assert.Equal(col, []wsredirect.Member{drainedA, c}, members(), "a's drain kept")
		}, waitFor, tick)
		assert.True(t, logs.hasRecord(0, "INFO dnssrv: members changed", "added=[node-c.test:9003] removed=[node-b.test:9002]"), logs.since(0))
	})
	want := []wsredirect.Member{drainedA, c}

	t.Run("NXDOMAIN keeps the members", func(t *testing.T) {
		n := logs.len()
		dns.restart("--host-record=node-a.test,127.0.0.1")
		require.Eventually(t, func() bool {
			return logs.hasRecord(n, "WARN dnssrv: lookup failed", "name=_chat._tcp.fleet.test.", "no such host")
		}, waitFor, tick, "no warning for NXDOMAIN")
		keepsMembers(want)
	})

	t.Run("no target keeps the members", func(t *testing.T) {
		// An SRV record without a target (".") says the service is not
		// available.
		n := logs.len()
		dns.restart("--srv-host=_chat._tcp.fleet.test")
		require.Eventually(t, func() bool {
			return logs.hasRecord(n, "WARN dnssrv: lookup failed", "no SRV record with a target")
		}, waitFor, tick, "no warning for a record without a target")
		keepsMembers(want)
	})

	t.Run("server gone keeps the members", func(t *testing.T) {
		n := logs.len()
		st := mw.State()
		dns.stop()
		require.Eventually(t, func() bool {
			// Two warnings, so at least one lookup ran after the stop.
			k := 0
			for _, r := range logs.since(n) {
				if strings.Contains(r, "WARN dnssrv: lookup failed") && strings.Contains(r, "127.0.0.1") {
					k++
				}
			}
			return k >= 2
		}, waitFor, tick, "no warnings with the server gone")
		assert.Equal(t, want, members())
		assert.Same(t, st, mw.State(), "SetMembers was called")
	})

	t.Run("server back", func(t *testing.T) {
		n := logs.len()
		dns.start(
			"--srv-host=_chat._tcp.fleet.test,node-a.test,9001,0,10",
			"--srv-host=_chat._tcp.fleet.test,node-b.test,9002,0,20",
		)
		b20 := b
		b20.Weight = 20
		require.EventuallyWithT(t, func(col *assert.CollectT) {
			assert.Equal(col, []wsredirect.Member{drainedA, b20}, members())
		}, waitFor, tick)
		assert.True(t, logs.hasRecord(n, "INFO dnssrv: lookup succeeded again", "members=2"), logs.since(n))
	})

	stopWatch()
	t.Run("stops with its context", func(t *testing.T) {
		// Counted at the resolver: dnsmasq's log of queries may lag.
		q := dns.dials.Load()
		time.Sleep(400 * time.Millisecond) // four intervals
		assert.Equal(t, q, dns.dials.Load(), "lookups after Watch returned")
	})
}

// TestLookupDNSMasq checks Lookup's answers and errors against a real DNS
// server.
func TestLookupDNSMasq(t *testing.T) {
	dns := startDNSMasq(t,
		"--srv-host=_chat._tcp.fleet.test,Node-A.test,443,1,0",
		"--srv-host=_chat._tcp.fleet.test,node-b.test,443,1,3",
		"--srv-host=_chat._tcp.fleet.test,node-c.test,443,2,3",
		"--srv-host=_gone._tcp.fleet.test",
	)
	opts := dnssrv.Options{Service: "chat", Name: "fleet.test.", Scheme: "wss", Resolver: dns.resolver(), Interval: time.Second}
	ctx := context.Background()

	ms, err := dnssrv.Lookup(ctx, opts)
	require.NoError(t, err)
	assert.Equal(t, []wsredirect.Member{
		{ID: "node-a.test:443", URL: "wss://node-a.test:443", Weight: 1},
		{ID: "node-b.test:443", URL: "wss://node-b.test:443", Weight: 3},
	}, ms)

	// The whole name, as Kubernetes and Consul documentation give it.
	whole := opts
	whole.Service, whole.Name = "", "_chat._tcp.fleet.test."
	ms2, err := dnssrv.Lookup(ctx, whole)
	require.NoError(t, err)
	assert.Equal(t, ms, ms2)

	for _, tc := range []struct{ service, errHas string }{
		{"nope", "no such host"},
		{"gone", "dnssrv: lookup _gone._tcp.fleet.test.: no SRV record with a target"},
	} {
		o := opts
		o.Service = tc.service
		_, err := dnssrv.Lookup(ctx, o)
		require.Error(t, err, tc.service)
		assert.Contains(t, err.Error(), tc.errHas)
		assert.True(t, strings.HasPrefix(err.Error(), "dnssrv: "), err.Error())
	}
}

// TestBadOptionsNoLookup checks that Watch and Lookup return bad options
// before asking DNS anything.
func TestBadOptionsNoLookup(t *testing.T) {
	var dialed atomic.Bool
	res := &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		dialed.Store(true)
		return nil, fmt.Errorf("no DNS here")
	}}
	mw := wsredirect.MustNew(wsredirect.Options{Rules: []wsredirect.Rule{wsredirect.Path("ws://x.test", "/x")}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	err := dnssrv.Watch(ctx, mw, dnssrv.Options{Service: "chat", Name: "fleet.test.", Resolver: res})
	require.EqualError(t, err, `dnssrv: Options.Scheme is "": want ws or wss`)
	err = dnssrv.Watch(ctx, nil, dnssrv.Options{Service: "chat", Name: "fleet.test.", Scheme: "ws", Resolver: res})
	require.EqualError(t, err, "dnssrv: nil Middleware")
	_, err = dnssrv.Lookup(ctx, dnssrv.Options{Service: "chat", Scheme: "ws", Resolver: res})
	require.EqualError(t, err, "dnssrv: Options.Name is required")
	assert.False(t, dialed.Load(), "DNS was asked")
}
