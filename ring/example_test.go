package ring_test

import (
	"fmt"

	"github.com/wsredirect/wsredirect/ring"
)

// Every process that builds a ring from the same nodes agrees on each key's
// owner; removing a node moves only the keys it owned.
func Example() {
	r, err := ring.New([]ring.Node{{ID: "node-a"}, {ID: "node-b"}, {ID: "node-c", Weight: 2}})
	if err != nil {
		panic(err)
	}
	h := ring.Hash("room-42")
	owner := r.Owner(h)
	fmt.Println("room-42 is on", r.Node(owner).ID)
	fmt.Println("without it, on", r.Node(r.OwnerWithout(h, owner)).ID)
	// Output:
	// room-42 is on node-c
	// without it, on node-b
}
