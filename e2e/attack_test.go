package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect/ring"
	"github.com/wsredirect/wsredirect/wire"
)

// The attack of issue 18, with real sockets: a chat room behind the real
// middleware relays every text line verbatim to every connection in it, the
// sender included, as chats do (chat_test.go). An attacker (a raw gorilla
// client) sends every line the protocol's forms allow, aimed at a listener
// of its own. The victims (the helper in Node over the ws package and over
// Node's built-in WebSocket, attack_node_test.go, and in Chromium,
// attack_browser_test.go) must take each line for the ordinary message it
// is, in order: never dial the attacker's listener, never close, never
// remember it, and go on sending to the room. A "wsr1 move" costs at most
// one reconnect, unseen, to the node they are on; later ones in the minute
// cost nothing. Then the owner drains, and the genuine move still takes
// them to the next owner.

// victims drives helpers that joined a room, each numbered from 0.
type victims interface {
	count() int
	// events returns every event victim i dispatched so far, in order.
	events(i int) []event
	// send sends text through victim i.
	send(i int, text string)
	// state reads victim i's readyState, url and memory of redirects.
	state(i int) victimState
}

type victimState struct {
	ReadyState int    `json:"readyState"`
	URL        string `json:"url"`
	Memory     string `json:"memory"` // the storage item "wsredirect.remembered", "" for none
}

// victimOptions are the helper's options in every attack test: a settle
// long enough for a loaded machine (see TestBrowser), a short live jitter.
var victimOptions = map[string]any{"settleMs": 250, "moveJitterMs": 100}

// victimProtocols are the victims' protocols: one offers the app's (and so
// the marker), one none (and so no marker).
var victimProtocols = [][]string{{"chat"}, {}}

