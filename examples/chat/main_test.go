package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/client"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Timings of the fleet test: the operator's drain and the nodes' own.
const (
	drainAhead = 2 * time.Second // the drain record's since, from its writing
	drainRamp  = 3 * time.Second
	leaveRamp  = time.Second // -ramp: SIGTERM's drain
	writeEvery = 50 * time.Millisecond
)

// TestFleet runs three chat nodes on an etcd, with each upgrader, and
// drives them as an operator would: a drain record written with etcdctl
// moves every connection of the drained node to its room's new owner as
// the ramp reaches the room, and no other; deleting it moves them back; a
// node started with an ID already registered is refused; SIGTERM moves a
// node's connections away and ends the process with status 0. No
// connection is cut, and every line a client writes meanwhile comes back
// to it from the room (with coder, all but those in flight at a close-frame
// move: see stopAndCheckEchoes).
func TestFleet(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the test builds the node with the go command, which is not on PATH")
	}
	bin := filepath.Join(t.TempDir(), "chat")
	start := time.Now()
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("go build of the node: %v", time.Since(start).Round(time.Millisecond))
	endpoint := startEtcd(t)
	ops, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	require.NoError(t, err)
	t.Cleanup(func() { ops.Close() })
	ctl, err := exec.LookPath("etcdctl")
	if err == nil {
		t.Logf("drain records written with %s", ctl)
	} else {
		ctl = ""
		if os.Getenv("WSREDIRECT_REQUIRE_TOOLS") != "" {
			t.Fatal("no etcdctl on PATH, which CI installs (Debian: apt-get install etcd-client)")
		}
		t.Log("no etcdctl on PATH (Debian: apt-get install etcd-client): drain records written with clientv3, same keys and values")
	}
	for _, lib := range []string{"gorilla", "coder"} {
		t.Run(lib, func(t *testing.T) {
			f := &fleet{t: t, bin: bin, lib: lib, endpoint: endpoint, prefix: "/chat-" + lib + "/", ops: ops, ctl: ctl}
			f.run()
		})
	}
}

type fleet struct {
	t             *testing.T
	bin, lib      string
	endpoint      string
	prefix        string
	ops           *clientv3.Client
	ctl           string // etcdctl, or "" for clientv3
	nodes         []*process
	members       []wsredirect.Member
	clients       []*chatClient
	ctx           context.Context
	stopWriting   context.CancelFunc
	writersActive sync.WaitGroup
}

func (f *fleet) run() {
	t := f.t
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.ctx = ctx
	for i := range 3 {
		id := fmt.Sprintf("n%d", i+1)
		addr := freeAddr(t)
		f.members = append(f.members, wsredirect.Member{ID: id, URL: "ws://" + addr})
		f.nodes = append(f.nodes, f.start(id, addr))
	}
	for _, n := range f.nodes {
		n.waitLog(t, "members applied members=3", 10*time.Second)
	}

	// Rooms: four per node; the drained node's spread over the ramp.
	points := map[string]float64{}
	rooms := map[string][]string{}
	for i := 0; len(rooms["n1"]) < 4 || len(rooms["n2"]) < 4 || len(rooms["n3"]) < 4; i++ {
		room := fmt.Sprintf("room-%d", i)
		owner := ownerOf(f.members, room)
		if len(rooms[owner]) == 4 {
			continue
		}
		if owner == "n1" {
			p := handOffPoint(f.members, "n1", room)
			if bin := len(rooms["n1"]); p < 0.05+0.25*float64(bin) || p > 0.2+0.25*float64(bin) {
				continue
			}
			points[room] = p
		}
		rooms[owner] = append(rooms[owner], room)
	}
	// Two clients per room, each dialling a node round robin: most are
	// sent to the owner by the middleware first.
	for _, owner := range []string{"n1", "n2", "n3"} {
		for _, room := range rooms[owner] {
			for range 2 {
				dial := f.members[len(f.clients)%3]
				c := f.connect(dial.URL+"/rooms/"+room, room)
				require.Equal(t, owner, c.node(), "client %d of room %s, dialled at %s", c.i, room, dial.ID)
			}
		}
	}
	t.Logf("%d clients in %d rooms, 8 per node; each greeted by its room's owner", len(f.clients), len(rooms)*4)

	f.drain(points)
	f.undrain()
	f.refused()
	f.leave()
}

