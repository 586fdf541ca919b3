package wsredirect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/wsredirect/wsredirect/ring"
	"github.com/wsredirect/wsredirect/wire"
)

// liveSet is the registry of open connections behind [Middleware.Track] and
// the state of the mover that moves them.
type liveSet struct {
	mu      sync.Mutex
	conns   map[*tracked]struct{}
	running bool          // a mover goroutine runs while conns is not empty
	kick    chan struct{} // the state changed: look again (capacity 1)
	idle    chan struct{} // closed when conns becomes empty
	moving  sync.WaitGroup
	slots   chan struct{} // bounds the moves writing at once
}

type tracked struct {
	hash uint64
	conn Conn
	told bool // guarded by liveSet.mu: its move has begun, once and for all

	mu      sync.Mutex
	gone    bool          // untracked: nothing more is done to it
	sending chan struct{} // closed when the app's send in progress returns
}

// Defaults and bounds of moves.
const (
	// defaultMoveGrace is Options.MoveGrace's default.
	defaultMoveGrace = 5 * time.Second
	// moveWriteTimeout bounds how long a close frame or a cue may wait for
	// the connection's writer: an app write blocked on a client that
	// stopped reading holds it.
	moveWriteTimeout = time.Second
	// cueWait is how long after a cue the close frame follows, for clients
	// that do not answer cues.
	cueWait = time.Second
	// moveTick is how often the mover looks again while a drain ramps: a
	// connection moves within this long of its key's hand-off.
	moveTick = 100 * time.Millisecond
	// maxMoving bounds the moves that write at once.
	maxMoving = 1024
)

// Track registers an open connection under its shard key (the key the
// Shard rule routed it by) and moves it whenever the fleet's state says
// another member serves that key now: after a membership change from any
// source ([Middleware.SetMembers], [Middleware.UpdateMembers], package etcd
// or dnssrv), a drain ([Middleware.DrainMember]) as its ramp reaches the
// key, an undrain or a member's return that gives the key back. Only the
// connections whose owner changed move, each once: a connection that has
// been told to move is not told again, nor cut while it has
// Options.MoveGrace to end. Call untrack when the connection ends (it is
// safe to call twice); the app's read loop must keep reading until then,
// so it receives what the client sent before it saw the move.
//
// A move sends the client a close frame, 4307 with its new owner and the
// same path and query, or 4503 when no member is left (package wire); with
// a [GorillaConn] that has a send func, it is cued in the stream first.
// Clients using this module's Go client or JavaScript helper reconnect
// there. A client that has not closed within Options.MoveGrace of its close
// frame is closed under the app (it was moved: its frame went out). One
// whose frame or cue could not be written within a second is closed under
// the app at once: [Middleware.Moves] counts it as cut.
func (m *Middleware) Track(key string, c Conn) (untrack func()) {
	t := &tracked{hash: ring.Hash(key), conn: c}
	l := &m.live
	l.mu.Lock()
	if len(l.conns) == 0 {
		l.idle = make(chan struct{})
	}
	l.conns[t] = struct{}{}
	if !l.running {
		l.running = true
		go m.mover()
	}
	// The state may have changed since the upgrade was decided; a change
	// after this look kicks the mover, which will see t.
	s := m.state.Load()
	owner, moves := s.liveOwner(t.hash)
	t.told = moves
	l.mu.Unlock()
	if moves {
		m.startMove(s, t, owner, true)
	}
	var once sync.Once
	return func() { once.Do(func() { m.untrack(t) }) }
}

// untrack forgets t. A send in progress is waited for, at most
// moveWriteTimeout: one blocked longer is blocked on something untrack
// itself may be holding up.
func (m *Middleware) untrack(t *tracked) {
	t.mu.Lock()
	t.gone = true
	sending := t.sending
	t.mu.Unlock()
	if sending != nil {
		timer := time.NewTimer(moveWriteTimeout)
		select {
		case <-sending:
		case <-timer.C:
		}
		timer.Stop()
	}
	l := &m.live
	l.mu.Lock()
	delete(l.conns, t)
	empty := len(l.conns) == 0
	if empty {
		close(l.idle)
	}
	l.mu.Unlock()
	if empty {
		m.kickMover() // so that it ends
	}
}

