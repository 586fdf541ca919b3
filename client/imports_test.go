package client

import (
	"go/build"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestImportsOnlyWire: the client speaks the close-frame protocol through
// package wire and does not pull in the middleware.
func TestImportsOnlyWire(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	require.NoError(t, err)
	assert.Contains(t, pkg.Imports, "github.com/wsredirect/wsredirect/wire")
	assert.NotContains(t, pkg.Imports, "github.com/wsredirect/wsredirect")
}
