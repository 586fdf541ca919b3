// Package wire is wsredirect's close-frame protocol: how a server tells a
// client that cannot see an HTTP response where to go. Browsers are such
// clients (a 3xx on a WebSocket handshake is a network error to script), and
// so is every client whose connection is already open when its node drains.
// The middleware, the Go client and the JavaScript helper all speak it, and
// testdata/vectors.json pins it for the Go and JavaScript tests alike.
//
// Version 1:
//
//	close code  CloseRedirect (4307)
//	reason      "wsr1 " + absolute target URL       when it fits in 123 bytes
//	reason      "wsr1 +"                            otherwise; the target then
//	                                                arrives in the text message
//	                                                sent just before the close:
//	                                                "wsr1 " + absolute target URL
//	reason      "wsr1 =" + absolute base URL        the same path and query as the
//	                                                URL the client connected to,
//	                                                on another base (live drain:
//	                                                one control frame, whatever
//	                                                the length of the query)
//
//	close code  CloseRetry (4503)
//	reason      "wsr1 retry=" + whole seconds       no node can take the client now
//
// A client may offer the subprotocol [Subprotocol]: a close-frame answer
// selects it, so the client knows at open that the connection is only a
// redirect and can keep it from the application. Browsers differ when
// offered subprotocols get no answer: Chromium fails the handshake (1006),
// Firefox opens the connection with protocol "". So a browser client offers
// the marker only beside the app's own subprotocols, one of which the app's
// server selects anyway; without them it learns of a redirect from the
// close.
//
// A client that sees CloseRedirect reconnects to the target; one that sees
// CloseRetry waits the given time (plus jitter) and reconnects to the URL it
// first dialled.
//
// A server that can write in order with its application and choose how it
// answers a client's close (the middleware's GorillaConn with a send func)
// cues a live move first: it sends [Cue] as a text message, in order with
// the application's messages, and answers the client's close with the
// move's close code and reason instead of the usual echo. A client that
// reads the cue stops writing, closes the connection itself with code 1000
// and acts on the server's answer — the first close frame it receives,
// which is the one a close event reports (RFC 6455 §7.1.5). Everything the
// client wrote before it read the cue goes out ahead of its own close
// frame, and the server reads until that frame: no message is lost at the
// boundary, which a browser cannot promise when the server's close frame
// comes first (its network process answers a close frame before the page
// can stop sending). A server that cues still sends the close frame a
// moment later, for clients that do not know cues.
//
// The cue carries no authority: any data message may have been written by
// another client (a chat relays text verbatim), so only a close frame,
// which only the server's WebSocket layer writes, says where to go. A cue
// the server did not send is answered with the echo (1000), or not within
// [CueAnswerWait], and costs the client one reconnect to the URL it is on;
// for [CueQuiet] after that, cues are ordinary messages. A cue that proved
// false reaches the application as the ordinary message it was.
// A "wsr1 " message is special only on a connection the server accepted
// to close at once (the marker [Subprotocol] selected, or before the
// connection is known to be the application's): there it may be the
// target of a "wsr1 +" close.
package wire

