package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wsredirect/wsredirect"
	"github.com/wsredirect/wsredirect/etcd"
	"github.com/wsredirect/wsredirect/prom"
)

//go:embed web
var webFiles embed.FS

// frontDoor is the fleet's entry point: it serves the page and the control
// API, and runs the nodes' Shard rule without being a member, so it sends
// every WebSocket on to its room's node: a 307 to clients that follow one,
// a 4307 close frame to browsers. It follows the fleet in etcd with a
// watch-only source.
type frontDoor struct {
	url       string // http://127.0.0.1:port
	mw        *wsredirect.Middleware
	src       *etcd.Source
	srv       *http.Server
	f         *fleet
	redirects atomic.Uint64
}

// roomsURL is the WebSocket URL of the front door's rooms, a room's name
// to follow.
func (d *frontDoor) roomsURL() string { return "ws" + strings.TrimPrefix(d.url, "http") + "/rooms/" }

func startFrontDoor(ctx context.Context, f *fleet, ln net.Listener, url string) (*frontDoor, error) {
	d := &frontDoor{url: url, f: f}
	log := f.log.With("node", "front")
	members, err := etcd.Members(ctx, f.cli, f.cfg.prefix)
	if err != nil {
		return nil, err
	}
	metrics := prom.New()
	mw, err := wsredirect.New(wsredirect.Options{
		Self:    url,
		Members: members,
		Rules:   []wsredirect.Rule{wsredirect.Shard(wsredirect.PathValueKey("room"))},
		Origins: f.origins,
		OnDecision: func(r *http.Request, dec wsredirect.Decision) {
			metrics.OnDecision(r, dec)
			if dec.Action == wsredirect.Redirect {
				d.redirects.Add(1)
			}
			f.countRedirect(dec)
		},
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	d.mw = mw
	metrics.Watch(mw)
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics)
	if d.src, err = etcd.Start(ctx, mw, etcd.Options{Client: f.cli, Prefix: f.cfg.prefix, Logger: log}); err != nil {
		return nil, err
	}
	web, _ := fs.Sub(webFiles, "web")
	mux := http.NewServeMux()
	mux.Handle("GET /", noCache(http.FileServerFS(web)))
	mux.Handle("GET /wsredirect.js", wsredirect.ScriptHandler())
	mux.Handle("GET /rooms/{room}", mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "connect with a WebSocket", http.StatusUpgradeRequired)
	})))
	mux.Handle("GET /debug/ring", ringHandler(mw, ""))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /api/nodes", d.serveNodes)
	mux.HandleFunc("GET /api/stats", d.serveStats)
	mux.HandleFunc("POST /api/nodes/{id}/drain", d.control(f.drain))
	mux.HandleFunc("POST /api/nodes/{id}/undrain", d.control(f.undrain))
	mux.HandleFunc("POST /api/nodes/{id}/crash", d.control(func(ctx context.Context, id string) (int, error) {
		return 0, f.crash(ctx, id)
	}))
	mux.HandleFunc("POST /api/nodes/{id}/restart", d.control(f.restart))
	mux.HandleFunc("POST /api/clients", d.serveClients)
	// Everything else under /api/ answers in JSON too, naming what there is.
	noAPI := func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no API " + r.Method + " " + r.URL.Path +
			": there are GET /api/nodes, GET /api/stats, POST /api/nodes/{id}/drain, /undrain, /crash, /restart and POST /api/clients"})
	}
	mux.HandleFunc("GET /api/", noAPI)
	mux.HandleFunc("POST /api/", noAPI)
	d.srv = newServer(mux)
	serve(d.srv, ln)
	return d, nil
}

