package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsredirect/wsredirect/internal/testtool"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect"
)

// nodeEcho upgrades and answers each message with the node's name and the
// request URI, so the Node client's output says where it landed.
func nodeEcho(name string) http.Handler {
	var up websocket.Upgrader
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if c.WriteMessage(mt, []byte(name+" "+r.URL.RequestURI()+": "+string(p))) != nil {
				return
			}
		}
	})
}

// requireNodeWS skips unless node and the npm package ws are installed.
func requireNodeWS(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join("node", "node_modules", "ws", "package.json"))
	}
	if err != nil {
		testtool.Missing(t, fmt.Sprintf("run `npm ci --prefix e2e/node` (needs Node.js 20+): %v", err))
	}
	return node
}

// TestNodeWSFollowsMiddlewareRedirect checks the claim that Node's ws
// follows the middleware's 307 when asked to (followRedirects): node A
// sends /rooms/* to node B, and the Node client ends up talking to B.
func TestNodeWSFollowsMiddlewareRedirect(t *testing.T) {
	node := requireNodeWS(t)

	b := httptest.NewServer(nodeEcho("B"))
	defer b.Close()
	bURL := "ws" + strings.TrimPrefix(b.URL, "http")
	mw, err := wsredirect.New(wsredirect.Options{
		Rules: []wsredirect.Rule{wsredirect.Path(bURL, "/rooms/*")},
	})
	require.NoError(t, err)
	a := httptest.NewServer(mw.Handler(nodeEcho("A")))
	defer a.Close()
	aURL := "ws" + strings.TrimPrefix(a.URL, "http")

	tests := []struct {
		name, path, wantReply, wantURL string
	}{
		{"redirected to B", "/rooms/42?user=ann", "B /rooms/42?user=ann: ping", bURL + "/rooms/42?user=ann"},
		{"served by A", "/lobby", "A /lobby: ping", aURL + "/lobby"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, node, filepath.Join("node", "dial.mjs"), aURL+tc.path, "ping").CombinedOutput()
			require.NoError(t, err, "%s", out)
			assert.Equal(t, "reply: "+tc.wantReply+"\nurl: "+tc.wantURL+"\n", string(out))
		})
	}
}
