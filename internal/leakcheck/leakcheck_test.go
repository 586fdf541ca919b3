package leakcheck

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { VerifyTestMain(m) }

// recorder is a testing.TB that keeps what Check reports and the cleanups
// it registers, so a test can see Check fail without failing itself.
type recorder struct {
	testing.TB // the real test, for whatever is not recorded

	mu       sync.Mutex
	errors   []string
	cleanups []func()
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

// end runs the cleanups, last registered first, as the testing package does
// when a test ends, and returns what was reported.
func (r *recorder) end() []string {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
	return r.errors
}

// parkedUntil blocks until stop is closed: a goroutine easy to find in a
// stack by its function's name.
func parkedUntil(stop <-chan struct{}) { <-stop }

func TestCheckReportsLeak(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	rec := &recorder{TB: t}
	Check(rec, MaxWait(100*time.Millisecond))
	go parkedUntil(stop)

	start := time.Now()
	errs := rec.end()
	require.Len(t, errs, 1)
	assert.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond, "the leak was given the wait")
	assert.Contains(t, errs[0], "1 goroutine(s) started during the test still running 100ms after the end:")
	assert.Contains(t, errs[0], "[chan receive]", "the stack's header")
	assert.Contains(t, errs[0], "leakcheck.parkedUntil(", "the leaked function")
	assert.Contains(t, errs[0], "created by github.com/wsredirect/wsredirect/internal/leakcheck.TestCheckReportsLeak")
	t.Logf("reported:\n%s", errs[0])
}

func TestCheckClean(t *testing.T) {
	rec := &recorder{TB: t}
	Check(rec)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { time.Sleep(time.Millisecond) })
	}
	wg.Wait()
	// Exits on its own while Check waits.
	go func() { time.Sleep(200 * time.Millisecond) }()
	t.Run("subtest", func(t *testing.T) {})

	start := time.Now()
	assert.Empty(t, rec.end())
	assert.Less(t, time.Since(start), DefaultMaxWait, "Check returns once the goroutines are gone")
}

func TestCheckIgnoresEarlierGoroutines(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	go parkedUntil(stop) // running before Check: not the test's
	rec := &recorder{TB: t}
	Check(rec, MaxWait(50*time.Millisecond))
	assert.Empty(t, rec.end())
}

func TestIgnoreTopFunction(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	rec := &recorder{TB: t}
	Check(rec, MaxWait(50*time.Millisecond), IgnoreTopFunction("github.com/wsredirect/wsredirect/internal/leakcheck.parkedUntil"))
	go parkedUntil(stop)
	assert.Empty(t, rec.end())
}

// TestCheckHTTPServer is the leak the check is for: a test server not
// closed leaves its accept loop running.
func TestCheckHTTPServer(t *testing.T) {
	rec := &recorder{TB: t}
	Check(rec, MaxWait(100*time.Millisecond))
	srv := httptest.NewServer(http.NotFoundHandler())
	res, err := http.Get(srv.URL)
	require.NoError(t, err)
	res.Body.Close()
	errs := rec.end()
	srv.Close()
	require.Len(t, errs, 1)
	assert.Contains(t, errs[0], "net/http.(*Server).Serve")

	rec = &recorder{TB: t}
	Check(rec)
	srv = httptest.NewServer(http.NotFoundHandler())
	res, err = http.Get(srv.URL)
	require.NoError(t, err)
	res.Body.Close()
	srv.Close() // also closes the default client's idle connections
	assert.Empty(t, rec.end())
}

func TestVerifyMain(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	var stderr bytes.Buffer
	code := verifyMain(func() int { go parkedUntil(stop); return 0 }, &stderr, MaxWait(50*time.Millisecond))
	assert.Equal(t, 1, code, "a leak fails passing tests")
	assert.Contains(t, stderr.String(), "leakcheck: goroutines outlived the tests: 1 goroutine(s) started while they ran still running")
	assert.Contains(t, stderr.String(), "leakcheck.parkedUntil(")

	stderr.Reset()
	code = verifyMain(func() int { go parkedUntil(stop); return 2 }, &stderr, MaxWait(50*time.Millisecond))
	assert.Equal(t, 2, code, "failing tests keep their code")
	assert.Empty(t, stderr.String(), "and are not checked")

	code = verifyMain(func() int { go time.Sleep(10 * time.Millisecond); return 0 }, &stderr)
	assert.Equal(t, 0, code)
	assert.Empty(t, stderr.String())
}

func TestParse(t *testing.T) {
	g, ok := parse(`goroutine 42 [IO wait, 2 minutes]:
internal/poll.runtime_pollWait(0x7f, 0x72)
	/go/src/runtime/netpoll.go:351 +0x85
net/http.(*conn).serve(0xc000120000, {0x9a0c10, 0xc0000a0000})
	/go/src/net/http/server.go:2102 +0x625
...additional frames elided...
created by net/http.(*Server).Serve in goroutine 7
	/go/src/net/http/server.go:3454 +0x485
`)
	require.True(t, ok)
	assert.Equal(t, uint64(42), g.id)
	assert.Equal(t, "IO wait, 2 minutes", g.state)
	assert.Equal(t, "internal/poll.runtime_pollWait", g.top)
	assert.Equal(t, "net/http.(*Server).Serve", g.creator)

	g, ok = parse("goroutine 1 [running]:\nmain.main()\n\t/src/main.go:5 +0x1d")
	require.True(t, ok)
	assert.Equal(t, "main.main", g.top)
	assert.Empty(t, g.creator)

	_, ok = parse("not a goroutine")
	assert.False(t, ok)

	all := goroutines()
	require.NotEmpty(t, all)
	self := currentID()
	var found bool
	for _, g := range all {
		if g.id == self {
			found = true
			assert.True(t, strings.HasPrefix(g.top, "github.com/wsredirect/wsredirect/internal/leakcheck."), g.top)
			assert.Equal(t, "testing.(*T).Run", g.creator)
		}
	}
	assert.True(t, found, "the dump has the calling goroutine")
}
