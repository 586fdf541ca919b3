package wsredirect

// Round trips over loopback with real clients and servers.

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// echoNode is a WebSocket server that greets with its name and echoes.
func echoNode(t *testing.T, name string) *httptest.Server {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.WriteMessage(websocket.TextMessage, []byte(name+" "+r.URL.RequestURI()))
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(mt, msg)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func wsURL(srv *httptest.Server) string { return "ws" + strings.TrimPrefix(srv.URL, "http") }

func TestGorillaRoundTrip(t *testing.T) {
	b := echoNode(t, "node-b")
	mw := MustNew(Options{Rules: []Rule{Path(wsURL(b), "/rooms/*")}})
	a := httptest.NewServer(mw.Handler(http.NotFoundHandler()))
	defer a.Close()

	_, resp, err := websocket.DefaultDialer.Dial(wsURL(a)+"/rooms/42?token=s3cr%2Bt", nil)
	require.ErrorIs(t, err, websocket.ErrBadHandshake, "gorilla does not follow redirects")
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)
	assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	loc := resp.Header.Get("Location")
	assert.Equal(t, wsURL(b)+"/rooms/42?token=s3cr%2Bt", loc)

	c, _, err := websocket.DefaultDialer.Dial(loc, nil)
	require.NoError(t, err)
	defer c.Close()
	_, hello, err := c.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, "node-b /rooms/42?token=s3cr%2Bt", string(hello))
	require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte("ping")))
	_, echo, err := c.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, "ping", string(echo))
}

func TestCoderFollows(t *testing.T) {
	b := echoNode(t, "node-b")
	mw := MustNew(Options{Rules: []Rule{Path(wsURL(b), "/rooms/*")}})
	a := httptest.NewServer(mw.Handler(http.NotFoundHandler()))
	defer a.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := coder.Dial(ctx, wsURL(a)+"/rooms/7?x=1", nil)
	require.NoError(t, err)
	defer c.CloseNow()
	assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	_, hello, err := c.Read(ctx)
	require.NoError(t, err)
	assert.Equal(t, "node-b /rooms/7?x=1", string(hello))
}

// TestMounting pins where path parameters exist: chi fills URL params while
// routing, so a top-level r.Use runs before they exist and only middleware
// added with r.With (or inside a route) sees them; net/http's ServeMux sets
// PathValue before calling the handler it matched.
func TestMounting(t *testing.T) {
	byRoom := NewRule("room", func(r *http.Request, s *State) Decision {
		room := chi.URLParam(r, "room")
		if room == "" {
			room = r.PathValue("room")
		}
		if room == "" {
			return Decision{}
		}
		return Decision{Action: Redirect, Target: MustParseTarget("wss://" + room + ".rooms.example.com")}
	})
	mw := MustNew(Options{Rules: []Rule{byRoom}})
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "app") })

	top := chi.NewRouter()
	top.Use(mw.Handler)
	top.Get("/rooms/{room}", ok)

	with := chi.NewRouter()
	with.With(mw.Handler).Get("/rooms/{room}", ok)

	mux := http.NewServeMux()
	mux.Handle("GET /rooms/{room}", mw.Handler(ok))

	tests := []struct {
		name     string
		h        http.Handler
		location string
	}{
		{"chi top-level Use: no URL params yet", top, ""},
		{"chi With: URL params set", with, "wss://lobby.rooms.example.com/rooms/lobby"},
		{"ServeMux pattern: PathValue set", mux, "wss://lobby.rooms.example.com/rooms/lobby"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.h)
			defer srv.Close()
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/rooms/lobby", nil)
			require.NoError(t, err)
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			}}).Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, tc.location, resp.Header.Get("Location"))
		})
	}
}
