package e2e

import (
	"os"
	"testing"
)

// skipForTool skips a test whose tool is missing, saying how to get it. CI
// sets WSREDIRECT_REQUIRE_TOOLS=1 after installing every tool, so there a
// missing tool fails the test instead of skipping it quietly.
func skipForTool(t *testing.T, how string) {
	t.Helper()
	if os.Getenv("WSREDIRECT_REQUIRE_TOOLS") != "" {
		t.Fatal(how)
	}
	t.Skip(how)
}
