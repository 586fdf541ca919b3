package client

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect/wire"
)

// cueBudget is how long cues are ordinary messages once one proved false:
// forged cues cost at most one reconnect per cueBudget.
const cueBudget = wire.CueQuiet

func isCue(p []byte) bool { return len(p) == len(wire.Cue) && wire.IsCue(string(p)) }

// cueWelcome reports whether a cue read now is answered, rather than
// delivered as an ordinary message.
func (c *Conn) cueWelcome() bool {
	return c.falseCue.IsZero() || c.now().Sub(c.falseCue) >= cueBudget
}

// answerCue answers the cue just read on ws: it stops writing, closes ws
// with 1000 and reads ws until the server's close or leaveAnswer, holding
// what it reads, then goes where the server's answer says (see [Conn]).
func (c *Conn) answerCue(ctx context.Context, ws *websocket.Conn) {
	c.mu.Lock()
	c.moving = true
	c.mu.Unlock()
	by := time.Now().Add(leaveAnswer)
	// Behind everything written so far: the server reads it all first.
	ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), by)
	held := []Message{{Type: websocket.TextMessage, Data: []byte(wire.Cue)}}
	var err error
	for {
		// read clears the deadline after a message read under a ctx.
		ws.SetReadDeadline(by)
		var m Message
		if m.Type, m.Data, err = c.read(ctx, ws); err != nil {
			break
		}
		held = append(held, m)
	}
	var ce *websocket.CloseError
	closed := ctx.Err() == nil && errors.As(err, &ce)
	if closed {
		if target, after, ok := c.moveOf(ce); ok {
			// Only the server writes close frames: the cue was its own.
			c.hold(held[1:]...)
			c.stop(c.follow(ctx, ws, ce.Code, target, after, err))
			return
		}
	}
	c.hold(held...)
	echoed := closed && (ce.Code == websocket.CloseNormalClosure || ce.Code == websocket.CloseNoStatusReceived)
	if !echoed && (ctx.Err() != nil || !isTimeout(err)) {
		c.stop(err)
		return
	}
	// The server answered the close as any close, or not at all: someone
	// else wrote the cue. Back to where the Conn is, at once.
	c.falseCue = c.now()
	ws.Close()
	c.fresh()
	if closed {
		c.ch.hops[len(c.ch.hops)-1].Close = ce.Code
	}
	c.stop(c.reconnect(ctx, c.ch.cur, true))
}

// isTimeout reports whether err is a passed deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
