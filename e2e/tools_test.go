package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// chromiumNames are the names Chromium goes by on PATH: Debian's package,
// Ubuntu's, and Google's builds.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// findChromium returns the browser the browser tests drive: $CHROME when
// set (a path, or a name looked up on PATH), else the first of
// chromiumNames on PATH. Its error says how to get one.
func findChromium() (string, error) {
	if c := os.Getenv("CHROME"); c != "" {
		path, err := exec.LookPath(c)
		if err != nil {
			return "", fmt.Errorf("browser tests need Chromium, but CHROME=%s is not one (%v): "+
				"point CHROME at Chromium, or unset it to look for %s on PATH (apt-get install chromium)",
				c, err, strings.Join(chromiumNames, ", "))
		}
		return path, nil
	}
	for _, name := range chromiumNames {
		if path, err := exec.LookPath(name); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("browser tests need Chromium: apt-get install chromium, or set CHROME=/path/to/chrome "+
		"(none of %s is on PATH)", strings.Join(chromiumNames, ", "))
}

// TestFindChromium runs the discovery against fake browsers in a temporary
// directory that is all of PATH.
func TestFindChromium(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("fake executables here are shell scripts")
	}
	// fakes makes a directory holding an executable script per name; a name
	// ending in "-" is written without the executable bit.
	fakes := func(t *testing.T, names ...string) string {
		dir := t.TempDir()
		for _, n := range names {
			mode := os.FileMode(0o755)
			if n[len(n)-1] == '-' {
				n, mode = n[:len(n)-1], 0o644
			}
			require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), mode))
		}
		return dir
	}

	tests := []struct {
		name   string
		path   []string // executables on PATH
		chrome string   // $CHROME; "@name" is that fake's full path
		want   string   // the fake found; "" for an error
		errHas []string
	}{
		{name: "Debian's name", path: []string{"chromium", "google-chrome"}, want: "chromium"},
		{name: "Ubuntu's name before Google's", path: []string{"google-chrome", "chromium-browser"}, want: "chromium-browser"},
		{name: "Google's", path: []string{"google-chrome-stable"}, want: "google-chrome-stable"},
		{name: "not executable is passed over", path: []string{"chromium-", "google-chrome"}, want: "google-chrome"},
		{name: "CHROME path wins", path: []string{"chromium", "mychrome"}, chrome: "@mychrome", want: "mychrome"},
		{name: "CHROME name is looked up", path: []string{"chromium", "mychrome"}, chrome: "mychrome", want: "mychrome"},
		{name: "CHROME missing does not fall back", path: []string{"chromium"}, chrome: "/nonexistent/chrome",
			errHas: []string{"CHROME=/nonexistent/chrome", "apt-get install chromium"}},
		{name: "none", path: []string{"firefox"},
			errHas: []string{"CHROME", "apt-get install chromium", "chromium, chromium-browser, google-chrome, google-chrome-stable"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := fakes(t, tc.path...)
			t.Setenv("PATH", dir)
			chrome := tc.chrome
			if len(chrome) > 0 && chrome[0] == '@' {
				chrome = filepath.Join(dir, chrome[1:])
			}
			t.Setenv("CHROME", chrome)

			got, err := findChromium()
			if tc.want == "" {
				require.Error(t, err, "found %s", got)
				for _, s := range tc.errHas {
					assert.Contains(t, err.Error(), s)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, filepath.Join(dir, tc.want), got)
		})
	}
}
