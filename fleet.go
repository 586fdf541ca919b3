package wsredirect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/wsredirect/wsredirect/ring"
	"github.com/wsredirect/wsredirect/wire"
)

// Member is one node of a fleet, as every node of it is told.
type Member struct {
	// ID is the member's stable identity, which places it (package ring):
	// required, unique, printable UTF-8 of at most 256 bytes. Keep it across restarts and address changes, or
	// its keys move.
	ID string
	// URL is the base URL clients are sent to, in the form [ParseTarget]
	// takes; the member whose URL equals Options.Self is this node.
	URL string
	// Weight is the member's relative capacity: 0 means 1; negative is an
	// error.
	Weight int

	// DrainingSince, when not zero, is when the member's drain takes
	// effect: from then on its keys go to the members that will own them
	// once it is gone, so a client moves once. Those members take the keys
	// from the moment they learn of the drain; the drainer and the others
	// hand each key off when the ramp, on their own clocks, reaches it. Set
	// it a moment ahead of the announcement (a second or two: longer than
	// the news takes to reach every node plus the clocks' skew), so that no
	// node hands a key off before its successor knows to take it.
	DrainingSince time.Time
	// DrainRamp spreads a drain: the share of the member's keys handed off
	// rises linearly from 0 at DrainingSince to 1 after DrainRamp, each key
	// moving once. Zero hands off every key at once; at most
	// a day, as a DrainingSince is at most a day ahead of
	// the node's clock when it is set: while a drain runs, its member's
	// keys are split between two nodes.
	DrainRamp time.Duration
}

// maxDrainRamp bounds a drain's ramp and how far ahead its start may be
// set: a drain record from year 9999, or of 292 years, is refused rather
// than splitting a member's keys for as long.
const maxDrainRamp = 24 * time.Hour

// DrainFraction returns the share of the member's keys handed off at now:
// 0 when it is not draining, 1 once its DrainRamp has passed.
func (m Member) DrainFraction(now time.Time) float64 {
	if m.DrainingSince.IsZero() || now.Before(m.DrainingSince) {
		return 0
	}
	elapsed := now.Sub(m.DrainingSince)
	if elapsed >= m.DrainRamp {
		return 1
	}
	return float64(elapsed) / float64(m.DrainRamp)
}

// fleet is the membership part of a [State]: the ring and what each
// member's drain means for ownership. It is immutable.
type fleet struct {
	ring    *ring.Ring
	members []Member  // ring order, drain fields included
	targets []*Target // members' URLs, same order
	self    int       // this node's index, or -1

	drainers []int // indexes of members with a DrainingSince
	// With more than one member draining, a key handed off goes to its owner
	// on a ring without any of them; with one, the ring's runner-up table
	// answers and no second ring is built.
	post    *ring.Ring
	postIdx []int // post ring index → members index
}

