// Package ring places keys on the nodes of a fleet so that every process that
// builds a ring from the same node set agrees on each key's owner without
// talking to the others: weighted rendezvous hashing over a fixed table of
// slots, computed in integers so every architecture agrees, with the
// runner-up of every slot kept so a node's removal is answered without a
// rebuild.
//
// The middleware in the parent package uses it for its Shard rule; use it
// directly to route keys the same way from code of your own:
//
//	r, err := ring.New([]ring.Node{{ID: "a"}, {ID: "b", Weight: 2}})
//	...
//	owner := r.Node(r.Owner(ring.Hash("room-42"))).ID
package ring

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math/bits"
	"runtime"
	"slices"
	"sync"
)

// Node is one member of a ring.
type Node struct {
	// ID is the node's stable identity, hashed to place it: required and
	// unique. Keep it across restarts and address changes, or its keys move.
	ID string
	// Weight is the node's relative capacity: its share of keys is
	// Weight over the sum of weights. 0 means 1; negative is an error.
	Weight int
}

// Ring maps keys (room or user ids) to nodes.
//
// The key space is cut into a fixed number of slots (ringSlots) by the top
// bits of the key's hash, and each slot belongs to the member that wins a
// weighted rendezvous (highest-random-weight) contest for it. Because every
// slot's contest compares members pairwise by scores that depend only on the
// slot and the two members, the owner is a pure function of the member set
// (IDs and weights): insertion order, history and process do not matter, and
// taking a member away only moves the slots it won. Lookups are a hash, a
// shift and one table load; all the work is done in [New], or in
// [Ring.Update] when the members change.
//
// A Ring is immutable and safe for concurrent use.
type Ring struct {
	members []Node

	// One pair of tables is set, the narrowest that can hold a member
	// index, so a small fleet's table stays in cache. The runner-up table
	// holds each slot's best member other than its owner, which is exactly
	// the owner the slot would have if the owner were removed.
	own8, run8   *[ringSlots]uint8
	own16, run16 *[ringSlots]uint16
	own32, run32 *[ringSlots]uint32

	// bar holds, for each slot, the runner-up's rank rounded up to one of
	// 256 levels (see barLevel): a member joining needs a draw and a
	// comparison (see reachOf) to see that it falls short of a slot's
	// podium, not a logarithm. Like the other tables it depends only on the members,
	// so Update gives the same one as New. It is left out (nil) below two
	// members, and above 2^16, a size no fleet reaches, where the 32-bit
	// tables alone take 4 MiB.
	bar *[ringSlots]uint8
}

// ringBits is fixed rather than chosen by fleet size: a slot's owner depends
// on which slots exist, so a table size that changed with N would reshuffle
// about half the keys whenever a fleet crossed a size threshold. 2^19 slots
// give 8192 slots per member at N=64 (the slot share's coefficient of
// variation is sqrt(N/2^19): 1.1% at N=64, 4.4% at N=1024) and cost one
// draw per member and slot to build: about 0.6 ms of CPU per member with
// equal weights, see BenchmarkRingBuild. Twice as many slots would make
// fleets a little more even (0.8% at N=64) but double the cost of a build
// and of every membership change, which should stay within a few
// milliseconds of CPU.
const (
	ringBits  = 19
	ringSlots = 1 << ringBits
	slotShift = 64 - ringBits
)

// freeHashBits is a mask of the bits of Hash's result that placement never
// looks at (it uses only the top ringBits bits, fewer than 32), as Owner
// promises.
const freeHashBits = 1<<32 - 1

// New builds a ring for nodes. It returns an error if a node's ID is empty
// or repeated or its weight is negative. No nodes give a ring on which every
// lookup returns -1.
//
// Building draws for every member in each of the ring's 2^19 slots, so it
// costs time in proportion to len(nodes), spread over GOMAXPROCS: about
// 0.6 ms of CPU per member with equal weights (a few times that if every
// member has a different weight), so tens of milliseconds for 64 members
// and about half a second for 1024; see BenchmarkRingBuild. It is meant to
// run once: when the membership changes, [Ring.Update] derives the next
// ring from the last far more cheaply. Weights are honoured as ratios;
// beyond about 2^32 the rank's fixed-point precision starts to blur them.
// A ring takes 1.5 MiB of tables up to 256 nodes, 2.5 MiB up to 65536,
// 4 MiB beyond.
func New(nodes []Node) (*Ring, error) {
	ms, err := canonical(nodes)
	if err != nil {
		return nil, err
	}
	return build(ms), nil
}

// canonical checks nodes and returns a copy in ID order with zero weights
// replaced by 1.
func canonical(nodes []Node) ([]Node, error) {
	ms := slices.Clone(nodes)
	for i := range ms {
		if ms[i].ID == "" {
			return nil, fmt.Errorf("ring: node %d has an empty ID", i)
		}
		if ms[i].Weight < 0 {
			return nil, fmt.Errorf("ring: node %q has negative weight %d", ms[i].ID, ms[i].Weight)
		}
		if ms[i].Weight == 0 {
			ms[i].Weight = 1
		}
	}
	slices.SortFunc(ms, func(a, b Node) int { return cmp.Compare(a.ID, b.ID) })
	for i := 1; i < len(ms); i++ {
		if ms[i].ID == ms[i-1].ID {
			return nil, fmt.Errorf("ring: duplicate node ID %q", ms[i].ID)
		}
	}
	return ms, nil
}

// build computes the ring of checked members from scratch.
func build(ms []Node) *Ring {
	r := newTables(ms)
	if len(ms) < 2 {
		return r // new tables are already all member 0; no runner-up exists
	}
	c := newContest(ms)
	work := len(ms) * ringSlots
	switch {
	case r.own8 != nil:
		fill(c, r.own8[:], r.run8[:], r.bars(), work)
	case r.own16 != nil:
		fill(c, r.own16[:], r.run16[:], r.bars(), work)
	default:
		fill(c, r.own32[:], r.run32[:], nil, work)
	}
	return r
}

