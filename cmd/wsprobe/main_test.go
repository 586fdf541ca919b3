package main

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wsredirect/wsredirect"
)

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

func TestProbe(t *testing.T) {
	bin := buildProbe(t)

	var up websocket.Upgrader
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, http.Header{"X-Node": {"b"}})
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(mt, append([]byte("b: "), p...))
		}
	}))
	defer b.Close()

	loop := httptest.NewUnstartedServer(nil)
	loop.Config.Handler = wsredirect.MustNew(wsredirect.Options{Rules: []wsredirect.Rule{
		wsredirect.PathRewrite("ws://"+loop.Listener.Addr().String(), "/ping/*", "/pong"),
		wsredirect.PathRewrite("ws://"+loop.Listener.Addr().String(), "/pong/*", "/ping"),
	}}).Handler(http.NotFoundHandler())
	loop.Start()
	defer loop.Close()

	a := httptest.NewServer(wsredirect.MustNew(wsredirect.Options{Rules: []wsredirect.Rule{
		wsredirect.Path(wsURL(b), "/rooms/*"),
	}}).Handler(http.NotFoundHandler()))
	defer a.Close()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := "ws://" + l.Addr().String() + "/"
	require.NoError(t, l.Close())

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
			name:     "loop",
			args:     []string{wsURL(loop) + "/ping/x"},
			wantCode: 3,
			wantLines: []string{
				"* hop 1: " + wsURL(loop) + "/ping/x",
				"* hop 2: " + wsURL(loop) + "/pong/x",
			},
			wantErr: "redirect loop",
		},
		{
			name:      "hop cap",
			args:      []string{"-max-hops", "0", wsURL(a) + "/rooms/7"},
			wantCode:  3,
			wantLines: []string{"* hop 1: " + wsURL(a) + "/rooms/7", "< 307 Temporary Redirect ("},
			wantErr:   "too many redirects",
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
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(bin, tc.args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tc.wantCode, code, "stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
			out := stdout.String()
			for _, line := range tc.wantLines {
				i := strings.Index(out, line)
				if !assert.GreaterOrEqual(t, i, 0, "missing %q in\n%s", line, stdout.String()) {
					break
				}
				out = out[i+len(line):]
			}
			assert.Contains(t, stderr.String(), tc.wantErr)
		})
	}
}
