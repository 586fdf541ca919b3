package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect/wire"
)

// Conn is a WebSocket connection that follows the close-code redirects of
// wsredirect. When the server closes it with CloseRedirect and a target,
// [Conn.ReadMessage] connects to the target; with CloseRetry and a delay,
// it waits that long plus jitter and connects again to the URL first
// dialled. A move the server announces in a message first (package wire)
// is followed the same way, once the Conn has closed the old connection
// from its side. Either way it goes on reading from the new connection,
// and the redirect itself, including the text message that carries a
// target too long for a close reason, never reaches the application.
//
// The [Dialer]'s rules hold across reconnects: one hop cap and one loop
// memory for the chain, wss never left for ws, credentials dropped once the
// origin changes, CheckRedirect asked. A chain ends when the application
// receives a message: a connection that carried data was not part of a
// loop, so the next move starts a new chain.
//
// A Conn supports one concurrent reader and one concurrent writer, as
// gorilla's does. Moves happen while the reader reads, so keep one reading.
//
// What is delivered where during a move: every message written before the
// Conn sees the server's close or announcement reaches the old node's app
// (a wsredirect server keeps reading until the close handshake completes);
// every message written from then until the new connection is open is
// queued — at most
// [Dialer.MaxQueuedMessages] and [Dialer.MaxQueuedBytes] — and written
// first thing on the new connection, in order. Each message reaches exactly
// one node's app, or its write fails ([ErrQueueFull]), or the [*Error] that
// ends the Conn lists it in Unsent; none is dropped silently. Delivery to an
// app is not processing by it: for end-to-end exactly-once, number messages
// and have the app acknowledge them, resuming from the last acknowledged
// one after a move, which [Conn.Hops] reveals.
type Conn struct {
	// Used by the reading goroutine only.
	ch      *chain
	pending string // a redirect message waiting for its close frame
	// The close the server announced in a message (see package wire),
	// acted on once the connection this side closed ends, by leaveBy.
	announced *websocket.CloseError
	leaveBy   time.Time
	settled   bool  // the application received a message since the last move
	err       error // the read error that ended the Conn
	reading   sync.WaitGroup

	mu     sync.Mutex
	ws     *websocket.Conn
	trace  []Hop
	closed bool
	// The writer's side of a move: from the server's redirect close until
	// the new connection is open, writes queue.
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
// close-code redirects. The Dialer is copied: later changes to it do not
// affect the Conn. The copy shares the Dialer's memory of redirects
// ([Dialer.RememberRedirects]): where the Conn is moved to is remembered
// for the Dialer's next dial of urlStr.
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
	c := &Conn{ch: ch, ws: ws}
	c.maxQueued, c.maxQueuedBytes = d.queueLimits()
	c.watch(ws)
	c.publish()
	return c, resp, nil
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

// ReadMessage reads the next data message, reconnecting first when the
// server moves the connection. ctx bounds the read and any reconnection;
// once ctx ends a read, the Conn is done, as after a passed read deadline
// in gorilla. Errors are gorilla's (a *websocket.CloseError for other close
// codes) or, when a move could not be followed, an [*Error]; after an error
// every call returns it.
func (c *Conn) ReadMessage(ctx context.Context) (messageType int, p []byte, err error) {
	if c.err != nil {
		return 0, nil, c.err
	}
	for {
		ws := c.current()
		if c.announced != nil {
			ws.SetReadDeadline(c.leaveBy)
		}
		messageType, p, err = c.read(ctx, ws)
		if err == nil {
			// The marker is a short prefix: converting at most 32 bytes
			// keeps the check on the stack for messages of any size.
			if messageType == websocket.TextMessage && wire.IsRedirectMessage(string(p[:min(len(p), 32)])) {
				if code, reason, ok := wire.Announced(string(p)); ok {
					c.leave(ws, code, reason)
					continue
				}
				c.pending = string(p)
				continue
			}
			c.pending = ""
			c.settled = true
			return messageType, p, nil
		}
		if err = c.move(ctx, ws, err); err != nil {
			c.err = c.failWrites(err)
			return 0, nil, c.err
		}
	}
}

// leaveAnswer bounds how long a connection this side closed on an
// announcement may take to end: the server answers the close at once, and
// the messages it still sends before that are read meanwhile.
var leaveAnswer = 5 * time.Second

// leave acts on a move announced in a message: writes queue from here on,
// the close frame goes out behind everything written so far, and the
// connection is read until it ends, when the move follows (see move).
func (c *Conn) leave(ws *websocket.Conn, code int, reason string) {
	if c.announced != nil {
		return
	}
	c.mu.Lock()
	c.moving = true
	c.mu.Unlock()
	c.announced = &websocket.CloseError{Code: code, Text: reason}
	c.leaveBy = time.Now().Add(leaveAnswer)
	ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), c.leaveBy)
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

