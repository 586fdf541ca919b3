package ring

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// requireSameRing checks that got is, slot for slot, the ring want: same
// nodes, same owner and runner-up everywhere, in tables of the same width.
func requireSameRing(t testing.TB, want, got *Ring, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	require.Equal(t, want.members, got.members, msg)
	same := func(what string, ok bool) {
		t.Helper()
		if !ok {
			// Name the first differing slot rather than dumping tables.
			for s := range ringSlots {
				h := uint64(s) << slotShift
				if w, g := want.Owner(h), got.Owner(h); w != g {
					require.Failf(t, "owners differ", "slot %d: owner %d, want %d; %v", s, g, w, msg)
				}
				if o := want.Owner(h); want.OwnerWithout(h, o) != got.OwnerWithout(h, o) {
					require.Failf(t, "runner-ups differ", "slot %d: runner-up %d, want %d; %v", s, got.OwnerWithout(h, o), want.OwnerWithout(h, o), msg)
				}
			}
			require.Failf(t, "tables differ", "%s; %v", what, msg)
		}
	}
	same("bars", (want.bar == nil) == (got.bar == nil) && (want.bar == nil || *want.bar == *got.bar))
	switch {
	case want.own8 != nil:
		same("uint8", got.own8 != nil && *want.own8 == *got.own8 && (len(want.members) < 2 || *want.run8 == *got.run8))
	case want.own16 != nil:
		same("uint16", got.own16 != nil && *want.own16 == *got.own16 && *want.run16 == *got.run16)
	case want.own32 != nil:
		same("uint32", got.own32 != nil && *want.own32 == *got.own32 && *want.run32 == *got.run32)
	default:
		same("empty", got.own8 == nil && got.own16 == nil && got.own32 == nil)
	}
}

// churn applies one random membership change to ms: a join, a leave, a
// weight change, or a batch of two to four of those. IDs come from a pool
// of pool names so that members leave and come back; weight picks a new
// member's weight.
func churn(rng *rand.Rand, ms []Node, pool int, weight func() int) ([]Node, string) {
	ms = slices.Clone(ms)
	steps := 1
	if rng.IntN(4) == 0 {
		steps = 2 + rng.IntN(3)
	}
	var what []string
	for range steps {
		switch op := rng.IntN(3); {
		case op == 0 && len(ms) < pool:
			for {
				id := fmt.Sprintf("node-%d", rng.IntN(pool))
				if !slices.ContainsFunc(ms, func(m Node) bool { return m.ID == id }) {
					ms = append(ms, Node{ID: id, Weight: weight()})
					what = append(what, "join "+id)
					break
				}
			}
		case op == 1 && len(ms) > 2:
			i := rng.IntN(len(ms))
			what = append(what, "leave "+ms[i].ID)
			ms = slices.Delete(ms, i, i+1)
		default:
			i := rng.IntN(len(ms))
			old, w := max(ms[i].Weight, 1), max(weight(), 1)
			if w == old {
				w = old - 1
				if w == 0 {
					w = 2
				}
			}
			ms[i].Weight = w
			what = append(what, fmt.Sprintf("reweigh %s %d→%d", ms[i].ID, old, w))
		}
	}
	rng.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
	return ms, fmt.Sprint(what)
}

