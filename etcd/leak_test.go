package etcd

import (
	"testing"
	"time"

	"github.com/wsredirect/wsredirect/internal/leakcheck"
)

// TestMain fails the package's tests when goroutines outlive them: the
// sources', and the etcd clients' and servers' the tests start and stop.
// Each test also checks, when it ends, that its sources left nothing
// running (noLeaks).
func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m, leakcheck.MaxWait(5*time.Second)) }
