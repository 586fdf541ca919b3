// Package bench compares wsredirect's Ring with other Go consistent-hashing
// libraries. It is a separate module so that they never enter the root
// module's dependencies.
package bench

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cespare/xxhash/v2"
	jump "github.com/dgryski/go-jump"
	rendezvous "github.com/dgryski/go-rendezvous"
	"github.com/golang/groupcache/consistenthash"
	"github.com/serialx/hashring"
	"github.com/stathat/consistent"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect/ring"
)

// benchKeys is the key set of the root module's ring benchmarks: 4096 ids
// shaped like "room-123456", from a fixed seed.
func benchKeys() []string {
	rng := rand.New(rand.NewPCG(42, 42))
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = fmt.Sprintf("room-%06d", rng.IntN(1_000_000))
	}
	return keys
}

func nodeNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("node-%d", i)
	}
	return names
}

// router is one algorithm under comparison, built for a list of node names
// and answering with the owner's name.
type router struct {
	name string
	note string // the setting used, for the report
	new  func(nodes []string) func(key string) string
}

// routers uses each library's documented default (or, for groupcache, the
// replica count groupcache itself uses). The uint64-keyed ones get the same
// string hash as wsredirect so the comparison is of placement, not hashing.
var routers = []router{
	{"wsredirect", "2^19 slots, weighted rendezvous", func(nodes []string) func(string) string {
		ns := make([]ring.Node, len(nodes))
		for i, n := range nodes {
			ns[i] = ring.Node{ID: n}
		}
		r, err := ring.New(ns)
		if err != nil {
			panic(err)
		}
		return func(k string) string { return r.Node(r.Owner(ring.Hash(k))).ID }
	}},
	{"jump", "jump.Hash(ring.Hash(key), n)", func(nodes []string) func(string) string {
		return func(k string) string { return nodes[jump.Hash(ring.Hash(k), len(nodes))] }
	}},
	{"rendezvous", "go-rendezvous with ring.Hash", func(nodes []string) func(string) string {
		return rendezvous.New(nodes, ring.Hash).Lookup
	}},
	{"groupcache", "consistenthash, 50 replicas (groupcache's defaultReplicas), crc32", func(nodes []string) func(string) string {
		m := consistenthash.New(50, nil)
		m.Add(nodes...)
		return m.Get
	}},
	{"stathat", "consistent.New(): 20 replicas, crc32", func(nodes []string) func(string) string {
		c := consistent.New()
		c.Set(nodes)
		return func(k string) string {
			n, err := c.Get(k)
			if err != nil {
				panic(err)
			}
			return n
		}
	}},
	{"hashring", "hashring.New(): weight 1 = 1 point per node, md5", func(nodes []string) func(string) string {
		r := hashring.New(nodes)
		return func(k string) string {
			n, _ := r.GetNode(k)
			return n
		}
	}},
}

// BenchmarkLookup measures finding a string key's owner, hashing included,
// for fleets of 8, 64 and 1024 equal nodes, cycling through benchKeys.
func BenchmarkLookup(b *testing.B) {
	keys := benchKeys()
	for _, n := range []int{8, 64, 1024} {
		for _, rt := range routers {
			lookup := rt.new(nodeNames(n))
			b.Run(fmt.Sprintf("%s/n=%d", rt.name, n), func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					_ = lookup(keys[i%len(keys)])
					i++
				}
			})
		}
	}
}

// BenchmarkHash measures the string hashes on benchKeys: wsredirect's
// wyhash-style hash against xxhash, the only hash library it could use.
func BenchmarkHash(b *testing.B) {
	keys := benchKeys()
	for _, h := range []struct {
		name string
		fn   func(string) uint64
	}{{"wsredirect", ring.Hash}, {"xxhash", xxhash.Sum64String}} {
		b.Run(h.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_ = h.fn(keys[i%len(keys)])
				i++
			}
		})
	}
}

// BenchmarkQuality does not time anything useful: it reports, for each
// algorithm at n=64 over 1M keys, the max/mean load and the keys moved when
// one node goes (for jump, which can only shrink from the end, the last
// node; for the others node-17) as a multiple of a fair 1/64 share
// ("moved/fair") and of the keys the removed node actually owned
// ("moved/owned"; 1 is minimal disruption).
func BenchmarkQuality(b *testing.B) {
	keys := make([]string, 1_000_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("room-%d", i)
	}
	const n = 64
	for _, rt := range routers {
		b.Run(fmt.Sprintf("%s/n=%d", rt.name, n), func(b *testing.B) {
			nodes := nodeNames(n)
			gone := "node-17"
			if rt.name == "jump" {
				gone = nodes[n-1]
			}
			full, less := rt.new(nodes), rt.new(slices.DeleteFunc(slices.Clone(nodes), func(s string) bool { return s == gone }))
			load := map[string]int{}
			moved, owned := 0, 0
			for _, k := range keys {
				o := full(k)
				load[o]++
				if o == gone {
					owned++
				}
				if less(k) != o {
					moved++
				}
			}
			maxLoad := 0
			for _, l := range load {
				maxLoad = max(maxLoad, l)
			}
			for b.Loop() {
			}
			fair := float64(len(keys)) / n
			b.ReportMetric(float64(maxLoad)/fair, "max/mean")
			b.ReportMetric(float64(moved)/fair, "moved/fair")
			b.ReportMetric(float64(moved)/float64(owned), "moved/owned")
		})
	}
}

// TestRouters checks that every router answers with one of its nodes, so
// the benchmarks compare working setups.
func TestRouters(t *testing.T) {
	nodes := nodeNames(8)
	for _, rt := range routers {
		t.Run(rt.name, func(t *testing.T) {
			lookup := rt.new(nodes)
			for _, k := range benchKeys()[:200] {
				require.Contains(t, nodes, lookup(k))
			}
		})
	}
}
