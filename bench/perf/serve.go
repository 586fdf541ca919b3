package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect"
)

// serveSpec tells a copy of perf which server to be. Its listeners arrive
// open, as file descriptors 3, 4, …, in the order the mode documents.
type serveSpec struct {
	Mode string // "router", "node", "track" or "drain"

	// router: where the Host rule, the hand-written handler (and NGINX)
	// send clients, and the Shard rule's fleet size.
	Target  string `json:",omitempty"`
	Members int    `json:",omitempty"`

	// node: this node's URL and the fleet it is a member of.
	Self  string              `json:",omitempty"`
	Fleet []wsredirect.Member `json:",omitempty"`

	// drain: see liveDrainChild.
	Drain *drainSpec `json:",omitempty"`

	// CPUProfile, when set, is where the server writes a CPU profile of
	// its whole run (go tool pprof reads it) when perf stops it.
	CPUProfile string `json:",omitempty"`
}

// serveMain runs the server spec describes until perf stops it (SIGTERM,
// or SIGKILL should perf die).
func serveMain(js string) int {
	var spec serveSpec
	if err := json.Unmarshal([]byte(js), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "bad", serveEnv, err)
		return 2
	}
	if spec.CPUProfile != "" {
		f, err := os.Create(spec.CPUProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
		go func() {
			<-stop
			pprof.StopCPUProfile()
			f.Close()
			os.Exit(0)
		}()
	}
	var err error
	switch spec.Mode {
	case "router":
		err = serveRouter(spec)
	case "node":
		err = serveNode(spec)
	case "track":
		err = serveTrack()
	case "drain":
		err = liveDrainChild(*spec.Drain)
	default:
		err = fmt.Errorf("unknown mode %q", spec.Mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// inherited returns the n listeners perf handed over.
func inherited(n int) ([]net.Listener, error) {
	lns := make([]net.Listener, n)
	for i := range lns {
		f := os.NewFile(uintptr(3+i), fmt.Sprintf("listener-%d", i))
		l, err := net.FileListener(f)
		if err != nil {
			return nil, fmt.Errorf("listener %d: %w", i, err)
		}
		f.Close()
		lns[i] = l
	}
	return lns, nil
}

// serveAll serves each listener with its handler until one fails.
func serveAll(lns []net.Listener, handlers ...http.Handler) error {
	errc := make(chan error, len(lns))
	for i, l := range lns {
		srv := &http.Server{Handler: handlers[i], ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- srv.Serve(l) }()
	}
	return <-errc
}

// The scenario 1 request: the same path and query for every variant.
const (
	routerPath = "/rooms/42"
	// redirectBody is what wsredirect writes with a 307, so the
	// hand-written handler sends the very same bytes.
	redirectBody = "307 Temporary Redirect: this WebSocket endpoint is served elsewhere (see Location)\n"
)

// shardMembers is scenario 1's and 5's fleet of n members: IDs node-0…,
// URLs on loopback ports 9100… that nothing dials (only Locations carry
// them), the same length as the Host rule's target.
func shardMembers(n int) []wsredirect.Member {
	ms := make([]wsredirect.Member, n)
	for i := range ms {
		ms[i] = wsredirect.Member{ID: fmt.Sprintf("node-%d", i), URL: fmt.Sprintf("ws://127.0.0.1:%d", 9100+i)}
	}
	return ms
}

// ownedKeys returns the first n room keys (room-0, room-1, …) that mw's
// Shard rule gives to the member with ID id.
func ownedKeys(mw *wsredirect.Middleware, id string, n int) []string {
	var keys []string
	for i := 0; len(keys) < n; i++ {
		k := fmt.Sprintf("room-%d", i)
		if m, _ := mw.State().Owner(k); m.ID == id {
			keys = append(keys, k)
		}
	}
	return keys
}

// foreignKey returns a room key that the fleet's first member (Self) sends
// elsewhere, so a Shard rule redirects it.
func foreignKey(mw *wsredirect.Middleware, self string) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("room-%d", i)
		if m, _ := mw.State().Owner(k); m.URL != self {
			return k
		}
	}
}

// routerMiddlewares builds scenario 1's two wsredirect variants.
func routerMiddlewares(target string, members int) (host, shard *wsredirect.Middleware, err error) {
	host, err = wsredirect.New(wsredirect.Options{Rules: []wsredirect.Rule{wsredirect.Host(target, "127.0.0.1")}})
	if err != nil {
		return nil, nil, err
	}
	ms := shardMembers(members)
	shard, err = wsredirect.New(wsredirect.Options{Self: ms[0].URL, Members: ms, Rules: []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))}})
	return host, shard, err
}

