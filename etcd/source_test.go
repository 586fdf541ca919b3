package etcd

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsredirect/wsredirect"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// convergeBound is the generous bound asserted on convergence after a
// change written to etcd; the figures are logged.
const convergeBound = 5 * time.Second

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Nodes join, leave with Close and crash; every instance, a front door
// included, holds the same fleet and sends 10,000 keys to the same members
// after every change.
func TestJoinLeaveCrash(t *testing.T) {
	noLeaks(t)
	srv := startServer(t)
	ep := srv.endpoint()
	ttl := func(o *Options) { o.TTL = 2 * time.Second }
	if _, err := Members(ctxT(t), newClient(t, ep), ""); err == nil || !strings.Contains(err.Error(), "no member registered") {
		t.Errorf("Members of an empty fleet: %v", err)
	}

	a := startNode(t, ep, "a", ttl)
	front := startFront(t, ep, "front")
	converge(t, time.Now(), convergeBound, fleetOf("a"), a, front)

	start := time.Now()
	b := startNode(t, ep, "b", ttl)
	d := converge(t, start, convergeBound, fleetOf("a", "b"), a, b, front)
	t.Logf("convergence: join of b: every instance serves the new owners %v after Start", d)

	start = time.Now()
	c := startNode(t, ep, "c", ttl)
	d = converge(t, start, convergeBound, fleetOf("a", "b", "c"), a, b, c, front)
	t.Logf("convergence: join of c: %v after Start", d)

	start = time.Now()
	if err := b.src.Close(); err != nil {
		t.Fatal(err)
	}
	d = converge(t, start, convergeBound, fleetOf("a", "c"), a, c, front)
	t.Logf("convergence: b leaves (Close revokes): %v after Close", d)
	if got := b.mw.State().Members(); len(got) != 3 {
		t.Errorf("b's middleware after Close holds %v, want the last set applied", ids(got))
	}

	start = time.Now()
	c.src.shutdown(false) // a crash: no revoke, no keep-alive
	d = converge(t, start, 2*time.Second+convergeBound, fleetOf("a"), a, front)
	t.Logf("convergence: c crashes (lease TTL 2 s): %v after the crash", d)
	// The lease was last renewed up to a third of its TTL before the crash.
	if d < 1200*time.Millisecond {
		t.Errorf("c dropped out %v after its crash, before its lease could expire", d)
	}

	// It comes back.
	start = time.Now()
	c = startNode(t, ep, "c", ttl)
	d = converge(t, start, convergeBound, fleetOf("a", "c"), a, c, front)
	t.Logf("convergence: c restarts: %v after Start", d)
}

// A node whose lease is revoked from outside, or whose member record is
// deleted, registers again by itself, its own drain record with it.
func TestLostRegistration(t *testing.T) {
	noLeaks(t)
	srv := startServer(t)
	ep := srv.endpoint()
	a := startNode(t, ep, "a")
	b := startNode(t, ep, "b")
	front := startFront(t, ep, "front")
	ops := newClient(t, ep)
	ctx := ctxT(t)

	if err := a.src.Drain(ctx, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	before := getDrain(t, ops, "a")
	want := drained(fleetOf("a", "b"), "a", before.Since, 500*time.Millisecond)
	converge(t, time.Now(), convergeBound, want, a, b, front)
	lease := getLease(t, ops, "members/a")

	// Revoked from outside: the member and its drain record go at once.
	start := time.Now()
	if _, err := ops.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	waitFor(t, convergeBound, "a to register again", func() bool {
		l, ok := tryLease(t, ops, "members/a")
		return ok && l != lease
	})
	t.Logf("a registered again %v after its lease was revoked", time.Since(start))
	d := converge(t, start, convergeBound, want, a, b, front)
	t.Logf("convergence: a back with its drain, same since: %v after the revoke", d)
	if after := getDrain(t, ops, "a"); !after.Since.Equal(before.Since) || after.Ramp != before.Ramp {
		t.Errorf("drain record after re-registration %+v, before %+v", after, before)
	}
	if got := getLease(t, ops, "drains/a"); got != getLease(t, ops, "members/a") {
		t.Errorf("drain record on lease %x, member on %x", got, getLease(t, ops, "members/a"))
	}
	a.logs.waitLog(t, "registration lost", time.Second)

	// Member record deleted while the lease lives.
	lease = getLease(t, ops, "members/a")
	start = time.Now()
	if _, err := ops.Delete(ctx, DefaultPrefix+"members/a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, convergeBound, "a to write its record again", func() bool {
		_, ok := tryLease(t, ops, "members/a")
		return ok
	})
	t.Logf("a wrote its record again %v after it was deleted", time.Since(start))
	if got := getLease(t, ops, "members/a"); got != lease {
		t.Errorf("a re-registered on lease %x, want its live lease %x", got, lease)
	}
	converge(t, start, convergeBound, want, a, b, front)
}

