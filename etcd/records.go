package etcd

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/wsredirect/wsredirect"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultPrefix is the key prefix used when Options.Prefix is empty.
const DefaultPrefix = "/wsredirect/"

// Key namespaces under the prefix.
const (
	membersDir = "members/"
	drainsDir  = "drains/"
)

// normPrefix returns the prefix keys live under: DefaultPrefix for "", and
// a slash added when p lacks one.
func normPrefix(p string) string {
	if p == "" {
		return DefaultPrefix
	}
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}

// memberRecord is the value of <prefix>members/<id>.
type memberRecord struct {
	URL    string `json:"url"`
	Weight int    `json:"weight,omitempty"`
}

// drainRecord is the value of <prefix>drains/<id>, in Go form.
type drainRecord struct {
	Since time.Time
	Ramp  time.Duration
}

// drainJSON is a drain record as stored: since in RFC 3339, ramp as a Go
// duration ("30s", "1m30s"; "" or absent for none).
type drainJSON struct {
	Since time.Time `json:"since"`
	Ramp  string    `json:"ramp,omitempty"`
}

func (d drainRecord) marshal() string {
	ramp := ""
	if d.Ramp != 0 {
		ramp = d.Ramp.String()
	}
	b, _ := json.Marshal(drainJSON{Since: d.Since.UTC(), Ramp: ramp})
	return string(b)
}

func (m memberRecord) marshal() string {
	b, _ := json.Marshal(m)
	return string(b)
}

// parseMember reads and checks a member record, and returns its URL as
// parsed. Unknown fields are allowed, so a newer writer may add some; what
// a node needs must be right.
func parseMember(id string, value []byte) (wsredirect.Member, *wsredirect.Target, error) {
	var r memberRecord
	if err := json.Unmarshal(value, &r); err != nil {
		return wsredirect.Member{}, nil, fmt.Errorf("not a member record %s: %v", `{"url":"ws://…","weight":1}`, err)
	}
	m := wsredirect.Member{ID: id, URL: r.URL, Weight: r.Weight}
	t, err := checkMember(m)
	return m, t, err
}

// checkMember is what SetMembers would refuse in a single member, checked
// record by record so one bad record does not hold up the others. It
// returns the member's URL as parsed.
func checkMember(m wsredirect.Member) (*wsredirect.Target, error) {
	if err := m.Check(time.Now()); err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "wsredirect: "))
	}
	return wsredirect.ParseTarget(m.URL) // cannot fail: Check parsed it
}

// parseDrain reads and checks a drain record. Drain records are written by
// hand, so unknown fields are refused: a misspelt "ramp" would otherwise
// hand off every key at once.
func parseDrain(value []byte) (drainRecord, error) {
	const want = `{"since":"<RFC 3339 time>","ramp":"<Go duration>"}`
	var j drainJSON
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return drainRecord{}, fmt.Errorf("not a drain record %s: %v", want, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return drainRecord{}, fmt.Errorf("not a drain record %s: data after the object", want)
	}
	if j.Since.IsZero() {
		return drainRecord{}, fmt.Errorf("drain record without since: want %s", want)
	}
	var d drainRecord
	d.Since = j.Since
	if j.Ramp != "" {
		var err error
		if d.Ramp, err = time.ParseDuration(j.Ramp); err != nil {
			return drainRecord{}, fmt.Errorf("drain record: ramp: %v", err)
		}
		if d.Ramp < 0 {
			return drainRecord{}, fmt.Errorf("drain record: negative ramp %s", j.Ramp)
		}
	}
	// What the middleware refuses in a drain (a start more than a day
	// ahead, a ramp over a day) skips this record rather than every set.
	probe := wsredirect.Member{ID: "drain", URL: "ws://drain.invalid", DrainingSince: d.Since, DrainRamp: d.Ramp}
	if err := probe.Check(time.Now()); err != nil {
		_, why, _ := strings.Cut(err.Error(), "member drain: ")
		return drainRecord{}, fmt.Errorf("drain record: %s", why)
	}
	return d, nil
}

// view is what etcd says at one revision, records already checked.
type view struct {
	rev     int64
	members map[string]memberEntry
	drains  map[string]drainRecord
}

// memberEntry is a checked member record, its URL as parsed, and when its
// key was created, which breaks ties between members claiming the same URL
// the same way on every node.
type memberEntry struct {
	m       wsredirect.Member
	target  *wsredirect.Target
	created int64
}