// TestRingUpdateMatchesNew is the purity property: after any sequence of
// joins, leaves and weight changes, each ring derived by Update from the
// last has exactly the owner and runner-up of every slot that New gives
// the same nodes. Each step is checked twice, through Update (which may
// build afresh) and through the incremental path forced, and the chain
// goes on from the incremental result so that errors would compound.
func TestRingUpdateMatchesNew(t *testing.T) {
	tests := []struct {
		name        string
		start, pool int
		steps       int
		weight      func(rng *rand.Rand) int
	}{
		{"equal/small", 5, 12, 24, func(*rand.Rand) int { return 1 }},
		{"classes/small", 5, 12, 24, func(rng *rand.Rand) int { return rng.IntN(4) }},
		{"distinct/small", 5, 12, 24, func(rng *rand.Rand) int { return 1 + rng.IntN(1000) }},
		{"equal/medium", 40, 60, 8, func(*rand.Rand) int { return 1 }},
		{"classes/medium", 40, 60, 8, func(rng *rand.Rand) int { return 1 + rng.IntN(3) }},
		{"distinct/medium", 40, 60, 8, func(rng *rand.Rand) int { return 1 + rng.IntN(1<<20) }},
		{"huge weights", 6, 10, 8, func(rng *rand.Rand) int { return math.MaxInt - rng.IntN(3) }},
		// Indexes of 128 and more, which the byte tables' eight-at-a-time
		// renumbering carries in their top bit.
		{"equal/large", 180, 200, 4, func(*rand.Rand) int { return 1 }},
		{"distinct/large", 180, 200, 4, func(rng *rand.Rand) int { return 1 + rng.IntN(1000) }},
	}
	for n, tc := range tests {
		steps := tc.steps
		if raceEnabled || testing.Short() {
			steps = max(2, steps/6)
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(7, uint64(n)))
			weight := func() int { return tc.weight(rng) }
			ms := testFleet(tc.start)
			for i := range ms {
				ms[i].Weight = weight()
			}
			r := mustRing(t, ms)
			for step := range steps {
				next, what := churn(rng, ms, tc.pool, weight)
				want := mustRing(t, next)
				got, err := r.Update(next)
				require.NoError(t, err)
				requireSameRing(t, want, got, "step %d: %s", step, what)
				canon, err := canonical(next)
				require.NoError(t, err)
				forced := r.update(canon, true)
				requireSameRing(t, want, forced, "step %d, forced: %s", step, what)
				ms, r = next, forced
			}
		})
	}
}

// TestRingUpdateWidths crosses the 256-member line between 8- and 16-bit
// tables both ways. Building 257-member rings twice over is slow under
// the race detector, so the results are checked against the definition on
// sampled slots rather than against New.
func TestRingUpdateWidths(t *testing.T) {
	ms := testFleet(256)
	ms[5].Weight = 3
	r := mustRing(t, ms)
	check := func(r *Ring) {
		t.Helper()
		rng := rand.New(rand.NewPCG(8, uint64(r.Len())))
		for range 2000 {
			slot := rng.IntN(ringSlots)
			o, ru := referenceOwners(r.nodes(), slot)
			h := uint64(slot) << slotShift
			require.Equal(t, o, r.Owner(h), "slot %d", slot)
			require.Equal(t, ru, r.OwnerWithout(h, o), "slot %d", slot)
		}
	}
	grown, err := r.Update(append(slices.Clone(ms), Node{ID: "node-x"}))
	require.NoError(t, err)
	require.NotNil(t, grown.own16, "257 members take 16-bit tables")
	check(grown)
	shrunk, err := grown.Update(slices.Delete(grown.nodes(), 3, 5)) // 255 left
	require.NoError(t, err)
	require.NotNil(t, shrunk.own8, "255 members take 8-bit tables")
	check(shrunk)
	// Back to the start: the very ring New built.
	back, err := shrunk.Update(ms)
	require.NoError(t, err)
	requireSameRing(t, r, back, "back to 256")
}

