// Command wsprobe dials a WebSocket URL, follows its redirects and prints
// every hop: like curl -v, for WebSocket redirect chains.
//
// Usage:
//
//	wsprobe [flags] ws://host/path [flags]
//
// Flags may come before or after the URL; "--" ends them.
//
// For each hop it prints the URL dialled, the response status with the time
// it took and where the hop pointed next; then the response headers, and
// with -send and -read the messages exchanged. Redirects are followed by
// package github.com/wsredirect/wsredirect/client, with its rules: a hop
// cap, loop detection, no wss→ws downgrade unless -allow-downgrade,
// credentials dropped once the origin changes, 503 Retry-After honoured.
//
// Close-code redirects are followed too. A wsredirect server that answers a
// browser (a request with an Origin header) accepts the upgrade only to
// close it at once with code 4307 and the target, or 4503 and a delay after
// which to dial again. wsprobe prints such a hop as
//
//	< 101 Switching Protocols (1.2ms)
//	< close 4307 → ws://b.example/rooms/7
//
// and goes on to the target, until it reaches the application's connection.
// To tell the two apart, the client offers the subprotocol wsredirect.v1
// after those of -subprotocol: a wsredirect server answering with a close
// frame selects it, so the handshake tells at once whether the connection
// is a redirect. When wsprobe cannot use the handshake (-marker=false, or
// the connection was reached through a close-code redirect, whose
// handshake response the client does not expose) a connection is the
// application's once it delivers a message or stays open for -settle
// without being closed. For the same reason, after a
// close-code redirect the headers printed are those of the hop the dial
// opened, "response headers of hop N", not the final connection's. A
// connection the application closes at once is reported ("closed by the
// server") but was reached: exit status 0 unless -send or -read was asked.
//
// Text from the server (Locations, headers, messages, close reasons,
// errors) is printed with control characters escaped, ESC as \x1b and CR
// as \r, so a server cannot drive the terminal; printable UTF-8 is kept.
//
// Flags:
//
//	-H "Key: Value"    request header, repeatable
//	-subprotocol P     subprotocol to offer, repeatable (also taken from
//	                   -H "Sec-WebSocket-Protocol: a, b")
//	-marker            take the handshake's word on wsredirect.v1, which the
//	                   client always offers (default true; false: judge
//	                   every connection by -settle instead)
//	-settle D          how long a connection the handshake did not vouch for
//	                   must stay open to count as the application's
//	                   (default 200ms, bounded by -timeout)
//	-max-hops N        redirects to follow, HTTP and close-code (default 10)
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
//	   Location or close-code redirect that cannot be followed, or a final
//	   status other than 101
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
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wsredirect/wsredirect/client"
	"github.com/wsredirect/wsredirect/wire"
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

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ", ") }

func (l *listFlag) Set(v string) error {
	if v = strings.TrimSpace(v); v == "" {
		return errors.New("empty")
	}
	*l = append(*l, v)
	return nil
}

const usageHead = `usage: wsprobe [flags] ws://host/path [flags]

Dials a WebSocket URL, follows redirects (HTTP 3xx, and close codes 4307 and
4503 of wsredirect) and prints each hop (URL, status, elapsed time, where it
pointed next) and the response headers. Text from the server is printed
with control characters escaped.

Flags:
`