// Drains written and deleted with a plain client, as an operator would
// with etcdctl, reach every instance with the same since and ramp; bad
// records are logged and skipped; a drain record waits for its member.
func TestOperatorDrain(t *testing.T) {
	noLeaks(t)
	srv := startServer(t)
	ep := srv.endpoint()
	a := startNode(t, ep, "a")
	b := startNode(t, ep, "b")
	c := startNode(t, ep, "c")
	front := startFront(t, ep, "front")
	all := []*instance{a, b, c, front}
	ops := newClient(t, ep)
	ctx := ctxT(t)
	fleet := fleetOf("a", "b", "c")
	converge(t, time.Now(), convergeBound, fleet, all...)

	// etcdctl put /wsredirect/drains/b '{"since":"…","ramp":"1s"}'
	since := time.Now().Add(time.Second).UTC().Truncate(time.Second).Add(time.Second)
	start := time.Now()
	put(t, ops, "drains/b", `{"since":"`+since.Format(time.RFC3339)+`","ramp":"1s"}`)
	want := drained(fleet, "b", since, time.Second)
	d := converge(t, start, convergeBound, want, all...)
	t.Logf("convergence: drain of b written with a plain client: every instance holds it %v after the write (keys move from its since, %v after the write, over its 1 s ramp)", d, since.Sub(start).Round(time.Millisecond))
	if on, _ := b.mw.State().Draining(); !on {
		t.Error("b does not know it drains")
	}

	// etcdctl del /wsredirect/drains/b
	start = time.Now()
	if _, err := ops.Delete(ctx, DefaultPrefix+"drains/b"); err != nil {
		t.Fatal(err)
	}
	d = converge(t, start, convergeBound, fleet, all...)
	t.Logf("convergence: undrain of b (record deleted): %v", d)

	// Bad records are skipped, and say why.
	for _, bad := range []struct{ key, value, why string }{
		{"drains/c", `{"since":"tomorrow"}`, "not a drain record"},
		{"drains/c", `{"since":"2026-11-26T14:00:00Z","rmap":"30s"}`, "rmap"},
		{"drains/c", `{"ramp":"30s"}`, "without since"},
		{"drains/c", `{"since":"2026-11-26T14:00:00Z","ramp":"-3s"}`, "negative ramp"},
		{"drains/c", `{"since":"2026-11-26T14:00:00Z","ramp":"30"}`, "missing unit"},
		{"members/x", `{"url":"x.test:80"}`, "no scheme: want ws://x.test:80"},
		{"members/y", `{"url":"ws://y.test","weight":-1}`, "negative Weight -1"},
		{"members/z", `not json`, "not a member record"},
		// Regressions: these reached SetMembers, which refused every set
		// after them (or, for an ID that is not UTF-8, the collector
		// panicked on the request path).
		{"members/evil\xff\xfe", `{"url":"ws://evil.test:8080"}`, "want printable UTF-8"},
		{"members/v", `{"url":"ws://v.test:0"}`, "port 0: want 1-65535"},
		{"drains/c", `{"since":"9999-01-01T00:00:00Z","ramp":"30s"}`, "is more than 24h0m0s ahead"},
		{"drains/c", `{"since":"2026-11-26T14:00:00Z","ramp":"2557920h"}`, "longer than the 24h0m0s a drain may take"},
	} {
		before := front.src.BadRecords()
		put(t, ops, bad.key, bad.value)
		front.logs.waitLog(t, bad.why, convergeBound)
		if front.src.BadRecords() <= before {
			t.Errorf("%s: not counted in BadRecords", bad.key)
		}
	}
	if front.logs.count(`msg="wsredirect/etcd: bad record skipped" key=`+DefaultPrefix+"members/x") == 0 {
		t.Error("the log does not name the key")
	}
	// A member with the URL of another is skipped too.
	put(t, ops, "members/w", `{"url":"`+memberURL("a")+`"}`)
	front.logs.waitLog(t, "its URL is registered already", convergeBound)
	agree(t, fleet, all...)
	for _, in := range all {
		if got := in.mw.State().Members(); !sameMembers(got, fleet) {
			t.Errorf("%s holds %v after bad records, want %v", in.name, ids(got), ids(fleet))
		}
	}

	// A drain record for a member not registered waits for it.
	since = time.Now().Add(500 * time.Millisecond).UTC()
	put(t, ops, "drains/d", `{"since":"`+since.Format(time.RFC3339Nano)+`"}`)
	time.Sleep(100 * time.Millisecond)
	agree(t, fleet, all...)
	start = time.Now()
	dn := startNode(t, ep, "d")
	want = drained(fleetOf("a", "b", "c", "d"), "d", since, 0)
	d = converge(t, start, convergeBound, want, append(all, dn)...)
	t.Logf("convergence: d joins already drained by an earlier record: %v", d)
}

