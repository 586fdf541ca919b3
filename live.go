package wsredirect

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
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
	key  string
	hash uint64
	conn *websocket.Conn
}

// Track registers an open connection under its shard key (the key the
// Shard rule routed it by) so [Middleware.MoveConns] can move it. Call the
// returned func when the connection ends; calling it twice is harmless.
func (m *Middleware) Track(key string, c *websocket.Conn) (untrack func()) {
	t := &tracked{key: key, hash: ring.Hash(key), conn: c}
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
	// connection is closed under it. Default: 5 seconds.
	Grace time.Duration
}

// MoveConns moves the tracked connections this node should no longer
// serve: each one whose key a new upgrade would now send elsewhere (after
// [Middleware.DrainMember] for this node, every key it hands off; after
// [Middleware.SetMembers], the keys another member now owns). Each gets a
// close frame with code 4307 naming its new owner with the same path and
// query, or 4503 when no member is left (package wire), in batches paced by
// opts. Clients
// using this package's Go client or JavaScript helper reconnect there.
// It returns how many connections it closed, when all have been sent their
// frame or ctx ends.
func (m *Middleware) MoveConns(ctx context.Context, opts MoveOptions) (moved int, err error) {
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
		return 0, errors.New("wsredirect: MoveConns: no members to move connections to")
	}
	var todo []*tracked
	m.live.mu.Lock()
	for t := range m.live.conns {
		if _, moves := s.liveOwner(t.hash); moves {
			todo = append(todo, t)
		}
	}
	m.live.mu.Unlock()

	var errs []error
	for len(todo) > 0 {
		n := min(opts.Batch, len(todo))
		for _, t := range todo[:n] {
			if err := s.moveOne(t, opts.Grace); err != nil {
				errs = append(errs, err)
			}
			moved++
		}
		todo = todo[n:]
		if len(todo) == 0 {
			break
		}
		pause := opts.Interval/2 + rand.N(opts.Interval)
		select {
		case <-ctx.Done():
			return moved, ctx.Err()
		case <-time.After(pause):
		}
		// Re-read the state: a drain may have ended meanwhile.
		s = m.state.Load()
	}
	return moved, errors.Join(errs...)
}

// liveOwner returns the member that should serve an open connection with
// key hash h, and whether that is not this node; owner is -1 when no member
// can.
func (s *State) liveOwner(h uint64) (owner int, moves bool) {
	owner = s.owner(h)
	return owner, owner != s.fleet.self
}

func (s *State) moveOne(t *tracked, grace time.Duration) error {
	owner, moves := s.liveOwner(t.hash)
	if !moves {
		return nil
	}
	var frame []byte
	if owner < 0 {
		frame = websocket.FormatCloseMessage(wire.CloseRetry, wire.EncodeRetry(s.drainRetryAfter))
	} else {
		reason, ok := wire.EncodeMove(s.fleet.targets[owner].String())
		if !ok {
			return errorf("MoveConns: member URL %s is too long for a close reason", s.fleet.targets[owner])
		}
		frame = websocket.FormatCloseMessage(wire.CloseRedirect, reason)
	}
	// A connection that fails the write is already going away: the close
	// below finishes it either way.
	_ = t.conn.WriteControl(websocket.CloseMessage, frame, time.Now().Add(time.Second))
	time.AfterFunc(grace, func() { t.conn.Close() })
	return nil
}
