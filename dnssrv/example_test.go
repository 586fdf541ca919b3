package dnssrv_test

import (
	"context"
	"log"
	"net/http"
	"os"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/dnssrv"
)

// A chat fleet run as a Kubernetes StatefulSet "chat" behind the headless
// service "chat" in namespace "default", whose port is named "ws": each pod
// is chat-N.chat.default.svc.cluster.local, and the SRV record
// _ws._tcp.chat.default.svc.cluster.local lists them all. Every pod runs the
// same rule over the members DNS gives and serves the rooms it owns. Its
// clients run in the cluster too: pod names resolve only there.
func ExampleWatch() {
	opts := dnssrv.Options{
		Service: "ws",
		Name:    "chat.default.svc.cluster.local.",
		Scheme:  "ws",
	}
	ctx := context.Background()

	// The first members, for New: a Shard rule needs some.
	members, err := dnssrv.Lookup(ctx, opts)
	if err != nil {
		log.Fatal(err)
	}
	mw, err := wsredirect.New(wsredirect.Options{
		// This pod's URL as dnssrv builds it: scheme://target:port. Clients
		// dial ws://…:9001/chat?room=42; the path follows the member's URL
		// in a redirect, so the URL carries none.
		Self:    "ws://" + os.Getenv("POD_NAME") + ".chat.default.svc.cluster.local:9001",
		Members: members,
		Rules:   []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))},
	})
	if err != nil {
		log.Fatal(err)
	}

	// Then every 10 seconds, on its own goroutine: pods that come and go
	// join and leave the fleet, and failed lookups keep the members in
	// force.
	go func() {
		if err := dnssrv.Watch(ctx, mw, opts); err != nil {
			log.Fatal(err)
		}
	}()

	chat := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Upgrade and serve the room here.
	})
	http.Handle("GET /chat", mw.Handler(chat))
	log.Fatal(http.ListenAndServe(":9001", nil))
}
