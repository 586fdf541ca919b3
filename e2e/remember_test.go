package e2e

import (
	"fmt"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/ring"
	"github.com/wsredirect/wsredirect/wire"
)

// TestBrowserRemembersRedirect (issue 13): a page redirected to a room's
// owner remembers it in sessionStorage, so after a reload its first dial
// goes to the owner, not through the entry node; when the room has moved
// on, the remembered node redirects once more and the memory follows.
func TestBrowserRemembersRedirect(t *testing.T) {
	browser := startChromium(t)
	page := newPage(t)
	f := newFleet(t, page.origin, wsredirect.ModeAuto)
	entry := f.nodes[0]
	// A room owned by another node, and by a third once that one drains.
	var room string
	var owner, next *node
	for i := 0; next == nil || owner == entry || next == entry; i++ {
		room = fmt.Sprintf("room-%d", i)
		owner = f.owner(room)
		next = f.nodeAt(f.ring.OwnerWithout(ring.Hash(room), f.index(owner)))
	}
	path := "/ws?room=" + room
	tab := openTab(t, browser, page)
	reload := func() {
		t.Helper()
		tab.do(chromedp.Reload())
		tab.poll(`window.ready === true && window.log.length === 0`)
	}

	tab.call("helper", entry.url+path, echo, map[string]any{})
	require.Equal(t, owner.name, tab.greeting(0).Node)
	assert.Equal(t, []string{"redirect", "open", "message"}, tab.types())
	assert.EqualValues(t, 1, entry.upgrades.Load())
	assert.Nil(t, evalJS[any](tab, `window.ws.remembered`))

	reload()
	tab.call("helper", entry.url+path, echo, map[string]any{})
	require.Equal(t, owner.name, tab.greeting(0).Node)
	assert.Equal(t, []string{"open", "message"}, tab.types(), "straight to the owner")
	assert.Equal(t, owner.url+path, tab.event("open", 0).URL)
	assert.Equal(t, owner.url+path, evalJS[string](tab, `window.ws.remembered`))
	assert.EqualValues(t, 1, entry.upgrades.Load(), "the entry node was not dialled again")

	// The owner drains: the room is the next owner's, and the remembered
	// node says so.
	f.drain(owner)
	reload()
	tab.call("helper", entry.url+path, echo, map[string]any{})
	require.Equal(t, next.name, tab.greeting(0).Node)
	assert.Equal(t, []string{"redirect", "open", "message"}, tab.types())
	assert.Equal(t, redirectDetail{From: owner.url + path, To: next.url + path, Code: wire.CloseRedirect}, *tab.event("redirect", 0).Detail)
	assert.EqualValues(t, 1, entry.upgrades.Load())

	reload()
	tab.call("helper", entry.url+path, echo, map[string]any{})
	require.Equal(t, next.name, tab.greeting(0).Node)
	assert.Equal(t, []string{"open", "message"}, tab.types(), "the memory followed")

	t.Run("rememberMs 0: through the entry node", func(t *testing.T) {
		reload()
		tab.call("helper", entry.url+path, echo, map[string]any{"rememberMs": 0})
		require.Equal(t, next.name, tab.greeting(0).Node)
		assert.Equal(t, []string{"redirect", "open", "message"}, tab.types())
		assert.EqualValues(t, 2, entry.upgrades.Load())
	})
}
