package main

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wsredirect/wsredirect/internal/wstest"
	"github.com/wsredirect/wsredirect/wire"
)

// The servers here speak the protocols directly (statuses, gorilla's
// Upgrader and package wire), not through the middleware: what is tested is
// what wsprobe makes of what arrives.

// buildProbe builds the real binary, so flags, output and exit codes are
// tested as a user meets them.
func buildProbe(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wsprobe")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

func wsURL(srv *httptest.Server) string { return "ws" + strings.TrimPrefix(srv.URL, "http") }

// result is what a run of wsprobe left.
type result struct {
	code           int
	stdout, stderr string
}

// runBin runs the binary bin with args.
func runBin(t *testing.T, bin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{code, stdout.String(), stderr.String()}
}

// probe runs wsprobe in the test's process, where the race detector sees
// its goroutines.
func probe(args ...string) result {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

// check asserts the exit code, that each of lines appears in stdout in
// order, and that stderr contains wantErr.
func (r result) check(t *testing.T, wantCode int, wantErr string, lines ...string) {
	t.Helper()
	assert.Equal(t, wantCode, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	out := r.stdout
	for _, line := range lines {
		i := strings.Index(out, line)
		if !assert.GreaterOrEqual(t, i, 0, "missing %q (in order) in\n%s", line, r.stdout) {
			break
		}
		out = out[i+len(line):]
	}
	assert.Contains(t, r.stderr, wantErr)
}

// echoNode upgrades, from any Origin, with the header X-Node: name and
// answers each message with "name: message"; greet, when set, is sent
// first.
func echoNode(t *testing.T, name, greet string) *httptest.Server {
	t.Helper()
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, http.Header{"X-Node": {name}})
		if err != nil {
			return
		}
		defer c.Close()
		if greet != "" && c.WriteMessage(websocket.TextMessage, []byte(greet)) != nil {
			return
		}
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(mt, append([]byte(name+": "), p...))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// redirector answers every request with a 307 to loc(r).
func redirector(t *testing.T, loc func(r *http.Request) string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l := loc(r); l != "" {
			http.Redirect(w, r, l, http.StatusTemporaryRedirect)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// closer accepts every upgrade, from any Origin, selecting wire.Subprotocol
// when offered if marker is set, and hands the connection to fn, as a
// wsredirect server answering a browser does.
func closer(t *testing.T, marker bool, fn func(c *websocket.Conn, r *http.Request)) *httptest.Server {
	t.Helper()
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	if marker {
		up.Subprotocols = []string{wire.Subprotocol}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		fn(c, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// closedAddr returns a ws URL nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u := "ws://" + l.Addr().String() + "/"
	require.NoError(t, l.Close())
	return u
}

func TestProbe(t *testing.T) {
	bin := buildProbe(t)
	b := echoNode(t, "b", "")
	a := redirector(t, func(r *http.Request) string {
		if strings.HasPrefix(r.URL.Path, "/rooms/") {
			return wsURL(b) + r.URL.Path
		}
		return ""
	})
	var loop *httptest.Server
	loop = redirector(t, func(r *http.Request) string {
		if p, ok := strings.CutPrefix(r.URL.Path, "/ping/"); ok {
			return wsURL(loop) + "/pong/" + p
		}
		return wsURL(loop) + "/ping/" + strings.TrimPrefix(r.URL.Path, "/pong/")
	})
	// The browser path: a accepts the upgrade and closes it with the target.
	browser := closer(t, true, func(c *websocket.Conn, r *http.Request) {
		wstest.CloseRedirect(c, wsURL(b)+r.URL.Path)
	})
	closed := closedAddr(t)

	tests := []struct {
		name      string
		args      []string
		wantCode  int
		wantLines []string // each must appear, in order
		wantErr   string
	}{
		{
			name:     "redirect followed and message exchanged",
			args:     []string{"-H", "X-Trace: 1", "-send", "hello", wsURL(a) + "/rooms/7"},
			wantCode: 0,
			wantLines: []string{
				"* hop 1: " + wsURL(a) + "/rooms/7",
				"< 307 Temporary Redirect (",
				"< Location: " + wsURL(b) + "/rooms/7",
				"* hop 2: " + wsURL(b) + "/rooms/7",
				"< 101 Switching Protocols (",
				"* final response headers:",
				"< X-Node: b",
				"* connected to " + wsURL(b) + "/rooms/7 after 1 redirect(s)",
				"> hello",
				"< b: hello",
			},
		},
		{
			name:     "close-code redirect followed and message exchanged",
			args:     []string{"-H", "Origin: http://app.example", "-send", "hello", wsURL(browser) + "/rooms/7"},
			wantCode: 0,
			wantLines: []string{
				"* hop 1: " + wsURL(browser) + "/rooms/7",
				"< 101 Switching Protocols (",
				"< close 4307 → " + wsURL(b) + "/rooms/7",
				"* hop 2: " + wsURL(b) + "/rooms/7",
				"< 101 Switching Protocols (",
				"* response headers of hop 1:",
				"< Sec-Websocket-Protocol: wsredirect.v1",
				"* connected to " + wsURL(b) + "/rooms/7 after 1 redirect(s)",
				"> hello",
				"< b: hello",
			},
		},
		{
			name:     "flags after the URL",
			args:     []string{wsURL(a) + "/rooms/7", "-send", "hi"},
			wantCode: 0,
			wantLines: []string{
				"* connected to " + wsURL(b) + "/rooms/7 after 1 redirect(s)",
				"> hi",
				"< b: hi",
			},
		},
		{
			// Regression: Go's URL error, for the way a URL is usually typed.
			name:      "no scheme: ws:// assumed",
			args:      []string{strings.TrimPrefix(wsURL(b), "ws://") + "/rooms/7"},
			wantCode:  0,
			wantLines: []string{"* hop 1: " + wsURL(b) + "/rooms/7"},
			wantErr:   "wsprobe: no scheme in " + strings.TrimPrefix(wsURL(b), "ws://") + "/rooms/7: dialling " + wsURL(b) + "/rooms/7",
		},
		{
			name:      "loop",
			args:      []string{wsURL(loop) + "/ping/x"},
			wantCode:  3,
			wantLines: []string{"* hop 1: " + wsURL(loop) + "/ping/x", "* hop 2: " + wsURL(loop) + "/pong/x"},
			wantErr:   "redirect loop",
		},
		{
			name:      "hop cap",
			args:      []string{"-max-hops", "0", wsURL(a) + "/rooms/7"},
			wantCode:  3,
			wantLines: []string{"* hop 1: " + wsURL(a) + "/rooms/7", "< 307 Temporary Redirect ("},
			wantErr:   "wsprobe: redirected, and -max-hops 0 follows no redirect: the hop above says where to", // regression: "too many redirects"
		},
		{
			name:      "hop cap on a close-code redirect",
			args:      []string{"-max-hops", "0", "-H", "Origin: http://app.example", wsURL(browser) + "/rooms/7"},
			wantCode:  3,
			wantLines: []string{"* hop 1: " + wsURL(browser) + "/rooms/7", "< 101 Switching Protocols (", "< close 4307 → " + wsURL(b) + "/rooms/7"},
			wantErr:   "wsprobe: redirected, and -max-hops 0 follows no redirect",
		},
		{
			name:      "final status other than 101",
			args:      []string{wsURL(a) + "/nowhere"},
			wantCode:  3,
			wantLines: []string{"< 404 Not Found ("},
			wantErr:   "bad handshake",
		},
		{
			name:      "connection refused",
			args:      []string{closed},
			wantCode:  4,
			wantLines: []string{"* hop 1: " + closed, "  no response ("},
			wantErr:   "connection refused",
		},
		{
			name:     "no URL",
			args:     []string{},
			wantCode: 2,
			wantErr:  "Exit status:",
		},
		{
			name:     "two URLs",
			args:     []string{wsURL(a) + "/rooms/7", "-send", "hi", wsURL(b)},
			wantCode: 2,
			wantErr:  "wsprobe: want one URL, got 2 arguments: " + wsURL(a) + "/rooms/7 " + wsURL(b) + " (wsprobe -h for usage)\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runBin(t, bin, tc.args...).check(t, tc.wantCode, tc.wantErr, tc.wantLines...)
		})
	}
}

func TestCloseRedirects(t *testing.T) {
	app := echoNode(t, "app", "")
	greeter := echoNode(t, "greeter", "welcome")
	long := wsURL(app) + "/rooms/" + strings.Repeat("x", 200)
	markerTo := func(target func(r *http.Request) string) *httptest.Server {
		return closer(t, true, func(c *websocket.Conn, r *http.Request) { wstest.CloseRedirect(c, target(r)) })
	}
	// plain does not select the marker: only the close tells.
	plain := closer(t, false, func(c *websocket.Conn, r *http.Request) { wstest.CloseRedirect(c, wsURL(app)+r.URL.Path) })
	second := markerTo(func(r *http.Request) string { return wsURL(plain) + r.URL.Path })
	toLong := markerTo(func(*http.Request) string { return long })
	toGreeter := markerTo(func(*http.Request) string { return wsURL(greeter) + "/" })
	var visits atomic.Int64
	retry := closer(t, true, func(c *websocket.Conn, r *http.Request) {
		if visits.Add(1) == 1 {
			wstest.CloseWith(c, "", wire.CloseRetry, wire.EncodeRetry(0))
			return
		}
		c.WriteMessage(websocket.TextMessage, []byte("back"))
		c.ReadMessage()
	})
	var x, y *httptest.Server
	x = markerTo(func(*http.Request) string { return wsURL(y) + "/" })
	y = markerTo(func(*http.Request) string { return wsURL(x) + "/" })
	garbled := closer(t, true, func(c *websocket.Conn, r *http.Request) {
		wstest.CloseWith(c, "", wire.CloseRedirect, "go elsewhere")
	})
	silent := closer(t, true, func(c *websocket.Conn, r *http.Request) {
		wstest.CloseWith(c, "", websocket.CloseNormalClosure, "bye")
	})
	stuck := closer(t, true, func(c *websocket.Conn, r *http.Request) { c.ReadMessage() })
	refused := closedAddr(t)
	toRefused := markerTo(func(*http.Request) string { return refused })
	// cuer's first connection gets a cue its server did not send (a chat
	// relaying another client's line): the client dials it again.
	var cues atomic.Int64
	cuer := closer(t, false, func(c *websocket.Conn, r *http.Request) {
		if cues.Add(1) == 1 {
			c.WriteMessage(websocket.TextMessage, []byte(wire.Cue))
		} else {
			c.WriteMessage(websocket.TextMessage, []byte("welcome"))
		}
		c.ReadMessage()
	})
	kicker := closer(t, false, func(c *websocket.Conn, r *http.Request) {
		wstest.CloseWith(c, "", websocket.ClosePolicyViolation, "no")
	})

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
		lines    []string
	}{
		{
			name:     "target in the reason",
			args:     []string{"-send", "hi", wsURL(plain) + "/r", "-marker=false", "-settle", "1s"},
			wantCode: 0,
			lines: []string{
				"* hop 1: " + wsURL(plain) + "/r", "< 101 Switching Protocols (", "< close 4307 → " + wsURL(app) + "/r",
				"* hop 2: " + wsURL(app) + "/r", "< 101 Switching Protocols (",
				"* response headers of hop 1:",
				"* connected to " + wsURL(app) + "/r after 1 redirect(s)", "> hi", "< app: hi",
			},
		},
		{
			name:     "target in a message",
			args:     []string{"-send", "hi", wsURL(toLong)},
			wantCode: 0,
			lines: []string{
				"< close 4307 → " + long, "* hop 2: " + long,
				"* connected to " + long + " after 1 redirect(s)", "> hi", "< app: hi",
			},
		},
		{
			name:     "two close-code redirects",
			args:     []string{"-send", "hi", "-settle", "1s", wsURL(second) + "/r"},
			wantCode: 0,
			lines: []string{
				"< close 4307 → " + wsURL(plain) + "/r", "< close 4307 → " + wsURL(app) + "/r",
				"* hop 3: " + wsURL(app) + "/r", "* connected to " + wsURL(app) + "/r after 2 redirect(s)", "< app: hi",
			},
		},
		{
			name:     "a message settles the chain and is read",
			args:     []string{"-read", "1", "-settle", "1m", wsURL(toGreeter)},
			wantCode: 0,
			lines:    []string{"* connected to " + wsURL(greeter) + "/ after 1 redirect(s)", "< welcome"},
		},
		{
			name:     "close retry",
			args:     []string{"-read", "1", wsURL(retry)},
			wantCode: 0,
			lines: []string{
				"* hop 1: " + wsURL(retry) + "/", "< 101 Switching Protocols (", "< close 4503, retry after 0s",
				"* hop 2: " + wsURL(retry) + "/", "* connected to " + wsURL(retry) + "/ after 1 redirect(s)", "< back",
			},
		},
		{
			name:     "loop",
			args:     []string{"-settle", "5s", wsURL(x)},
			wantCode: 3,
			wantErr:  "redirect loop",
			lines:    []string{"< close 4307 → " + wsURL(y) + "/", "< close 4307 → " + wsURL(x) + "/"},
		},
		{
			name:     "reason not a redirect",
			args:     []string{wsURL(garbled)},
			wantCode: 3,
			wantErr:  `close 4307 with a reason that is not a wsredirect v1 redirect: "go elsewhere"`,
			lines:    []string{"< 101 Switching Protocols (", "< close 4307 go elsewhere"},
		},
		{
			name:     "marker selected, then an ordinary close",
			args:     []string{wsURL(silent)},
			wantCode: 3,
			wantErr:  "selected subprotocol wsredirect.v1 but did not redirect",
			lines:    []string{"< close 1000 bye"},
		},
		{
			name:     "marker selected, then nothing",
			args:     []string{"-timeout", "300ms", wsURL(stuck)},
			wantCode: 4,
			wantErr:  "selected subprotocol wsredirect.v1 but did not redirect",
		},
		{
			name:     "target refuses",
			args:     []string{wsURL(toRefused)},
			wantCode: 4,
			wantErr:  "connection refused",
			lines:    []string{"< close 4307 → " + refused, "* hop 2: " + refused, "  no response ("},
		},
		{
			name:     "a cue that was not the server's",
			args:     []string{"-marker=false", "-settle", "5s", "-read", "2", wsURL(cuer)},
			wantCode: 0,
			lines: []string{
				"* hop 1: " + wsURL(cuer) + "/", "< 101 Switching Protocols (", "< close 1000 (a cue that was not the server's: dialled again)",
				"* hop 2: " + wsURL(cuer) + "/", "* connected to " + wsURL(cuer) + "/ after 0 redirect(s)", "< " + wire.Cue, "< welcome",
			},
		},
		{
			name:     "the application closes at once",
			args:     []string{"-marker=false", "-settle", "5s", wsURL(kicker)},
			wantCode: 0,
			lines:    []string{"* connected to " + wsURL(kicker) + "/ after 0 redirect(s)", "* closed by the server: websocket: close 1008 (policy violation): no"},
		},
		{
			name:     "the application closes at once, read asked",
			args:     []string{"-marker=false", "-settle", "5s", "-read", "1", wsURL(kicker)},
			wantCode: 1,
			wantErr:  "wsprobe: read: websocket: close 1008",
			lines:    []string{"* connected to " + wsURL(kicker) + "/ after 0 redirect(s)"},
		},
	}
	// A close that comes after a move, or without the marker, must arrive
	// within the settle time to be seen as a redirect: the cases give it a
	// generous one, which the close ends early.
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			probe(tc.args...).check(t, tc.wantCode, tc.wantErr, tc.lines...)
		})
	}
}

// TestSettleWaitsOnlyWhenUnsure: a handshake that answered the marker's
// offer needs no wait; one that could not costs the settle time, and no
// more once a message arrives.
func TestSettleWaitsOnlyWhenUnsure(t *testing.T) {
	app := echoNode(t, "app", "")
	start := time.Now()
	probe(wsURL(app)).check(t, 0, "", "* connected to")
	assert.Less(t, time.Since(start), time.Second)

	start = time.Now()
	probe("-marker=false", "-settle", "1500ms", wsURL(app)).check(t, 0, "", "* connected to")
	assert.GreaterOrEqual(t, time.Since(start), 1500*time.Millisecond)

	start = time.Now()
	probe("-marker=false", "-settle", "1m", "-timeout", "500ms", wsURL(app)).check(t, 0, "", "* connected to")
	assert.Less(t, time.Since(start), 5*time.Second, "-timeout bounds the settle time")
}

// TestSubprotocols: the marker goes after the application's subprotocols,
// whether they come from -subprotocol or from -H; the client offers it
// even with -marker=false, which only stops wsprobe trusting the answer.
func TestSubprotocols(t *testing.T) {
	var offered atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		offered.Store(websocket.Subprotocols(r))
		up := websocket.Upgrader{Subprotocols: []string{"chat"}}
		if c, err := up.Upgrade(w, r, nil); err == nil {
			c.Close()
		}
	}))
	defer srv.Close()

	probe("-subprotocol", "chat", wsURL(srv)).check(t, 0, "", "< Sec-Websocket-Protocol: chat")
	assert.Equal(t, []string{"chat", wire.Subprotocol}, offered.Load())
	probe("-H", "Sec-WebSocket-Protocol: chat, v2", "-subprotocol", "v3", wsURL(srv)).check(t, 0, "")
	assert.Equal(t, []string{"v3", "chat", "v2", wire.Subprotocol}, offered.Load())
	probe("-marker=false", "-settle", "1ms", wsURL(srv)).check(t, 0, "")
	assert.Equal(t, []string{wire.Subprotocol}, offered.Load())
}

