package wsredirect

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect/client"
	"github.com/wsredirect/wsredirect/wire"
)

func TestTargetNormalisation(t *testing.T) {
	for _, tc := range []struct{ in, ws string }{
		{"wss://B.Example.com:443/", "wss://b.example.com"},
		{"https://b.example.com/ws/", "wss://b.example.com/ws"},
		{"http://b.example.com:80", "ws://b.example.com"},
		{"ws://[::1]:9000/p", "ws://[::1]:9000/p"},
		{"ws://[::1]", "ws://[::1]"},
		{"ws://b.example.com:443", "ws://b.example.com:443"},
		{"ws://b.example.com:0080", "ws://b.example.com"}, // regression: two members for one place
		{"wss://b.example.com:000443", "wss://b.example.com"},
		{"ws://b.example.com:09001", "ws://b.example.com:9001"},
	} {
		tgt, err := ParseTarget(tc.in)
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.ws, tgt.String(), tc.in)
	}
	assert.True(t, MustParseTarget("https://b.example.com").Equal(MustParseTarget("wss://B.example.com:443")))
	assert.False(t, MustParseTarget("ws://b.example.com").Equal(MustParseTarget("wss://b.example.com")))
	assert.False(t, MustParseTarget("ws://b.example.com").Equal(nil))
	_, err := ParseTarget("wss://bücher.example")
	assert.EqualError(t, err, `wsredirect: target "wss://bücher.example": the host must be ASCII: write an international name in its xn-- form`)
}

// TestTargetErrors: what a user who mistyped a target reads (regressions:
// ports 0 and 65536 accepted; "ws//host" got only the generic message).
func TestTargetErrors(t *testing.T) {
	for in, want := range map[string]string{
		"ws://b.example.com:0":     `wsredirect: target "ws://b.example.com:0": port 0: want 1-65535`,
		"ws://b.example.com:65536": `wsredirect: target "ws://b.example.com:65536": port 65536: want 1-65535`,
		"ws://b.example.com:99999": `wsredirect: target "ws://b.example.com:99999": port 99999: want 1-65535`,
		"ws//127.0.0.1:9090":       `wsredirect: target "ws//127.0.0.1:9090": a colon is missing after the scheme: want ws://127.0.0.1:9090`,
		"WSS//chat.example.com":    `wsredirect: target "WSS//chat.example.com": a colon is missing after the scheme: want wss://chat.example.com`,
		"127.0.0.1:9001":           `wsredirect: target "127.0.0.1:9001": no scheme: want ws://127.0.0.1:9001 or wss://127.0.0.1:9001`,
		"localhost:9001":           `wsredirect: target "localhost:9001": no scheme: want ws://localhost:9001 or wss://localhost:9001`,
		"ftp://b.example.com":      `wsredirect: target "ftp://b.example.com": scheme must be ws, wss, http or https: want a base URL such as ws://127.0.0.1:8080 or wss://chat.example.com`,
	} {
		_, err := ParseTarget(in)
		assert.EqualError(t, err, want, in)
	}
}

// TestLocationKeepsTheTargetsAuthority: whatever path a rule returns, the
// Location's scheme, host and port are the configured target's, and no
// header holds a control character (regression: a hand-written prefix strip
// let /old.evil.com/x reach wss://new.example.com.evil.com/x).
func TestLocationKeepsTheTargetsAuthority(t *testing.T) {
	strip := NewRule("strip /old", func(r *http.Request, s *State) Decision {
		return Decision{Action: Redirect, Target: MustParseTarget("wss://new.example.com"), Path: strings.TrimPrefix(r.URL.Path, "/old")}
	})
	mw := MustNew(Options{Rules: []Rule{strip}})
	for path, want := range map[string]string{
		"/old.evil.com/x":  "wss://new.example.com/.evil.com/x",
		"/old@evil.com/x":  "wss://new.example.com/@evil.com/x",
		"/old:1234/x":      "wss://new.example.com/:1234/x",
		"/old//evil.com/x": "wss://new.example.com//evil.com/x",
		"/old":             "wss://new.example.com/old", // an empty Path keeps the request's
		"/old/a%3Fb":       "wss://new.example.com/a%3Fb",
	} {
		w := run(t, mw, upgradeTo("http://a.example.com"+path))
		assert.Equal(t, http.StatusTemporaryRedirect, w.Code, path)
		assert.Equal(t, want, w.Header().Get("Location"), path)
	}

	// Bytes a rule must not smuggle into a header or a close reason.
	raw := NewRule("raw", func(*http.Request, *State) Decision {
		return Decision{Action: Redirect, Target: MustParseTarget("wss://new.example.com"), Path: "x\x00\x1b[31m\r\nSet-Cookie: a=b?#\xff"}
	})
	r := upgradeTo("http://a.example.com/x")
	r.URL.RawQuery = "q=caf\xc3\xa9\x01" // as a server may receive it; NewRequest refuses it
	w := run(t, MustNew(Options{Rules: []Rule{raw}}), r)
	loc := w.Header().Get("Location")
	assert.Equal(t, "wss://new.example.com/x%00%1B[31m%0D%0ASet-Cookie:%20a=b%3F%23%FF?q=caf%C3%A9%01", loc)

	// A zero Target is a rule bug, answered 500, never "//evil.com".
	zero := NewRule("zero", func(*http.Request, *State) Decision {
		return Decision{Action: Redirect, Target: &Target{}, Path: "//evil.com/x"}
	})
	zw := run(t, MustNew(Options{Rules: []Rule{zero}}), upgradeTo("http://a.example.com/x"))
	assert.Equal(t, http.StatusInternalServerError, zw.Code)
	assert.Empty(t, zw.Header().Get("Location"))
}