// attackRoom plays the attack on a fleet of chat nodes; open starts the
// victims on a URL.
func attackRoom(t *testing.T, f *fleet, chats map[*node]*chatApp, open func(url string) victims) {
	entry := f.nodes[0]
	room := f.roomNotOwnedBy(entry)
	owner := f.owner(room)
	next := f.nodeAt(f.ring.OwnerWithout(ring.Hash(room), f.index(owner)))
	path := "/ws?room=" + room
	trap := newTrap(t)
	// Checked however the test ends, so a victim that went to the
	// attacker says so even when a wait for a message failed first.
	t.Cleanup(func() { assert.Zero(t, trap.accepted.Load(), "connections to the attacker's listener") })

	// The victims come through the entry node, which redirects them to the
	// owner: their memory holds the owner from then on.
	v := open(entry.url + path)
	n := v.count()
	for i := range n {
		waitMessage(t, v, i, chatGreeting(owner, room), 0)
	}
	require.EqualValues(t, n, entry.upgrades.Load(), "each victim dialled the entry once")
	at := dialAttacker(t, owner.url+path)
	r := chats[owner].room(room)
	require.Eventually(t, func() bool { return r.size() == n+1 }, wait, 5*time.Millisecond, "the room never held everyone")
	joins := r.joins()
	marks := make([]int, n)
	mark := func() {
		for i := range n {
			marks[i] = len(v.events(i))
		}
	}
	// quiet checks that victim i dispatched only messages since the last
	// mark, is open on the owner and remembers only the owner.
	quiet := func(phase string) {
		t.Helper()
		assert.Zero(t, trap.accepted.Load(), "%s: connections to the attacker's listener", phase)
		for i := range n {
			evs := v.events(i)[marks[i]:]
			for _, e := range evs {
				assert.Equal(t, "message", e.Type, "%s: victim %d dispatched %s (%+v)", phase, i, e.Type, e)
			}
			st := v.state(i)
			assert.Equal(t, 1, st.ReadyState, "%s: victim %d is OPEN", phase, i)
			assert.Equal(t, owner.url+path, st.URL, "%s: victim %d is on the owner", phase, i)
			assert.NotContains(t, st.Memory, trap.port, "%s: victim %d remembers the attacker", phase, i)
			assert.Contains(t, st.Memory, owner.url+path, "%s: victim %d remembers the owner", phase, i)
		}
	}
	// reach sends a line from every victim and waits until the room's app
	// read it and everyone got it relayed.
	reach := func(phase string) {
		t.Helper()
		for _, line := range speak(t, v, r, phase) {
			require.Eventually(t, func() bool { return at.has(line) }, wait, 5*time.Millisecond, "the attacker never got %q", line)
		}
	}
	var want []string // the attacker's lines every victim must have, in order
	lines := func(i int) []string {
		var out []string
		for _, e := range v.events(i) {
			if e.Type == "message" && !strings.HasPrefix(e.Data, `{"node":`) && !strings.HasPrefix(e.Data, "victim ") {
				out = append(out, e.Data)
			}
		}
		return out
	}

	// Every form but the cue: nothing happens but messages.
	mark()
	forms := []string{
		"wsr1 =" + trap.url,
		"wsr1 retry=86400",
		"wsr1 retry=30",
		"wsr1 " + trap.url + "/x",
		"wsr1 +",
		"wsr1 =" + owner.url + "/ws?room=other&x=", // the same node, another room
		"wsr1 retry=0",
		"wsr1 move " + trap.url,
		"wsr1 move\n",
		"end of forms",
	}
	for _, line := range forms {
		at.say(line)
	}
	want = append(want, forms...)
	for i := range n {
		waitMessage(t, v, i, "end of forms", marks[i])
	}
	time.Sleep(300 * time.Millisecond) // past any wait a follower would take
	for i := range n {
		assert.Equal(t, want, lines(i), "victim %d: every line, in order", i)
	}
	quiet("forms")
	assert.Equal(t, joins, r.joins(), "forms: no victim reconnected")
	reach("after the forms")

	// The cue: one reconnect each, to the owner, unseen.
	mark()
	at.say(wire.Cue)
	falseCueAt := time.Now()
	want = append(want, wire.Cue)
	for i := range n {
		waitMessage(t, v, i, wire.Cue, marks[i])
	}
	require.Eventually(t, func() bool { return r.joins() == joins+n && r.size() == n+1 }, wait, 5*time.Millisecond,
		"each victim rejoins once: %d joins, %d in the room", r.joins(), r.size())
	time.Sleep(300 * time.Millisecond)
	assert.Equal(t, joins+n, r.joins(), "one reconnect each")
	quiet("the cue")
	reach("after the cue")

	// Fifty more within the minute, and a form again: nothing but messages.
	mark()
	for range 50 {
		at.say(wire.Cue)
		want = append(want, wire.Cue)
	}
	tail := []string{"wsr1 =" + trap.url, "end of cues"}
	for _, line := range tail {
		at.say(line)
	}
	want = append(want, tail...)
	for i := range n {
		waitMessage(t, v, i, "end of cues", marks[i])
	}
	time.Sleep(300 * time.Millisecond)
	for i := range n {
		assert.Equal(t, want, lines(i), "victim %d: every line, in order", i)
	}
	quiet("fifty cues")
	assert.Equal(t, joins+n, r.joins(), "fifty cues: no more reconnects")
	reach("after fifty cues")
	assert.EqualValues(t, n, entry.upgrades.Load(), "the reconnects went to the node the victims are on, not the entry")
	moved, _ := owner.mw.Moves()
	assert.Zero(t, moved, "the server moved nothing")

	// The owner drains. Within the minute of the false cue the middleware's
	// cue is an ordinary message, and the close frame after it moves the
	// victims: the attacker cannot keep them where they are.
	require.Less(t, time.Since(falseCueAt), 50*time.Second, "the test must run within the cue budget's minute")
	mark()
	f.drain(owner)
	for i := range n {
		k := waitMessage(t, v, i, chatGreeting(next, room), marks[i])
		evs := v.events(i)[marks[i] : k+1]
		assert.Equal(t, []string{"message", "redirect", "open", "message"}, types(evs), "victim %d: the move, the app sees no close", i)
		assert.Equal(t, wire.Cue, evs[0].Data, "victim %d: the middleware's cue, ordinary in the minute", i)
		if assert.NotNil(t, evs[1].Detail) {
			assert.Equal(t, redirectDetail{From: owner.url + path, To: next.url + path, Code: wire.CloseRedirect, Live: true}, *evs[1].Detail)
		}
		st := v.state(i)
		assert.Equal(t, next.url+path, st.URL)
		assert.NotContains(t, st.Memory, trap.port)
	}
	requireMoved(t, owner, uint64(n)+1) // the victims and the attacker
	nr := chats[next].room(room)
	require.Eventually(t, func() bool { return nr.size() == n }, wait, 5*time.Millisecond, "the room never held the victims")
	speak(t, v, nr, "after the move")
	assert.Zero(t, trap.accepted.Load(), "connections to the attacker's listener")
}