const usageTail = `
Exit status:
  0  connected (and the exchange, if any, completed)
  1  connected, but sending or reading messages failed
  2  bad usage
  3  the redirect chain failed: hop cap, loop, downgrade refused, a Location
     or close-code redirect that cannot be followed, or a final status other
     than 101
  4  network error: connection refused, TLS failure, timeout
`

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsprobe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	header := headerFlag{}
	fs.Var(header, "H", "request `header` \"Key: Value\", repeatable")
	var protocols listFlag
	fs.Var(&protocols, "subprotocol", "`subprotocol` to offer, repeatable")
	marker := fs.Bool("marker", true, "take the handshake's word on subprotocol "+wire.Subprotocol+", which the client always offers and a server answering with a close-code redirect selects (false: judge every connection by -settle)")
	settleFor := fs.Duration("settle", 200*time.Millisecond, "how long a connection its handshake did not vouch for must stay open to count as the application's (bounded by -timeout)")
	maxHops := fs.Int("max-hops", client.DefaultMaxHops, "redirects to follow, HTTP and close-code")
	insecure := fs.Bool("k", false, "accept any TLS certificate")
	allowDowngrade := fs.Bool("allow-downgrade", false, "follow redirects from wss to ws")
	timeout := fs.Duration("timeout", 10*time.Second, "bound for the whole chain and the exchange")
	send := fs.String("send", "", "send `MSG` as a text message once connected")
	read := fs.Int("read", 0, "`N` messages to read and print (default 1 with -send)")
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHead)
		fs.PrintDefaults()
		fmt.Fprint(stderr, usageTail)
	}
	positional, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	switch {
	case len(positional) == 0:
		fs.Usage()
		return exitUsage
	case len(positional) > 1:
		fmt.Fprintf(stderr, "wsprobe: want one URL, got %d arguments: %s (wsprobe -h for usage)\n",
			len(positional), strings.Join(positional, " "))
		return exitUsage
	}
	if *send != "" && !isSet(fs, "read") {
		*read = 1
	}
	asked := *maxHops
	if *maxHops == 0 {
		*maxHops = -1 // the flag means what it says; the Dialer's 0 means default
	}
	target := positional[0]
	if !strings.Contains(target, "://") {
		// host:port/path, the usual way to type it.
		target = "ws://" + strings.TrimPrefix(target, "//")
		fmt.Fprintf(stderr, "wsprobe: no scheme in %s: dialling %s\n", clean(positional[0]), clean(target))
	}

	f := newFollower()
	d := client.Dialer{Dialer: *websocket.DefaultDialer, MaxHops: *maxHops, AllowDowngrade: *allowDowngrade, Jitter: f.jitter}
	d.Subprotocols = protocols // then any of a Sec-WebSocket-Protocol header, then the marker: the Dialer merges them
	trusted := *marker
	if *insecure {
		d.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	c, resp, err := d.Connect(ctx, target, http.Header(header))
	if err != nil {
		var cerr *client.Error
		if errors.As(err, &cerr) {
			printHops(stdout, cerr.Hops)
		}
		if resp != nil {
			printHeader(stdout, "* final response headers:", resp.Header)
		}
		say(stderr, err, asked)
		return exitCode(err)
	}
	// The hop whose response Connect returned: the last one whose headers
	// are in view.
	respHop := len(c.Hops())
	f.start(ctx, c)
	defer func() {
		cancel()
		c.Close()
		f.stop()
	}()

	v := f.settle(trusted, trusted && resp.Header.Get("Sec-Websocket-Protocol") == wire.Subprotocol, *settleFor)
	printHops(stdout, v.hops)
	if len(v.hops) == respHop {
		printHeader(stdout, "* final response headers:", resp.Header)
	} else {
		printHeader(stdout, fmt.Sprintf("* response headers of hop %d:", respHop), resp.Header)
	}
	if v.err != nil {
		if code, ok := chainFailure(stdout, stderr, v, asked); ok {
			return code
		}
	}
	last := v.hops[len(v.hops)-1]
	fmt.Fprintf(stdout, "* connected to %s after %d redirect(s)\n", clean(last.URL), redirects(v.hops))
	if v.err != nil && *send == "" && *read == 0 {
		// Connected, which is all that was asked: a close is news, not a
		// failure, and a timeout only ended the wait for one.
		if !errors.Is(v.err, context.DeadlineExceeded) {
			fmt.Fprintln(stdout, "* closed by the server:", clean(v.err.Error()))
		}
		return exitOK
	}

	got := 0
	if v.first != nil && *read > 0 {
		printMessage(stdout, *v.first)
		got++
	}
	if *send != "" {
		if v.err != nil {
			fmt.Fprintln(stderr, "wsprobe: send:", clean(v.err.Error()))
			return exitExchange
		}
		if err := c.WriteMessage(websocket.TextMessage, []byte(*send)); err != nil {
			fmt.Fprintln(stderr, "wsprobe: send:", clean(err.Error()))
			return exitExchange
		}
		fmt.Fprintf(stdout, "> %s\n", clean(*send))
	}
	for ; got < *read; got++ {
		e := f.next()
		if e.err != nil {
			fmt.Fprintln(stderr, "wsprobe: read:", clean(e.err.Error()))
			return readExitCode(e.err)
		}
		printMessage(stdout, e)
	}
	return exitOK
}