// Tracked returns the number of connections registered with Track.
func (m *Middleware) Tracked() int {
	m.live.mu.Lock()
	defer m.live.mu.Unlock()
	return len(m.live.conns)
}

// Moves returns how many tracked connections have been moved and cut since
// the Middleware was built, for metrics: moved were sent their close frame
// or cue, cut could not be written to within a second and were closed
// under the app instead (the client reconnects, and is redirected then).
func (m *Middleware) Moves() (moved, cut uint64) {
	return m.moved.Load(), m.cut.Load()
}

// kickMover tells the mover the state changed.
func (m *Middleware) kickMover() {
	select {
	case m.live.kick <- struct{}{}:
	default:
	}
}

// mover moves the tracked connections whose key another member serves now,
// looking again at every state change and, while a drain ramps, every
// moveTick. It ends when no connection is tracked.
func (m *Middleware) mover() {
	l := &m.live
	var tick *time.Ticker
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	for {
		s := m.state.Load()
		if !m.moveMisplaced(s, false) {
			return
		}
		var ticks <-chan time.Time
		if s.fleet.ramping(s.now()) {
			if tick == nil {
				tick = time.NewTicker(moveTick)
			}
			ticks = tick.C
		}
		select {
		case <-l.kick:
		case <-ticks:
		}
	}
}

// moveMisplaced starts the move of every tracked connection not yet told
// whose key another member serves in s, and reports whether any connection
// is tracked. The mover calls it, and is marked stopped when none is;
// Shutdown calls it with forced set when its time is up: no cues then.
func (m *Middleware) moveMisplaced(s *State, forced bool) (tracking bool) {
	l := &m.live
	type move struct {
		t     *tracked
		owner int
	}
	var todo []move
	l.mu.Lock()
	if len(l.conns) == 0 {
		if !forced {
			l.running = false
		}
		l.mu.Unlock()
		return false
	}
	if s.fleet.ring.Len() > 0 {
		for t := range l.conns {
			if t.told {
				continue
			}
			if owner, moves := s.liveOwner(t.hash); moves {
				t.told = true
				todo = append(todo, move{t, owner})
			}
		}
	}
	tracked := len(l.conns)
	l.mu.Unlock()
	if len(todo) > 0 && s.logger != nil {
		s.logger.LogAttrs(context.Background(), slog.LevelInfo, "wsredirect: moving connections",
			slog.Int("moving", len(todo)), slog.Int("tracked", tracked))
	}
	for _, mv := range todo {
		m.startMove(s, mv.t, mv.owner, !forced)
	}
	return true
}

// startMove moves t to member owner (-1: retry later) on a goroutine of
// its own, once a slot is free.
func (m *Middleware) startMove(s *State, t *tracked, owner int, cue bool) {
	l := &m.live
	l.slots <- struct{}{}
	l.moving.Go(func() {
		defer func() { <-l.slots }()
		m.move(s, t, owner, cue)
	})
}

// errUntracked ends a move whose connection ended first.
var errUntracked = errors.New("untracked")

// move sends t its move: a cue and, a moment later, the close frame, when
// its Conn can cue and cue is set; else the close frame alone. It returns
// once they are written; the Grace that follows runs on timers.
func (m *Middleware) move(s *State, t *tracked, owner int, cue bool) {
	code, reason := s.moveClose(owner)
	grace := s.moveGrace
	g, ok := t.conn.(*gorillaConn)
	if cue && ok && g.send != nil {
		g.answer.Store(&closeFrame{code, reason})
		switch err := t.cue(s, g); {
		case errors.Is(err, errUntracked):
			return
		case err != nil:
			m.cutConn(s, t, err)
			return
		}
		m.moved.Add(1)
		time.AfterFunc(cueWait, func() {
			if !g.peerClosed.Load() && !t.isGone() {
				g.Close(code, reason)
			}
			time.AfterFunc(grace, t.closeNow)
		})
		return
	}
	done := make(chan error, 1)
	go func() { done <- t.conn.Close(code, reason) }()
	timer := time.NewTimer(moveWriteTimeout + grace)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil && !t.isGone() {
			m.cutConn(s, t, err)
			return
		}
		m.moved.Add(1)
		time.AfterFunc(grace, t.closeNow)
	case <-timer.C:
		// Close waits for an answer that does not come.
		m.cutConn(s, t, errors.New("close did not return in time"))
		<-done
	}
}

