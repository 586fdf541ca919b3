// Command wsredirect-demo runs a small wsredirect fleet in one process, on
// loopback only: a few chat nodes that shard WebSocket rooms over a
// consistent-hash ring, a front door that serves a web page and sends every
// WebSocket to the node that owns its room, and the etcd they agree
// through.
//
// Usage, from the repository's root (the demo is a nested module, so the
// core module stays free of etcd and Prometheus):
//
//	go -C cmd/wsredirect-demo run . [-addr 127.0.0.1:8080] [-nodes 3] [-etcd ENDPOINTS]
//	go -C cmd/wsredirect-demo run . -check [-clients 300]
//
// By default the demo starts an embedded etcd in a temporary directory, on
// free loopback ports, and removes it on exit; -etcd 127.0.0.1:2379 uses an
// existing cluster instead (comma-separated endpoints), under -prefix. Each
// node registers itself there with package etcd of this repository, on a
// lease of -ttl (5 s), and every node and the front door follow the fleet
// it lists: members, and drains written as etcd records.
//
// The first line printed is the front door's URL; open it in a browser to
// join rooms, see which node each lives on, chat, and watch each node's
// connections and redirects over time. Drain a node: its drain record
// takes effect 2 s after it is written, then hands the node's rooms off
// over -ramp (5 s) and its connections move to their rooms' next owners.
// Crash one: it stops without revoking its lease, and its rooms move once
// the lease expires. Restart it: a new lease, and its rooms come back.
// Browsers never follow a redirect on a WebSocket handshake, so the front
// door answers them with a 4307 close frame that the page's helper
// (/wsredirect.js) follows; Go clients get a 307. The terminal shows what
// the middlewares and etcd sources log: membership changes, drains, moves.
// "+ 50" on the page adds simulated Go clients, for the charts.
//
// Every node and the front door answer GET /metrics (Prometheus, package
// prom of this repository) and GET /debug/ring with the membership they
// decide by, drain state included, and with ?key=ROOM the node that serves
// that room now.
//
// Each node's middleware moves its open connections by itself whenever
// its view of the fleet says one no longer belongs to it: a drain of its
// own as the ramp hands the room off, an undrain or a restart of the room's
// owner. A move is cued in the room's stream; the page's helper and the Go
// clients answer the cue by closing, and the node's answer to that close
// says where to go. So a drain written by hand works as well as the page's
// button:
//
//	etcdctl --endpoints 127.0.0.1:PORT put /wsredirect-demo/drains/node-1 \
//	  "{\"since\":\"$(date -u -d '+3 sec' +%FT%TZ)\"}"
//	etcdctl --endpoints 127.0.0.1:PORT del /wsredirect-demo/drains/node-1
//
// With -check there is no page: Go clients join random rooms through the
// front door, the check verifies each landed on its room's owner, drains
// the busiest node through etcd, verifies exactly its clients moved (each
// once, to the room's next owner), undrains it, verifies they came back,
// crashes it, verifies that once its lease expired the front door sends
// its rooms' clients to their new owners, restarts it and verifies they
// moved back, prints a table and exits 0, or 1 on any mismatch.
//
// Ctrl-C (SIGINT or SIGTERM) stops the fleet: the nodes leave etcd, open
// connections are closed with a retry-later frame (no node is left to take
// them), then the servers and the embedded etcd shut down.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // the check failed, or the fleet could not start
	exitUsage  = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// config is the command line.
type config struct {
	addr      string
	nodes     int
	etcd      []string // endpoints; none: an embedded etcd
	prefix    string
	ttl       time.Duration
	ramp      time.Duration
	check     bool
	clients   int
	timeout   time.Duration
	verbose   bool
	logger    *slog.Logger // where the fleet's middlewares and sources log
	logOutput io.Writer    // and the embedded etcd its errors
}