// move follows a close-code redirect or retry that ended ws with readErr,
// and returns readErr itself when it is neither.
func (c *Conn) move(ctx context.Context, ws *websocket.Conn, readErr error) error {
	var ce *websocket.CloseError
	switch {
	case ctx.Err() != nil:
		return readErr
	case c.announced != nil:
		// This side closed it: however it ended, the move is the one
		// announced.
		ce, c.announced = c.announced, nil
	case !errors.As(readErr, &ce):
		return readErr
	}
	// The server closed it; what is left is the socket.
	ws.Close()
	ch := c.ch
	if c.settled {
		ch.hops = ch.hops[len(ch.hops)-1:]
		ch.loopFrom, ch.redirects, ch.retries = 0, 0, 0
		c.settled = false
	}
	last := &ch.hops[len(ch.hops)-1]
	var next *url.URL
	switch ce.Code {
	case wire.CloseRedirect:
		target, ok := wire.ParseRedirect(ce.Text, c.pending, ch.cur.String())
		if !ok {
			return readErr
		}
		last.Close, last.Location = ce.Code, target
		u, err := ch.follow(ch.cur, target)
		if err != nil {
			c.publish()
			return ch.fail(ctx, err)
		}
		next = u
	case wire.CloseRetry:
		after, ok := wire.ParseRetry(ce.Text)
		if !ok {
			return readErr
		}
		last.Close, last.RetryAfter = ce.Code, after
		if err := ch.wait(ctx, after); err != nil {
			if err == errNoRetry {
				err = readErr
			}
			c.publish()
			return ch.fail(ctx, err)
		}
		// Back where the caller sent us, as the caller sent us.
		ch.restart()
		next = ch.first
	default:
		return readErr
	}
	c.pending = ""
	nws, _, err := ch.run(ctx, next)
	c.publish()
	if err != nil {
		return err
	}
	c.watch(nws)
	return c.open(nws)
}

// open makes nws the Conn's connection once the messages queued during the
// move are written to it, in order, ahead of any written later: writes keep
// queueing until the queue is empty.
func (c *Conn) open(nws *websocket.Conn) error {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			nws.Close()
			return net.ErrClosed
		}
		batch := c.queue
		if len(batch) == 0 {
			c.ws, c.moving = nws, false
			c.mu.Unlock()
			return nil
		}
		c.queue, c.queuedBytes = nil, 0
		c.mu.Unlock()
		for i, m := range batch {
			if err := nws.WriteMessage(m.Type, m.Data); err != nil {
				// The new connection failed already: what is left goes
				// back in front of the queue for the next move, or for
				// the error that ends the Conn.
				c.mu.Lock()
				c.queue = append(batch[i:len(batch):len(batch)], c.queue...)
				c.queuedBytes = 0
				for _, m := range c.queue {
					c.queuedBytes += len(m.Data)
				}
				c.ws = nws
				c.mu.Unlock()
				return nil
			}
		}
	}
}

// failWrites ends the writer's side with err, the read error that ended
// the Conn; the messages queued for a move that failed go out with it.
func (c *Conn) failWrites(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) > 0 {
		e := &Error{Err: err}
		var ce *Error
		if errors.As(err, &ce) {
			*e = *ce
		}
		e.Unsent, c.queue, c.queuedBytes = c.queue, nil, 0
		err = e
	}
	if c.moving {
		c.werr = err
	}
	return err
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
