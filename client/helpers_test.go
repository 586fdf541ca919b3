package client_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect/client"
)

// wsURL turns an httptest server's base URL into its ws or wss URL.
func wsURL(srv *httptest.Server, path string) string {
	return "ws" + strings.TrimPrefix(srv.URL, "http") + path
}

// node is a test server that upgrades and, once a message arrives, answers
// "<name> <request URI>: <message>" so a test sees where it landed and
// with what query.
type node struct {
	*httptest.Server
	name  string
	greet bool // send "<name> <request URI>" on connect

	mu      sync.Mutex
	headers []http.Header // request headers of every upgrade, in order
}

// startNode starts a node; tls selects httptest.NewTLSServer. Wrap, when
// set, puts middleware in front of the upgrader.
func startNode(t *testing.T, name string, tls bool, wrap func(http.Handler) http.Handler) *node {
	t.Helper()
	return newNode(t, &node{name: name}, tls, wrap)
}

// startGreeter starts a node that greets each connection first, so a
// client that only reads learns where it landed.
func startGreeter(t *testing.T, name string, tls bool, wrap func(http.Handler) http.Handler) *node {
	t.Helper()
	return newNode(t, &node{name: name, greet: true}, tls, wrap)
}

func newNode(t *testing.T, n *node, tls bool, wrap func(http.Handler) http.Handler) *node {
	var h http.Handler = http.HandlerFunc(n.serve)
	if wrap != nil {
		h = wrap(h)
	}
	if tls {
		n.Server = httptest.NewTLSServer(h)
	} else {
		n.Server = httptest.NewServer(h)
	}
	t.Cleanup(n.Close)
	return n
}

var upgrader = websocket.Upgrader{}

func (n *node) serve(w http.ResponseWriter, r *http.Request) {
	h := r.Header.Clone()
	h.Set("Host", r.Host) // net/http moves it out of the header
	n.mu.Lock()
	n.headers = append(n.headers, h)
	n.mu.Unlock()
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	if n.greet && c.WriteMessage(websocket.TextMessage, []byte(n.name+" "+r.URL.RequestURI())) != nil {
		return
	}
	for {
		mt, p, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(mt, []byte(n.name+" "+r.URL.RequestURI()+": "+string(p))); err != nil {
			return
		}
	}
}

// lastHeader returns the request header of the node's latest upgrade.
func (n *node) lastHeader(t *testing.T) http.Header {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	require.NotEmpty(t, n.headers, "%s saw no upgrade", n.name)
	return n.headers[len(n.headers)-1]
}

// redirectTo answers every request with status and Location loc(r).
func redirectTo(t *testing.T, status int, loc func(r *http.Request) string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", loc(r))
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// echo sends msg on c and returns the reply.
func echo(t *testing.T, c *websocket.Conn, msg string) string {
	t.Helper()
	require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte(msg)))
	_, p, err := c.ReadMessage()
	require.NoError(t, err)
	return string(p)
}

// trusting returns a TLS config that trusts httptest's certificate, which
// every httptest TLS server shares.
func trusting(srv *httptest.Server) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return &tls.Config{RootCAs: pool}
}

// statuses lists the hops' statuses, the shape most assertions want.
func statuses(hops []client.Hop) []int {
	out := make([]int, len(hops))
	for i, h := range hops {
		out[i] = h.Status
	}
	return out
}

// credentialNodes starts the two nodes the credential tests dial: a
// redirects /same to /end on itself, /cross to b's /end, and /back via b's
// /bounce to its own /end.
func credentialNodes(t *testing.T) (a, b *node) {
	t.Helper()
	var aBase atomic.Value
	b = startNode(t, "B", false, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/bounce" {
				w.Header().Set("Location", aBase.Load().(string)+"/end")
				w.WriteHeader(http.StatusTemporaryRedirect)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	a = startNode(t, "A", false, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			loc := ""
			switch r.URL.Path {
			case "/same":
				loc = "/end"
			case "/cross":
				loc = wsURL(b.Server, "/end")
			case "/back":
				loc = wsURL(b.Server, "/bounce")
			default:
				next.ServeHTTP(w, r)
				return
			}
			w.Header().Set("Location", loc)
			w.WriteHeader(http.StatusTemporaryRedirect)
		})
	})
	aBase.Store(wsURL(a.Server, ""))
	return a, b
}
