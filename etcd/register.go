package etcd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file is the node's side: its registration under a lease, and its
// drain. source.go watches the fleet.

// Drain drains this node through etcd: it writes its drain record, with
// since Options.Settle from now and ramp, which every node of the fleet
// applies (see [wsredirect.Member.DrainingSince]), this one at once. The
// middleware moves each tracked connection as the ramp reaches its key
// ([wsredirect.Middleware.Track]). The record is attached to the node's
// lease, so it goes when the node goes: a node that restarts comes back
// undrained. When a drain record is there already (an earlier Drain, or an
// operator's), Drain leaves it as it is, since and ramp included: every
// node must keep the values they applied. To stop the node, call
// [Source.Leave], which drains too.
func (s *Source) Drain(ctx context.Context, ramp time.Duration) error {
	return s.drainAs(ctx, "Drain", ramp)
}

// drainAs is Drain, its errors named after op.
func (s *Source) drainAs(ctx context.Context, op string, ramp time.Duration) error {
	if s.self == nil {
		return errorf("%s: no Options.Self: drain a member by writing its record (see the package doc)", op)
	}
	if ramp < 0 {
		return errorf("%s: negative ramp %v", op, ramp)
	}
	ctx, cancel := s.bind(ctx)
	defer cancel()
	if err := s.acquire(ctx); err != nil {
		return errorf("%s: %w", op, err)
	}
	defer s.release()
	rec := drainRecord{Since: time.Now().Add(s.settle).UTC().Truncate(time.Millisecond), Ramp: ramp}
	resp, err := s.c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.drainKey), "=", 0)).
		Then(clientv3.OpPut(s.drainKey, rec.marshal(), clientv3.WithLease(s.lease))).
		Else(clientv3.OpGet(s.drainKey)).
		Commit()
	if err != nil {
		return errorf("%s: writing %s: %w", op, s.drainKey, err)
	}
	if resp.Succeeded {
		s.drain = &rec
		s.log.Info("wsredirect/etcd: draining", "member", s.self.ID, "since", rec.Since, "ramp", rec.Ramp, "revision", resp.Header.Revision)
	} else {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) != 1 {
			return nil
		}
		if rec, err = parseDrain(kvs[0].Value); err != nil {
			return nil // the watcher reports it, and skips it as every node does
		}
	}
	// Applied here now rather than when the watch brings it back, so that
	// the caller sees this node draining on return; the watch, once it has
	// caught up with this revision, holds the same.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.undrain == 0 && s.view.rev < resp.Header.Revision {
		s.view.drains[s.self.ID] = rec
		s.applyLocked()
	}
	return nil
}

// Undrain ends this node's drain, whoever wrote it, by deleting its drain
// record. This node applies the undrain first, before the others hear of
// it through etcd, as an undrain wants (see
// [wsredirect.Middleware.DrainMember]).
func (s *Source) Undrain(ctx context.Context) error {
	if s.self == nil {
		return errorf("Undrain: no Options.Self: undrain a member by deleting its record (see the package doc)")
	}
	ctx, cancel := s.bind(ctx)
	defer cancel()
	if err := s.acquire(ctx); err != nil {
		return errorf("Undrain: %w", err)
	}
	defer s.release()
	prev := s.drain
	s.drain = nil
	s.mu.Lock()
	s.undrain = math.MaxInt64
	s.applyLocked()
	s.mu.Unlock()
	resp, err := s.c.Delete(ctx, s.drainKey)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.drain = prev
		s.undrain = 0
		s.applyLocked()
		return errorf("Undrain: deleting %s: %w", s.drainKey, err)
	}
	s.undrain = resp.Header.Revision
	s.applyLocked()
	return nil
}

