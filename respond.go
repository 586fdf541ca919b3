package wsredirect

import (
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect/wire"
)

// Mode says how a decision reaches the client.
type Mode uint8

const (
	// ModeAuto answers requests that carry an Origin header, which every
	// browser sends on a WebSocket handshake, as ModeClose, and others as
	// ModeStatus. It is the default.
	ModeAuto Mode = iota
	// ModeStatus answers with an HTTP status: 307 and Location, or 503 and
	// Retry-After. Browsers see only a failed connection (close code 1006).
	ModeStatus
	// ModeClose accepts the upgrade and closes the connection at once with
	// close code 4307 and the target, or for a 503 with 4503 and the delay
	// (other refusals stay statuses): the close code and reason are what
	// script in a browser can read (package wire has the format). The
	// accepting upgrade checks the Origin (Options.Origins). RFC 8441
	// requests are always answered with a status.
	ModeClose
)

// respond writes one of the four answers to a decided upgrade: a status
// redirect or refusal, or their close-frame forms for browsers (d.Close,
// from [State.closes]).
func (s *State) respond(w http.ResponseWriter, r *http.Request, d Decision) {
	switch {
	case d.Close && d.Action == Redirect:
		msg, reason := wire.EncodeRedirect(location(r, d, s.httpLocation))
		s.closeWith(w, r, msg, wire.CloseRedirect, reason)
	case d.Close:
		s.closeWith(w, r, "", wire.CloseRetry, wire.EncodeRetry(d.RetryAfter))
	case d.Action == Redirect:
		writeRedirect(w, r, d, s.httpLocation)
	default:
		writeRefuse(w, d)
	}
}

// closes reports whether decision d goes out to r as a close frame. Only
// redirects and "come back later" (503) have close codes; any other
// refusal, such as a rule's bug, is a status the browser reports as 1006,
// so it does not invite a retry loop.
func (s *State) closes(r *http.Request, d Decision) bool {
	return (d.Action == Redirect || d.Action == Refuse && d.Status == http.StatusServiceUnavailable) && s.closeMode(r)
}

// closeMode reports whether decisions for r go out as close frames.
func (s *State) closeMode(r *http.Request) bool {
	if r.ProtoMajor != 1 {
		return false
	}
	switch s.mode {
	case ModeClose:
		return true
	case ModeAuto:
		_, ok := r.Header["Origin"]
		return ok
	}
	return false
}

// Prebuilt header values, assigned without copying on every response.
var (
	noStore   = []string{"no-store"}
	textPlain = []string{"text/plain; charset=utf-8"}
)

// location is where d sends the client of r: d.Path, or else the path the
// client asked for (see requestPath).
func location(r *http.Request, d Decision, httpScheme bool) string {
	path := d.Path
	if path == "" {
		path = requestPath(r)
	}
	return d.Target.location(httpScheme, path, r.URL.RawQuery)
}

// requestPath is the escaped path the client asked for: the request line's,
// which a handler in front (http.StripPrefix) may have shortened in r.URL,
// since the client must ask the next node for the same path.
func requestPath(r *http.Request) string {
	u := r.RequestURI
	if u != "" && u[0] != '/' {
		// The absolute form, scheme://authority/path.
		if _, rest, ok := strings.Cut(u, "://"); ok {
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				u = rest[i:]
			} else {
				u = "/"
			}
		}
	}
	if u == "" || u[0] != '/' {
		return r.URL.EscapedPath()
	}
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}

// redirectStatus keeps the method of an RFC 8441 CONNECT: 301 and 302 let
// clients retry as GET.
func redirectStatus(configured int, method string) int {
	switch {
	case configured == 0:
		return http.StatusTemporaryRedirect
	case method == http.MethodConnect && configured == http.StatusFound:
		return http.StatusTemporaryRedirect
	case method == http.MethodConnect && configured == http.StatusMovedPermanently:
		return http.StatusPermanentRedirect
	}
	return configured
}

// writeRedirect sends the status redirect. 301 and 308 are heuristically
// cacheable, so every redirect says no-store: a moved room must not stick.
func writeRedirect(w http.ResponseWriter, r *http.Request, d Decision, httpScheme bool) {
	h := w.Header()
	h["Location"] = []string{location(r, d, httpScheme)}
	h["Cache-Control"] = noStore
	h["Content-Type"] = textPlain
	w.WriteHeader(d.Status)
	io.WriteString(w, redirectBody(d.Status))
}

