package wsredirect

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestReadmeProgramsCompile builds every complete program (a Go block that
// starts with "package main") in README.md against this module, so the
// first thing a newcomer copies compiles as written.
func TestReadmeProgramsCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds programs")
	}
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	blocks := regexp.MustCompile("(?s)```go\n(package main\n.*?)```").FindAllSubmatch(readme, -1)
	require.NotEmpty(t, blocks, "README.md has no complete program")
	for i, b := range blocks {
		// Inside the module, so the build uses this go.mod and no network.
		dir, err := os.MkdirTemp(".", "readme-program-")
		require.NoError(t, err)
		t.Cleanup(func() { os.RemoveAll(dir) })
		require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), b[1], 0o644))
		out, err := exec.Command("go", "vet", "./"+dir).CombinedOutput()
		require.NoError(t, err, "README program %d:\n%s\n%s", i+1, out, b[1])
	}
}