// Leave is the graceful stop, the call for SIGTERM: it drains this node
// through etcd over ramp, as [Source.Drain] does (from Options.Settle on,
// so that every node knows before a key moves), waits for the ramp to hand
// every key off while the middleware moves each tracked connection as the
// ramp reaches its key, then waits with [wsredirect.Middleware.Shutdown]
// for every tracked connection to end, and closes the source ([Source.Close]),
// which takes the node out of the fleet.
//
//	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
//	defer stop()
//	… serve until ctx ends …
//	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
//	defer cancel()
//	err := src.Leave(ctx, 10*time.Second) // then the HTTP server's Shutdown
//
// Give ctx room for Settle, ramp and the middleware's MoveGrace. When ctx
// ends first, the connections not yet moved are moved at once and every
// tracked connection left is closed; Leave still closes the source and
// returns an error that wraps ctx's. When etcd cannot be reached, this node
// drains alone and at once, and the error says so: until its lease expires
// the others, who do not know, may still send it clients it sends back. A drain record there already (an operator's) is kept,
// since and ramp included: Leave waits for its ramp.
func (s *Source) Leave(ctx context.Context, ramp time.Duration) error {
	if s.self == nil {
		return errorf("Leave: no Options.Self: a source that only watches has nothing to leave; call Close")
	}
	var errs []error
	if err := s.drainAs(ctx, "Leave", ramp); err != nil {
		errs = append(errs, err)
	} else {
		s.awaitHandOff(ctx)
	}
	if err := s.mw.Shutdown(ctx); err != nil {
		errs = append(errs, errorf("Leave: the connections still open when ctx ended were moved at once and closed: %w", err))
	}
	if err := s.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// handOffPoll is how often awaitHandOff looks at the middleware's state.
const handOffPoll = 20 * time.Millisecond

// awaitHandOff waits until this node's drain, as its middleware applies
// it, has handed off every key, or ctx ends. A drain not seen within
// Settle (an operator undrained meanwhile) ends the wait too.
func (s *Source) awaitHandOff(ctx context.Context) {
	unseen := time.Now().Add(s.settle)
	t := time.NewTicker(handOffPoll)
	defer t.Stop()
	for {
		on, handedOff := s.mw.State().Draining()
		if handedOff >= 1 || (!on && time.Now().After(unseen)) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ensure makes this node registered: it renews its lease, or grants a new
// one when the lease is gone, and writes its member record, with its own
// drain record when it drains and no drain record is there. Both go in one
// transaction, so a node that comes back mid-drain is never seen
// undrained. The member record is written only over nothing, over this
// node's own, or over one with this node's URL (this node restarted on its
// address while its old lease lives): an ID another live node holds is
// refused with an *idTakenError, and the record there is left alone. The
// caller holds s.sem.
func (s *Source) ensure(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if s.lease != clientv3.NoLease {
		_, err := s.c.KeepAliveOnce(ctx, s.lease)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			s.lease = clientv3.NoLease
		} else if err != nil {
			return fmt.Errorf("renewing lease %x: %w", int64(s.lease), err)
		}
	}
	if s.lease == clientv3.NoLease {
		g, err := s.c.Grant(ctx, s.ttl)
		if err != nil {
			return fmt.Errorf("granting a lease: %w", err)
		}
		s.lease = g.ID
	}
	for {
		got, err := s.c.Get(ctx, s.selfKey)
		if err != nil {
			return fmt.Errorf("reading %s: %w", s.selfKey, err)
		}
		// Written only if the record is still what was read, so that the
		// check below holds when it lands.
		unchanged := clientv3.Compare(clientv3.CreateRevision(s.selfKey), "=", 0)
		if len(got.Kvs) > 0 {
			if err := s.claim(got.Kvs[0]); err != nil {
				return err
			}
			unchanged = clientv3.Compare(clientv3.ModRevision(s.selfKey), "=", got.Kvs[0].ModRevision)
		}
		ops := []clientv3.Op{clientv3.OpPut(s.selfKey, s.selfRec, clientv3.WithLease(s.lease))}
		if s.drain != nil {
			ops = append(ops, clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.drainKey), "=", 0)},
				[]clientv3.Op{clientv3.OpPut(s.drainKey, s.drain.marshal(), clientv3.WithLease(s.lease))},
				nil))
		}
		resp, err := s.c.Txn(ctx).If(unchanged).Then(ops...).Commit()
		if err != nil {
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				s.lease = clientv3.NoLease
			}
			return fmt.Errorf("writing %s: %w", s.selfKey, err)
		}
		if !resp.Succeeded {
			continue // written meanwhile: look again
		}
		s.registered = true
		s.putRev.Store(resp.Header.Revision)
		select { // a kick from before is answered
		case <-s.kick:
		default:
		}
		return nil
	}
}

