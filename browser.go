package wsredirect

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
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
	// [CloseRedirect] and the target, or for a 503 [CloseRetry] and the
	// delay (other refusals stay statuses): the
	// close code and reason are what script in a browser can read. The
	// accepting upgrade checks the Origin (Options.Origins). RFC 8441
	// requests are always answered with a status.
	ModeClose
)

// closeWait bounds how long a close-mode connection waits for the client
// to answer the close frame before the TCP connection is closed.
const closeWait = 2 * time.Second

// originPattern is a compiled entry of Options.Origins. An origin is
// scheme, host and port: without a port, the pattern means the scheme's
// default port, not any port.
type originPattern struct {
	scheme, port string
	host         hostPattern
}

func parseOrigins(origins []string) ([]originPattern, error) {
	pats := make([]originPattern, 0, len(origins))
	for _, o := range origins {
		scheme, host, ok := strings.Cut(o, "://")
		hp, hok := parseHostPattern(host)
		if !ok || !hok || (scheme != "http" && scheme != "https") {
			return nil, errorf("Options.Origins: %q: want scheme://host[:port], such as https://app.example.com or https://*.example.com", o)
		}
		port := hp.port
		if port == "" {
			port = defaultPort(scheme)
		}
		hp.port = ""
		pats = append(pats, originPattern{scheme: scheme, port: port, host: hp})
	}
	return pats, nil
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

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// closeWith accepts the upgrade and closes it with code and reason, after
// message when there is one. An Origin that is not allowed gets a 403 from
// the upgrader, as the app's own upgrader would answer it.
func (s *State) closeWith(w http.ResponseWriter, r *http.Request, message string, code int, reason string) {
	up := websocket.Upgrader{CheckOrigin: s.originAllowed, Subprotocols: []string{RedirectSubprotocol}}
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