// drain writes a drain record for n1 as the package doc tells an operator
// to, and checks who moves where, and when.
func (f *fleet) drain(points map[string]float64) {
	t := f.t
	before := f.snapshot()
	f.startWriting()
	time.Sleep(300 * time.Millisecond) // lines written before the drain, too
	since := time.Now().Add(drainAhead).UTC().Truncate(time.Second).Add(time.Second)
	f.put("drains/n1", `{"since":"`+since.Format(time.RFC3339)+`","ramp":"`+drainRamp.String()+`"}`)
	without := f.others("n1")
	waitFor(t, drainAhead+drainRamp+5*time.Second, "n1's clients to move", func() bool {
		for _, c := range f.clients {
			if before[c] == "n1" && c.greetings() < 2 {
				return false
			}
		}
		return true
	})
	time.Sleep(500 * time.Millisecond)
	f.stopAndCheckEchoes()

	var lines []string
	for _, c := range f.clients {
		g := c.history()
		if before[c] != "n1" {
			assert.Len(t, g, 1, "client %d of %s's room %s reconnected during n1's drain", c.i, before[c], c.room)
			continue
		}
		require.Len(t, g, 2, "client %d of room %s moved once", c.i, c.room)
		want := ownerOf(without, c.room)
		assert.Equal(t, want, g[1].node, "client %d of room %s moved to the room's new owner", c.i, c.room)
		due := since.Add(time.Duration(points[c.room] * float64(drainRamp)))
		late := g[1].at.Sub(due)
		lines = append(lines, fmt.Sprintf("%s (ramp point %.2f, due at since+%v): client %d on %s at since+%v (%+v)",
			c.room, points[c.room], due.Sub(since).Round(time.Millisecond), c.i, g[1].node, g[1].at.Sub(since).Round(time.Millisecond), late.Round(time.Millisecond)))
		assert.Greater(t, late, -200*time.Millisecond, "client %d of room %s moved before the ramp reached its room", c.i, c.room)
		assert.Less(t, late, 1500*time.Millisecond, "client %d of room %s moved long after the ramp reached its room", c.i, c.room)
	}
	slices.Sort(lines)
	t.Logf("drain of n1 written %v ahead, ramp %v; moves:\n\t%s", drainAhead, drainRamp, strings.Join(lines, "\n\t"))
	f.noErrors()
}

