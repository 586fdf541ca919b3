package prom_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestReadmeInSync checks that the wiring README.md's Metrics section shows
// is the body of Example, which compiles and runs, line for line.
func TestReadmeInSync(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if os.IsNotExist(err) {
		t.Skip("no ../README.md: not in the repository")
	}
	require.NoError(t, err)
	section := regexp.MustCompile("(?s)\n## Metrics\n(.*?)\n## ").FindSubmatch(readme)
	require.NotNil(t, section, "README.md has no Metrics section")
	block := regexp.MustCompile("(?s)```go\n(.*?)```").FindSubmatch(section[1])
	require.NotNil(t, block, "README.md's Metrics section has no Go block")

	src, err := os.ReadFile("example_test.go")
	require.NoError(t, err)
	body := regexp.MustCompile("(?s)\nfunc Example\\(\\) \\{\n(.*?)\n\\}\n").FindSubmatch(src)
	require.NotNil(t, body, "example_test.go has no func Example")
	example := strings.ReplaceAll("\n"+string(body[1]), "\n\t", "\n")

	require.Contains(t, example, "\n"+string(block[1]),
		"README.md's Metrics snippet is not a part of func Example in prom/example_test.go: change both")
}
