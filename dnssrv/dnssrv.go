// Package dnssrv keeps a fleet's members in step with a DNS SRV record, as
// Kubernetes headless services and Consul DNS serve them.
//
// [Watch] looks up _service._proto.name at once and then every
// Options.Interval, and gives the answer to the middleware ([wsredirect.Middleware.UpdateMembers])
// whenever it differs from the members in force. [Lookup] returns the members
// DNS gives now, for Options.Members when the middleware is built (New
// refuses a Shard rule without members).
//
// Each SRV record of the lowest priority present becomes a member:
//
//   - ID: "target:port", the target lower-cased and without its final dot,
//     such as "chat-0.chat.default.svc.cluster.local:9001". The ID places the
//     member's keys (package ring), so keep the DNS names stable across
//     restarts (a StatefulSet's pod names, not addresses or generated
//     names) or its keys move whenever it restarts.
//   - URL: Options.Scheme + "://target:port" + Options.Path, which is where
//     clients are sent: the targets must be names the clients can resolve
//     and reach. Set this node's wsredirect.Options.Self to its own URL as
//     built here, so that it serves its own keys.
//   - Weight: the SRV weight, with 0 read as 1 (a member's share of keys is
//     its weight over the sum of weights).
//
// Records of higher priority values, RFC 2782's backups, are left out while
// any of the lowest is listed; records whose target is "." (service not
// available) are left out altogether.
//
// A failed lookup, or an answer without a member, changes nothing: the
// members in force stay, and the error is logged at Warn.
package dnssrv

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/internal/memberids"
)

// Options says which SRV record to watch and how to build members from it.
// Name and Scheme are required.
type Options struct {
	// Service, Proto and Name make the name looked up:
	// _Service._Proto.Name, such as _chat._tcp.chat.default.svc.cluster.local.
	// Proto defaults to "tcp". With Service and Proto empty, Name is looked
	// up as it is. End Name with a dot to keep the resolver's search
	// domains (resolv.conf) out of the lookup.
	Service, Proto, Name string

	// Scheme is the scheme of the members' URLs: "ws" or "wss". Required:
	// clients of a page served over https need wss.
	Scheme string
	// Path, when set, is a path prefix of the members' URLs, such as
	// "/edge": a redirect puts the request's own path after it
	// (/rooms/1 → ws://b:9001/edge/rooms/1), so set it only when the nodes
	// serve under a prefix the clients' URLs do not have. Default: none.
	Path string

	// Interval is the time between lookups, and the longest a lookup may
	// take. Default: 10 seconds.
	Interval time.Duration
	// Resolver looks the record up. Default: net.DefaultResolver.
	Resolver *net.Resolver
	// Logger receives failed lookups and refused member sets (at Warn),
	// changes of members and the first good lookup after failures (at
	// Info). Default: slog.Default().
	Logger *slog.Logger
}

// DefaultInterval is the time between lookups when Options.Interval is zero.
const DefaultInterval = 10 * time.Second

// Lookup returns the members DNS gives now, sorted by ID. An answer without
// a member is an error, as are a failed lookup and bad options; errors start
// with "dnssrv:".
func Lookup(ctx context.Context, opts Options) ([]wsredirect.Member, error) {
	c, err := opts.check()
	if err != nil {
		return nil, err
	}
	return c.lookup(ctx)
}

