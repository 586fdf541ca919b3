package client

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect/wire"
)

// Conn is a WebSocket connection that follows the moves of wsredirect. When
// the server closes it with CloseRedirect and a target, [Conn.ReadMessage]
// connects to the target; with CloseRetry and a delay, it waits that long
// plus jitter and connects again to the URL first dialled. Either way it
// goes on reading from the new connection, and the move never reaches the
// application.
//
// Where the Conn goes is only ever said by a close frame (or a status or
// Location on the way), which the server's WebSocket layer writes. A data
// message cannot move it: on many servers another client may have written
// it (a chat relays text verbatim). So every data message of the
// application's connection reaches the application, in order, whatever it
// says, "wsr1 " prefix and all. The exceptions:
//
//   - A stub, a connection whose server selected wire.Subprotocol (see the
//     package doc), is only a redirect and never the application's: the
//     "wsr1 <target>" message it sends before a "wsr1 +" close is the
//     target of that close. A stub that sends anything else is taken for
//     the application's connection from then on; one that has not closed
//     within 5 seconds ends the Conn.
//   - The cue (wire.Cue, "wsr1 move", exactly) asks the Conn to close
//     first, so that nothing it writes is behind the server's close frame.
//     The Conn holds the cue, stops writing (writes queue, as during any
//     move), closes with code 1000 and reads on until the server answers
//     with its close frame, for at most 5 seconds; messages read meanwhile
//     are held after the cue. If the answer is a move (CloseRedirect or
//     CloseRetry with a reason that parses), the cue was the server's: it
//     is dropped, the held messages are delivered and the move is followed.
//     If the answer is the usual echo (1000, or 1005 without a code) or
//     none comes in time, the cue was not the server's (another client
//     wrote it): the cue and the held messages are delivered as the
//     ordinary messages they are, and the Conn dials the URL it is on
//     again, at once, queued writes first, surfacing nothing; that dial
//     neither uses nor updates the memory of redirects. After a cue proved
//     false, cues are ordinary messages for a minute, so forged cues cost
//     at most one reconnect a minute. Any other answer is a real close:
//     the held messages, cue included, are delivered, then the close.
//
// So the most a message another client wrote can do is make the Conn dial
// the URL it is on again, at most once a minute, which the application
// does not see beyond its writes waiting for that dial (and for the
// server's answer, at most 5 seconds).
//
// The [Dialer]'s rules hold across reconnects: one hop cap and one loop
// memory for the chain, wss never left for ws, credentials dropped once the
// origin changes, CheckRedirect asked before each move by a close frame.
// A move CheckRedirect vetoes does not end the Conn: it dials the URL it is
// on again instead, as after a false cue; a redirect of that dial that is
// vetoed too, or a veto of a move of the connection that dial opened
// before it carried a message, ends the Conn. A chain ends when the
// application receives a message: a connection that carried data was not
// part of a loop, so the next move starts a new chain.
//
// A Conn supports one concurrent reader and one concurrent writer, as
// gorilla's does. Moves happen while the reader reads, so keep one reading.
//
// What is delivered where during a move: every message written before the
// Conn sees the server's close or cue reaches the old node's app (a
// wsredirect server keeps reading until the close handshake completes);
// every message written from then until the new connection is open is
// queued — at most [Dialer.MaxQueuedMessages] and
// [Dialer.MaxQueuedBytes] — and written first thing on the new
// connection, in order. Each message reaches exactly one node's app, or
// its write fails ([ErrQueueFull]), or the [*Error] that ends the Conn
// lists it in Unsent; none is dropped silently. After a close frame that
// came first (no cue), a message written meanwhile may have been sent and
// lost with the old connection, which no client can prevent. Delivery to
// an app is not processing by it: for end-to-end exactly-once, number
// messages and have the app acknowledge them, resuming from the last
// acknowledged one after a move, which [Conn.Hops] reveals.
type Conn struct {
	// Used by the reading goroutine only.
	ch      *chain
	stub    bool      // the connection is a stub: a redirect, not the app's
	stubBy  time.Time // when the stub must have closed
	pending []byte    // on a stub: the last "wsr1 " message, the target of a "wsr1 +" close
	held    []Message // read, and due to the application before anything read later
	settled bool      // the application received a message since the last move
	// stayed: the connection is the one a veto went back to, and it has
	// carried no message yet.
	stayed   bool
	falseCue time.Time // when a cue last proved false; zero: never
	now      func() time.Time
	err      error // the read error that ends the Conn, once held is delivered
	reading  sync.WaitGroup

	mu     sync.Mutex
	ws     *websocket.Conn
	proto  string // the subprotocol of the app's connection
	trace  []Hop
	closed bool
	// The writer's side of a move: from the server's redirect close or
	// cue until the new connection is open, writes queue.
	moving      bool
	queue       []Message
	queuedBytes int
	werr        error // why writes fail for good: the move failed

	maxQueued, maxQueuedBytes int // the Dialer's limits, defaults applied
}

