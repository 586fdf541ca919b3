package wsredirect

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResolveHandler(t *testing.T) {
	mw := MustNew(Options{
		Self:    "wss://a.example.com",
		Members: abc,
		Rules: []Rule{
			Path("wss://legacy.example.com", "/old/*"),
			Path("wss://a.example.com", "/full/*"),
			NewRule("closed", func(r *http.Request, s *State) Decision {
				if strings.HasPrefix(r.URL.Path, "/closed") {
					return Decision{Action: Refuse, RetryAfter: 4 * time.Second}
				}
				return Decision{}
			}),
		},
	})
	mux := http.NewServeMux()
	mux.Handle("/resolve/", http.StripPrefix("/resolve", mw.ResolveHandler()))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		path, body string
		status     int
	}{
		{"/resolve/old/rooms/1?t=x", `{"url":"wss://legacy.example.com/old/rooms/1?t=x"}`, 200},
		{"/resolve/full/1", `{"url":"wss://a.example.com/full/1"}`, 200},
		{"/resolve/elsewhere", `{"url":null}`, 200},
		{"/resolve/closed", `{"retryAfter":4}`, 503},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tc.path)
			require.NoError(t, err)
			defer resp.Body.Close()
			var got, want any
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
			require.NoError(t, json.Unmarshal([]byte(tc.body), &want))
			assert.Equal(t, want, got)
			assert.Equal(t, tc.status, resp.StatusCode)
			assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		})
	}
	resp, err := http.Post(srv.URL+"/resolve/x", "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

func TestResolveCORS(t *testing.T) {
	mw := MustNew(Options{Origins: []string{"https://app.example.com"}, Rules: []Rule{Path("wss://b.example.com", "/*")}})
	for origin, allowed := range map[string]bool{"https://app.example.com": true, "https://evil.example.org": false} {
		r := httptest.NewRequest(http.MethodGet, "http://api.example.com/rooms/1", nil)
		r.Header.Set("Origin", origin)
		w := httptest.NewRecorder()
		mw.ResolveHandler().ServeHTTP(w, r)
		want := ""
		if allowed {
			want = origin
		}
		assert.Equal(t, want, w.Header().Get("Access-Control-Allow-Origin"), origin)
	}
}

// TestRetryAfterClamped: "forever" (the largest Duration) is sent as a day,
// in the header, the resolve answer and the close reason alike (regression:
// Retry-After: -9223372035).
func TestRetryAfterClamped(t *testing.T) {
	forever := NewRule("closed", func(*http.Request, *State) Decision {
		return Decision{Action: Refuse, RetryAfter: time.Duration(1<<63 - 1)}
	})
	mw := MustNew(Options{Rules: []Rule{forever}})
	w := run(t, mw, upgradeTo("http://a.example.com/x"))
	assert.Equal(t, http.StatusServiceUnavailable, w.Code)
	assert.Equal(t, "86400", w.Header().Get("Retry-After"))

	rw := httptest.NewRecorder()
	mw.ResolveHandler().ServeHTTP(rw, httptest.NewRequest(http.MethodGet, "http://a.example.com/x", nil))
	assert.Equal(t, "86400", rw.Header().Get("Retry-After"))
	assert.JSONEq(t, `{"retryAfter":86400}`, rw.Body.String())
}
