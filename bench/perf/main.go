// Command perf makes issue 13's case for redirecting, measured against a
// proxy, in one command (make perf): it starts what it needs on 127.0.0.1
// only — Go servers (this binary again, in a server mode, so their CPU can
// be read from /proc), NGINX with a generated config in a temp dir, wrk —
// runs five bounded scenarios, and prints one table with the machine it
// ran on.
//
//  1. router capacity: upgrade-shaped requests answered with a 307, req/s,
//     wsredirect (Host rule; Shard rule at 64 members) against a hand-written
//     Go handler and NGINX's return 307, all driven by wrk;
//  2. connect: p50/p99 of dial + handshake, direct, through one redirect,
//     through a remembered redirect, and through an NGINX WebSocket proxy;
//  3. after the redirect: echo round trips, messages/s and server CPU per
//     message, direct against proxied;
//  4. live drain: a drain's ramp moving 5,000 open connections to their
//     owners, the middleware moving each by itself;
//  5. scale: Decide at 8/64/1024 members and memory per live connection.
//
// Variants of a scenario are interleaved within each round, the rounds are
// repeated (5 by default), and each figure is the median over rounds with
// the min–max spread; ratios are taken within a round, then their median.
// With two or more CPUs the servers (Go with GOMAXPROCS=1, NGINX with
// worker_processes 1) share CPU 0 and the load generators (this process,
// wrk) run on CPU 1, so NGINX and Go get one core each and never compete
// with their clients. Every process it starts is stopped when it ends,
// also on Ctrl-C, and dies with it should it be killed.
//
// Usage, from the repository root (make perf runs it so, with -doc):
//
//	perf [-rounds 5] [-doc docs/benchmarks.md] [-quick] [-only 1,3] [-cpuprofile DIR] [-nopin]
//
// -doc rewrites that file's "## Against a proxy (make perf)" section with
// the table; -quick runs every scenario briefly and small, to check the
// harness (not to publish); -only runs some scenarios; -cpuprofile has
// each Go server write a CPU profile of its run into DIR (go tool pprof
// -top DIR/go-router.pprof); -nopin runs everything on every CPU.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config sizes every scenario; defaults keep make perf under ten minutes on
// two cores.
type config struct {
	rounds int

	wrkDuration time.Duration // each wrk run of scenario 1
	wrkPasses   int           // wrk runs per variant per round, in alternating order
	wrkConns    int           // wrk's keep-alive connections
	warmup      time.Duration // a discarded wrk run per variant first

	dials int // scenario 2: handshakes per variant per round

	roundTrips  int           // scenario 3: 1-connection echo round trips per variant per round
	msgConns    int           // scenario 3: connections of the throughput run
	msgDuration time.Duration // scenario 3: each throughput run

	drainConns  int           // scenario 4: connections on the drained node
	drainRamp   time.Duration // scenario 4: the drain's ramp
	drainWindow time.Duration // scenario 4: the bound for every client to be back

	decideIters int // scenario 5: decisions per timing
	trackConns  int // scenario 5: live connections the memory figure is taken at

	pin bool // servers on CPU 0, load generators on CPU 1
}

func defaultConfig() config {
	return config{
		rounds:      5,
		wrkDuration: time.Second,
		wrkPasses:   4,
		wrkConns:    64,
		warmup:      time.Second,
		dials:       400,
		roundTrips:  4000,
		msgConns:    64,
		msgDuration: 3 * time.Second,
		drainConns:  5000,
		drainRamp:   drainRamp,
		drainWindow: 10 * time.Second,
		decideIters: 300_000,
		trackConns:  10000,
		pin:         true,
	}
}

// quickConfig checks that every part of the harness works, in seconds; its
// figures mean little.
func quickConfig() config {
	return config{
		rounds:      2,
		wrkDuration: time.Second, // wrk's shortest
		wrkPasses:   1,
		wrkConns:    8,
		warmup:      100 * time.Millisecond,
		dials:       20,
		roundTrips:  200,
		msgConns:    4,
		msgDuration: 300 * time.Millisecond,
		drainConns:  60,
		drainRamp:   drainRamp,
		drainWindow: 10 * time.Second,
		decideIters: 3000,
		trackConns:  100,
		pin:         true,
	}
}

