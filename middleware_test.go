package wsredirect

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// run serves one request through mw in front of a handler that answers 200
// "next", and returns the recorded response.
func run(t *testing.T, mw *Middleware, r *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("next"))
	})).ServeHTTP(w, r)
	return w
}

// upgradeTo is an upgrade request for target as a server receives it: the
// request line in origin form ("/rooms/1?x"), the host in Host.
func upgradeTo(target string) *http.Request {
	r := upgradeRequest()
	u := httptest.NewRequest(http.MethodGet, target, nil)
	r.URL, r.Host, r.RequestURI = u.URL, u.Host, u.URL.RequestURI()
	return r
}

func TestMiddlewareResponses(t *testing.T) {
	refuse := NewRule("maintenance", func(r *http.Request, s *State) Decision {
		if r.URL.Query().Get("maint") == "" {
			return Decision{}
		}
		return Decision{Action: Refuse, RetryAfter: 1500 * time.Millisecond}
	})
	tests := []struct {
		name     string
		opts     Options
		req      *http.Request
		status   int
		location string
		header   map[string]string
	}{
		{
			name:     "host rule redirects with 307, path and query kept",
			opts:     Options{Rules: []Rule{Host("wss://b.example.net", "chat.example.com")}},
			req:      upgradeTo("http://chat.example.com/rooms/42?token=a%2Bb&x=1"),
			status:   307,
			location: "wss://b.example.net/rooms/42?token=a%2Bb&x=1",
		},
		{
			name:   "host rule: other host passes",
			opts:   Options{Rules: []Rule{Host("wss://b.example.net", "chat.example.com")}},
			req:    upgradeTo("http://other.example.com/rooms/42"),
			status: 200,
		},
		{
			name:     "wildcard host, target with port and prefix",
			opts:     Options{Rules: []Rule{Host("ws://10.0.0.7:8080/edge/", "*.example.com")}},
			req:      upgradeTo("http://eu.chat.example.com:8443/rooms/1"),
			status:   307,
			location: "ws://10.0.0.7:8080/edge/rooms/1",
		},
		{
			name:     "path subtree",
			opts:     Options{Rules: []Rule{Path("wss://old.example.com", "/legacy/*")}},
			req:      upgradeTo("http://a.example.com/legacy/rooms/9?t=1"),
			status:   307,
			location: "wss://old.example.com/legacy/rooms/9?t=1",
		},
		{
			name:   "path subtree respects segment boundary",
			opts:   Options{Rules: []Rule{Path("wss://old.example.com", "/legacy/*")}},
			req:    upgradeTo("http://a.example.com/legacyx"),
			status: 200,
		},
		{
			name:     "path rewrite keeps query",
			opts:     Options{Rules: []Rule{PathRewrite("wss://b.example.com", "/v1/*", "/v2")}},
			req:      upgradeTo("http://a.example.com/v1/rooms/9?t=x"),
			status:   307,
			location: "wss://b.example.com/v2/rooms/9?t=x",
		},
		{
			name:     "escaped path survives",
			opts:     Options{Rules: []Rule{Path("wss://b.example.com", "/*")}},
			req:      upgradeTo("http://a.example.com/rooms/a%2Fb%20c"),
			status:   307,
			location: "wss://b.example.com/rooms/a%2Fb%20c",
		},
		{
			name:     "308 selectable",
			opts:     Options{Rules: []Rule{Path("wss://b.example.com", "/*").WithStatus(308)}},
			req:      upgradeTo("http://a.example.com/x"),
			status:   308,
			location: "wss://b.example.com/x",
		},
		{
			name:     "HTTPLocation uses https",
			opts:     Options{HTTPLocation: true, Rules: []Rule{Path("wss://b.example.com", "/*")}},
			req:      upgradeTo("http://a.example.com/x"),
			status:   307,
			location: "https://b.example.com/x",
		},
		{
			name:   "target equal to Self passes through",
			opts:   Options{Self: "WSS://B.example.com:443/", Rules: []Rule{Path("wss://b.example.com", "/*")}},
			req:    upgradeTo("http://b.example.com/x"),
			status: 200,
		},
		{
			name: "first decision wins",
			opts: Options{Rules: []Rule{
				Path("wss://first.example.com", "/a/*"),
				Path("wss://second.example.com", "/*"),
			}},
			req:      upgradeTo("http://x.example.com/a/1"),
			status:   307,
			location: "wss://first.example.com/a/1",
		},
		{
			name: "self decision stops evaluation",
			opts: Options{Self: "wss://first.example.com", Rules: []Rule{
				Path("wss://first.example.com", "/a/*"),
				Path("wss://second.example.com", "/*"),
			}},
			req:    upgradeTo("http://x.example.com/a/1"),
			status: 200,
		},
		{
			name:   "refusal carries Retry-After rounded up",
			opts:   Options{Rules: []Rule{refuse}},
			req:    upgradeTo("http://x.example.com/a?maint=1"),
			status: 503,
			header: map[string]string{"Retry-After": "2"},
		},
		{
			name:   "non-upgrade request is never decided",
			opts:   Options{Rules: []Rule{Path("wss://b.example.com", "/*")}},
			req:    httptest.NewRequest(http.MethodGet, "http://a.example.com/x", nil),
			status: 200,
		},
		{
			name: "malformed upgrade passes to next",
			opts: Options{Rules: []Rule{Path("wss://b.example.com", "/*")}},
			req: func() *http.Request {
				r := upgradeTo("http://a.example.com/x")
				r.Header.Set("Connection", "x;y, Upgrade")
				return r
			}(),
			status: 200,
		},
		{
			name: "a user rule's redirect status is honoured (regression: always 307)",
			opts: Options{Rules: []Rule{NewRule("perm", func(*http.Request, *State) Decision {
				return Decision{Action: Redirect, Target: MustParseTarget("wss://b.example.com"), Status: 308}
			})}},
			req:      upgradeTo("http://a.example.com/x"),
			status:   308,
			location: "wss://b.example.com/x",
		},
		{
			name: "a user rule's status wins over the rule's WithStatus",
			opts: Options{Rules: []Rule{NewRule("found", func(*http.Request, *State) Decision {
				return Decision{Action: Redirect, Target: MustParseTarget("wss://b.example.com"), Status: 302}
			}).WithStatus(308)}},
			req:      upgradeTo("http://a.example.com/x"),
			status:   302,
			location: "wss://b.example.com/x",
		},
		{
			name: "a user rule's redirect with status 200 is a bug: 500 (regression: 307)",
			opts: Options{Rules: []Rule{NewRule("ok", func(*http.Request, *State) Decision {
				return Decision{Action: Redirect, Target: MustParseTarget("wss://b.example.com"), Status: 200}
			})}},
			req:    upgradeTo("http://a.example.com/x"),
			status: 500,
		},
		{
			name: "a user rule's redirect with status 303 is a bug: 500",
			opts: Options{Rules: []Rule{NewRule("see-other", func(*http.Request, *State) Decision {
				return Decision{Action: Redirect, Target: MustParseTarget("wss://b.example.com"), Status: 303}
			})}},
			req:    upgradeTo("http://a.example.com/x"),
			status: 500,
		},
		{
			name: "user rule returning a redirect without target is a 500, not a guess",
			opts: Options{Rules: []Rule{NewRule("broken", func(*http.Request, *State) Decision {
				return Decision{Action: Redirect}
			})}},
			req:    upgradeTo("http://a.example.com/x"),
			status: 500,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mw, err := New(tc.opts)
			require.NoError(t, err)
			w := run(t, mw, tc.req)
			assert.Equal(t, tc.status, w.Code)
			assert.Equal(t, tc.location, w.Header().Get("Location"))
			if tc.status != 200 {
				assert.Equal(t, "no-store", w.Header().Get("Cache-Control"))
				assert.Equal(t, "text/plain; charset=utf-8", w.Header().Get("Content-Type"))
				assert.NotEmpty(t, w.Body.String())
			} else {
				assert.Equal(t, "next", w.Body.String())
			}
			for k, v := range tc.header {
				assert.Equal(t, v, w.Header().Get(k), k)
			}
		})
	}
}

