package wsredirect

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/wsredirect/wsredirect/wire"
)

// ResolveHandler answers a plain GET with where a WebSocket opened on the
// same path and query would be sent, so a page can ask first and connect
// once (the negotiate pattern):
//
//	200 {"url":"wss://b.example.com/rooms/42?room=42"}   a rule picked a target, this node included
//	200 {"url":null}                                       nothing decided: connect to the URL asked about
//	503 {"retryAfter":5}, Retry-After: 5                   no node can take the connection now
//
// The rules see the GET as they would see the upgrade. Mount it under a
// prefix of its own:
//
//	mux.Handle("/resolve/", http.StripPrefix("/resolve", mw.ResolveHandler()))
//
// so GET /resolve/rooms/42?room=42 resolves /rooms/42?room=42. Targets use
// ws/wss whatever Options.HTTPLocation says. Pages on the Options.Origins
// may read the answer across origins (Access-Control-Allow-Origin).
func (m *Middleware) ResolveHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "wsredirect: resolve takes GET", http.StatusMethodNotAllowed)
			return
		}
		s := m.state.Load()
		d := s.decide(r)
		h := w.Header()
		if o := r.Header["Origin"]; len(s.origins) > 0 && len(o) == 1 && s.originAllowed(r) {
			// A page on an allowed origin may read the answer.
			h.Set("Access-Control-Allow-Origin", o[0])
			h.Add("Vary", "Origin")
		}
		h["Cache-Control"] = noStore
		h.Set("Content-Type", "application/json")
		var body struct {
			URL        *string `json:"url,omitempty"`
			RetryAfter *int64  `json:"retryAfter,omitempty"`
		}
		status := http.StatusOK
		switch {
		case d.Action == Refuse:
			status = d.Status
			secs := wire.RetrySeconds(d.RetryAfter)
			body.RetryAfter = &secs
			h.Set("Retry-After", strconv.FormatInt(secs, 10))
		case d.Target != nil:
			// The path to resolve is below the handler's own prefix, in
			// r.URL, not the request line's.
			if d.Path == "" {
				d.Path = r.URL.EscapedPath()
			}
			loc := location(r, d, false)
			body.URL = &loc
		}
		w.WriteHeader(status)
		if r.Method == http.MethodHead {
			return
		}
		if body.URL == nil && body.RetryAfter == nil {
			w.Write([]byte(`{"url":null}` + "\n"))
			return
		}
		json.NewEncoder(w).Encode(body)
	})
}
