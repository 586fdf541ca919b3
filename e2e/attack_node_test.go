package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/internal/testtool"
)

// TestAttackNode plays attack_test.go's attack and a cued move with the
// helper in Node over real sockets, with the ws package's WebSocket and
// with Node's built-in one (undici), which drops what arrives after the
// helper's close, as browsers do, and fires no close for a failed
// handshake. The fleet answers every request with close frames (ModeClose):
// Node sends no Origin, and the helper cannot follow a 307.
func TestAttackNode(t *testing.T) {
	node := requireNodeWS(t)
	for _, impl := range []string{"ws", "builtin"} {
		t.Run(impl, func(t *testing.T) {
			open := func(t *testing.T) func(string) victims {
				return func(url string) victims { return startNodeVictims(t, node, impl, url) }
			}
			t.Run("ForgedLines", func(t *testing.T) {
				f, chats := newChatFleet(t, "http://127.0.0.1", wsredirect.ModeClose)
				attackRoom(t, f, chats, open(t))
			})
			t.Run("CuedMove", func(t *testing.T) {
				f, chats := newChatFleet(t, "http://127.0.0.1", wsredirect.ModeClose)
				cuedMove(t, f, chats, open(t))
			})
		})
	}
}

// nodeVictims drives node/victim.mjs: one Node process, one helper per
// entry of victimProtocols.
type nodeVictims struct {
	t      *testing.T
	stdin  io.WriteCloser
	mu     sync.Mutex
	logs   [][]event
	ask    sync.Mutex // one state request at a time
	states chan victimState
	stderr testtool.Buffer
}

func startNodeVictims(t *testing.T, node, impl, url string) *nodeVictims {
	t.Helper()
	options, err := json.Marshal(victimOptions)
	require.NoError(t, err)
	protocols, err := json.Marshal(victimProtocols)
	require.NoError(t, err)
	var args []string
	if impl == "builtin" && nodeMajor(t, node) < 22 {
		args = append(args, "--experimental-websocket", "--no-warnings")
	}
	args = append(args, filepath.Join("node", "victim.mjs"), impl, url, string(options), string(protocols))
	cmd := exec.Command(node, args...)
	v := &nodeVictims{t: t, logs: make([][]event, len(victimProtocols)), states: make(chan victimState)}
	cmd.Stderr = &v.stderr
	v.stdin, err = cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			v.line(sc.Bytes())
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		io.WriteString(v.stdin, `{"cmd":"exit"}`+"\n")
		v.stdin.Close()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("victim.mjs: %v\n%s", err, v.stderr.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Errorf("victim.mjs did not exit:\n%s", v.stderr.String())
		}
		if t.Failed() {
			t.Logf("victim.mjs stderr:\n%s", v.stderr.String())
		}
	})
	return v
}

// line files one line of victim.mjs's output.
func (v *nodeVictims) line(b []byte) {
	var head struct {
		Victim int    `json:"victim"`
		Type   string `json:"type"`
	}
	if json.Unmarshal(b, &head) != nil || head.Victim < 0 || head.Victim >= len(v.logs) {
		v.stderr.Write(append([]byte("stdout: "), append(b, '\n')...))
		return
	}
	if head.Type == "state" {
		var st victimState
		json.Unmarshal(b, &st)
		v.states <- st
		return
	}
	var e event
	json.Unmarshal(b, &e)
	v.mu.Lock()
	v.logs[head.Victim] = append(v.logs[head.Victim], e)
	v.mu.Unlock()
}

func (v *nodeVictims) count() int { return len(v.logs) }

func (v *nodeVictims) events(i int) []event {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]event(nil), v.logs[i]...)
}

func (v *nodeVictims) command(cmd map[string]any) {
	v.t.Helper()
	b, err := json.Marshal(cmd)
	require.NoError(v.t, err)
	_, err = v.stdin.Write(append(b, '\n'))
	require.NoError(v.t, err, "victim.mjs:\n%s", v.stderr.String())
}

func (v *nodeVictims) send(i int, text string) {
	v.t.Helper()
	v.command(map[string]any{"cmd": "send", "victim": i, "data": text})
}

func (v *nodeVictims) state(i int) victimState {
	v.t.Helper()
	v.ask.Lock()
	defer v.ask.Unlock()
	v.command(map[string]any{"cmd": "state", "victim": i})
	select {
	case st := <-v.states:
		return st
	case <-time.After(wait):
		require.FailNow(v.t, "victim.mjs did not answer", "%s", v.stderr.String())
		return victimState{}
	}
}

// nodeMajor returns node's major version.
func nodeMajor(t *testing.T, node string) int {
	t.Helper()
	out, err := exec.Command(node, "--version").Output()
	require.NoError(t, err)
	major, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(string(out)), "v"), ".")
	n, err := strconv.Atoi(major)
	require.NoError(t, err, "node --version: %s", out)
	return n
}