// undrain deletes the record: the rooms n1 owns again come back to it.
func (f *fleet) undrain() {
	t := f.t
	before := f.snapshot()
	counts := f.greetingCounts()
	f.startWriting()
	start := time.Now()
	f.del("drains/n1")
	var back []*chatClient
	for _, c := range f.clients {
		if ownerOf(f.members, c.room) == "n1" {
			back = append(back, c)
		}
	}
	waitFor(t, 5*time.Second, "n1's rooms to come back", func() bool {
		for _, c := range back {
			if c.greetings() == counts[c] {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	time.Sleep(300 * time.Millisecond)
	f.stopAndCheckEchoes()
	for _, c := range f.clients {
		g := c.history()
		if ownerOf(f.members, c.room) != "n1" {
			assert.Len(t, g, counts[c], "client %d of %s's room %s reconnected at the undrain", c.i, before[c], c.room)
			continue
		}
		assert.Len(t, g, counts[c]+1, "client %d of room %s moved back once", c.i, c.room)
		assert.Equal(t, "n1", g[len(g)-1].node, "client %d of room %s is back on n1", c.i, c.room)
	}
	t.Logf("undrain of n1 (record deleted): its %d clients were back on n1 %v after the delete", len(back), took.Round(time.Millisecond))
	f.noErrors()
}

// refused starts a fourth node with n2's ID on another address.
func (f *fleet) refused() {
	t := f.t
	counts := f.greetingCounts()
	start := time.Now()
	p := f.start("n2", freeAddr(t))
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("a second node with ID n2 still runs after 15 s:\n%s", p.out.String())
	}
	took := time.Since(start)
	require.Error(t, p.err, "a second node with ID n2 exited with status 0")
	var ee *exec.ExitError
	require.ErrorAs(t, p.err, &ee)
	out := p.out.String()
	for _, want := range []string{`member ID "n2" is taken`, f.members[1].URL, f.prefix + "members/n2", "an ID of its own"} {
		assert.Contains(t, out, want)
	}
	t.Logf("a second node with ID n2 exited with status %d %v after it started: %s", ee.ExitCode(), took.Round(time.Millisecond), strings.TrimSpace(lastLine(out)))
	resp, err := f.ops.Get(f.ctx, f.prefix+"members/n2")
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	assert.Contains(t, string(resp.Kvs[0].Value), f.members[1].URL, "n2's record is n2's")
	time.Sleep(200 * time.Millisecond)
	assert.Equal(t, counts, f.greetingCounts(), "no client moved")
}

// leave sends n3 SIGTERM: its clients move to the rooms' owners among n1
// and n2, and the process ends with status 0.
func (f *fleet) leave() {
	t := f.t
	before := f.snapshot()
	counts := f.greetingCounts()
	f.startWriting()
	start := time.Now()
	n3 := f.nodes[2]
	require.NoError(t, n3.cmd.Process.Signal(syscall.SIGTERM))
	bound := time.Duration(2+1+10) * time.Second // the node's own timeout: Settle + ramp + 10 s
	select {
	case <-n3.exited:
	case <-time.After(bound):
		t.Fatalf("n3 still runs %v after SIGTERM:\n%s", bound, n3.out.String())
	}
	exited := time.Since(start)
	require.NoError(t, n3.err, "n3's exit after SIGTERM:\n%s", n3.out.String())
	time.Sleep(300 * time.Millisecond)
	f.stopAndCheckEchoes()
	without := f.others("n3")
	var last time.Duration
	for _, c := range f.clients {
		g := c.history()
		if before[c] != "n3" {
			assert.Len(t, g, counts[c], "client %d on %s reconnected when n3 left", c.i, before[c])
			continue
		}
		require.Len(t, g, counts[c]+1, "client %d of room %s moved once", c.i, c.room)
		assert.Equal(t, ownerOf(without, c.room), g[len(g)-1].node, "client %d of room %s moved to its new owner", c.i, c.room)
		last = max(last, g[len(g)-1].at.Sub(start))
	}
	t.Logf("SIGTERM to n3 (-ramp %v): its clients had moved %v after the signal, and it exited with status 0 %v after it", leaveRamp, last.Round(time.Millisecond), exited.Round(time.Millisecond))
	f.noErrors()
	resp, err := f.ops.Get(f.ctx, f.prefix+"members/n3")
	require.NoError(t, err)
	assert.Empty(t, resp.Kvs, "n3 left the fleet")
}

// others returns the members but id.
func (f *fleet) others(id string) []wsredirect.Member {
	return slices.DeleteFunc(slices.Clone(f.members), func(m wsredirect.Member) bool { return m.ID == id })
}

func (f *fleet) snapshot() map[*chatClient]string {
	m := map[*chatClient]string{}
	for _, c := range f.clients {
		m[c] = c.node()
	}
	return m
}

func (f *fleet) greetingCounts() map[*chatClient]int {
	m := map[*chatClient]int{}
	for _, c := range f.clients {
		m[c] = c.greetings()
	}
	return m
}

// startWriting makes every client write a numbered line every writeEvery
// until stopAndCheckEchoes.
func (f *fleet) startWriting() {
	ctx, cancel := context.WithCancel(f.ctx)
	f.stopWriting = cancel
	for _, c := range f.clients {
		f.writersActive.Go(func() {
			tick := time.NewTicker(writeEvery)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if err := c.write(); err != nil {
					f.t.Errorf("client %d: write: %v", c.i, err)
					return
				}
			}
		})
	}
}

// stopAndCheckEchoes stops the writers and checks that the lines each
// client wrote came back to it from the room, once and in order: all of
// them with gorilla, whose moves are cued, so that a client closes first
// and the node reads everything it sent. With coder, whose moves are
// close frames, a line still in flight when the node's close frame left
// may be lost (coder drops what it reads while it waits for the client's
// close, and writes nothing after its own): such lines are counted, and
// must have been written within a second before the client's move.
func (f *fleet) stopAndCheckEchoes() {
	f.stopWriting()
	f.writersActive.Wait()
	// The last lines were written well after any move: once they are back,
	// the others are back or lost.
	waitFor(f.t, 5*time.Second, "every client's last line to come back", func() bool {
		return !slices.ContainsFunc(f.clients, func(c *chatClient) bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.sent > 0 && !slices.Contains(c.echoes, c.sent-1)
		})
	})
	total, lost := 0, 0
	for _, c := range f.clients {
		c.mu.Lock()
		total += c.sent
		assert.True(f.t, slices.IsSorted(c.echoes) && len(slices.Compact(slices.Clone(c.echoes))) == len(c.echoes),
			"client %d: its lines came back out of order or twice: %v", c.i, c.echoes)
		for n := range c.sent {
			if _, ok := slices.BinarySearch(c.echoes, n); ok {
				continue
			}
			lost++
			if f.lib != "coder" {
				f.t.Errorf("client %d: line %d, written at %s, never came back", c.i, n, c.sentAt[n].Format("15:04:05.000"))
				continue
			}
			inFlight := slices.ContainsFunc(c.greets[1:], func(g greeting) bool {
				return !c.sentAt[n].After(g.at) && g.at.Sub(c.sentAt[n]) < time.Second
			})
			assert.True(f.t, inFlight, "client %d: line %d, written at %s, never came back, and no move followed it within a second (moves: %v)",
				c.i, n, c.sentAt[n].Format("15:04:05.000"), c.greets)
		}
		c.mu.Unlock()
	}
	f.t.Logf("%d of the %d lines the clients wrote so far came back to their writers, in order; %d in flight at a close-frame move were lost", total-lost, total, lost)
}

func (f *fleet) noErrors() {
	for _, c := range f.clients {
		c.mu.Lock()
		assert.NoError(f.t, c.err, "client %d of room %s ended", c.i, c.room)
		assert.Zero(f.t, c.cues, "client %d: a cue reached the app", c.i)
		c.mu.Unlock()
	}
}

// put and del change a key as an operator would: with etcdctl when there
// is one, else with clientv3, same key and value.
func (f *fleet) put(key, value string) { f.etcdctl("put", f.prefix+key, value) }
func (f *fleet) del(key string)        { f.etcdctl("del", f.prefix+key) }

func (f *fleet) etcdctl(args ...string) {
	f.t.Helper()
	if f.ctl != "" {
		cmd := exec.Command(f.ctl, append([]string{"--endpoints=" + f.endpoint}, args...)...)
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		out, err := cmd.CombinedOutput()
		require.NoError(f.t, err, "etcdctl %v: %s", args, out)
		return
	}
	var err error
	if args[0] == "put" {
		_, err = f.ops.Put(f.ctx, args[1], args[2])
	} else {
		_, err = f.ops.Delete(f.ctx, args[1])
	}
	require.NoError(f.t, err)
}

// process is a chat node run from the binary.
type process struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	err    error // Wait's, once exited is closed
}