// TestAsteriskIsNotRedirected: "GET *" is not a path a Location can carry
// (regression: it gave Location: wss://a.example.com:8443*).
func TestAsteriskIsNotRedirected(t *testing.T) {
	mw := MustNew(Options{Rules: []Rule{Path("wss://a.example.com:8443", "/*"), Host("wss://a.example.com:8443", "b.example.com")}})
	r := upgradeTo("http://b.example.com/")
	r.URL.Path, r.RequestURI = "*", "*"
	assert.Equal(t, Decision{}, mw.Decide(r))
	reached := false
	w := httptest.NewRecorder()
	mw.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true })).ServeHTTP(w, r)
	assert.True(t, reached, "left to the app's upgrader")
	assert.Empty(t, w.Header().Get("Location"))
}

// TestCloseReasonIsUTF8: raw query bytes above 0x7f are percent-encoded, so
// the close reason is valid UTF-8 and the project's own client follows it
// (regression: it failed with "invalid utf8 payload in close frame").
func TestCloseReasonIsUTF8(t *testing.T) {
	b := echoNode(t, "node-b")
	mw := MustNew(Options{Mode: ModeClose, Rules: []Rule{Path(wsURL(b), "/*")}})
	a := httptest.NewServer(mw.Handler(http.NotFoundHandler()))
	defer a.Close()

	// gorilla sends the query as given, raw bytes included.
	c, _, err := websocket.DefaultDialer.Dial(wsURL(a)+"/rooms/1?name=\xff\xfe", nil)
	require.NoError(t, err)
	ce, _ := readClose(t, c)
	c.Close()
	require.Equal(t, wire.CloseRedirect, ce.Code)
	assert.True(t, utf8.ValidString(ce.Text), "%q", ce.Text)
	assert.Equal(t, "wsr1 "+wsURL(b)+"/rooms/1?name=%FF%FE", ce.Text)

	d := client.Dialer{Dialer: websocket.Dialer{HandshakeTimeout: 5 * time.Second}}
	conn, _, err := d.Connect(t.Context(), wsURL(a)+"/rooms/1?name=\xff", nil)
	require.NoError(t, err)
	defer conn.Close()
	_, hello, err := conn.ReadMessage(t.Context())
	require.NoError(t, err)
	assert.Equal(t, "node-b /rooms/1?name=%FF", string(hello))
}

// FuzzLocation: whatever path a rule returns and whatever query a client
// sends, the Location parses as a URL on the target's own scheme, host and
// port, and holds only printable ASCII.
func FuzzLocation(f *testing.F) {
	for _, s := range []string{".evil.com/x", "@evil.com/x", ":1234/x", "//evil.com", "x\r\nSet-Cookie: a", "\xff", "?#", ""} {
		f.Add(s, "a=1&b=\xfe")
	}
	targets := []*Target{MustParseTarget("wss://new.example.com:8443"), MustParseTarget("ws://[::1]:9000/prefix")}
	f.Fuzz(func(t *testing.T, path, query string) {
		for _, tgt := range targets {
			loc := tgt.location(false, path, query)
			for i := 0; i < len(loc); i++ {
				if loc[i] <= ' ' || loc[i] >= 0x7f {
					t.Fatalf("Location %q has byte %#x", loc, loc[i])
				}
			}
			u, err := url.Parse(loc)
			if err != nil {
				t.Fatalf("Location %q does not parse: %v", loc, err)
			}
			want, _ := url.Parse(tgt.String())
			if u.Scheme != want.Scheme || u.Host != want.Host || u.User != nil || u.Fragment != "" {
				t.Fatalf("path %q, query %q: Location %q left %s", path, query, loc, tgt)
			}
			if !strings.HasPrefix(u.EscapedPath(), want.EscapedPath()+"/") {
				t.Fatalf("path %q: Location %q left the target's prefix", path, loc)
			}
		}
	})
}