// noCache makes browsers revalidate the page's files, so a rebuilt demo
// never runs a stale script.
func noCache(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

// fleetView is the answer of GET /api/nodes.
type fleetView struct {
	Front    string     `json:"front"`
	Etcd     string     `json:"etcd"`     // endpoints, comma-separated
	Embedded bool       `json:"embedded"` // etcd runs in the demo
	Prefix   string     `json:"prefix"`
	TTL      float64    `json:"ttl"`    // seconds
	Settle   float64    `json:"settle"` // seconds between a drain's record and its effect
	Clients  int        `json:"clients"`
	Nodes    []nodeView `json:"nodes"`
}

// nodeView is a node as the page shows it.
type nodeView struct {
	ID      string `json:"id"`
	URL     string `json:"url"`
	Metrics string `json:"metrics"`
	// State is serving, draining, down (crashed, etcd still lists it) or
	// gone (crashed, its lease expired).
	State    string    `json:"state"`
	Up       bool      `json:"up"`
	Listed   bool      `json:"listed"` // the front door's members have it: etcd lists it
	Draining bool      `json:"draining"`
	Since    time.Time `json:"since,omitzero"`
	Conns    int       `json:"conns"`               // open connections tracked by the node
	Rooms    int       `json:"rooms"`               // rooms with a connection on the node
	Lease    float64   `json:"leaseLeft,omitempty"` // seconds until a crashed node's lease expires
	Op       *opView   `json:"op,omitempty"`
}

// opView is the last operation on a node.
type opView struct {
	Kind      string  `json:"kind"`
	Phase     string  `json:"phase"`
	Active    bool    `json:"active"`
	In        float64 `json:"in,omitempty"`   // seconds until a drain takes effect
	Ramp      float64 `json:"ramp,omitempty"` // seconds a drain takes to hand every room off
	Moved     int     `json:"moved"`
	Cut       int     `json:"cut"`
	Remaining int     `json:"remaining"`
	Took      float64 `json:"took"` // seconds, so far or in all
	Age       float64 `json:"age"`  // seconds since it ended
	Error     string  `json:"error,omitempty"`
}

func (d *frontDoor) serveNodes(w http.ResponseWriter, r *http.Request) {
	f := d.f
	v := fleetView{
		Front: d.url, Etcd: strings.Join(f.endpoints, ","), Embedded: f.embedded != nil, Prefix: f.cfg.prefix,
		TTL: f.cfg.ttl.Seconds(), Settle: etcd.DefaultSettle.Seconds(), Clients: f.bots.count(),
	}
	now := time.Now()
	for _, n := range f.nodes {
		v.Nodes = append(v.Nodes, n.view(now))
	}
	writeJSON(w, http.StatusOK, v)
}

// view is the node as the page shows it; drains and membership are the
// front door's view, which is etcd's as far as it has heard.
func (n *node) view(now time.Time) nodeView {
	v := nodeView{ID: n.id, URL: n.url, Metrics: n.httpURL() + "/metrics"}
	m, listed := n.f.member(n.id)
	v.Listed = listed
	v.Draining, v.Since = !m.DrainingSince.IsZero(), m.DrainingSince
	n.mu.Lock()
	defer n.mu.Unlock()
	if in := n.inst; in != nil {
		v.Up = true
		v.Conns, v.Rooms = in.mw.Tracked(), in.roomCount()
	} else if listed {
		v.Lease = max(0, n.leaseEnds.Sub(now).Seconds())
	}
	switch {
	case v.Up && v.Draining:
		v.State = "draining"
	case v.Up:
		v.State = "serving"
	case listed:
		v.State = "down"
	default:
		v.State = "gone"
	}
	if o := n.op; o != nil {
		ov := &opView{Kind: o.Kind, Phase: o.Phase, Active: o.Ended.IsZero(), Ramp: o.Ramp.Seconds(),
			Moved: o.Moved, Cut: o.Cut, Remaining: o.Remaining, Error: o.Err}
		if ov.Active {
			ov.Took = now.Sub(o.Began).Seconds()
			if o.Phase == "settling" {
				ov.In = max(0, o.Since.Sub(now).Seconds())
			}
		} else {
			ov.Took, ov.Age = o.Ended.Sub(o.Began).Seconds(), now.Sub(o.Ended).Seconds()
		}
		v.Op = ov
	}
	return v
}

func (d *frontDoor) serveStats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, d.f.stats.view())
}

