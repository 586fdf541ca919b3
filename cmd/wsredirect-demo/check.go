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
	drained, restored int // connections MoveConns reported
}

// check connects clients through the front door, drains the busiest node
// and undrains it, verifying where every client is at each step. It prints
// a table to stdout and progress to stderr.
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
	base := "ws" + strings.TrimPrefix(c.f.front.url, "http") + "/rooms/"
	return c.each(ctx, dialers, c.probes, func(ctx context.Context, p *probe) error {
		start := time.Now()
		conn, _, err := c.dialer.Connect(ctx, base+p.room, nil)
		p.connect = time.Since(start)
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
		if want := c.owner(p.room, -1); g.Node != want || g.Room != p.room {
			return fmt.Errorf("client %d joined %s on %s; the ring owner is %s", p.n, p.room, g.Node, want)
		}
		p.node = g.Node
		return nil
	})
}

// busiest returns the node serving the most clients: the drain that moves
// the most.
func (c *checker) busiest() string {
	count := map[string]int{}
	for _, p := range c.probes {
		count[p.node]++
	}
	ids := make([]string, 0, len(c.f.nodes))
	for _, n := range c.f.nodes {
		ids = append(ids, n.id)
	}
	return slices.MaxFunc(ids, func(a, b string) int { return cmp.Or(cmp.Compare(count[a], count[b]), cmp.Compare(b, a)) })
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
	for _, p := range c.probes {
		connects = append(connects, p.connect)
		atConnect += p.hops
		redirects += p.hops
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
	var to []string
	for _, id := range slices.Sorted(maps.Keys(movedTo)) {
		to = append(to, fmt.Sprintf("%s %d", id, movedTo[id]))
	}
	stayed := len(c.probes) - c.drained
	fmt.Fprintln(w, "check passed")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  nodes\t%d\n", len(c.f.nodes))
	fmt.Fprintf(tw, "  clients\t%d in %d rooms, all on their room's owner\n", len(c.probes), c.rooms)
	fmt.Fprintf(tw, "  redirects\t%d (%d at connect, %d on drain, %d on undrain)\n", redirects, atConnect, c.drained, c.restored)
	fmt.Fprintf(tw, "  hops\tmax %d per connect, max %d per move\n", maxHops, maxMoveHops)
	fmt.Fprintf(tw, "  moved on drain\t%d from %s (to %s); %d did not move\n", c.drained, c.victim, strings.Join(to, ", "), stayed)
	fmt.Fprintf(tw, "  moved on undrain\t%d back to %s; %d did not move\n", c.restored, c.victim, len(c.probes)-c.restored)
	fmt.Fprintf(tw, "  connect time\tp50 %s  p99 %s\n", percentile(connects, 50), percentile(connects, 99))
	if len(moves) > 0 {
		fmt.Fprintf(tw, "  move time\tp50 %s  p99 %s (reconnecting handshake)\n", percentile(moves, 50), percentile(moves, 99))
	}
	tw.Flush()
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
