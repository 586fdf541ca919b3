package etcd

import (
	"maps"
	"time"
)

// An undrain has no margin to hide in, as a drain has in its since: the
// member whose drain ends must know before anyone sends it a client back,
// or it sends the client on again (a redirect loop, as the client sees
// it). So when a drain record goes (an operator's etcdctl del), the member
// it named applies the undrain at once and every other node Settle later.
// A record deleted by the member's own Source.Undrain is applied there even
// before the delete.

// heldDrain is a drain whose record went, still applied until until.
type heldDrain struct {
	rec   drainRecord
	until time.Time
}

// drainsInForce returns the drains to apply now: the view's, without this
// node's own while its Undrain is pending, and, for Settle after their
// record went, the drains of other members. The caller holds s.mu.
func (s *Source) drainsInForce() map[string]drainRecord {
	v := s.view
	if s.undrain != 0 && v.rev >= s.undrain {
		s.undrain = 0
	}
	self := ""
	if s.self != nil {
		self = s.self.ID
	}
	out := maps.Clone(v.drains)
	if s.undrain != 0 {
		delete(out, self)
	}
	now := time.Now()
	for id, rec := range s.inForce {
		if _, ok := out[id]; ok || id == self {
			continue
		}
		if h, ok := s.held[id]; !ok || !sameDrain(h.rec, rec) {
			s.held[id] = heldDrain{rec: rec, until: now.Add(s.settle)}
			if _, ok := v.members[id]; ok {
				s.log.Info("wsredirect/etcd: drain record gone; undraining the member here after Settle, once it knows", "member", id, "settle", s.settle)
			}
		}
	}
	var next time.Time
	for id, h := range s.held {
		if _, ok := v.drains[id]; ok || !now.Before(h.until) {
			delete(s.held, id)
			continue
		}
		out[id] = h.rec
		if next.IsZero() || h.until.Before(next) {
			next = h.until
		}
	}
	s.inForce = out
	s.wakeLocked(next)
	return out
}

func sameDrain(a, b drainRecord) bool { return a.Since.Equal(b.Since) && a.Ramp == b.Ramp }

// wakeLocked makes the source apply its view again at at, or never when at
// is zero. The caller holds s.mu.
func (s *Source) wakeLocked(at time.Time) {
	if s.wake != nil {
		s.wake.Stop()
		s.wake = nil
	}
	if at.IsZero() {
		return
	}
	s.wake = time.AfterFunc(time.Until(at), func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.ctx.Err() == nil {
			s.applyLocked()
		}
	})
}
