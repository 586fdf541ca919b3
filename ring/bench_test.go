package ring

import (
	"fmt"
	"math/rand/v2"
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

// BenchmarkRingBuild measures NewRing, which scores every member for every
// slot: "equal" is the common one-weight fleet, "classes" has weights 1–4
// (only each class's top two draws per slot pay for a logarithm) and
// "distinct" gives every member its own weight, the worst case.
func BenchmarkRingBuild(b *testing.B) {
	weightings := []struct {
		name   string
		weight func(i int) int
	}{
		{"equal", func(int) int { return 1 }},
		{"classes", func(i int) int { return 1 + i%4 }},
		{"distinct", func(i int) int { return 1 + i }},
	}
	for _, w := range weightings {
		for _, n := range benchSizes {
			ms := testFleet(n)
			for i := range ms {
				ms[i].Weight = w.weight(i)
			}
			b.Run(fmt.Sprintf("%s/n=%d", w.name, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := New(ms); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
