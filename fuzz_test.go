package wsredirect

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCloseCodec: whatever a peer sends in a close frame, parsing never
// panics, and every target a server encodes is read back whole.
func FuzzCloseCodec(f *testing.F) {
	for _, s := range []string{"wss://b.example.com/rooms/1?t=x", "wss://b/" + strings.Repeat("q", 200), "wsr1 +", "wsr1 =wss://c", "wsr1 retry=5"} {
		f.Add(s, "ws://a.example.com/x?y=1")
	}
	f.Fuzz(func(t *testing.T, s, current string) {
		ParseRedirect(s, s, current)
		ParseRetry(s)
		if !utf8.ValidString(s) || s == "" {
			return
		}
		msg, reason := EncodeRedirect(s)
		if len(reason) > MaxCloseReason {
			t.Fatalf("reason of %d bytes", len(reason))
		}
		got, ok := ParseRedirect(reason, msg, current)
		if !ok || got != s {
			t.Fatalf("EncodeRedirect(%q) read back as %q, %v", s, got, ok)
		}
	})
}

// FuzzQueryValue checks the allocation-free query scan against net/url.
func FuzzQueryValue(f *testing.F) {
	for _, s := range []string{"room=1", "a=1&room=caf%C3%A9+x", "room+id=7&room=", "room=%zz", "&&room=2", "room"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, ok := queryValue(raw, "room")
		want := ""
		// url.ParseQuery skips pairs it cannot unescape; queryValue stops
		// at the first such pair it would have used, so compare only
		// queries net/url reads whole.
		q, err := url.ParseQuery(raw)
		if err != nil || strings.Contains(raw, ";") {
			return
		}
		if v := q["room"]; len(v) > 0 {
			want = v[0]
		}
		if got != want || ok != (want != "") {
			t.Fatalf("queryValue(%q) = %q, %v; net/url says %q", raw, got, ok, want)
		}
	})
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
		if pp, ok := parsePathPattern(pathPat); ok {
			pp.match(path)
		}
		splitHostPort(host)
	})
}
