// Package testtool is what the tests of every module of this repository
// share: stopping a test that needs a tool the machine may lack (Chromium,
// Node, dnsmasq, promtool, NGINX), and a buffer safe to share.
package testtool

import (
	"os"
	"testing"
)

// Missing stops a test whose tool is missing, saying how to get it: it
// skips, or fails when WSREDIRECT_REQUIRE_TOOLS is set, as CI sets it after
// installing every tool, so that there a missing tool cannot pass quietly.
func Missing(t testing.TB, how string) {
	t.Helper()
	if os.Getenv("WSREDIRECT_REQUIRE_TOOLS") != "" {
		t.Fatal(how)
		return
	}
	t.Skip(how)
}
