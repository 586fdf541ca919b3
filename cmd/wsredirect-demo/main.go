// Command wsredirect-demo runs a small wsredirect fleet in one process, on
// loopback only: a few chat nodes that shard WebSocket rooms over a
// consistent-hash ring, and a front door that serves a web page and sends
// every WebSocket to the node that owns its room.
//
// Usage:
//
//	wsredirect-demo [-addr 127.0.0.1:8080] [-nodes 3]
//	wsredirect-demo -check [-clients 300]
//
// The first line printed is the front door's URL; open it in a browser to
// join rooms, see which node each lives on, chat, and drain nodes to watch
// their rooms move. Browsers never follow a redirect on a WebSocket
// handshake, so the front door answers them with a 4307 close frame that
// the page's helper (/wsredirect.js) follows; Go clients get a 307.
//
// Every node and the front door answer GET /debug/ring with the membership
// they decide by, drain state included, and with ?key=ROOM the node that
// serves that room now.
//
// With -check there is no page: Go clients join random rooms through the
// front door, the check verifies each landed on its room's owner, drains
// the busiest node, verifies exactly its clients moved (each once, to the
// room's next owner), undrains it, verifies they came back, prints a table
// and exits 0, or 1 on any mismatch.
//
// Ctrl-C (SIGINT or SIGTERM) drains the fleet: open connections are closed
// with a retry-later frame (no node is left to take them), then the servers
// shut down.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
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
	addr    string
	nodes   int
	check   bool
	clients int
	timeout time.Duration
}

// run is the whole command: main adds only the signals and the exit.
// Cancelling ctx stops the demo (cleanly) or fails a check in progress.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg config
	fs := flag.NewFlagSet("wsredirect-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "front door `address`, loopback only (127.0.0.1:0 picks a free port)")
	fs.IntVar(&cfg.nodes, "nodes", 3, "number of nodes in the fleet (2 to 16)")
	fs.BoolVar(&cfg.check, "check", false, "run the scripted self-check instead of serving the page, and exit 0 or 1")
	fs.IntVar(&cfg.clients, "clients", 300, "Go clients the -check connects")
	fs.DurationVar(&cfg.timeout, "timeout", time.Minute, "bound for the whole -check")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: wsredirect-demo [-addr 127.0.0.1:8080] [-nodes 3]\n       wsredirect-demo -check [-clients 300]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return exitOK
	} else if err != nil {
		return exitUsage
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
	}

	f, err := startFleet(cfg.addr, cfg.nodes)
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
		fmt.Fprintf(stdout, "  %s  %s\n", n.id, n.url)
	}
	fmt.Fprintln(stdout, "open the front door in a browser; Ctrl-C drains the fleet and exits")
	<-ctx.Done()
	f.shutdown(stdout)
	return exitOK
}
