// Package client dials WebSocket servers and follows redirects the way a
// careful HTTP client does: the 3xx a server may answer a handshake with
// (RFC 6455 §4.1) and the close-code redirects the wsredirect middleware
// sends to connections that are already open.
//
// Go's WebSocket clients each get redirects wrong in their own way:
// gorilla/websocket never follows one (it returns ErrBadHandshake and the
// response), coder/websocket follows without a hop limit, gobwas/ws never
// follows. [Dialer] wraps gorilla's Dialer, keeps every option of it, and
// follows 301, 302, 303, 307 and 308:
//
//   - at most [Dialer.MaxHops] redirects (10), and never to a URL already
//     dialled in the chain;
//   - a relative Location is resolved against the URL it answered, and
//     http/https Locations are dialled as ws/wss;
//   - a redirect from wss to ws is refused unless allowed;
//   - Authorization, Cookie, Proxy-Authorization, a Host override and the
//     URL's user info are dropped for the rest of the chain once a hop
//     changes origin, as browsers and net/http do; [Dialer.CheckRedirect]
//     can veto a hop or deliberately add credentials back;
//   - a 503 with Retry-After is retried after that delay plus jitter, a
//     bounded number of times;
//   - the context bounds the whole chain, waits included;
//   - the final URL of a chain is remembered for the URL first dialled
//     ([Dialer.RememberRedirects], 10 minutes), and the next dial of that
//     URL goes there first, skipping the redirect. The memory is only a
//     first guess: the server there decides, so a stale one costs one more
//     redirect, and a target that fails falls back to the URL as given.
//
// Every hop offers the subprotocol wire.Subprotocol after the Dialer's own
// Subprotocols. A wsredirect server that answers with a close frame rather
// than a status (browser requests, or Options.Mode ModeClose) selects it:
// such a connection, a stub, is only a redirect, and its close is followed
// like a 3xx. A server that selects another subprotocol, or none, has
// opened the application's connection.
//
// [Dialer.Connect] returns a [Conn] that also follows the moves of
// wsredirect (close codes CloseRedirect and CloseRetry, and the cue that
// may precede them) under the same rules, reconnecting without surfacing
// them to the application. Where a client goes is only ever said by a
// status, a Location or a close frame, which the server writes; never by
// a data message, which on many servers another client may have written.
package client

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/gorilla/websocket"
	"github.com/wsredirect/wsredirect/wire"
)

// Defaults of the [Dialer] fields whose zero value means "default".
const (
	DefaultMaxHops       = 10
	DefaultMaxRetries    = 3
	DefaultMaxRetryDelay = 30 * time.Second

	DefaultMaxQueuedMessages = 1024
	DefaultMaxQueuedBytes    = 1 << 20
)

