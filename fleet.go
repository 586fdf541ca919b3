package wsredirect

import (
	"errors"
	"slices"
	"strings"
	"time"
)

// fleet is the membership part of a [State]: the ring and what each
// member's drain means for ownership. It is immutable.
type fleet struct {
	ring    *Ring
	members []Member  // ring order, as configured (drain fields included)
	targets []*Target // members' URLs, same order
	self    int       // this node's index, or -1

	drainers []int // indexes of members with a DrainingSince
	// With more than one member draining, a key handed off goes to its owner
	// on a ring without any of them; with one, the ring's runner-up table
	// answers and no second ring is built.
	post    *Ring
	postIdx []int // post ring index → members index
}

// newFleet checks members and builds their fleet. It reuses prev's ring
// when only drain fields changed, so a drain costs no rebuild.
func newFleet(members []Member, self *Target, prev *fleet) (*fleet, error) {
	f := &fleet{}
	if prev != nil && samePlacement(prev.members, members) {
		f.ring, f.targets = prev.ring, prev.targets
	} else {
		ring, err := NewRing(members)
		if err != nil {
			return nil, err
		}
		sorted := ring.Members()
		targets := make([]*Target, len(sorted))
		for i, mem := range sorted {
			t, err := ParseTarget(mem.URL)
			if err != nil {
				return nil, errorf("member %s: %v", mem.ID, unprefixed(err))
			}
			for j := range i {
				if targets[j].Equal(t) {
					return nil, errorf("members %s and %s have the same URL %s", sorted[j].ID, mem.ID, t)
				}
			}
			targets[i] = t
		}
		f.ring, f.targets = ring, targets
	}
	// Keep the configured drain fields in ring order.
	f.members = f.ring.Members()
	for _, m := range members {
		i := memberIndex(f.members, m.ID)
		f.members[i].DrainingSince, f.members[i].DrainRamp = m.DrainingSince, m.DrainRamp
		if m.DrainRamp < 0 {
			return nil, errorf("member %s: negative DrainRamp", m.ID)
		}
	}
	f.self = -1
	for i, t := range f.targets {
		if t.Equal(self) {
			f.self = i
		}
	}
	var live []Member
	for i, m := range f.members {
		if m.DrainingSince.IsZero() {
			live = append(live, m)
			f.postIdx = append(f.postIdx, i)
		} else {
			f.drainers = append(f.drainers, i)
		}
	}
	if len(f.drainers) > 1 {
		if prev != nil && prev.post != nil && slices.Equal(prev.drainers, f.drainers) && samePlacement(prev.members, members) {
			f.post = prev.post
		} else {
			f.post, _ = NewRing(live) // members already checked
		}
	}
	return f, nil
}

// samePlacement reports whether two member lists place keys alike: same
// IDs, weights and URLs, whatever their order and drain fields.
func samePlacement(sorted, members []Member) bool {
	if len(sorted) != len(members) {
		return false
	}
	for _, m := range members {
		i := memberIndex(sorted, m.ID)
		w := max(m.Weight, 1)
		if i < 0 || m.Weight < 0 || sorted[i].URL != m.URL || sorted[i].Weight != w {
			return false
		}
	}
	return true
}

// memberIndex finds id in members sorted by ID (ring order), or returns -1.
func memberIndex(sorted []Member, id string) int {
	i, ok := slices.BinarySearchFunc(sorted, id, func(m Member, id string) int { return strings.Compare(m.ID, id) })
	if !ok {
		return -1
	}
	return i
}

// owner returns the member that serves new connections for the key with
// hash h now, or -1 when every member that could is draining.
func (s *State) owner(h uint64) int {
	f := s.fleet
	o := f.ring.ownerOf(h)
	if o < 0 || !handsOff(&f.members[o], h, s.now) {
		return o
	}
	if len(f.drainers) == 1 {
		return f.ring.ownerWithoutOf(h, o)
	}
	if p := f.post.ownerOf(h); p >= 0 {
		return f.postIdx[p]
	}
	return -1
}

// handsOff reports whether member m, if draining, hands off the key with
// hash h now. During a ramp a key moves once the drained fraction passes the
// key's own point in [0, 1), so the set of moved keys only grows, and every
// node told the same DrainingSince moves the same keys.
func handsOff(m *Member, h uint64, now func() time.Time) bool {
	if m.DrainingSince.IsZero() {
		return false
	}
	f := m.DrainFraction(now())
	return f >= 1 || rampPoint(h) < f
}

// rampPoint maps the hash bits the ring leaves free to [0, 1).
func rampPoint(h uint64) float64 {
	return float64(h&freeHashBits) / float64(freeHashBits+1)
}

