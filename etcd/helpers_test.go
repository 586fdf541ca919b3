package etcd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsredirect/wsredirect"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// server is an embedded etcd on loopback, which a test can stop and start
// again on the same ports and data.
type server struct {
	t                   testing.TB
	dir                 string
	clientAddr, peerAdr string
	e                   *embed.Etcd
}

func startServer(t testing.TB) *server {
	t.Helper()
	s := &server{t: t, dir: t.TempDir(), clientAddr: freeAddr(t), peerAdr: freeAddr(t)}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// freeAddr returns a loopback address with a port free now. A peer URL
// cannot use port 0: the cluster's configuration names it.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (s *server) start() {
	s.t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = s.dir
	cu := url.URL{Scheme: "http", Host: s.clientAddr}
	pu := url.URL{Scheme: "http", Host: s.peerAdr}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		s.t.Fatalf("starting etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		s.t.Fatal("etcd did not start within 30 s")
	}
	s.e = e
}

func (s *server) stop() {
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}

func (s *server) endpoint() string { return s.clientAddr }

// newClient returns a client of endpoint, closed when the test ends.
func newClient(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
		// Reconnect quickly once etcd is back, well within a lease's TTL
		// (gRPC's default backoff grows to 2 minutes).
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: time.Second,
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// logs collects what sources log, and shows it with the test's output.
type logs struct {
	t    testing.TB
	name string
	mu   sync.Mutex
	b    strings.Builder
}

func newLogs(t testing.TB, name string) *logs { return &logs{t: t, name: name} }

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	l.t.Logf("%s: %s", l.name, strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (l *logs) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.String("time", a.Value.Time().Format("15:04:05.000"))
			}
			return a
		},
	}))
}

func (l *logs) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), substr)
}

// waitLog waits up to d for substr to be logged.
func (l *logs) waitLog(t testing.TB, substr string, d time.Duration) {
	t.Helper()
	waitFor(t, d, fmt.Sprintf("%s to log %q", l.name, substr), func() bool { return l.count(substr) > 0 })
}

// instance is one middleware and the source that feeds it: a node, or a
// front door when self is nil.
type instance struct {
	name string
	self *wsredirect.Member
	mw   *wsredirect.Middleware
	src  *Source
	cli  *clientv3.Client
	logs *logs
}

func memberURL(id string) string { return "ws://" + id + ".test:8080" }

var shardRule = wsredirect.Shard(wsredirect.QueryKey("k"))

// startNode starts node id, with its own client of endpoint as a separate
// process would have. Its source is closed when the test ends.
func startNode(t testing.TB, endpoint, id string, tune ...func(*Options)) *instance {
	t.Helper()
	self := wsredirect.Member{ID: id, URL: memberURL(id)}
	mw, err := wsredirect.New(wsredirect.Options{
		Rules:   []wsredirect.Rule{shardRule},
		Self:    self.URL,
		Members: []wsredirect.Member{self},
	})
	if err != nil {
		t.Fatal(err)
	}
	return startInstance(t, endpoint, id, &self, mw, tune)
}