func TestRingUpdateSmall(t *testing.T) {
	a, b, c := Node{ID: "a"}, Node{ID: "b", Weight: 2}, Node{ID: "c"}
	for _, tc := range []struct {
		name     string
		from, to []Node
	}{
		{"none to one", nil, []Node{a}},
		{"one to none", []Node{a}, nil},
		{"one to two", []Node{a}, []Node{a, b}},
		{"two to one", []Node{a, b}, []Node{b}},
		{"two to three", []Node{a, b}, []Node{a, b, c}},
		{"three to two", []Node{a, b, c}, []Node{c, a}},
		{"replaced", []Node{a, b}, []Node{c}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mustRing(t, tc.from).Update(tc.to)
			require.NoError(t, err)
			requireSameRing(t, mustRing(t, tc.to), got, "%v", tc.to)
		})
	}
	t.Run("unchanged is the same ring", func(t *testing.T) {
		r := mustRing(t, []Node{a, b, c})
		got, err := r.Update([]Node{{ID: "c", Weight: 1}, b, a})
		require.NoError(t, err)
		assert.Same(t, r, got)
	})
	t.Run("errors", func(t *testing.T) {
		r := mustRing(t, []Node{a, b, c})
		for _, nodes := range [][]Node{{a, {ID: ""}}, {a, b, a}, {{ID: "a", Weight: -1}}} {
			_, want := New(nodes)
			got, err := r.Update(nodes)
			assert.Nil(t, got)
			assert.EqualError(t, err, want.Error())
		}
		assert.Equal(t, []Node{{ID: "a", Weight: 1}, {ID: "b", Weight: 2}, {ID: "c", Weight: 1}}, r.nodes())
	})
	t.Run("input not retained", func(t *testing.T) {
		r := mustRing(t, []Node{a, b})
		in := []Node{a, b, c}
		got, err := r.Update(in)
		require.NoError(t, err)
		in[0].ID = "z"
		assert.Equal(t, "a", got.Node(0).ID)
	})
}

// TestLowRank checks the bound that lets contests skip logarithms: it
// never exceeds the rank.
func TestLowRank(t *testing.T) {
	lt := log2Table()
	rng := rand.New(rand.NewPCG(9, 10))
	recips := []uint64{^uint64(0), ^uint64(0) / 3, ^uint64(0) / 1000, 1}
	us := []uint64{0, 1, 1 << 63, 1<<63 - 1, math.MaxUint64, math.MaxUint64 - 1, math.MaxUint64 - 1<<32, math.MaxUint64 - 1<<33}
	for i := range 300_000 {
		// Draws near 2^64, where the bound is tightest, and anywhere.
		us = append(us[:8], ^(rng.Uint64() >> rng.IntN(64)), rng.Uint64(), math.MaxUint64-uint64(i), 1<<63+uint64(i)<<32)
		for _, u := range us {
			for _, rc := range recips {
				if lowRank(u, rc) > rank(lt, u, rc) {
					t.Fatalf("lowRank(%#x, %#x) = %#x > rank %#x", u, rc, lowRank(u, rc), rank(lt, u, rc))
				}
			}
		}
	}
}

// TestBarLevel checks the rounding of ranks to bar levels: up, to the
// smallest level whose ceiling holds the rank, monotonically.
func TestBarLevel(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	ks := []uint64{0, 1, 2, 3, 4, 5, 7, 8, 9, 1 << 40, 1<<40 - 1, 65 << 57, math.MaxUint64, math.MaxUint64 - 1}
	for range 100_000 {
		ks = append(ks[:14], rng.Uint64()>>rng.IntN(64))
		for _, k := range ks {
			l := barLevel(k)
			if barCeil[l] < k || l > 0 && barCeil[l-1] >= k {
				t.Fatalf("barLevel(%#x) = %d: ceilings %#x, %#x", k, l, barCeil[max(l, 1)-1], barCeil[l])
			}
			if k > 0 && barLevel(k-1) > l {
				t.Fatalf("barLevel not monotone at %#x", k)
			}
		}
	}
	assert.EqualValues(t, 251, barLevel(math.MaxUint64))
}

// TestRingMemory checks what a ring's tables take, at the sizes where
// their element type changes: 3, 5 or 8 bytes a slot, at most 8 MiB.
func TestRingMemory(t *testing.T) {
	for _, tc := range []struct{ n, perSlot int }{{2, 3}, {256, 3}, {257, 5}, {1 << 16, 5}, {1<<16 + 1, 8}} {
		r := newTables(make([]Node, tc.n))
		size := 0
		for _, ok := range []bool{r.own8 != nil, r.run8 != nil, r.bar != nil} {
			size += btoi(ok) * ringSlots
		}
		for _, ok := range []bool{r.own16 != nil, r.run16 != nil} {
			size += btoi(ok) * 2 * ringSlots
		}
		for _, ok := range []bool{r.own32 != nil, r.run32 != nil} {
			size += btoi(ok) * 4 * ringSlots
		}
		assert.Equal(t, tc.perSlot*ringSlots, size, "n=%d", tc.n)
		assert.LessOrEqual(t, size, 8<<20, "n=%d", tc.n)
	}
}

