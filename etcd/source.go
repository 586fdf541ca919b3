package etcd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/internal/memberids"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults of [Options].
const (
	DefaultTTL    = 10 * time.Second
	DefaultSettle = 2 * time.Second
)

// Timings of the background work, variables so that tests can shorten
// them.
var (
	probeEvery   = 5 * time.Second        // how often etcd's health is checked
	probeTimeout = 3 * time.Second        // and how long it may take
	opTimeout    = 5 * time.Second        // bound of one background request
	closeTimeout = 5 * time.Second        // bound of Close's revoke
	backoffMin   = 100 * time.Millisecond // first pause after a failure
	backoffMax   = 2 * time.Second        // longest pause between retries
	warnEvery    = 30 * time.Second       // repeats of a failure's warning
)

// Options configures a [Source]. Only Client is required.
type Options struct {
	// Client talks to etcd. Required. The Source does not close it.
	Client *clientv3.Client

	// Prefix is where the fleet's keys live (see the package doc); a
	// trailing slash is added when missing. Default: [DefaultPrefix].
	Prefix string

	// Self is this node as the fleet sees it: its ID, its URL (which must
	// be the middleware's Options.Self) and weight. Its drain fields must
	// be zero: drains go through [Source.Drain]. Default: nil, a source
	// that only watches, for a front door that is not a member.
	Self *wsredirect.Member

	// TTL is the registration lease's: how long a node that stopped
	// without Close (a crash, a partition) stays listed. Rounded up to
	// whole seconds. Default: [DefaultTTL].
	TTL time.Duration

	// Settle is how far ahead [Source.Drain] puts the drain's since: the
	// time for the record to reach every node through etcd, plus the skew
	// between their clocks. The drainer serves its keys until since; the
	// members taking them over do so as soon as they see the record. So
	// when since comes every node knows, and no client is sent to a node
	// that does not yet know to take it. Default: [DefaultSettle].
	Settle time.Duration

	// Logger receives source errors (Warn) and applied member sets (Info).
	// Default: slog.Default().
	Logger *slog.Logger
}

// Source keeps a middleware's members in step with etcd and, with
// Options.Self, keeps this node registered. Build it with [Start].
type Source struct {
	c        *clientv3.Client
	mw       *wsredirect.Middleware
	log      *slog.Logger
	prefix   string
	self     *wsredirect.Member // nil: watch only
	selfURL  *wsredirect.Target // self.URL, parsed
	selfKey  string             // <prefix>members/<id>
	selfRec  string             // its value
	drainKey string             // <prefix>drains/<id>
	ttl      int64              // seconds
	settle   time.Duration

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// sem serializes what writes this node's records: registrations,
	// Drain, Undrain and Close's revoke. It guards lease and drain.
	sem        chan struct{}
	lease      clientv3.LeaseID
	drain      *drainRecord // this node's drain, written again with the member when re-registering
	registered bool         // the member record was written once

	putRev     atomic.Int64  // revision of the last registration
	badRecords atomic.Uint64 // records skipped, for BadRecords
	kick       chan struct{} // the watcher saw this node's member record gone, or with another URL

	mu      sync.Mutex // guards the fields below and applying
	view    *view
	undrain int64                  // while not 0, this node's drain record is not applied: Undrain's delete is pending (MaxInt64) or not yet seen at that revision
	inForce map[string]drainRecord // the drains applied last, by member ID
	held    map[string]heldDrain   // drains still applied after their record went (see drainsInForce)
	wake    *time.Timer            // applies again when the first hold ends
	lastErr error                  // the watcher's last failure, for Start's error

	closeOnce sync.Once
	closeErr  error
}

var errClosed = errors.New("source closed")

func errorf(format string, args ...any) error {
	return fmt.Errorf("wsredirect/etcd: "+format, args...)
}

