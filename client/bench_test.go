package client_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/client"
)

// BenchmarkDial measures a whole dial on loopback, handshake to open
// connection, then a close: "direct" upgrades at once, "one-redirect" first
// gets the middleware's 307 and follows it. Both are served by the same
// server, so the difference is the redirect hop: one more TCP connect and
// request, which puts the floor at about 2× direct.
func BenchmarkDial(b *testing.B) {
	srv := httptest.NewUnstartedServer(nil)
	base := "ws://" + srv.Listener.Addr().String()
	mw := wsredirect.MustNew(wsredirect.Options{
		Rules: []wsredirect.Rule{wsredirect.PathRewrite(base, "/old/*", "/new")},
	})
	srv.Config.Handler = mw.Handler(echoUpgrader("s"))
	srv.Start()
	defer srv.Close()

	cases := []struct {
		name, path string
		hops       int
	}{
		{"direct", "/new/room", 1},
		{"one-redirect", "/old/room", 2},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			var d client.Dialer
			u := base + bc.path
			ctx := context.Background()
			c, _, hops, err := d.DialTrace(ctx, u, nil)
			if err != nil || len(hops) != bc.hops || !strings.HasSuffix(hops[len(hops)-1].URL, "/new/room") {
				b.Fatalf("setup: %v %v", hops, err)
			}
			c.Close()
			b.ReportAllocs()
			for b.Loop() {
				c, _, err := d.DialContext(ctx, u, nil)
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}