// Watch keeps mw's members those DNS gives: it looks up at once, then every
// Interval until ctx ends, and replaces the members in force
// ([wsredirect.Middleware.UpdateMembers]) whenever the answer's set of
// members (IDs, URLs and weights) differs from them. Drain fields set with
// [wsredirect.Middleware.DrainMember] are kept for the members still
// listed, also when a drain lands during the swap; members set by other
// means are replaced at the next lookup. A failed or empty lookup, or a
// set the middleware refuses, keeps the members in force and is logged at
// Warn.
//
// Run it on its own goroutine: it blocks until ctx ends and then returns
// nil. Bad options are returned at once, before any lookup.
func Watch(ctx context.Context, mw *wsredirect.Middleware, opts Options) error {
	c, err := opts.check()
	if err != nil {
		return err
	}
	if mw == nil {
		return errors.New("dnssrv: nil Middleware")
	}
	t := time.NewTicker(c.interval)
	defer t.Stop()
	failing := false
	for {
		failing = c.sync(ctx, mw, failing)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// config is checked Options, defaults applied.
type config struct {
	service, proto, name string
	qname                string // the name looked up, for errors and logs
	scheme, path         string
	interval             time.Duration
	resolver             *net.Resolver
	logger               *slog.Logger
}

func (o Options) check() (*config, error) {
	c := &config{
		service: o.Service, proto: o.Proto, name: o.Name,
		scheme: o.Scheme, path: strings.TrimSuffix(o.Path, "/"),
		interval: cmp.Or(o.Interval, DefaultInterval),
		resolver: cmp.Or(o.Resolver, net.DefaultResolver),
		logger:   cmp.Or(o.Logger, slog.Default()),
	}
	switch {
	case c.name == "":
		return nil, errors.New("dnssrv: Options.Name is required")
	case c.service == "" && c.proto != "":
		return nil, fmt.Errorf("dnssrv: Options.Proto %q without a Service", c.proto)
	case c.scheme != "ws" && c.scheme != "wss":
		return nil, fmt.Errorf("dnssrv: Options.Scheme is %q: want ws or wss", c.scheme)
	case c.path != "" && c.path[0] != '/':
		return nil, fmt.Errorf("dnssrv: Options.Path %q does not start with /", o.Path)
	case o.Interval < 0:
		return nil, fmt.Errorf("dnssrv: Options.Interval %v is negative", o.Interval)
	}
	if _, err := wsredirect.ParseTarget(c.scheme + "://example.com" + c.path); err != nil {
		return nil, fmt.Errorf("dnssrv: Options.Path %q: %s", o.Path, strings.TrimPrefix(err.Error(), "wsredirect: "))
	}
	c.qname = c.name
	if c.service != "" {
		c.proto = cmp.Or(c.proto, "tcp")
		c.qname = "_" + c.service + "._" + c.proto + "." + c.name
	}
	return c, nil
}

// lookup asks DNS for the members, giving the lookup at most an interval.
func (c *config) lookup(ctx context.Context) ([]wsredirect.Member, error) {
	ctx, cancel := context.WithTimeout(ctx, c.interval)
	defer cancel()
	_, srvs, err := c.resolver.LookupSRV(ctx, c.service, c.proto, c.name)
	if err != nil {
		// LookupSRV may return the records it could read with an error
		// for the others: a partial answer would move keys, so it is not
		// used.
		return nil, fmt.Errorf("dnssrv: %w", err)
	}
	ms, bad := members(srvs, c.scheme, c.path, time.Now())
	for _, err := range bad {
		c.logger.WarnContext(ctx, "dnssrv: SRV record skipped", "name", c.qname, "err", err)
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("dnssrv: lookup %s: no SRV record with a target", c.qname)
	}
	return ms, nil
}

// sync runs one lookup and applies its answer to mw if it changes the
// members. failing says whether the previous lookup failed; sync returns
// whether this one did.
func (c *config) sync(ctx context.Context, mw *wsredirect.Middleware, failing bool) bool {
	ms, err := c.lookup(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.logger.WarnContext(ctx, "dnssrv: lookup failed; the members in force stay", "name", c.qname, "err", err)
		}
		return true
	}
	if failing {
		c.logger.InfoContext(ctx, "dnssrv: lookup succeeded again", "name", c.qname, "members", len(ms))
	}
	// UpdateMembers, not State then SetMembers: a drain set with
	// DrainMember in between would be lost.
	var current, next []wsredirect.Member
	changed := false
	err = mw.UpdateMembers(func(in []wsredirect.Member) ([]wsredirect.Member, error) {
		current = in
		if next, changed = merge(in, ms); !changed {
			return nil, errUnchanged
		}
		return next, nil
	})
	if !changed {
		return false
	}
	if err != nil {
		c.logger.WarnContext(ctx, "dnssrv: members refused; the members in force stay", "name", c.qname, "err", err)
		return false
	}
	c.logger.InfoContext(ctx, "dnssrv: members changed", "name", c.qname, "members", len(next),
		"added", memberids.Missing(next, current), "removed", memberids.Missing(current, next))
	return false
}

// errUnchanged stops an UpdateMembers that has nothing to change.
var errUnchanged = errors.New("unchanged")

// members builds the members of an SRV answer, sorted by ID: the records of
// the lowest priority present with a target other than ".", one member per
// target and port. A target and port listed twice is one member with the
// sum of the records' weights, the share RFC 2782 selection gives it. A
// record that makes no member (port 0, a target no URL can name) is left
// out and returned in bad, so one bad record does not keep every change out.
func members(srvs []*net.SRV, scheme, path string, now time.Time) (ms []wsredirect.Member, bad []error) {
	lowest := -1
	for _, s := range srvs {
		target := strings.ToLower(strings.TrimSuffix(s.Target, "."))
		if target == "" {
			continue
		}
		switch p := int(s.Priority); {
		case lowest >= 0 && p > lowest:
			continue
		case p < lowest:
			ms = ms[:0]
			fallthrough
		default:
			lowest = p
		}
		hostport := net.JoinHostPort(target, strconv.Itoa(int(s.Port)))
		w := max(int(s.Weight), 1)
		if i := slices.IndexFunc(ms, func(m wsredirect.Member) bool { return m.ID == hostport }); i >= 0 {
			ms[i].Weight += w
			continue
		}
		m := wsredirect.Member{ID: hostport, URL: scheme + "://" + hostport + path, Weight: w}
		if err := m.Check(now); err != nil {
			bad = append(bad, fmt.Errorf("SRV %d %d %d %q: %w", s.Priority, s.Weight, s.Port, s.Target, err))
			continue
		}
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b wsredirect.Member) int { return strings.Compare(a.ID, b.ID) })
	return ms, bad
}

// merge returns the members to set when DNS gives next and current are in
// force, both sorted by ID: next with current's drain fields for the IDs in
// both. changed is false when next has the IDs, URLs and weights of current,
// and nothing need be set.
func merge(current, next []wsredirect.Member) (out []wsredirect.Member, changed bool) {
	same := func(a, b wsredirect.Member) bool { return a.ID == b.ID && a.URL == b.URL && a.Weight == b.Weight }
	if slices.EqualFunc(current, next, same) {
		return current, false
	}
	out = slices.Clone(next)
	for i := range out {
		j, ok := slices.BinarySearchFunc(current, out[i].ID, memberids.ByID)
		if ok {
			out[i].DrainingSince, out[i].DrainRamp = current[j].DrainingSince, current[j].DrainRamp
		}
	}
	return out, true
}
