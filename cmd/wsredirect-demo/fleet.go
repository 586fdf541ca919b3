package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wsredirect/wsredirect"
)

// shutdownTimeout bounds a shutdown's wait for open connections to close
// once they are told to retry later: the cue, the close frame a second
// later and moveGrace after that to answer it.
const shutdownTimeout = 5 * time.Second

// opTimeout bounds one operation of the page (a drain, an undrain, a
// restart) from its start to the last connection moved.
const opTimeout = 30 * time.Second

// fleet is the whole demo: etcd, the nodes and the front door. Nodes
// register in etcd and every server follows the fleet listed there; the
// fleet's operations (drain, undrain, crash, restart) act through etcd and
// watch their effect.
type fleet struct {
	cfg       config
	log       *slog.Logger
	endpoints []string
	embedded  *embeddedEtcd    // nil with -etcd
	cli       *clientv3.Client // the control plane's: the front door's source, lease look-ups
	nodes     []*node
	front     *frontDoor
	origins   []string // the front door's page origins, the only ones browsers may connect from
	stats     *stats
	bots      *bots

	ctx    context.Context // ends at shutdown: operations, sampler, simulated clients
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu serialises the start of operations, so that two presses cannot
	// both pass the check that a node would be left serving.
	mu      sync.Mutex
	closing bool
	ops     sync.WaitGroup // operations under way
	bg      sync.WaitGroup // crashed nodes' sources closing
	stopped sync.Once
}

// Errors of operations that are refused.
var (
	errLastNode = errors.New("it is the last node serving: undrain or restart another first")
	errBusy     = errors.New("an operation on it is under way")
	errDown     = errors.New("it is down: restart it first")
	errUp       = errors.New("it is running")
	errClosing  = errors.New("the fleet is shutting down")
)

// startFleet starts etcd (unless cfg names one), the nodes, each on a
// free loopback port and registered in etcd, and the front door on
// cfg.addr, and returns once every one of them lists every node.
func startFleet(ctx context.Context, cfg config) (f *fleet, err error) {
	frontLn, err := listenFront(cfg.addr)
	if err != nil {
		return nil, err
	}
	f = &fleet{cfg: cfg, log: cfg.logger}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			frontLn.Close()
			f.shutdown(io.Discard)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	if len(cfg.etcd) == 0 {
		if f.embedded, err = startEmbeddedEtcd(cfg.logOutput); err != nil {
			return f, err
		}
		f.endpoints = []string{f.embedded.endpoint}
	} else {
		f.endpoints = cfg.etcd
	}
	if f.cli, err = newEtcdClient(f.endpoints); err != nil {
		return f, fmt.Errorf("etcd client: %w", err)
	}
	if err := f.checkEtcd(ctx); err != nil {
		return f, err
	}

	frontURL := "http://" + frontLn.Addr().String()
	f.origins = []string{frontURL}
	if _, port, _ := net.SplitHostPort(frontLn.Addr().String()); port != "" {
		if alias := "http://localhost:" + port; alias != frontURL {
			f.origins = append(f.origins, alias)
		}
	}
	var lns []net.Listener
	defer func() {
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
		}
	}()
	for i := range cfg.nodes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return f, fmt.Errorf("node listener: %w", err)
		}
		lns = append(lns, ln)
		f.nodes = append(f.nodes, newNode(f, fmt.Sprintf("node-%d", i+1), ln.Addr().String()))
	}
	for i, n := range f.nodes {
		if err := n.start(ctx, lns[i]); err != nil {
			return f, err
		}
	}
	if err := f.await(ctx, f.everyoneLists(f.ids()...)); err != nil {
		return f, fmt.Errorf("the nodes did not see each other in etcd: %w", err)
	}
	if f.front, err = startFrontDoor(ctx, f, frontLn, frontURL); err != nil {
		return f, err
	}
	f.stats = newStats(f)
	f.bots = newBots(f)
	f.wg.Go(f.stats.run)
	return f, nil
}

// checkEtcd makes sure etcd answers, and that no other fleet is
// registered under the prefix: two demos on one etcd would mix their
// nodes.
func (f *fleet) checkEtcd(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := f.cli.Get(ctx, f.cfg.prefix+"members/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("etcd at %v does not answer: %w", f.endpoints, err)
	}
	if resp.Count > 0 {
		return fmt.Errorf("etcd at %v lists %d member(s) under %smembers/ already: another demo uses it? Use another -prefix, or wait %s for a stopped one's leases to expire",
			f.endpoints, resp.Count, f.cfg.prefix, f.cfg.ttl)
	}
	return nil
}