// queueLimits returns d's limits for what a Conn queues during a move.
func (d *Dialer) queueLimits() (messages, bytes int) {
	messages, bytes = d.MaxQueuedMessages, d.MaxQueuedBytes
	if messages == 0 {
		messages = DefaultMaxQueuedMessages
	}
	if bytes == 0 {
		bytes = DefaultMaxQueuedBytes
	}
	return messages, bytes
}

// Message is an application message a [Conn] was given to write.
type Message struct {
	Type int // websocket.TextMessage or websocket.BinaryMessage
	Data []byte
}

// Connect dials like [Dialer.DialContext] and returns a [Conn] that follows
// the moves of wsredirect. The Dialer is copied: later changes to it do not
// affect the Conn. The copy shares the Dialer's memory of redirects
// ([Dialer.RememberRedirects]): where the Conn is moved to is remembered
// for the Dialer's next dial of urlStr.
//
// Unlike DialContext, Connect returns as soon as a connection is open, with
// its handshake response, and leaves a stub's redirect (its response's
// Sec-WebSocket-Protocol is then wire.Subprotocol) to the first
// ReadMessage. [Conn.Subprotocol] is the application's subprotocol.
func (d *Dialer) Connect(ctx context.Context, urlStr string, requestHeader http.Header) (*Conn, *http.Response, error) {
	d.memory() // created before the copy, so that the copy shares it
	dd := *d
	ch, err := newChain(&dd, urlStr, requestHeader)
	if err != nil {
		return nil, nil, err
	}
	ws, resp, err := ch.start(ctx)
	if err != nil {
		return nil, resp, err
	}
	c := &Conn{ch: ch, now: d.now}
	if c.now == nil {
		c.now = time.Now
	}
	c.maxQueued, c.maxQueuedBytes = d.queueLimits()
	c.use(ws)
	c.ws = ws
	c.publish()
	return c, resp, nil
}

// use makes ws the connection the Conn reads, once dialled.
func (c *Conn) use(ws *websocket.Conn) {
	c.watch(ws)
	c.stub = isStub(ws)
	if c.stub {
		c.stubBy = time.Now().Add(leaveAnswer)
	}
	c.mu.Lock()
	c.proto = ""
	if !c.stub {
		c.proto = ws.Subprotocol()
	}
	c.mu.Unlock()
}

// watch makes ws's close handler start a move before it answers the
// server's close: a write after the answer would fail, so from then on
// writes queue. A write that got in before it reached the old connection
// ahead of the answer, and so the old node's app.
func (c *Conn) watch(ws *websocket.Conn) {
	ws.SetCloseHandler(func(code int, _ string) error {
		if code == wire.CloseRedirect || code == wire.CloseRetry {
			c.mu.Lock()
			c.moving = true
			c.mu.Unlock()
		}
		// gorilla's default: answer with the code.
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		return nil
	})
}

// ReadMessage reads the next data message, following the server's moves
// first (see [Conn] for which messages are whose). ctx bounds the read and
// any reconnection; once ctx ends a read, the Conn is done, as after a
// passed read deadline in gorilla. Errors are gorilla's (a
// *websocket.CloseError for other close codes) or, when a move could not
// be followed, an [*Error]; messages read before the error are delivered
// first, and after it every call returns it.
func (c *Conn) ReadMessage(ctx context.Context) (messageType int, p []byte, err error) {
	for {
		if len(c.held) > 0 {
			m := c.held[0]
			c.held[0] = Message{}
			c.held = c.held[1:]
			return m.Type, m.Data, nil
		}
		if c.err != nil {
			return 0, nil, c.err
		}
		ws := c.current()
		if c.stub {
			ws.SetReadDeadline(c.stubBy)
		}
		messageType, p, err = c.read(ctx, ws)
		switch {
		case err != nil:
			c.end(ctx, ws, err)
		case c.stub:
			c.onStub(ws, messageType, p)
		case messageType == websocket.TextMessage && isCue(p) && c.cueWelcome():
			c.answerCue(ctx, ws)
		default:
			c.delivered()
			return messageType, p, nil
		}
	}
}

// delivered notes that the application receives a message of the current
// connection.
func (c *Conn) delivered() {
	c.settled, c.stayed = true, false
}

