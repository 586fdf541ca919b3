package main

import (
	"testing"

	"github.com/wsredirect/wsredirect/internal/leakcheck"
)

// TestMain fails the package's tests when goroutines they started outlive
// them: the demo's fleet, front door and clients (issue 11).
func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
