package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/etcd"
	"github.com/wsredirect/wsredirect/prom"
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

	// moveGrace is how long a moved connection has to close once it is
	// sent its close frame, before its node closes it (Options.MoveGrace,
	// 5 s by default): the demo's clients answer at once, so a longer
	// grace would only hold up a shutdown on one that does not.
	moveGrace = 2 * time.Second
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

// node is a member of the fleet, whether it runs or not: its ID and URL
// stay across crashes and restarts, and so do its counters.
type node struct {
	f       *fleet
	id, url string // url is the member URL, ws://127.0.0.1:port
	addr    string // where it listens, again after a restart if it can
	// redirected counts the redirects to this node, by any server of the
	// fleet: new clients sent here.
	redirected atomic.Uint64

	mu        sync.Mutex
	inst      *instance // nil while down
	past      moveCount // moves of earlier instances
	leaseEnds time.Time // when a crashed node's lease expires, about
	op        *op       // the last operation, maybe under way
}

// instance is one run of a node, from start to crash or shutdown: its
// middleware, its etcd client and source, and its server.
type instance struct {
	n    *node
	mw   *wsredirect.Middleware
	src  *etcd.Source
	cli  *clientv3.Client
	srv  *http.Server
	up   websocket.Upgrader
	logs *muteHandler

	mu    sync.Mutex
	rooms map[string][]*peer // room → its connections on this node
}

// peer is one open room connection. gorilla allows one writer at a time;
// close frames (WriteControl, which the middleware's moves use) may be
// sent beside it.
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

func newNode(f *fleet, id, addr string) *node {
	return &node{f: f, id: id, addr: addr, url: "ws://" + addr}
}

// httpURL is the node's base URL for plain HTTP: /metrics, /debug/ring.
func (n *node) httpURL() string { return "http" + strings.TrimPrefix(n.url, "ws") }

func (n *node) instance() *instance {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.inst
}