// run is the whole command: main adds only the signals and the exit.
// Cancelling ctx stops the demo (cleanly) or fails a check in progress.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// The loggers, etcd and the check's progress all write to stderr.
	stderr = &lockedWriter{w: stderr}
	var cfg config
	var endpoints string
	fs := flag.NewFlagSet("wsredirect-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "front door `address`, loopback only (127.0.0.1:0 picks a free port)")
	fs.IntVar(&cfg.nodes, "nodes", 3, "number of nodes in the fleet (2 to 16)")
	fs.StringVar(&endpoints, "etcd", "", "comma-separated `endpoints` of an etcd cluster to use (default: start an embedded etcd on loopback)")
	fs.StringVar(&cfg.prefix, "prefix", "/wsredirect-demo/", "etcd key `prefix` of the fleet's records")
	fs.DurationVar(&cfg.ttl, "ttl", 5*time.Second, "lease TTL of the nodes' registrations: how long a crashed node stays listed")
	fs.DurationVar(&cfg.ramp, "ramp", 5*time.Second, "how long a drain takes to hand all of a node's rooms off, once in effect (0: all at once)")
	fs.BoolVar(&cfg.check, "check", false, "run the scripted self-check instead of serving the page, and exit 0 or 1")
	fs.IntVar(&cfg.clients, "clients", 300, "Go clients the -check connects")
	fs.DurationVar(&cfg.timeout, "timeout", 2*time.Minute, "bound for the whole -check")
	fs.BoolVar(&cfg.verbose, "v", false, "with -check, log membership changes and drains as the page does (default: warnings only)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: wsredirect-demo [-addr 127.0.0.1:8080] [-nodes 3] [-etcd ENDPOINTS]\n       wsredirect-demo -check [-clients 300]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return exitOK
	} else if err != nil {
		return exitUsage
	}
	for e := range strings.SplitSeq(endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			cfg.etcd = append(cfg.etcd, e)
		}
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "wsredirect-demo: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	case cfg.nodes < 2 || cfg.nodes > 16:
		fmt.Fprintln(stderr, "wsredirect-demo: -nodes must be 2 to 16: a drain needs another node to move rooms to")
		return exitUsage
	case cfg.clients < 1:
		fmt.Fprintln(stderr, "wsredirect-demo: -clients must be at least 1")
		return exitUsage
	case cfg.timeout <= 0:
		fmt.Fprintln(stderr, "wsredirect-demo: -timeout must be positive")
		return exitUsage
	case cfg.ttl < 2*time.Second || cfg.ttl > time.Minute:
		fmt.Fprintln(stderr, "wsredirect-demo: -ttl must be 2s to 1m")
		return exitUsage
	case cfg.ramp < 0 || cfg.ramp > time.Minute:
		fmt.Fprintln(stderr, "wsredirect-demo: -ramp must be 0 to 1m")
		return exitUsage
	case endpoints != "" && len(cfg.etcd) == 0:
		fmt.Fprintln(stderr, "wsredirect-demo: -etcd lists no endpoint")
		return exitUsage
	case !strings.HasPrefix(cfg.prefix, "/") || strings.TrimRight(cfg.prefix, "/") == "":
		fmt.Fprintln(stderr, "wsredirect-demo: -prefix must start with / and name something, as /wsredirect-demo/")
		return exitUsage
	}
	level := slog.LevelInfo
	if cfg.check && !cfg.verbose {
		level = slog.LevelWarn
	}
	cfg.logger, cfg.logOutput = newLogger(stderr, level), stderr

	f, err := startFleet(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "wsredirect-demo:", err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "front door: %s\n", f.front.url)

	if cfg.check {
		ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
		defer cancel()
		err := check(ctx, f, cfg.clients, stdout, stderr)
		f.shutdown(io.Discard)
		if err != nil {
			fmt.Fprintln(stderr, "check FAILED:", err)
			return exitFailed
		}
		return exitOK
	}

	for _, n := range f.nodes {
		fmt.Fprintf(stdout, "  %s  %s  (metrics: %s/metrics)\n", n.id, n.url, n.httpURL())
	}
	fmt.Fprintf(stdout, "etcd: %s (%s), keys under %s\n", strings.Join(f.endpoints, ","), f.etcdKind(), cfg.prefix)
	fmt.Fprintln(stdout, "open the front door in a browser; Ctrl-C stops the fleet and exits")
	<-ctx.Done()
	f.shutdown(stdout)
	return exitOK
}

// newLogger is the terminal's log: text, with the time of day only.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.String(slog.TimeKey, a.Value.Time().Format("15:04:05.000"))
			}
			return a
		},
	}))
}