// parseInterspersed parses flags wherever they are among the arguments,
// as a user who adds -send after the URL expects, and returns the others.
// "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		// Parse stops at the first argument that is not a flag, or after
		// a "--", which leaves the rest as they are.
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// chainFailure reports an error that ended the Conn before it reached the
// application's connection, and says whether it broke the chain: a move
// that failed, a close-code redirect that cannot be read, or a connection
// that announced a redirect and closed or timed out without one. Any other
// close came from the application, which the probe did reach.
func chainFailure(stdout, stderr io.Writer, v verdict, maxHops int) (int, bool) {
	var cerr *client.Error
	if errors.As(v.err, &cerr) {
		say(stderr, v.err, maxHops)
		return exitCode(v.err), true
	}
	last := v.hops[len(v.hops)-1]
	var ce *websocket.CloseError
	isClose := errors.As(v.err, &ce)
	redirectCode := isClose && (ce.Code == wire.CloseRedirect || ce.Code == wire.CloseRetry)
	if !redirectCode && !v.redirectOnly {
		return 0, false
	}
	if isClose {
		fmt.Fprintf(stdout, "< close %d %s\n", ce.Code, clean(ce.Text))
	}
	if redirectCode {
		fmt.Fprintf(stderr, "wsprobe: %s: close %d with a reason that is not a wsredirect v1 redirect: %s\n",
			clean(last.URL), ce.Code, clean(strconv.Quote(ce.Text)))
		return exitChain, true
	}
	fmt.Fprintf(stderr, "wsprobe: %s selected subprotocol %s but did not redirect: %s\n",
		clean(last.URL), wire.Subprotocol, clean(v.err.Error()))
	if errors.Is(v.err, context.DeadlineExceeded) {
		return exitNetwork, true
	}
	return exitChain, true
}

// say prints why a chain failed: the client's error, or, for a redirect
// that -max-hops 0 (or less) told it not to follow, that.
func say(stderr io.Writer, err error, maxHops int) {
	if maxHops <= 0 && errors.Is(err, client.ErrTooManyHops) {
		fmt.Fprintf(stderr, "wsprobe: redirected, and -max-hops %d follows no redirect: the hop above says where to\n", maxHops)
		return
	}
	fmt.Fprintln(stderr, "wsprobe:", clean(err.Error()))
}

// redirects counts the hops that led on to another: all but the last,
// less the open connections the client left only to dial them again (a cue
// that proved false, answered with the echo or not at all).
func redirects(hops []client.Hop) int {
	n := 0
	for _, h := range hops[:len(hops)-1] {
		switch {
		case h.Status != http.StatusSwitchingProtocols, h.Close == wire.CloseRedirect, h.Close == wire.CloseRetry:
			n++
		}
	}
	return n
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func printHops(w io.Writer, hops []client.Hop) {
	for i, h := range hops {
		printHop(w, i+1, h)
	}
}

func printHop(w io.Writer, n int, h client.Hop) {
	fmt.Fprintf(w, "* hop %d: %s\n", n, clean(h.URL))
	if h.Status == 0 {
		fmt.Fprintf(w, "  no response (%s)\n", h.Elapsed.Round(time.Microsecond))
		return
	}
	fmt.Fprintf(w, "< %d %s (%s)\n", h.Status, http.StatusText(h.Status), h.Elapsed.Round(time.Microsecond))
	switch h.Close {
	case 0:
		if h.Location != "" {
			fmt.Fprintf(w, "< Location: %s\n", clean(h.Location))
		}
		if h.RetryAfter > 0 {
			fmt.Fprintf(w, "< Retry-After: %s\n", h.RetryAfter)
		}
	case wire.CloseRetry:
		fmt.Fprintf(w, "< close %d, retry after %s\n", h.Close, h.RetryAfter)
	case websocket.CloseNormalClosure, websocket.CloseNoStatusReceived:
		// The echo of the client's close on a cue the server had not sent.
		fmt.Fprintf(w, "< close %d (a cue that was not the server's: dialled again)\n", h.Close)
	default:
		fmt.Fprintf(w, "< close %d → %s\n", h.Close, clean(h.Location))
	}
}

func printHeader(w io.Writer, title string, h http.Header) {
	fmt.Fprintln(w, title)
	for _, k := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[k] {
			fmt.Fprintf(w, "< %s: %s\n", clean(k), clean(v))
		}
	}
}

func printMessage(w io.Writer, e event) {
	if e.mt == websocket.BinaryMessage {
		fmt.Fprintf(w, "< [%d bytes binary] %x\n", len(e.p), e.p)
		return
	}
	fmt.Fprintf(w, "< %s\n", clean(string(e.p)))
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

// readExitCode is the exit status for an error while reading: a move the
// Conn could not follow broke the chain; anything else, the exchange.
func readExitCode(err error) int {
	var cerr *client.Error
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &cerr):
		return exitCode(err)
	case errors.As(err, &ce) && (ce.Code == wire.CloseRedirect || ce.Code == wire.CloseRetry):
		return exitChain
	}
	return exitExchange
}
