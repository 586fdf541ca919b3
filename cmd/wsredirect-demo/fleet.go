package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/wsredirect/wsredirect"
)

// The pace of a drain: how a node hands its open connections to their new
// owners. Small batches spread the reconnects.
var moveOptions = wsredirect.MoveOptions{Batch: 50, Interval: 100 * time.Millisecond}

// fleet is the whole demo: the nodes, the front door, and the control plane
// that tells every one of them which members drain.
type fleet struct {
	nodes   []*node
	front   *frontDoor
	origins []string // the front door's page origins, the only ones browsers may connect from

	// mu serialises drains and undrains, so two presses cannot interleave
	// their updates across the fleet.
	mu sync.Mutex
}

// startFleet listens on addr for the front door and on a free loopback
// port for each node, then starts serving.
func startFleet(addr string, nodes int) (*fleet, error) {
	frontLn, err := listenFront(addr)
	if err != nil {
		return nil, err
	}
	f := &fleet{}
	var lns []net.Listener
	fail := func(err error) (*fleet, error) {
		frontLn.Close()
		for _, ln := range lns {
			ln.Close()
		}
		return nil, err
	}
	var members []wsredirect.Member
	for i := range nodes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fail(fmt.Errorf("node listener: %w", err))
		}
		lns = append(lns, ln)
		n := &node{id: fmt.Sprintf("node-%d", i+1), url: "ws://" + ln.Addr().String()}
		f.nodes = append(f.nodes, n)
		members = append(members, wsredirect.Member{ID: n.id, URL: n.url})
	}
	frontURL := "http://" + frontLn.Addr().String()
	f.origins = []string{frontURL}
	if _, port, _ := net.SplitHostPort(frontLn.Addr().String()); port != "" {
		if alias := "http://localhost:" + port; alias != frontURL {
			f.origins = append(f.origins, alias)
		}
	}
	for i, n := range f.nodes {
		if err := n.start(lns[i], members, f.origins); err != nil {
			return fail(err)
		}
	}
	f.front, err = startFrontDoor(f, frontLn, frontURL, members)
	if err != nil {
		return fail(err)
	}
	return f, nil
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

// middlewares returns every middleware of the fleet, front door included:
// the ones a control plane must tell about drains.
func (f *fleet) middlewares() []*wsredirect.Middleware {
	mws := []*wsredirect.Middleware{f.front.mw}
	for _, n := range f.nodes {
		mws = append(mws, n.mw)
	}
	return mws
}

// errLastNode refuses a drain that would leave no node to take rooms.
var errLastNode = errors.New("it is the last node serving: undrain another first")

// drain marks node id as draining on every node and the front door, with
// one start time so they all agree, then moves its open connections to
// their rooms' next owners. It returns how many it moved.
func (f *fleet) drain(ctx context.Context, id string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.node(id)
	if n == nil {
		return 0, fmt.Errorf("no node %q", id)
	}
	serving := 0
	for _, m := range f.front.mw.State().Members() {
		if m.DrainingSince.IsZero() && m.ID != id {
			serving++
		}
	}
	if serving == 0 {
		return 0, errLastNode
	}
	// Peers first: until they know, the draining node must keep serving
	// its rooms itself, or it and a peer would send clients to each other.
	since := time.Now()
	for _, mw := range f.middlewares() {
		if mw != n.mw {
			if err := mw.DrainMember(id, since, 0); err != nil {
				return 0, err
			}
		}
	}
	if err := n.mw.DrainMember(id, since, 0); err != nil {
		return 0, err
	}
	moved, cut, err := n.mw.MoveConns(ctx, moveOptions)
	return moved + cut, err
}

// undrain gives node id its rooms back: new connections at once, and the
// open connections other nodes took over, which are moved back so that a
// room's clients never end up split over two nodes and unable to chat. It
// returns how many connections moved.
func (f *fleet) undrain(ctx context.Context, id string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.node(id)
	if n == nil {
		return 0, fmt.Errorf("no node %q", id)
	}
	// The node first, so it serves its rooms before peers send them back.
	if err := n.mw.DrainMember(id, time.Time{}, 0); err != nil {
		return 0, err
	}
	for _, mw := range f.middlewares() {
		if mw != n.mw {
			if err := mw.DrainMember(id, time.Time{}, 0); err != nil {
				return 0, err
			}
		}
	}
	return f.moveAll(ctx, moveOptions)
}

// moveAll runs MoveConns on every node at once and adds up the moves.
func (f *fleet) moveAll(ctx context.Context, opts wsredirect.MoveOptions) (int, error) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
		errs  []error
	)
	for _, n := range f.nodes {
		wg.Go(func() {
			moved, cut, err := n.mw.MoveConns(ctx, opts)
			mu.Lock()
			defer mu.Unlock()
			total += moved + cut
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n.id, err))
			}
		})
	}
	wg.Wait()
	return total, errors.Join(errs...)
}

// shutdown drains the whole fleet, as a rolling restart would end: every
// member drains, so no node can take a room and open connections are told
// to retry later (CloseRetry). Then the servers shut down. Progress goes
// to w.
func (f *fleet) shutdown(w io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f.mu.Lock()
	defer f.mu.Unlock()
	since := time.Now()
	for _, mw := range f.middlewares() {
		for _, n := range f.nodes {
			mw.DrainMember(n.id, since, 0) // every ID is a member: cannot fail
		}
	}
	moved, err := f.moveAll(ctx, wsredirect.MoveOptions{Batch: 1000, Interval: 10 * time.Millisecond, Grace: time.Second})
	fmt.Fprintf(w, "draining: %d open connection(s) told to retry later\n", moved)
	if err != nil {
		fmt.Fprintln(w, "draining:", err)
	}
	// Give clients a moment to answer their close frames: Shutdown neither
	// closes nor waits for hijacked connections.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline) && f.tracked() > 0; {
		time.Sleep(10 * time.Millisecond)
	}
	var wg sync.WaitGroup
	for _, srv := range f.servers() {
		wg.Go(func() {
			if srv.Shutdown(ctx) != nil {
				srv.Close()
			}
		})
	}
	wg.Wait()
	fmt.Fprintln(w, "stopped")
}

func (f *fleet) tracked() int {
	total := 0
	for _, n := range f.nodes {
		total += n.mw.Tracked()
	}
	return total
}

func (f *fleet) servers() []*http.Server {
	srvs := []*http.Server{f.front.srv}
	for _, n := range f.nodes {
		srvs = append(srvs, n.srv)
	}
	return srvs
}

// newServer is an http.Server with the timeouts a server on a network
// should have; WebSockets are hijacked, so they do not count against them.
func newServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
}

// serve runs srv on ln until Shutdown.
func serve(srv *http.Server, ln net.Listener) {
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "wsredirect-demo:", err)
		}
	}()
}