// Dialer dials WebSocket URLs and follows redirects. The zero value is
// usable; it is safe for concurrent use as long as its fields are not
// changed while dialling.
type Dialer struct {
	// Dialer makes each handshake; all of gorilla's options (TLS, proxy,
	// buffers, subprotocols, compression, cookie jar, handshake timeout)
	// apply to every hop. Its zero value, like gorilla's, uses no proxy and
	// no per-hop timeout; start from *websocket.DefaultDialer for gorilla's
	// defaults.
	websocket.Dialer

	// MaxHops caps the redirects followed in one chain, HTTP and
	// close-code redirects alike. Default (0): 10, as net/http and Node's
	// ws. Negative: no redirect is followed.
	MaxHops int

	// AllowDowngrade lets a chain go from wss to ws. Default: false, and
	// such a redirect fails with ErrDowngrade.
	AllowDowngrade bool

	// CheckRedirect, when set, is called before each redirect is followed,
	// like net/http's Client.CheckRedirect: a 3xx, the close of a stub
	// (see the package doc) and every move of a [Conn] by a close frame,
	// before the connection it moves is given up. next is a copy of the URL
	// about to be dialled; header is what will be sent there, credentials
	// already dropped if the hop changes origin. The hook may change
	// header, for instance to add credentials for next's origin on purpose;
	// the change holds for the rest of the chain (and is dropped again at
	// the next change of origin). via lists the hops so far, the
	// redirecting one last; it must not be modified or kept.
	//
	// A non-nil error vetoes the redirect, and nothing the hook did to
	// header is kept. A veto of a dial's redirect (a 3xx or a stub's
	// close) stops the chain: the error is returned inside an [*Error]. A
	// veto of a move of a Conn's open connection does not end the Conn: it
	// dials the URL it was on again, as the application had it, and reads
	// on (see [Conn]); if that dial is redirected, the redirect is vetted
	// again and a veto there ends the Conn. Before a remembered target is
	// dialled (see RememberRedirects), via is one Hop that was not dialled:
	// the first URL, with the target as Location; an error then only skips
	// the memory.
	CheckRedirect func(next *url.URL, header http.Header, via []Hop) error

	// MaxRetries caps how many times a chain waits and tries again after a
	// 503 with Retry-After or a CloseRetry. Default (0): 3. Negative: never.
	MaxRetries int

	// MaxRetryDelay is the longest wait a server may ask for; a longer
	// Retry-After ends the chain with the 503 rather than waiting less than
	// asked, which would only earn another 503. Default: 30s.
	MaxRetryDelay time.Duration

	// Jitter returns the random extra wait added to a retry delay, so that
	// clients refused together do not all return at once. Default: uniform
	// in [0, 1s + delay/10).
	Jitter func(delay time.Duration) time.Duration

	// MaxQueuedMessages and MaxQueuedBytes bound what a [Conn] queues while
	// the server moves it (see [Conn]). Defaults (0): 1024 messages, 1 MiB.
	// Negative: nothing is queued, and writes during a move fail with
	// ErrQueueFull.
	MaxQueuedMessages int
	MaxQueuedBytes    int

	// RememberRedirects is how long the final URL of a redirect chain is
	// remembered for the URL first dialled (with the Host override, if
	// any): a later dial of that URL, by this Dialer or a copy made after
	// its first dial (Connect's included), goes to the remembered target
	// first, saving the redirect on reconnects. The server still decides:
	// a target that no longer holds the URL redirects onward (one more
	// redirect, and the memory is updated); one that fails to open — a
	// network error or any status other than 101 or a redirect — is
	// followed by a dial of the URL as given, the memory dropped; the
	// [Hop] of a remembered target has Remembered set. The target gets the
	// header the chain sent there: the caller's, credentials dropped if the
	// chain dropped them or the target's origin differs from the first
	// URL's, and CheckRedirect is asked as for a redirect (a veto skips the
	// memory). wss is not left for ws unless AllowDowngrade, nor is the
	// memory used with MaxHops negative. A close-code move of a [Conn]
	// updates the memory too (going back to the URL it was on after a
	// false cue or a veto does not); a chain that ends on the URL first
	// dialled (a 503 retried, a CloseRetry) clears it. At most
	// [MaxRemembered] URLs are kept, the one stored longest ago forgotten
	// first; an entry expires RememberRedirects after the chain that
	// stored it, whether or not it was used since. Default (0): 10
	// minutes. Negative: off, no dial looks anything up or stores anything.
	RememberRedirects time.Duration

	// sleep waits for d, or until ctx is done and then returns ctx.Err():
	// a timer, unless a test injects one (export_test.go).
	sleep func(ctx context.Context, d time.Duration) error

	// now reads the clock of a Conn's cue budget: time.Now, unless a test
	// injects one (export_test.go).
	now func() time.Time

	// memo is the *memory of RememberRedirects, created on first use
	// (see Dialer.memory).
	memo unsafe.Pointer
}

// Dial is [Dialer.DialContext] with context.Background. It hides gorilla's
// Dial, which would not follow redirects.
func (d *Dialer) Dial(urlStr string, requestHeader http.Header) (*websocket.Conn, *http.Response, error) {
	return d.DialContext(context.Background(), urlStr, requestHeader)
}

