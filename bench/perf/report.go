package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// row is one line of the table.
type row struct {
	scenario string // "1 router capacity"…; empty repeats the row above's
	variant  string
	figure   string
	spread   string // min–max over rounds
	ratio    string
	target   string
	met      string // yes, **no**, — (no target), or why there is no figure
}

// report is a whole run.
type report struct {
	cfg                   config
	machine, placement    string
	started               time.Time
	took                  time.Duration
	loadBefore, loadAfter string
	otherCPU              time.Duration // CPU other processes used during the run
	rows                  []row
}

// markdown is the table with the run it came from.
func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured by `make perf` on %s in %s: %d rounds, variants interleaved within each round. A figure is the median over rounds, its spread the min–max across them; a ratio is taken within each round (against the variant it names), then its median, with its range.\n\n",
		r.started.Format("2006-01-02 15:04 MST"), r.took.Round(time.Second), r.cfg.rounds)
	fmt.Fprintf(&b, "- Machine: %s\n", r.machine)
	fmt.Fprintf(&b, "- Load average (1, 5, 15 min) before: %s; after: %s\n", r.loadBefore, r.loadAfter)
	fmt.Fprintf(&b, "- %s\n", r.sharedNote())
	fmt.Fprintf(&b, "- %s\n\n", strings.ToUpper(r.placement[:1])+r.placement[1:])
	b.WriteString("| scenario | variant | figure | spread over rounds | ratio | target | met |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, w := range r.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", w.scenario, w.variant, w.figure, w.spread, w.ratio, w.target, w.met)
	}
	return b.String()
}

// sharedNote says how much of the machine other work used during the run:
// /proc/stat's user and system time less this run's own processes'.
func (r *report) sharedNote() string {
	capacity := r.took.Seconds() * float64(cpuCount())
	share := 100 * r.otherCPU.Seconds() / capacity
	s := fmt.Sprintf("Other work on the machine during the run: %.0f CPU-seconds, %.0f%% of its %d cores", r.otherCPU.Seconds(), share, cpuCount())
	if share >= 5 {
		s += ": the machine was shared, so absolute figures are lower and noisier than on a quiet one; ratios, taken within a round, hold better"
	}
	return s
}

const (
	docTitle   = "# Benchmarks\n"
	microHead  = "## Micro-benchmarks (make bench)"
	perfHead   = "## Against a proxy (make perf)"
	microStart = "to be filled by make bench"
)

