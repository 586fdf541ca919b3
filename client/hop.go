package client

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// Why a chain stopped, as the cause inside an [*Error]. Test with errors.Is.
var (
	// ErrTooManyHops: a redirect would have exceeded [Dialer.MaxHops].
	ErrTooManyHops = errors.New("wsredirect/client: too many redirects")
	// ErrLoop: a redirect pointed at a URL already dialled in the chain.
	// Following it could only repeat the chain, so it is stopped before
	// the hop cap would.
	ErrLoop = errors.New("wsredirect/client: redirect loop")
	// ErrDowngrade: a redirect from wss to ws, which would hand everything
	// the client sends next to the network in clear text, and
	// [Dialer.AllowDowngrade] is not set.
	ErrDowngrade = errors.New("wsredirect/client: redirect from wss to ws refused")
	// ErrQueueFull: a [Conn.WriteMessage] while the connection moves found
	// the queue full ([Dialer.MaxQueuedMessages], [Dialer.MaxQueuedBytes]);
	// that message was not queued.
	ErrQueueFull = errors.New("wsredirect/client: move queue full")
)

// Hop is one handshake of a chain. [Error], [Dialer.DialTrace] and
// [Conn.Hops] report them so a caller can see where a client was sent and
// why, which no single response tells.
type Hop struct {
	// URL is the URL dialled: ws or wss, without user info or fragment,
	// default port dropped.
	URL string
	// Status is the HTTP status of the handshake response: 101 when the
	// connection opened, 0 when no response arrived (a network error).
	Status int
	// Location is where the hop pointed next: the Location header of a
	// redirect as sent, or the target of a close-code redirect.
	Location string
	// Close is the close code with which the server ended this open
	// connection when the chain went on from it: wire.CloseRedirect or
	// wire.CloseRetry for a move (Location is then the target, also when
	// CheckRedirect vetoed it), or, after a cue that proved false, the code
	// of the server's echo (1000, or 1005 for a close without a code). A
	// hop after a false cue or a veto dials the same URL again. 0
	// otherwise, also for a cue no close answered in time.
	Close int
	// RetryAfter is the wait the server asked for with a 503 and
	// Retry-After, or with CloseRetry.
	RetryAfter time.Duration
	// Elapsed is the time from the start of this hop's dial to its
	// response or failure.
	Elapsed time.Duration
	// Remembered: the URL was not sent by a server in this chain but
	// recalled from an earlier one ([Dialer.RememberRedirects]); it is
	// then the first hop.
	Remembered bool
}

// Error is a dial that did not end in an open connection, with the chain
// that led there: a failure after three redirects is only understood with
// all four hops in view.
type Error struct {
	// Hops are the handshakes tried, in order; the last is where the chain
	// stopped. Its Status is 0 when no response arrived (a network error).
	Hops []Hop
	// Err is why the chain stopped: ErrTooManyHops, ErrLoop, ErrDowngrade,
	// websocket.ErrBadHandshake for a final status other than 101, the
	// error returned by [Dialer.CheckRedirect], a network or context error,
	// or the *websocket.CloseError whose close code could not be followed.
	Err error
	// Unsent are the messages a [Conn] queued while the server moved it
	// and could not deliver because the move failed (or Close came first),
	// in the order they were written.
	Unsent []Message
}

// Error returns the chain followed by the cause, as
// "wsredirect/client: ws://a/x 307 → ws://b/x 307 → ws://a/x: redirect loop";
// a remembered hop reads "ws://b/x (remembered) 307".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("wsredirect/client: ")
	for i, h := range e.Hops {
		if i > 0 {
			b.WriteString(" → ")
		}
		b.WriteString(h.URL)
		if h.Remembered {
			b.WriteString(" (remembered)")
		}
		if h.Status != 0 {
			b.WriteByte(' ')
			b.WriteString(strconv.Itoa(h.Status))
		}
		if h.Close != 0 {
			b.WriteString(" close ")
			b.WriteString(strconv.Itoa(h.Close))
		}
	}
	if n := len(e.Hops); n > 0 && e.Hops[n-1].Location != "" {
		b.WriteString(" → ")
		b.WriteString(e.Hops[n-1].Location)
	}
	b.WriteString(": ")
	msg := "unknown error"
	if e.Err != nil {
		msg = strings.TrimPrefix(e.Err.Error(), "wsredirect/client: ")
	}
	b.WriteString(msg)
	return b.String()
}

// Unwrap returns the cause, so errors.Is(err, ErrLoop) and
// errors.Is(err, context.DeadlineExceeded) see through the chain.
func (e *Error) Unwrap() error { return e.Err }
