package wsredirect

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect/wire"
)

// TestMoveConns drains a node with live connections and checks each client
// is closed with a redirect to the owner of its key without this node,
// keeping its path and query, and that connections stay when nothing moves.
func TestMoveConns(t *testing.T) {
	clock := &fakeClock{}
	mw := shardMiddleware(t, "wss://b.example.com", abc, clock)
	ring := mw.State().fleet
	withoutB, err := newFleet([]Member{abc[0], abc[2]}, nil, nil)
	require.NoError(t, err)
	keys := keysOwnedBy(t, ring, "b", 12)

	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		untrack := mw.Track(r.URL.Query().Get("room"), c)
		defer untrack()
		defer c.Close()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	defer srv.Close()

	conns := make([]*websocket.Conn, len(keys))
	for i, k := range keys {
		c, _, err := websocket.DefaultDialer.Dial(wsURL(srv)+"/rooms/"+k+"?room="+k+"&token=secret", nil)
		require.NoError(t, err)
		defer c.Close()
		conns[i] = c
	}
	require.Eventually(t, func() bool { return mw.Tracked() == len(keys) }, 5*time.Second, 5*time.Millisecond)

	moved, err := mw.MoveConns(context.Background(), MoveOptions{})
	require.NoError(t, err)
	assert.Zero(t, moved, "not draining and this node owns every key: nothing moves")

	mw.drainSelf(t, 0)
	moved, err = mw.MoveConns(context.Background(), MoveOptions{Batch: 5, Interval: 2 * time.Millisecond})
	require.NoError(t, err)
	assert.Equal(t, len(keys), moved)
	for i, c := range conns {
		ce, _ := readClose(t, c)
		require.Equal(t, wire.CloseRedirect, ce.Code)
		current := wsURL(srv) + "/rooms/" + keys[i] + "?room=" + keys[i] + "&token=secret"
		got, ok := wire.ParseRedirect(ce.Text, "", current)
		require.True(t, ok)
		owner := withoutB.ringOwner(keys[i]).URL
		assert.Equal(t, fmt.Sprintf("%s/rooms/%s?room=%s&token=secret", owner, keys[i], keys[i]), got)
	}
	assert.Eventually(t, func() bool { return mw.Tracked() == 0 }, 5*time.Second, 5*time.Millisecond, "apps see the close and untrack")

	solo := shardMiddleware(t, "wss://b.example.com", []Member{abc[1]}, clock)
	_, err = solo.MoveConns(context.Background(), MoveOptions{})
	assert.NoError(t, err)
	_, err = MustNew(Options{Rules: []Rule{Path("wss://x.example.com", "/*")}}).MoveConns(context.Background(), MoveOptions{})
	assert.ErrorContains(t, err, "wsredirect: MoveConns: no members")
}
