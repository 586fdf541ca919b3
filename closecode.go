package wsredirect

import (
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The close-frame wire format that carries a redirect to clients that cannot
// see an HTTP response: browsers (a 3xx on a WebSocket handshake is a network
// error to script) and connections that are already open when a node drains.
// Server, Go client and the JavaScript helper all use the definitions below.
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
// A client may offer the subprotocol RedirectSubprotocol: a close-frame
// answer selects it, so the client knows at open that this connection is
// only a redirect and can keep it from the application. Offer it only
// beside the app's own subprotocols: browsers fail a handshake that offered
// subprotocols when the server selects none, and an app that uses none
// selects none. Without it a client learns of a redirect from the close.
//
// A client that sees CloseRedirect reconnects to the target; one that sees
// CloseRetry waits the given time (plus jitter) and reconnects to the URL it
// first dialled.
const (
	// CloseRedirect is the private close code (RFC 6455 §7.4.2) that tells a
	// client to reconnect to the target carried by the close reason.
	CloseRedirect = 4307
	// CloseRetry is the private close code that tells a client to reconnect
	// to the same URL after the delay carried by the close reason.
	CloseRetry = 4503

	// RedirectSubprotocol marks a connection accepted only to be closed
	// with a redirect.
	RedirectSubprotocol = "wsredirect.v1"

	// MaxCloseReason is the longest close reason RFC 6455 allows: a control
	// frame's payload is at most 125 bytes, two of which are the code.
	MaxCloseReason = 123

	wireV1        = "wsr1 "
	wireSeeMsg    = wireV1 + "+"
	wireSamePath  = wireV1 + "="
	wireRetry     = wireV1 + "retry="
	maxInlineURL  = MaxCloseReason - len(wireV1)
	maxRetryDelay = 24 * time.Hour
)

// EncodeRedirect returns what a server sends to move an open connection to
// target: an optional text message to send first (empty when the target fits
// in the close reason) and the close reason to send with [CloseRedirect].
func EncodeRedirect(target string) (message, reason string) {
	// A target that starts like another form of reason goes in a message;
	// absolute URLs never do.
	if len(target) <= maxInlineURL && !strings.HasPrefix(target, "+") && !strings.HasPrefix(target, "=") {
		return "", wireV1 + target
	}
	return wireV1 + target, wireSeeMsg
}

// EncodeMove returns the close reason that sends a client to the same path
// and query on base, and false when base is too long to fit.
func EncodeMove(base *Target) (reason string, ok bool) {
	if len(wireSamePath)+len(base.ws) > MaxCloseReason {
		return "", false
	}
	return wireSamePath + base.ws, true
}

// EncodeRetry returns the close reason to send with [CloseRetry]. The delay is
// rounded up to whole seconds.
func EncodeRetry(after time.Duration) string {
	return wireRetry + strconv.FormatInt(retrySeconds(after), 10)
}

// ParseRedirect reads a [CloseRedirect] reason. lastMessage is the last text
// message received before the close frame; it is consulted only when the
// reason says the target did not fit. current is the URL the connection was
// dialled with, whose path and query a move to another base keeps. The
// target is returned as sent; the caller resolves and vets it like any
// redirect. ok is false when the reason is not version 1 or the target is
// missing.
func ParseRedirect(reason, lastMessage, current string) (target string, ok bool) {
	switch {
	case reason == wireSeeMsg:
		target, ok = strings.CutPrefix(lastMessage, wireV1)
	case strings.HasPrefix(reason, wireSamePath):
		u, err := url.Parse(current)
		if err != nil || u.Host == "" {
			return "", false
		}
		base := strings.TrimSuffix(reason[len(wireSamePath):], "/")
		target, ok = base+u.EscapedPath(), base != ""
		if u.RawQuery != "" {
			target += "?" + u.RawQuery
		}
	case strings.HasPrefix(reason, wireV1):
		target, ok = reason[len(wireV1):], true
	}
	if !ok || target == "" || !utf8.ValidString(target) {
		return "", false
	}
	return target, true
}

// IsRedirectMessage reports whether a text message is the out-of-band target
// that precedes a [CloseRedirect] whose target did not fit in the reason.
// Clients use it to keep such a message from the application.
func IsRedirectMessage(message string) bool {
	return strings.HasPrefix(message, wireV1)
}

// ParseRetry reads a [CloseRetry] reason.
func ParseRetry(reason string) (after time.Duration, ok bool) {
	s, ok := strings.CutPrefix(reason, wireRetry)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || time.Duration(n)*time.Second > maxRetryDelay {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// retrySeconds rounds a delay up to the whole seconds Retry-After carries.
func retrySeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}