// TestServerTextEscaped: what a server sends never reaches the terminal as
// control characters.
func TestServerTextEscaped(t *testing.T) {
	const nasty = "\x1b[2J\x1b]0;pwned\x07\r\u009b31m\u202egnp.exe"
	const shown = `\x1b[2J\x1b]0;pwned\x07\r\u009b31m\u202egnp.exe`
	app := echoNode(t, "app", nasty)
	// Go's parser refuses C0 controls in headers but lets C1 controls,
	// bidi overrides and bytes that are not UTF-8 through.
	refused := closedAddr(t)
	headerNasty := refused + "\u009b31m\u202e\xff"
	headerShown := refused + `\u009b31m\u202e\xff`
	viaLocation := rawServer(t, "HTTP/1.1 307 Temporary Redirect\r\nLocation: "+headerNasty+"\r\nContent-Length: 0\r\n\r\n")
	c0InLocation := rawServer(t, "HTTP/1.1 307 Temporary Redirect\r\nLocation: ws://x/\x1b[2J\x07\r\nContent-Length: 0\r\n\r\n")
	closeTarget := closer(t, true, func(c *websocket.Conn, r *http.Request) { wstest.CloseRedirect(c, "ws://x/"+nasty) })
	closeReason := closer(t, false, func(c *websocket.Conn, r *http.Request) {
		wstest.CloseWith(c, "", websocket.CloseGoingAway, nasty)
	})
	header := rawUpgrader(t, "X-Evil: "+headerNasty+"\r\n")

	tests := []struct {
		name  string
		args  []string
		lines []string
		err   string
	}{
		{name: "message", args: []string{"-read", "1", wsURL(app)}, lines: []string{"< " + shown + "\n"}},
		{name: "sent message echoed", args: []string{"-read", "2", "-send", "a\x1bb", wsURL(app)}, lines: []string{`> a\x1bb`, "< app: a\\x1bb\n"}},
		{name: "Location", args: []string{wsURL(viaLocation)}, lines: []string{"< Location: " + headerShown + "\n"}, err: "connection refused"},
		{name: "C0 in Location", args: []string{wsURL(c0InLocation)}, err: `\x1b[2J\a`},
		{name: "close-code target", args: []string{wsURL(closeTarget)}, lines: []string{"< close 4307 → ws://x/" + shown + "\n"}, err: "bad Location"},
		{name: "close reason", args: []string{"-marker=false", "-settle", "5s", "-read", "1", wsURL(closeReason)}, err: "websocket: close 1001 (going away): " + shown + "\n"},
		{name: "response header", args: []string{wsURL(header)}, lines: []string{"< X-Evil: " + headerShown + "\n"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := probe(tc.args...)
			r.check(t, r.code, tc.err, tc.lines...)
			assert.Empty(t, controls(r.stdout), "stdout:\n%s", r.stdout)
			assert.Empty(t, controls(r.stderr), "stderr:\n%s", r.stderr)
		})
	}
}