import (
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

const (
	// CloseRedirect is the private close code (RFC 6455 §7.4.2) that tells a
	// client to reconnect to the target carried by the close reason.
	CloseRedirect = 4307
	// CloseRetry is the private close code that tells a client to reconnect
	// to the same URL after the delay carried by the close reason.
	CloseRetry = 4503

	// Subprotocol marks a connection accepted only to be closed with a
	// redirect.
	Subprotocol = "wsredirect.v1"

	// MaxReason is the longest close reason RFC 6455 allows: a control
	// frame's payload is at most 125 bytes, two of which are the code.
	MaxReason = 123

	// Cue is the text message that cues a live move (see the package doc):
	// close, and the server's answer to your close says where to go.
	Cue = "wsr1 move"
	// CueAnswerWait is how long a client that closed on a cue waits for the
	// server's answer before it takes the cue for a false one.
	CueAnswerWait = 5 * time.Second
	// CueQuiet is how long a client treats cues as ordinary messages once
	// one proved false, so forged cues cost at most one reconnect per
	// CueQuiet.
	CueQuiet = time.Minute

	// MaxRetry is the longest delay a CloseRetry or a Retry-After carries:
	// longer delays are sent as MaxRetry, and clients refuse a reason that
	// asks for more.
	MaxRetry = 24 * time.Hour
)

const (
	v1           = "wsr1 "
	seeMessage   = v1 + "+"
	samePath     = v1 + "="
	retry        = v1 + "retry="
	maxInlineURL = MaxReason - len(v1)
)

// EncodeRedirect returns what a server sends to move a connection to target,
// an absolute URL: an optional text message to send first (empty when the
// target fits in the close reason) and the close reason to send with
// [CloseRedirect].
func EncodeRedirect(target string) (message, reason string) {
	// A target that starts like another form of reason goes in a message;
	// absolute URLs never do.
	if len(target) <= maxInlineURL && !strings.HasPrefix(target, "+") && !strings.HasPrefix(target, "=") {
		return "", v1 + target
	}
	return v1 + target, seeMessage
}

// EncodeMove returns the close reason that sends a client to the same path
// and query on base, an absolute URL without query, and false when base is
// too long to fit in a close reason.
func EncodeMove(base string) (reason string, ok bool) {
	if len(samePath)+len(base) > MaxReason {
		return "", false
	}
	return samePath + base, true
}

// EncodeRetry returns the close reason to send with [CloseRetry]: the delay
// in whole seconds as [RetrySeconds] gives them.
func EncodeRetry(after time.Duration) string {
	return retry + strconv.FormatInt(RetrySeconds(after), 10)
}

// RetrySeconds returns a delay as the whole seconds a CloseRetry reason and
// a Retry-After header carry: rounded up, 0 for a delay that is not
// positive, and at most MaxRetry, so "forever" (the largest Duration) reads
// as a day rather than overflowing.
func RetrySeconds(d time.Duration) int64 {
	switch {
	case d <= 0:
		return 0
	case d >= MaxRetry:
		return int64(MaxRetry / time.Second)
	}
	return int64((d + time.Second - 1) / time.Second)
}

// ParseRedirect reads a [CloseRedirect] reason. lastMessage is the last text
// message received before the close frame; it is consulted only when the
// reason says the target did not fit. current is the URL the connection was
// dialled with, whose path and query a move to another base keeps. The
// target is returned as sent; the caller resolves and vets it like any
// redirect. ok is false when the reason is not version 1 or the target is
// missing or not valid UTF-8.
func ParseRedirect(reason, lastMessage, current string) (target string, ok bool) {
	switch {
	case reason == seeMessage:
		target, ok = strings.CutPrefix(lastMessage, v1)
	case strings.HasPrefix(reason, samePath):
		u, err := url.Parse(current)
		if err != nil || u.Host == "" {
			return "", false
		}
		base, path := strings.TrimSuffix(reason[len(samePath):], "/"), u.EscapedPath()
		if path == "" {
			path = "/"
		}
		target, ok = base+path, base != ""
		if u.RawQuery != "" {
			target += "?" + u.RawQuery
		}
	case strings.HasPrefix(reason, v1):
		target, ok = reason[len(v1):], true
	}
	if !ok || target == "" || !utf8.ValidString(target) {
		return "", false
	}
	return target, true
}

// IsRedirectMessage reports whether a text message may be the target that
// precedes a [CloseRedirect] whose target did not fit in the reason. It
// matters only on a connection the server accepted to close at once: on a
// connection that is the application's, it is an application message.
func IsRedirectMessage(message string) bool {
	return strings.HasPrefix(message, v1)
}

// IsCue reports whether a text message is the [Cue] of a live move.
func IsCue(message string) bool { return message == Cue }

// ParseRetry reads a [CloseRetry] reason: a delay of whole seconds, at most
// MaxRetry.
func ParseRetry(reason string) (after time.Duration, ok bool) {
	s, ok := strings.CutPrefix(reason, retry)
	if !ok || s == "" || len(s) > 6 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, _ := strconv.ParseInt(s, 10, 64)
	if d := time.Duration(n) * time.Second; d <= MaxRetry {
		return d, true
	}
	return 0, false
}