func newView() *view {
	return &view{members: map[string]memberEntry{}, drains: map[string]drainRecord{}}
}

// set records key's new value; a bad record is reported and the key
// dropped, as if deleted. Keys outside the two namespaces are ignored.
func (v *view) set(prefix, key string, value []byte, created int64, bad func(key string, err error)) {
	rest := strings.TrimPrefix(key, prefix)
	switch {
	case strings.HasPrefix(rest, membersDir):
		id := strings.TrimPrefix(rest, membersDir)
		m, t, err := parseMember(id, value)
		if err != nil {
			delete(v.members, id)
			bad(key, err)
			return
		}
		v.members[id] = memberEntry{m, t, created}
	case strings.HasPrefix(rest, drainsDir):
		id := strings.TrimPrefix(rest, drainsDir)
		d, err := parseDrain(value)
		if err != nil {
			delete(v.drains, id)
			bad(key, err)
			return
		}
		v.drains[id] = d
	}
}

func (v *view) del(prefix, key string) {
	rest := strings.TrimPrefix(key, prefix)
	switch {
	case strings.HasPrefix(rest, membersDir):
		delete(v.members, strings.TrimPrefix(rest, membersDir))
	case strings.HasPrefix(rest, drainsDir):
		delete(v.drains, strings.TrimPrefix(rest, drainsDir))
	}
}

// fleet returns the member set v stands for, sorted by ID, drains applied
// to the members they name (others wait until their member registers):
// v.drains, or what the Source holds in force. Of members claiming the
// same URL, the one registered first is kept and the others are reported.
func (v *view) fleet(drains map[string]drainRecord, dup func(id, kept string)) []wsredirect.Member {
	ids := make([]string, 0, len(v.members))
	for id := range v.members {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		return cmp.Or(cmp.Compare(v.members[a].created, v.members[b].created), strings.Compare(a, b))
	})
	out := make([]wsredirect.Member, 0, len(ids))
	claimed := make(map[string]string, len(ids)) // URL → the member kept
	for _, id := range ids {
		e := v.members[id]
		if kept, ok := claimed[e.target.String()]; ok {
			dup(id, kept)
			continue
		}
		claimed[e.target.String()] = id
		m := e.m
		if d, ok := drains[id]; ok {
			m.DrainingSince, m.DrainRamp = d.Since, d.Ramp
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b wsredirect.Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// sameMembers reports whether a and b, both sorted by ID, are the same
// fleet, a zero weight counting as 1.
func sameMembers(a, b []wsredirect.Member) bool {
	return slices.EqualFunc(a, b, func(x, y wsredirect.Member) bool {
		return x.ID == y.ID && x.URL == y.URL && max(x.Weight, 1) == max(y.Weight, 1) &&
			x.DrainingSince.Equal(y.DrainingSince) && x.DrainRamp == y.DrainRamp
	})
}

// Members reads the fleet registered under prefix (DefaultPrefix when
// empty), drains included, as a [Source] would apply it: for
// Options.Members when building a middleware before [Start], which a Shard
// rule needs. Bad records are left out; a fleet without members is an
// error.
func Members(ctx context.Context, c *clientv3.Client, prefix string) ([]wsredirect.Member, error) {
	if c == nil {
		return nil, errors.New("wsredirect/etcd: Members: nil client")
	}
	prefix = normPrefix(prefix)
	v, err := readView(ctx, c, prefix, func(string, error) {})
	if err != nil {
		return nil, fmt.Errorf("wsredirect/etcd: Members: %w", err)
	}
	members := v.fleet(v.drains, func(string, string) {})
	if len(members) == 0 {
		return nil, fmt.Errorf("wsredirect/etcd: Members: no member registered under %s at revision %d", prefix+membersDir, v.rev)
	}
	return members, nil
}

// readView reads everything under prefix, at etcd's current revision; bad
// is told of each bad record.
func readView(ctx context.Context, c *clientv3.Client, prefix string, bad func(key string, err error)) (*view, error) {
	resp, err := c.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	v := newView()
	v.rev = resp.Header.Revision
	for _, kv := range resp.Kvs {
		v.set(prefix, string(kv.Key), kv.Value, kv.CreateRevision, bad)
	}
	return v, nil
}