// listen listens on the node's address again, for a restart: a port just
// released may take a moment.
func (n *node) listen(ctx context.Context) (net.Listener, error) {
	for {
		ln, err := net.Listen("tcp", n.addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			return ln, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %s is taken: %w", n.id, n.addr, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// start runs the node on ln: its middleware, served at once, then its
// registration in etcd on a new lease, whose Start returns once the node
// has read the fleet. Every node runs the same rule; the owner of a room
// serves it.
func (n *node) start(ctx context.Context, ln net.Listener) error {
	logs := &muteHandler{h: n.f.log.Handler(), muted: new(atomic.Bool)}
	log := slog.New(logs).With("node", n.id)
	in := &instance{n: n, logs: logs, rooms: make(map[string][]*peer)}
	metrics := prom.New()
	self := wsredirect.Member{ID: n.id, URL: n.url}
	mw, err := wsredirect.New(wsredirect.Options{
		Self:    n.url,
		Members: []wsredirect.Member{self}, // until etcd's are read
		Rules:   []wsredirect.Rule{wsredirect.Shard(wsredirect.PathValueKey("room"))},
		Origins: n.f.origins,
		OnDecision: func(r *http.Request, d wsredirect.Decision) {
			metrics.OnDecision(r, d)
			n.f.countRedirect(d)
		},
		MoveGrace: moveGrace,
		Logger:    log,
	})
	if err != nil {
		ln.Close()
		return fmt.Errorf("%s: %w", n.id, err)
	}
	metrics.Watch(mw)
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics)
	in.mw = mw
	in.up = websocket.Upgrader{
		Subprotocols: []string{chatProtocol},
		CheckOrigin:  n.f.originAllowed,
	}
	mux := http.NewServeMux()
	// Mounted on the pattern, so the room is a path value when the Shard
	// rule looks for it.
	mux.Handle("GET /rooms/{room}", mw.Handler(http.HandlerFunc(in.serveRoom)))
	mux.Handle("GET /debug/ring", ringHandler(mw, n.id))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	in.srv = newServer(mux)
	serve(in.srv, ln)

	if in.cli, err = newEtcdClient(n.f.endpoints); err == nil {
		in.src, err = etcd.Start(ctx, mw, etcd.Options{
			Client: in.cli,
			Prefix: n.f.cfg.prefix,
			Self:   &self,
			TTL:    n.f.cfg.ttl,
			Logger: log,
		})
	}
	if err != nil {
		in.srv.Close()
		if in.cli != nil {
			in.cli.Close()
		}
		return fmt.Errorf("%s: %w", n.id, err)
	}
	n.mu.Lock()
	n.inst = in
	n.leaseEnds = time.Time{}
	n.mu.Unlock()
	return nil
}

// crash stops the node as a crash would, as far as etcd and clients can
// tell: its etcd client closes without revoking its lease, so etcd lists
// it until the lease expires (in about left), and its server and open
// connections close without a close frame.
func (n *node) crash(left time.Duration) {
	n.mu.Lock()
	in := n.inst
	n.inst = nil
	counted := in.moves()
	n.past = n.past.add(counted)
	n.leaseEnds = time.Now().Add(left)
	n.mu.Unlock()
	in.logs.mute() // its source's complaints about the closed client
	in.srv.Close()
	in.closeConns()
	in.cli.Close() // no more keep-alives
	// Moves under way when it crashed may still count.
	n.mu.Lock()
	late, lateCut := in.moves().since(counted)
	n.past = n.past.add(moveCount{uint64(late), uint64(lateCut)})
	n.mu.Unlock()
	// The source's revoke fails, the client being closed, once its
	// retries give up: in the background, which shutdown waits for.
	n.f.bg.Go(func() { in.src.Close() })
}

// leave takes the node out of etcd for a shutdown: its source's Close
// revokes the lease, so that etcd drops the node at once.
func (in *instance) leave() {
	if err := in.src.Close(); err != nil {
		in.n.f.log.Warn("demo: leaving etcd", "node", in.n.id, "err", err)
	}
}

// closeConns closes every open room connection under its app, without a
// close frame.
func (in *instance) closeConns() {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, peers := range in.rooms {
		for _, p := range peers {
			p.conn.Close()
		}
	}
}

// misplaced counts the node's connections whose room its view of the
// fleet now sends elsewhere: those its middleware is moving.
func (in *instance) misplaced() int {
	st := in.mw.State()
	in.mu.Lock()
	defer in.mu.Unlock()
	k := 0
	for room, peers := range in.rooms {
		if m, ok := st.Owner(room); !ok || m.ID != in.n.id {
			k += len(peers)
		}
	}
	return k
}

// serveRoom is the app: it greets, then relays chat lines within the room.
// It runs only for rooms this node serves; the middleware sent the others
// on.
func (in *instance) serveRoom(w http.ResponseWriter, r *http.Request) {
	room := r.PathValue("room")
	c, err := in.up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	defer c.Close()
	c.SetReadLimit(maxMessage)
	p := &peer{conn: c}
	hello, _ := json.Marshal(greeting{Node: in.n.id, Room: room})
	if p.send(hello) != nil {
		return
	}
	// Joined before it is tracked, so every connection the middleware
	// may move is one the fleet's operations count (misplaced).
	defer in.join(room, p)()
	// Tracked under the key the Shard rule routed it by: the middleware
	// moves it whenever the room's owner changes. Its clients (the page's
	// helper, the bots' client.Conn) answer a cue by closing first, so
	// the cue goes through the peer's own write lock, in order with the
	// room's lines, and no line a client sends is lost at the boundary.
	defer in.mw.Track(room, wsredirect.GorillaConn(c, func(text string) error { return p.send([]byte(text)) }))()
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			return
		}
		in.broadcast(room, readChat(data))
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
func (in *instance) join(room string, p *peer) (leave func()) {
	in.mu.Lock()
	in.rooms[room] = append(in.rooms[room], p)
	in.mu.Unlock()
	return func() {
		in.mu.Lock()
		defer in.mu.Unlock()
		peers := slices.DeleteFunc(in.rooms[room], func(q *peer) bool { return q == p })
		if len(peers) == 0 {
			delete(in.rooms, room)
		} else {
			in.rooms[room] = peers
		}
	}
}

// broadcast sends msg to everyone in room on this node. A peer that cannot
// take it within writeWait is dropped by its own read loop.
func (in *instance) broadcast(room string, msg []byte) {
	in.mu.Lock()
	peers := slices.Clone(in.rooms[room])
	in.mu.Unlock()
	for _, p := range peers {
		if p.send(msg) != nil {
			p.conn.Close()
		}
	}
}

// roomCount returns how many rooms have connections on this node.
func (in *instance) roomCount() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.rooms)
}

