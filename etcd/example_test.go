package etcd_test

import (
	"context"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/etcd"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A node registers itself, applies the fleet etcd holds and serves; on
// SIGTERM it leaves: the middleware moves each of its connections to the
// key's new owner as the drain's ramp reaches the key, and Leave returns
// once they have all ended.
func Example() {
	sigs, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:2379"}})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()

	self := wsredirect.Member{ID: "node-a", URL: "ws://a.example.com:8080"}
	mw, err := wsredirect.New(wsredirect.Options{
		Rules:   []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))},
		Self:    self.URL,
		Members: []wsredirect.Member{self}, // until etcd's are read
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(sigs, 10*time.Second)
	defer cancel()
	src, err := etcd.Start(ctx, mw, etcd.Options{Client: cli, Self: &self})
	if err != nil {
		log.Fatal(err)
	}
	// The app upgrades, and registers each connection with
	// mw.Track(room, wsredirect.GorillaConn(c, nil)) until it ends.
	var app http.Handler = http.NotFoundHandler()
	srv := &http.Server{Addr: ":8080", Handler: mw.Handler(app)}
	go srv.ListenAndServe()

	<-sigs.Done()
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := src.Leave(ctx, 10*time.Second); err != nil {
		log.Print(err)
	}
	srv.Shutdown(ctx)
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
