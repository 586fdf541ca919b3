// Package memberids is what the membership sources (etcd, dnssrv) share
// about member sets.
package memberids

import (
	"slices"
	"strings"

	"github.com/wsredirect/wsredirect"
)

// Missing returns the IDs of a's members that b, sorted by ID, lacks: with
// a and b swapped, who joined and who left.
func Missing(a, b []wsredirect.Member) []string {
	var ids []string
	for _, m := range a {
		if _, ok := slices.BinarySearchFunc(b, m.ID, ByID); !ok {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// ByID orders members by ID, for slices.BinarySearchFunc.
func ByID(m wsredirect.Member, id string) int { return strings.Compare(m.ID, id) }
