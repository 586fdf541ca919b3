package main

import (
	"context"
	"math/rand/v2"
	"net/http/httptrace"
	"time"

	"github.com/wsredirect/wsredirect/client"
)

// A follower reads a [client.Conn] on its own goroutine, so that the Conn
// follows close-code redirects as they come, and tells the probe what
// happens: messages, the error that ends the Conn, and the moves in
// between, learnt from hooks the Conn calls on that goroutine. That one
// goroutine sends every event in order on one channel, so a move is
// always seen before the connection it leads to.
type follower struct {
	c      *client.Conn
	ctx    context.Context // bounds reads and moves; carries the hooks
	events chan event
	done   chan struct{} // closed when the probe stops listening
	exited chan struct{} // closed when the reading goroutine returns
	err    error         // the error that ended the Conn, once received
}

type eventKind uint8

const (
	evMessage  eventKind = iota // a data message for the application
	evError                     // the Conn is done: a failed move, a close, a timeout
	evDial                      // a move dials its next hop
	evResponse                  // a hop of a move got its handshake response
	evWait                      // a move waits before retrying (CloseRetry, 503)
)

type event struct {
	kind eventKind
	mt   int
	p    []byte
	err  error
	// hops is the chain when a message or error arrived, taken on the
	// reading goroutine, before a later move can change it.
	hops []client.Hop
}

func newFollower() *follower {
	return &follower{events: make(chan event), done: make(chan struct{}), exited: make(chan struct{})}
}

// start starts reading c. ctx bounds the reads and every move.
func (f *follower) start(ctx context.Context, c *client.Conn) {
	f.c = c
	trace := &httptrace.ClientTrace{
		GetConn:              func(string) { f.emit(event{kind: evDial}) },
		GotFirstResponseByte: func() { f.emit(event{kind: evResponse}) },
	}
	f.ctx = httptrace.WithClientTrace(ctx, trace)
	go f.read()
}

func (f *follower) read() {
	defer close(f.exited)
	for {
		mt, p, err := f.c.ReadMessage(f.ctx)
		if err != nil {
			f.emit(event{kind: evError, err: err, hops: f.c.Hops()})
			return
		}
		f.emit(event{kind: evMessage, mt: mt, p: p, hops: f.c.Hops()})
	}
}

func (f *follower) emit(e event) {
	select {
	case f.events <- e:
	case <-f.done:
	}
}

// stop stops listening and waits for the reader, which the caller ends by
// closing the Conn or cancelling the context.
func (f *follower) stop() {
	close(f.done)
	<-f.exited
}

// next returns the next message or the error that ended the Conn, passing
// over moves: once connected, the Conn follows them on its own.
func (f *follower) next() event {
	if f.err != nil {
		return event{kind: evError, err: f.err}
	}
	for {
		switch e := <-f.events; e.kind {
		case evMessage:
			return e
		case evError:
			f.err = e.err
			return e
		}
	}
}

// A verdict is what the probe learnt about the connection a dial ended on.
type verdict struct {
	hops []client.Hop
	// first is the message that showed the connection is the
	// application's, when one did.
	first *event
	// err ended the Conn before the connection proved to be the
	// application's: a move that failed, a close, a timeout.
	err error
	// redirectOnly is set when err came while the connection was known to
	// be a redirect (it selected the subprotocol wire.Subprotocol), so a
	// close without a usable redirect is a broken chain and not an
	// application closing its connection.
	redirectOnly bool
}

// settle follows close-code redirects until the Conn is on the
// application's connection: one that delivers a message, or that stays open
// for the settle time without being moved. A connection whose handshake
// told (known) is taken at its word: one that selected wire.Subprotocol is a
// redirect and is waited on until its close, however long that takes within
// the context; one that did not is the application's at once. Connections a
// move leads to are never known: the Conn does not expose their handshake.
func (f *follower) settle(known, redirectOnly bool, settle time.Duration) verdict {
	if known && !redirectOnly {
		return verdict{hops: f.c.Hops()}
	}
	var timer *time.Timer
	var fire <-chan time.Time // nil while nothing is timed
	stop := func() {
		if timer != nil {
			timer.Stop()
		}
		fire = nil
	}
	defer stop()
	arm := func() {
		stop()
		d := settle
		if dl, ok := f.ctx.Deadline(); ok {
			d = min(d, time.Until(dl))
		}
		timer = time.NewTimer(d)
		fire = timer.C
	}
	if !redirectOnly {
		arm()
	}
	for {
		select {
		case <-fire:
			return verdict{hops: f.c.Hops()}
		case e := <-f.events:
			switch e.kind {
			case evMessage:
				return verdict{hops: e.hops, first: &e}
			case evError:
				f.err = e.err
				return verdict{hops: e.hops, err: e.err, redirectOnly: redirectOnly}
			case evDial, evWait:
				// A move is under way: whatever comes next was not
				// announced by its handshake, and until it answers
				// there is nothing to time.
				redirectOnly = false
				stop()
			case evResponse:
				arm()
			}
		}
	}
}

// jitter is the Dialer's Jitter, which the client calls just before it
// waits to retry (CloseRetry, or a 503 on the way): once reading, that is
// on the reading goroutine, and it tells the probe that a move is waiting.
// Before, it is Connect calling on the probe's own goroutine, with nobody
// to tell. The jitter itself is the client's default: uniform in
// [0, 1s + delay/10).
func (f *follower) jitter(delay time.Duration) time.Duration {
	if f.c != nil {
		f.emit(event{kind: evWait})
	}
	return rand.N(time.Second + delay/10)
}
