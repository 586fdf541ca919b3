package wsredirect

import (
	"testing"

	"github.com/wsredirect/wsredirect/internal/leakcheck"
)

// TestMain fails the package's tests when goroutines they started outlive
// them: servers, connections, live drains (issue 11).
func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