// A node drains itself: the record is on its lease, written once with
// since Settle ahead; Undrain applies here first; a node that leaves or
// restarts comes back undrained.
func TestOwnDrain(t *testing.T) {
	noLeaks(t)
	srv := startServer(t)
	ep := srv.endpoint()
	a := startNode(t, ep, "a", func(o *Options) { o.Settle = 0 }) // the default, 2 s
	b := startNode(t, ep, "b")
	front := startFront(t, ep, "front")
	ops := newClient(t, ep)
	ctx := ctxT(t)
	fleet := fleetOf("a", "b")

	start := time.Now()
	if err := a.src.Drain(ctx, 0); err != nil {
		t.Fatal(err)
	}
	rec := getDrain(t, ops, "a")
	if ahead := rec.Since.Sub(start); ahead < DefaultSettle-10*time.Millisecond || ahead > DefaultSettle+time.Second {
		t.Errorf("since %v after Drain, want about the default Settle, %v", ahead, DefaultSettle)
	}
	if got, want := getLease(t, ops, "drains/a"), getLease(t, ops, "members/a"); got != want {
		t.Errorf("a's own drain record on lease %x, its member on %x", got, want)
	}
	want := drained(fleet, "a", rec.Since, 0)
	d := converge(t, start, convergeBound, want, a, b, front)
	t.Logf("convergence: a drains itself: every instance holds the drain %v after Drain was called; keys move at its since, %v after", d, rec.Since.Sub(start).Round(time.Millisecond))

	// Written once: a second Drain keeps the values every node applied.
	if err := a.src.Drain(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if again := getDrain(t, ops, "a"); again != rec {
		t.Errorf("second Drain changed the record from %+v to %+v", rec, again)
	}

	start = time.Now()
	if err := a.src.Undrain(ctx); err != nil {
		t.Fatal(err)
	}
	if on, _ := a.mw.State().Draining(); on {
		t.Error("a still drains when Undrain returns: it must apply the undrain first")
	}
	d = converge(t, start, convergeBound, fleet, a, b, front)
	t.Logf("convergence: a undrains itself: %v after Undrain was called", d)

	// Drained, then gone with Close: the record goes with the lease.
	if err := a.src.Drain(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := a.src.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.src.Drain(ctx, 0); err == nil || !strings.HasPrefix(err.Error(), "wsredirect/etcd: ") {
		t.Errorf("Drain after Close: %v", err)
	}
	if resp, err := ops.Get(ctx, DefaultPrefix+"drains/a"); err != nil || len(resp.Kvs) != 0 {
		t.Errorf("a's drain record outlived Close: %v %v", resp.Kvs, err)
	}
	converge(t, time.Now(), convergeBound, fleetOf("b"), b, front)
	a = startNode(t, ep, "a")
	converge(t, time.Now(), convergeBound, fleet, a, b, front)

	// A watch-only source drains no one.
	if err := front.src.Drain(ctx, 0); err == nil {
		t.Error("a front door's Drain did not fail")
	}
}

// etcd goes away: every instance keeps its members and says so; when etcd
// is back (same data, same ports), the nodes keep their leases, the fleet
// never changed meanwhile, and changes flow again.
func TestOutage(t *testing.T) {
	noLeaks(t)
	setVar(t, &probeEvery, 200*time.Millisecond)
	setVar(t, &probeTimeout, 500*time.Millisecond)
	srv := startServer(t)
	ep := srv.endpoint()
	ttl := func(o *Options) { o.TTL = 3 * time.Second }
	a := startNode(t, ep, "a", ttl)
	b := startNode(t, ep, "b", ttl)
	front := startFront(t, ep, "front")
	ops := newClient(t, ep)
	all := []*instance{a, b, front}
	fleet := fleetOf("a", "b")
	converge(t, time.Now(), convergeBound, fleet, all...)
	leaseA, leaseB := getLease(t, ops, "members/a"), getLease(t, ops, "members/b")
	applied := func() (n int) {
		for _, in := range all {
			n += in.logs.count("members applied")
		}
		return n
	}
	appliedBefore := applied()

	// Down for longer than the TTL: the nodes' keep-alives give up.
	down := time.Now()
	srv.stop() // waits for open streams, for a few seconds
	t.Logf("outage: etcd stopped in %v", time.Since(down))
	for time.Since(down) < 5*time.Second || a.logs.count("registration lost") == 0 || b.logs.count("registration lost") == 0 {
		for _, in := range all {
			if got := in.mw.State().Members(); !sameMembers(got, fleet) {
				t.Fatalf("%s holds %v during the outage, want the last set %v", in.name, ids(got), ids(fleet))
			}
		}
		if time.Since(down) > 20*time.Second {
			t.Fatal("the nodes' keep-alives did not give up within 20 s of the outage")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, in := range all {
		in.logs.waitLog(t, "etcd unreachable; serving on the last member set", time.Second)
	}
	agree(t, fleet, all...)

	srv.start()
	up := time.Now()
	for _, in := range all {
		in.logs.waitLog(t, "etcd reachable again", 10*time.Second)
	}
	t.Logf("outage: every instance reached etcd again %v after it restarted", time.Since(up))
	for _, in := range []*instance{a, b} {
		in.logs.waitLog(t, "registered again", 10*time.Second)
	}
	if got, gotB := getLease(t, ops, "members/a"), getLease(t, ops, "members/b"); got != leaseA || gotB != leaseB {
		t.Errorf("leases after the outage %x, %x; before %x, %x: the nodes should have kept theirs", got, gotB, leaseA, leaseB)
	}
	if n := applied(); n != appliedBefore {
		t.Errorf("%d member sets applied through the outage, want none: the fleet did not change", n-appliedBefore)
	}

	start := time.Now()
	c := startNode(t, ep, "c", ttl)
	d := converge(t, start, convergeBound, fleetOf("a", "b", "c"), append(all, c)...)
	t.Logf("convergence: join of c after the outage: %v", d)

	// Still registered a TTL later: the keep-alives resumed.
	time.Sleep(3 * time.Second)
	converge(t, time.Now(), convergeBound, fleetOf("a", "b", "c"), append(all, c)...)
}

// A watcher cut off while the fleet changes and the revisions it missed
// are compacted reads the whole fleet again when it is back.
func TestCompaction(t *testing.T) {
	noLeaks(t)
	srv := startServer(t)
	ep := srv.endpoint()
	a := startNode(t, ep, "a")
	b := startNode(t, ep, "b")
	p := startProxy(t, ep)
	front := startFront(t, p.addr(), "front")
	ops := newClient(t, ep)
	ctx := ctxT(t)
	converge(t, time.Now(), convergeBound, fleetOf("a", "b"), a, b, front)

	p.setCut(true)
	c := startNode(t, ep, "c")
	if err := b.src.Close(); err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(300 * time.Millisecond).UTC()
	put(t, ops, "drains/c", `{"since":"`+since.Format(time.RFC3339Nano)+`","ramp":"0s"}`)
	resp, err := ops.Get(ctx, "any")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ops.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	want := drained(fleetOf("a", "c"), "c", since, 0)
	converge(t, time.Now(), convergeBound, want, a, c)
	if got := front.mw.State().Members(); !sameMembers(got, fleetOf("a", "b")) {
		t.Fatalf("the front door, cut off, holds %v", ids(got))
	}

	start := time.Now()
	p.setCut(false)
	d := converge(t, start, 10*time.Second, want, a, c, front)
	t.Logf("convergence: front door cut off past a compaction: whole fleet read again %v after it could reach etcd", d)
	front.logs.waitLog(t, "compaction", time.Second)
}

// Changes are applied whole revisions at a time: three members written in
// one transaction are never seen apart; a burst of transactions folds into
// fewer ring builds.
func TestWholeRevisions(t *testing.T) {
	noLeaks(t)
	srv := startServer(t)
	ep := srv.endpoint()
	a := startNode(t, ep, "a")
	front := startFront(t, ep, "front")
	ops := newClient(t, ep)
	ctx := ctxT(t)

	var all []string
	start := time.Now()
	for i := range 10 {
		var puts []clientv3.Op
		for j := range 3 {
			id := fmt.Sprintf("p%02d", 3*i+j)
			all = append(all, id)
			puts = append(puts, clientv3.OpPut(DefaultPrefix+"members/"+id, memberRecord{URL: memberURL(id)}.marshal()))
		}
		if _, err := ops.Txn(ctx).Then(puts...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	want := fleetOf(append([]string{"a"}, all...)...)
	d := converge(t, start, convergeBound, want, a, front)
	t.Logf("convergence: 30 members in 10 transactions: %v after the first", d)

	var dels []clientv3.Op
	for _, id := range all {
		dels = append(dels, clientv3.OpDelete(DefaultPrefix+"members/"+id))
	}
	if _, err := ops.Txn(ctx).Then(dels...).Commit(); err != nil {
		t.Fatal(err)
	}
	converge(t, time.Now(), convergeBound, fleetOf("a"), a, front)

	applied := regexp.MustCompile(`members applied" members=(\d+)`)
	for _, in := range []*instance{a, front} {
		in.logs.mu.Lock()
		sizes := applied.FindAllStringSubmatch(in.logs.b.String(), -1)
		in.logs.mu.Unlock()
		var got []string
		for _, m := range sizes {
			got = append(got, m[1])
			if n, _ := strconv.Atoi(m[1]); (n-1)%3 != 0 {
				t.Errorf("%s applied a set of %d members: part of a transaction", in.name, n)
			}
		}
		t.Logf("%s applied sets of %v members", in.name, got)
	}
}

// Start refuses bad options, and gives up, leaving nothing behind, when
// etcd cannot be reached before its context ends.
func TestStartErrors(t *testing.T) {
	noLeaks(t)
	cli := newClient(t, freeAddr(t)) // nothing listens there
	self := wsredirect.Member{ID: "a", URL: memberURL("a")}
	mw := wsredirect.MustNew(wsredirect.Options{Rules: []wsredirect.Rule{shardRule}, Self: self.URL, Members: []wsredirect.Member{self}})
	ctx := ctxT(t)
	for _, tc := range []struct {
		name string
		mw   *wsredirect.Middleware
		opts Options
		want string
	}{
		{"nil middleware", nil, Options{Client: cli}, "nil middleware"},
		{"nil client", mw, Options{}, "Options.Client is nil"},
		{"negative TTL", mw, Options{Client: cli, TTL: -1}, "TTL is negative"},
		{"negative Settle", mw, Options{Client: cli, Settle: -1}, "Settle is negative"},
		{"bad Self URL", mw, Options{Client: cli, Self: &wsredirect.Member{ID: "a", URL: "a.test:80"}}, "Options.Self: member a: target \"a.test:80\": no scheme"},
		{"Self without ID", mw, Options{Client: cli, Self: &wsredirect.Member{URL: self.URL}}, "has no ID"},
		{"Self not the middleware's", mw, Options{Client: cli, Self: &wsredirect.Member{ID: "b", URL: memberURL("b")}}, "not the middleware's Options.Self"},
		{"Self draining", mw, Options{Client: cli, Self: &wsredirect.Member{ID: "a", URL: self.URL, DrainRamp: time.Second}}, "drain fields"},
	} {
		src, err := Start(ctx, tc.mw, tc.opts)
		if src != nil || err == nil || !strings.HasPrefix(err.Error(), "wsredirect/etcd: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Start: %v, want an error with %q", tc.name, err, tc.want)
		}
	}

	for _, opts := range []Options{{Client: cli}, {Client: cli, Self: &self}} {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		src, err := Start(ctx, mw, opts)
		cancel()
		if src != nil || err == nil || !strings.HasPrefix(err.Error(), "wsredirect/etcd: Start: ") {
			t.Errorf("Start without etcd: %v", err)
		}
		t.Logf("Start without etcd (Self %v): %v", opts.Self != nil, err)
	}
}

func TestRecords(t *testing.T) {
	d, err := parseDrain([]byte(`{"since":"2026-11-26T14:00:00Z","ramp":"30s"}`))
	if err != nil || !d.Since.Equal(time.Date(2026, 11, 26, 14, 0, 0, 0, time.UTC)) || d.Ramp != 30*time.Second {
		t.Errorf("parseDrain: %+v %v", d, err)
	}
	if back, err := parseDrain([]byte(d.marshal())); err != nil || back != d {
		t.Errorf("drain record round trip: %s → %+v %v", d.marshal(), back, err)
	}
	if got := (drainRecord{Since: d.Since}).marshal(); got != `{"since":"2026-11-26T14:00:00Z"}` {
		t.Errorf("drain record without ramp: %s", got)
	}
	for _, bad := range []string{``, `{}`, `{"since":""}`, `{"since":"2026-11-26T14:00:00Z"} {}`, `{"since":"2026-11-26T14:00:00Z","ramp":30}`} {
		if _, err := parseDrain([]byte(bad)); err == nil {
			t.Errorf("parseDrain(%s) did not fail", bad)
		}
	}
	m, _, err := parseMember("a", []byte(`{"url":"wss://a.example.com","weight":2,"zone":"x"}`))
	if err != nil || m != (wsredirect.Member{ID: "a", URL: "wss://a.example.com", Weight: 2}) {
		t.Errorf("parseMember: %+v %v", m, err)
	}
	if got := (memberRecord{URL: "ws://a.test"}).marshal(); got != `{"url":"ws://a.test"}` {
		t.Errorf("member record: %s", got)
	}
	long := `{"url":"wss://` + strings.Repeat("a", 120) + `.example.com"}`
	if _, _, err := parseMember("a", []byte(long)); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("parseMember with a long URL: %v", err)
	}
	for _, p := range [][2]string{{"", "/wsredirect/"}, {"/x", "/x/"}, {"/x/", "/x/"}} {
		if got := normPrefix(p[0]); got != p[1] {
			t.Errorf("normPrefix(%q) = %q, want %q", p[0], got, p[1])
		}
	}
}

func put(t testing.TB, c *clientv3.Client, key, value string) {
	t.Helper()
	if _, err := c.Put(ctxT(t), DefaultPrefix+key, value); err != nil {
		t.Fatal(err)
	}
}

func getDrain(t testing.TB, c *clientv3.Client, id string) drainRecord {
	t.Helper()
	resp, err := c.Get(ctxT(t), DefaultPrefix+"drains/"+id)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("drain record of %s: %v %v", id, resp, err)
	}
	d, err := parseDrain(resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func tryLease(t testing.TB, c *clientv3.Client, key string) (clientv3.LeaseID, bool) {
	t.Helper()
	resp, err := c.Get(ctxT(t), DefaultPrefix+key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return 0, false
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease), true
}

func getLease(t testing.TB, c *clientv3.Client, key string) clientv3.LeaseID {
	t.Helper()
	l, ok := tryLease(t, c, key)
	if !ok {
		t.Fatalf("no %s", key)
	}
	return l
}
