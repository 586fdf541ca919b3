package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/wsredirect/wsredirect"
)

//go:embed web
var webFiles embed.FS

// frontDoor is the fleet's entry point: it serves the page and the control
// API, and runs the nodes' Shard rule without being a member, so it sends
// every WebSocket on to its room's node: a 307 to clients that follow one,
// a 4307 close frame to browsers.
type frontDoor struct {
	url string // http://127.0.0.1:port
	mw  *wsredirect.Middleware
	srv *http.Server
	f   *fleet
}

func startFrontDoor(f *fleet, ln net.Listener, url string, members []wsredirect.Member) (*frontDoor, error) {
	mw, err := wsredirect.New(wsredirect.Options{
		Self:    url,
		Members: members,
		Rules:   []wsredirect.Rule{wsredirect.Shard(wsredirect.PathValueKey("room"))},
		Origins: f.origins,
	})
	if err != nil {
		return nil, err
	}
	d := &frontDoor{url: url, mw: mw, f: f}
	web, _ := fs.Sub(webFiles, "web")
	mux := http.NewServeMux()
	mux.Handle("GET /", noCache(http.FileServerFS(web)))
	mux.Handle("GET /wsredirect.js", wsredirect.ScriptHandler())
	mux.Handle("GET /rooms/{room}", mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "connect with a WebSocket", http.StatusUpgradeRequired)
	})))
	mux.Handle("GET /debug/ring", ringHandler(mw, ""))
	mux.HandleFunc("GET /api/nodes", d.serveNodes)
	mux.HandleFunc("POST /api/nodes/{id}/drain", d.control(f.drain))
	mux.HandleFunc("POST /api/nodes/{id}/undrain", d.control(f.undrain))
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

// nodeView is a node as the page shows it.
type nodeView struct {
	ID       string    `json:"id"`
	URL      string    `json:"url"`
	Draining bool      `json:"draining"`
	Since    time.Time `json:"since,omitzero"`
	Conns    int       `json:"conns"` // open connections tracked by the node
	Rooms    int       `json:"rooms"` // rooms with a connection on the node
}

func (d *frontDoor) serveNodes(w http.ResponseWriter, r *http.Request) {
	var views []nodeView
	// The front door's view of drains is the control plane's: it is told
	// about every drain, like the nodes.
	for _, m := range d.mw.State().Members() {
		v := nodeView{ID: m.ID, URL: m.URL, Draining: !m.DrainingSince.IsZero(), Since: m.DrainingSince}
		if n := d.f.node(m.ID); n != nil {
			v.Conns, v.Rooms = n.mw.Tracked(), n.roomCount()
		}
		views = append(views, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"front": d.url, "nodes": views})
}

// control serves POST /api/nodes/{id}/drain and /undrain.
func (d *frontDoor) control(op func(context.Context, string) (int, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// Any page a browser has open may POST here; only ours may drain.
		if o := r.Header.Get("Origin"); o != "" && !slices.Contains(d.f.origins, o) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "origin not allowed"})
			return
		}
		id := r.PathValue("id")
		if d.f.node(id) == nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no node " + id})
			return
		}
		// Not the request's context: a page closed mid-drain must not
		// leave half the connections moved.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		moved, err := op(ctx, id)
		switch {
		case errors.Is(err, errLastNode):
			writeJSON(w, http.StatusConflict, map[string]string{"error": id + ": " + err.Error()})
		case err != nil:
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		default:
			writeJSON(w, http.StatusOK, map[string]any{"node": id, "moved": moved})
		}
	}
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
