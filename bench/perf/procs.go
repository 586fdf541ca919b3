package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Environment variables between perf and the copies of itself it starts.
const (
	serveEnv  = "WSREDIRECT_PERF_SERVE"  // a serveSpec: run as that server
	pinnedEnv = "WSREDIRECT_PERF_PINNED" // already running on CPU 1
)

// harness owns every process and file a run starts, and stops and removes
// them all in cleanup, also after an error or Ctrl-C.
type harness struct {
	cfg   config
	log   io.Writer
	start time.Time
	self  string // this binary, started again in server modes
	tmp   string // nginx configs and logs, the wrk script

	nginxPath, nginxVersion string
	wrkPath, wrkVersion     string

	only       string // scenarios to run ("2,3"); "" runs all
	profileDir string // where Go servers write CPU profiles; "" for none
	fleet      *fleet // scenarios 2 and 3's servers, once started

	mu    sync.Mutex
	procs []*proc
}

func newHarness(cfg config) *harness {
	h := &harness{cfg: cfg, log: os.Stderr, start: time.Now()}
	h.self, _ = os.Executable()
	h.tmp, _ = os.MkdirTemp("", "wsredirect-perf-")
	h.nginxPath, h.nginxVersion = findNginx()
	h.wrkPath, h.wrkVersion = findWrk()
	return h
}

// cleanup stops every process still running, newest first, and removes the
// temp dir.
func (h *harness) cleanup() {
	h.mu.Lock()
	procs := h.procs
	h.procs = nil
	h.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop()
	}
	if h.tmp != "" {
		os.RemoveAll(h.tmp)
	}
}

// proc is a child process: a Go server, NGINX or wrk.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited
	err  error         // its exit status, once done
}

// startProc starts argv on cpus ("0", "1", "0-1"; "" or unpinned runs
// anywhere). It dies with perf: the kernel sends it SIGKILL should perf die
// without cleaning up, and cleanup stops it otherwise.
func (h *harness) startProc(name, cpus string, argv, env []string, files []*os.File, stdout io.Writer) (*proc, error) {
	if h.cfg.pin && cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.ExtraFiles = files
	cmd.Stdout = stdout
	cmd.Stderr = prefixWriter{h.log, name}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p, nil
}

// stop asks p to exit (SIGTERM: NGINX's master then stops its workers) and
// kills it if it has not within three seconds.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// wait waits for p to exit and returns its exit error. When ctx ends or
// limit passes first, it stops p and says so.
func (p *proc) wait(ctx context.Context, limit time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		p.stop()
		return ctx.Err()
	case <-time.After(limit):
		p.stop()
		return fmt.Errorf("%s did not finish within %v", p.name, limit)
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether p has ended, with why.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		if p.err == nil {
			return true, errors.New("exited")
		}
		return true, p.err
	default:
		return false, nil
	}
}

// prefixWriter labels a child's stderr lines with its name.
type prefixWriter struct {
	w    io.Writer
	name string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line != "" {
			fmt.Fprintf(p.w, "   [%s] %s", p.name, line)
		}
	}
	if !strings.HasSuffix(string(b), "\n") {
		fmt.Fprintln(p.w)
	}
	return len(b), nil
}

// startServer starts this binary as a Go server of spec's mode on the CPU
// the servers share, serving lns, which are handed over as open sockets: the
// child binds nothing itself, so it listens on 127.0.0.1 only, and nothing
// races for the ports. perf's copies of lns are closed.
func (h *harness) startServer(name string, spec serveSpec, lns ...*net.TCPListener) (*proc, error) {
	files := make([]*os.File, len(lns))
	for i, l := range lns {
		f, err := l.File()
		if err != nil {
			return nil, err
		}
		defer f.Close()
		defer l.Close()
		files[i] = f
	}
	if h.profileDir != "" {
		spec.CPUProfile = filepath.Join(h.profileDir, name+".pprof")
	}
	js, _ := json.Marshal(spec)
	return h.startProc(name, "0", []string{h.self}, []string{serveEnv + "=" + string(js), "GOMAXPROCS=1"}, files, nil)
}