// newFleet checks members and builds their fleet. It reuses prev's rings
// when only drain fields changed, so a drain costs no rebuild.
func newFleet(members []Member, self *Target, prev *fleet) (*fleet, error) {
	sorted := slices.Clone(members)
	slices.SortFunc(sorted, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	targets := make([]*Target, len(sorted))
	byURL := make(map[string]string, len(sorted)) // target → member ID
	for i := range sorted {
		m := &sorted[i]
		if m.ID == "" {
			return nil, fmt.Errorf("member %d (URL %q) has no ID", slices.Index(members, *m), m.URL)
		}
		if i > 0 && sorted[i-1].ID == m.ID {
			return nil, fmt.Errorf("member ID %q is given twice", m.ID)
		}
		if err := m.checkFields(); err != nil {
			return nil, err
		}
		m.Weight = max(m.Weight, 1)
		t, err := prev.target(m)
		if err != nil {
			return nil, fmt.Errorf("member %s: %v", m.ID, err)
		}
		if other, ok := byURL[t.String()]; ok {
			return nil, fmt.Errorf("members %s and %s have the same URL %s", other, m.ID, t)
		}
		byURL[t.String()] = m.ID
		targets[i] = t
	}
	f := &fleet{members: sorted, targets: targets, self: -1}
	if prev != nil && samePlacement(prev.members, sorted) {
		f.ring = prev.ring
	} else {
		nodes := make([]ring.Node, len(sorted))
		for i, m := range sorted {
			nodes[i] = ring.Node{ID: m.ID, Weight: m.Weight}
		}
		var err error
		if prev != nil {
			// A join, leave or weight change costs a few milliseconds
			// this way, not a full build.
			f.ring, err = prev.ring.Update(nodes)
		} else {
			f.ring, err = ring.New(nodes)
		}
		if err != nil {
			return nil, err
		}
	}
	var live []ring.Node
	for i, m := range sorted {
		if t := targets[i]; t.Equal(self) {
			f.self = i
		}
		if m.DrainingSince.IsZero() {
			live = append(live, ring.Node{ID: m.ID, Weight: m.Weight})
			f.postIdx = append(f.postIdx, i)
		} else {
			f.drainers = append(f.drainers, i)
		}
	}
	if len(f.drainers) > 1 {
		switch {
		case prev != nil && prev.post != nil && f.ring == prev.ring && slices.Equal(prev.drainers, f.drainers):
			f.post = prev.post
		case prev != nil && prev.post != nil && f.ring == prev.ring:
			// Only drains changed: one more or one fewer drainer is
			// one leave or join away from the last post-drain ring.
			f.post, _ = prev.post.Update(live) // members already checked
		default:
			// The ring less its drainers: as many leaves.
			f.post, _ = f.ring.Update(live)
		}
	}
	return f, nil
}

// Check reports what New and SetMembers would refuse in m alone, given the
// node's clock now: an ID that is empty or not printable UTF-8 of at most
// 256 bytes, a URL ParseTarget refuses or too long for a close frame, a
// negative weight, a drain ramp that is negative or over a day, a drain
// starting more than a day after now. A membership source checks each
// record with it, so a bad one is skipped rather than the whole set
// refused. The error names the member and starts with "wsredirect:".
func (m Member) Check(now time.Time) error {
	err := m.checkFields()
	if err == nil && m.ID == "" {
		err = fmt.Errorf("member with URL %q has no ID", m.URL)
	}
	if err == nil {
		err = checkDrainStarts([]Member{m}, now)
	}
	if err == nil {
		_, err = (*fleet)(nil).target(&m)
		if err != nil {
			err = fmt.Errorf("member %s: %v", m.ID, err)
		}
	}
	if err != nil {
		return errorf("%v", err)
	}
	return nil
}

// checkFields checks what of a member needs no clock and no parse.
func (m *Member) checkFields() error {
	switch {
	case m.ID != "" && !printable(m.ID, maxMemberID):
		return fmt.Errorf("member ID %q (URL %q): want printable UTF-8 of at most %d bytes (it becomes a metric label)", truncate(m.ID, 80), m.URL, maxMemberID)
	case m.Weight < 0:
		return fmt.Errorf("member %s: negative Weight %d", m.ID, m.Weight)
	case m.DrainRamp < 0:
		return fmt.Errorf("member %s: negative DrainRamp", m.ID)
	case m.DrainRamp > maxDrainRamp:
		return fmt.Errorf("member %s: DrainRamp %v is longer than the %v a drain may take", m.ID, m.DrainRamp, maxDrainRamp)
	}
	return nil
}

// checkDrainStarts refuses a drain set to start more than maxDrainRamp
// after now.
func checkDrainStarts(members []Member, now time.Time) error {
	for _, m := range members {
		if m.DrainingSince.After(now.Add(maxDrainRamp)) {
			return fmt.Errorf("member %s: DrainingSince %s is more than %v ahead", m.ID, m.DrainingSince.Format(time.RFC3339), maxDrainRamp)
		}
	}
	return nil
}

// target returns member m's parsed and checked URL, reusing f's when f
// has m with the same URL, so a drain or a small change does not parse
// every member's URL again. f may be nil.
func (f *fleet) target(m *Member) (*Target, error) {
	if f != nil {
		if i := memberIndex(f.members, m.ID); i >= 0 && f.members[i].URL == m.URL {
			return f.targets[i], nil
		}
	}
	t, err := parseTarget(m.URL)
	if err != nil {
		return nil, err
	}
	if _, ok := wire.EncodeMove(t.String()); !ok {
		return nil, fmt.Errorf("URL %s is too long to carry in a close frame (at most %d bytes)", t, wire.MaxReason-len("wsr1 ="))
	}
	return t, nil
}

// checkSelf refuses a Self that is not any member's URL but names the
// same loopback socket as one (ws://localhost:9001 for ws://127.0.0.1:9001):
// such a node does not know itself and redirects its own keys to itself. A
// Self that is simply not a member may be a node that has not joined yet,
// or a front door; a node that redirects to itself is warned about when it
// does (State.warnLoop).
func (f *fleet) checkSelf(self *Target) error {
	if self == nil || f.self >= 0 {
		return nil
	}
	for i, t := range f.targets {
		if t.port == self.port && t.prefixed == self.prefixed && t.loopback && self.loopback {
			return errorf("Options.Self %s and member %s's URL %s name the same place: spell Self as the member does, "+
				"or the node redirects its own keys to itself", self, f.members[i].ID, t)
		}
	}
	return nil
}

// memberIndex finds id in members sorted by ID, or returns -1.
func memberIndex(sorted []Member, id string) int {
	i, ok := slices.BinarySearchFunc(sorted, id, func(m Member, id string) int { return strings.Compare(m.ID, id) })
	if !ok {
		return -1
	}
	return i
}

// samePlacement reports whether two checked member lists in ID order place
// keys alike: same IDs and weights, whatever their URLs and drain fields.
func samePlacement(a, b []Member) bool {
	return slices.EqualFunc(a, b, func(x, y Member) bool { return x.ID == y.ID && x.Weight == y.Weight })
}

// owner returns the index of the member that serves new connections for
// the key with hash h now, or -1 when every member that could is draining.
//
// While the key's ring owner drains, the answer depends on where it is
// asked. The member that will own the key once the drainer is gone takes it
// at once, whatever its clock says: the key is coming to it anyway, and
// sending it back could bounce a client the drainer already handed off by
// its own clock. Every other node, the drainer included, hands the key off
// when the ramp, read on its own clock, reaches it. So a client goes at most
// one hop to the drainer and one more to the successor, whatever the skew
// between their clocks.
func (s *State) owner(h uint64) int {
	f := s.fleet
	o := f.ring.Owner(h)
	if o < 0 || f.members[o].DrainingSince.IsZero() {
		return o
	}
	next := f.successor(h, o)
	if next >= 0 && next == f.self || handsOff(&f.members[o], h, s.now) {
		return next
	}
	return o
}

// successor returns the member that owns the key with hash h once every
// draining member is gone, given that its ring owner o drains, or -1 when
// every member drains.
func (f *fleet) successor(h uint64, o int) int {
	if len(f.drainers) == 1 {
		return f.ring.OwnerWithout(h, o)
	}
	if p := f.post.Owner(h); p >= 0 {
		return f.postIdx[p]
	}
	return -1
}

// handsOff reports whether draining member m hands off the key with hash h
// now. During a ramp a key moves once the drained fraction passes the key's
// own point in [0, 1), so the set of moved keys only grows, and every node
// told the same DrainingSince moves the same keys.
func handsOff(m *Member, h uint64, now func() time.Time) bool {
	f := m.DrainFraction(now())
	return f >= 1 || rampPoint(h) < f
}

// rampPoint maps the low 32 bits of a key's hash, which placement never
// reads (see ring.Ring.Owner), to [0, 1): which keys a ramp moves first is
// then independent of which member owns them.
func rampPoint(h uint64) float64 {
	const low32 = 1<<32 - 1
	return float64(h&low32) / (low32 + 1)
}

// Members returns the fleet sorted by ID, with zero weights replaced by 1
// and drain fields included. The slice is a copy.
func (s *State) Members() []Member { return slices.Clone(s.fleet.members) }

// Owner returns the member this node sends new connections for key to now,
// itself included, drains applied (see [Member.DrainingSince] for what each
// node takes during a drain); ok is false when there are no members or
// every member that could take the key is draining.
func (s *State) Owner(key string) (m Member, ok bool) {
	if o := s.owner(ring.Hash(key)); o >= 0 {
		return s.fleet.members[o], true
	}
	return Member{}, false
}

// Draining reports whether this node (Options.Self) is a draining member
// and the fraction of its keys handed off now: 1 without a ramp, rising
// linearly from 0 to 1 over its DrainRamp.
func (s *State) Draining() (on bool, fraction float64) {
	if s.fleet.self < 0 {
		return false, 0
	}
	m := &s.fleet.members[s.fleet.self]
	return !m.DrainingSince.IsZero(), m.DrainFraction(s.now())
}

// SetMembers replaces the fleet, drain fields included, checked as
// Options.Members is. Rings are built before the swap, so requests see the
// old members or the new ones, never a mix. On error the members in force
// are kept.
func (m *Middleware) SetMembers(members ...Member) error {
	return m.setFleet("SetMembers", func([]Member) ([]Member, error) { return members, nil })
}

// DrainMember records that member id drains from since over ramp (see
// [Member.DrainingSince] and [Member.DrainRamp]); a zero since ends the
// drain. New upgrades for the keys it hands off go to the members that will
// own them once it is gone; tracked connections ([Middleware.Track]) move
// as the ramp reaches their keys. It costs no ring rebuild unless two or more
// members drain at once.
//
// Every node of the fleet must be told, with the same since: a control
// plane does that. Give a since a moment in the future (see
// [Member.DrainingSince]) and the order in which nodes hear of it does not
// matter, nor do their clocks' skews up to that moment. An undrain has no
// such margin: tell the undrained node first, then the others.
func (m *Middleware) DrainMember(id string, since time.Time, ramp time.Duration) error {
	return m.setFleet("DrainMember", func(members []Member) ([]Member, error) {
		for i := range members {
			if members[i].ID == id {
				members[i].DrainingSince, members[i].DrainRamp = since, ramp
				return members, nil
			}
		}
		return nil, fmt.Errorf("no member %q", id)
	})
}

// UpdateMembers replaces the fleet with edit's result, given the members
// in force, checked as SetMembers checks; an error from edit is returned
// and changes nothing. It is SetMembers for a membership source that
// keeps what others set, such as drains from DrainMember: edit runs while
// no other change of the middleware's members, drains or rules can land,
// so none is overwritten. It is called once; it must not call the
// Middleware's other methods that change it (SetMembers, DrainMember,
// SetRules, UpdateMembers), which would wait for it forever. current is
// edit's own copy.
func (m *Middleware) UpdateMembers(edit func(current []Member) ([]Member, error)) error {
	return m.setFleet("UpdateMembers", edit)
}

// setFleet swaps in the fleet built from edit's result.
func (m *Middleware) setFleet(op string, edit func(current []Member) ([]Member, error)) error {
	var old, now *fleet
	err := m.update(func(s *State) error {
		members, err := edit(s.Members())
		old = s.fleet
		if err == nil {
			err = checkDrainStarts(members, s.now())
		}
		if err == nil {
			s.fleet, err = newFleet(members, s.self, s.fleet)
		}
		if err == nil && s.fleet.ring.Len() == 0 && s.needsMembers() {
			err = errors.New("no members, and a Shard rule needs them")
		}
		if err != nil {
			return errorf("%s: %v", op, err)
		}
		now = s.fleet
		return nil
	})
	if err == nil {
		m.State().logChange(old, now)
	}
	return err
}

// logChange tells the logger what a fleet swap changed: the member count
// when the set changed, and each drain that started or ended.
func (s *State) logChange(old, now *fleet) {
	if s.logger == nil {
		return
	}
	ctx := context.Background()
	if !samePlacement(old.members, now.members) || !slices.EqualFunc(old.members, now.members, func(a, b Member) bool { return a.URL == b.URL }) {
		s.logger.LogAttrs(ctx, slog.LevelInfo, "wsredirect: members changed",
			slog.Int("members", len(now.members)), slog.Int("before", len(old.members)), slog.Int("draining", len(now.drainers)))
	}
	was := map[string]Member{}
	for _, i := range old.drainers {
		was[old.members[i].ID] = old.members[i]
	}
	for _, i := range now.drainers {
		m := now.members[i]
		if w, ok := was[m.ID]; !ok || !w.DrainingSince.Equal(m.DrainingSince) || w.DrainRamp != m.DrainRamp {
			s.logger.LogAttrs(ctx, slog.LevelInfo, "wsredirect: member drains",
				slog.String("member", m.ID), slog.Time("since", m.DrainingSince), slog.Duration("ramp", m.DrainRamp), slog.Int("draining", len(now.drainers)))
		}
		delete(was, m.ID)
	}
	for id := range was {
		if memberIndex(now.members, id) >= 0 {
			s.logger.LogAttrs(ctx, slog.LevelInfo, "wsredirect: member undrained", slog.String("member", id), slog.Int("draining", len(now.drainers)))
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