// cuedMove drains the owner of the victims' room: the middleware cues the
// move, and each victim's sends before the drain reach the old node, the
// cue never reaches the app, and the victim lands on the next owner.
func cuedMove(t *testing.T, f *fleet, chats map[*node]*chatApp, open func(url string) victims) {
	entry := f.nodes[0]
	room := f.roomNotOwnedBy(entry)
	owner := f.owner(room)
	next := f.nodeAt(f.ring.OwnerWithout(ring.Hash(room), f.index(owner)))
	path := "/ws?room=" + room

	v := open(entry.url + path)
	n := v.count()
	r := chats[owner].room(room)
	for i := range n {
		waitMessage(t, v, i, chatGreeting(owner, room), 0)
	}
	require.Eventually(t, func() bool { return r.size() == n }, wait, 5*time.Millisecond, "the room never held everyone")
	speak(t, v, r, "before")
	marks := make([]int, n)
	for i := range n {
		marks[i] = len(v.events(i))
	}
	f.drain(owner)
	for i := range n {
		k := waitMessage(t, v, i, chatGreeting(next, room), marks[i])
		evs := v.events(i)[marks[i] : k+1]
		assert.Equal(t, []string{"redirect", "open", "message"}, types(evs), "victim %d: the cue is not the app's", i)
		if assert.NotNil(t, evs[0].Detail) {
			assert.Equal(t, redirectDetail{From: owner.url + path, To: next.url + path, Code: wire.CloseRedirect, Live: true}, *evs[0].Detail)
		}
	}
	requireMoved(t, owner, uint64(n))
	// A client that knows the cue closes first, with 1000 (the server
	// answers with the move); one that waits for the close frame echoes
	// its 4307.
	require.Eventually(t, func() bool { return len(r.ended()) == n }, wait, 5*time.Millisecond)
	assert.Equal(t, slices.Repeat([]int{1000}, n), r.ended(), "the victims closed first, on the cue")
	nr := chats[next].room(room)
	require.Eventually(t, func() bool { return nr.size() == n }, wait, 5*time.Millisecond, "the room never held everyone")
	for _, line := range speak(t, v, nr, "after") {
		assert.False(t, r.has(line), "nothing after the move reached the old node")
	}
}

// speak sends a line from every victim, waits until room r's app read it
// and every victim got it relayed, and returns the lines.
func speak(t *testing.T, v victims, r *chatRoom, phase string) []string {
	t.Helper()
	var lines []string
	for i := range v.count() {
		line := fmt.Sprintf("victim %d: %s", i, phase)
		v.send(i, line)
		require.Eventually(t, func() bool { return r.has(line) }, wait, 5*time.Millisecond,
			"%s: victim %d's line never reached the room", phase, i)
		lines = append(lines, line)
	}
	for i := range v.count() {
		for _, line := range lines {
			waitMessage(t, v, i, line, 0)
		}
	}
	return lines
}

// waitMessage waits until victim i has dispatched a message with data at or
// after event from, and returns its index. It fails at once when the victim
// closed: nothing follows a close.
func waitMessage(t *testing.T, v victims, i int, data string, from int) int {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		evs := v.events(i)
		for k := from; k < len(evs); k++ {
			if evs[k].Type == "message" && evs[k].Data == data {
				return k
			}
		}
		if slices.ContainsFunc(evs, func(e event) bool { return e.Type == "close" }) || time.Now().After(deadline) {
			require.Failf(t, "no such message", "victim %d never got %q; its events: %s", i, data, describeEvents(evs))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func types(evs []event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func describeEvents(evs []event) string {
	var b strings.Builder
	for _, e := range evs {
		switch e.Type {
		case "message":
			fmt.Fprintf(&b, "\n\tmessage %q", e.Data)
		case "close":
			fmt.Fprintf(&b, "\n\tclose %d %q", e.Code, e.Reason)
		case "redirect":
			fmt.Fprintf(&b, "\n\tredirect %+v", e.Detail)
		default:
			fmt.Fprintf(&b, "\n\t%s %s", e.Type, e.URL)
		}
	}
	return b.String()
}