// writeDoc puts the report under perfHead in path, creating the file (with
// the micro-benchmarks' section, left for make bench, above it) when it
// does not exist, and leaving every other section as it is.
func writeDoc(path string, r *report) error {
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		old = []byte(docTitle + "\n" + microHead + "\n\n" + microStart + "\n")
	} else if err != nil {
		return err
	}
	section := perfHead + "\n\n" + perfIntro + "\n" + r.markdown() + "\n" + perfRowsExplained
	s := string(old)
	i := strings.Index(s, perfHead)
	if i < 0 {
		s = strings.TrimRight(s, "\n") + "\n\n" + section
	} else {
		rest := s[i+len(perfHead):]
		end := strings.Index(rest, "\n## ")
		tail := ""
		if end >= 0 {
			tail = rest[end:]
		}
		s = s[:i] + section + tail
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

const perfIntro = `The case for redirecting, measured against a proxy: ` + "`make perf`" + ` (bench/perf) starts, on 127.0.0.1
only, Go servers built on this module (each its own process, so its CPU can be read from /proc), NGINX
(Debian's nginx-light, a generated config in a temp dir) and wrk; runs five bounded scenarios; prints this
table and writes it here. It installs nginx-light and wrk with apt-get when they are missing and it runs as
root; otherwise the rows that need them say how to get them. ` + "`make perf PERF_FLAGS=-quick`" + ` checks the
harness in under a minute (figures not for publishing); ` + "`PERF_FLAGS='-only 1 -cpuprofile DIR'`" + ` runs
scenario 1 alone with each Go server writing a CPU profile.
`

const perfRowsExplained = `
What the rows measure:

1. **Router capacity** — wrk (1 thread, 64 keep-alive connections, a Lua script adding Connection: Upgrade,
   Upgrade: websocket, Sec-WebSocket-Key and -Version) against a server that answers every upgrade with a 307
   (Location with path and query kept, Cache-Control: no-store): wsredirect with a Host rule, wsredirect with a
   Shard rule over 64 members, a hand-written Go handler sending the same bytes, and NGINX's ` + "`return 307`" + `
   (the C reference). Each round runs every variant four times for 1 s in ABCD-DCBA order, so a load that drifts
   weighs on all alike; every variant's answer is checked first, and so is that wrk kept its connections. Beside
   requests/s, the server's CPU time per request (/proc) is the capacity figure that other work on the machine
   does not skew. This is what one core of a redirecting front door answers; a proxy would also carry every
   message after it.
2. **Connect** — a Go client (client.Dialer) dials and completes the handshake, then closes, one dial at a time:
   directly to the room's owner; to the other node, which redirects it there (one redirect, the 307 hop and the
   upgrade hop shown apart); the same with the Dialer remembering where the redirect went
   (client.Dialer.RememberRedirects, its default); and through NGINX proxying the WebSocket (proxy_pass with
   Upgrade and Connection) to the owner. Two nodes, each its own process running the same middleware (a Shard
   rule) over a Go echo server; each variant alternates between a room of each node, so both nodes redirect and
   serve alike; the variants take turns dial by dial in shuffled order, since a dial's cost depends on what the
   dial before left behind; every dial is checked to take its hops and land where it must. The diagnostic row
   runs the same fleet with client and nodes in one process: no dial waits for another process to be scheduled,
   so it is what the code paths cost.
3. **After the redirect** — over a connection already open: an echo round trip of 64 bytes on one connection
   (p50/p99); echo round trips per second over 64 connections, each sending its next message when the echo
   arrives; and the server side's CPU per round trip during that run (the echo server's process alone when
   direct; the echo server plus the NGINX worker when proxied, from /proc/<pid>/stat). The rate is bounded by
   whichever core saturates first (perf's progress shows how busy each side was); the CPU per round trip is the
   server's capacity, whatever the client. A redirect is paid once per connection; a proxy, on every message.
4. **Live drain** — a node holding 5,000 open connections (client.Conn, reading; tracked with Track and a
   GorillaConn) drains: every node is told DrainMember with a 4 s ramp, and nothing else is called. The drained
   node's middleware moves each connection by itself as the ramp hands its key off, with a close frame naming its
   new owner. The time runs from the drain's start until the last client is open again on its owner, within the
   10 s window; moved and cut are the drained node's Moves(), and the row is met only when every connection was
   moved, none cut and none lost. The ramp spans what MoveConns' default pacing took before (batches of 1,000,
   four pauses drawn from 0.5–1.5 s), so the time compares with earlier tables; the peak, the most reconnects one
   receiving node accepted in a 100 ms bucket, per second, does not: a ramp moves keys every 100 ms rather than
   1,000 at once. Each round is a fresh process on both cores.
5. **Scale** — Decide on a prebuilt upgrade request by a Shard rule at 8, 64 and 1,024 members (ns and
   allocations per decision), and the server's memory per live connection at 10,000 connections, each upgraded
   (gorilla), registered with Track and read by its own goroutine, in a server process of its own: live heap
   growth after a GC per connection, the goroutines' stacks beside it, and how much of the heap Track's registry
   entry is.

Reading the connect rows: on loopback a connection costs about as much as the request on it, so a redirect's
first hop — a whole connection for one 307, closed by the client within the hop — costs a little more than a
direct dial, and one redirect a little over twice a direct connect, plus, here, what it takes to schedule a
second server process: the one-process diagnostic row is the first part alone. Over a network each hop is dominated by its
round trip: one redirect costs one more round trip than a direct dial, once per connection, and a remembered
one none; a proxy adds its own hop to every message.
`
