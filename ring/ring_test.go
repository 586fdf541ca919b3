package ring

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testKeys returns n keys shaped like the room ids the middleware routes.
func testKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("room-%d", i)
	}
	return keys
}

var (
	keys100k = sync.OnceValue(func() []string { return testKeys(100_000) })
	keys1M   = sync.OnceValue(func() []string { return testKeys(1_000_000) })
)

// fleet returns n members with equal weights, IDs "node-0" … "node-<n-1>".
func testFleet(n int) []Node {
	ms := make([]Node, n)
	for i := range ms {
		ms[i] = Node{ID: fmt.Sprintf("node-%d", i)}
	}
	return ms
}

func mustRing(t testing.TB, ms []Node) *Ring {
	t.Helper()
	r, err := New(ms)
	require.NoError(t, err)
	return r
}

// ring64 is shared because builds are the slow part of these tests under
// -race.
var ring64 = sync.OnceValue(func() *Ring {
	r, err := New(testFleet(64))
	if err != nil {
		panic(err)
	}
	return r
})

// loads counts the keys each member owns.
func loads(r *Ring, keys []string) []int {
	n := make([]int, r.Len())
	for _, k := range keys {
		n[r.Owner(Hash(k))]++
	}
	return n
}

func TestNewRingErrors(t *testing.T) {
	tests := []struct {
		name    string
		members []Node
		want    string
	}{
		{"empty ID", []Node{{ID: "a"}, {ID: ""}}, "ring: node 1 has an empty ID"},
		{"duplicate ID", []Node{{ID: "a"}, {ID: "b"}, {ID: "a", Weight: 2}}, `ring: duplicate node ID "a"`},
		{"negative weight", []Node{{ID: "a", Weight: -1}}, `ring: node "a" has negative weight -1`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.members)
			assert.Nil(t, r)
			assert.EqualError(t, err, tc.want)
		})
	}
}

func TestRingSmall(t *testing.T) {
	t.Run("no members", func(t *testing.T) {
		r := mustRing(t, nil)
		assert.Equal(t, 0, r.Len())
		assert.Empty(t, r.nodes())
		assert.Equal(t, -1, r.Owner(Hash("room-1")))
		assert.Equal(t, -1, r.OwnerWithout(Hash("room-1"), 0))
		assert.Equal(t, -1, r.OwnerWithout(Hash("room-1"), -1))
	})
	t.Run("one member", func(t *testing.T) {
		r := mustRing(t, []Node{{ID: "a"}})
		for _, k := range testKeys(1000) {
			require.Equal(t, 0, r.Owner(Hash(k)))
			require.Equal(t, -1, r.OwnerWithout(Hash(k), 0))
			require.Equal(t, 0, r.OwnerWithout(Hash(k), 1))
		}
	})
	t.Run("nodes are numbered in ID order, weights canonical", func(t *testing.T) {
		in := []Node{{ID: "c"}, {ID: "a", Weight: 3}, {ID: "b"}}
		r := mustRing(t, in)
		in[0].ID = "z"
		want := []Node{{ID: "a", Weight: 3}, {ID: "b", Weight: 1}, {ID: "c", Weight: 1}}
		assert.Equal(t, want, []Node{r.Node(0), r.Node(1), r.Node(2)})
		assert.Equal(t, 3, r.Len())
		assert.Panics(t, func() { r.Node(3) })
	})
}

func TestRingInsertionOrderIrrelevant(t *testing.T) {
	ms := testFleet(16)
	ms[3].Weight, ms[7].Weight = 3, 2
	a := mustRing(t, ms)
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
	b := mustRing(t, ms)
	for _, k := range keys100k() {
		if a.Owner(Hash(k)) != b.Owner(Hash(k)) {
			t.Fatalf("key %s: owner %d in one order, %d in another", k, a.Owner(Hash(k)), b.Owner(Hash(k)))
		}
	}
}