func (f *fleet) etcdKind() string {
	if f.embedded != nil {
		return "embedded, removed on exit"
	}
	return "-etcd"
}

// listenFront listens on the front door's address, which must be on
// loopback: the nodes listen on 127.0.0.1 only, so a page served to
// another machine could not reach them anyway.
func listenFront(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("-addr %q: %v", addr, err)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("-addr %q: the demo listens on loopback only; use 127.0.0.1:PORT", addr)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("front door: %s is already in use (another demo running?); pick another port, or any free one with -addr 127.0.0.1:0", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("front door: %w", err)
	}
	return ln, nil
}

func (f *fleet) node(id string) *node {
	for _, n := range f.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

func (f *fleet) ids() []string {
	ids := make([]string, len(f.nodes))
	for i, n := range f.nodes {
		ids[i] = n.id
	}
	return ids
}

// middlewares returns the middleware of the front door (when started) and
// of every node that is up: the servers whose view of the fleet counts.
func (f *fleet) middlewares() []*wsredirect.Middleware {
	var mws []*wsredirect.Middleware
	if f.front != nil {
		mws = append(mws, f.front.mw)
	}
	for _, n := range f.nodes {
		if in := n.instance(); in != nil {
			mws = append(mws, in.mw)
		}
	}
	return mws
}

// everyoneLists reports whether every server's member set has ids.
func (f *fleet) everyoneLists(ids ...string) func() bool {
	return f.everyone(func(ms []wsredirect.Member) bool {
		for _, id := range ids {
			if _, ok := memberByID(ms, id); !ok {
				return false
			}
		}
		return true
	})
}

// everyone reports whether ok holds for every server's member set.
func (f *fleet) everyone(ok func([]wsredirect.Member) bool) func() bool {
	return func() bool {
		for _, mw := range f.middlewares() {
			if !ok(mw.State().Members()) {
				return false
			}
		}
		return true
	}
}

// member returns id as the front door's member set has it: what etcd
// lists, as far as the front door has heard.
func (f *fleet) member(id string) (wsredirect.Member, bool) {
	return memberByID(f.front.mw.State().Members(), id)
}

// originAllowed reports whether r may come from its Origin: browsers only
// from the front door's page; Go clients send no Origin.
func (f *fleet) originAllowed(r *http.Request) bool {
	o := r.Header.Get("Origin")
	return o == "" || slices.Contains(f.origins, o)
}

// memberByID finds member id in ms.
func memberByID(ms []wsredirect.Member, id string) (wsredirect.Member, bool) {
	if i := slices.IndexFunc(ms, func(m wsredirect.Member) bool { return m.ID == id }); i >= 0 {
		return ms[i], true
	}
	return wsredirect.Member{}, false
}

// serving counts the nodes other than id that serve rooms: up, listed,
// and neither draining nor about to.
func (f *fleet) serving(except string) int {
	k := 0
	for _, n := range f.nodes {
		if n.id == except || n.instance() == nil {
			continue
		}
		if o := n.currentOp(); o != nil && o.Kind == "drain" && o.Ended.IsZero() {
			continue
		}
		if m, ok := f.member(n.id); ok && m.DrainingSince.IsZero() {
			k++
		}
	}
	return k
}

// await polls done until it reports true, ctx ends or opTimeout passes.
func (f *fleet) await(ctx context.Context, done func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for !done() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// begin starts an operation of kind on node id, once allowed says it may
// run; the operation ends with n.end.
func (f *fleet) begin(id, kind string, allowed func(*node) error) (*node, *op, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return nil, nil, errClosing
	}
	n := f.node(id)
	if n == nil {
		return nil, nil, fmt.Errorf("no node %q", id)
	}
	if o := n.currentOp(); o != nil && o.Ended.IsZero() {
		return nil, nil, errBusy
	}
	if err := allowed(n); err != nil {
		return nil, nil, err
	}
	o := &op{Kind: kind, Phase: "starting", Began: time.Now()}
	n.setOp(o)
	f.ops.Add(1) // done in n.end
	return n, o, nil
}

func (f *fleet) whenUp(n *node) error {
	if n.instance() == nil {
		return errDown
	}
	return nil
}

// whenOthersServe is whenUp for taking n out of service: some other node
// must be serving, to take its rooms.
func (f *fleet) whenOthersServe(n *node) error {
	if err := f.whenUp(n); err != nil {
		return err
	}
	if f.serving(n.id) == 0 {
		return errLastNode
	}
	return nil
}

// drain drains node id through etcd (Source.Drain: its record takes effect
// Settle, 2 s, after it is written, and hands its rooms off over the ramp)
// and returns, once every connection it had has moved to its room's next
// owner, how many did.
func (f *fleet) drain(ctx context.Context, id string) (int, error) {
	n, o, err := f.begin(id, "drain", f.whenOthersServe)
	if err != nil {
		return 0, err
	}
	in := n.instance()
	base := n.moves()
	if err := in.src.Drain(ctx, f.cfg.ramp); err != nil {
		return 0, n.end(o, err)
	}
	err = f.await(ctx, func() bool {
		st := in.mw.State()
		on, handedOff := st.Draining()
		left := in.mw.Tracked() // every one of them moves
		moves := n.moves()
		n.progress(o, func() {
			if m, ok := memberByID(st.Members(), n.id); ok {
				o.Since, o.Ramp = m.DrainingSince, m.DrainRamp
			}
			switch {
			case !on:
				o.Phase = "writing" // until the record comes back through the watch
			case time.Now().Before(o.Since):
				o.Phase = "settling"
			default:
				o.Phase = "moving"
			}
			o.Moved, o.Cut = moves.since(base)
			o.Remaining = left
		})
		return on && handedOff >= 1 && left == 0
	})
	return o.total(), n.end(o, err)
}

// undrain gives node id its rooms back through etcd (Source.Undrain: the
// node first, then every other server as it hears), and returns, once the
// connections the others took over have moved back, how many did: a
// room's clients never stay split over two nodes, unable to chat.
func (f *fleet) undrain(ctx context.Context, id string) (int, error) {
	n, o, err := f.begin(id, "undrain", f.whenUp)
	if err != nil {
		return 0, err
	}
	in := n.instance()
	base := f.movesOfOthers(n)
	if err := in.src.Undrain(ctx); err != nil {
		return 0, n.end(o, err)
	}
	agreed := f.everyone(func(ms []wsredirect.Member) bool {
		m, ok := memberByID(ms, id)
		return !ok || m.DrainingSince.IsZero()
	})
	err = f.await(ctx, func() bool { return f.moveBack(n, o, base, agreed()) })
	return o.total(), n.end(o, err)
}

// moveBack reports the progress of connections moving back to n once
// every server agrees it serves, and whether they all have.
func (f *fleet) moveBack(n *node, o *op, base moveCount, agreed bool) bool {
	misplaced := f.misplacedOnOthers(n)
	moves := f.movesOfOthers(n)
	n.progress(o, func() {
		o.Phase = "spreading" // the news, through etcd
		if agreed {
			o.Phase = "moving"
		}
		o.Moved, o.Cut = moves.since(base)
		o.Remaining = misplaced
	})
	return agreed && misplaced == 0
}

// crash stops node id as a crash would: no revoke, so etcd lists it until
// its lease expires (within the TTL), and its connections break without a
// close frame. It returns at once; see waitGone.
func (f *fleet) crash(ctx context.Context, id string) error {
	n, o, err := f.begin(id, "crash", f.whenOthersServe)
	if err != nil {
		return err
	}
	left := f.leaseLeft(ctx, n.id)
	n.crash(left)
	n.progress(o, func() { o.Phase = "lease" })
	f.log.Info("demo: node crashed: no revoke, its lease expires within the TTL", "node", n.id, "lease_left", left.Round(100*time.Millisecond))
	return n.end(o, nil)
}

// leaseLeft asks etcd how long the lease of id's member record has left.
func (f *fleet) leaseLeft(ctx context.Context, id string) time.Duration {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := f.cli.Get(ctx, f.cfg.prefix+"members/"+id)
	if err == nil && len(resp.Kvs) == 1 && resp.Kvs[0].Lease != 0 {
		ttl, err := f.cli.TimeToLive(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
		if err == nil && ttl.TTL > 0 {
			return time.Duration(ttl.TTL) * time.Second
		}
	}
	return f.cfg.ttl
}

// waitGone waits until no server lists node id any more: its lease
// expired and etcd deleted its records.
func (f *fleet) waitGone(ctx context.Context, id string) error {
	return f.await(ctx, f.everyone(func(ms []wsredirect.Member) bool {
		_, ok := memberByID(ms, id)
		return !ok
	}))
}

// restart starts node id again after a crash, on its address if it can,
// with a new lease; once every server lists it, the connections of its
// rooms move back to it. It returns how many did.
func (f *fleet) restart(ctx context.Context, id string) (int, error) {
	n, o, err := f.begin(id, "restart", func(n *node) error {
		if n.instance() != nil {
			return errUp
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	base := f.movesOfOthers(n)
	n.progress(o, func() { o.Phase = "registering" })
	ln, err := n.listen(ctx)
	if err == nil {
		err = n.start(ctx, ln)
	}
	if err != nil {
		return 0, n.end(o, err)
	}
	f.log.Info("demo: node restarted on a new lease", "node", n.id, "url", n.url)
	agreed := f.everyoneLists(id)
	err = f.await(ctx, func() bool { return f.moveBack(n, o, base, agreed()) })
	return o.total(), n.end(o, err)
}

// movesOfOthers adds up the moves of every node but n.
func (f *fleet) movesOfOthers(n *node) moveCount {
	var c moveCount
	for _, m := range f.nodes {
		if m != n {
			c = c.add(m.moves())
		}
	}
	return c
}

// misplacedOnOthers counts the connections on nodes other than n that
// their node's view of the fleet sends elsewhere.
func (f *fleet) misplacedOnOthers(n *node) int {
	k := 0
	for _, m := range f.nodes {
		if in := m.instance(); m != n && in != nil {
			k += in.misplaced()
		}
	}
	return k
}

// countRedirect counts a redirect to a member for the page's charts.
func (f *fleet) countRedirect(d wsredirect.Decision) {
	if d.Action == wsredirect.Redirect && d.Member != "" {
		if n := f.node(d.Member); n != nil {
			n.redirected.Add(1)
		}
	}
}

// tracked counts the open connections of the nodes that are up.
func (f *fleet) tracked() int {
	k := 0
	for _, n := range f.nodes {
		k += n.tracked()
	}
	return k
}

// shutdown stops the fleet, as the end of a rolling restart would: the
// nodes leave etcd (their leases revoked), every member drains on every
// node so that none can take a room, and open connections are told to
// retry later (CloseRetry). Then the servers and etcd stop. Progress goes
// to w. It may be called on a fleet partly started.
func (f *fleet) shutdown(w io.Writer) {
	f.stopped.Do(func() { f.stop(w) })
}

func (f *fleet) stop(w io.Writer) {
	f.mu.Lock()
	f.closing = true
	f.mu.Unlock()
	f.cancel() // operations under way, the sampler, simulated clients
	f.ops.Wait()
	f.wg.Wait()
	f.bg.Wait()
	if f.bots != nil {
		f.bots.wait()
	}

	var instances []*instance
	for _, n := range f.nodes {
		if in := n.instance(); in != nil {
			instances = append(instances, in)
		}
	}
	var wg sync.WaitGroup
	for _, in := range instances {
		wg.Go(in.leave)
	}
	if f.front != nil && f.front.src != nil {
		wg.Go(func() { f.front.src.Close() })
	}
	wg.Wait()

	// Every member drains on every node, so that no room has an owner
	// left and every connection is told to retry later; Shutdown then
	// waits for them to close, and closes those that do not in time.
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var (
		mu    sync.Mutex
		moved int
		errs  []error
	)
	for _, in := range instances {
		in.logs.mute() // every member drains on every node: said once, below
		wg.Go(func() {
			base := in.moves()
			for _, m := range in.mw.State().Members() {
				in.mw.DrainMember(m.ID, time.Now(), 0) // a member: cannot fail
			}
			err := in.mw.Shutdown(ctx)
			m, c := in.moves().since(base)
			mu.Lock()
			defer mu.Unlock()
			moved += m + c
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", in.n.id, err))
			}
		})
	}
	wg.Wait()
	if len(instances) > 0 {
		fmt.Fprintf(w, "draining: %d open connection(s) told to retry later\n", moved)
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(w, "draining:", err)
	}
	// Servers neither close nor wait for hijacked connections: Shutdown
	// above saw to those.
	ctx, cancel = context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var srvs []*http.Server
	if f.front != nil {
		srvs = append(srvs, f.front.srv)
	}
	for _, in := range instances {
		srvs = append(srvs, in.srv)
	}
	for _, srv := range srvs {
		wg.Go(func() {
			if srv.Shutdown(ctx) != nil {
				srv.Close()
			}
		})
	}
	wg.Wait()
	for _, in := range instances {
		in.closeConns()
		in.cli.Close()
	}
	if f.cli != nil {
		f.cli.Close()
	}
	if f.embedded != nil {
		f.embedded.stop()
	}
	fmt.Fprintln(w, "stopped")
}

// newServer is an http.Server with the timeouts a server on a network
// should have; WebSockets are hijacked, so they do not count against them.
func newServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
}

// serve runs srv on ln until Shutdown or Close.
func serve(srv *http.Server, ln net.Listener) {
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "wsredirect-demo:", err)
		}
	}()
}