// newTables returns a ring of members ms with zeroed tables of the
// narrowest type that holds their indexes.
func newTables(ms []Node) *Ring {
	r := &Ring{members: ms}
	switch n := len(ms); {
	case n == 0:
		return r
	case n <= 1<<8:
		r.own8, r.run8 = new([ringSlots]uint8), new([ringSlots]uint8)
	case n <= 1<<16:
		r.own16, r.run16 = new([ringSlots]uint16), new([ringSlots]uint16)
	default:
		r.own32, r.run32 = new([ringSlots]uint32), new([ringSlots]uint32)
		return r
	}
	if len(ms) > 1 {
		r.bar = new([ringSlots]uint8)
	}
	return r
}

// bars returns r's bar table as a slice, nil if it has none.
func (r *Ring) bars() []uint8 {
	if r.bar == nil {
		return nil
	}
	return r.bar[:]
}

// Update returns the ring for nodes: the ring [New](nodes) would build,
// with the same owner and runner-up for every key, computed from r's tables
// where that is cheaper, so that a membership change costs a small fraction
// of a build. r is not changed; the result is r itself when nodes place
// keys as r's nodes do. It returns New's errors.
//
// Its cost follows what changed, not how many nodes stayed:
//
//   - a node that joins, or whose weight grows, is drawn in every slot
//     and, where that draw reaches the slot's bar, compared with the
//     slot's runner-up (and owner, where it beats that): about one draw
//     per slot;
//   - a node that leaves, or whose weight shrinks, re-runs the contests of
//     the slots it won or came second in, about 2/len(nodes) of them when
//     weights are equal, each drawing every node: about two draws per
//     slot in all, more when the node's weight share is larger;
//   - every other slot is copied, its node indexes renumbered (eight at
//     a time up to 255 nodes).
//
// So one change costs about as much as building a ring of three nodes:
// 2–5 ms of CPU for one node joining, leaving or changing weight, or two
// leaving, at 64 or 1024 nodes, the most with every weight different;
// see BenchmarkRingChange. It runs on the calling goroutine alone: a
// membership change is no reason to take every core from the requests a
// node serves meanwhile (two workers measured no less CPU in all). When so
// much changes at once that building afresh is cheaper, Update builds
// afresh, on as many cores as New.
func (r *Ring) Update(nodes []Node) (*Ring, error) {
	ms, err := canonical(nodes)
	if err != nil {
		return nil, err
	}
	if slices.Equal(ms, r.members) {
		return r, nil
	}
	if len(r.members) < 2 || len(ms) < 2 {
		return build(ms), nil
	}
	return r.update(ms, false), nil
}

// update returns the ring of checked members ms, two or more, computed from
// r's tables (r has two or more members too) unless force is false and
// building afresh looks cheaper.
func (r *Ring) update(ms []Node, force bool) *Ring {
	d := diff(r.members, ms)
	// Estimated draws per slot each way; reading and renumbering a slot
	// costs about one.
	incremental := 1 + min(1, 2*float64(d.gone)/float64(len(r.members)))*float64(len(ms))
	if len(d.enter) > 0 {
		incremental += 2 + float64(len(d.enter))
	}
	if !force && incremental >= float64(len(ms)) {
		return build(ms)
	}
	nr := newTables(ms)
	c := newContest(ms)
	if len(d.enter) == 1 && r.bar != nil {
		d.reach = reachOf(c.recip[d.enter[0]])
	}
	switch {
	case r.own8 != nil:
		updateFrom(nr, c, d, r.own8[:], r.run8[:], r.bars())
	case r.own16 != nil:
		updateFrom(nr, c, d, r.own16[:], r.run16[:], r.bars())
	default:
		updateFrom(nr, c, d, r.own32[:], r.run32[:], r.bars())
	}
	return nr
}

// Len returns the number of nodes.
func (r *Ring) Len() int { return len(r.members) }

// Node returns the node with index i: nodes are numbered 0 to Len()-1 in the
// order of their IDs, with zero weights replaced by 1. It panics if i is
// out of range.
func (r *Ring) Node(i int) Node { return r.members[i] }

// Owner returns the index of the node that owns the key whose [Hash] is h,
// or -1 if the ring has no nodes. It reads only the top 32 bits of h, so a
// caller may derive other per-key decisions from the low 32 bits without
// them depending on placement.
func (r *Ring) Owner(h uint64) int {
	slot := h >> slotShift
	switch {
	case r.own8 != nil:
		return int(r.own8[slot])
	case r.own16 != nil:
		return int(r.own16[slot])
	case r.own32 != nil:
		return int(r.own32[slot])
	}
	return -1
}

// OwnerWithout returns the index of the node that would own the key whose
// hash is h if node i were removed: exactly what Owner would return on a
// ring built from the other nodes, with indexes still referring to this
// ring. That lets a draining node send clients to where they will land once
// it is gone, without a rebuild. It returns -1 if no node would be left, and
// Owner(h) if i is not a node index.
func (r *Ring) OwnerWithout(h uint64, i int) int {
	// Removing a node that does not own the slot cannot change who wins
	// it, so only the owner's removal needs the runner-up table.
	o := r.Owner(h)
	if o != i || o < 0 {
		return o
	}
	if len(r.members) == 1 {
		return -1
	}
	slot := h >> slotShift
	switch {
	case r.own8 != nil:
		return int(r.run8[slot])
	case r.own16 != nil:
		return int(r.run16[slot])
	}
	return int(r.run32[slot])
}

// slotIndex is the element type of a ring's tables.
type slotIndex interface{ uint8 | uint16 | uint32 }

// buildChunk is the number of slots a worker takes at a time; small enough
// to balance two workers, large enough to amortise the hand-off.
const buildChunk = 1 << 14

// parallel calls fn over [0, ringSlots) in chunks, on as many as GOMAXPROCS
// workers but no more than work (an estimate of the draws needed) keeps
// busy for a couple of milliseconds each. Each slot is independent, so the
// result does not depend on the split.
func parallel(work int, fn func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), work/(1<<21)+1)
	if workers <= 1 {
		fn(0, ringSlots)
		return
	}
	var mu sync.Mutex
	next := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				mu.Lock()
				lo := next
				next += buildChunk
				mu.Unlock()
				if lo >= ringSlots {
					return
				}
				fn(lo, min(lo+buildChunk, ringSlots))
			}
		})
	}
	wg.Wait()
}

