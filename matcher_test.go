package wsredirect

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
)

func upgradeRequest() *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://chat.example.com/rooms/42", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	return r
}

func TestHTTP1Upgrade(t *testing.T) {
	tests := []struct {
		name string
		edit func(r *http.Request)
		want bool
	}{
		{"canonical", func(r *http.Request) {}, true},
		{"lower case values", func(r *http.Request) {
			r.Header.Set("Connection", "upgrade")
			r.Header.Set("Upgrade", "WEBSOCKET")
		}, true},
		{"connection list", func(r *http.Request) { r.Header.Set("Connection", "keep-alive, Upgrade") }, true},
		{"list with tabs and empty elements", func(r *http.Request) { r.Header.Set("Connection", ",\tkeep-alive ,, Upgrade\t,") }, true},
		{"token on second header line", func(r *http.Request) {
			r.Header["Connection"] = []string{"keep-alive", "Upgrade"}
		}, true},
		{"upgrade list", func(r *http.Request) { r.Header.Set("Upgrade", "h2c, websocket") }, true},
		{"HTTP/2.0 is not RFC 6455", func(r *http.Request) { r.ProtoMajor, r.ProtoMinor = 2, 0 }, false},
		{"HTTP/1.0", func(r *http.Request) { r.ProtoMinor = 0 }, false},
		{"POST", func(r *http.Request) { r.Method = http.MethodPost }, false},
		{"no Connection", func(r *http.Request) { r.Header.Del("Connection") }, false},
		{"no Upgrade", func(r *http.Request) { r.Header.Del("Upgrade") }, false},
		{"Connection close", func(r *http.Request) { r.Header.Set("Connection", "close") }, false},
		{"longer token Upgrade-Insecure", func(r *http.Request) { r.Header.Set("Connection", "Upgrade-Insecure") }, false},
		{"substring upgrades", func(r *http.Request) { r.Header.Set("Connection", "upgrades") }, false},
		{"versioned websocket/13", func(r *http.Request) { r.Header.Set("Upgrade", "websocket/13") }, false},
		{"malformed line x;y, Upgrade", func(r *http.Request) { r.Header.Set("Connection", "x;y, Upgrade") }, false},
		{"malformed line then good line", func(r *http.Request) {
			r.Header["Connection"] = []string{"x;y, Upgrade", "Upgrade"}
		}, true},
		{"quoted token", func(r *http.Request) { r.Header.Set("Upgrade", `"websocket"`) }, false},
		{"space inside token", func(r *http.Request) { r.Header.Set("Upgrade", "web socket") }, false},
		{"empty values", func(r *http.Request) {
			r.Header["Connection"] = []string{""}
			r.Header["Upgrade"] = []string{""}
		}, false},
		{"non-ASCII", func(r *http.Request) { r.Header.Set("Upgrade", "websocket\xff") }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := upgradeRequest()
			tc.edit(r)
			assert.Equal(t, tc.want, isHTTP1Upgrade(r))
			assert.Equal(t, tc.want, IsUpgrade(r))
		})
	}
}

func TestExtendedConnect(t *testing.T) {
	connect := func() *http.Request {
		r := httptest.NewRequest(http.MethodConnect, "https://chat.example.com/rooms/42", nil)
		r.ProtoMajor, r.ProtoMinor = 2, 0
		r.Header[":protocol"] = []string{"websocket"}
		return r
	}
	tests := []struct {
		name string
		edit func(r *http.Request)
		want bool
	}{
		{"extended CONNECT", func(r *http.Request) {}, true},
		{"protocol case", func(r *http.Request) { r.Header[":protocol"] = []string{"WebSocket"} }, true},
		{"other protocol", func(r *http.Request) { r.Header[":protocol"] = []string{"webtransport"} }, false},
		{"no protocol: plain CONNECT", func(r *http.Request) { delete(r.Header, ":protocol") }, false},
		{"two protocols", func(r *http.Request) { r.Header[":protocol"] = []string{"websocket", "websocket"} }, false},
		{"HTTP/1.1 CONNECT", func(r *http.Request) { r.ProtoMajor, r.ProtoMinor = 1, 1 }, false},
		{"HTTP/2 GET", func(r *http.Request) { r.Method = http.MethodGet }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := connect()
			tc.edit(r)
			assert.Equal(t, tc.want, isExtendedConnect(r))
			assert.Equal(t, tc.want, IsUpgrade(r))
		})
	}
}

// FuzzListHasToken checks the token-list parser against a slow, obviously
// correct reading of RFC 9110 §5.6.1 and never panics.
func FuzzListHasToken(f *testing.F) {
	for _, s := range []string{"Upgrade", "keep-alive, Upgrade", "x;y, Upgrade", ",,upgrade ,", "Upgrade-Insecure", "\tUPGRADE\t", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		assert.Equal(t, slowListHasToken(s, "upgrade"), listHasToken(s, "upgrade"), "%q", s)
	})
}

func slowListHasToken(s, token string) bool {
	found := false
	for _, elem := range strings.Split(s, ",") {
		elem = strings.Trim(elem, " \t")
		for i := 0; i < len(elem); i++ {
			if listClass[elem[i]] != classToken {
				return false
			}
		}
		if strings.EqualFold(elem, token) && len(elem) == len(token) {
			found = true
		}
	}
	return found
}

// TestDetectionAgreesWithGorilla pins that we accept what gorilla's upgrader
// would go on to accept, so the middleware never redirects a request the
// app's upgrader would have rejected, and vice versa for well-formed ones.
func TestDetectionAgreesWithGorilla(t *testing.T) {
	for _, conn := range []string{"Upgrade", "keep-alive, Upgrade", "upgrade,close", "x;y, Upgrade", "Upgrade-Insecure", ""} {
		for _, up := range []string{"websocket", "WebSocket", "h2c, websocket", "websocket/13", ""} {
			r := upgradeRequest()
			r.Header.Set("Connection", conn)
			r.Header.Set("Upgrade", up)
			assert.Equal(t, websocket.IsWebSocketUpgrade(r), isHTTP1Upgrade(r), "Connection %q, Upgrade %q", conn, up)
		}
	}
}