// Start registers Self, when given, reads the fleet from etcd and applies
// it to mw, then keeps both up to date in the background until Close. It
// returns once the fleet is read and applied the first time (with Self in
// it), or with an error when ctx ends first or opts are wrong; then
// nothing is left running.
//
// mw is built beforehand, with the members known at the time in
// Options.Members (at least Self, or those [Members] reads): Start
// replaces them with the whole set from etcd.
func Start(ctx context.Context, mw *wsredirect.Middleware, opts Options) (*Source, error) {
	s, err := newSource(mw, opts)
	if err != nil {
		return nil, err
	}
	if s.self != nil {
		s.sem <- struct{}{}
		err := s.ensure(ctx)
		<-s.sem
		if err != nil {
			s.Close()
			return nil, errorf("Start: registering %s with etcd at %s: %w", s.self.ID, strings.Join(s.c.Endpoints(), ","), err)
		}
		s.wg.Add(1)
		go s.keepAlive()
	}
	first := make(chan struct{})
	s.wg.Add(2)
	go s.watch(first)
	go s.probe()
	select {
	case <-first:
		return s, nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	last := s.lastErr
	s.mu.Unlock()
	s.Close()
	at := strings.Join(s.c.Endpoints(), ",")
	if last != nil {
		return nil, errorf("Start: reading the fleet from etcd at %s: %w (last error: %v)", at, ctx.Err(), last)
	}
	return nil, errorf("Start: reading the fleet from etcd at %s: %w", at, ctx.Err())
}

// BadRecords returns how many records the source has skipped since Start
// because they did not read right (each is logged at Warn with its key), so
// that a record etcdctl accepted but the fleet ignores shows up in metrics:
//
//	prometheus.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
//		Name: "wsredirect_etcd_bad_records_total",
//		Help: "etcd records skipped because they do not read right.",
//	}, func() float64 { return float64(src.BadRecords()) }))
//
// A record is counted each time it is read: at start, at each change, and
// when the whole fleet is read again.
func (s *Source) BadRecords() uint64 { return s.badRecords.Load() }

func newSource(mw *wsredirect.Middleware, opts Options) (*Source, error) {
	switch {
	case mw == nil:
		return nil, errorf("Start: nil middleware")
	case opts.Client == nil:
		return nil, errorf("Start: Options.Client is nil")
	case opts.TTL < 0:
		return nil, errorf("Start: Options.TTL is negative")
	case opts.Settle < 0:
		return nil, errorf("Start: Options.Settle is negative")
	}
	s := &Source{
		c:      opts.Client,
		mw:     mw,
		log:    cmp.Or(opts.Logger, slog.Default()),
		prefix: normPrefix(opts.Prefix),
		ttl:    int64(math.Ceil(cmp.Or(opts.TTL, DefaultTTL).Seconds())),
		settle: cmp.Or(opts.Settle, DefaultSettle),
		sem:    make(chan struct{}, 1),
		kick:   make(chan struct{}, 1),
		view:   newView(),
		held:   map[string]heldDrain{},
	}
	if self := opts.Self; self != nil {
		t, err := checkMember(*self)
		if err != nil {
			return nil, errorf("Start: Options.Self: %v", err)
		}
		if !self.DrainingSince.IsZero() || self.DrainRamp != 0 {
			return nil, errorf("Start: Options.Self has drain fields: drain with Source.Drain")
		}
		if mine := mw.State().Self(); !t.Equal(mine) {
			had := "none"
			if mine != nil {
				had = mine.String()
			}
			return nil, errorf("Start: Options.Self.URL %s is not the middleware's Options.Self (%s), so the node would not know itself among the members", t, had)
		}
		s.self = &wsredirect.Member{ID: self.ID, URL: self.URL, Weight: self.Weight}
		s.selfURL = t
		s.selfKey = s.prefix + membersDir + self.ID
		s.selfRec = memberRecord{URL: self.URL, Weight: self.Weight}.marshal()
		s.drainKey = s.prefix + drainsDir + self.ID
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Close stops the source and, with Options.Self, revokes its lease, which
// deletes its member record (and its own drain record) at once: the other
// nodes drop it as soon as they hear. The middleware keeps the last member
// set applied. Close waits for the source's goroutines; the error is the
// revoke's, when etcd could not be reached (the lease then expires after
// its TTL).
func (s *Source) Close() error { return s.shutdown(true) }

// shutdown stops the goroutines and, if revoke, revokes the lease; without
// revoke it is a crash, as far as etcd can tell.
func (s *Source) shutdown(revoke bool) error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		s.mu.Lock()
		s.wakeLocked(time.Time{})
		s.mu.Unlock()
		if s.self == nil {
			return
		}
		s.sem <- struct{}{} // for good: a Drain in flight ends with s.ctx
		if !revoke || s.lease == clientv3.NoLease {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		if _, err := s.c.Revoke(ctx, s.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			s.closeErr = errorf("Close: revoking lease %x of %s (it expires within %ds): %w", int64(s.lease), s.self.ID, s.ttl, err)
		}
	})
	return s.closeErr
}

// bind returns ctx, also ended by Close.
func (s *Source) bind(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

func (s *Source) acquire(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		if s.ctx.Err() != nil {
			return errClosed
		}
		return ctx.Err()
	}
	if s.ctx.Err() != nil {
		<-s.sem
		return errClosed
	}
	return nil
}

func (s *Source) release() { <-s.sem }

// watch keeps the middleware's members in step with etcd: it reads the
// whole fleet, then follows changes from the next revision; when the watch
// ends (compaction, lost leader) it reads the whole fleet again. first is
// closed once the first set is applied.
func (s *Source) watch(first chan<- struct{}) {
	defer s.wg.Done()
	st := s.streak("reading the fleet failed; serving on the last member set", "read the fleet again")
	var bo backoff
	for {
		rev, err := s.load()
		if s.ctx.Err() != nil {
			return
		}
		if err != nil {
			s.mu.Lock()
			s.lastErr = err
			s.mu.Unlock()
			st.failed(err, "members", len(s.mw.State().Members()))
			if !bo.sleep(s.ctx) {
				return
			}
			continue
		}
		st.succeeded("revision", rev)
		if first != nil {
			close(first)
			first = nil
		}
		err = s.follow(rev)
		if s.ctx.Err() != nil {
			return
		}
		s.log.Warn("wsredirect/etcd: watch ended; reading the fleet again", "err", err)
		bo.reset()
		if !bo.sleep(s.ctx) {
			return
		}
	}
}

// load reads the whole fleet and applies it; it returns its revision.
func (s *Source) load() (int64, error) {
	ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
	defer cancel()
	v, err := readView(ctx, s.c, s.prefix, s.bad)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.view = v
	s.applyLocked()
	return v.rev, nil
}

// follow applies changes from revision rev+1 on until the watch ends. It
// applies after each watch response, which holds whole revisions, folding
// in the responses already queued behind it: a burst of changes (a rolling
// restart) costs one ring build, not one per change.
func (s *Source) follow(rev int64) error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.ctx))
	defer cancel()
	wch := s.c.Watch(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for wr := range wch {
		s.mu.Lock()
		n, err := s.absorb(wr)
		for queued := err == nil; queued; {
			select {
			case next, ok := <-wch:
				var m int
				m, err = s.absorb(next)
				n += m
				queued = ok && err == nil
			default:
				queued = false
			}
		}
		if n > 0 {
			s.applyLocked()
		}
		s.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return errors.New("watch closed")
}

// absorb adds a watch response's events to the view, and returns how
// many. The caller holds s.mu.
func (s *Source) absorb(wr clientv3.WatchResponse) (int, error) {
	if wr.CompactRevision != 0 {
		return 0, fmt.Errorf("fell behind a compaction: revision %d is gone, the oldest kept is %d", s.view.rev+1, wr.CompactRevision)
	}
	if err := wr.Err(); err != nil {
		return 0, err
	}
	for _, ev := range wr.Events {
		switch ev.Type {
		case clientv3.EventTypePut:
			s.view.set(s.prefix, string(ev.Kv.Key), ev.Kv.Value, ev.Kv.CreateRevision, s.bad)
		case clientv3.EventTypeDelete:
			s.view.del(s.prefix, string(ev.Kv.Key))
		}
		s.view.rev = max(s.view.rev, ev.Kv.ModRevision)
	}
	return len(wr.Events), nil
}

func (s *Source) bad(key string, err error) {
	s.badRecords.Add(1)
	s.log.Warn("wsredirect/etcd: bad record skipped", "key", key, "err", err)
}

// applyLocked swaps the view's member set into the middleware when it
// differs from the one in force. An empty set is not applied: the last
// one is kept. The caller holds s.mu.
func (s *Source) applyLocked() {
	v := s.view
	members := v.fleet(s.drainsInForce(), func(id, kept string) {
		s.log.Warn("wsredirect/etcd: member skipped: its URL is registered already", "member", id, "kept", kept)
	})
	if s.self != nil && v.rev >= s.putRev.Load() {
		if e, ok := v.members[s.self.ID]; !ok || !e.target.Equal(s.selfURL) {
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
	}
	cur := s.mw.State().Members()
	if len(members) == 0 {
		s.log.Warn("wsredirect/etcd: etcd lists no members; keeping the last member set", "members", len(cur), "revision", v.rev)
		return
	}
	if sameMembers(cur, members) {
		return
	}
	if err := s.mw.SetMembers(members...); err != nil {
		s.log.Warn("wsredirect/etcd: member set refused; keeping the last one", "err", err, "revision", v.rev)
		return
	}
	draining := 0
	for _, m := range members {
		if !m.DrainingSince.IsZero() {
			draining++
		}
	}
	s.log.Info("wsredirect/etcd: members applied", "members", len(members), "draining", draining,
		"joined", memberids.Missing(members, cur), "left", memberids.Missing(cur, members), "revision", v.rev)
}

// probe checks etcd's health regularly, so that an outage is reported even
// when nothing else asks (a watch waits silently for etcd to return).
func (s *Source) probe() {
	defer s.wg.Done()
	st := s.streak("etcd unreachable; serving on the last member set", "etcd reachable again")
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, probeTimeout)
		_, err := s.c.Get(ctx, s.prefix+membersDir, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		switch {
		case s.ctx.Err() != nil:
			return
		case err != nil:
			st.failed(err, "members", len(s.mw.State().Members()))
		default:
			st.succeeded()
		}
	}
}

// streak reports a run of failures of one task: the first at Warn, then
// one every warnEvery, and the recovery at Info.
type streak struct {
	log        *slog.Logger
	fail, ok   string
	n          int
	lastWarned time.Time
}

func (s *Source) streak(fail, ok string) *streak {
	return &streak{log: s.log, fail: "wsredirect/etcd: " + fail, ok: "wsredirect/etcd: " + ok}
}

func (st *streak) failed(err error, args ...any) {
	st.n++
	if st.n == 1 || time.Since(st.lastWarned) >= warnEvery {
		st.lastWarned = time.Now()
		st.log.Warn(st.fail, append([]any{"err", err, "failures", st.n}, args...)...)
	}
}

// reset ends a run of failures silently, and returns its length.
func (st *streak) reset() int {
	n := st.n
	st.n = 0
	return n
}

func (st *streak) succeeded(args ...any) {
	if st.n > 0 {
		st.log.Info(st.ok, append([]any{"failures", st.n}, args...)...)
		st.n = 0
	}
}

// backoff spaces retries: from backoffMin, doubling up to max (backoffMax
// when zero), each pause jittered by up to a half.
type backoff struct {
	max, next time.Duration
}

func (b *backoff) reset() { b.next = 0 }

// sleep pauses, and reports false when ctx ended first.
func (b *backoff) sleep(ctx context.Context) bool {
	b.next = min(max(2*b.next, backoffMin), cmp.Or(b.max, backoffMax))
	d := b.next/2 + rand.N(b.next/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