// DrainFraction returns the share of the member's keys handed off at now:
// 0 when it is not draining, 1 once its DrainRamp has passed.
func (m Member) DrainFraction(now time.Time) float64 {
	if m.DrainingSince.IsZero() {
		return 0
	}
	if m.DrainRamp <= 0 {
		return 1
	}
	elapsed := now.Sub(m.DrainingSince)
	switch {
	case elapsed <= 0:
		return 0
	case elapsed >= m.DrainRamp:
		return 1
	}
	return float64(elapsed) / float64(m.DrainRamp)
}

// Ring returns the consistent-hash ring over Options.Members; it has no
// members when none are configured.
func (s *State) Ring() *Ring { return s.fleet.ring }

// Members returns the fleet in [Ring.Members] order, drain fields included.
// The slice is a copy.
func (s *State) Members() []Member { return slices.Clone(s.fleet.members) }

// SelfIndex returns this node's index in [State.Members], or -1 when this
// node is not a member.
func (s *State) SelfIndex() int { return s.fleet.self }

// Draining reports whether this node is draining and the fraction of its
// keys handed off now: 1 without a ramp, rising linearly from 0 to 1 over
// its DrainRamp.
func (s *State) Draining() (on bool, fraction float64) {
	if s.fleet.self < 0 {
		return false, 0
	}
	m := &s.fleet.members[s.fleet.self]
	return !m.DrainingSince.IsZero(), m.DrainFraction(s.now())
}

// Owner returns the index in [State.Members] of the member that serves new
// connections for key now, drains applied, or -1 when none can.
func (s *State) Owner(key string) int {
	if s.fleet.ring.Len() == 0 {
		return -1
	}
	return s.owner(hashKey(key))
}

// SetMembers replaces the fleet, drain fields included. The ring is built
// before the swap, so requests see the old members or the new ones, never a
// mix. On error the members in force are kept.
func (m *Middleware) SetMembers(members ...Member) error {
	return m.swapFleet(func([]Member) ([]Member, error) { return members, nil })
}

// Drain marks this node as draining from now on (see [Member.DrainingSince]
// and [Member.DrainRamp]): new upgrades for keys it owns go to the members
// that will own them once it is gone, so a client moves once. Tell every
// other node with [Middleware.DrainMember] and the same time (State's
// member entry has it), or they send clients back here. Connections already
// open are moved with [Middleware.MoveConns]. Drain fails when this node is
// not a member.
func (m *Middleware) Drain(ramp time.Duration) error {
	return m.drainSelf("Drain", true, ramp)
}

// Undrain ends this node's drain: it takes its keys again.
func (m *Middleware) Undrain() error {
	return m.drainSelf("Undrain", false, 0)
}

func (m *Middleware) drainSelf(op string, drain bool, ramp time.Duration) error {
	s := m.state.Load()
	if s.fleet.self < 0 {
		return errorf("%s: this node (Options.Self) is not one of the members", op)
	}
	var since time.Time
	if drain {
		since = s.now()
	}
	return m.DrainMember(s.fleet.members[s.fleet.self].ID, since, ramp)
}

// DrainMember records that member id drains from since over ramp, as a
// control plane tells every node; a zero since ends the drain. It costs no
// ring rebuild unless two or more members drain at once.
//
// Order matters while the news spreads: tell the other nodes before the
// draining one (and the undrained one before the others), or a node that
// knows and one that does not yet send a new client back and forth.
func (m *Middleware) DrainMember(id string, since time.Time, ramp time.Duration) error {
	return m.swapFleet(func(members []Member) ([]Member, error) {
		for i := range members {
			if members[i].ID == id {
				members[i].DrainingSince, members[i].DrainRamp = since, ramp
				return members, nil
			}
		}
		return nil, errorf("DrainMember: no member %q", id)
	})
}

// Draining reports this node's drain now; see [State.Draining].
func (m *Middleware) Draining() (on bool, fraction float64) {
	return m.state.Load().Draining()
}

// swapFleet swaps in the fleet built from edit's result, retrying if
// another update won the race.
func (m *Middleware) swapFleet(edit func(current []Member) ([]Member, error)) error {
	for {
		old := m.state.Load()
		members, err := edit(old.Members())
		if err != nil {
			return err
		}
		f, err := newFleet(members, old.self, old.fleet)
		if err != nil {
			return err
		}
		if f.ring.Len() == 0 && old.needsMembers() {
			return errors.New("wsredirect: SetMembers: no members, and a Shard rule needs them")
		}
		s := *old
		s.fleet = f
		if m.state.CompareAndSwap(old, &s) {
			return nil
		}
	}
}

func (s *State) needsMembers() bool {
	for _, r := range s.rules {
		if r.needsMembers {
			return true
		}
	}
	return false
}
