package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/client"
	"github.com/wsredirect/wsredirect/ring"
	"github.com/wsredirect/wsredirect/wire"
)

// dialers bounds how many clients connect at once, as a crowd arriving
// rather than one burst.
const dialers = 8

// probe is one Go client of the check.
type probe struct {
	n       int
	room    string
	conn    *client.Conn
	node    string        // the node serving it, from its last greeting
	connect time.Duration // Connect, redirects included
	hops    int           // redirects followed by Connect
	moves   []move
}

// move is a reconnection the server asked for with a close frame.
type move struct {
	from, to string
	hops     int           // redirects the client followed: 1 is straight to the new owner
	elapsed  time.Duration // the reconnecting handshake
}

// checker runs the check against a fleet. Each phase ends before the next
// starts, and within a phase each probe is used by one goroutine.
type checker struct {
	f      *fleet
	ring   *ring.Ring
	dialer *client.Dialer
	probes []*probe
	rooms  int
	prog   *progress

	victim            string
	drained, restored int // connections the nodes reported moved

	crashed     string
	lost        int           // connections the crash broke
	leaseGone   time.Duration // from the crash until no server listed the node
	reconnects  []time.Duration
	reconnectTo map[string]int
	returned    int // connections moved back when the node restarted
}

// check connects clients through the front door, drains the busiest node
// through etcd and undrains it, then crashes the busiest node and restarts
// it, verifying where every client is at each step. It prints a table to
// stdout and progress to stderr.
func check(ctx context.Context, f *fleet, clients int, stdout, stderr io.Writer) error {
	c := &checker{
		f:    f,
		ring: ringOf(f.front.mw.State().Members()),
		// Every client must take the front door's redirect: no memory.
		dialer: &client.Dialer{Dialer: websocket.Dialer{HandshakeTimeout: 5 * time.Second}, RememberRedirects: -1},
		rooms:  max(1, clients/3),
		prog:   newProgress(stderr),
	}
	defer c.closeAll()
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"connect", func(ctx context.Context) error { return c.connect(ctx, clients) }},
		{"drain", c.drain},
		{"chat after drain", func(ctx context.Context) error { return c.chatRound(ctx, "chat after drain") }},
		{"undrain", c.undrain},
		{"chat after undrain", func(ctx context.Context) error { return c.chatRound(ctx, "chat after undrain") }},
		{"crash", c.crash},
		{"chat after crash", func(ctx context.Context) error { return c.chatRound(ctx, "chat after crash") }},
		{"restart", c.restart},
		{"chat after restart", func(ctx context.Context) error { return c.chatRound(ctx, "chat after restart") }},
	}
	for _, s := range steps {
		err := s.run(ctx)
		c.prog.end()
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: %w (%v)", s.name, ctx.Err(), err)
			}
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	c.report(stdout)
	return nil
}

// owner returns the ring owner of room with member skip gone (-1: none
// gone): where the check expects a client to be.
func (c *checker) owner(room string, skip int) string {
	h := ring.Hash(room)
	i := c.ring.Owner(h)
	if skip >= 0 {
		i = c.ring.OwnerWithout(h, skip)
	}
	return c.ring.Node(i).ID
}

func (c *checker) memberIndex(id string) int {
	for i := range c.ring.Len() {
		if c.ring.Node(i).ID == id {
			return i
		}
	}
	return -1
}

// ringOf places members as the middleware does, so the check can say
// where each client belongs without asking the middleware it checks.
func ringOf(members []wsredirect.Member) *ring.Ring {
	nodes := make([]ring.Node, len(members))
	for i, m := range members {
		nodes[i] = ring.Node{ID: m.ID, Weight: m.Weight}
	}
	r, err := ring.New(nodes)
	if err != nil {
		panic(err) // the middleware accepted these members
	}
	return r
}

func (c *checker) connect(ctx context.Context, clients int) error {
	c.prog.start("connect", clients)
	c.probes = make([]*probe, clients)
	for i := range c.probes {
		c.probes[i] = &probe{n: i, room: fmt.Sprintf("room-%d", rand.N(c.rooms))}
	}
	return c.each(ctx, dialers, c.probes, func(ctx context.Context, p *probe) error {
		start := time.Now()
		err := c.join(ctx, p, func(p *probe) string { return c.owner(p.room, -1) })
		p.connect = time.Since(start)
		return err
	})
}