// fill computes the owner, runner-up and bar (if bar is not nil) of every
// slot for two or more members.
func fill[T slotIndex](c *contest, own, run []T, bar []uint8, work int) {
	parallel(work, func(lo, hi int) { fillRange(c, own, run, bar, lo, hi) })
}

func fillRange[T slotIndex](c *contest, own, run []T, bar []uint8, lo, hi int) {
	lt := log2Table()
	if len(c.groups) == 1 {
		recip := c.groups[0].recip
		for s := lo; s < hi; s++ {
			_, bj, su, sj := top2(c.seeds, slotSalt(s), 0, len(c.seeds))
			own[s], run[s] = T(c.index[bj]), T(c.index[sj])
			if bar != nil {
				k, _ := bits.Mul64(negLog2(lt, su)<<25, recip)
				bar[s] = barLevel(k)
			}
		}
		return
	}
	for s := lo; s < hi; s++ {
		bi, si, sk := c.top(lt, slotSalt(s))
		own[s], run[s] = T(bi), T(si)
		if bar != nil {
			bar[s] = barLevel(sk)
		}
	}
}

// barLevel rounds rank k up to one of 256 levels, four per power of two:
// barCeil[barLevel(k)] ≥ k, by less than a quarter.
func barLevel(k uint64) uint8 {
	if k < 4 {
		return uint8(k)
	}
	e := bits.Len64(k) - 1 // 2 to 63
	return uint8(4*e - 4 + int(k>>(e-2)&3))
}

// barCeil is the largest rank of each level.
var barCeil = func() (t [256]uint64) {
	for l := range t {
		switch e, m := (l+4)/4, uint64(l%4); {
		case l < 4:
			t[l] = uint64(l)
		case e > 63:
			t[l] = ^uint64(0)
		default:
			t[l] = (5+m)<<(e-2) - 1 // wraps to 2^64-1 at the top
		}
	}
	return t
}()

// contest holds the members arranged for scoring slots.
//
// Each slot goes to the member with the smallest -ln(u)/w, u being the
// member's pseudo-random draw for the slot: weighted rendezvous, which
// gives each member a share proportional to its weight. The ratio is taken
// in integers as rank = ⌊ℓ·2^25·⌊(2^64-1)/w⌋ / 2^64⌋, ℓ being -log2(u) in
// 32.32 fixed point (ℓ < 65·2^32, so ℓ·2^25 fits in 64 bits), and ties go
// to the larger u and then the lower index. A member's rank depends only on
// its own draw and weight, so this order is total and the same whichever
// other members exist; that is what makes removal move only the removed
// member's slots, runner-ups equal rebuilt owners, and [Ring.Update] able to
// settle a slot by comparing only the members that changed with the slot's
// owner and runner-up.
//
// Because rank never decreases as u shrinks, members of equal weight are
// ordered by u alone, so the top two of a weight class are found from raw
// draws and only they pay for logarithms. A fleet with one weight (the
// usual case) computes one per slot, for the bar. A member alone in its
// class pays for one only if a cheap lower bound on its rank (lowRank)
// does not already rule it out.
type contest struct {
	seeds  []uint64 // draw seeds, grouped by weight, canonical order within a group
	recips []uint64 // ⌊(2^64-1)/w⌋ of each seed's member
	lows   []uint64 // and lowFactor of that
	index  []int    // canonical member index of each seed
	groups []weightClass

	// By canonical index: each member's seed, ⌊(2^64-1)/w⌋, and
	// position in seeds.
	seed, recip []uint64
	pos         []int
}

type weightClass struct {
	end   int    // seeds[previous end:end] have this weight
	recip uint64 // ⌊(2^64-1)/w⌋
}

func newContest(ms []Node) *contest {
	order := make([]int, len(ms))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(ms[a].Weight, ms[b].Weight) })
	c := &contest{
		seeds: make([]uint64, len(ms)), recips: make([]uint64, len(ms)), lows: make([]uint64, len(ms)), index: order,
		seed: make([]uint64, len(ms)), recip: make([]uint64, len(ms)), pos: make([]int, len(ms)),
	}
	for k, i := range order {
		c.seeds[k], c.recips[k] = memberSeed(ms[i].ID), ^uint64(0)/uint64(ms[i].Weight)
		c.lows[k] = lowFactor(c.recips[k])
		c.seed[i], c.recip[i], c.pos[i] = c.seeds[k], c.recips[k], k
		if k+1 == len(order) || ms[order[k+1]].Weight != ms[i].Weight {
			c.groups = append(c.groups, weightClass{end: k + 1, recip: c.recips[k]})
		}
	}
	return c
}

// rank is the rank of draw u for a member with ⌊(2^64-1)/w⌋ = recip. Hot
// loops spell it out, as it is just over the inlining budget.
func rank(lt *[1025]uint64, u, recip uint64) uint64 {
	k, _ := bits.Mul64(negLog2(lt, u)<<25, recip)
	return k
}

// lowRank is a lower bound on rank(lt, u, recip) that needs no logarithm.
// With x = 1-u/2^64, -log2(u/2^64) ≥ x/ln 2 > 23/16·x, and negLog2 never
// falls below the true logarithm (its table is rounded down and linear
// interpolation runs below the concave log2), so ℓ ≥ 23X/16 where
// X = ⌊(2^64-1-u)/2^32⌋ ≤ x·2^32, and the rank ⌊ℓ·recip/2^39⌋ is at least
// ⌊23X·recip/2^43⌋ ≥ ⌊X·23⌊recip/2^37⌋/2^6⌋. That last product fits in
// 64 bits (X < 2^32, 23⌊recip/2^37⌋ < 2^32): plain multiplications, which
// loops that make one per member afford better than the rank's 128-bit
// one. For the draws near 2^64 that can win a slot the bound is within
// half a percent of the rank, and dropping recip's low bits costs a
// further w/2^27 of it (a weight of 2^27 or more makes the bound 0).
func lowRank(u, recip uint64) uint64 { return lowRankBy(u, lowFactor(recip)) }

// lowFactor is lowRank's factor for recip, 23⌊recip/2^37⌋, which loops
// over members keep rather than compute.
func lowFactor(recip uint64) uint64 { return 23 * (recip >> 37) }

