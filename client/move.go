package client

import (
	"context"
	"errors"
	"net"
	"net/url"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect/wire"
)

// move follows the move of the close frame that ended ws with readErr, and
// returns readErr itself when there is none.
func (c *Conn) move(ctx context.Context, ws *websocket.Conn, readErr error) error {
	var ce *websocket.CloseError
	if ctx.Err() != nil || !errors.As(readErr, &ce) {
		return readErr
	}
	target, after, ok := c.moveOf(ce)
	if !ok {
		return readErr
	}
	c.pending = nil
	return c.follow(ctx, ws, ce.Code, target, after, readErr)
}

// moveOf reads the move a close frame of the current connection says: the
// target of a CloseRedirect, taken from the pending message on a stub only,
// or the wait of a CloseRetry.
func (c *Conn) moveOf(ce *websocket.CloseError) (target string, after time.Duration, ok bool) {
	var last string
	if c.stub {
		last = string(c.pending)
	}
	return closeMove(ce, last, c.ch.cur.String())
}

// closeMove reads the move of a close frame: the target of a CloseRedirect
// (last is the text message before it, current the URL it ends), or the
// wait of a CloseRetry; ok is false for any other close, or a reason that
// does not read.
func closeMove(ce *websocket.CloseError, last, current string) (target string, after time.Duration, ok bool) {
	switch ce.Code {
	case wire.CloseRedirect:
		target, ok = wire.ParseRedirect(ce.Text, last, current)
	case wire.CloseRetry:
		after, ok = wire.ParseRetry(ce.Text)
	}
	return target, after, ok
}

// follow moves the Conn from ws, which the server closed with code: to
// target (CloseRedirect) or, after the wait (CloseRetry), to the URL first
// dialled. readErr is what ended ws.
func (c *Conn) follow(ctx context.Context, ws *websocket.Conn, code int, target string, after time.Duration, readErr error) error {
	// The server closed it; what is left is the socket.
	ws.Close()
	ch := c.ch
	c.fresh()
	last := &ch.hops[len(ch.hops)-1]
	last.Close = code
	if code == wire.CloseRetry {
		last.RetryAfter = after
		if err := ch.wait(ctx, after); err != nil {
			if err == errNoRetry {
				err = readErr
			}
			c.publish()
			return ch.fail(ctx, err)
		}
		// Back where the caller sent us, as the caller sent us.
		ch.restart()
		return c.reconnect(ctx, ch.first, false)
	}
	last.Location = target
	next, vetoed, err := ch.follow(ch.cur, target)
	switch {
	case vetoed && !c.stub && !c.stayed:
		// The application's connection was vetted and kept where it is.
		err = c.reconnect(ctx, ch.cur, true)
		c.stayed = true
		return err
	case err != nil:
		c.publish()
		return ch.fail(ctx, err)
	}
	return c.reconnect(ctx, next, false)
}

// fresh starts a new chain from the current connection when it carried a
// message: it was not part of a loop.
func (c *Conn) fresh() {
	if !c.settled {
		return
	}
	ch := c.ch
	ch.hops = ch.hops[len(ch.hops)-1:]
	ch.loopFrom, ch.redirects, ch.retries = 0, 0, 0
	c.settled = false
}

// reconnect dials u and makes the connection it opens the Conn's. stay:
// u is the URL the Conn is on, dialled again rather than moved to, which
// neither uses nor updates the memory of redirects.
func (c *Conn) reconnect(ctx context.Context, u *url.URL, stay bool) error {
	ch := c.ch
	c.stayed = false
	ch.stay = stay
	nws, _, err := ch.run(ctx, u)
	ch.stay = false
	c.publish()
	if err != nil {
		return err
	}
	c.use(nws)
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