// join connects p through the front door, which must redirect it once, to
// want(p), and reads its greeting.
func (c *checker) join(ctx context.Context, p *probe, want func(*probe) string) error {
	base := c.f.front.roomsURL()
	conn, _, err := c.dialer.Connect(ctx, base+p.room, nil)
	if err != nil {
		return fmt.Errorf("client %d (%s): %w", p.n, p.room, err)
	}
	p.conn = conn
	p.hops = len(conn.Hops()) - 1
	// The front door is no member: it redirects every client, once.
	if p.hops != 1 {
		return fmt.Errorf("client %d (%s) took %d redirects to connect; want 1, from the front door to the owner", p.n, p.room, p.hops)
	}
	g, err := p.greeting(ctx)
	if err != nil {
		return err
	}
	if w := want(p); g.Node != w || g.Room != p.room {
		return fmt.Errorf("client %d joined %s on %s; the ring owner is %s", p.n, p.room, g.Node, w)
	}
	p.node = g.Node
	return nil
}

// busiest returns the node serving the most clients: the drain that moves
// the most.
func (c *checker) busiest() string {
	count := map[string]int{}
	for _, p := range c.probes {
		count[p.node]++
	}
	return slices.MaxFunc(c.f.ids(), func(a, b string) int { return cmp.Or(cmp.Compare(count[a], count[b]), cmp.Compare(b, a)) })
}

// drain drains the busiest node and checks that each of its clients moved
// once, to its room's owner once the node is gone.
func (c *checker) drain(ctx context.Context) error {
	c.victim = c.busiest()
	gone := c.memberIndex(c.victim)
	moved, err := c.moveAndFollow(ctx, "drain "+c.victim, c.victim,
		func(p *probe) string { return c.owner(p.room, gone) },
		func(ctx context.Context) (int, error) { return c.f.drain(ctx, c.victim) })
	c.drained = moved
	return err
}

// undrain undrains the node and checks that the clients it lost came back.
func (c *checker) undrain(ctx context.Context) error {
	moved, err := c.moveAndFollow(ctx, "undrain "+c.victim, "",
		func(p *probe) string { return c.owner(p.room, -1) },
		func(ctx context.Context) (int, error) { return c.f.undrain(ctx, c.victim) })
	c.restored = moved
	return err
}

// crash crashes the busiest node: no revoke, so etcd lists it until its
// lease expires. Its clients' connections break (the Go client reconnects
// only when a server moves it), and once no server lists the node they
// connect again through the front door, which must send each to its room's
// owner without the crashed node.
func (c *checker) crash(ctx context.Context) error {
	c.crashed = c.busiest()
	gone := c.memberIndex(c.crashed)
	var lost []*probe
	for _, p := range c.probes {
		if p.node == c.crashed {
			lost = append(lost, p)
		}
	}
	c.lost = len(lost)
	c.prog.start("crash "+c.crashed, len(lost))
	broken := make(chan error, 1)
	go func() {
		broken <- c.each(ctx, len(lost), lost, func(ctx context.Context, p *probe) error {
			// Chat lines of the last round may be queued before the break.
			m, err := p.read(ctx)
			for err == nil && m.Node == "" {
				m, err = p.read(ctx)
			}
			if err == nil {
				return fmt.Errorf("client %d (%s) was greeted by %s after %s crashed", p.n, p.room, m.Node, c.crashed)
			}
			if ctx.Err() != nil {
				return fmt.Errorf("client %d (%s): its connection to %s did not break: %w", p.n, p.room, c.crashed, err)
			}
			p.conn.Close()
			return nil
		})
	}()
	start := time.Now()
	if err := c.f.crash(ctx, c.crashed); err != nil {
		return err
	}
	if err := <-broken; err != nil {
		return err
	}
	c.prog.end()
	c.prog.start("lease of "+c.crashed, 1)
	if err := c.f.waitGone(ctx, c.crashed); err != nil {
		return fmt.Errorf("the fleet still lists %s %s after its crash: %w", c.crashed, time.Since(start).Round(time.Millisecond), err)
	}
	c.leaseGone = time.Since(start)
	c.prog.add()
	c.prog.end()

	c.prog.start("reconnect", len(lost))
	want := func(p *probe) string { return c.owner(p.room, gone) }
	c.reconnectTo = map[string]int{}
	var mu sync.Mutex
	return c.each(ctx, dialers, lost, func(ctx context.Context, p *probe) error {
		start := time.Now()
		if err := c.join(ctx, p, want); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		c.reconnects = append(c.reconnects, time.Since(start))
		c.reconnectTo[p.node]++
		return nil
	})
}