func (in *instance) moves() moveCount {
	m, c := in.mw.Moves()
	return moveCount{m, c}
}

// moves returns the connections the node's middleware moved and cut, over
// all its runs.
func (n *node) moves() moveCount {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := n.past
	if n.inst != nil {
		c = c.add(n.inst.moves())
	}
	return c
}

// tracked returns the node's open connections: 0 while down.
func (n *node) tracked() int {
	if in := n.instance(); in != nil {
		return in.mw.Tracked()
	}
	return 0
}

// moveCount is what a middleware's moves did (Middleware.Moves):
// connections moved, and cut.
type moveCount struct{ moved, cut uint64 }

func (c moveCount) add(d moveCount) moveCount { return moveCount{c.moved + d.moved, c.cut + d.cut} }

// since returns the moves made after base.
func (c moveCount) since(base moveCount) (moved, cut int) {
	return int(c.moved - base.moved), int(c.cut - base.cut)
}

// op is an operation on a node, as the page shows its progress.
type op struct {
	Kind  string        // drain, undrain, crash, restart
	Phase string        // starting, writing, settling, spreading, registering, moving, lease, done, failed
	Since time.Time     // a drain's, when it takes effect
	Ramp  time.Duration // a drain's
	Moved int
	Cut   int
	// Remaining counts connections still to move: sent nothing yet, or
	// sent their close frame and not closed yet.
	Remaining int
	Began     time.Time
	Ended     time.Time
	Err       string
}

func (o *op) total() int { return o.Moved + o.Cut }

func (n *node) currentOp() *op {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.op
}

func (n *node) setOp(o *op) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.op = o
}

// progress updates o under the node's lock, which views read it under.
func (n *node) progress(o *op, update func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	update()
}

// end ends o with err, logs it, and returns err.
func (n *node) end(o *op, err error) error {
	n.mu.Lock()
	o.Ended = time.Now()
	switch {
	case err != nil:
		o.Phase, o.Err = "failed", err.Error()
	case o.Phase != "lease":
		o.Phase = "done"
	}
	took := o.Ended.Sub(o.Began).Round(time.Millisecond)
	kind, moved, cut := o.Kind, o.Moved, o.Cut
	n.mu.Unlock()
	n.f.ops.Done()
	switch {
	case err != nil:
		n.f.log.Warn("demo: "+kind+" failed", "node", n.id, "err", err, "took", took)
	case kind != "crash":
		n.f.log.Info("demo: "+kind+" done", "node", n.id, "moved", moved, "cut", cut, "took", took)
	}
	return err
}

// muteHandler passes records on until muted: a crashed node says nothing
// more.
type muteHandler struct {
	h     slog.Handler
	muted *atomic.Bool
}

func (m *muteHandler) mute() { m.muted.Store(true) }

func (m *muteHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return !m.muted.Load() && m.h.Enabled(ctx, l)
}

func (m *muteHandler) Handle(ctx context.Context, r slog.Record) error {
	if m.muted.Load() {
		return nil
	}
	return m.h.Handle(ctx, r)
}

func (m *muteHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &muteHandler{h: m.h.WithAttrs(attrs), muted: m.muted}
}

func (m *muteHandler) WithGroup(name string) slog.Handler {
	return &muteHandler{h: m.h.WithGroup(name), muted: m.muted}
}
