// Command wsprobe dials a WebSocket URL, follows its redirects and prints
// every hop: like curl -v, for WebSocket redirect chains.
//
// Usage:
//
//	wsprobe [flags] ws://host/path
//
// For each hop it prints the URL dialled, the response status with the time
// it took and the Location; then the final response's headers, and with
// -send and -read the messages exchanged. Redirects are followed by package
// github.com/wsredirect/wsredirect/client, with its rules: a hop cap, loop
// detection, no wss→ws downgrade unless -allow-downgrade, credentials
// dropped once the origin changes, 503 Retry-After honoured.
//
// Flags:
//
//	-H "Key: Value"    request header, repeatable
//	-max-hops N        redirects to follow (default 10)
//	-k                 accept any TLS certificate
//	-allow-downgrade   follow redirects from wss to ws
//	-timeout D         bound for the whole chain and the exchange (default 10s)
//	-send MSG          send MSG as a text message once connected
//	-read N            messages to read and print (default 1 with -send)
//
// Exit status:
//
//	0  connected (and the exchange, if any, completed)
//	1  connected, but sending or reading messages failed
//	2  bad usage
//	3  the redirect chain failed: hop cap, loop, downgrade refused, a
//	   Location that cannot be followed, or a final status other than 101
//	4  network error: connection refused, TLS failure, timeout
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wsredirect/wsredirect/client"
)

// Exit codes; see the package doc.
const (
	exitOK       = 0
	exitExchange = 1
	exitUsage    = 2
	exitChain    = 3
	exitNetwork  = 4
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// headerFlag collects repeated -H flags.
type headerFlag http.Header

func (h headerFlag) String() string { return "" }

func (h headerFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(k) == "" {
		return errors.New(`want "Key: Value"`)
	}
	http.Header(h).Add(strings.TrimSpace(k), strings.TrimSpace(val))
	return nil
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsprobe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	header := headerFlag{}
	fs.Var(header, "H", "request `header` \"Key: Value\", repeatable")
	maxHops := fs.Int("max-hops", client.DefaultMaxHops, "redirects to follow")
	insecure := fs.Bool("k", false, "accept any TLS certificate")
	allowDowngrade := fs.Bool("allow-downgrade", false, "follow redirects from wss to ws")
	timeout := fs.Duration("timeout", 10*time.Second, "bound for the whole chain and the exchange")
	send := fs.String("send", "", "send `MSG` as a text message once connected")
	read := fs.Int("read", 0, "`N` messages to read and print (default 1 with -send)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: wsprobe [flags] ws://host/path

Dials a WebSocket URL, follows redirects and prints each hop (URL, status,
elapsed time, Location) and the final response's headers.

Flags:
`)
		fs.PrintDefaults()
		fmt.Fprint(stderr, `
Exit status:
  0  connected (and the exchange, if any, completed)
  1  connected, but sending or reading messages failed
  2  bad usage
  3  the redirect chain failed: hop cap, loop, downgrade refused, a Location
     that cannot be followed, or a final status other than 101
  4  network error: connection refused, TLS failure, timeout
`)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	if *send != "" && !isSet(fs, "read") {
		*read = 1
	}
	if *maxHops == 0 {
		*maxHops = -1 // the flag means what it says; the Dialer's 0 means default
	}

	d := client.Dialer{Dialer: *websocket.DefaultDialer, MaxHops: *maxHops, AllowDowngrade: *allowDowngrade}
	if *insecure {
		d.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	c, resp, hops, err := d.DialTrace(ctx, fs.Arg(0), http.Header(header))
	var cerr *client.Error
	if errors.As(err, &cerr) {
		hops = cerr.Hops
	}
	for i, h := range hops {
		printHop(stdout, i+1, h)
	}
	if resp != nil {
		printHeader(stdout, resp.Header)
	}
	if err != nil {
		fmt.Fprintln(stderr, "wsprobe:", err)
		return exitCode(err)
	}
	defer c.Close()
	fmt.Fprintf(stdout, "* connected to %s after %d redirect(s)\n", hops[len(hops)-1].URL, len(hops)-1)

	if *send != "" {
		if err := c.WriteMessage(websocket.TextMessage, []byte(*send)); err != nil {
			fmt.Fprintln(stderr, "wsprobe: send:", err)
			return exitExchange
		}
		fmt.Fprintf(stdout, "> %s\n", *send)
	}
	if *read > 0 {
		if dl, ok := ctx.Deadline(); ok {
			c.SetReadDeadline(dl)
		}
	}
	for range *read {
		mt, p, err := c.ReadMessage()
		if err != nil {
			fmt.Fprintln(stderr, "wsprobe: read:", err)
			return exitExchange
		}
		if mt == websocket.BinaryMessage {
			fmt.Fprintf(stdout, "< [%d bytes binary] %x\n", len(p), p)
			continue
		}
		fmt.Fprintf(stdout, "< %s\n", p)
	}
	return exitOK
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func printHop(w io.Writer, n int, h client.Hop) {
	fmt.Fprintf(w, "* hop %d: %s\n", n, h.URL)
	if h.Status == 0 {
		fmt.Fprintf(w, "  no response (%s)\n", h.Elapsed.Round(time.Microsecond))
		return
	}
	fmt.Fprintf(w, "< %d %s (%s)\n", h.Status, http.StatusText(h.Status), h.Elapsed.Round(time.Microsecond))
	if h.Location != "" {
		fmt.Fprintf(w, "< Location: %s\n", h.Location)
	}
	if h.RetryAfter > 0 {
		fmt.Fprintf(w, "< Retry-After: %s\n", h.RetryAfter)
	}
}

func printHeader(w io.Writer, h http.Header) {
	fmt.Fprintln(w, "* final response headers:")
	for _, k := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[k] {
			fmt.Fprintf(w, "< %s: %s\n", k, v)
		}
	}
}

// exitCode tells a chain that went wrong from a network that did: the chain
// failed when its last hop got a response, the network when it got none or
// the timeout ran out.
func exitCode(err error) int {
	var cerr *client.Error
	if !errors.As(err, &cerr) {
		return exitUsage // a URL the dialer would not take
	}
	if errors.Is(err, context.DeadlineExceeded) || len(cerr.Hops) == 0 || cerr.Hops[len(cerr.Hops)-1].Status == 0 {
		return exitNetwork
	}
	return exitChain
}