// restart starts the crashed node again, on a new lease, and checks that
// the clients of its rooms moved back to it, each once.
func (c *checker) restart(ctx context.Context) error {
	moved, err := c.moveAndFollow(ctx, "restart "+c.crashed, "",
		func(p *probe) string { return c.owner(p.room, -1) },
		func(ctx context.Context) (int, error) { return c.f.restart(ctx, c.crashed) })
	c.returned = moved
	return err
}

// moveAndFollow runs op, which moves the connections of the probes whose
// room's owner changes (those on node from, or when from is "" those whose
// node is not want(p)), and checks that each of those probes, and no other,
// gets a new greeting from want(p), straight from its old node.
func (c *checker) moveAndFollow(ctx context.Context, phase, from string, want func(*probe) string, op func(context.Context) (int, error)) (int, error) {
	var affected []*probe
	for _, p := range c.probes {
		if (from != "" && p.node == from) || (from == "" && p.node != want(p)) {
			affected = append(affected, p)
		}
	}
	c.prog.start(phase, len(affected))
	// Readers first, so clients reconnect as their close frames arrive.
	followed := make(chan error, 1)
	go func() {
		followed <- c.each(ctx, len(affected), affected, func(ctx context.Context, p *probe) error {
			g, err := p.greeting(ctx)
			if err != nil {
				return err
			}
			hops := p.conn.Hops()
			last := hops[len(hops)-1]
			m := move{from: p.node, to: g.Node, hops: len(hops) - 1, elapsed: last.Elapsed}
			p.moves = append(p.moves, m)
			p.node = g.Node
			if w := want(p); g.Node != w {
				return fmt.Errorf("client %d (%s) moved from %s to %s; its owner is %s", p.n, p.room, m.from, g.Node, w)
			}
			if m.hops != 1 || hops[0].Close != wire.CloseRedirect {
				return fmt.Errorf("client %d (%s) took %d hops from %s to %s; want one close-code redirect", p.n, p.room, m.hops, m.from, g.Node)
			}
			return nil
		})
	}()
	moved, err := op(ctx)
	if err != nil {
		return moved, err
	}
	if err := <-followed; err != nil {
		return moved, err
	}
	if moved != len(affected) {
		return moved, fmt.Errorf("the fleet moved %d connections; %d clients were in rooms whose owner changed", moved, len(affected))
	}
	return moved, nil
}

// chatRound has every client send a line and read it back from its room.
// A client that reads a greeting first was moved when it should not have
// been: moves were all checked in the phase that caused them.
func (c *checker) chatRound(ctx context.Context, phase string) error {
	c.prog.start(phase, len(c.probes))
	return c.each(ctx, len(c.probes), c.probes, func(ctx context.Context, p *probe) error {
		line := chat{From: fmt.Sprintf("client-%d", p.n), Text: fmt.Sprintf("hello %s", p.room)}
		data, _ := json.Marshal(line)
		if err := p.conn.WriteMessage(websocket.TextMessage, data); err != nil {
			return fmt.Errorf("client %d: send: %w", p.n, err)
		}
		for {
			m, err := p.read(ctx)
			if err != nil {
				return err
			}
			if m.Node != "" {
				return fmt.Errorf("client %d (%s) moved from %s to %s though its room's owner did not change", p.n, p.room, p.node, m.Node)
			}
			if m.From == line.From && m.Text == line.Text {
				return nil
			}
		}
	})
}

// message is any message a room sends: a greeting has Node, a chat line
// From and Text.
type message struct {
	greeting
	chat
}

