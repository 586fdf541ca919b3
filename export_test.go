package wsredirect

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect/ring"
)

// Test hooks into what users do not call.

// setClock makes m measure drain ramps with now instead of time.Now.
func (m *Middleware) setClock(now func() time.Time) {
	m.update(func(s *State) error { s.now = now; return nil })
}

// drainSelf drains this node from its clock's now over ramp, as a control
// plane would tell every node with DrainMember.
func (m *Middleware) drainSelf(t *testing.T, ramp time.Duration) {
	t.Helper()
	s := m.State()
	require.GreaterOrEqual(t, s.fleet.self, 0, "this node is not a member")
	require.NoError(t, m.DrainMember(s.fleet.members[s.fleet.self].ID, s.now(), ramp))
}

// undrainSelf ends this node's drain.
func (m *Middleware) undrainSelf(t *testing.T) {
	t.Helper()
	s := m.State()
	require.NoError(t, m.DrainMember(s.fleet.members[s.fleet.self].ID, time.Time{}, 0))
}

// testFleet builds the fleet of members with no node as self.
func testFleet(t testing.TB, members []Member) *fleet {
	t.Helper()
	f, err := newFleet(members, nil, nil)
	require.NoError(t, err)
	return f
}

// ringOwner is the member that owns key on the fleet's ring, drains
// ignored.
func (f *fleet) ringOwner(key string) Member {
	return f.members[f.ring.Owner(ring.Hash(key))]
}
