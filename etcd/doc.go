// Package etcd keeps a fleet's members, and their drains, in etcd: each
// node registers itself under a lease, and every node, front doors
// included, watches the fleet and applies it to its middleware whole with
// [wsredirect.Middleware.SetMembers].
//
//	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"etcd:2379"}})
//	…
//	self := wsredirect.Member{ID: "node-a", URL: "wss://a.example.com"}
//	mw, err := wsredirect.New(wsredirect.Options{
//		Rules:   []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))},
//		Self:    self.URL,
//		Members: []wsredirect.Member{self}, // until etcd's are read
//	})
//	…
//	src, err := etcd.Start(ctx, mw, etcd.Options{Client: cli, Self: &self})
//	…
//	// On SIGTERM: hand the keys off over 30 s, wait for the connections
//	// to move, and leave the fleet.
//	err = src.Leave(ctx, 30*time.Second)
//
// The middleware moves the connections the app registers with
// [wsredirect.Middleware.Track] by itself, whenever etcd's fleet gives
// their keys to another member: a drain as its ramp reaches each key, an
// undrain, a member that joins or leaves. The app has no loop to run.
//
// A front door that is not a member leaves Options.Self nil, and builds
// its middleware with the members [Members] reads.
//
// # Member IDs
//
// A member's ID is its place in the fleet: keep it across restarts. A
// node registers only an ID that is free, its own, or held with its own
// URL (the same node restarted on its address before its old lease
// expired); [Start] refuses an ID another live node holds with another
// URL, naming the record and the URL in it. A node whose registration is
// lost (its lease expired in an outage) and whose ID another node took
// meanwhile logs that and tries again until the ID is free, never
// writing over the other node's record.
//
// # Keys
//
// Under the prefix (Options.Prefix, "/wsredirect/" by default):
//
//	<prefix>members/<id>   {"url":"wss://a.example.com","weight":1}   one per node, on the node's lease
//	<prefix>drains/<id>    {"since":"2026-11-26T14:00:00Z","ramp":"30s"}   one per draining node
//
// A member record's weight may be left out (1). A drain record's since is
// an RFC 3339 time, when the drain takes effect, and its ramp a Go
// duration ("30s", "1m30s"; left out: every key at once): see
// [wsredirect.Member.DrainingSince] and [wsredirect.Member.DrainRamp].
// Every node applies the same since and ramp, read from the same record.
// A record that does not read right (bad JSON, a bad URL, a negative
// weight; in a drain record, a missing since, a bad ramp or an unknown
// field) is logged and skipped, as if absent. A drain record for a member
// that is not registered waits until it is. Of two members with the same
// URL, the one registered first is kept.
//
// # Drains from anywhere
//
// An operator drains a node with etcdctl, giving a since a few seconds
// ahead so that every node hears before it comes:
//
//	etcdctl put /wsredirect/drains/node-a '{"since":"2026-11-26T14:00:00Z","ramp":"30s"}'
//	etcdctl put /wsredirect/drains/node-a "{\"since\":\"$(date -u -d '+5 sec' +%FT%TZ)\",\"ramp\":\"30s\"}"
//
// undrains it by deleting the record, and looks at the fleet:
//
//	etcdctl del /wsredirect/drains/node-a
//	etcdctl get --prefix /wsredirect/
//
// The drained node moves each tracked connection to its key's new owner
// as the ramp reaches the key; deleting the record moves back, from the
// members that took them, the connections whose owner came back. A
// deleted record undrains its member there at once and on every other
// node Options.Settle later, so that no node sends a client back to a
// member that does not yet know to take it. Write a drain record once: changing since or ramp while the drain
// runs moves keys back. Such a record is on no lease: it outlives the node's
// restarts until it is deleted, which is what taking a node out means.
//
// A node drains itself with [Source.Drain] (and [Source.Leave], which
// drains, waits for its connections and leaves), which writes the same
// record with since Options.Settle (2 s) ahead and leaves one already
// there alone. That record is on the node's lease: a node that crashes mid-drain
// and restarts comes back undrained, and [Source.Close] removes it with
// the member. If the lease is lost while the node runs, the node registers
// again with its drain record in the same transaction, so it is never seen
// undrained meanwhile. [Source.Undrain] deletes the record, and applies
// the undrain on this node before the others hear of it.
//
// # When etcd is out of reach
//
// Nodes keep serving on the last member set applied, and log the error at
// Warn; an empty member set is never applied. Once etcd is back, the
// watch resumes, or the whole fleet is read again when the revisions it
// missed were compacted, and a node whose keep-alive gave up renews its
// lease, or registers again on a new one when the lease expired. Member
// changes are applied on the source's goroutines: requests see the old set
// or the new one, never wait.
//
// How soon a client reaches etcd again is its gRPC connection's backoff,
// which by default grows to two minutes: longer than a lease lives once
// etcd is back. Cap it below the TTL, so that nodes renew their leases in
// time and the fleet does not change because of the outage:
//
//	clientv3.Config{
//		Endpoints: …,
//		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
//			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
//			MinConnectTimeout: time.Second,
//		})},
//	}
//
// Member records belong to the nodes, which write them on their leases:
// write drain records by hand, not member records.
package etcd