func (f *fleet) start(id, addr string) *process {
	t := f.t
	p := &process{out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(f.bin, "-id", id, "-addr", addr, "-etcd", f.endpoint, "-prefix", f.prefix,
		"-ttl", "5s", "-upgrader", f.lib, "-ramp", leaveRamp.String())
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(t, p.cmd.Start())
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%s (%s) said:\n%s", id, addr, p.out.String())
		}
	})
	return p
}

func (p *process) waitLog(t *testing.T, substr string, d time.Duration) {
	t.Helper()
	waitFor(t, d, fmt.Sprintf("%q in the node's log", substr), func() bool { return strings.Contains(p.out.String(), substr) })
}

// chatClient is a client of this module's Go client package, and what it
// has read.
type chatClient struct {
	i    int
	room string
	conn *client.Conn

	mu     sync.Mutex
	greets []greeting
	echoes []int // its own lines come back, by number
	sent   int   // lines written
	sentAt []time.Time
	cues   int
	err    error // what ended ReadMessage
}

type greeting struct {
	at   time.Time
	node string
}

func (f *fleet) connect(u, room string) *chatClient {
	t := f.t
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	conn, _, err := (&client.Dialer{}).Connect(ctx, u, nil)
	require.NoError(t, err)
	c := &chatClient{i: len(f.clients), room: room, conn: conn}
	f.clients = append(f.clients, c)
	t.Cleanup(func() { conn.Close() })
	go c.read(f.ctx)
	waitFor(t, 5*time.Second, "a greeting", func() bool { return c.greetings() > 0 })
	return c
}