// lowRankBy is lowRank given lowFactor(recip).
func lowRankBy(u, f uint64) uint64 { return ^u >> 32 * f >> 6 }

// entry is one member's standing in a slot's contest.
type entry struct {
	k, u uint64 // rank (0 for all when every member has one weight) and draw
	i    int    // canonical index
}

// beats reports whether e comes before f in the order described on contest.
func (e entry) beats(f entry) bool {
	return e.k < f.k || e.k == f.k && (e.u > f.u || e.u == f.u && e.i < f.i)
}

// entry returns member i's standing in the slot with salt sx.
func (c *contest) entry(lt *[1025]uint64, sx uint64, i int) entry {
	u := score(c.seed[i], sx)
	if len(c.groups) == 1 {
		return entry{u: u, i: i}
	}
	return entry{k: rank(lt, u, c.recip[i]), u: u, i: i}
}

// rankOf returns e's rank, which entry leaves out when every member has
// one weight.
func (c *contest) rankOf(lt *[1025]uint64, e entry) uint64 {
	if len(c.groups) == 1 {
		return rank(lt, e.u, c.groups[0].recip)
	}
	return e.k
}

// beats reports whether member i beats f in the slot with salt sx, paying
// for a logarithm only if lowRank leaves it in doubt.
func (c *contest) beats(lt *[1025]uint64, sx uint64, i int, f entry) bool {
	u := score(c.seed[i], sx)
	if len(c.groups) == 1 {
		return entry{u: u, i: i}.beats(f)
	}
	if lowRank(u, c.recip[i]) > f.k {
		return false
	}
	return entry{k: rank(lt, u, c.recip[i]), u: u, i: i}.beats(f)
}

// top returns the canonical indexes of the owner and runner-up of the slot
// with salt sx, and the runner-up's rank; there are at least two members.
// Classes are visited heaviest first, whose ranks are likeliest to be
// small, so that lowRank rules out the most.
func (c *contest) top(lt *[1025]uint64, sx uint64) (owner, runner int, rk uint64) {
	if len(c.groups) == 1 {
		_, bj, su, sj := top2(c.seeds, sx, 0, len(c.seeds))
		return c.index[bj], c.index[sj], rank(lt, su, c.groups[0].recip)
	}
	p := podium{bk: ^uint64(0), sk: ^uint64(0)}
	end := len(c.seeds)
	for g := len(c.groups) - 1; g >= 0; g-- {
		start := 0
		if g > 0 {
			start = c.groups[g-1].end
		}
		recip := c.groups[g].recip
		if end-start == 1 {
			// A class of one, as when every weight differs: no top2
			// call, just the member's own rank.
			u := score(c.seeds[start], sx)
			if lowRank(u, recip) <= p.sk {
				if k := rank(lt, u, recip); k <= p.sk {
					p = p.enter(k, u, c.index[start])
				}
			}
		} else {
			bu, bj, su, sj := top2(c.seeds, sx, start, end)
			if k := rank(lt, bu, recip); k <= p.sk {
				p = p.enter(k, bu, c.index[bj])
			}
			if k := rank(lt, su, recip); k <= p.sk {
				p = p.enter(k, su, c.index[sj])
			}
		}
		end = start
	}
	return p.bi, p.si, p.sk
}

// bestBut returns the standing of the best member other than x in the
// slot with salt sx; there are at least two members. With more than one
// weight it starts from seed, a member other than x known to be in the
// running (or none: index -1 and rank ^0), and visits members heaviest
// first, whose ranks are likeliest to be small, so that lowRank spares most
// of the rest a logarithm.
func (c *contest) bestBut(lt *[1025]uint64, sx uint64, x int, seed entry) entry {
	skip := c.pos[x]
	if len(c.groups) == 1 {
		u, j := max1(c.seeds, sx, skip)
		return entry{u: u, i: c.index[j]}
	}
	seeds := c.seeds
	recips, lows, index := c.recips[:len(seeds)], c.lows[:len(seeds)], c.index[:len(seeds)]
	bk, bu, bi := seed.k, seed.u, seed.i
	for j := len(seeds) - 1; j >= 0; j-- {
		u := score(seeds[j], sx)
		if j == skip || lowRankBy(u, lows[j]) > bk {
			continue
		}
		k, _ := bits.Mul64(negLog2(lt, u)<<25, recips[j])
		if i := index[j]; k < bk || k == bk && (u > bu || u == bu && i < bi) {
			bk, bu, bi = k, u, i
		}
	}
	return entry{k: bk, u: bu, i: bi}
}

// none is the standing of no member, behind every member.
var none = entry{k: ^uint64(0), i: -1}

// topGiven returns what top does, given a guess at the owner, fx, and a
// seed for bestBut: if fx beats every other member they are fx and the
// best of the rest; otherwise the contest is run in full.
func (c *contest) topGiven(lt *[1025]uint64, sx uint64, fx, seed entry) (owner, runner int, rk uint64) {
	if y := c.bestBut(lt, sx, fx.i, seed); fx.beats(y) {
		return fx.i, y.i, c.rankOf(lt, y)
	}
	return c.top(lt, sx)
}

// max1 returns the largest draw in seeds other than at position skip, and
// its position, the earlier on ties; seeds must hold a position other than
// skip. It runs over the positions before skip and after it with the same
// two interleaved maxima, which shorten the loop's chain of dependent
// comparisons.
func max1(seeds []uint64, sx uint64, skip int) (bu uint64, bj int) {
	lo := 0
	if skip == 0 {
		lo = 1
	}
	// Both runs start from the first position, which wins their ties.
	u0, u1 := score(seeds[lo], sx), score(seeds[lo], sx)
	j0, j1 := lo, lo
	mid := min(max(skip, lo+1), len(seeds))
	u0, j0, u1, j1 = max2(seeds, sx, lo+1, mid, u0, j0, u1, j1)
	u0, j0, u1, j1 = max2(seeds, sx, max(mid, skip+1), len(seeds), u0, j0, u1, j1)
	if u1 > u0 || u1 == u0 && j1 < j0 {
		return u1, j1
	}
	return u0, j0
}