// claim returns nil when this node may write its member record over kv,
// the record there now: kv is on this node's lease, or names this node's
// URL, or — once this node has registered — is on no lease: written by
// hand over this node's own (etcdctl put), which is restored, with a
// warning, rather than let the fleet route this node's keys elsewhere.
// Otherwise another node holds the ID, and claim says which.
func (s *Source) claim(kv *mvccpb.KeyValue) error {
	if kv.Lease == int64(s.lease) {
		return nil
	}
	_, t, err := parseMember(s.self.ID, kv.Value)
	if err == nil && t.Equal(s.selfURL) {
		return nil
	}
	if kv.Lease == 0 && s.registered {
		s.log.Warn("wsredirect/etcd: this node's member record was written over by hand (on no lease); restoring it",
			"member", s.self.ID, "key", s.selfKey, "found", string(kv.Value))
		return nil
	}
	e := &idTakenError{id: s.self.ID, key: s.selfKey, lease: kv.Lease}
	if err != nil {
		e.holds = fmt.Sprintf("a record that does not read (%v)", err)
	} else {
		e.holds = t.String()
	}
	return e
}

// idTakenError is a registration refused: another node holds the ID.
type idTakenError struct {
	id, key, holds string
	lease          int64
}

func (e *idTakenError) Error() string {
	if e.lease == 0 {
		return fmt.Sprintf("member ID %q is taken: %s holds %s on no lease, a record written by hand that no node removes; delete it (etcdctl del %s) or give this node another ID",
			e.id, e.key, e.holds, e.key)
	}
	return fmt.Sprintf("member ID %q is taken: %s holds %s, on lease %x of another live node; give this node an ID of its own, or stop that node first (its record goes when it leaves, or its lease's TTL after it stopped without leaving)",
		e.id, e.key, e.holds, e.lease)
}

// keepAlive keeps the lease alive and registers again whenever the
// registration is lost: the lease expired (etcd unreachable for a TTL, a
// long pause) or was revoked, or the member record was deleted or written
// by another node. While another node holds the ID, it logs that and tries
// again, never writing over it.
func (s *Source) keepAlive() {
	defer s.wg.Done()
	st := s.streak("registering failed; retrying", "")
	bo := backoff{max: min(backoffMax, time.Duration(s.ttl)*time.Second/3)}
	for lost := false; ; {
		if lost {
			s.sem <- struct{}{}
			err := s.ensure(s.ctx)
			<-s.sem
			if s.ctx.Err() != nil {
				return
			}
			if err != nil {
				st.failed(err, "member", s.self.ID)
				if !bo.sleep(s.ctx) {
					return
				}
				continue
			}
			s.log.Info("wsredirect/etcd: registered again", "member", s.self.ID, "lease", fmt.Sprintf("%x", int64(s.lease)), "failures", st.reset())
			bo.reset()
			lost = false
		}
		kctx, kcancel := context.WithCancel(s.ctx)
		ch, err := s.c.KeepAlive(kctx, s.lease)
		why := ""
		if err != nil {
			why = err.Error()
		} else {
			why = s.hold(ch)
		}
		kcancel()
		if s.ctx.Err() != nil {
			return
		}
		s.log.Warn("wsredirect/etcd: registration lost; registering again", "member", s.self.ID, "lease", fmt.Sprintf("%x", int64(s.lease)), "why", why)
		lost = true
	}
}

// hold consumes keep-alive responses until the registration needs
// attention, and says why.
func (s *Source) hold(ch <-chan *clientv3.LeaseKeepAliveResponse) string {
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return "keep-alive ended: the lease expired or was revoked, or etcd was out of reach for a TTL"
			}
		case <-s.kick:
			return "member record deleted, or written with another URL"
		case <-s.ctx.Done():
			return ""
		}
	}
}
