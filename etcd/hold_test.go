package etcd

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression (examples/chat: a client moved back at an undrain went
// n2 → n1 → n2, "redirect loop", when n2 heard of the etcdctl del before
// n1): when a drain record goes, the member it named undrains at once and
// the others Settle later, so none sends it a client before it knows.
func TestUndrainHeld(t *testing.T) {
	noLeaks(t)
	srv := startServer(t)
	ep := srv.endpoint()
	const settle = 500 * time.Millisecond
	slow := func(o *Options) { o.Settle = settle }
	a, b := startNode(t, ep, "a", slow), startNode(t, ep, "b", slow)
	front := startFront(t, ep, "front", slow)
	ops := newClient(t, ep)
	since := time.Now().Add(-time.Second).UTC().Truncate(time.Millisecond)
	put(t, ops, "drains/b", `{"since":"`+since.Format(time.RFC3339Nano)+`"}`)
	converge(t, time.Now(), convergeBound, drained(fleetOf("a", "b"), "b", since, 0), a, b, front)

	start := time.Now()
	_, err := ops.Delete(ctxT(t), DefaultPrefix+"drains/b")
	require.NoError(t, err)
	waitFor(t, convergeBound, "b to undrain", func() bool { on, _ := b.mw.State().Draining(); return !on })
	bAt := time.Since(start)
	for _, in := range []*instance{a, front} {
		assert.True(t, sameMembers(in.mw.State().Members(), drained(fleetOf("a", "b"), "b", since, 0)), "%s undrained b as soon as b did", in.name)
	}
	d := converge(t, start, convergeBound, fleetOf("a", "b"), a, front)
	t.Logf("undrain of b by a deleted record: b applied it %v after the delete, a and the front door %v after (Settle %v)", bAt.Round(time.Millisecond), d.Round(time.Millisecond), settle)
	assert.GreaterOrEqual(t, d, settle)
	assert.Less(t, d, settle+time.Second)
	a.logs.waitLog(t, "drain record gone", time.Second)

	// A drain written again while held is the new one, at once.
	since = time.Now().Add(-time.Second).UTC().Truncate(time.Millisecond)
	put(t, ops, "drains/b", `{"since":"`+since.Format(time.RFC3339Nano)+`"}`)
	converge(t, time.Now(), convergeBound, drained(fleetOf("a", "b"), "b", since, 0), a, b, front)
	_, err = ops.Delete(ctxT(t), DefaultPrefix+"drains/b")
	require.NoError(t, err)
	next := since.Add(time.Second)
	put(t, ops, "drains/b", `{"since":"`+next.Format(time.RFC3339Nano)+`"}`)
	converge(t, time.Now(), convergeBound, drained(fleetOf("a", "b"), "b", next, 0), a, b, front)
}