// redirectBody is a constant per status, so a redirect allocates nothing
// for its body.
func redirectBody(status int) string {
	switch status {
	case http.StatusMovedPermanently:
		return "301 Moved Permanently: this WebSocket endpoint is served elsewhere (see Location)\n"
	case http.StatusFound:
		return "302 Found: this WebSocket endpoint is served elsewhere (see Location)\n"
	case http.StatusPermanentRedirect:
		return "308 Permanent Redirect: this WebSocket endpoint is served elsewhere (see Location)\n"
	}
	return "307 Temporary Redirect: this WebSocket endpoint is served elsewhere (see Location)\n"
}

// writeRefuse sends the status refusal, with Retry-After when d has one.
func writeRefuse(w http.ResponseWriter, d Decision) {
	h := w.Header()
	if d.RetryAfter > 0 {
		h["Retry-After"] = []string{strconv.FormatInt(wire.RetrySeconds(d.RetryAfter), 10)}
	}
	h["Cache-Control"] = noStore
	h["Content-Type"] = textPlain
	w.WriteHeader(d.Status)
	io.WriteString(w, refuseBody(d.Status))
}

// refuseBody says what a refusal means, without internals: a 500 is a rule's
// bug (logged with the rule's name), not a node out of capacity.
func refuseBody(status int) string {
	switch status {
	case http.StatusServiceUnavailable:
		return "503 Service Unavailable: this node cannot take WebSocket connections now\n"
	case http.StatusInternalServerError:
		return "500 Internal Server Error: this WebSocket upgrade could not be decided (the server's log says why)\n"
	case http.StatusForbidden:
		return "403 Forbidden: this page's origin may not open this WebSocket\n"
	}
	return strconv.Itoa(status) + " " + http.StatusText(status) + "\n"
}

// closeWait bounds how long a close-mode connection waits for the client
// to answer the close frame before the TCP connection is closed.
const closeWait = 2 * time.Second

// closeWith accepts the upgrade and closes it with code and reason, after
// message when there is one. The Origin was checked when the decision was
// taken (ServeHTTP): one that is not allowed is refused with 403 there.
func (s *State) closeWith(w http.ResponseWriter, r *http.Request, message string, code int, reason string) {
	up := websocket.Upgrader{CheckOrigin: checkedOrigin, Subprotocols: []string{wire.Subprotocol}}
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	deadline := time.Now().Add(closeWait)
	c.SetWriteDeadline(deadline)
	if message != "" {
		if c.WriteMessage(websocket.TextMessage, []byte(message)) != nil {
			return
		}
	}
	if c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), deadline) != nil {
		return
	}
	// Wait for the client's close frame so the close is clean and the
	// reason is not lost to a reset; anything else it sends is dropped.
	c.SetReadDeadline(deadline)
	for {
		if _, _, err := c.NextReader(); err != nil {
			return
		}
	}
}

func checkedOrigin(*http.Request) bool { return true }

// CheckOrigin reports whether the page that sent r may open a WebSocket
// here, as the middleware decides it for its close-frame answers: by
// Options.Origins, or the same origin when there are none; a request
// without Origin is no browser's and is allowed. Its shape is gorilla's
// Upgrader.CheckOrigin, so the app's upgrader can agree with the
// middleware in one line:
//
//	up := websocket.Upgrader{CheckOrigin: mw.CheckOrigin}
func (m *Middleware) CheckOrigin(r *http.Request) bool { return m.state.Load().originAllowed(r) }

// originAllowed is the accepting upgrade's origin check: the request's host
// (same origin) when no Origins are configured, else the configured list. A
// request without Origin is not from a browser and is allowed, as
// gorilla/websocket does.
func (s *State) originAllowed(r *http.Request) bool {
	o := r.Header["Origin"]
	if len(o) == 0 {
		return true
	}
	u, err := url.Parse(o[0])
	if err != nil || u.Host == "" {
		return false
	}
	if len(s.origins) == 0 {
		return strings.EqualFold(u.Host, s.Host(r))
	}
	port := u.Port()
	if port == "" {
		port = defaultPort(strings.ToLower(u.Scheme))
	}
	for i := range s.origins {
		o := &s.origins[i]
		if strings.EqualFold(u.Scheme, o.scheme) && port == o.port && o.host.match(u.Host) {
			return true
		}
	}
	return false
}
