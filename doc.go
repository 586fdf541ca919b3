// Package wsredirect sends each connecting WebSocket client to the right
// server before the connection is upgraded: by host, by path, by shard key
// over a fleet, or away from a draining node — and makes those redirects
// work for every client, browsers included.
//
// The middleware looks at upgrade requests only (RFC 6455 over HTTP/1.1 and
// RFC 8441 over HTTP/2); every other request goes straight to the wrapped
// handler at the cost of a header lookup. An upgrade is decided by
// [Options.Rules], in order, first decision wins: a rule may redirect (307
// with an absolute Location built from a configured [Target]), refuse (503
// with Retry-After) or abstain. A request no rule decides, or one sent to
// this very node (Options.Self), goes on to the wrapped handler, which
// upgrades it.
//
//	mw, err := wsredirect.New(wsredirect.Options{
//		Rules: []wsredirect.Rule{wsredirect.Path("wss://b.example.com", "/legacy/*")},
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	r := chi.NewRouter()
//	r.Use(mw.Handler)
//
// Browsers never follow a redirect on a WebSocket handshake: to them any 3xx
// is a failed connection with close code 1006. So in [ModeAuto], the
// default, a request with an Origin header is accepted and closed at once
// with close code 4307 and the target, which script can read; the
// JavaScript helper ([ScriptHandler]) and the Go client (package client)
// follow it. The close-frame protocol is package wire.
//
// Fleets shard keys with [Shard] over Options.Members, placed by package
// ring. A draining member's keys go to the members that will own them once
// it is gone ([Middleware.DrainMember]). Connections already open that the
// app registers with [Middleware.Track] move by themselves whenever their
// key's owner changes, whatever changed it (a drain as its ramp reaches the
// key, a member joining or leaving, an undrain); [Middleware.Shutdown]
// moves them all for a graceful stop. A move's target travels only in a
// close frame, which only the server's WebSocket layer writes, never in a
// data message another client could have written.
package wsredirect
