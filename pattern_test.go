package wsredirect

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHostPattern(t *testing.T) {
	tests := []struct {
		pattern, host string
		want          bool
	}{
		{"chat.example.com", "chat.example.com", true},
		{"chat.example.com", "CHAT.Example.COM", true},
		{"chat.example.com", "chat.example.com:8443", true},
		{"chat.example.com", "chat.example.com.", true},
		{"Chat.Example.com", "chat.example.com", true},
		{"chat.example.com", "xchat.example.com", false},
		{"chat.example.com", "chat.example.com.evil.net", false},
		{"chat.example.com:8443", "chat.example.com:8443", true},
		{"chat.example.com:8443", "chat.example.com", false},
		{"chat.example.com:8443", "chat.example.com:443", false},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com:80", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "aexample.com", false},
		{"*.example.com", ".example.com", false},
		{"[::1]:8080", "[::1]:8080", true},
		{"::1", "[::1]:9", true}, // a bare IPv6 pattern has no port
		{"[::1]", "[::1]:9", true},
		{"127.0.0.1", "127.0.0.1:9", true},
	}
	for _, tc := range tests {
		t.Run(tc.pattern+"~"+tc.host, func(t *testing.T) {
			hp, ok := parseHostPattern(tc.pattern)
			if !ok {
				assert.False(t, tc.want, "pattern rejected")
				return
			}
			assert.Equal(t, tc.want, hp.match(tc.host))
		})
	}
}

func TestPathPattern(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
		rest          string
	}{
		{"/ws", "/ws", true, ""},
		{"/ws", "/ws/", false, ""},
		{"/ws", "/wsx", false, ""},
		{"/ws/*", "/ws", true, ""},
		{"/ws/*", "/ws/", true, "/"},
		{"/ws/*", "/ws/rooms/1", true, "/rooms/1"},
		{"/ws/*", "/wsx", false, ""},
		{"/ws/*", "/ws%2Frooms", false, ""},
		{"/*", "/anything", true, "/anything"},
		{"/*", "/", true, "/"},
		// The trailing-slash form means what it means to net/http's
		// ServeMux: the subtree below, not the path without the slash.
		{"/legacy/", "/legacy/", true, "/"},
		{"/legacy/", "/legacy/rooms/1", true, "/rooms/1"},
		{"/legacy/", "/legacy", false, ""},
		{"/legacy/", "/legacyx", false, ""},
		{"/", "/", true, "/"},
		{"/", "/rooms/1", true, "/rooms/1"},
	}
	for _, tc := range tests {
		t.Run(tc.pattern+"~"+tc.path, func(t *testing.T) {
			pp, err := parsePathPattern(tc.pattern)
			require.NoError(t, err)
			rest, got := pp.match(tc.path)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.rest, rest)
		})
	}
}

// TestPathPatternErrors: patterns written the way other routers spell them
// are refused with the spelling that works, instead of never matching.
func TestPathPatternErrors(t *testing.T) {
	for pattern, want := range map[string]string{
		"":                    `path pattern "": want a path starting with /`,
		"ws":                  `path pattern "ws": want a path starting with /`,
		"/legacy/{id}":        `path pattern "/legacy/{id}": wildcards like {name} are not supported: write "/legacy/*" to match every path below /legacy/`,
		"/rooms/{id}/members": `write "/rooms/*"`,
		"/{tenant...}":        `write "/*"`,
		"/ws*":                `path pattern "/ws*": * stands only as the last segment: want /exact, /subtree/ or /subtree/*`,
		"/w*s/*":              `* stands only as the last segment`,
		"/ws/**":              `* stands only as the last segment`,
		"/a b":                `byte ' ' is not allowed`,
		"/ws?x":               `byte '?' is not allowed`,
		"/%41":                `byte '%' is not allowed`,
	} {
		_, err := parsePathPattern(pattern)
		assert.ErrorContains(t, err, want, "pattern %q", pattern)
	}
	_, err := New(Options{Rules: []Rule{Path("wss://b.example.com", "/legacy/{id}")}})
	assert.EqualError(t, err, `wsredirect: rule 0 (path): path pattern "/legacy/{id}": wildcards like {name} are not supported: write "/legacy/*" to match every path below /legacy/`)
}

// FuzzPatterns: host and path patterns parse or refuse any input, and
// matching any request host or path never panics.
func FuzzPatterns(f *testing.F) {
	f.Add("*.example.com:8443", "a.example.com:8443", "/ws/*", "/ws/x")
	f.Add("[::1]", "[::1", "/", "")
	f.Fuzz(func(t *testing.T, hostPat, host, pathPat, path string) {
		if hp, ok := parseHostPattern(hostPat); ok {
			hp.match(host)
		}
		if pp, err := parsePathPattern(pathPat); err == nil {
			pp.match(path)
		}
		splitHostPort(host)
	})
}
