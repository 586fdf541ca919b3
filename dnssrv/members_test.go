package dnssrv

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect"
)

func TestMembers(t *testing.T) {
	srv := func(target string, port, prio, weight uint16) *net.SRV {
		return &net.SRV{Target: target, Port: port, Priority: prio, Weight: weight}
	}
	m := func(hostport, url string, weight int) wsredirect.Member {
		return wsredirect.Member{ID: hostport, URL: url, Weight: weight}
	}
	tests := []struct {
		name         string
		srvs         []*net.SRV
		scheme, path string
		want         []wsredirect.Member
	}{
		{name: "none"},
		{name: "one", srvs: []*net.SRV{srv("a.test.", 9001, 0, 10)}, scheme: "ws",
			want: []wsredirect.Member{m("a.test:9001", "ws://a.test:9001", 10)}},
		{name: "path and wss", srvs: []*net.SRV{srv("a.test.", 443, 0, 1)}, scheme: "wss", path: "/chat",
			want: []wsredirect.Member{m("a.test:443", "wss://a.test:443/chat", 1)}},
		{name: "sorted by ID, weight 0 is 1",
			srvs:   []*net.SRV{srv("c.test.", 1, 0, 0), srv("a.test.", 2, 0, 5), srv("b.test.", 1, 0, 65535)},
			scheme: "ws",
			want: []wsredirect.Member{
				m("a.test:2", "ws://a.test:2", 5), m("b.test:1", "ws://b.test:1", 65535), m("c.test:1", "ws://c.test:1", 1),
			}},
		{name: "lowest priority only, whatever the order",
			srvs:   []*net.SRV{srv("backup.test.", 1, 20, 1), srv("a.test.", 1, 10, 1), srv("c.test.", 1, 30, 1), srv("b.test.", 1, 10, 3)},
			scheme: "ws",
			want:   []wsredirect.Member{m("a.test:1", "ws://a.test:1", 1), m("b.test:1", "ws://b.test:1", 3)}},
		{name: "target and port are the ID, lower-cased",
			srvs:   []*net.SRV{srv("A.Test.", 1, 0, 1), srv("a.test", 2, 0, 1)},
			scheme: "ws",
			want:   []wsredirect.Member{m("a.test:1", "ws://a.test:1", 1), m("a.test:2", "ws://a.test:2", 1)}},
		{name: "a target and port listed twice sums weights",
			srvs:   []*net.SRV{srv("a.test.", 1, 0, 2), srv("b.test.", 1, 0, 1), srv("a.test.", 1, 0, 0)},
			scheme: "ws",
			want:   []wsredirect.Member{m("a.test:1", "ws://a.test:1", 3), m("b.test:1", "ws://b.test:1", 1)}},
		{name: "target . is no member",
			srvs:   []*net.SRV{srv(".", 0, 0, 0)},
			scheme: "ws"},
		{name: "target . does not hide a higher priority",
			srvs:   []*net.SRV{srv(".", 0, 0, 0), srv("a.test.", 1, 5, 1)},
			scheme: "ws",
			want:   []wsredirect.Member{m("a.test:1", "ws://a.test:1", 1)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, bad := members(tc.srvs, tc.scheme, tc.path, time.Now())
			assert.Empty(t, bad)
			assert.Equal(t, tc.want, got)
			for _, m := range got {
				_, err := wsredirect.ParseTarget(m.URL)
				assert.NoError(t, err)
			}
		})
	}
}

// TestMembersSkipsBadRecords (regression: an SRV record with port 0 became
// a member): a record that makes no member is skipped and reported, and the
// others stand.
func TestMembersSkipsBadRecords(t *testing.T) {
	got, bad := members([]*net.SRV{
		{Target: "a.test.", Port: 9001, Weight: 1},
		{Target: "zero.test.", Port: 0, Weight: 1},
		{Target: "bad\x01.test.", Port: 9001, Weight: 1},
	}, "ws", "", time.Now())
	assert.Equal(t, []wsredirect.Member{{ID: "a.test:9001", URL: "ws://a.test:9001", Weight: 1}}, got)
	require.Len(t, bad, 2)
	assert.ErrorContains(t, bad[0], `SRV 0 1 0 "zero.test.": wsredirect: member zero.test:0: target "ws://zero.test:0": port 0: want 1-65535`)
	assert.ErrorContains(t, bad[1], `SRV 0 1 9001 "bad\x01.test.": wsredirect: member ID "bad\x01.test:9001"`)
}