// max2 carries two running maxima of draws, with their positions, over
// seeds[lo:hi], alternating between them; each keeps the earlier position
// on ties.
func max2(seeds []uint64, sx uint64, lo, hi int, u0 uint64, j0 int, u1 uint64, j1 int) (uint64, int, uint64, int) {
	if lo >= hi {
		return u0, j0, u1, j1
	}
	seeds = seeds[:hi]
	j := lo
	for ; j+1 < len(seeds); j += 2 {
		a, b := score(seeds[j], sx), score(seeds[j+1], sx)
		if a > u0 {
			u0, j0 = a, j
		}
		if b > u1 {
			u1, j1 = b, j+1
		}
	}
	if j < len(seeds) {
		if a := score(seeds[j], sx); a > u0 {
			u0, j0 = a, j
		}
	}
	return u0, j0, u1, j1
}

// top2 returns the positions in seeds[lo:hi] of the two largest draws for
// the slot with salt sx, earlier position first on ties; second is -1 if
// there is only one seed. The update is written to compile to conditional
// moves: a new leader turns up about ln(N) times per slot, too
// unpredictably for branches.
func top2(seeds []uint64, sx uint64, lo, hi int) (bu uint64, bj int, su uint64, sj int) {
	bu, bj, sj = score(seeds[lo], sx), lo, -1
	if hi-lo < 2 {
		return
	}
	su, sj = score(seeds[lo+1], sx), lo+1
	if su > bu {
		bu, su, bj, sj = su, bu, sj, bj
	}
	for j := lo + 2; j < hi; j++ {
		u := score(seeds[j], sx)
		if u > su {
			su, sj = u, j
		}
		if su > bu {
			bu, su, bj, sj = su, bu, sj, bj
		}
	}
	return
}

// podium holds the best two entrants of one slot's contest so far, by the
// order described on contest. An empty place has rank ^0, which no entrant
// reaches (ranks stay below 65·2^57).
type podium struct {
	bk, bu, sk, su uint64 // rank and draw of the best and the second
	bi, si         int    // canonical indexes
}

// enter returns the podium after an entrant with rank k, draw u and
// canonical index i; callers only call it when k <= p.sk, so the common
// entrant, which places nowhere, costs one predictable branch.
func (p podium) enter(k, u uint64, i int) podium {
	if k == p.sk && (u < p.su || u == p.su && i > p.si) {
		return p
	}
	if k < p.bk || k == p.bk && (u > p.bu || u == p.bu && i < p.bi) {
		return podium{bk: k, bu: u, bi: i, sk: p.bk, su: p.bu, si: p.bi}
	}
	p.sk, p.su, p.si = k, u, i
	return p
}

// In delta.remap, the new index of a member whose weight shrank carries
// the shrunk bit, and a member that left maps to gone, which has it too.
const (
	shrunk = 1 << 31
	gone   = ^uint32(0)
)

// delta is what changed between two member lists, for Ring.Update.
type delta struct {
	// remap takes an old member index to the member's new index, marked
	// if the member left or got lighter: a slot where it came first or
	// second must be looked at again.
	remap []uint32
	gone  int // members that left or got lighter
	// enter lists the new indexes of members that joined or whose weight
	// grew, the only ones that can climb onto a slot's podium; heavier
	// marks the latter by new index.
	enter   []int
	heavier []bool
	// bytes is remap restated for byte tables, or nil if they are not
	// both byte tables or too much changed.
	bytes *byteRemap
	// reach is, for a lone entrant and an old ring with bars, the
	// smallest draw with which it can come within each bar level (see
	// reachOf); nil otherwise.
	reach *[256]uint64
}

