package wsredirect

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsredirect/wsredirect/ring"
	"github.com/wsredirect/wsredirect/wire"
)

// liveSet is the registry of open connections behind [Middleware.Track].
type liveSet struct {
	mu    sync.Mutex
	conns map[*tracked]struct{}
}

type tracked struct {
	hash uint64
	conn *websocket.Conn
	send func(text string) error // nil: moves by close frame alone
}

// Track registers an open connection under its shard key (the key the
// Shard rule routed it by) so [Middleware.MoveConns] can move it. Call the
// returned func when the connection ends; calling it twice is harmless.
func (m *Middleware) Track(key string, c *websocket.Conn) (untrack func()) {
	return m.TrackSend(key, c, nil)
}

// TrackSend is [Track] for a connection whose app lets the middleware
// write in order with it, so that MoveConns can announce a move in the
// stream: send must write text as one text message through the same path
// as the app's own writes (its writer goroutine's queue, or under its
// write lock), without reordering. A move then starts with that message;
// this module's Go client and JavaScript helper answer it by closing the
// connection themselves, so everything the client sent before it is ahead
// of the client's close frame and reaches the app's read loop — which
// browsers cannot promise when the server's close frame comes first (see
// package wire). A second later the close frame follows as with Track,
// for clients that do not know announcements.
//
// A call of send is the app's cue that the connection is moving: a browser
// drops messages that reach it after it began to close, so write nothing
// after it that the client must get. Use TrackSend only when the clients
// are this module's Go client or JavaScript helper (any version that
// reads announcements): another client would receive the announcement as
// an application message. send must return once the connection is closed:
// MoveConns closes a connection whose send has not returned within a
// second, and counts it as cut. A nil send is Track.
func (m *Middleware) TrackSend(key string, c *websocket.Conn, send func(text string) error) (untrack func()) {
	t := &tracked{hash: ring.Hash(key), conn: c, send: send}
	m.live.mu.Lock()
	if m.live.conns == nil {
		m.live.conns = make(map[*tracked]struct{})
	}
	m.live.conns[t] = struct{}{}
	m.live.mu.Unlock()
	return func() {
		m.live.mu.Lock()
		delete(m.live.conns, t)
		m.live.mu.Unlock()
	}
}

// Tracked returns the number of connections registered with Track.
func (m *Middleware) Tracked() int {
	m.live.mu.Lock()
	defer m.live.mu.Unlock()
	return len(m.live.conns)
}

// MoveOptions paces [Middleware.MoveConns]. The zero value is usable.
type MoveOptions struct {
	// Batch is how many connections are closed at a time. Default: 1000.
	Batch int
	// Interval is the pause between batches; each pause is drawn from
	// [Interval/2, Interval*3/2) so reconnects do not arrive in waves.
	// Default: 1 second.
	Interval time.Duration
	// Grace is how long a client has to answer the close frame before its
	// connection is closed under it; for a connection registered with
	// [Middleware.TrackSend] it counts from the close frame that follows
	// the announcement. Default: 5 seconds.
	Grace time.Duration
}

// moveWriteTimeout bounds how long a close frame (or an announcement) may
// wait for the connection's writer: an app write blocked on a client that
// stopped reading holds it.
const moveWriteTimeout = time.Second

// announceWait is how long after an announcement ([Middleware.TrackSend])
// the close frame follows, for clients that do not answer announcements.
const announceWait = time.Second