func TestMerge(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := wsredirect.Member{ID: "a:1", URL: "ws://a:1", Weight: 1}
	b := wsredirect.Member{ID: "b:1", URL: "ws://b:1", Weight: 1}
	c := wsredirect.Member{ID: "c:1", URL: "ws://c:1", Weight: 1}
	drained := func(m wsredirect.Member) wsredirect.Member {
		m.DrainingSince, m.DrainRamp = since, time.Minute
		return m
	}
	weighted := func(m wsredirect.Member, w int) wsredirect.Member { m.Weight = w; return m }
	moved := func(m wsredirect.Member) wsredirect.Member { m.URL += "/moved"; return m }
	list := func(ms ...wsredirect.Member) []wsredirect.Member { return ms }

	tests := []struct {
		name          string
		current, next []wsredirect.Member
		want          []wsredirect.Member // nil: unchanged
	}{
		{name: "same", current: list(a, b), next: list(a, b)},
		{name: "same, a drain in force", current: list(drained(a), b), next: list(a, b)},
		{name: "added", current: list(a, b), next: list(a, b, c), want: list(a, b, c)},
		{name: "removed", current: list(a, b, c), next: list(a, c), want: list(a, c)},
		{name: "weight", current: list(a, b), next: list(a, weighted(b, 2)), want: list(a, weighted(b, 2))},
		{name: "URL", current: list(a, b), next: list(a, moved(b)), want: list(a, moved(b))},
		{name: "drain kept for members still listed", current: list(drained(a), b), next: list(a, b, c),
			want: list(drained(a), b, c)},
		{name: "drain kept when its URL changes", current: list(drained(a), b), next: list(moved(a), b),
			want: list(drained(moved(a)), b)},
		{name: "drained member gone", current: list(a, drained(b)), next: list(a, c), want: list(a, c)},
		{name: "from none", next: list(a), want: list(a)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			next := append([]wsredirect.Member(nil), tc.next...)
			got, changed := merge(tc.current, tc.next)
			assert.Equal(t, next, tc.next, "next was modified")
			if tc.want == nil {
				assert.False(t, changed)
				assert.Equal(t, tc.current, got)
				return
			}
			assert.True(t, changed)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestOptionsCheck(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		qname   string // with no error
		errHas  string // an error
		wantDef bool   // Interval, Resolver and Logger defaulted
	}{
		{name: "defaults", opts: Options{Service: "chat", Name: "fleet.test", Scheme: "ws"},
			qname: "_chat._tcp.fleet.test", wantDef: true},
		{name: "udp and a final dot", opts: Options{Service: "chat", Proto: "udp", Name: "fleet.test.", Scheme: "wss"},
			qname: "_chat._udp.fleet.test."},
		{name: "name as it is", opts: Options{Name: "_chat._tcp.fleet.test", Scheme: "ws", Path: "/ws/"},
			qname: "_chat._tcp.fleet.test"},
		{name: "no name", opts: Options{Service: "chat", Scheme: "ws"}, errHas: "dnssrv: Options.Name is required"},
		{name: "proto without service", opts: Options{Proto: "tcp", Name: "x.test", Scheme: "ws"},
			errHas: `dnssrv: Options.Proto "tcp" without a Service`},
		{name: "no scheme", opts: Options{Name: "x.test"}, errHas: `dnssrv: Options.Scheme is "": want ws or wss`},
		{name: "http scheme", opts: Options{Name: "x.test", Scheme: "https"}, errHas: "want ws or wss"},
		{name: "relative path", opts: Options{Name: "x.test", Scheme: "ws", Path: "chat"},
			errHas: `dnssrv: Options.Path "chat" does not start with /`},
		{name: "path with a query", opts: Options{Name: "x.test", Scheme: "ws", Path: "/chat?x=1"},
			errHas: `dnssrv: Options.Path "/chat?x=1"`},
		{name: "negative interval", opts: Options{Name: "x.test", Scheme: "ws", Interval: -time.Second},
			errHas: "dnssrv: Options.Interval -1s is negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.opts.check()
			if tc.errHas != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.errHas)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.qname, c.qname)
			if tc.wantDef {
				assert.Equal(t, DefaultInterval, c.interval)
				assert.Same(t, net.DefaultResolver, c.resolver)
				assert.NotNil(t, c.logger)
			}
		})
	}
}