// startFront starts a front door: a middleware that is no member, built
// with the members read from etcd.
func startFront(t testing.TB, endpoint, name string, tune ...func(*Options)) *instance {
	t.Helper()
	cli := newClient(t, endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	members, err := Members(ctx, cli, "")
	if err != nil {
		t.Fatal(err)
	}
	mw, err := wsredirect.New(wsredirect.Options{Rules: []wsredirect.Rule{shardRule}, Members: members})
	if err != nil {
		t.Fatal(err)
	}
	return startInstance(t, endpoint, name, nil, mw, tune)
}

func startInstance(t testing.TB, endpoint, name string, self *wsredirect.Member, mw *wsredirect.Middleware, tune []func(*Options)) *instance {
	t.Helper()
	in := &instance{name: name, self: self, mw: mw, cli: newClient(t, endpoint), logs: newLogs(t, name)}
	opts := Options{Client: in.cli, Self: self, Logger: in.logs.logger(), Settle: 300 * time.Millisecond}
	for _, f := range tune {
		f(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, err := Start(ctx, mw, opts)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	in.src = src
	t.Cleanup(func() { src.Close() })
	return in
}

// fleetOf returns what the members ids look like from etcd, no drains.
func fleetOf(ids ...string) []wsredirect.Member {
	out := make([]wsredirect.Member, len(ids))
	for i, id := range ids {
		out[i] = wsredirect.Member{ID: id, URL: memberURL(id), Weight: 1}
	}
	slices.SortFunc(out, func(a, b wsredirect.Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// drained returns fleet with member id draining as d says.
func drained(fleet []wsredirect.Member, id string, since time.Time, ramp time.Duration) []wsredirect.Member {
	out := slices.Clone(fleet)
	for i := range out {
		if out[i].ID == id {
			out[i].DrainingSince, out[i].DrainRamp = since, ramp
		}
	}
	return out
}

var testKeys = func() []string {
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("room-%d", i)
	}
	return keys
}()

// converge waits until every instance holds want, and returns how long
// that took since start: every instance then serves want's owners.
func converge(t testing.TB, start time.Time, bound time.Duration, want []wsredirect.Member, ins ...*instance) time.Duration {
	t.Helper()
	var names []string
	for _, in := range ins {
		names = append(names, in.name)
	}
	waitFor(t, bound-time.Since(start), fmt.Sprintf("%v to hold %v", names, ids(want)), func() bool {
		for _, in := range ins {
			if !sameMembers(in.mw.State().Members(), want) {
				return false
			}
		}
		return true
	})
	d := time.Since(start)
	agree(t, want, ins...)
	return d
}

// agree checks that every instance sends each of 10,000 keys to the same
// member as a middleware told want would, once the drains in want have
// taken effect everywhere (before, the members taking a drainer's keys
// over take them first, by design).
func agree(t testing.TB, want []wsredirect.Member, ins ...*instance) {
	t.Helper()
	var settled time.Time
	for _, m := range want {
		if !m.DrainingSince.IsZero() {
			if end := m.DrainingSince.Add(m.DrainRamp); end.After(settled) {
				settled = end
			}
		}
	}
	time.Sleep(time.Until(settled))
	ref, err := wsredirect.New(wsredirect.Options{Rules: []wsredirect.Rule{shardRule}, Members: want})
	if err != nil {
		t.Fatal(err)
	}
	rs := ref.State()
	states := make([]*wsredirect.State, len(ins))
	for i, in := range ins {
		states[i] = in.mw.State()
	}
	perOwner := map[string]int{}
	for _, k := range testKeys {
		wantOwner, _ := rs.Owner(k)
		perOwner[wantOwner.ID]++
		for i, s := range states {
			if got, _ := s.Owner(k); got.ID != wantOwner.ID {
				t.Fatalf("%s sends key %q to %q, the fleet to %q", ins[i].name, k, got.ID, wantOwner.ID)
			}
		}
	}
	for _, m := range want {
		if !m.DrainingSince.IsZero() && perOwner[m.ID] > 0 {
			t.Fatalf("drained member %s still owns %d keys", m.ID, perOwner[m.ID])
		}
	}
}

func ids(ms []wsredirect.Member) []string {
	var out []string
	for _, m := range ms {
		s := m.ID
		if !m.DrainingSince.IsZero() {
			s += "(draining)"
		}
		out = append(out, s)
	}
	return out
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d.Round(time.Millisecond), what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// noLeaks fails t when, after it, goroutines of a Source are still running.
func noLeaks(t testing.TB) {
	t.Cleanup(func() {
		deadline := time.Now().Add(2 * time.Second)
		for {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			var leaked []string
			for _, g := range strings.Split(string(buf), "\n\n") {
				if strings.Contains(g, "wsredirect/etcd.(*Source)") {
					leaked = append(leaked, g)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutines of a Source outlived it:\n%s", strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// setVar sets *p to v for the test.
func setVar[T any](t testing.TB, p *T, v T) {
	old := *p
	*p = v
	t.Cleanup(func() { *p = old })
}

// proxy relays TCP to target until cut, which closes every connection and
// refuses new ones until restored.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.setCut(true)
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}
