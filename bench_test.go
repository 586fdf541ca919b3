package wsredirect

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// discardWriter is a ResponseWriter reused across iterations, as a server
// reuses its per-connection buffers, so figures show the middleware's own
// allocations rather than a recorder's.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header               { return w.h }
func (w *discardWriter) WriteHeader(code int)              { w.code = code }
func (w *discardWriter) Write(p []byte) (int, error)       { return len(p), nil }
func (w *discardWriter) WriteString(s string) (int, error) { return len(s), nil }
func (w *discardWriter) reset()                            { clear(w.h) }

var nop = http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})

func browserishGet() *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://chat.example.com/static/app.js?v=3", nil)
	r.Header.Set("Accept", "*/*")
	r.Header.Set("Accept-Encoding", "gzip, deflate, br")
	r.Header.Set("Accept-Language", "en-GB,en;q=0.9")
	r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0")
	r.Header.Set("Connection", "keep-alive")
	r.Header.Set("Cookie", "session=abc123")
	return r
}

func benchServe(b *testing.B, h http.Handler, r *http.Request) {
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		h.ServeHTTP(w, r)
	}
}

// BenchmarkWithout is the bare handler: every other figure reads as overhead
// over it.
func BenchmarkWithout(b *testing.B) {
	benchServe(b, nop, browserishGet())
}

// BenchmarkPassthrough measures a request that is not an upgrade going
// through the middleware to the handler.
func BenchmarkPassthrough(b *testing.B) {
	mw := MustNew(Options{Rules: []Rule{Host("wss://b.example.net", "chat.example.com")}})
	benchServe(b, mw.Handler(nop), browserishGet())
}

// BenchmarkHeaderLookup is the floor of the passthrough: the one header map
// lookup that tells an ordinary GET from an upgrade.
func BenchmarkHeaderLookup(b *testing.B) {
	r := browserishGet()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := r.Header["Upgrade"]; ok {
			b.Fatal("upgrade")
		}
	}
}

// BenchmarkDetect compares full RFC 6455 upgrade detection with gorilla's
// IsWebSocketUpgrade on browser-shaped upgrade requests: Chromium sends
// "Connection: Upgrade", Firefox "Connection: keep-alive, Upgrade".
func BenchmarkDetect(b *testing.B) {
	for _, browser := range []struct{ name, connection string }{
		{"chromium", "Upgrade"},
		{"firefox", "keep-alive, Upgrade"},
	} {
		r := upgradeRequest()
		for k, v := range browserishGet().Header {
			if k != "Connection" {
				r.Header[k] = v
			}
		}
		r.Header.Set("Connection", browser.connection)
		r.Header.Set("Origin", "https://chat.example.com")
		b.Run(browser.name+"/wsredirect", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !IsUpgrade(r) {
					b.Fatal("not detected")
				}
			}
		})
		b.Run(browser.name+"/gorilla", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !websocket.IsWebSocketUpgrade(r) {
					b.Fatal("not detected")
				}
			}
		})
	}
}

// BenchmarkRedirect measures a whole redirect decided by a host or a path
// rule and written to a reusable ResponseWriter.
func BenchmarkRedirect(b *testing.B) {
	cases := []struct {
		name string
		rule Rule
		url  string
	}{
		{"host", Host("wss://b.example.net", "other.example.com", "*.example.com"), "http://eu.chat.example.com/rooms/42?token=abc"},
		{"path", Path("wss://b.example.net", "/rooms/*"), "http://chat.example.com/rooms/42?token=abc"},
		{"path-rewrite", PathRewrite("wss://b.example.net", "/rooms/*", "/v2/rooms"), "http://chat.example.com/rooms/42?token=abc"},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			mw := MustNew(Options{Rules: []Rule{tc.rule}})
			benchServe(b, mw.Handler(nop), upgradeTo(tc.url))
		})
	}
	b.Run("shard/n=64", func(b *testing.B) {
		members := make([]Member, 64)
		for i := range members {
			members[i] = Member{ID: fmt.Sprintf("node-%d", i), URL: fmt.Sprintf("wss://n%d.example.com", i)}
		}
		mw := MustNew(Options{Self: members[0].URL, Members: members, Rules: []Rule{Shard(QueryKey("room"))}})
		f := mw.State().fleet
		key := "room-1"
		for i := 0; f.ringOwner(key).ID == members[0].ID; i++ {
			key = fmt.Sprintf("room-%d", i)
		}
		benchServe(b, mw.Handler(nop), upgradeTo("http://chat.example.com/rooms?room="+key+"&token=abc"))
	})
}

// BenchmarkAdversarialConnection measures detection against a 1 KiB
// Connection header of commas and spaces ending in the token, the worst a
// client can make the token scan do within one line.
func BenchmarkAdversarialConnection(b *testing.B) {
	r := upgradeRequest()
	r.Header.Set("Connection", strings.Repeat(", ", 507)+"Upgrade")
	b.Run("wsredirect", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			IsUpgrade(r)
		}
	})
	b.Run("gorilla", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			websocket.IsWebSocketUpgrade(r)
		}
	})
}