// TestRingGolden pins placement across processes, machines, architectures
// and releases: every node of a fleet must compute the same owners, so any
// change to hashKey, the draws, the logarithm or the tie-breaks is a
// protocol change that shows up here. The digests were computed once and
// committed; a mismatch on some platform is a portability bug, not a
// reason to update them. (They were computed again once, on purpose, when
// the table went from 2^20 slots to 2^19, before v1.)
func TestRingGolden(t *testing.T) {
	tests := []struct {
		name    string
		weights func(i int) int
		digest  string
	}{
		{"equal weights", func(int) int { return 0 }, "ac97f00abb532198c1324bc49681a14178b5668502ca613df4b1735252ee732e"},
		{"weight classes", func(i int) int { return 1 + i%3 }, "088b0dbb4401b17668141fc6b14da1b2fa2d2f64f4cfa2f0a1fa2880231b05c6"},
		{"distinct weights", func(i int) int { return 1 + i }, "4bcb9761f4b31af4453eef67abe7ceb852270fa93b1f8db262e34b8457f36922"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms := testFleet(10)
			for i := range ms {
				ms[i].Weight = tc.weights(i)
			}
			r := mustRing(t, ms)
			h := sha256.New()
			for _, k := range keys100k() {
				o, w := r.Owner(Hash(k)), r.OwnerWithout(Hash(k), 4)
				h.Write([]byte{byte(o), byte(w)})
			}
			assert.Equal(t, tc.digest, hex.EncodeToString(h.Sum(nil)))
		})
	}
}

func TestHashKeyGolden(t *testing.T) {
	tests := []struct {
		key  string
		want uint64
	}{
		{"", 0x409638ee2bde459},
		{"a", 0x28d2053309d28531},
		{"abc", 0x2a4f1d7cb516c72},
		{"room", 0x5591ac4196d9b9fd},
		{"room-123456", 0xae4ac13aa0c67449},
		{"0123456789abcdef", 0xc304e72c387cd229},
		{"0123456789abcdefg", 0xb496f8f306600195},
		{"user:0123456789abcdef0123456789abcdef0123456789abcdef", 0x6d7d86280e531457},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("len=%d", len(tc.key)), func(t *testing.T) {
			assert.Equal(t, tc.want, Hash(tc.key), "%#x", Hash(tc.key))
		})
	}
}

func TestFreeHashBitsMissPlacement(t *testing.T) {
	assert.Zero(t, uint64(freeHashBits)&(uint64(ringSlots-1)<<slotShift))
}

func TestNegLog2(t *testing.T) {
	lt := log2Table()
	rng := rand.New(rand.NewPCG(3, 4))
	for range 100_000 {
		u := rng.Uint64() >> rng.IntN(64)
		l := negLog2(lt, u)
		if l < 1 || u < math.MaxUint64 && l < negLog2(lt, u+1) {
			t.Fatalf("negLog2(%#x) = %#x: below 1 or not monotone", u, l)
		}
		// math.Log2 is fine here: the test only bounds the error.
		if want := -math.Log2(float64(u) / (1 << 64)); u != 0 && math.Abs(want-float64(l)/(1<<32)) > 1e-6 {
			t.Fatalf("negLog2(%#x) = %v, want %v", u, float64(l)/(1<<32), want)
		}
	}
	assert.Equal(t, uint64(65<<32), negLog2(lt, 0))
}

// referenceOwners computes a slot's owner and runner-up straight from the
// definition in contest's doc comment, one rank per member, to check the
// weight-class shortcut and the parallel build against it.
func referenceOwners(ms []Node, slot int) (owner, runner int) {
	type entrant struct {
		rank, u uint64
		i       int
	}
	lt := log2Table()
	es := make([]entrant, len(ms))
	for i, m := range ms {
		u := score(memberSeed(m.ID), slotSalt(slot))
		rank, _ := bits.Mul64(negLog2(lt, u)<<25, ^uint64(0)/uint64(m.Weight))
		es[i] = entrant{rank: rank, u: u, i: i}
	}
	slices.SortFunc(es, func(a, b entrant) int {
		return cmp.Or(cmp.Compare(a.rank, b.rank), cmp.Compare(b.u, a.u), cmp.Compare(a.i, b.i))
	})
	return es[0].i, es[1].i
}