// listen opens a listener on a free port of 127.0.0.1.
func listen() (*net.TCPListener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return l.(*net.TCPListener), nil
}

// freePort finds a port of 127.0.0.1 free now, for NGINX's listen
// directives (NGINX binds its own sockets).
func freePort() (int, error) {
	l, err := listen()
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitListening waits until addr accepts connections, p exits, or 10 s.
func waitListening(ctx context.Context, p *proc, addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if dead, why := p.exited(); dead {
			return fmt.Errorf("%s: %v", p.name, why)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not listening on %s after 10s: %v", p.name, addr, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cpuTimes is the CPU this process has used so far, and the CPU the
// processes pids have used together.
func cpuTimes(pids []int) (self, others time.Duration, err error) {
	if self, err = cpuTime(os.Getpid()); err != nil {
		return 0, 0, err
	}
	for _, p := range pids {
		t, err := cpuTime(p)
		if err != nil {
			return 0, 0, err
		}
		others += t
	}
	return self, others, nil
}

// clockTick is the unit of /proc's CPU times: USER_HZ is 100 on Linux.
const clockTick = 10 * time.Millisecond

// procStat reads /proc/<pid>/stat and returns its fields after the command
// name. The name, in parentheses, may hold spaces: fields are counted after
// its closing parenthesis, where field 3 (state) is index 0.
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:]), nil
}

// cpuTime is the user+system CPU a process has used so far, all threads,
// from /proc/<pid>/stat (in clock ticks).
func cpuTime(pid int) (time.Duration, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// childrenOf lists the processes whose parent is pid: NGINX's workers.
func childrenOf(pid int) []int {
	var kids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := procStat(n)
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, n)
		}
	}
	return kids
}

// haveTaskset reports whether util-linux's taskset is on PATH.
func haveTaskset() bool {
	_, err := exec.LookPath("taskset")
	return err == nil
}

// execPinned replaces this process with itself on CPU 1, where the load
// generators run; it returns only on failure.
func execPinned() error {
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	argv := append([]string{"taskset", "-c", "1", self}, os.Args[1:]...)
	return syscall.Exec(taskset, argv, append(os.Environ(), pinnedEnv+"=1"))
}

// raiseFileLimit lifts RLIMIT_NOFILE for the thousands of connections of
// scenarios 4 and 5: to 65,536 when allowed (root), else to the hard limit.
// Children inherit it.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return
	}
	want := syscall.Rlimit{Cur: max(lim.Max, 65536), Max: max(lim.Max, 65536)}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// findNginx returns NGINX's path and version ("1.22.1"), or "" when it is
// not installed.
func findNginx() (path, version string) {
	path, err := exec.LookPath("nginx")
	if err != nil {
		if _, err := os.Stat("/usr/sbin/nginx"); err != nil {
			return "", ""
		}
		path = "/usr/sbin/nginx"
	}
	out, _ := exec.Command(path, "-v").CombinedOutput() // "nginx version: nginx/1.22.1"
	version = strings.TrimSpace(string(out))
	if _, v, ok := strings.Cut(version, "nginx/"); ok {
		version = v
	}
	return path, version
}

// findWrk returns wrk's path and version, or "" when it is not installed.
func findWrk() (path, version string) {
	path, err := exec.LookPath("wrk")
	if err != nil {
		return "", ""
	}
	out, _ := exec.Command(path, "-v").CombinedOutput() // "wrk debian/4.1.0-3+b2 [epoll] Copyright…"
	f := strings.Fields(string(out))
	if len(f) >= 2 {
		version = strings.TrimPrefix(f[1], "debian/")
	}
	return path, version
}

// toolHint says how to get a missing peer.
func toolHint(pkg string) string {
	return fmt.Sprintf("skipped: %s is not installed (apt-get install %s; make perf installs it when run as root)", pkg, pkg)
}
