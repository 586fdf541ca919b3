package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"

	"github.com/wsredirect/wsredirect/wire"
)

// TestBrowserCaps drives the helper in Chromium against servers that try to
// keep it busy (issue 11): one that redirects every socket to itself after
// holding it open, one that asks for a wait longer than the helper's cap.
// js/helper.test.mjs checks the same limits in detail with a fake socket;
// this shows they hold with a real browser's WebSocket and timers.
func TestBrowserCaps(t *testing.T) {
	browser := startChromium(t)
	// Small waits, so the capped chain ends in well under a second.
	fast := map[string]any{"moveJitterMs": 1, "backoffMs": 1, "maxBackoffMs": 5}

	for _, tc := range []struct {
		name      string
		protocols []string
		options   map[string]any
		hold      time.Duration
	}{
		// The app's protocol is selected, so each socket is the app's at once.
		{"HopCapHoldsWhenEverySocketOpens/AppProtocol", echo, fast, 20 * time.Millisecond},
		// No marker: each socket is the app's once settleMs (50) has passed.
		{"HopCapHoldsWhenEverySocketOpens/NoProtocol", []string{}, fast, 150 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page := newPage(t)
			srv := newStubborn(t, echo, tc.hold, func(self string) (int, string) { return wire.CloseRedirect, "wsr1 " + self })
			tab := openTab(t, browser, page)

			tab.call("helper", srv.url, tc.protocols, tc.options)
			closed := tab.event("close", 0)

			assert.Equal(t, wire.CloseRedirect, closed.Code, "given up as for a redirect it will not follow")
			assert.Equal(t, "wsr1 "+srv.url, closed.Reason)
			types := tab.types()
			assert.Equal(t, []string{"error", "close"}, types[len(types)-2:])
			assert.Equal(t, 10, countType(types, "redirect"), "maxHops")
			if len(tc.protocols) > 0 {
				assert.Equal(t, 11, countType(types, "open"), "every socket was the app's")
			} else {
				assert.Positive(t, countType(types, "open"), "sockets counted as the app's")
			}
			assert.EqualValues(t, 11, srv.dials.Load(), "the first dial and ten redirects")
			time.Sleep(300 * time.Millisecond)
			assert.EqualValues(t, 11, srv.dials.Load(), "nothing dialled after giving up")
		})
	}

	t.Run("RetryLongerThanCapIsGivenUp", func(t *testing.T) {
		page := newPage(t)
		srv := newStubborn(t, []string{wire.Subprotocol}, 0, func(string) (int, string) { return wire.CloseRetry, "wsr1 retry=31" })
		tab := openTab(t, browser, page)

		start := time.Now()
		tab.call("helper", srv.url, echo, map[string]any{})
		closed := tab.event("close", 0)

		assert.Less(t, time.Since(start), 10*time.Second, "not waited for")
		assert.Equal(t, wire.CloseRetry, closed.Code)
		assert.Equal(t, "wsr1 retry=31", closed.Reason)
		assert.Equal(t, []string{"error", "close"}, tab.types())
		assert.EqualValues(t, 1, srv.dials.Load())
	})

	t.Run("ResolverRetryAfterPastTimerRangeIsNotWaited", func(t *testing.T) {
		page := newPage(t)
		var resolves atomic.Int32
		page.mux.HandleFunc("/resolve/", func(w http.ResponseWriter, r *http.Request) {
			resolves.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "9223372035")
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(map[string]int64{"retryAfter": 9223372035})
		})
		srv := newStubborn(t, []string{wire.Subprotocol}, 0, func(string) (int, string) { return wire.CloseRetry, "wsr1 retry=86400" })
		tab := openTab(t, browser, page)

		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("the resolver was asked %d times", resolves.Load())
			}
		})
		tab.call("helper", srv.url, echo, map[string]any{"resolve": "/resolve"})
		closed := tab.event("close", 0)

		assert.EqualValues(t, 1, resolves.Load(), "a wait past the cap is not retried early")
		assert.EqualValues(t, 1, srv.dials.Load(), "dialled instead, where the close code decides")
		assert.Equal(t, wire.CloseRetry, closed.Code)
		assert.Equal(t, []string{"error", "close"}, tab.types())
	})
}

// stubborn is a server that upgrades every request, selecting the first of
// protocols the client offers, holds the socket open for hold, then closes
// it with what end returns for its own URL.
type stubborn struct {
	url   string // ws://127.0.0.1:port/ws
	dials atomic.Int32
}

func newStubborn(t *testing.T, protocols []string, hold time.Duration, end func(self string) (int, string)) *stubborn {
	t.Helper()
	s := &stubborn{}
	up := websocket.Upgrader{Subprotocols: protocols, CheckOrigin: func(*http.Request) bool { return true }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.dials.Add(1)
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		time.Sleep(hold)
		code, reason := end(s.url)
		if c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second)) != nil {
			return
		}
		// Until the browser answers the close.
		c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s was dialled %d times", s.url, s.dials.Load())
		}
	})
	s.url = "ws" + srv.URL[len("http"):] + "/ws"
	return s
}

func countType(types []string, typ string) int {
	n := 0
	for _, ty := range types {
		if ty == typ {
			n++
		}
	}
	return n
}
