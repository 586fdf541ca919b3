package ring

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// benchKeys are the keys every lookup benchmark cycles through, here and in
// the bench module (which generates the same set): 4096 ids shaped like
// "room-123456", enough that lookups are not served from one cache line.
func benchKeys() []string {
	rng := rand.New(rand.NewPCG(42, 42))
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = fmt.Sprintf("room-%06d", rng.IntN(1_000_000))
	}
	return keys
}

var benchSizes = []int{8, 64, 1024}

// BenchmarkRingOwner measures Owner from a string key, hashing included,
// on rings of equal-weight members.
func BenchmarkRingOwner(b *testing.B) {
	keys := benchKeys()
	for _, n := range benchSizes {
		r := mustRing(b, testFleet(n))
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_ = r.Owner(Hash(keys[i%len(keys)]))
				i++
			}
		})
	}
}

// BenchmarkRingOwnerWithout measures OwnerWithout for a fixed removed
// member, hashing included; a sixty-fourth of the keys at n=64 need the
// runner-up table.
func BenchmarkRingOwnerWithout(b *testing.B) {
	keys := benchKeys()
	for _, n := range benchSizes {
		r := mustRing(b, testFleet(n))
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_ = r.OwnerWithout(Hash(keys[i%len(keys)]), 1)
				i++
			}
		})
	}
}

// BenchmarkHashKey measures hashKey alone, the floor under every lookup.
func BenchmarkHashKey(b *testing.B) {
	keys := benchKeys()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = Hash(keys[i%len(keys)])
		i++
	}
}

// BenchmarkRingBuild measures New, which scores every member for every
// slot: "equal" is the common one-weight fleet, "classes" has weights 1–4
// (only each class's top two draws per slot pay for a logarithm) and
// "distinct" gives every member its own weight, the worst case. cpu-ns/op
// is the CPU time of all the build's workers; ns/op is wall time.
func BenchmarkRingBuild(b *testing.B) {
	for _, w := range weightings {
		for _, n := range benchSizes {
			ms := testFleet(n)
			for i := range ms {
				ms[i].Weight = w.weight(i)
			}
			b.Run(fmt.Sprintf("%s/n=%d", w.name, n), func(b *testing.B) {
				b.ReportAllocs()
				defer reportCPU(b)()
				for b.Loop() {
					if _, err := New(ms); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

var weightings = []struct {
	name   string
	weight func(i int) int
}{
	{"equal", func(int) int { return 1 }},
	{"classes", func(i int) int { return 1 + i%4 }},
	{"distinct", func(i int) int { return 1 + i }},
}

// reportCPU starts measuring the process's CPU time; the function it
// returns reports it per operation as cpu-ns/op. Call it just before the
// b.Loop loop, after any setup.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() {
		if used := cpuTime() - start; used > 0 && b.N > 0 {
			b.ReportMetric(float64(used.Nanoseconds())/float64(b.N), "cpu-ns/op")
		}
	}
}

// BenchmarkRingChange measures Ring.Update for one membership change of a
// ring of n members, all of weight 1 ("equal") or of weights 1 to n
// ("distinct"): a member joins (with weight 1, or n+1); the middle member
// leaves; its weight doubles; it halves back; and "drain2", the post-drain
// ring the parent package builds when a second member starts draining: the
// ring without two of its members. cpu-ns/op is the CPU time of all of
// Update's workers, garbage collection included; ns/op is wall time; B/op
// is about one ring's tables.
func BenchmarkRingChange(b *testing.B) {
	for _, w := range []string{"equal", "distinct"} {
		for _, n := range []int{64, 1024} {
			base := testFleet(n)
			for i := range base {
				base[i].Weight = 1
				if w == "distinct" {
					base[i].Weight = 1 + i
				}
			}
			mid := n / 2
			joiner := Node{ID: "node-new", Weight: 1}
			if w == "distinct" {
				joiner.Weight = n + 1
			}
			heavy := slices.Clone(base)
			heavy[mid].Weight *= 2
			changes := []struct {
				name     string
				from, to []Node
			}{
				{"join", base, append(slices.Clone(base), joiner)},
				{"leave", base, slices.Delete(slices.Clone(base), mid, mid+1)},
				{"heavier", base, heavy},
				{"lighter", heavy, base},
				{"drain2", base, slices.Delete(slices.Delete(slices.Clone(base), mid, mid+1), n/4, n/4+1)},
			}
			rings := map[*Node]*Ring{}
			for _, c := range changes {
				b.Run(fmt.Sprintf("%s/n=%d/%s", w, n, c.name), func(b *testing.B) {
					from := rings[&c.from[0]]
					if from == nil {
						from = mustRing(b, c.from)
						rings[&c.from[0]] = from
					}
					b.ReportAllocs()
					defer reportCPU(b)()
					for b.Loop() {
						if _, err := from.Update(c.to); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}