func TestForwardedHostIsOptIn(t *testing.T) {
	rules := []Rule{Host("wss://eu.example.net", "eu.example.com")}
	forwarded := func(name, value string) *http.Request {
		r := upgradeTo("http://lb.internal/rooms/1")
		r.Header.Set(name, value)
		return r
	}
	tests := []struct {
		name     string
		trust    bool
		req      *http.Request
		location string
	}{
		{"ignored by default", false, forwarded("X-Forwarded-Host", "eu.example.com"), ""},
		{"X-Forwarded-Host when trusted", true, forwarded("X-Forwarded-Host", "eu.example.com, lb.internal"), "wss://eu.example.net/rooms/1"},
		{"Forwarded host= when trusted", true, forwarded("Forwarded", `for=1.2.3.4;host="eu.example.com";proto=https`), "wss://eu.example.net/rooms/1"},
		{"forwarded host selects, never reflected", true, forwarded("X-Forwarded-Host", "evil.example.org"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mw := MustNew(Options{TrustForwardedHost: tc.trust, Rules: rules})
			w := run(t, mw, tc.req)
			assert.Equal(t, tc.location, w.Header().Get("Location"))
			assert.NotContains(t, w.Header().Get("Location"), "evil")
		})
	}
}

// TestConnectKeepsMethod: 301/302 would let a client retry an RFC 8441
// CONNECT as GET, so they are sent as 308/307 for CONNECT only.
func TestConnectKeepsMethod(t *testing.T) {
	connect := func() *http.Request {
		r := httptest.NewRequest(http.MethodConnect, "https://a.example.com/x", nil)
		r.ProtoMajor, r.ProtoMinor = 2, 0
		r.Header[":protocol"] = []string{"websocket"}
		return r
	}
	for _, tc := range []struct{ configured, get, connect int }{
		{0, 307, 307}, {301, 301, 308}, {302, 302, 307}, {307, 307, 307}, {308, 308, 308},
	} {
		rule := Path("wss://b.example.com", "/*")
		if tc.configured != 0 {
			rule = rule.WithStatus(tc.configured)
		}
		mw := MustNew(Options{Rules: []Rule{rule}})
		assert.Equal(t, tc.get, run(t, mw, upgradeTo("http://a.example.com/x")).Code, "GET with %d", tc.configured)
		assert.Equal(t, tc.connect, run(t, mw, connect()).Code, "CONNECT with %d", tc.configured)
	}
}

