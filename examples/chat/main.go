// Command chat is one node of a chat fleet: wsredirect shards the rooms
// over the nodes in etcd; a room greets each client with its node,
// {"node":"n2","room":"lobby"}, then relays every text message verbatim to
// everyone in it, the sender included. Clients move by themselves when a
// node drains or stops (SIGTERM). Start an etcd and three nodes, dial
// ws://127.0.0.1:9001/rooms/lobby with this module's Go client (or from a
// page with the helper at /wsredirect.js), drain node n1 and undrain it:
//
//	etcd --data-dir /tmp/chat-etcd &
//	go build -o chat . && for i in 1 2 3; do ./chat -id n$i -addr 127.0.0.1:900$i & done
//	etcdctl put /wsredirect/drains/n1 "{\"since\":\"$(date -u -d '+3 sec' +%FT%TZ)\",\"ramp\":\"10s\"}"
//	etcdctl del /wsredirect/drains/n1
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"
	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/etcd"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	id := flag.String("id", "", "this node's member ID, the same across restarts (required)")
	addr := flag.String("addr", "127.0.0.1:9001", "host:port to listen on, where clients reach this node")
	endpoints := flag.String("etcd", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	prefix := flag.String("prefix", etcd.DefaultPrefix, "etcd key prefix of the fleet")
	ttl := flag.Duration("ttl", etcd.DefaultTTL, "lease TTL: how long a node that crashed stays listed")
	lib := flag.String("upgrader", "gorilla", "WebSocket library: gorilla (moves are cued in the stream) or coder (moves by close frame)")
	origins := flag.String("origins", "", "page origins allowed, comma-separated, as browsers send them: http://localhost:8000,https://*.example.com (default: the same origin only)")
	ramp := flag.Duration("ramp", 5*time.Second, "on SIGTERM, hand the rooms off over this long")
	flag.Parse()
	if *id == "" || (*lib != "gorilla" && *lib != "coder") {
		log.Fatal("chat: -id is required, and -upgrader is gorilla or coder")
	}

	self := wsredirect.Member{ID: *id, URL: "ws://" + *addr}
	mw := must(wsredirect.New(wsredirect.Options{
		Rules:   []wsredirect.Rule{wsredirect.Shard(wsredirect.PathValueKey("room"))},
		Self:    self.URL,
		Members: []wsredirect.Member{self}, // until etcd's are read
		Origins: split(*origins),
	}))
	ln := must(net.Listen("tcp", *addr))
	cli := must(clientv3.New(clientv3.Config{Endpoints: split(*endpoints), DialTimeout: 5 * time.Second}))
	sigs, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	src := must(etcd.Start(sigs, mw, etcd.Options{Client: cli, Prefix: *prefix, Self: &self, TTL: *ttl}))

	mux := http.NewServeMux()
	// On the route, so that {room} is set when the middleware asks for it.
	mux.Handle("GET /rooms/{room}", mw.Handler(rooms(*id, *lib, mw)))
	mux.Handle("GET /wsredirect.js", wsredirect.ScriptHandler()) // with CORS, for pages of other origins
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)

	<-sigs.Done()
	stop() // a second signal ends the process at once
	ctx, cancel := context.WithTimeout(context.Background(), etcd.DefaultSettle+*ramp+10*time.Second)
	defer cancel()
	if err := errors.Join(src.Leave(ctx, *ramp), srv.Shutdown(ctx)); err != nil {
		log.Fatal(err)
	}
}

// rooms is the app: it upgrades with lib and relays each room's messages.
func rooms(id, lib string, mw *wsredirect.Middleware) http.HandlerFunc {
	var rooms sync.Map // room → *sync.Map of its *peer
	return func(w http.ResponseWriter, r *http.Request) {
		if !mw.CheckOrigin(r) { // the origins the middleware allows, for both libraries
			http.Error(w, "origin not allowed", http.StatusForbidden)
			return
		}
		room, p := r.PathValue("room"), &peer{out: make(chan func(), 256), done: r.Context().Done()}
		hello, _ := json.Marshal(map[string]string{"node": id, "room": room})
		p.send(string(hello)) // first, before a move's cue
		var read func() (text bool, msg []byte, err error)
		if lib == "coder" {
			c, err := coder.Accept(w, r, &coder.AcceptOptions{InsecureSkipVerify: true}) // origin checked above
			if err != nil {
				return
			}
			defer c.CloseNow()
			read = func() (bool, []byte, error) { t, b, err := c.Read(r.Context()); return t == coder.MessageText, b, err }
			p.write = func(msg string) {
				ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
				defer cancel()
				c.Write(ctx, coder.MessageText, []byte(msg)) // on a timeout, coder closes the connection
			}
			defer mw.Track(room, wsredirect.CoderConn(c))()
		} else {
			c, err := (&websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}).Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			read = func() (bool, []byte, error) { t, b, err := c.ReadMessage(); return t == websocket.TextMessage, b, err }
			p.write = func(msg string) {
				c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				c.WriteMessage(websocket.TextMessage, []byte(msg))
			}
			defer mw.Track(room, wsredirect.GorillaConn(c, p.send))() // a move is cued through the queue
			// The client's close is answered (with its move, if any) once the queued writes are out.
			answer := c.CloseHandler()
			c.SetCloseHandler(func(code int, text string) error { p.flush(); return answer(code, text) })
		}
		go p.writeOut()
		peers, _ := rooms.LoadOrStore(room, &sync.Map{})
		peers.(*sync.Map).Store(p, true)
		defer peers.(*sync.Map).Delete(p)
		for {
			text, msg, err := read()
			if err != nil {
				return
			}
			if text {
				peers.(*sync.Map).Range(func(q, _ any) bool { q.(*peer).send(string(msg)); return true })
			}
		}
	}
}

// peer is one connection's writer: one goroutine does its queued writes in order.
type peer struct {
	write func(msg string)
	out   chan func()
	done  <-chan struct{} // the connection ended
}

func (p *peer) send(msg string) error {
	select {
	case p.out <- func() { p.write(msg) }:
		return nil
	case <-p.done:
		return net.ErrClosed
	}
}

func (p *peer) flush() {
	written := make(chan struct{})
	p.out <- func() { close(written) }
	<-written
}

func (p *peer) writeOut() {
	for {
		select {
		case f := <-p.out:
			f()
		case <-p.done:
			return
		}
	}
}

func split(s string) []string { return strings.FieldsFunc(s, func(r rune) bool { return r == ',' }) }

func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}
