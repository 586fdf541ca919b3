package client

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect/wire"
)

// leaveAnswer bounds how long a close the server owes may take: a stub's,
// which a wsredirect server sends at once, and the answer to the close a
// [Conn] sends on a cue.
var leaveAnswer = wire.CueAnswerWait

// isStub reports whether ws is a stub: its server selected the marker,
// which a wsredirect server does only on a connection it accepted to close
// with a redirect.
func isStub(ws *websocket.Conn) bool { return ws.Subprotocol() == wire.Subprotocol }

// leaveStub reads the stub ws, the chain's last hop, dialled at u, until
// its close, and returns where the close sends the chain: the target of a
// CloseRedirect, vetted like a Location, or the first URL after the wait
// of a CloseRetry.
func (c *chain) leaveStub(ctx context.Context, ws *websocket.Conn, u *url.URL) (*url.URL, error) {
	ce, last, err := readStub(ctx, ws)
	ws.Close()
	hop := &c.hops[len(c.hops)-1]
	if err != nil {
		return nil, stubError(hop.URL, err)
	}
	target, after, ok := closeMove(ce, last, u.String())
	switch {
	case !ok && (ce.Code == wire.CloseRedirect || ce.Code == wire.CloseRetry):
		what := map[int]string{wire.CloseRedirect: "redirect", wire.CloseRetry: "retry"}[ce.Code]
		return nil, fmt.Errorf("wsredirect/client: %s: close %d with a reason that is not a wsredirect v1 %s: %w", hop.URL, ce.Code, what, ce)
	case ce.Code == wire.CloseRedirect:
		hop.Close, hop.Location = ce.Code, target
		next, _, err := c.follow(u, target)
		return next, err
	case ce.Code == wire.CloseRetry:
		hop.Close, hop.RetryAfter = ce.Code, after
		if err := c.wait(ctx, after); err != nil {
			if err == errNoRetry {
				return nil, ce
			}
			return nil, err
		}
		c.restart()
		return c.first, nil
	}
	return nil, stubError(hop.URL, ce)
}

// readStub reads a stub until its close, within leaveAnswer and ctx, and
// returns the close and the last text message before it, which may hold
// the target. A stub carries nothing else: any other message is an error.
func readStub(ctx context.Context, ws *websocket.Conn) (ce *websocket.CloseError, last string, err error) {
	ws.SetReadDeadline(time.Now().Add(leaveAnswer))
	stop := context.AfterFunc(ctx, func() { ws.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		mt, p, err := ws.ReadMessage()
		if err != nil {
			if errors.As(err, &ce) {
				return ce, last, nil
			}
			return nil, "", err
		}
		if mt != websocket.TextMessage || !wire.IsRedirectMessage(string(p)) {
			return nil, "", errors.New("it sent a data message")
		}
		last = string(p)
	}
}

// stubError is why a stub at u led nowhere.
func stubError(u string, err error) error {
	return fmt.Errorf("wsredirect/client: %s selected subprotocol %s but did not redirect: %w", u, wire.Subprotocol, err)
}

// onStub takes a data message a stub sent.
func (c *Conn) onStub(ws *websocket.Conn, messageType int, p []byte) {
	// The marker is a short prefix: converting at most 32 bytes keeps the
	// check on the stack for messages of any size.
	if messageType == websocket.TextMessage && wire.IsRedirectMessage(string(p[:min(len(p), 32)])) {
		c.holdPending()
		c.pending = p
		return
	}
	// A stub carries no data: this connection is the application's after
	// all, and so is what it sent.
	c.holdPending()
	c.hold(Message{Type: messageType, Data: p})
	c.stub = false
	ws.SetReadDeadline(time.Time{})
	c.mu.Lock()
	c.proto = ws.Subprotocol()
	c.mu.Unlock()
}