// allowed refuses a POST from another page: any page a browser has open
// may POST here, only ours may drain.
func (d *frontDoor) allowed(w http.ResponseWriter, r *http.Request) bool {
	if !d.f.originAllowed(r) {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "origin not allowed"})
		return false
	}
	return true
}

// control serves POST /api/nodes/{id}/drain, /undrain, /crash and
// /restart. It answers when the operation is done: a drain once its
// connections moved. The page follows its progress on /api/nodes.
func (d *frontDoor) control(op func(context.Context, string) (int, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !d.allowed(w, r) {
			return
		}
		id := r.PathValue("id")
		if d.f.node(id) == nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no node " + id})
			return
		}
		// Not the request's context: a page closed mid-drain must not
		// leave half the connections moved. The fleet's ends at shutdown.
		ctx, cancel := context.WithTimeout(d.f.ctx, opTimeout)
		defer cancel()
		moved, err := op(ctx, id)
		switch {
		case errors.Is(err, errLastNode), errors.Is(err, errBusy), errors.Is(err, errDown), errors.Is(err, errUp), errors.Is(err, errClosing):
			writeJSON(w, http.StatusConflict, map[string]string{"error": id + ": " + err.Error()})
		case err != nil:
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		default:
			writeJSON(w, http.StatusOK, map[string]any{"node": id, "moved": moved})
		}
	}
}

// serveClients serves POST /api/clients?add=N (N may be negative, or
// "all" with remove): simulated Go clients that join rooms through the
// front door, so the charts have something to show.
func (d *frontDoor) serveClients(w http.ResponseWriter, r *http.Request) {
	if !d.allowed(w, r) {
		return
	}
	if r.URL.Query().Get("remove") == "all" {
		d.f.bots.removeAll()
	} else {
		k, err := strconv.Atoi(r.URL.Query().Get("add"))
		if err != nil || k < 1 || k > maxBots {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "add=N, 1 to " + strconv.Itoa(maxBots)})
			return
		}
		d.f.bots.add(k)
	}
	writeJSON(w, http.StatusOK, map[string]int{"clients": d.f.bots.count()})
}

// memberView is a member as /debug/ring shows it.
type memberView struct {
	ID       string    `json:"id"`
	URL      string    `json:"url"`
	Weight   int       `json:"weight"`
	Draining bool      `json:"draining"`
	Since    time.Time `json:"since,omitzero"`
	Ramp     string    `json:"ramp,omitempty"`
	Fraction float64   `json:"fraction"` // share of its keys handed off now
}

// ringView is the answer of /debug/ring.
type ringView struct {
	Self    string       `json:"self"`   // this node's member ID; "" on the front door
	Member  bool         `json:"member"` // whether this server is a member
	Members []memberView `json:"members"`
	Key     string       `json:"key,omitempty"`
	// Owner serves new connections for Key now, drains applied.
	Owner string `json:"owner,omitempty"`
}

// ringHandler serves GET /debug/ring: the membership mw decides by, and
// with ?key=ROOM where a new connection to that room goes.
func ringHandler(mw *wsredirect.Middleware, self string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := mw.State()
		now := time.Now()
		v := ringView{Self: self}
		for _, m := range st.Members() {
			if t, err := wsredirect.ParseTarget(m.URL); err == nil && t.Equal(st.Self()) {
				v.Member = true
			}
			mv := memberView{ID: m.ID, URL: m.URL, Weight: m.Weight, Since: m.DrainingSince}
			if !m.DrainingSince.IsZero() {
				mv.Draining, mv.Fraction = true, m.DrainFraction(now)
				if m.DrainRamp > 0 {
					mv.Ramp = m.DrainRamp.String()
				}
			}
			v.Members = append(v.Members, mv)
		}
		if key := r.URL.Query().Get("key"); key != "" {
			v.Key = key
			v.Owner = ownerNow(mw, key)
		}
		writeJSON(w, http.StatusOK, v)
	})
}

// ownerNow returns the member a new connection to room would be served by,
// drains applied, or "" when none can take it.
func ownerNow(mw *wsredirect.Middleware, room string) string {
	if m, ok := mw.State().Owner(room); ok {
		return m.ID
	}
	return ""
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