// TestByteRemap checks the eight-lane renumbering of byte tables against
// the definition, lane by lane, with thresholds and flags on both sides of
// 128 where the lane comparison changes form.
func TestByteRemap(t *testing.T) {
	for x := range 256 {
		for th := range 257 {
			w := uint64(x) * laneLow
			want := uint64(0)
			if x >= th {
				want = laneHigh
			}
			require.Equal(t, want, atLeast(w, th), "atLeast(%d, %d)", x, th)
		}
	}
	rng := rand.New(rand.NewPCG(13, 14))
	for range 2000 {
		var br byteRemap
		for range rng.IntN(3) { // distinct, as departed members are
			if th := 1 + rng.IntN(255); !slices.Contains(br.drop, th) {
				br.drop = append(br.drop, th)
			}
		}
		for range rng.IntN(3) {
			br.add = append(br.add, rng.IntN(256))
		}
		var flags []int
		for range rng.IntN(3) {
			flags = append(flags, rng.IntN(256))
			br.flag = append(br.flag, uint64(flags[len(flags)-1])*laneLow)
		}
		// Lanes stay below 256 as they do in Update: drops first, and no
		// lane gains more than it can take.
		own, run := make([]uint8, 128), make([]uint8, 128)
		for i := range own {
			own[i] = uint8(rng.IntN(256 - len(br.add)))
			run[i] = uint8(rng.IntN(256 - len(br.add)))
			if rng.IntN(8) == 0 && len(flags) > 0 {
				own[i] = uint8(min(flags[0], 255-len(br.add)))
			}
		}
		gotOwn, gotRun := make([]uint8, 128), make([]uint8, 128)
		var marks [buildChunk / 64]uint64
		br.renumber(own, run, gotOwn, gotRun, &marks)
		renum := func(x uint8) uint8 {
			y := int(x)
			for _, th := range br.drop {
				y -= btoi(int(x) >= th)
			}
			for _, th := range br.add {
				y += btoi(int(x) >= th)
			}
			return uint8(y)
		}
		for i := range own {
			require.Equal(t, renum(own[i]), gotOwn[i], "own slot %d: %+v", i, br)
			require.Equal(t, renum(run[i]), gotRun[i], "run slot %d: %+v", i, br)
			marked := slices.Contains(flags, int(own[i])) || slices.Contains(flags, int(run[i]))
			require.Equal(t, marked, marks[i/64]>>(i%64)&1 == 1, "mark of slot %d: %+v", i, br)
		}
	}
}

// TestMax1 checks max1 against the definition wherever the skipped
// position falls, on draws with ties (repeated seeds).
func TestMax1(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	for n := 2; n <= 9; n++ {
		for range 300 {
			seeds := make([]uint64, n)
			for i := range seeds {
				seeds[i] = rng.Uint64() | 1
				if i > 0 && rng.IntN(3) == 0 {
					seeds[i] = seeds[rng.IntN(i)]
				}
			}
			sx := rng.Uint64()
			for skip := -1; skip <= n; skip++ {
				wu, wj := uint64(0), -1
				for j, s := range seeds {
					if u := score(s, sx); j != skip && (wj < 0 || u > wu) {
						wu, wj = u, j
					}
				}
				u, j := max1(seeds, sx, skip)
				require.Equal(t, wj, j, "n=%d skip=%d", n, skip)
				require.Equal(t, wu, u, "n=%d skip=%d", n, skip)
			}
		}
	}
}