// serveRouter is scenario 1's Go side. Listeners: wsredirect with a Host
// rule, wsredirect with a Shard rule, the hand-written handler, and stats
// (GET / answers the connections each of the first three has accepted, so
// perf can check wrk kept its connections alive).
func serveRouter(spec serveSpec) error {
	lns, err := inherited(4)
	if err != nil {
		return err
	}
	host, shard, err := routerMiddlewares(spec.Target, spec.Members)
	if err != nil {
		return err
	}
	var accepted [3]atomic.Int64
	handlers := []http.Handler{host.Handler(http.NotFoundHandler()), shard.Handler(http.NotFoundHandler()), handWritten(spec.Target)}
	errc := make(chan error, 4)
	for i := range 3 {
		srv := &http.Server{Handler: handlers[i], ReadHeaderTimeout: 10 * time.Second,
			ConnState: func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					accepted[i].Add(1)
				}
			}}
		go func() { errc <- srv.Serve(lns[i]) }()
	}
	stats := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode([]int64{accepted[0].Load(), accepted[1].Load(), accepted[2].Load()})
	})}
	go func() { errc <- stats.Serve(lns[3]) }()
	return <-errc
}

// handWritten is the baseline of scenario 1: what one writes by hand to
// send WebSocket upgrades elsewhere with the response wsredirect sends — a
// 307 with Location (path and query kept), Cache-Control: no-store and the
// same body.
func handWritten(target string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.NotFound(w, r)
			return
		}
		loc := target + r.URL.EscapedPath()
		if r.URL.RawQuery != "" {
			loc += "?" + r.URL.RawQuery
		}
		h := w.Header()
		h.Set("Location", loc)
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusTemporaryRedirect)
		io.WriteString(w, redirectBody)
	})
}

// serveNode is a fleet node of scenarios 2 and 3: wsredirect with a Shard
// rule by the query's room, over an echo server. Listener: the node.
func serveNode(spec serveSpec) error {
	lns, err := inherited(1)
	if err != nil {
		return err
	}
	mw, err := wsredirect.New(wsredirect.Options{
		Self:    spec.Self,
		Members: spec.Fleet,
		Rules:   []wsredirect.Rule{wsredirect.Shard(wsredirect.QueryKey("room"))},
	})
	if err != nil {
		return err
	}
	return serveAll(lns, mw.Handler(echo()))
}

// echo upgrades and sends every message back, as the app behind the
// middleware.
func echo() http.Handler {
	up := websocket.Upgrader{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			t, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if c.WriteMessage(t, p) != nil {
				return
			}
		}
	})
}

// memStats is what a track server reports of itself.
type memStats struct {
	Tracked    int
	Goroutines int
	HeapAlloc  uint64 // live heap after a GC
	StackInuse uint64 // goroutine stacks
}

// serveTrack is scenario 5's server: each connection is upgraded,
// registered with Track under its room, and read until it ends, as an app
// that may move its connections does. Listeners: the server, and a control
// one whose GET / collects garbage and answers memStats.
func serveTrack() error {
	lns, err := inherited(2)
	if err != nil {
		return err
	}
	mw, err := wsredirect.New(wsredirect.Options{Rules: []wsredirect.Rule{wsredirect.Path("ws://127.0.0.1:9001", "/elsewhere")}})
	if err != nil {
		return err
	}
	up := websocket.Upgrader{}
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		defer mw.Track(r.URL.Query().Get("room"), wsredirect.GorillaConn(c, nil))()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	})
	control := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(readMem(mw.Tracked()))
	})
	return serveAll(lns, mw.Handler(app), control)
}

// readMem collects garbage and reads the live heap and stacks.
func readMem(tracked int) memStats {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memStats{Tracked: tracked, Goroutines: runtime.NumGoroutine(), HeapAlloc: ms.HeapAlloc, StackInuse: ms.StackInuse}
}

// getJSON fetches url (a perf server's control endpoint) into v.
func getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}