func main() {
	if spec := os.Getenv(serveEnv); spec != "" {
		os.Exit(serveMain(spec))
	}
	rounds := flag.Int("rounds", 0, "rounds of every scenario (default 5; 2 with -quick)")
	doc := flag.String("doc", "", "rewrite this file's \"## Against a proxy (make perf)\" section with the table")
	quick := flag.Bool("quick", false, "small and brief: checks the harness, figures not for publishing")
	noPin := flag.Bool("nopin", false, "do not pin servers and load generators to separate CPUs")
	only := flag.String("only", "", "run only these scenarios, as 2 or 1,3 (default: all five)")
	cpuprofile := flag.String("cpuprofile", "", "have each Go server write a CPU profile of its run into this directory (go-router.pprof, node-b.pprof…)")
	flag.Parse()

	cfg := defaultConfig()
	if *quick {
		cfg = quickConfig()
	}
	if *rounds > 0 {
		cfg.rounds = *rounds
	}
	cfg.pin = cfg.pin && !*noPin && cpuCount() >= 2 && haveTaskset()
	if cfg.pin && os.Getenv(pinnedEnv) == "" {
		// Load generators on CPU 1: run again there. Exec keeps the pid,
		// so make and Ctrl-C see the same process.
		if err := execPinned(); err != nil {
			fmt.Fprintf(os.Stderr, "perf: cannot pin to CPU 1 (%v); running unpinned\n", err)
			cfg.pin = false
		}
	}

	var err error
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	raiseFileLimit()

	machine0, own0 := machineCPU(), ownCPU()
	h := newHarness(cfg)
	h.only = *only
	if *cpuprofile != "" {
		if h.profileDir, err = filepath.Abs(*cpuprofile); err == nil {
			err = os.MkdirAll(h.profileDir, 0o755)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "perf:", err)
			os.Exit(2)
		}
	}
	report, err := h.run(ctx)
	h.cleanup()
	if report != nil {
		report.otherCPU = (machineCPU() - machine0) - (ownCPU() - own0)
	}
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "perf: interrupted; every process it started is stopped")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "perf:", err)
		os.Exit(1)
	}
	fmt.Print(report.markdown())
	if *doc != "" {
		if err := writeDoc(*doc, report); err != nil {
			fmt.Fprintln(os.Stderr, "perf:", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "perf: wrote the table into %s\n", *doc)
	}
}

// run measures every scenario in turn and returns the report.
func (h *harness) run(ctx context.Context) (*report, error) {
	rep := &report{cfg: h.cfg, started: time.Now(), loadBefore: loadAvg()}
	rep.machine, rep.placement = h.machine(), h.placement()
	h.progress("machine: %s", rep.machine)
	h.progress("load average before: %s", rep.loadBefore)
	h.progress("%s", h.placement())

	scenarios := []struct {
		name string
		run  func(context.Context) ([]row, error)
	}{
		{"router capacity", h.routerCapacity},
		{"connect", h.connect},
		{"after the redirect", h.messages},
		{"live drain", h.liveDrain},
		{"scale", h.scale},
	}
	for i, s := range scenarios {
		if h.only != "" && !slices.Contains(strings.Split(h.only, ","), strconv.Itoa(i+1)) {
			continue
		}
		h.progress("== %d/%d %s", i+1, len(scenarios), s.name)
		start := time.Now()
		rows, err := s.run(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		rep.rows = append(rep.rows, rows...)
		h.progress("   %s done in %v", s.name, time.Since(start).Round(100*time.Millisecond))
	}
	rep.took = time.Since(rep.started)
	rep.loadAfter = loadAvg()
	h.progress("load average after: %s", rep.loadAfter)
	return rep, nil
}

// progress prints a line of progress on stderr; the table goes to stdout.
func (h *harness) progress(format string, args ...any) {
	fmt.Fprintf(h.log, "[perf %5.1fs] %s\n", time.Since(h.start).Seconds(), fmt.Sprintf(format, args...))
}

// machine is the line that says where the figures come from.
func (h *harness) machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	nginx := "not installed"
	if h.nginxPath != "" {
		nginx = h.nginxVersion
	}
	wrk := "not installed"
	if h.wrkPath != "" {
		wrk = h.wrkVersion
	}
	return fmt.Sprintf("%s, %d cores, %s, %s/%s, nginx %s, wrk %s, Linux %s",
		cpu, cpuCount(), runtime.Version(), runtime.GOOS, runtime.GOARCH, nginx, wrk, kernel)
}

// placement says which CPUs the servers and the load generators run on.
func (h *harness) placement() string {
	if h.cfg.pin {
		return "placement: servers on CPU 0 (Go GOMAXPROCS=1, NGINX worker_processes 1), load generators (perf's clients, wrk -t1) on CPU 1"
	}
	return fmt.Sprintf("placement: not pinned (%d CPUs); Go servers GOMAXPROCS=1, NGINX worker_processes 1, wrk -t1", cpuCount())
}

// loadAvg returns /proc/loadavg's three load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// cpuCount is the machine's CPUs, whatever this process is pinned to.
func cpuCount() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if k, _, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "processor" {
			n++
		}
	}
	return max(n, 1)
}

// machineCPU is the CPU time every process of the machine has used since
// boot: /proc/stat's user, nice and system time (interrupts left out, as
// they are not charged to any process).
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle …
	var ticks int64
	for _, v := range f[1:min(len(f), 4)] {
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * clockTick
}

// ownCPU is the CPU time this process and every child it has waited for
// (Go servers, NGINX with its workers, wrk) have used.
func ownCPU() time.Duration {
	var self, kids syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
}
