package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect"
)

// chatProtocol is the subprotocol the rooms speak. The page offers it, so
// its helper offers wsredirect.v1 beside it and tells a redirect-only
// connection at open instead of waiting to see.
const chatProtocol = "demo.chat"

const (
	maxMessage = 4096 // bytes a client may send at once
	maxText    = 500  // characters of a chat line kept
	maxFrom    = 32   // characters of a sender's name kept
	writeWait  = 2 * time.Second
)

// greeting is the first message on every room connection: where it landed.
type greeting struct {
	Node string `json:"node"`
	Room string `json:"room"`
}

// chat is a line of a room, as clients send it and as the node relays it to
// everyone in the room on this node, sender included.
type chat struct {
	From string `json:"from"`
	Text string `json:"text"`
}

// node is a member of the fleet: the middleware in front of chat rooms.
type node struct {
	id, url string // url is the member URL, ws://127.0.0.1:port
	mw      *wsredirect.Middleware
	srv     *http.Server
	up      websocket.Upgrader

	mu    sync.Mutex
	rooms map[string][]*peer // room → its connections on this node
}

// peer is one open room connection. gorilla allows one writer at a time;
// close frames (WriteControl, used by MoveConns) may be sent beside it.
type peer struct {
	conn *websocket.Conn
	mu   sync.Mutex
}

func (p *peer) send(msg []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conn.SetWriteDeadline(time.Now().Add(writeWait))
	return p.conn.WriteMessage(websocket.TextMessage, msg)
}

// start builds the node's middleware and serves on ln. Every node runs the
// same rule over the same members; the owner of a room serves it.
func (n *node) start(ln net.Listener, members []wsredirect.Member, origins []string) error {
	mw, err := wsredirect.New(wsredirect.Options{
		Self:    n.url,
		Members: members,
		Rules:   []wsredirect.Rule{wsredirect.Shard(wsredirect.PathValueKey("room"))},
		Origins: origins,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", n.id, err)
	}
	n.mw = mw
	n.rooms = make(map[string][]*peer)
	n.up = websocket.Upgrader{
		Subprotocols: []string{chatProtocol},
		// Browsers come from the front door's page; Go clients send no
		// Origin.
		CheckOrigin: func(r *http.Request) bool {
			o := r.Header.Get("Origin")
			return o == "" || slices.Contains(origins, o)
		},
	}
	mux := http.NewServeMux()
	// Mounted on the pattern, so the room is a path value when the Shard
	// rule looks for it.
	mux.Handle("GET /rooms/{room}", mw.Handler(http.HandlerFunc(n.serveRoom)))
	mux.Handle("GET /debug/ring", ringHandler(mw, n.id))
	n.srv = newServer(mux)
	serve(n.srv, ln)
	return nil
}

// serveRoom is the app: it greets, then relays chat lines within the room.
// It runs only for rooms this node serves; the middleware sent the others
// on.
func (n *node) serveRoom(w http.ResponseWriter, r *http.Request) {
	room := r.PathValue("room")
	c, err := n.up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	defer c.Close()
	c.SetReadLimit(maxMessage)
	// Tracked under the key the Shard rule routed it by, so a drain can
	// move it.
	defer n.mw.Track(room, c)()
	p := &peer{conn: c}
	hello, _ := json.Marshal(greeting{Node: n.id, Room: room})
	if p.send(hello) != nil {
		return
	}
	defer n.join(room, p)()
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			return
		}
		n.broadcast(room, readChat(data))
	}
}

// readChat turns what a client sent into the line relayed: a chat object,
// or any other text as the line itself.
func readChat(data []byte) []byte {
	var m chat
	if json.Unmarshal(data, &m) != nil || m.Text == "" {
		m = chat{Text: string(data)}
	}
	m.From = truncate(m.From, maxFrom)
	m.Text = truncate(m.Text, maxText)
	out, _ := json.Marshal(m)
	return out
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n])
	}
	return s
}

// join adds p to room and returns the func that removes it.
func (n *node) join(room string, p *peer) (leave func()) {
	n.mu.Lock()
	n.rooms[room] = append(n.rooms[room], p)
	n.mu.Unlock()
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		peers := slices.DeleteFunc(n.rooms[room], func(q *peer) bool { return q == p })
		if len(peers) == 0 {
			delete(n.rooms, room)
		} else {
			n.rooms[room] = peers
		}
	}
}

// broadcast sends msg to everyone in room on this node. A peer that cannot
// take it within writeWait is dropped by its own read loop.
func (n *node) broadcast(room string, msg []byte) {
	n.mu.Lock()
	peers := slices.Clone(n.rooms[room])
	n.mu.Unlock()
	for _, p := range peers {
		if p.send(msg) != nil {
			p.conn.Close()
		}
	}
}

// roomCount returns how many rooms have connections on this node.
func (n *node) roomCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.rooms)
}