// DialContext dials urlStr and follows redirects; it is a drop-in for
// gorilla's DialContext. The response is the last one received, also on
// failure when there is one; errors other than a bad urlStr are [*Error].
// requestHeader is not modified.
//
// A stub (see the package doc) is followed like a 3xx and never returned:
// the connection returned is the application's, and its Subprotocol is
// never wire.Subprotocol. A stub that does not close within 5 seconds with
// a redirect or a retry it can follow ends the chain. What happens to the
// returned connection later is the caller's: a close that moves it
// (CloseRedirect, CloseRetry) is an ordinary close to a *websocket.Conn;
// [Dialer.Connect] follows those too.
func (d *Dialer) DialContext(ctx context.Context, urlStr string, requestHeader http.Header) (*websocket.Conn, *http.Response, error) {
	c, err := newChain(d, urlStr, requestHeader)
	if err != nil {
		return nil, nil, err
	}
	c.stubs = true
	return c.start(ctx)
}

// DialTrace is [Dialer.DialContext] that also returns the hops taken, the
// last being the one that opened the connection.
func (d *Dialer) DialTrace(ctx context.Context, urlStr string, requestHeader http.Header) (*websocket.Conn, *http.Response, []Hop, error) {
	c, err := newChain(d, urlStr, requestHeader)
	if err != nil {
		return nil, nil, nil, err
	}
	c.stubs = true
	ws, resp, err := c.start(ctx)
	return ws, resp, c.hops, err
}

// chain is the state of one redirect chain: where it started, what it sends
// next and what it has seen.
type chain struct {
	d           *Dialer
	hop         websocket.Dialer // d.Dialer, offering the marker
	first       *url.URL
	firstURL    string      // first.String()
	firstHeader http.Header // the caller's header plus user info credentials
	header      http.Header // what the next hop sends
	dropped     bool        // credentials were dropped from header
	cur         *url.URL    // the URL dialled last
	hops        []Hop
	loopFrom    int // hops before this index are not checked for loops
	redirects   int
	retries     int

	mem      *memory // nil: RememberRedirects is off
	key      string  // the chain's key in mem
	guess    bool    // the hop being dialled is the remembered target
	guessURL string  // that target's String()

	// stubs: run follows stubs itself (DialContext); a Conn reads them.
	stubs bool
	// stay: the dial under way goes back to the URL a Conn was on and
	// neither reads nor writes the memory.
	stay bool
}

func newChain(d *Dialer, urlStr string, requestHeader http.Header) (*chain, error) {
	u, err := url.Parse(urlStr)
	if err != nil {
		return nil, fmt.Errorf("wsredirect/client: %w", err)
	}
	if err := canonicalize(u); err != nil {
		return nil, fmt.Errorf("wsredirect/client: %q: %w", urlStr, err)
	}
	h := requestHeader.Clone()
	if h == nil {
		h = make(http.Header, 1)
	}
	if u.User != nil {
		// gorilla refuses URLs with user info; send it the way net/http does.
		if h.Get("Authorization") == "" {
			pass, _ := u.User.Password()
			h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pass)))
		}
		u.User = nil
	}
	c := &chain{d: d, hop: d.Dialer, first: u, firstURL: u.String(), firstHeader: h, mem: d.memory()}
	c.hop.Subprotocols = offer(d.Subprotocols, h)
	c.header = h.Clone()
	if c.mem != nil {
		c.key = memoryKey(c.firstURL, h)
	}
	return c, nil
}

