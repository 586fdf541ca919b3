package wsredirect

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"time"
)

// script is the browser helper: an ES module exporting RedirectingWebSocket,
// a WebSocket that follows the close-code redirects this package sends.
//
//go:embed js/wsredirect.js
var script []byte

// scriptETag changes whenever the embedded file does, so a revalidation
// after an upgrade of this package fetches the new helper.
var scriptETag = func() string {
	sum := sha256.Sum256(script)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}()

// ScriptHandler serves the JavaScript helper, an ES module with no
// dependencies that exports RedirectingWebSocket: a WebSocket with the same
// API that keeps redirect-only connections from the application and
// reconnects where a 4307 or 4503 close frame says (package wire; a live
// move waits a random delay first). Give it the app's subprotocols when the
// app has some: it then offers the marker subprotocol too and tells a
// redirect at open. Without them it does not offer the marker, since
// Chromium fails a handshake whose offered subprotocols the server ignores
// (Firefox opens it), and holds back open up to 50 ms to see whether a
// redirect close follows. It answers GET
// and HEAD on any path with the file, "Cache-Control: no-cache" and an ETag,
// so browsers revalidate rather than run a stale copy. Mount it where pages
// can import it:
//
//	mux.Handle("GET /wsredirect.js", wsredirect.ScriptHandler())
//
// and use it in a page:
//
//	<script type="module">
//	import { RedirectingWebSocket } from "/wsredirect.js";
//	const ws = new RedirectingWebSocket("wss://chat.example.com/rooms/42?room=42", ["chat.v1"]);
//	ws.onmessage = (e) => console.log(e.data);
//	ws.addEventListener("redirect", (e) => console.log("moved to", e.detail.to));
//	</script>
//
// A page of another origin may import it (the file is served with
// "Access-Control-Allow-Origin: *"); its WebSockets then need two more
// things: its origin in Options.Origins, for the middleware's close-frame
// answers, and in the app's own upgrader's CheckOrigin, for the connection
// it serves.
//
// The file is also in this module's source tree as js/wsredirect.js, for
// bundlers or copying.
func ScriptHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "wsredirect: the script takes GET", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/javascript; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", scriptETag)
		h.Set("X-Content-Type-Options", "nosniff")
		// A module imported by a page of another origin needs CORS. The
		// file is public and the same for everyone, and "*" never carries
		// credentials, so any origin may have it.
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Cross-Origin-Resource-Policy", "cross-origin")
		// ServeContent answers If-None-Match with 304 and handles HEAD and
		// ranges; a zero modtime sends no Last-Modified.
		http.ServeContent(w, r, "wsredirect.js", time.Time{}, bytes.NewReader(script))
	})
}