// MoveConns moves the tracked connections this node should no longer
// serve: each one whose key a new upgrade would now send elsewhere (after
// [Middleware.DrainMember] for this node, every key it hands off; after
// [Middleware.SetMembers], the keys another member now owns). Each gets a
// close frame with code 4307 naming its new owner with the same path and
// query, or 4503 when no member is left (package wire), in batches paced by
// opts; the frames of a batch go out concurrently. A connection registered
// with [Middleware.TrackSend] is first sent the close's reason as a text
// message, its announcement, and the frame a second later. Clients using
// this module's Go client or JavaScript helper reconnect there. The app's
// read loop must keep reading: it still receives every message the client
// sent before it saw the move, until the client's close (or Grace) ends
// the connection, and the client sends everything after it to the new
// node.
//
// moved counts the connections that were sent their frame or announcement;
// cut counts those whose frame or announcement could not be written within
// a second — a client that stopped reading while the app writes to it
// holds the connection's writer — and that were closed under the app
// instead, so the client reconnects and is redirected then. A moved client
// that has not closed within Grace of its close frame is closed too. ctx
// bounds the whole call: when it ends, writes under way are cut, the
// connections not reached yet are left as they are, and ctx.Err() is
// returned.
func (m *Middleware) MoveConns(ctx context.Context, opts MoveOptions) (moved, cut int, err error) {
	if opts.Batch <= 0 {
		opts.Batch = 1000
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Grace <= 0 {
		opts.Grace = 5 * time.Second
	}
	s := m.state.Load()
	if s.fleet.ring.Len() == 0 {
		return 0, 0, errors.New("wsredirect: MoveConns: no members to move connections to")
	}
	var todo []*tracked
	m.live.mu.Lock()
	for t := range m.live.conns {
		if _, moves := s.liveOwner(t.hash); moves {
			todo = append(todo, t)
		}
	}
	m.live.mu.Unlock()

	start := time.Now()
	for len(todo) > 0 && ctx.Err() == nil {
		n := min(opts.Batch, len(todo))
		bm, bc := s.moveBatch(ctx, todo[:n], opts.Grace)
		moved, cut = moved+bm, cut+bc
		m.moved.Add(uint64(bm))
		m.cut.Add(uint64(bc))
		todo = todo[n:]
		if len(todo) == 0 {
			break
		}
		pause := time.NewTimer(opts.Interval/2 + rand.N(opts.Interval))
		select {
		case <-ctx.Done():
		case <-pause.C:
		}
		pause.Stop()
		// Re-read the state: a drain may have ended meanwhile.
		s = m.state.Load()
	}
	if s.logger != nil && moved+cut > 0 {
		s.logger.LogAttrs(ctx, slog.LevelInfo, "wsredirect: moved connections",
			slog.Int("moved", moved), slog.Int("cut", cut), slog.Int("left", len(todo)), slog.Duration("took", time.Since(start)))
	}
	return moved, cut, ctx.Err()
}

// Moves returns how many connections [Middleware.MoveConns] has moved and
// cut since the Middleware was built, for metrics.
func (m *Middleware) Moves() (moved, cut uint64) {
	return m.moved.Load(), m.cut.Load()
}

// moveBatch sends each connection of batch that should move its close
// frame, all at once, and returns when every write has ended.
func (s *State) moveBatch(ctx context.Context, batch []*tracked, grace time.Duration) (moved, cut int) {
	var wg sync.WaitGroup
	var nMoved, nCut atomic.Int64
	for _, t := range batch {
		owner, moves := s.liveOwner(t.hash)
		if !moves {
			continue
		}
		code, reason := s.moveClose(owner)
		frame := websocket.FormatCloseMessage(code, reason)
		wg.Go(func() {
			deadline := time.Now().Add(moveWriteTimeout)
			if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
				deadline = d
			}
			// Closing the connection is what unblocks a write that waits
			// for the writer when ctx ends before the deadline.
			stop := context.AfterFunc(ctx, func() { t.conn.Close() })
			var err error
			if t.send != nil {
				err = announce(t, reason, deadline)
			} else {
				err = t.conn.WriteControl(websocket.CloseMessage, frame, deadline)
			}
			stop()
			if err != nil || ctx.Err() != nil {
				t.conn.Close()
				nCut.Add(1)
				return
			}
			nMoved.Add(1)
			if t.send == nil {
				time.AfterFunc(grace, func() { t.conn.Close() })
				return
			}
			// Grace counts from the close frame, which every client gets:
			// a Grace shorter than announceWait must not cut it first.
			time.AfterFunc(announceWait, func() {
				t.conn.WriteControl(websocket.CloseMessage, frame, time.Now().Add(moveWriteTimeout))
				time.AfterFunc(grace, func() { t.conn.Close() })
			})
		})
	}
	wg.Wait()
	return int(nMoved.Load()), int(nCut.Load())
}

// liveOwner returns the member that should serve an open connection with
// key hash h, and whether that is not this node; owner is -1 when no member
// can.
func (s *State) liveOwner(h uint64) (owner int, moves bool) {
	owner = s.owner(h)
	return owner, owner != s.fleet.self
}

// moveClose is the close code and reason that send a connection to member
// owner, or ask it to retry later when owner is -1. Member URLs are checked
// to fit a close reason when the fleet is built.
func (s *State) moveClose(owner int) (code int, reason string) {
	if owner < 0 {
		return wire.CloseRetry, wire.EncodeRetry(s.drainRetryAfter)
	}
	reason, _ = wire.EncodeMove(s.fleet.targets[owner].String())
	return wire.CloseRedirect, reason
}

// announce sends a tracked connection's app the announcement of its move
// through the app's send, waiting for it until deadline: a send still
// blocked then (the app's writer held by a client that stopped reading)
// fails, and the caller's closing the connection is what unblocks it.
func announce(t *tracked, reason string, deadline time.Time) error {
	done := make(chan error, 1)
	go func() { done <- t.send(reason) }()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		return errors.New("wsredirect: announcing a move: send did not return in time")
	}
}