func (p *probe) read(ctx context.Context) (message, error) {
	var m message
	_, data, err := p.conn.ReadMessage(ctx)
	if err != nil {
		return m, fmt.Errorf("client %d (%s, on %s): read: %w", p.n, p.room, p.node, err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("client %d: bad message %q: %w", p.n, data, err)
	}
	return m, nil
}

// greeting reads up to the next greeting, skipping chat lines.
func (p *probe) greeting(ctx context.Context) (greeting, error) {
	for {
		m, err := p.read(ctx)
		if err != nil || m.Node != "" {
			return m.greeting, err
		}
	}
}

// each runs fn for every probe, at most n at once, each bounded by 15s
// and ctx, and counts progress. It returns the first errors, with how many
// there were.
func (c *checker) each(ctx context.Context, n int, probes []*probe, fn func(context.Context, *probe) error) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	work := make(chan *probe)
	for range max(1, min(n, len(probes))) {
		wg.Go(func() {
			for p := range work {
				pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				err := fn(pctx, p)
				cancel()
				c.prog.add()
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, p := range probes {
		work <- p
	}
	close(work)
	wg.Wait()
	if len(errs) == 0 {
		return nil
	}
	shown := errs[:min(3, len(errs))]
	if len(errs) > len(shown) {
		shown = append(shown, fmt.Errorf("and %d more", len(errs)-len(shown)))
	}
	return fmt.Errorf("%d of %d clients failed:\n  %w", len(errs), len(probes), joinLines(shown))
}

func joinLines(errs []error) error {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "\n  "))
}

func (c *checker) closeAll() {
	for _, p := range c.probes {
		if p != nil && p.conn != nil {
			p.conn.Close()
		}
	}
}

// report prints the table.
func (c *checker) report(w io.Writer) {
	var connects, moves []time.Duration
	atConnect, redirects, maxHops, maxMoveHops := 0, 0, 0, 0
	movedTo := map[string]int{}
	redirects += len(c.reconnects) // one each, from the front door
	for _, p := range c.probes {
		connects = append(connects, p.connect)
		atConnect++ // one each, checked
		redirects++
		maxHops = max(maxHops, p.hops)
		for i, m := range p.moves {
			moves = append(moves, m.elapsed)
			redirects += m.hops
			maxMoveHops = max(maxMoveHops, m.hops)
			if i == 0 {
				movedTo[m.to]++
			}
		}
	}
	stayed := len(c.probes) - c.drained
	fmt.Fprintln(w, "check passed")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  nodes\t%d\n", len(c.f.nodes))
	fmt.Fprintf(tw, "  clients\t%d in %d rooms, all on their room's owner\n", len(c.probes), c.rooms)
	fmt.Fprintf(tw, "  redirects\t%d (%d at connect, %d on drain, %d on undrain, %d on reconnect, %d on restart)\n", redirects, atConnect, c.drained, c.restored, len(c.reconnects), c.returned)
	fmt.Fprintf(tw, "  hops\tmax %d per connect, max %d per move\n", maxHops, maxMoveHops)
	fmt.Fprintf(tw, "  moved on drain\t%d from %s (to %s); %d did not move\n", c.drained, c.victim, counts(movedTo), stayed)
	fmt.Fprintf(tw, "  moved on undrain\t%d back to %s; %d did not move\n", c.restored, c.victim, len(c.probes)-c.restored)
	fmt.Fprintf(tw, "  crash\t%s stopped without revoking its lease: %d connections broke; etcd dropped it after %s\n", c.crashed, c.lost, c.leaseGone.Round(100*time.Millisecond))
	fmt.Fprintf(tw, "  reconnected\t%d through the front door to their rooms' new owners (%s)\n", len(c.reconnects), counts(c.reconnectTo))
	fmt.Fprintf(tw, "  moved on restart\t%d back to %s, on a new lease; %d did not move\n", c.returned, c.crashed, len(c.probes)-c.returned)
	fmt.Fprintf(tw, "  connect time\tp50 %s  p99 %s (reconnects after the crash: p50 %s)\n", percentile(connects, 50), percentile(connects, 99), percentile(c.reconnects, 50))
	if len(moves) > 0 {
		fmt.Fprintf(tw, "  move time\tp50 %s  p99 %s (reconnecting handshake)\n", percentile(moves, 50), percentile(moves, 99))
	}
	tw.Flush()
}

// counts lists how many went to each node.
func counts(to map[string]int) string {
	var s []string
	for _, id := range slices.Sorted(maps.Keys(to)) {
		s = append(s, fmt.Sprintf("%s %d", id, to[id]))
	}
	return strings.Join(s, ", ")
}

// percentile returns the p-th percentile of ds by nearest rank, rounded
// for reading.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	i := max(0, (len(s)*p+99)/100-1)
	return s[i].Round(10 * time.Microsecond)
}