func (c *chatClient) read(ctx context.Context) {
	prefix := fmt.Sprintf("c%d ", c.i)
	for {
		_, p, err := c.conn.ReadMessage(ctx)
		now := time.Now()
		c.mu.Lock()
		if err != nil {
			if ctx.Err() == nil {
				c.err = err
			}
			c.mu.Unlock()
			return
		}
		msg := string(p)
		var g struct{ Node, Room string }
		switch {
		case strings.HasPrefix(msg, "{") && json.Unmarshal(p, &g) == nil:
			if g.Room != c.room {
				c.err = fmt.Errorf("greeted for room %q", g.Room)
			}
			c.greets = append(c.greets, greeting{now, g.Node})
		case strings.HasPrefix(msg, prefix):
			var n int
			fmt.Sscan(strings.TrimPrefix(msg, prefix), &n)
			c.echoes = append(c.echoes, n)
		case msg == "wsr1 move":
			c.cues++
		}
		c.mu.Unlock()
	}
}

func (c *chatClient) write() error {
	c.mu.Lock()
	n := c.sent
	c.sent++
	c.sentAt = append(c.sentAt, time.Now())
	c.mu.Unlock()
	return c.conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "c%d %d", c.i, n))
}

func (c *chatClient) node() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.greets[len(c.greets)-1].node
}

func (c *chatClient) greetings() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.greets)
}

func (c *chatClient) history() []greeting {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.greets)
}

// ownerOf returns the member of members that owns room.
func ownerOf(members []wsredirect.Member, room string) string {
	mw := wsredirect.MustNew(wsredirect.Options{Rules: []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))}, Members: members})
	o, _ := mw.State().Owner(room)
	return o.ID
}

// handOffPoint returns the share of a drain's ramp after which member id
// hands room off: found by bisection, asking a middleware at which drain
// fraction the room's owner changes.
func handOffPoint(members []wsredirect.Member, id, room string) float64 {
	const ramp = time.Hour // so that the time the calls take does not count
	mw := wsredirect.MustNew(wsredirect.Options{Rules: []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))}, Members: members})
	lo, hi := 0.0, 1.0
	for range 20 {
		mid := (lo + hi) / 2
		if err := mw.DrainMember(id, time.Now().Add(-time.Duration(mid*float64(ramp))), ramp); err != nil {
			panic(err)
		}
		if o, _ := mw.State().Owner(room); o.ID == id {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

// startEtcd starts an embedded etcd on loopback and returns its client
// endpoint.
func startEtcd(t *testing.T) string {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "chat-test"
	cfg.Dir = t.TempDir()
	cu := url.URL{Scheme: "http", Host: freeAddr(t)}
	pu := url.URL{Scheme: "http", Host: freeAddr(t)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not start within 30 s")
	}
	return cu.Host
}

// freeAddr returns a loopback address whose port is free now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// syncBuffer is a bytes.Buffer safe for a process's output and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