// rawServer answers every request with response, byte for byte.
func rawServer(t *testing.T, response string) *httptest.Server {
	t.Helper()
	return rawListener(t, func(c net.Conn, br *bufio.Reader, r *http.Request) { c.Write([]byte(response)) })
}

// rawListener serves each request with fn on a bare TCP listener, for
// responses net/http and gorilla would not send.
func rawListener(t *testing.T, fn func(c net.Conn, br *bufio.Reader, r *http.Request)) *httptest.Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if r, err := http.ReadRequest(br); err == nil {
					fn(c, br, r)
				}
			}()
		}
	}()
	return &httptest.Server{URL: "http://" + l.Addr().String()}
}

// rawUpgrader completes WebSocket handshakes with extra, raw header lines,
// which gorilla's Upgrader would clean, and then holds the connection.
func rawUpgrader(t *testing.T, extra string) *httptest.Server {
	t.Helper()
	return rawListener(t, func(c net.Conn, br *bufio.Reader, r *http.Request) {
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n" + extra + "\r\n"))
		br.WriteTo(io.Discard)
	})
}

// controls returns the control and format characters in s other than
// newline, and the bytes that are not UTF-8.
func controls(s string) []rune {
	var found []rune
	for i, r := range s {
		if r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD") || r != '\n' && (unicode.IsControl(r) || unicode.Is(unicode.Cf, r)) {
			found = append(found, r)
		}
	}
	return found
}
