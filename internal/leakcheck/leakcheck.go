// Package leakcheck fails tests that leave goroutines running: a small
// stand-in for go.uber.org/goleak, which the module may not depend on.
//
// Call [Check] at the start of a test, or [VerifyTestMain] from a package's
// TestMain. Both snapshot the goroutines running at the start and, at the
// end, wait a bounded time (2 seconds unless [MaxWait] says otherwise) for
// those started since to exit; whatever is still running then is reported
// with its stack. Goroutines of the testing package and the runtime, and
// the one os/signal starts once for the process, are not counted.
//
// Check is for tests that do not run in parallel with others (no
// t.Parallel in the test or its siblings): a parallel sibling's goroutines
// would count as this test's. VerifyTestMain has no such limit.
package leakcheck

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// DefaultMaxWait is how long goroutines started during a test are given to
// exit once it ends.
const DefaultMaxWait = 2 * time.Second

// Option tunes a check.
type Option func(*config)

type config struct {
	maxWait time.Duration
	ignore  []string
}

// MaxWait sets how long goroutines started during the test are given to
// exit before they count as leaked. Default: [DefaultMaxWait].
func MaxWait(d time.Duration) Option { return func(c *config) { c.maxWait = d } }

// IgnoreTopFunction does not count goroutines whose innermost frame is in
// function fn, spelled as in a stack trace ("net/http.(*persistConn).readLoop"):
// for a known long-lived goroutine that is not the test's doing.
func IgnoreTopFunction(fn string) Option {
	return func(c *config) { c.ignore = append(c.ignore, fn) }
}