// hold queues messages of the current connection for the application,
// ahead of anything read later.
func (c *Conn) hold(ms ...Message) {
	if len(ms) > 0 {
		c.held = append(c.held, ms...)
		c.delivered()
	}
}

// holdPending hands the application a stub's "wsr1 " message that turned
// out not to be the target of a move.
func (c *Conn) holdPending() {
	if c.pending != nil {
		c.hold(Message{Type: websocket.TextMessage, Data: c.pending})
		c.pending = nil
	}
}

// end acts on the read error that ended ws: it follows the move the close
// says, or ends the Conn.
func (c *Conn) end(ctx context.Context, ws *websocket.Conn, readErr error) {
	if c.stub && ctx.Err() == nil && isTimeout(readErr) {
		readErr = &Error{Hops: c.Hops(), Err: stubError(c.ch.hops[len(c.ch.hops)-1].URL, readErr)}
	}
	err := c.move(ctx, ws, readErr)
	c.holdPending()
	c.stop(err)
}

// stop ends the Conn with err, unless it is nil.
func (c *Conn) stop(err error) {
	if err != nil {
		c.err = c.failWrites(err)
	}
}

// read is ws.ReadMessage bounded by ctx: gorilla reads know deadlines
// only, so a done ctx pulls in the read deadline.
func (c *Conn) read(ctx context.Context, ws *websocket.Conn) (int, []byte, error) {
	if ctx.Done() == nil {
		return ws.ReadMessage()
	}
	c.reading.Add(1)
	stop := context.AfterFunc(ctx, func() {
		defer c.reading.Done()
		ws.SetReadDeadline(time.Unix(1, 0))
	})
	messageType, p, err := ws.ReadMessage()
	if stop() {
		c.reading.Done()
		return messageType, p, err
	}
	c.reading.Wait()
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	// The message made it; the deadline meant for this call must not
	// fail the next one.
	ws.SetReadDeadline(time.Time{})
	return messageType, p, nil
}

// WriteMessage writes a message to the current connection or, while the
// server moves it, queues a copy for the next one (see [Conn] for what is
// delivered where). It returns [ErrQueueFull], wrapped, when the queue has
// no room for the message, and the error that ended the Conn once a move
// failed.
func (c *Conn) WriteMessage(messageType int, data []byte) error {
	for {
		c.mu.Lock()
		if c.werr != nil {
			err := c.werr
			c.mu.Unlock()
			return err
		}
		if c.moving {
			defer c.mu.Unlock()
			return c.enqueue(messageType, data)
		}
		ws := c.ws
		c.mu.Unlock()
		err := ws.WriteMessage(messageType, data)
		if err == nil {
			return nil
		}
		// A write that lost the race with the server's close is queued
		// for the new connection rather than failed.
		c.mu.Lock()
		again := c.moving || c.ws != ws
		c.mu.Unlock()
		if !again {
			return err
		}
	}
}

func (c *Conn) enqueue(messageType int, data []byte) error {
	if len(c.queue)+1 > c.maxQueued || c.queuedBytes+len(data) > c.maxQueuedBytes {
		return fmt.Errorf("%w: %d messages, %d bytes waiting for the connection to move", ErrQueueFull, len(c.queue), c.queuedBytes)
	}
	c.queue = append(c.queue, Message{Type: messageType, Data: slices.Clone(data)})
	c.queuedBytes += len(data)
	return nil
}

// Close sends a normal closure and closes the current connection; a
// reconnection in progress is abandoned. Messages still queued for a move
// are not sent: Close then returns an [*Error] listing them in Unsent.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.closed = true
	ws := c.ws
	unsent := c.queue
	c.queue, c.queuedBytes = nil, 0
	c.mu.Unlock()
	ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	err := ws.Close()
	if len(unsent) > 0 {
		return &Error{Hops: c.Hops(), Err: net.ErrClosed, Unsent: unsent}
	}
	return err
}

// Hops returns the hops that led to the current connection, starting from
// the dial or from the last connection that carried a message before the
// server moved it. The last hop is the current connection.
func (c *Conn) Hops() []Hop {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.trace)
}

// Subprotocol returns the subprotocol the server of the application's
// connection selected: "" for none, and while the Conn is on a stub, which
// is not the application's connection (so it is never wire.Subprotocol).
// It may change when the Conn moves.
func (c *Conn) Subprotocol() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proto
}

func (c *Conn) current() *websocket.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ws
}

// publish makes the chain's hops visible to Hops, which may run on another
// goroutine than the reader that changes them.
func (c *Conn) publish() {
	c.mu.Lock()
	c.trace = slices.Clone(c.ch.hops)
	c.mu.Unlock()
}
