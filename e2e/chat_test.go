package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect"
)

// The attack tests' chat: the app of every node, the attacker who types
// into it and the listener the attacker hopes victims will dial.

// chatApp is a chat node's app: rooms that relay every text line verbatim
// to every connection in the room, the sender included, after greeting each
// connection with {"node":"<name>","room":"<room>"}. Connections are
// tracked through GorillaConn with the app's send, so moves are cued.
type chatApp struct {
	n     *node
	mu    sync.Mutex
	rooms map[string]*chatRoom
}

// newChatFleet is newFleet with chat nodes.
func newChatFleet(t *testing.T, origin string, mode wsredirect.Mode) (*fleet, map[*node]*chatApp) {
	t.Helper()
	chats := map[*node]*chatApp{}
	f := startFleet(t, origin, mode, func(n *node) http.Handler {
		chats[n] = &chatApp{n: n, rooms: map[string]*chatRoom{}}
		return chats[n].handler(origin)
	})
	return f, chats
}

func chatGreeting(n *node, room string) string {
	b, _ := json.Marshal(map[string]string{"node": n.name, "room": room})
	return string(b)
}

func (a *chatApp) room(name string) *chatRoom {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.rooms[name]
	if r == nil {
		r = &chatRoom{members: map[*chatConn]struct{}{}}
		a.rooms[name] = r
	}
	return r
}

func (a *chatApp) handler(origin string) http.Handler {
	up := websocket.Upgrader{
		Subprotocols: []string{"chat"},
		// Browsers from the page; the attacker and Node send no Origin.
		CheckOrigin: func(r *http.Request) bool { o := r.Header.Get("Origin"); return o == "" || o == origin },
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.n.reached.Add(1)
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		name := r.URL.Query().Get("room")
		cc := &chatConn{c: c}
		if cc.send(chatGreeting(a.n, name)) != nil {
			return
		}
		room := a.room(name)
		room.join(cc)
		defer room.leave(cc)
		defer a.n.mw.Track(name, wsredirect.GorillaConn(c, cc.send))()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				room.end(err)
				return
			}
			if mt == websocket.TextMessage {
				room.relay(string(p))
			}
		}
	})
}

// chatConn is one connection's writer: the app's relays and the
// middleware's cue go through send, one at a time, in order.
type chatConn struct {
	c  *websocket.Conn
	mu sync.Mutex
}

func (cc *chatConn) send(text string) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.c.SetWriteDeadline(time.Now().Add(time.Second))
	return cc.c.WriteMessage(websocket.TextMessage, []byte(text))
}

type chatRoom struct {
	mu      sync.Mutex
	members map[*chatConn]struct{}
	lines   []string // every line read, in order
	joined  int
	closeCodes
}

func (r *chatRoom) join(cc *chatConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.members[cc] = struct{}{}
	r.joined++
}

func (r *chatRoom) leave(cc *chatConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.members, cc)
}

// relay sends line to every member under the room's lock, so every member
// gets every line in the one order the room read them.
func (r *chatRoom) relay(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	for cc := range r.members {
		cc.send(line)
	}
}

func (r *chatRoom) has(line string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.lines, line)
}

func (r *chatRoom) size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.members)
}

// joins counts the connections that ever joined.
func (r *chatRoom) joins() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.joined
}

// attacker is a chat client that types what it likes: a raw gorilla
// connection to the room, reading everything relayed to it.
type attacker struct {
	t   *testing.T
	c   *websocket.Conn
	mu  sync.Mutex
	got []string
}

func dialAttacker(t *testing.T, url string) *attacker {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_, hello, err := c.ReadMessage()
	require.NoError(t, err)
	require.Contains(t, string(hello), `"node"`)
	a := &attacker{t: t, c: c}
	go func() {
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			a.mu.Lock()
			a.got = append(a.got, string(p))
			a.mu.Unlock()
		}
	}()
	return a
}

func (a *attacker) say(line string) {
	a.t.Helper()
	require.NoError(a.t, a.c.WriteMessage(websocket.TextMessage, []byte(line)))
}

func (a *attacker) has(line string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Contains(a.got, line)
}

// trap is the attacker's own listener: it counts the connections it
// accepts and closes them.
type trap struct {
	url, port string // ws://127.0.0.1:port
	accepted  atomic.Int32
}

func newTrap(t *testing.T) *trap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	tr := &trap{url: "ws://127.0.0.1:" + port, port: port}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tr.accepted.Add(1)
			c.Close()
		}
	}()
	return tr
}