func TestRingMatchesReference(t *testing.T) {
	tests := []struct {
		name    string
		n       int
		weights func(i int) int
	}{
		{"equal", 70, func(int) int { return 5 }},
		{"classes", 70, func(i int) int { return 1 + i%4 }},
		{"all distinct", 40, func(i int) int { return 1 + i }},
		{"huge weights", 9, func(i int) int { return math.MaxInt - i }},
		{"two", 2, func(i int) int { return 1 + i }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms := testFleet(tc.n)
			for i := range ms {
				ms[i].Weight = tc.weights(i)
			}
			r := mustRing(t, ms)
			ms = r.nodes()
			rng := rand.New(rand.NewPCG(5, 6))
			for range 500 {
				slot := rng.IntN(ringSlots)
				o, ru := referenceOwners(ms, slot)
				h := uint64(slot) << slotShift
				require.Equal(t, o, r.Owner(h), "slot %d", slot)
				require.Equal(t, ru, r.OwnerWithout(h, o), "slot %d", slot)
			}
		})
	}
}

func TestRingWeights(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
	}{
		{"1,2,3,4", []int{1, 2, 3, 4}},
		{"classes", []int{1, 1, 2, 2, 4, 4, 8, 8}},
		{"one heavy", []int{10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms := testFleet(len(tc.weights))
			for i := range ms {
				ms[i].Weight = tc.weights[i]
			}
			r := mustRing(t, ms)
			got := loads(r, keys1M())
			total := 0
			for _, m := range r.nodes() {
				total += m.Weight
			}
			// Within ±2% of the weight share, relative to that share.
			for i, m := range r.nodes() {
				want := float64(m.Weight) / float64(total)
				share := float64(got[i]) / float64(len(keys1M()))
				assert.InEpsilon(t, want, share, 0.02, "member %s weight %d", m.ID, m.Weight)
			}
		})
	}
}

func TestRingBalance(t *testing.T) {
	got := loads(ring64(), keys1M())
	mean := float64(len(keys1M())) / 64
	maxOverMean := float64(slices.Max(got)) / mean
	t.Logf("n=64, 1M keys: max/mean %.4f, min/mean %.4f", maxOverMean, float64(slices.Min(got))/mean)
	assert.LessOrEqual(t, maxOverMean, 1.05)
}

// TestRingRemoveMember checks minimal disruption both ways: a ring built
// without member i moves exactly i's keys, and OwnerWithout predicts the
// rebuilt ring's owners exactly.
func TestRingRemoveMember(t *testing.T) {
	full := ring64()
	keys := keys1M()
	for _, i := range []int{0, 17, 63} {
		t.Run(fmt.Sprintf("remove=%d", i), func(t *testing.T) {
			ms := full.nodes()
			less := mustRing(t, slices.Delete(slices.Clone(ms), i, i+1))
			// Indexes in less above i shift down by one.
			toFull := func(j int) int { return j + btoi(j >= i) }
			owned, moved := 0, 0
			for _, k := range keys {
				before, after := full.Owner(Hash(k)), toFull(less.Owner(Hash(k)))
				if w := full.OwnerWithout(Hash(k), i); w != after {
					t.Fatalf("key %s: OwnerWithout %d, rebuilt ring says %d", k, w, after)
				}
				if before == i {
					owned++
				}
				if before != after {
					if before != i {
						t.Fatalf("key %s moved off member %d, which stayed", k, before)
					}
					moved++
				}
			}
			assert.Equal(t, owned, moved)
			share := float64(len(keys)) / 64
			t.Logf("moved %d keys = %.4f of the removed member's fair share", moved, float64(moved)/share)
			assert.LessOrEqual(t, float64(moved)/share, 1.02)
		})
	}
}