func newConfig(opts []Option) *config {
	c := &config{maxWait: DefaultMaxWait}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Check snapshots the goroutines running now and, when t and its subtests
// have finished (t.Cleanup), fails t with the stacks of those started since
// that are still running after the wait.
func Check(t testing.TB, opts ...Option) {
	t.Helper()
	c := newConfig(opts)
	before := snapshot()
	t.Cleanup(func() {
		if leaked := c.wait(before); len(leaked) > 0 {
			t.Errorf("leakcheck: %s", report(leaked, "during the test", c.maxWait))
		}
	})
}

// VerifyTestMain runs the package's tests and, when they pass, checks that
// no goroutine started while they ran is still running after the wait. It
// exits the process with m.Run's code, or 1 when goroutines leaked. Use it
// as the whole of TestMain:
//
//	func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
func VerifyTestMain(m *testing.M, opts ...Option) {
	os.Exit(verifyMain(m.Run, os.Stderr, opts...))
}

// verifyMain is VerifyTestMain without the exit, for testing.
func verifyMain(run func() int, stderr io.Writer, opts ...Option) int {
	c := newConfig(opts)
	before := snapshot()
	code := run()
	if code != 0 {
		// The failures are reported already; a failed test often leaves
		// goroutines behind, which would only add noise.
		return code
	}
	if leaked := c.wait(before); len(leaked) > 0 {
		fmt.Fprintf(stderr, "leakcheck: goroutines outlived the tests: %s\n", report(leaked, "while they ran", c.maxWait))
		return 1
	}
	return 0
}

// goroutine is one goroutine of a stack dump.
type goroutine struct {
	id      uint64
	state   string // as in the header: "chan receive", "IO wait, 2 minutes"
	top     string // innermost function, arguments stripped
	creator string // function of the "created by" line, "" for the main goroutine
	stack   string // the whole block, header included
}

// snapshot returns the IDs of the goroutines running now.
func snapshot() map[uint64]bool {
	ids := make(map[uint64]bool)
	for _, g := range goroutines() {
		ids[g.id] = true
	}
	return ids
}

// wait polls, with growing pauses up to c.maxWait, until no goroutine
// counts as leaked, and returns those that still do.
func (c *config) wait(before map[uint64]bool) []goroutine {
	deadline := time.Now().Add(c.maxWait)
	pause := time.Millisecond
	for {
		leaked := c.leaked(before)
		if len(leaked) == 0 || !time.Now().Before(deadline) {
			return leaked
		}
		time.Sleep(min(pause, time.Until(deadline)))
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// leaked returns the goroutines running now that are not in before and are
// not ignored.
func (c *config) leaked(before map[uint64]bool) []goroutine {
	self := currentID()
	var out []goroutine
	for _, g := range goroutines() {
		if before[g.id] || g.id == self || c.ignored(g) {
			continue
		}
		out = append(out, g)
	}
	return out
}

// ignoredTop are innermost functions of goroutines that belong to the
// testing package or the process, not to a test.
var ignoredTop = []string{
	"testing.RunTests",
	"testing.(*T).Run",
	"testing.(*T).Parallel",
	"testing.(*F).Fuzz",
	"testing.runFuzzTests",
	"testing.runFuzzing",
	"os/signal.signal_recv",
	"os/signal.loop",
}

func (c *config) ignored(g goroutine) bool {
	if slices.Contains(ignoredTop, g.top) || slices.Contains(c.ignore, g.top) {
		return true
	}
	// Runtime workers (GC, scavenger, finalizers, timers), which a dump
	// shows with GOTRACEBACK=system or when they run user code.
	if strings.HasPrefix(g.creator, "runtime.") || g.creator == "" && strings.HasPrefix(g.top, "runtime.") {
		return true
	}
	// A test that is still running, waiting in the testing package for its
	// subtests, or (with parallel tests) a sibling test.
	return strings.HasPrefix(g.top, "testing.") && strings.HasPrefix(g.creator, "testing.")
}

// goroutines parses a dump of all goroutines.
func goroutines() []goroutine {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []goroutine
	for _, block := range strings.Split(string(buf), "\n\n") {
		if g, ok := parse(block); ok {
			out = append(out, g)
		}
	}
	return out
}

// parse reads one block of a dump:
//
//	goroutine 7 [chan receive]:
//	main.worker(0xc000010000)
//		/src/main.go:12 +0x25
//	created by main.main in goroutine 1
//		/src/main.go:8 +0x3c
func parse(block string) (goroutine, bool) {
	block = strings.TrimSpace(block)
	header, rest, _ := strings.Cut(block, "\n")
	idText, ok := strings.CutPrefix(header, "goroutine ")
	if !ok {
		return goroutine{}, false
	}
	idText, state, _ := strings.Cut(idText, " ")
	id, err := strconv.ParseUint(idText, 10, 64)
	if err != nil {
		return goroutine{}, false
	}
	g := goroutine{
		id:    id,
		state: strings.TrimSuffix(strings.TrimPrefix(state, "["), "]:"),
		stack: block,
	}
	for line := range strings.SplitSeq(rest, "\n") {
		if line == "" || line[0] == '\t' {
			continue // a frame's file and line
		}
		if fn, ok := strings.CutPrefix(line, "created by "); ok {
			fn, _, _ = strings.Cut(fn, " in goroutine ")
			g.creator = fn
			continue
		}
		if g.top == "" && !strings.HasPrefix(line, "...") {
			g.top = funcName(line)
		}
	}
	return g, true
}

// funcName strips the arguments from a frame's function line:
// "net/http.(*conn).serve(0xc0001, {0x9, 0xc0002})" → "net/http.(*conn).serve".
func funcName(line string) string {
	if i := strings.LastIndex(line, "("); i > 0 && strings.HasSuffix(line, ")") {
		return line[:i]
	}
	return line
}

// currentID is the ID of the calling goroutine.
func currentID() uint64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
	idText, _ := strings.CutPrefix(string(buf[:n]), "goroutine ")
	idText, _, _ = strings.Cut(idText, " ")
	id, _ := strconv.ParseUint(idText, 10, 64)
	return id
}

// report lists leaked goroutines, stacks included.
func report(leaked []goroutine, when string, waited time.Duration) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%d goroutine(s) started %s still running %v after the end:", len(leaked), when, waited)
	for _, g := range leaked {
		fmt.Fprintf(&b, "\n\n%s", g.stack)
	}
	return b.String()
}
