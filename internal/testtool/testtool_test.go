package testtool

import (
	"testing"
)

// recorder is a testing.TB that records how a test ended.
type recorder struct {
	testing.TB
	skipped, failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Skip(...any)           { r.skipped = true }
func (r *recorder) Fatal(...any)          { r.failed = true }
func (r *recorder) Fatalf(string, ...any) { r.failed = true }

func TestMissing(t *testing.T) {
	t.Setenv("WSREDIRECT_REQUIRE_TOOLS", "")
	var r recorder
	Missing(&r, "apt-get install x")
	if !r.skipped || r.failed {
		t.Fatalf("without WSREDIRECT_REQUIRE_TOOLS: skipped %v, failed %v", r.skipped, r.failed)
	}
	t.Setenv("WSREDIRECT_REQUIRE_TOOLS", "1")
	r = recorder{}
	Missing(&r, "apt-get install x")
	if r.skipped || !r.failed {
		t.Fatalf("with WSREDIRECT_REQUIRE_TOOLS: skipped %v, failed %v", r.skipped, r.failed)
	}
}
