// Package wstest plays, in tests, the server side of wsredirect's moves by
// hand, for the clients of this repository (client, cmd/wsprobe) to be
// tested against exactly what a wsredirect server sends.
package wstest

import (
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect/wire"
)

// StubUpgrader upgrades as a wsredirect server does a connection it
// accepts only to close with a redirect: it selects wire.Subprotocol when
// the client offers it.
var StubUpgrader = websocket.Upgrader{
	Subprotocols: []string{wire.Subprotocol},
	CheckOrigin:  func(*http.Request) bool { return true },
}

// CloseWith sends what a wsredirect server sends to move a connection: the
// message (if any), then the close frame; it then waits for the client's
// close so the client reads the frame rather than a reset.
func CloseWith(c *websocket.Conn, message string, code int, reason string) {
	if message != "" && c.WriteMessage(websocket.TextMessage, []byte(message)) != nil {
		return
	}
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
	}
}

// CloseRedirect moves c to target as wsredirect does.
func CloseRedirect(c *websocket.Conn, target string) {
	msg, reason := wire.EncodeRedirect(target)
	CloseWith(c, msg, wire.CloseRedirect, reason)
}
