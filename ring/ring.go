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
// shift and one table load; all the work is done in [NewRing].
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
}

// ringBits is fixed rather than chosen by fleet size: a slot's owner depends
// on which slots exist, so a table size that changed with N would reshuffle
// about half the keys whenever a fleet crossed a size threshold. 2^20 slots
// give 16384 slots per member at N=64 (the slot share's coefficient of
// variation is sqrt(N/2^20), under 1%) and cost one draw per member and slot
// to build: about 1.3 ms of CPU per member with equal weights, see
// BenchmarkRingBuild. Half as many slots would halve that but leave N=64
// fleets noticeably less even.
const (
	ringBits  = 20
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
// Building draws for every member in each of the ring's 2^20 slots, so it
// costs time in proportion to len(members), spread over GOMAXPROCS: tens of
// milliseconds for 64 members, most of a second for 1024 (several seconds
// if every member has a different weight). It is meant to run when
// membership changes, not per request. Weights are honoured as ratios;
// beyond about 2^32 the rank's fixed-point precision starts to blur them.
func New(nodes []Node) (*Ring, error) {
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

	r := &Ring{members: ms}
	switch n := len(ms); {
	case n == 0:
	case n <= 1<<8:
		r.own8, r.run8 = new([ringSlots]uint8), new([ringSlots]uint8)
		fill(ms, r.own8[:], r.run8[:])
	case n <= 1<<16:
		r.own16, r.run16 = new([ringSlots]uint16), new([ringSlots]uint16)
		fill(ms, r.own16[:], r.run16[:])
	default:
		r.own32, r.run32 = new([ringSlots]uint32), new([ringSlots]uint32)
		fill(ms, r.own32[:], r.run32[:])
	}
	return r, nil
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

// buildChunk is the number of slots a build worker takes at a time; small
// enough to balance two workers, large enough to amortise the hand-off.
const buildChunk = 1 << 14

// fill computes the owner and runner-up of every slot, splitting the slots
// among GOMAXPROCS workers; each slot is independent, so the result does not
// depend on the split.
func fill[T uint8 | uint16 | uint32](ms []Node, own, run []T) {
	if len(ms) == 1 {
		return // new tables are already all member 0; no runner-up exists
	}
	p := newContest(ms)
	workers := min(runtime.GOMAXPROCS(0), len(ms)*ringSlots/(1<<22)+1)
	if workers <= 1 {
		fillRange(p, own, run, 0, ringSlots)
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
				fillRange(p, own, run, lo, min(lo+buildChunk, ringSlots))
			}
		})
	}
	wg.Wait()
}

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
// member's slots and runner-ups equal rebuilt owners.
//
// Because rank never decreases as u shrinks, members of equal weight are
// ordered by u alone, so the top two of a weight class are found from raw
// draws and only they pay for logarithms. A fleet with one weight (the
// usual case) never computes one.
type contest struct {
	seeds  []uint64 // draw seeds, grouped by weight, canonical order within a group
	index  []int    // canonical member index of each seed
	groups []weightClass
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
	p := &contest{seeds: make([]uint64, len(ms)), index: order}
	for k, i := range order {
		p.seeds[k] = memberSeed(ms[i].ID)
		if k+1 == len(order) || ms[order[k+1]].Weight != ms[i].Weight {
			p.groups = append(p.groups, weightClass{end: k + 1, recip: ^uint64(0) / uint64(ms[i].Weight)})
		}
	}
	return p
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

func fillRange[T uint8 | uint16 | uint32](c *contest, own, run []T, lo, hi int) {
	if len(c.groups) == 1 {
		for s := lo; s < hi; s++ {
			_, bj, _, sj := top2(c.seeds, slotSalt(s), 0, len(c.seeds))
			own[s], run[s] = T(c.index[bj]), T(c.index[sj])
		}
		return
	}
	lt := log2Table()
	for s := lo; s < hi; s++ {
		sx := slotSalt(s)
		p := podium{bk: ^uint64(0), sk: ^uint64(0)}
		start := 0
		for _, g := range c.groups {
			if g.end-start == 1 {
				// A class of one, as when every weight differs: no
				// top2 call, just the member's own rank.
				u := score(c.seeds[start], sx)
				if k, _ := bits.Mul64(negLog2(lt, u)<<25, g.recip); k <= p.sk {
					p = p.enter(k, u, c.index[start])
				}
			} else {
				bu, bj, su, sj := top2(c.seeds, sx, start, g.end)
				if k, _ := bits.Mul64(negLog2(lt, bu)<<25, g.recip); k <= p.sk {
					p = p.enter(k, bu, c.index[bj])
				}
				if k, _ := bits.Mul64(negLog2(lt, su)<<25, g.recip); k <= p.sk {
					p = p.enter(k, su, c.index[sj])
				}
			}
			start = g.end
		}
		own[s], run[s] = T(p.bi), T(p.si)
	}
}

// memberSeed spreads a member's ID over 64 bits for scoring. It is re-mixed
// so member seeds are not the same numbers as key hashes.
func memberSeed(id string) uint64 { return mix64(Hash(id) ^ 0x2d358dccaa6c78a5) }

// slotSalt gives each slot an unrelated-looking 64-bit salt, so that
// neighbouring slots' contests are independent.
func slotSalt(s int) uint64 { return mix64(uint64(s)*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019) }

// score is a member's pseudo-random draw u for a slot: one folded 64×64-bit
// multiply of two well-mixed values (wyhash's mum), because a build makes
// N×2^20 of them.
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