// reachOf returns, for a member with ⌊(2^64-1)/w⌋ = recip, the smallest
// draw whose rank is at most each bar level's ceiling (2^64-1 if there is
// none): a member whose draw falls short of reach[bar[s]] ranks behind the
// runner-up of slot s, which a multiplication by recip alone could not
// tell. Ranks never increase with the draw, so each is a binary search.
func reachOf(recip uint64) *[256]uint64 {
	lt := log2Table()
	var reach [256]uint64
	hi := ^uint64(0)
	for l, ceil := range barCeil {
		if rank(lt, hi, recip) > ceil {
			reach[l] = hi
			continue
		}
		lo := uint64(0)
		for lo < hi { // rank(hi) ≤ ceil
			if mid := lo + (hi-lo)/2; rank(lt, mid, recip) <= ceil {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		reach[l] = hi // and a higher level's reach is no larger
	}
	return &reach
}

// diff compares two checked member lists in ID order.
func diff(old, ms []Node) *delta {
	d := &delta{remap: make([]uint32, len(old)), heavier: make([]bool, len(ms))}
	var br byteRemap
	i, j := 0, 0
	for i < len(old) || j < len(ms) {
		switch {
		case j == len(ms) || i < len(old) && old[i].ID < ms[j].ID:
			d.remap[i] = gone
			d.gone++
			br.drop = append(br.drop, i+1)
			br.flag = append(br.flag, uint64(i)*laneLow)
			i++
		case i == len(old) || ms[j].ID < old[i].ID:
			d.enter = append(d.enter, j)
			br.add = append(br.add, i)
			j++
		default:
			d.remap[i] = uint32(j)
			switch {
			case ms[j].Weight > old[i].Weight:
				d.enter = append(d.enter, j)
				d.heavier[j] = true
			case ms[j].Weight < old[i].Weight:
				d.remap[i] |= shrunk
				d.gone++
				br.flag = append(br.flag, uint64(i)*laneLow)
			}
			i++
			j++
		}
	}
	// Below 256 new members no lane, not even a departed member's, is
	// renumbered past 255 into its neighbour.
	if len(old) <= 1<<8 && len(ms) < 1<<8 && len(br.drop)+len(br.add) <= 4 && len(br.flag) <= 4 {
		d.bytes = &br
	}
	return d
}

// byteRemap renumbers byte tables eight slots at a time, in the lanes of a
// uint64: a member's new index is its old one, less one for each member
// that left below it, plus one for each that joined below it. Thresholds
// and flags are old indexes.
type byteRemap struct {
	drop []int    // lanes at or above each lose one
	add  []int    // lanes at or above each gain one
	flag []uint64 // lanes holding one of these, in every lane, are marked
}

const (
	laneLow  = 0x0101010101010101 // 1 in every lane
	laneHigh = 0x8080808080808080 // every lane's high bit
	laneRest = 0x7f7f7f7f7f7f7f7f // every lane's other bits
)

// renumber is renumber's loop for byte tables: the tables are copied,
// then each threshold and flag is applied to all the block's lanes in a
// loop of its own, which keeps the loops short enough for registers and
// free of branches that depend on the slots.
func (br *byteRemap) renumber(oldOwn, oldRun, own, run []uint8, marks *[buildChunk / 64]uint64) {
	copy(own, oldOwn)
	copy(run, oldRun)
	for _, t := range br.drop { // first, so that no lane passes 255
		shiftLanes(oldOwn, own, t, -1)
		shiftLanes(oldRun, run, t, -1)
	}
	for _, t := range br.add {
		shiftLanes(oldOwn, own, t, 1)
		shiftLanes(oldRun, run, t, 1)
	}
	for _, f := range br.flag {
		markLanes(oldOwn, oldRun, f, marks)
	}
}

// shiftLanes adds by (±1) to every byte of to whose counterpart in from
// is at least t; len(from) is a multiple of 8.
func shiftLanes(from, to []uint8, t int, by int) {
	to = to[:len(from)]
	if by < 0 {
		for i := 0; i+8 <= len(from); i += 8 {
			x := binary.LittleEndian.Uint64(from[i:])
			binary.LittleEndian.PutUint64(to[i:], binary.LittleEndian.Uint64(to[i:])-atLeast(x, t)>>7)
		}
		return
	}
	for i := 0; i+8 <= len(from); i += 8 {
		x := binary.LittleEndian.Uint64(from[i:])
		binary.LittleEndian.PutUint64(to[i:], binary.LittleEndian.Uint64(to[i:])+atLeast(x, t)>>7)
	}
}

// markLanes marks the slots whose owner or runner-up is f (in every lane).
func markLanes(own, run []uint8, f uint64, marks *[buildChunk / 64]uint64) {
	n := min(len(own), len(run), 64*len(marks)) &^ 63
	for w := 0; w < n/64; w++ {
		var m uint64
		for k := range 8 {
			i := 64*w + 8*k
			z := zeroLanes(binary.LittleEndian.Uint64(own[i:])^f) | zeroLanes(binary.LittleEndian.Uint64(run[i:])^f)
			// Gather the lanes' high bits into one byte, lane j at bit j.
			m |= (z >> 7) * 0x0102040810204080 >> 56 << (8 * k)
		}
		marks[w] |= m
	}
}

// zeroLanes returns the high bit of each lane of x that is 0.
func zeroLanes(x uint64) uint64 { return ^((x&laneRest + laneRest) | x | laneRest) }

// atLeast returns the high bit of each lane of x that is at least t (0 to
// 256). Lanes are compared on their low seven bits by a subtraction that
// cannot borrow across lanes, then the high bits settle the rest.
func atLeast(x uint64, t int) uint64 {
	if t > 0xff {
		return 0
	}
	d := (x | laneHigh) - uint64(t&0x7f)*laneLow
	if t < 0x80 {
		return (x | d) & laneHigh
	}
	return x & d & laneHigh
}

// updateFrom fills nr's tables from an old ring's, own, run and bar (nil
// if it has none), on the calling goroutine (see Update).
func updateFrom[O slotIndex](nr *Ring, c *contest, d *delta, own, run []O, bar []uint8) {
	nbar := nr.bars()
	if bar == nil {
		nbar = nil // no old bars to copy: computed afterwards
	}
	switch {
	case nr.own8 != nil:
		updateRange(c, d, own, run, bar, nr.own8[:], nr.run8[:], nbar, 0, ringSlots)
		if nbar == nil && nr.bar != nil {
			fillBars(c, nr.run8[:], nr.bar[:])
		}
	case nr.own16 != nil:
		updateRange(c, d, own, run, bar, nr.own16[:], nr.run16[:], nbar, 0, ringSlots)
		if nbar == nil && nr.bar != nil {
			fillBars(c, nr.run16[:], nr.bar[:])
		}
	default:
		updateRange(c, d, own, run, bar, nr.own32[:], nr.run32[:], nil, 0, ringSlots)
	}
}

// fillBars computes every slot's bar from its runner-up, for a ring
// updated from one that had no bars.
func fillBars[T slotIndex](c *contest, run []T, bar []uint8) {
	parallel(2*ringSlots, func(lo, hi int) {
		lt := log2Table()
		for s := lo; s < hi; s++ {
			b := int(run[s])
			bar[s] = barLevel(rank(lt, score(c.seed[b], slotSalt(s)), c.recip[b]))
		}
	})
}

// updateRange settles slots lo to hi-1 of a ring whose members differ from
// the old ring's by d, a block of at most buildChunk slots at a time. First
// every slot is copied with its node indexes renumbered (renumber), and
// the slots whose old owner a or runner-up b left or got lighter are
// marked. Where neither got worse, everyone else still trails them, so
// only the members in d.enter can climb past them and the copy stands
// unless one does; marked slots are looked at again (settle). The common
// cases, nobody entering and one member entering, have loops of their
// own. bar is nil or oldBar is not.
func updateRange[O, T slotIndex](c *contest, d *delta, oldOwn, oldRun []O, oldBar []uint8, own, run []T, bar []uint8, lo, hi int) {
	for ; lo < hi; lo += buildChunk {
		end := min(lo+buildChunk, hi)
		var marks [buildChunk / 64]uint64
		if bar != nil {
			copy(bar[lo:end], oldBar[lo:end])
		}
		renumber(d, oldOwn[lo:end], oldRun[lo:end], own[lo:end], run[lo:end], &marks)
		updateBlock(c, d, oldOwn, oldRun, oldBar, own, run, bar, lo, end, &marks)
	}
}

// updateBlock settles a block of slots, lo to hi-1, once renumber has
// copied and marked them.
func updateBlock[O, T slotIndex](c *contest, d *delta, oldOwn, oldRun []O, oldBar []uint8, own, run []T, bar []uint8, lo, hi int, marks *[buildChunk / 64]uint64) {
	lt := log2Table()
	remap, reach := d.remap, d.reach
	// settle looks again at slot s, marked or with an entrant in reach,
	// given its old owner and runner-up by their new indexes.
	settle := func(s int, a, b uint32) {
		bi, si, rk := d.settle(c, lt, slotSalt(s), a, b)
		own[s], run[s] = T(bi), T(si)
		if bar != nil {
			bar[s] = barLevel(rk)
		}
	}
	marked := func(s int) bool { return marks[uint(s-lo)/64]>>(uint(s-lo)%64)&1 != 0 }
	old := func(s int) (a, b uint32) { return remap[oldOwn[s]], remap[oldRun[s]] }
	switch {
	case len(d.enter) == 0:
		for w, m := range marks {
			for ; m != 0; m &= m - 1 {
				s := lo + w*64 + bits.TrailingZeros64(m)
				a, b := old(s)
				settle(s, a, b)
			}
		}
	case len(d.enter) == 1 && len(c.groups) == 1:
		// One member joins, or grows to, a fleet of one weight: draws
		// alone decide.
		e := uint32(d.enter[0])
		se, seed, recip := c.seed[e], c.seed, c.groups[0].recip
		for s := lo; s < hi; s++ {
			sx := slotSalt(s)
			ue := score(se, sx)
			m := marks[uint(s-lo)/64] >> (uint(s-lo) % 64) & 1
			if reach != nil && ue < reach[oldBar[s]] && m == 0 {
				continue // the copy stands
			}
			if m != 0 {
				a, b := old(s)
				settle(s, a, b)
				continue
			}
			a, b := uint32(own[s]), uint32(run[s])
			if a == e || b == e { // it was there already, and grew
				settle(s, a, b)
				continue
			}
			ub := score(seed[b], sx)
			if ue < ub || ue == ub && e > b {
				continue
			}
			ua, ur := score(seed[a], sx), ue
			if beatsDraw(ue, e, ua, a) {
				own[s], run[s], ur = T(e), T(a), ua
			} else {
				run[s] = T(e)
			}
			if bar != nil {
				k, _ := bits.Mul64(negLog2(lt, ur)<<25, recip)
				bar[s] = barLevel(k)
			}
		}
	case len(d.enter) == 1:
		// One member joins or grows: it is ranked against the bar, then
		// the runner-up, then the owner, for as long as it keeps up. A
		// member that grew keeps within the bar of a slot where it came
		// second, so that case is never cut short.
		e := uint32(d.enter[0])
		se, re, seed, recip := c.seed[e], c.recip[e], c.seed, c.recip
		for s := lo; s < hi; s++ {
			sx := slotSalt(s)
			ue := score(se, sx)
			m := marks[uint(s-lo)/64] >> (uint(s-lo) % 64) & 1
			if reach != nil && ue < reach[oldBar[s]] && m == 0 {
				continue // the copy stands
			}
			if m != 0 {
				a, b := old(s)
				settle(s, a, b)
				continue
			}
			a, b := uint32(own[s]), uint32(run[s])
			switch {
			case a == e:
				// An owner that grew stays ahead of the same runner-up.
				continue
			case b == e:
				// A runner-up that grew may pass the owner.
				ua := score(seed[a], sx)
				ka, _ := bits.Mul64(negLog2(lt, ua)<<25, recip[a])
				kb, _ := bits.Mul64(negLog2(lt, ue)<<25, re)
				if beatsRank(kb, ue, b, ka, ua, a) {
					own[s], run[s], kb = T(b), T(a), ka
				}
				if bar != nil {
					bar[s] = barLevel(kb)
				}
				continue
			}
			le := lowRank(ue, re)
			ub := score(seed[b], sx)
			kb, _ := bits.Mul64(negLog2(lt, ub)<<25, recip[b])
			if le > kb {
				continue
			}
			ke, _ := bits.Mul64(negLog2(lt, ue)<<25, re)
			if !beatsRank(ke, ue, e, kb, ub, b) {
				continue
			}
			ua := score(seed[a], sx)
			if ka, _ := bits.Mul64(negLog2(lt, ua)<<25, recip[a]); beatsRank(ke, ue, e, ka, ua, a) {
				own[s], run[s], kb = T(e), T(a), ka
			} else {
				run[s], kb = T(e), ke
			}
			if bar != nil {
				bar[s] = barLevel(kb)
			}
		}
	default:
		for s := lo; s < hi; s++ {
			a, b := uint32(own[s]), uint32(run[s])
			if marked(s) {
				a, b = old(s)
			}
			settle(s, a, b)
		}
	}
}

// renumber copies a block of old tables' slots with their node indexes
// renumbered by d, and marks in marks the slots whose owner or runner-up
// left or got lighter (whose copies are then meaningless). Byte tables
// whose renumbering d.bytes describes take eight slots at a time.
func renumber[O, T slotIndex](d *delta, oldOwn, oldRun []O, own, run []T, marks *[buildChunk / 64]uint64) {
	if d.bytes != nil {
		if o8, ok := any(oldOwn).([]uint8); ok {
			if n8, ok := any(own).([]uint8); ok {
				d.bytes.renumber(o8, any(oldRun).([]uint8), n8, any(run).([]uint8), marks)
				return
			}
		}
	}
	remap := d.remap
	oldRun, own, run = oldRun[:len(oldOwn)], own[:len(oldOwn)], run[:len(oldOwn)]
	for s, oa := range oldOwn {
		a, b := remap[oa], remap[oldRun[s]]
		own[s], run[s] = T(a), T(b)
		if (a|b)&shrunk != 0 {
			marks[s/64] |= 1 << (s % 64)
		}
	}
}

// beatsDraw reports whether member i with draw u beats member j with draw v
// when both have the same weight.
func beatsDraw(u uint64, i uint32, v uint64, j uint32) bool { return u > v || u == v && i < j }

// beatsRank reports whether member i with rank k and draw u beats member j
// with rank l and draw v.
func beatsRank(k, u uint64, i uint32, l, v uint64, j uint32) bool {
	return k < l || k == l && (u > v || u == v && i < j)
}

// settle returns the owner and runner-up, and the runner-up's rank, of the
// slot with salt sx whose old owner and runner-up map to a and b.
func (d *delta) settle(c *contest, lt *[1025]uint64, sx uint64, a, b uint32) (owner, runner int, rk uint64) {
	if (a|b)&shrunk != 0 {
		return d.rerun(c, lt, sx, a, b)
	}
	return d.contend(c, lt, sx, int(a), int(b))
}

// rerun is settle for a slot where the old owner a or runner-up b, or
// both, left or got lighter. An owner that got lighter but still beats
// the runner-up keeps its place.
//
// With nobody entering, whichever of a and b did not get worse (when only
// one did) still beats everyone else, so only the runner-up is looked for;
// otherwise an entrant may have passed it too, which topGiven checks.
func (d *delta) rerun(c *contest, lt *[1025]uint64, sx uint64, a, b uint32) (owner, runner int, rk uint64) {
	settled := len(d.enter) == 0
	switch {
	case a&b&shrunk != 0:
		return c.top(lt, sx)
	case b == gone && settled:
		return c.behind(lt, sx, int(a), none)
	case b == gone:
		return c.topGiven(lt, sx, c.entry(lt, sx, int(a)), none)
	case b&shrunk != 0:
		// The lighter runner-up is still in the running for its place.
		fb := c.entry(lt, sx, int(b&^shrunk))
		if settled {
			return c.behind(lt, sx, int(a), fb)
		}
		return c.topGiven(lt, sx, c.entry(lt, sx, int(a)), fb)
	case a != gone:
		fa, fb := c.entry(lt, sx, int(a&^shrunk)), c.entry(lt, sx, int(b))
		if fa.beats(fb) {
			return d.contend(c, lt, sx, fa.i, fb.i)
		}
		// The lighter owner is in the running for second place.
		return c.topGiven(lt, sx, fb, fa)
	case settled:
		return c.behind(lt, sx, int(b), none)
	}
	return c.topGiven(lt, sx, c.entry(lt, sx, int(b)), none)
}

// behind returns x, known to beat every other member of the slot with salt
// sx, as its owner, and the runner-up bestBut finds from seed.
func (c *contest) behind(lt *[1025]uint64, sx uint64, x int, seed entry) (owner, runner int, rk uint64) {
	y := c.bestBut(lt, sx, x, seed)
	return x, y.i, c.rankOf(lt, y)
}

// contend returns the owner and runner-up of the slot with salt sx whose
// owner a and runner-up b still lead everyone outside d.enter, and the
// runner-up's rank: they, unless members in d.enter beat b.
func (d *delta) contend(c *contest, lt *[1025]uint64, sx uint64, a, b int) (owner, runner int, rk uint64) {
	fb := c.entry(lt, sx, b)
	if !d.heavier[b] {
		climbs := false
		for _, e := range d.enter {
			if e != a && c.beats(lt, sx, e, fb) {
				climbs = true
				break
			}
		}
		if !climbs {
			return a, b, c.rankOf(lt, fb)
		}
	}
	p := podium{bk: ^uint64(0), sk: ^uint64(0)}
	fa := c.entry(lt, sx, a)
	p = p.enter(fa.k, fa.u, fa.i)
	p = p.enter(fb.k, fb.u, fb.i)
	for _, e := range d.enter {
		if e != a && e != b {
			if f := c.entry(lt, sx, e); f.k <= p.sk {
				p = p.enter(f.k, f.u, f.i)
			}
		}
	}
	return p.bi, p.si, c.rankOf(lt, entry{k: p.sk, u: p.su, i: p.si})
}

// memberSeed spreads a member's ID over 64 bits for scoring. It is re-mixed
// so member seeds are not the same numbers as key hashes.
func memberSeed(id string) uint64 { return mix64(Hash(id) ^ 0x2d358dccaa6c78a5) }

// slotSalt gives each slot an unrelated-looking 64-bit salt, so that
// neighbouring slots' contests are independent.
func slotSalt(s int) uint64 { return mix64(uint64(s)*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019) }

// score is a member's pseudo-random draw u for a slot: one folded 64×64-bit
// multiply of two well-mixed values (wyhash's mum), because a build makes
// N×2^19 of them.
func score(seed, salt uint64) uint64 { return wymix(seed, salt) }

// mix64 is the moremur finalizer (a stronger-constant variant of
// splitmix64's): a bijection whose output bits each depend on every input
// bit.
func mix64(x uint64) uint64 {
	x ^= x >> 27
	x *= 0x3c79ac492ba7b653
	x ^= x >> 33
	x *= 0x1c69b3f74ac4ae35
	x ^= x >> 27
	return x
}

// log2Table returns log2(1+i/1024) for i in 0..1024 in 0.32 fixed point. It
// is computed with integers only (repeated squaring) rather than math.Log2,
// whose last bit may differ between architectures' assembly and FMA
// fusing; one flipped bit could hand a slot to a different member on some
// nodes of a fleet.
var log2Table = sync.OnceValue(func() *[1025]uint64 {
	var t [1025]uint64
	for i := range 1024 {
		z := uint64(1024+i) << 52 // 1+i/1024 with 62 fraction bits
		var y uint64
		for b := 31; b >= 0; b-- {
			hi, lo := bits.Mul64(z, z)
			z = hi<<2 | lo>>62
			if z >= 2<<62 {
				z >>= 1
				y |= 1 << b
			}
		}
		t[i] = y
	}
	t[1024] = 1 << 32
	return &t
})

// negLog2 returns -log2(u/2^64) in 32.32 fixed point, by linear interpolation
// in lt. The result lies in (lz, lz+1] where lz is u's leading zero count, is
// at least 1, and never increases as u grows, which better relies on.
func negLog2(lt *[1025]uint64, u uint64) uint64 {
	if u == 0 {
		return 65 << 32
	}
	lz := uint64(bits.LeadingZeros64(u))
	m := u << lz
	idx := (m >> 53) & 1023
	rem := (m >> 21) & (1<<32 - 1)
	frac := lt[idx] + ((lt[idx+1]-lt[idx])*rem)>>32
	return (lz+1)<<32 - frac
}