func TestRingAddMember(t *testing.T) {
	full := ring64()
	more := mustRing(t, append(full.nodes(), Node{ID: "node-new"}))
	oldMs, newMs := full.nodes(), more.nodes()
	added := slices.IndexFunc(newMs, func(m Node) bool { return m.ID == "node-new" })
	keys := keys1M()
	moved := 0
	for _, k := range keys {
		before, after := oldMs[full.Owner(Hash(k))].ID, more.Owner(Hash(k))
		// The grown ring without its new member is the old ring.
		if w := newMs[more.OwnerWithout(Hash(k), added)].ID; w != before {
			t.Fatalf("key %s: OwnerWithout the new member gives %s, old ring %s", k, w, before)
		}
		if after == added {
			moved++
		} else if newMs[after].ID != before {
			t.Fatalf("key %s moved from %s to %s, which was there before", k, before, newMs[after].ID)
		}
	}
	// About 1/(N+1) of the keys move, all to the new member.
	t.Logf("adding a 65th member moved %.5f of the keys (1/65 = %.5f)", float64(moved)/float64(len(keys)), 1.0/65)
	assert.InEpsilon(t, 1.0/65, float64(moved)/float64(len(keys)), 0.05)
}

func TestRingOwnerWithoutSmall(t *testing.T) {
	ms := []Node{{ID: "a", Weight: 1}, {ID: "b", Weight: 2}, {ID: "c"}, {ID: "d", Weight: 5}, {ID: "e", Weight: 2}}
	r := mustRing(t, ms)
	keys := keys100k()
	for i := range ms {
		t.Run(r.nodes()[i].ID, func(t *testing.T) {
			rest := slices.Delete(r.nodes(), i, i+1)
			less := mustRing(t, rest)
			for _, k := range keys {
				want := less.Owner(Hash(k))
				want += btoi(want >= i)
				if got := r.OwnerWithout(Hash(k), i); got != want {
					t.Fatalf("key %s: OwnerWithout %d, rebuilt ring says %d", k, got, want)
				}
			}
		})
	}
	t.Run("not a member", func(t *testing.T) {
		for _, k := range keys[:1000] {
			assert.Equal(t, r.Owner(Hash(k)), r.OwnerWithout(Hash(k), -1))
			assert.Equal(t, r.Owner(Hash(k)), r.OwnerWithout(Hash(k), len(ms)))
		}
	})
}

func TestRingBuildIndependentOfWorkers(t *testing.T) {
	ms := testFleet(300) // more than 256 members: uint16 tables
	ms[1].Weight = 2
	r := mustRing(t, ms)
	// One sequential pass over a stretch that several workers' chunks
	// covered.
	const lo, hi = ringSlots/2 - 3*buildChunk, ringSlots/2 + 3*buildChunk
	own, run, bar := make([]uint16, ringSlots), make([]uint16, ringSlots), make([]uint8, ringSlots)
	fillRange(newContest(r.nodes()), own, run, bar, lo, hi)
	assert.True(t, slices.Equal(own[lo:hi], r.own16[lo:hi]), "owners differ from a single-worker build")
	assert.True(t, slices.Equal(run[lo:hi], r.run16[lo:hi]), "runner-ups differ from a single-worker build")
	assert.True(t, slices.Equal(bar[lo:hi], r.bar[lo:hi]), "bars differ from a single-worker build")
}

func TestRingAllocs(t *testing.T) {
	r := ring64()
	keys := testKeys(100)
	i := 0
	assert.Zero(t, testing.AllocsPerRun(1000, func() {
		_ = r.Owner(Hash(keys[i%len(keys)]))
		i++
	}))
	assert.Zero(t, testing.AllocsPerRun(1000, func() {
		_ = r.OwnerWithout(Hash(keys[i%len(keys)]), 3)
		i++
	}))
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// nodes returns the ring's nodes in index order.
func (r *Ring) nodes() []Node { return slices.Clone(r.members) }