// cutConn closes a connection whose move could not be written.
func (m *Middleware) cutConn(s *State, t *tracked, why error) {
	t.conn.CloseNow()
	m.cut.Add(1)
	if s.logger != nil {
		s.logger.LogAttrs(context.Background(), slog.LevelDebug, "wsredirect: connection cut", slog.String("why", why.Error()))
	}
}

// cue sends the app's connection the cue of its move through the app's
// send, waiting for it at most moveWriteTimeout: a send still blocked then
// (the app's writer held by a client that stopped reading) fails, and the
// caller's closing the connection is what unblocks it. send is never
// called once untrack has returned, and a panic in it is logged and counts
// as a failed write.
func (t *tracked) cue(s *State, g *gorillaConn) error {
	t.mu.Lock()
	if t.gone {
		t.mu.Unlock()
		return errUntracked
	}
	sending := make(chan struct{})
	t.sending = sending
	t.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		defer close(sending)
		defer func() {
			if p := recover(); p != nil {
				level := slog.LevelError
				if t.isGone() {
					// Most likely the app's writer, ended with the
					// connection while the send still ran.
					level = slog.LevelDebug
				}
				if s.logger != nil {
					s.logger.LogAttrs(context.Background(), level, "wsredirect: send panicked",
						slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
				}
				done <- fmt.Errorf("send panicked: %v", p)
			}
		}()
		done <- g.send(wire.Cue)
	}()
	timer := time.NewTimer(moveWriteTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		return errors.New("send did not return in time")
	}
}

// closeNow ends a connection whose grace has passed, unless the app has
// ended it already.
func (t *tracked) closeNow() {
	if !t.isGone() {
		t.conn.CloseNow()
	}
}

func (t *tracked) isGone() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.gone
}

// Shutdown moves every tracked connection off this node and waits for them
// to end, for a graceful stop. If this node is draining (a drain record
// from package etcd, or DrainMember), the drain moves them as its ramp goes;
// otherwise Shutdown drains this node here at once (DrainMember with no
// ramp), which only this node learns of: tell the fleet first when others
// must not send clients back (package etcd's Source.Leave does it all).
// When ctx ends first, the connections not yet told are moved at once and
// every tracked connection left is closed once their frames are written;
// Shutdown then returns ctx.Err().
func (m *Middleware) Shutdown(ctx context.Context) error {
	if on, _ := m.State().Draining(); !on {
		m.drainSelfNow()
	}
	l := &m.live
	for {
		l.mu.Lock()
		if len(l.conns) == 0 {
			l.mu.Unlock()
			l.moving.Wait() // their counts are in
			return nil
		}
		idle := l.idle
		l.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			m.drainSelfNow()
			m.moveMisplaced(m.state.Load(), true)
			l.moving.Wait()
			l.mu.Lock()
			for t := range l.conns {
				t.conn.CloseNow()
			}
			l.mu.Unlock()
			return ctx.Err()
		}
	}
}

// drainSelfNow hands off every key of this node now, when it is a member
// with keys left.
func (m *Middleware) drainSelfNow() {
	s := m.State()
	if f := s.fleet; f.self >= 0 && f.members[f.self].DrainFraction(s.now()) < 1 {
		m.DrainMember(f.members[f.self].ID, s.now(), 0)
	}
}

// ramping reports whether a drain's hand-off is still to come at now: some
// member drains and has keys left to hand off.
func (f *fleet) ramping(now time.Time) bool {
	for _, i := range f.drainers {
		if f.members[i].DrainFraction(now) < 1 {
			return true
		}
	}
	return false
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
