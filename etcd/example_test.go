package etcd_test

import (
	"context"
	"log"
	"time"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/etcd"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A node registers itself, applies the fleet etcd holds, and on shutdown
// drains, moves its connections and leaves.
func Example() {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:2379"}})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()

	self := wsredirect.Member{ID: "node-a", URL: "wss://a.example.com"}
	mw, err := wsredirect.New(wsredirect.Options{
		Rules:   []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))},
		Self:    self.URL,
		Members: []wsredirect.Member{self}, // until etcd's are read
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := etcd.Start(ctx, mw, etcd.Options{Client: cli, Self: &self})
	if err != nil {
		log.Fatal(err)
	}
	// … serve with mw.Handler until told to stop; then hand the keys off
	// over 30 s, from Options.Settle on, moving the connections as the
	// ramp reaches their keys, and leave.
	if err := src.Drain(ctx, 30*time.Second); err != nil {
		log.Print(err) // leave anyway: the others take the keys at Close
	} else {
		for done := false; !done; {
			time.Sleep(time.Second)
			_, handedOff := mw.State().Draining()
			done = handedOff >= 1
			mw.MoveConns(context.Background(), wsredirect.MoveOptions{})
		}
	}
	if err := src.Close(); err != nil {
		log.Print(err)
	}
}

// A front door is no member: it builds its middleware with the members
// etcd holds, and follows them.
func Example_frontDoor() {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:2379"}})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	members, err := etcd.Members(ctx, cli, "")
	if err != nil {
		log.Fatal(err)
	}
	mw, err := wsredirect.New(wsredirect.Options{
		Rules:   []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))},
		Members: members,
	})
	if err != nil {
		log.Fatal(err)
	}
	src, err := etcd.Start(ctx, mw, etcd.Options{Client: cli})
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	// … serve with mw.Handler.
}