func TestNewErrors(t *testing.T) {
	ok := Path("wss://b.example.com", "/*")
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no rules", Options{}, "wsredirect: no rules: Options.Rules is empty"},
		{"zero rule", Options{Rules: []Rule{{}}}, "wsredirect: rule 0 (): zero Rule"},
		{"bad Self", Options{Self: "ftp://x", Rules: []Rule{ok}}, `wsredirect: Options.Self: target "ftp://x": scheme must be ws, wss, http or https`},
		// host:port without a scheme is the usual slip: say what is wanted.
		{"Self without scheme", Options{Self: "127.0.0.1:8080", Rules: []Rule{ok}}, `wsredirect: Options.Self: target "127.0.0.1:8080": no scheme: want ws://127.0.0.1:8080 or wss://127.0.0.1:8080`},
		{"Self as host name and port", Options{Self: "localhost:8080", Rules: []Rule{ok}}, `wsredirect: Options.Self: target "localhost:8080": no scheme: want ws://localhost:8080 or wss://localhost:8080`},
		{"target without host", Options{Rules: []Rule{ok, Host("wss://", "a.example.com")}}, `wsredirect: rule 1 (host): target "wss://": no host`},
		{"target with query", Options{Rules: []Rule{Path("wss://b.example.com/?x=1", "/*")}}, "query and fragment are not allowed"},
		{"target with user info", Options{Rules: []Rule{Path("wss://u:p@b.example.com", "/*")}}, "user info is not allowed"},
		{"unparsable target", Options{Rules: []Rule{Path("wss://b.example.com:port", "/*")}}, `wsredirect: rule 0 (path): target "wss://b.example.com:port"`},
		{"host rule without hosts", Options{Rules: []Rule{Host("wss://b.example.com")}}, "wsredirect: rule 0 (host): no hosts to match"},
		{"bad host pattern", Options{Rules: []Rule{Host("wss://b.example.com", "a.*.com")}}, `bad host pattern "a.*.com": want a host name such as "chat.example.com", "chat.example.com:8443" or "*.example.com"`},
		// Regressions: these got no right spelling.
		{"host pattern as a URL", Options{Rules: []Rule{Host("wss://b.example.com", "https://chat.example.com")}}, `bad host pattern "https://chat.example.com": want the host alone: "chat.example.com"`},
		{"host pattern with a slash", Options{Rules: []Rule{Host("wss://b.example.com", "chat.example.com/")}}, `bad host pattern "chat.example.com/": want the host alone: "chat.example.com"`},
		{"host wildcard without a dot", Options{Rules: []Rule{Host("wss://b.example.com", "*chat.example.com")}}, `bad host pattern "*chat.example.com": a wildcard stands for whole labels: want "*.chat.example.com"`},
		{"path pattern with :id", Options{Rules: []Rule{Path("wss://b.example.com", "/rooms/:id")}}, `path pattern "/rooms/:id": wildcards like :name are not supported: write "/rooms/*" to match every path below /rooms/`},
		{"bad path pattern", Options{Rules: []Rule{Path("wss://b.example.com", "ws")}}, `path pattern "ws": want a path starting with /`},
		{"bad replacement", Options{Rules: []Rule{PathRewrite("wss://b.example.com", "/v1/*", "v2")}}, `replacement "v2": want a path such as /v2`},
		{"303 refused", Options{Rules: []Rule{ok.WithStatus(303)}}, "wsredirect: rule 0 (path): redirect status 303: use 301, 302, 307 or 308"},
		{"200 refused", Options{Rules: []Rule{ok.WithStatus(200)}}, "redirect status 200"},
		{"nil user func", Options{Rules: []Rule{NewRule("mine", nil)}}, "wsredirect: rule 0 (mine): nil RuleFunc"},
		// Regression: names and IDs that are not UTF-8, or huge, became
		// metric labels (the collector panicked on the request path).
		{"rule name not UTF-8", Options{Rules: []Rule{NewRule("evil\xff\xfe", pass)}}, `name "evil\xff\xfe": want printable UTF-8 of at most 64 bytes (it becomes a metric label)`},
		{"rule name with a newline", Options{Rules: []Rule{NewRule("a\nb", pass)}}, `name "a\nb": want printable UTF-8`},
		{"rule name of 1 MiB", Options{Rules: []Rule{NewRule(strings.Repeat("x", 1<<20), pass)}}, `…": want printable UTF-8 of at most 64 bytes`},
		{"empty rule name", Options{Rules: []Rule{NewRule("", pass)}}, `name "": want printable UTF-8`},
		{"member ID not UTF-8", Options{Members: []Member{{ID: "evil\xff\xfe", URL: "ws://a:1"}}, Rules: []Rule{ok}}, `wsredirect: Options.Members: member ID "evil\xff\xfe" (URL "ws://a:1"): want printable UTF-8 of at most 256 bytes`},
		// Regression: a node whose Self is not its member's URL redirected
		// its own keys to itself, logging nothing above Debug.
		{"Self spelt otherwise than its member", Options{Self: "ws://localhost:9001", Members: []Member{{ID: "a", URL: "ws://127.0.0.1:9001"}, {ID: "b", URL: "ws://127.0.0.1:9002"}}, Rules: []Rule{Shard(QueryKey("room"))}},
			"wsredirect: Options.Self ws://localhost:9001 and member a's URL ws://127.0.0.1:9001 name the same place: spell Self as the member does, or the node redirects its own keys to itself"},
		{"Self as IPv6 loopback for an IPv4 member", Options{Self: "ws://[::1]:9001", Members: []Member{{ID: "a", URL: "ws://127.0.0.1:9001"}}, Rules: []Rule{Shard(QueryKey("room"))}},
			"name the same place"},
		// Regression: a drain from year 9999, or of 292 years, split a
		// member's keys for as long.
		{"drain far ahead", Options{Members: []Member{{ID: "a", URL: "ws://a:1", DrainingSince: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}}, Rules: []Rule{ok}}, "wsredirect: Options.Members: member a: DrainingSince 9999-01-01T00:00:00Z is more than 24h0m0s ahead"},
		{"drain ramp of centuries", Options{Members: []Member{{ID: "a", URL: "ws://a:1", DrainingSince: time.Now(), DrainRamp: 292 * 365 * 24 * time.Hour}}, Rules: []Rule{ok}}, "wsredirect: Options.Members: member a: DrainRamp 2557920h0m0s is longer than the 24h0m0s a drain may take"},
		{"member ID with a tab", Options{Members: []Member{{ID: "a\tb", URL: "ws://a:1"}}, Rules: []Rule{ok}}, `member ID "a\tb"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.opts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, 1, strings.Count(err.Error(), "wsredirect:"), "one package prefix: %v", err)
		})
	}
	assert.PanicsWithError(t, "wsredirect: no rules: Options.Rules is empty", func() { MustNew(Options{}) })
}

var pass = func(*http.Request, *State) Decision { return Decision{} }

// TestStripPrefixKeepsThePath (regression: behind http.StripPrefix the
// prefix was dropped from the Location, so the client asked the next node
// for a path it does not serve).
func TestStripPrefixKeepsThePath(t *testing.T) {
	mw := MustNew(Options{Rules: []Rule{Path("wss://b.example.com", "/rooms/*")}})
	h := http.StripPrefix("/api", mw.Handler(nop))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, upgradeTo("http://a.example.com/api/rooms/1?token=x"))
	assert.Equal(t, http.StatusTemporaryRedirect, w.Code, "the rule matches the path below the prefix")
	assert.Equal(t, "wss://b.example.com/api/rooms/1?token=x", w.Header().Get("Location"), "the client's own path")

	// A request line in absolute form names an authority of the client's
	// choosing: only its path is taken.
	r := upgradeTo("http://a.example.com/rooms/1?token=x")
	r.RequestURI = "http://evil.example//rooms/1?token=x"
	w = httptest.NewRecorder()
	mw.Handler(nop).ServeHTTP(w, r)
	assert.Equal(t, "wss://b.example.com//rooms/1?token=x", w.Header().Get("Location"))
	r.RequestURI = "http://evil.example"
	w = httptest.NewRecorder()
	mw.Handler(nop).ServeHTTP(w, r)
	assert.Equal(t, "wss://b.example.com/?token=x", w.Header().Get("Location"))

	// A member URL's path is a prefix before the request's.
	mw = MustNew(Options{Rules: []Rule{Path("ws://b:9001/edge", "/*")}})
	w = run(t, mw, upgradeTo("http://a.example.com/chat?room=2"))
	assert.Equal(t, "ws://b:9001/edge/chat?room=2", w.Header().Get("Location"))
}

// TestRedirectToItselfWarns: a node that does not know itself (Self unset,
// or spelt otherwise than its member) redirects its own keys to itself; it
// says so once at Warn, whether the client used the member's spelling or
// another name of the same socket.
func TestRedirectToItselfWarns(t *testing.T) {
	for _, spelling := range []string{"127.0.0.1", "localhost"} {
		t.Run(spelling, func(t *testing.T) {
			var logs bytes.Buffer
			srv := httptest.NewUnstartedServer(nil)
			self := Member{ID: "a", URL: "ws://" + strings.Replace(srv.Listener.Addr().String(), "127.0.0.1", spelling, 1)}
			mw := MustNew(Options{Members: []Member{self}, Rules: []Rule{Shard(QueryKey("room"))}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			srv.Config.Handler = mw.Handler(nop)
			srv.Start()
			defer srv.Close()
			for range 3 {
				req, err := http.NewRequest(http.MethodGet, srv.URL+"/rooms?room=1", nil)
				require.NoError(t, err)
				for k, v := range upgradeRequest().Header {
					req.Header[k] = v
				}
				resp, err := http.DefaultTransport.RoundTrip(req)
				require.NoError(t, err)
				resp.Body.Close()
				assert.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)
			}
			assert.Equal(t, 1, strings.Count(logs.String(), "level=WARN"), logs.String())
			assert.Contains(t, logs.String(), `msg="wsredirect: a rule redirects clients to the node they came to: is Options.Self this node's URL, spelt as its member's? (logged once)" rule=shard target=`+self.URL)
		})
	}
	// An attacker's Host cannot make a front door look like its target: the
	// socket it came in on is another port.
	t.Run("a client's Host", func(t *testing.T) {
		var logs bytes.Buffer
		mw := MustNew(Options{Members: []Member{{ID: "n1", URL: "ws://n1.example:9001"}}, Rules: []Rule{Shard(QueryKey("room"))},
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		srv := httptest.NewServer(mw.Handler(nop))
		defer srv.Close()
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/rooms?room=1", nil)
		require.NoError(t, err)
		req.Host = "n1.example:9001"
		for k, v := range upgradeRequest().Header {
			req.Header[k] = v
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)
		assert.NotContains(t, logs.String(), "WARN")
	})
	// A node that knows itself serves its keys, and a rewrite to itself is
	// no loop: neither warns.
	var logs bytes.Buffer
	mw := MustNew(Options{Self: "wss://a.example.com", Members: abc, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Rules: []Rule{PathRewrite("wss://a.example.com", "/v1/*", "/v2"), Shard(QueryKey("room"))}})
	run(t, mw, upgradeTo("http://a.example.com/v1/x"))
	run(t, mw, upgradeTo("http://a.example.com/rooms?room=1"))
	assert.NotContains(t, logs.String(), "WARN")
}

// TestOnDecisionPanic: a panicking hook is logged with its stack and the
// upgrade is answered all the same.
func TestOnDecisionPanic(t *testing.T) {
	var buf bytes.Buffer
	mw := MustNew(Options{
		Rules:      []Rule{Path("wss://b.example.com", "/*")},
		OnDecision: func(*http.Request, Decision) { panic("hook bug") },
		Logger:     slog.New(slog.NewTextHandler(&buf, nil)),
	})
	w := run(t, mw, upgradeTo("http://a.example.com/x"))
	assert.Equal(t, http.StatusTemporaryRedirect, w.Code)
	assert.Contains(t, buf.String(), `level=ERROR msg="wsredirect: OnDecision panicked" panic="hook bug" stack=`)
}

func TestOnDecision(t *testing.T) {
	var got []Decision
	mw := MustNew(Options{
		Self:       "wss://a.example.com",
		Rules:      []Rule{Path("wss://a.example.com", "/here/*"), Path("wss://b.example.com", "/there/*")},
		OnDecision: func(r *http.Request, d Decision) { got = append(got, d) },
	})
	run(t, mw, upgradeTo("http://a.example.com/there/1"))
	run(t, mw, upgradeTo("http://a.example.com/here/1"))
	run(t, mw, upgradeTo("http://a.example.com/nowhere"))
	run(t, mw, httptest.NewRequest(http.MethodGet, "http://a.example.com/there/1", nil))
	require.Len(t, got, 3, "told once per upgrade, never for plain requests")
	for i := range got {
		assert.Positive(t, got[i].Elapsed, "the rules' time is reported")
		got[i].Elapsed = 0
	}
	assert.Equal(t, Redirect, got[0].Action)
	assert.Equal(t, "path", got[0].Rule)
	assert.Equal(t, 307, got[0].Status)
	assert.Equal(t, "wss://b.example.com", got[0].Target.String())
	assert.Equal(t, Decision{Action: Pass, Rule: "path", Target: MustParseTarget("wss://a.example.com")}, got[1])
	assert.Equal(t, Decision{}, got[2])
}

func TestSetRules(t *testing.T) {
	mw := MustNew(Options{Rules: []Rule{Path("wss://old.example.com", "/*")}})
	require.ErrorContains(t, mw.SetRules(), "no rules")
	require.ErrorContains(t, mw.SetRules(Path("wss://new.example.com", "x")), `path pattern "x"`)
	assert.Equal(t, "wss://old.example.com/x", run(t, mw, upgradeTo("http://a/x")).Header().Get("Location"), "rules kept on error")
	require.NoError(t, mw.SetRules(Path("wss://new.example.com", "/*")))
	assert.Equal(t, "wss://new.example.com/x", run(t, mw, upgradeTo("http://a/x")).Header().Get("Location"))
}

// TestSwapUnderLoad runs decisions while rules are swapped: under -race this
// proves the request path reads one snapshot without locks or data races,
// and every response comes from one rule set or the other.
func TestSwapUnderLoad(t *testing.T) {
	a, b := Path("wss://a.example.com", "/*"), Path("wss://b.example.com", "/*")
	mw := MustNew(Options{Rules: []Rule{a}})
	h := mw.Handler(http.NotFoundHandler())
	stop := churn(func(i int) {
		rules := a
		if i%2 == 1 {
			rules = b
		}
		assert.NoError(t, mw.SetRules(rules))
	})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, upgradeTo("http://x/r"))
				loc := w.Header().Get("Location")
				assert.True(t, loc == "wss://a.example.com/r" || loc == "wss://b.example.com/r", loc)
			}
		}()
	}
	wg.Wait()
	stop()
}

// churn calls change(0), change(1), … in a goroutine until stop is called.
func churn(change func(i int)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			change(i)
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

func TestPassthroughAllocs(t *testing.T) {
	mw := MustNew(Options{Rules: []Rule{Path("wss://b.example.com", "/*")}})
	h := mw.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := httptest.NewRequest(http.MethodGet, "http://a.example.com/index.html", nil)
	r.Header.Set("Accept", "text/html")
	w := httptest.NewRecorder()
	assert.Zero(t, testing.AllocsPerRun(100, func() { h.ServeHTTP(w, r) }))
	up := upgradeRequest()
	assert.Zero(t, testing.AllocsPerRun(100, func() { IsUpgrade(up) }), "detection of an upgrade")
}

// TestRedirectToSelf: a redirect to this node is served here only when it
// would send the client to the very path it asked for; a rewrite to this
// node's own address is still sent (regression: it passed through
// unrewritten once Self was set).
func TestRedirectToSelf(t *testing.T) {
	self := "ws://a.example.com"
	for _, tc := range []struct {
		name, path string
		rule       Rule
		want       int
		location   string
	}{
		{"rewrite to self is sent", "/v1/rooms/9?t=x", PathRewrite(self, "/v1/*", "/v2"), http.StatusTemporaryRedirect, "ws://a.example.com/v2/rooms/9?t=x"},
		{"same path to self is served", "/v1/rooms/9", Path(self, "/v1/*"), http.StatusSwitchingProtocols, ""},
		{"rewrite that keeps the path is served", "/v2/rooms/9", PathRewrite(self, "/v2/*", "/v2"), http.StatusSwitchingProtocols, ""},
		{"same path elsewhere is sent", "/v1/rooms/9", Path("ws://b.example.com", "/v1/*"), http.StatusTemporaryRedirect, "ws://b.example.com/v1/rooms/9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mw := MustNew(Options{Self: self, Rules: []Rule{tc.rule}})
			app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusSwitchingProtocols) })
			w := httptest.NewRecorder()
			mw.Handler(app).ServeHTTP(w, upgradeTo("http://a.example.com"+tc.path))
			assert.Equal(t, tc.want, w.Code)
			assert.Equal(t, tc.location, w.Header().Get("Location"))
		})
	}
}

// TestRedirectAllocs pins the redirect's allocations: the Location and its
// header slice, plus the rewritten path for a rewrite (regression: a body
// built per request added two).
func TestRedirectAllocs(t *testing.T) {
	for _, tc := range []struct {
		rule Rule
		max  float64
	}{
		{Path("wss://b.example.net", "/rooms/*"), 2},
		{PathRewrite("wss://b.example.net", "/rooms/*", "/v2/rooms"), 3},
	} {
		h := MustNew(Options{Rules: []Rule{tc.rule}}).Handler(nop)
		r := upgradeTo("http://chat.example.com/rooms/42?token=abc")
		w := &discardWriter{h: http.Header{}}
		got := testing.AllocsPerRun(100, func() { w.reset(); h.ServeHTTP(w, r) })
		assert.LessOrEqual(t, got, tc.max, "%s", tc.rule.Name())
		assert.Equal(t, http.StatusTemporaryRedirect, w.code)
	}
}

// TestLogger: membership changes and drains at Info with counts, rule bugs
// at Error with the rule's name, decisions at Debug; a panicking rule is a
// 500, not a crashed request.
func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	panics := NewRule("panics", func(r *http.Request, _ *State) Decision {
		if r.URL.Path == "/boom" {
			panic("boom")
		}
		return Decision{}
	})
	mw := MustNew(Options{Self: abc[0].URL, Members: abc, Logger: logger, Rules: []Rule{panics, Shard(QueryKey("room"))}})

	w := run(t, mw, upgradeTo("http://a.example.com/boom"))
	assert.Equal(t, http.StatusInternalServerError, w.Code)
	assert.Contains(t, buf.String(), `level=ERROR msg="wsredirect: rule bug" rule=panics error="panic: boom" stack=`)
	assert.Contains(t, buf.String(), "middleware_test.go", "the stack names the rule's code (regression: no stack)")
	assert.NotContains(t, w.Body.String(), "boom", "no internals to the client")
	assert.Contains(t, w.Body.String(), "could not be decided", "regression: read like a node out of capacity")

	buf.Reset()
	run(t, mw, roomRequest("x"))
	assert.Contains(t, buf.String(), `level=DEBUG msg="wsredirect: upgrade decided" action=`)

	buf.Reset()
	since := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	require.NoError(t, mw.DrainMember("b", since, time.Minute))
	assert.Contains(t, buf.String(), `level=INFO msg="wsredirect: member drains" member=b since=2026-11-26T12:00:00.000Z ramp=1m0s draining=1`)
	assert.NotContains(t, buf.String(), "members changed", "a drain is not a membership change")
	buf.Reset()
	require.NoError(t, mw.DrainMember("b", time.Time{}, 0))
	assert.Contains(t, buf.String(), `level=INFO msg="wsredirect: member undrained" member=b draining=0`)
	buf.Reset()
	require.NoError(t, mw.SetMembers(abc[:2]...))
	assert.Contains(t, buf.String(), `level=INFO msg="wsredirect: members changed" members=2 before=3 draining=0`)
}

// TestDecisionReport: what OnDecision learns beyond the rule's outcome.
func TestDecisionReport(t *testing.T) {
	var got Decision
	mw := MustNew(Options{Self: abc[1].URL, Members: abc, OnDecision: func(_ *http.Request, d Decision) { got = d }, Rules: []Rule{Shard(QueryKey("room"))}})
	key := keysOwnedBy(t, mw.State().fleet, "c", 1)[0]
	run(t, mw, roomRequest(key))
	assert.Equal(t, "c", got.Member)
	assert.False(t, got.Close, "no Origin: a status")
	r := roomRequest(key)
	r.Header.Set("Origin", "http://b.example.com")
	w := httptest.NewRecorder()
	mw.Handler(nop).ServeHTTP(w, r) // the recorder cannot be hijacked: the close attempt fails, the report stands
	assert.True(t, got.Close, "a browser: a close frame")

	// Regression: a browser refused for its Origin was reported (and
	// counted) as a redirect, though it got a 403.
	r = roomRequest(key)
	r.Header.Set("Origin", "https://evil.example.net")
	w = run(t, mw, r)
	assert.Equal(t, http.StatusForbidden, w.Code)
	assert.Equal(t, Refuse, got.Action, "a refusal, reported as one")
	assert.Equal(t, http.StatusForbidden, got.Status)
	assert.False(t, got.Close)
	assert.Nil(t, got.Target, "the refused page learns no target")
	assert.Equal(t, "shard", got.Rule)
}
