package main

import (
	"testing"
	"time"

	"github.com/wsredirect/wsredirect/internal/leakcheck"
)

// TestMain fails the package's tests when goroutines they started outlive
// them: the demo's fleet, front door, etcd sources and clients, the
// embedded etcd, and the check's clients (issue 11). Closed etcd clients
// and servers take a moment to wind down.
func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m, leakcheck.MaxWait(5*time.Second)) }
