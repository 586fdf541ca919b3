package wsredirect

import (
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Conn is an open WebSocket connection as [Middleware.Track] moves it, in
// any library: two methods, which [GorillaConn] and [CoderConn] provide for
// gorilla/websocket and coder/websocket.
type Conn interface {
	// Close sends a close frame with code and reason and may wait for the
	// peer's answer. The middleware calls it at most once per connection,
	// on a goroutine of its own.
	Close(code int, reason string) error
	// CloseNow closes the connection at once, without a handshake. It must
	// make a Close in progress return.
	CloseNow() error
}

// GorillaConn adapts a gorilla/websocket connection for [Middleware.Track].
//
// With a nil send, a move is a close frame: code 4307 and the new owner, or
// 4503 (package wire). A client that keeps sending until it reads that
// frame can lose what it sent in the meantime; browsers do (see package
// wire).
//
// With send, a move is cued in the stream first: send must write text as
// one text message through the same path as the app's own writes (its
// writer goroutine's queue, or under its write lock), in order, and return
// once the connection is closed. This module's Go client and JavaScript
// helper answer the cue by closing the connection themselves, so
// everything they sent before it reaches the app's read loop; the
// connection's close handler then answers their close with the move's
// close frame, which is where they learn where to go. A second after the
// cue the close frame follows anyway, for clients that do not know cues,
// which receive the cue as an ordinary message. A call of send with
// [wire.Cue] is the app's cue, too: write nothing after it that the client
// must get, as a browser drops messages that reach it after it began to
// close. send is never called once Track's untrack has returned; untrack
// waits up to a second for a send in progress, and a send that panics (on
// a writer queue closed meanwhile, say) is recovered and logged.
//
// GorillaConn wraps c's close handler, and the answer it writes goes out at
// once, as a control frame: an app that queues its writes should have the
// queue written first, in a close handler set after GorillaConn that
// empties the queue and then calls the one it replaces (examples/chat
// does), or a message queued just before the client's close reaches it
// too late to be read.
func GorillaConn(c *websocket.Conn, send func(text string) error) Conn {
	g := &gorillaConn{c: c, send: send}
	if send != nil {
		prev := c.CloseHandler()
		c.SetCloseHandler(func(code int, text string) error {
			g.peerClosed.Store(true)
			if f := g.answer.Load(); f != nil {
				// The move was cued: the answer is where the client goes.
				return c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(f.code, f.reason), time.Now().Add(moveWriteTimeout))
			}
			return prev(code, text)
		})
	}
	return g
}

type gorillaConn struct {
	c    *websocket.Conn
	send func(text string) error // nil: moves by close frame alone

	answer     atomic.Pointer[closeFrame] // set before the cue is sent
	peerClosed atomic.Bool                // the client's close frame arrived
}

type closeFrame struct {
	code   int
	reason string
}

func (g *gorillaConn) Close(code int, reason string) error {
	return g.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(moveWriteTimeout))
}

func (g *gorillaConn) CloseNow() error { return g.c.Close() }

// CoderConn adapts a coder/websocket connection for [Middleware.Track]:
//
//	untrack := mw.Track(room, wsredirect.CoderConn(c))
//
// coder/websocket answers a client's close frame by itself, so its moves
// are not cued: each is a close frame, as [GorillaConn] with a nil send.
// And once coder has sent its close frame it reads and drops the client's
// data frames until the client's close arrives: a message a client sends
// in the moment its move begins reaches no app (examples/chat's test saw 3
// lines of 5,568 lost so). Moves that lose nothing need GorillaConn with a
// send func.
// Any type with coder's Close(StatusCode, string) and CloseNow methods
// fits; this package does not import coder/websocket.
func CoderConn[S ~int, C interface {
	Close(code S, reason string) error
	CloseNow() error
}](c C) Conn {
	return coderAdapter[S, C]{c}
}

type coderAdapter[S ~int, C interface {
	Close(code S, reason string) error
	CloseNow() error
}] struct{ c C }

func (a coderAdapter[S, C]) Close(code int, reason string) error { return a.c.Close(S(code), reason) }
func (a coderAdapter[S, C]) CloseNow() error                     { return a.c.CloseNow() }