// offer returns the subprotocols every hop offers: the Dialer's, or those of
// a Sec-WebSocket-Protocol request header (which it removes from h, as
// gorilla refuses it beside Subprotocols), then the marker.
func offer(protocols []string, h http.Header) []string {
	out := slices.Clone(protocols)
	for _, v := range h.Values("Sec-Websocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	h.Del("Sec-Websocket-Protocol")
	if !slices.Contains(out, wire.Subprotocol) {
		out = append(out, wire.Subprotocol)
	}
	return out
}

// start dials the remembered target of the first URL if there is one, and
// the first URL otherwise.
func (c *chain) start(ctx context.Context) (*websocket.Conn, *http.Response, error) {
	if u := c.recall(); u != nil {
		return c.run(ctx, u)
	}
	return c.run(ctx, c.first)
}

// canonicalize maps http(s) to ws(s) and drops what does not name the
// resource (fragment, default port), so a URL compares equal to itself
// however a Location spells it.
func canonicalize(u *url.URL) error {
	switch u.Scheme {
	case "ws", "http":
		u.Scheme = "ws"
	case "wss", "https":
		u.Scheme = "wss"
	default:
		return fmt.Errorf("scheme %q is not ws, wss, http or https", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	u.Host = strings.ToLower(u.Host)
	if p := u.Port(); (p == "80" && u.Scheme == "ws") || (p == "443" && u.Scheme == "wss") {
		u.Host = u.Host[:len(u.Host)-len(p)-1]
	}
	if u.Path == "" && u.RawPath == "" {
		u.Path = "/"
	}
	u.Fragment, u.RawFragment = "", ""
	u.Opaque = ""
	return nil
}

// run dials u and follows redirects and 503 retries from there.
func (c *chain) run(ctx context.Context, u *url.URL) (*websocket.Conn, *http.Response, error) {
	for {
		c.cur = u
		hop := Hop{URL: c.firstURL, Remembered: c.guess}
		switch {
		case c.guess:
			hop.URL = c.guessURL
		case u != c.first:
			hop.URL = u.String()
		}
		start := time.Now()
		ws, resp, err := c.dialHop(ctx, hop.URL)
		hop.Elapsed = time.Since(start)
		if resp != nil {
			hop.Status = resp.StatusCode
			hop.Location = resp.Header.Get("Location")
		}
		if err == nil {
			c.hops = append(c.hops, hop)
			if c.stubs && ws.Subprotocol() == wire.Subprotocol {
				c.guess = false
				next, serr := c.leaveStub(ctx, ws, u)
				if serr != nil {
					return nil, resp, c.fail(ctx, serr)
				}
				u = next
				continue
			}
			c.remember(hop.URL, u)
			return ws, resp, nil
		}
		if c.guess && !isRedirect(hop.Status) && ctx.Err() == nil {
			// The remembered target is down or will not have us: the
			// URL as given, where the server decides afresh.
			c.hops = append(c.hops, hop)
			c.fallBack(hop.URL)
			u = c.first
			continue
		}
		c.guess = false
		if resp == nil {
			c.hops = append(c.hops, hop)
			return nil, nil, c.fail(ctx, err)
		}
		switch {
		case isRedirect(hop.Status):
			c.hops = append(c.hops, hop)
			if hop.Location == "" {
				return nil, resp, c.fail(ctx, err)
			}
			next, _, ferr := c.follow(u, hop.Location)
			if ferr != nil {
				return nil, resp, c.fail(ctx, ferr)
			}
			u = next
		case hop.Status == http.StatusServiceUnavailable:
			after, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
			hop.RetryAfter = after
			c.hops = append(c.hops, hop)
			if !ok {
				return nil, resp, c.fail(ctx, err)
			}
			if werr := c.wait(ctx, after); werr != nil {
				if werr == errNoRetry {
					werr = err
				}
				return nil, resp, c.fail(ctx, werr)
			}
		default:
			c.hops = append(c.hops, hop)
			return nil, resp, c.fail(ctx, err)
		}
	}
}

func isRedirect(status int) bool {
	switch status {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// dialHop makes one handshake. gorilla bounds the handshake by the
// context's deadline but not by its cancellation, so the connection's
// deadline is pulled in when ctx is cancelled mid-handshake.
func (c *chain) dialHop(ctx context.Context, u string) (*websocket.Conn, *http.Response, error) {
	if ctx.Done() == nil {
		return c.hop.DialContext(ctx, u, c.header)
	}
	var stop func() bool
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		conn := info.Conn
		stop = context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	}}
	ws, resp, err := c.hop.DialContext(httptrace.WithClientTrace(ctx, trace), u, c.header)
	if stop != nil && !stop() {
		if ws != nil {
			ws.Close()
		}
		if err == nil {
			err = ctx.Err()
		}
		return nil, resp, err
	}
	return ws, resp, err
}

// fail wraps err with the chain, and names the context as the cause when it
// ended the chain: gorilla turns the context's deadline into the socket's,
// which can fire, as an i/o timeout, a moment before ctx.Err is set.
func (c *chain) fail(ctx context.Context, err error) error {
	cerr := ctx.Err()
	if dl, ok := ctx.Deadline(); ok && cerr == nil && !time.Now().Before(dl) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			cerr = context.DeadlineExceeded
		}
	}
	if cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w: %w", cerr, err)
	}
	return &Error{Hops: append([]Hop(nil), c.hops...), Err: err}
}

