package client_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/client"
)

// BenchmarkDial measures a whole dial on loopback, handshake to open
// connection, then a close: "direct" upgrades at once, "one-redirect" first
// gets the middleware's 307 and follows it (the memory of redirects off, or
// it would skip the 307 from the second dial on), "remembered" dials the
// redirected URL with the memory on, so after the setup's redirect every
// dial goes straight to the remembered target. All are served by the same
// server, so the difference is the redirect hop: one more TCP connect and
// request, which puts the floor at about 2× direct; remembered should be
// within a few percent of direct (issue 13: at most 1.1×).
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
		remember   time.Duration
		hops       int // of the setup dial
		loopHops   int // of every measured dial
	}{
		// remembered before one-redirect, whose two connections per dial
		// leave twice the TIME_WAIT sockets behind for the next case.
		{"direct", "/new/room", 0, 1, 1},
		{"remembered", "/old/room", 0, 2, 1},
		{"one-redirect", "/old/room", -1, 2, 2},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			d := client.Dialer{RememberRedirects: bc.remember}
			u := base + bc.path
			ctx := context.Background()
			for i, want := range []int{bc.hops, bc.loopHops} {
				c, _, hops, err := d.DialTrace(ctx, u, nil)
				if err != nil || len(hops) != want || !strings.HasSuffix(hops[len(hops)-1].URL, "/new/room") ||
					hops[0].Remembered != (i == 1 && bc.name == "remembered") {
					b.Fatalf("setup: %+v %v", hops, err)
				}
				c.Close()
			}
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
