package e2e

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"

	"github.com/wsredirect/wsredirect"
)

const xconnectChild = "WSREDIRECT_XCONNECT_CHILD"

// TestExtendedConnect proves RFC 8441 end to end with a real HTTP/2 client.
// Go's server accepts extended CONNECT only when GODEBUG=http2xconnect=1 is
// in the environment at process start, so the test re-runs itself in a
// child process with it. net/http's own client refuses the :protocol
// pseudo-header, so the client is x/net/http2's Transport.
func TestExtendedConnect(t *testing.T) {
	if os.Getenv(xconnectChild) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestExtendedConnect$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), xconnectChild+"=1", "GODEBUG=http2xconnect=1")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "child:\n%s", out)
		require.Contains(t, string(out), "--- PASS: TestExtendedConnect", "child ran the test:\n%s", out)
		t.Logf("child:\n%s", out)
		return
	}

	mw := wsredirect.MustNew(wsredirect.Options{Rules: []wsredirect.Rule{
		wsredirect.Path("wss://b.example.com", "/legacy/*").WithStatus(http.StatusFound),
	}})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 || !wsredirect.IsUpgrade(r) {
			http.Error(w, "not an extended CONNECT", http.StatusBadRequest)
			return
		}
		// An echoing tunnel stands in for the app's RFC 8441 upgrader.
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		buf := make([]byte, 512)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	})
	mux := http.NewServeMux()
	mux.Handle("/legacy/", mw.Handler(app))
	mux.Handle("/rooms/", mw.Handler(app))
	mux.Handle("GET /get-only/{id}", mw.Handler(app))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}}
	defer tr.CloseIdleConnections()

	connect := func(path string, body io.Reader) *http.Response {
		req, err := http.NewRequest(http.MethodConnect, srv.URL+path, body)
		require.NoError(t, err)
		req.Header.Set(":protocol", "websocket")
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		require.Equal(t, 2, resp.ProtoMajor)
		return resp
	}

	t.Run("redirect keeps the method", func(t *testing.T) {
		resp := connect("/legacy/rooms/1?t=x", nil)
		defer resp.Body.Close()
		assert.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode, "302 configured, 307 sent for CONNECT")
		assert.Equal(t, "wss://b.example.com/legacy/rooms/1?t=x", resp.Header.Get("Location"))
		assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	})
	t.Run("no rule decides: the app gets the tunnel", func(t *testing.T) {
		pr, pw := io.Pipe()
		resp := connect("/rooms/1", pr)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		go pw.Write([]byte("hello over h2"))
		buf := make([]byte, len("hello over h2"))
		_, err := io.ReadFull(resp.Body, buf)
		require.NoError(t, err)
		assert.Equal(t, "hello over h2", string(buf))
		pw.Close()
	})
	t.Run("GET-only routes do not see CONNECT", func(t *testing.T) {
		resp := connect("/get-only/1", nil)
		defer resp.Body.Close()
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	})
}