// follow vets a redirect from cur to loc and returns the URL to dial.
// vetoed reports that the error is CheckRedirect's; the chain's header is
// then as it was.
func (c *chain) follow(cur *url.URL, loc string) (next *url.URL, vetoed bool, err error) {
	next, err = cur.Parse(loc)
	if err != nil {
		return nil, false, fmt.Errorf("wsredirect/client: bad Location %q: %w", loc, err)
	}
	if err := canonicalize(next); err != nil {
		return nil, false, fmt.Errorf("wsredirect/client: bad Location %q: %w", loc, err)
	}
	// Credentials in a Location come from the server, not the caller.
	next.User = nil
	if cur.Scheme == "wss" && next.Scheme == "ws" && !c.d.AllowDowngrade {
		return nil, false, ErrDowngrade
	}
	limit := c.d.MaxHops
	if limit == 0 {
		limit = DefaultMaxHops
	}
	if c.redirects >= limit {
		return nil, false, ErrTooManyHops
	}
	key := next.String()
	for _, h := range c.hops[c.loopFrom:] {
		if h.URL == key {
			return nil, false, ErrLoop
		}
	}
	header, dropped := c.header, c.dropped
	cross := next.Scheme != cur.Scheme || next.Host != cur.Host
	if cross || c.d.CheckRedirect != nil {
		// A veto keeps the header the chain had: a Conn goes on with it.
		header = header.Clone()
	}
	if cross {
		dropCredentials(header)
		dropped = true
	}
	if c.d.CheckRedirect != nil {
		n := *next
		if err := c.d.CheckRedirect(&n, header, c.hops[:len(c.hops):len(c.hops)]); err != nil {
			return nil, true, err
		}
	}
	c.header, c.dropped = header, dropped
	c.redirects++
	return next, false, nil
}

// dropCredentials removes what must not follow a change of origin.
func dropCredentials(h http.Header) {
	for _, k := range [...]string{"Authorization", "Cookie", "Proxy-Authorization", "Host"} {
		delete(h, k)
	}
}

// errNoRetry is a wait the dialer will not make.
var errNoRetry = errors.New("wsredirect/client: retry not allowed")

// wait sleeps before a retry, or returns errNoRetry when the retry budget or
// the delay cap says no.
func (c *chain) wait(ctx context.Context, after time.Duration) error {
	maxRetries, maxDelay := c.d.MaxRetries, c.d.MaxRetryDelay
	if maxRetries == 0 {
		maxRetries = DefaultMaxRetries
	}
	if maxDelay == 0 {
		maxDelay = DefaultMaxRetryDelay
	}
	if c.retries >= maxRetries || after > maxDelay {
		return errNoRetry
	}
	c.retries++
	jitter := defaultJitter
	if c.d.Jitter != nil {
		jitter = c.d.Jitter
	}
	sleep := defaultSleep
	if c.d.sleep != nil {
		sleep = c.d.sleep
	}
	return sleep(ctx, after+jitter(after))
}

func defaultJitter(delay time.Duration) time.Duration {
	return rand.N(time.Second + delay/10)
}

func defaultSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// parseRetryAfter reads Retry-After as seconds or an HTTP date (RFC 9110
// §10.2.3).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		// Anything this long exceeds any sane MaxRetryDelay; clamp to
		// keep the multiplication from overflowing.
		n = min(n, int64(wire.MaxRetry/time.Second))
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}
