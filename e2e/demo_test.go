package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/wsredirect/wsredirect/internal/testtool"
)

// TestDemo runs the README's first command as a user would: it builds
// cmd/wsredirect-demo (a nested module, with the etcd and Prometheus
// ones), starts it on a free port with its embedded etcd, opens the page it
// prints in Chromium, adds simulated clients, joins a room, drains the
// room's node through etcd and watches the page count down to the drain
// and its connections move over the drain's ramp, the room among them to
// the node the front door now names, then undrains it and watches the room
// come back. Then it crashes the node: the room's connection breaks, and
// once the node's lease expires (5 s) the page reconnects it to the new
// owner; a restart brings the room home again. Set
// WSREDIRECT_DEMO_SCREENSHOT=file.png to keep a picture of the page during
// the drain.
func TestDemo(t *testing.T) {
	browser := startChromium(t)
	front := startDemo(t)
	tab := openTab(t, browser, &page{url: front + "/"})
	tab.do(chromedp.EmulateViewport(1280, 1000))
	const room = "e2e-room"
	card := func(node string) string { return fmt.Sprintf(`document.querySelector('.node[data-node=%q]')`, node) }
	button := func(node, action string) chromedp.Action[chromedp.Void] {
		return chromedp.Click(chromedp.CSS(fmt.Sprintf(`button[data-node=%q][data-action=%q]`, node, action)))
	}

	tab.do(chromedp.Click(chromedp.CSS("#add-clients")))
	tab.poll(`document.querySelector("#clients").textContent === "50"`)
	tab.do(chromedp.SendKeys(chromedp.CSS("#room"), room), chromedp.Click(chromedp.CSS(`#join button[type="submit"]`)))
	first := tab.roomNode(room, "")
	assert.Equal(t, ringOwner(t, front, room), first, "the page shows the node the ring names")

	// A drain takes effect Settle (2 s) after its record is written: the
	// card counts down, then the connections move over the ramp (5 s).
	tab.do(button(first, "drain"))
	tab.poll(card(first) + `.querySelector(".progress-text").textContent.startsWith("draining in")`)
	tab.poll(card(first) + `.querySelector(".progress-text").textContent.startsWith("moving its connections: ")`)
	if name := os.Getenv("WSREDIRECT_DEMO_SCREENSHOT"); name != "" {
		tab.screenshot(name)
	}
	second := tab.roomNode(room, first)
	assert.Equal(t, ringOwner(t, front, room), second, "the room moved to its owner while %s drains", first)
	tab.poll(card(first) + `.classList.contains("draining")`)
	tab.poll(fmt.Sprintf(`document.querySelector('[data-room=%q] .log').textContent.includes("moved from %s to %s")`, room, first, second))
	tab.poll(card(first) + `.querySelector(".progress-text").textContent.startsWith("drained: ")`)

	tab.do(button(first, "undrain"))
	assert.Equal(t, first, tab.roomNode(room, second), "undrain moves the room home")

	// A crash: no revoke, so the front door keeps naming the node until
	// its lease expires; then the page's reconnects reach the new owner.
	tab.poll(card(first) + `.querySelector('button[data-action="crash"]:not([disabled])') !== null`)
	tab.do(button(first, "crash"))
	tab.poll(card(first) + `.dataset.state === "down"`)
	tab.poll(fmt.Sprintf(`document.querySelector('[data-room=%q] .log').textContent.includes("connection lost")`, room))
	third := tab.roomNode(room, first) // bounded by wait, well over the 5 s TTL
	assert.Equal(t, ringOwner(t, front, room), third, "the room moved once the lease expired")
	tab.poll(card(first) + `.dataset.state === "gone"`)
	tab.poll(fmt.Sprintf(`document.querySelector('[data-room=%q] .log').textContent.includes("reconnected on %s (%s is gone)")`, room, third, first))

	tab.do(button(first, "restart"))
	assert.Equal(t, first, tab.roomNode(room, third), "a restart, on a new lease, brings the room home")
	tab.poll(card(first) + `.dataset.state === "serving"`)
}

// startDemo builds the demo's module and starts it on a free port, and
// returns the front door's URL from its first line. At cleanup it
// interrupts the demo and expects a clean exit.
func startDemo(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wsredirect-demo")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join("..", "cmd", "wsredirect-demo") // a nested module
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build:\n%s", out)

	var output testtool.Buffer
	demo := exec.Command(bin, "-addr", "127.0.0.1:0")
	demo.Stderr = &output
	stdout, err := demo.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, demo.Start())
	exited := make(chan error, 1)
	go func() { exited <- demo.Wait() }()

	lines := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		first, _ := r.ReadString('\n')
		lines <- first
		output.Write([]byte(first))
		io.Copy(&output, r)
	}()
	t.Cleanup(func() {
		demo.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			assert.NoError(t, err, "the demo exits cleanly on SIGINT:\n%s", output.String())
		case <-time.After(15 * time.Second):
			demo.Process.Kill()
			t.Errorf("the demo did not exit within 15s of SIGINT:\n%s", output.String())
		}
		if t.Failed() {
			t.Logf("demo output:\n%s", output.String())
		}
	})

	var first string
	select {
	case first = <-lines:
	case err := <-exited:
		t.Fatalf("the demo exited at start (%v):\n%s", err, output.String())
	case <-time.After(wait):
		t.Fatalf("the demo printed nothing in %s:\n%s", wait, output.String())
	}
	m := regexp.MustCompile(`^front door: (http://127\.0\.0\.1:\d+)\n$`).FindStringSubmatch(first)
	require.NotNil(t, m, "first line %q", first)
	return m[1]
}

// roomNode waits until the page shows room on a node other than not, and
// returns that node.
func (tb *tab) roomNode(room, not string) string {
	tb.t.Helper()
	raw := tb.poll(fmt.Sprintf(`((n) => n && n !== %q && n)(document.querySelector('[data-room=%q] .node-badge')?.dataset.node)`, not, room))
	var node string
	require.NoError(tb.t, json.Unmarshal(raw, &node))
	return node
}

// screenshot saves the page as a PNG.
func (tb *tab) screenshot(name string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, wait)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(tb.t, err)
	require.NoError(tb.t, os.WriteFile(name, png, 0o644))
	tb.t.Logf("screenshot: %s", name)
}

// ringOwner asks the front door which node serves new connections to room.
func ringOwner(t *testing.T, front, room string) string {
	t.Helper()
	res, err := http.Get(front + "/debug/ring?key=" + room)
	require.NoError(t, err)
	defer res.Body.Close()
	var ring struct {
		Owner string `json:"owner"`
	}
	require.NoError(t, json.NewDecoder(res.Body).Decode(&ring))
	require.NotEmpty(t, ring.Owner, "the front door names an owner for %s", room)
	return strings.TrimSpace(ring.Owner)
}
