// wsredirect.js: a WebSocket that follows wsredirect's close-code redirects.
//
// Browsers never follow a 3xx on a WebSocket handshake (the fetch behind it
// uses redirect mode "error"), so a wsredirect server accepts the upgrade and
// closes it at once with code 4307 and the target in the reason; script can
// read that. The wire format, defined in the Go package wire (wire/wire.go)
// and pinned for Go and for this file's test (wsredirect.test.mjs) alike by
// wire/testdata/vectors.json, is:
//
//	4307 "wsr1 <url>"    go to url
//	4307 "wsr1 +"        go to the url in the "wsr1 <url>" text message just
//	                     before (only on a socket that is not the app's: see below)
//	4307 "wsr1 =<base>"  live drain: same path and query on base
//	4503 "wsr1 retry=N"  wait N seconds, then dial the original url again
//	text "wsr1 move"     the cue of a live move: close, and the server's answer
//	                     to that close (one of the above) says where to go
//
// Usage (no build step; the Go server can serve this file with ScriptHandler):
//
//	import { RedirectingWebSocket } from "/wsredirect.js";
//	const ws = new RedirectingWebSocket("wss://chat.example.com/rooms/42?room=42", ["chat.v1"]);
//	ws.onmessage = (e) => console.log(e.data);
//	ws.addEventListener("redirect", (e) => console.log("moved", e.detail.from, "->", e.detail.to));
//	ws.addEventListener("error", (e) => e.detail?.unsent.length && console.warn(e.detail.reason, e.detail.unsent));
//
// Moves the app does not notice. Once the app has seen "open", its view
// stays OPEN while the helper follows a redirect or retry: no close, a
// "redirect" event, then "open" again for the new connection. What the app
// sends meanwhile is queued. The delivery contract, which the Go client
// follows too:
//
//   - Every data message that arrives on the app's socket reaches the app,
//     in order, whatever it says, "wsr1 " messages included; the only one
//     the helper acts on is the cue (below), and even the cue reaches the
//     app unless the server proves it sent it. A socket is the app's once
//     it proves not to be a redirect stub: at open when the marker was
//     offered and not selected; else at its first app message, or settleMs
//     after open, whichever comes first. Until then (and on a stub, the
//     marker selected, whose messages never reach the app) a "wsr1 <url>"
//     message may be the target of a "wsr1 +" close and is held: for
//     settleMs after open at most, then it is the app's like any other.
//   - A message sent before the helper sees the move goes out on the old
//     connection and reaches the old node's app (but see the gap below):
//     the server keeps reading until the close handshake completes. The
//     helper sees the move when it reads the cue (it stops sending and
//     closes the socket itself at once), or when the socket leaves OPEN (a
//     browser turns it CLOSING on the server's close frame, before the
//     close event), whichever comes first.
//   - A message sent from then on is queued, and sent in order on the new
//     connection as soon as it counts as the app's, before "open" is
//     dispatched and so before anything sent later: it reaches the new
//     node's app. The page's sends are never queued on a socket that is
//     the app's but for a move: no message it receives holds them.
//   - Each message reaches exactly one node's app, or is reported unsent:
//     an "error" event's detail is { reason, unsent }, unsent being the
//     data given to send(), in order. reason "queue full": send() found no
//     room (see maxQueuedMessages); the connection goes on. When the helper
//     gives up with messages queued, "close" follows, and reason is "move
//     failed" (a redirect or retry it cannot follow: hop cap, retry cap, a
//     wait longer than maxRetryDelayMs, a bad target, a veto right after a
//     veto, a new connection that fails) or "closed" (the connection ended
//     without a move, or the app closed it).
//
// The cue. A server that writes in order with its app (the Go middleware's
// GorillaConn with a send func) sends "wsr1 move" before it moves a
// connection. The helper then holds the cue (the app does not see it yet),
// stops sending (sends queue), closes the socket with 1000 and holds what
// arrives until the close completes (Node's ws package delivers such
// messages; browsers drop what arrives on a closing socket). The server
// answers that close with
// the move's close frame (4307, or 4503), which is what the close event
// reports (RFC 6455 §7.1.5: the code of the first close frame received):
// the helper drops the cue, delivers what it held after it and follows the
// move as any close-frame move. Everything the page sent before it read the
// cue went out ahead of its own close frame, and the server reads until
// that frame: nothing is lost at the boundary.
//
// The gap, when the server's close frame comes first (no cue): a browser
// sends from its network process, which answers a close frame at once,
// while the page learns of it (readyState CLOSING) a moment later; a
// message sent in that moment is dropped by the browser without a word
// (Chromium, sending 20 messages every 3 ms: 10 to 45 lost in 8 moves of
// 30 and 1,311 in a ninth, e2e/stream_test.go; none in 30 cued moves). The
// cue closes the gap. Messages from the server that arrive after the page
// closed are dropped by the browser, as on any socket closing: the server
// app's cue to stop writing is the middleware's call of its send with the
// cue.
//
// What a message relayed from another client (a chat echoes text verbatim)
// can and cannot do. Only the server's WebSocket layer writes close frames,
// so a move's target, a retry's wait and the memory of redirects come from
// close frames alone; a data message can be any text another user typed.
// Such a message cannot move the helper anywhere, make it wait, end it,
// hold the page's sends or the app's messages, or leave anything in the
// memory: "wsr1 =<base>", "wsr1 retry=N", "wsr1 <url>" and "wsr1 +" reach
// the app as the text they are. A forged cue can cost one reconnect: the
// server answers the helper's close with the usual echo (1000, or 1005 for
// an empty close; or no close within 5 s), so the helper delivers the cue
// and what it held as ordinary messages, in order, and reconnects at once
// to the URL it is on, queued sends first, unseen by the app (no
// "redirect", "close", "error" or "open"; the memory is left as it was).
// For 60 s after a cue proves false, cues are ordinary messages, so a
// stream of them costs one reconnect a minute; a genuine cue in that minute
// is one too, and its move comes by the close frame (with the gap above).
// What the server relays between the cue and its reading of the helper's
// close is dropped by a browser (and by Node's built-in WebSocket) as it
// reaches a closing socket, and what it relays before the new connection
// joins goes to no socket: the server's app must replay it, as after any
// reconnect.
//
// checkRedirect (see the options) vets every target before it is dialled:
// a close-code move, a resolver's answer, a remembered URL.

export const SUBPROTOCOL = "wsredirect.v1";
export const CLOSE_REDIRECT = 4307;
export const CLOSE_RETRY = 4503;
export const CUE = "wsr1 move"; // wire.Cue
const V1 = "wsr1 ";
const SEE_MESSAGE = V1 + "+";
const SAME_PATH = V1 + "=";
const RETRY = V1 + "retry=";
const MAX_RETRY = 86400; // wire.MaxRetry, a day: a reason asking for more is refused
const MAX_TIMER = 2 ** 31 - 1; // setTimeout's longest delay in ms: Node fires a longer one at once, browsers wrap it
export const CUE_ANSWER_MS = 5000; // wire.CueAnswerWait: how long a cue's close waits for the server's answer
export const CUE_QUIET_MS = 60000; // wire.CueQuiet: how long cues are ordinary messages after one proved false
const TYPES = ["open", "message", "close", "error", "redirect"];
const MEMORY_KEY = "wsredirect.remembered"; // the storage item holding the memory of redirects
export const MAX_REMEMBERED = 100; // URLs the memory holds; one more forgets the one stored longest ago

// parseRedirect mirrors Go's ParseRedirect: the target as sent (still to be
// resolved and vetted), or null when the reason is not version 1 or the
// target is missing. A move ("wsr1 =<base>") keeps the path and query of
// current, which must be an absolute URL with a host ("scheme://host...").
export function parseRedirect(reason, lastMessage, current) {
  let target = null;
  if (reason === SEE_MESSAGE) {
    if (isRedirectMessage(lastMessage)) target = lastMessage.slice(V1.length);
  } else if (reason.startsWith(SAME_PATH)) {
    const base = reason.slice(SAME_PATH.length).replace(/\/$/, "");
    const u = hostURL(current);
    if (base && u) target = base + (u.pathname || "/") + u.search;
  } else if (reason.startsWith(V1)) {
    target = reason.slice(V1.length);
  }
  return target || null;
}

// hostURL parses the URL whose path and query a move keeps, refusing what
// Go's ParseRedirect refuses: null unless it is absolute and names a host
// after "//" (WHATWG would read "ws:/x" as ws://x/; "file:///x" has none).
function hostURL(url) {
  if (typeof url !== "string" || !/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) return null;
  try {
    const u = new URL(url);
    return u.host ? u : null;
  } catch {
    return null;
  }
}

// isCue mirrors Go's IsCue: whether a text message is the cue of a live
// move, exactly "wsr1 move".
export function isCue(message) {
  return message === CUE;
}

// isRedirectMessage mirrors Go's IsRedirectMessage: whether a text message
// may be the target of a "wsr1 +" close that follows. It matters only on a
// socket that is not (yet) the app's; on the app's, it is an app message.
export function isRedirectMessage(message) {
  return typeof message === "string" && message.startsWith(V1);
}

// parseRetry mirrors Go's ParseRetry: the delay in whole seconds of a 4503
// reason (at most six digits, at most a day), or null.
export function parseRetry(reason) {
  if (!reason.startsWith(RETRY)) return null;
  const s = reason.slice(RETRY.length);
  if (!/^\d{1,6}$/.test(s)) return null;
  const secs = Number(s);
  return secs <= MAX_RETRY ? secs : null;
}

// answersCue reports whether the close that ended a cued socket is the
// server's answer to it: a move or retry whose reason parses. Only the
// server writes close frames, so that proves the cue was the server's.
function answersCue(e, current) {
  if (e.code === CLOSE_REDIRECT) return parseRedirect(e.reason, null, current) !== null;
  return e.code === CLOSE_RETRY && parseRetry(e.reason) !== null;
}

// wsURL resolves url against base and maps http(s) to ws(s), as browsers do
// for new WebSocket(url); anything but a ws(s) URL is refused with null.
function wsURL(url, base) {
  let u;
  try { u = new URL(url, base); } catch { return null; }
  if (u.protocol === "http:" || u.protocol === "https:") u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  if (u.protocol !== "ws:" && u.protocol !== "wss:") return null;
  u.hash = "";
  return u.href;
}

// retryAfter reads how long a resolver's 503 asks to wait, in seconds: the
// body's retryAfter, else the Retry-After header (seconds or an HTTP date,
// RFC 9110 §10.2.3); null when neither is a number of seconds >= 0.
function retryAfter(body, headers) {
  const n = body.retryAfter;
  if (typeof n === "number" && n >= 0) return n; // Infinity too: over any cap
  const h = headers?.get("Retry-After")?.trim();
  if (!h) return null;
  if (/^\d+$/.test(h)) return Number(h);
  const at = /[a-z]/i.test(h) ? Date.parse(h) : NaN; // a date names its day or month
  return Number.isNaN(at) ? null : Math.max(0, (at - Date.now()) / 1000);
}

// byteLength is what data weighs on the wire: a string as UTF-8 (a lone
// surrogate as U+FFFD, as send() encodes it), else its bytes.
function byteLength(data) {
  if (typeof data !== "string") return data?.byteLength ?? data?.size ?? 0;
  let n = data.length;
  for (let i = 0; i < data.length; i++) {
    const c = data.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c < 0xdc00 && (data.charCodeAt(i + 1) & 0xfc00) === 0xdc00) { n += 2; i++; }
    else n += 2;
  }
  return n;
}

// copy keeps a queued buffer as it was when sent, as send() does: the app
// may reuse it at once. Strings and Blobs cannot change.
function copy(data) {
  if (data instanceof ArrayBuffer) return data.slice(0);
  if (data instanceof DataView) return new DataView(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  if (ArrayBuffer.isView(data)) return data.slice();
  return data;
}

// inMemory holds the memory of redirects where sessionStorage is missing or
// refused (Node, a sandboxed frame): one store per WebSocket constructor,
// shared by every helper of the page or process that uses it, as
// sessionStorage would be. Per constructor, because a page or process has
// one, while each fake server of a test is one of its own.
const inMemory = new WeakMap();

function memoryStore(key) {
  let store = inMemory.get(key);
  if (!store) {
    const items = new Map();
    store = {
      getItem: (k) => items.get(k) ?? null,
      setItem: (k, v) => { items.set(k, String(v)); },
      removeItem: (k) => { items.delete(k); },
    };
    inMemory.set(key, store);
  }
  return store;
}

// defaultStorage is sessionStorage when it works, else the in-memory store
// of ctor. Reading the property itself throws where storage is denied.
function defaultStorage(ctor) {
  try {
    const s = globalThis.sessionStorage;
    if (s) {
      s.getItem(MEMORY_KEY);
      return s;
    }
  } catch { /* denied */ }
  return memoryStore(Object(ctor));
}

// Memory of redirects: where a chain that started at a URL ended, so the
// next connection to that URL dials there first. One storage item holds a
// JSON object { [url]: { to, at } }, at being Date.now() when stored. Every
// storage error reads as an empty memory: the memory is only a first guess.
function readMemory(storage) {
  try {
    const m = JSON.parse(storage.getItem(MEMORY_KEY) ?? "{}");
    return m && typeof m === "object" && !Array.isArray(m) ? m : {};
  } catch {
    return {};
  }
}

function writeMemory(storage, m) {
  try {
    if (Object.keys(m).length === 0) storage.removeItem(MEMORY_KEY);
    else storage.setItem(MEMORY_KEY, JSON.stringify(m));
  } catch { /* full or denied: not remembered */ }
}

// recall returns the target remembered for url less than ttlMs ago, or null.
function recall(storage, url, ttlMs) {
  const m = readMemory(storage);
  const e = Object.hasOwn(m, url) ? m[url] : null;
  if (!e || typeof e.to !== "string" || typeof e.at !== "number") return null;
  const age = Date.now() - e.at;
  return age >= 0 && age < ttlMs ? e.to : null;
}

// remember stores url -> to, forgetting expired entries and, past
// MAX_REMEMBERED, those stored longest ago.
function remember(storage, url, to, ttlMs) {
  const m = readMemory(storage);
  const now = Date.now();
  delete m[url];
  for (const [k, e] of Object.entries(m)) if (!(now - e?.at < ttlMs)) delete m[k];
  const keys = Object.keys(m).sort((a, b) => m[a].at - m[b].at);
  for (const k of keys.slice(0, Math.max(0, keys.length - (MAX_REMEMBERED - 1)))) delete m[k];
  m[url] = { to, at: now };
  writeMemory(storage, m);
}

// forget drops url's entry; with to, only while it still points there.
function forget(storage, url, to) {
  const m = readMemory(storage);
  if (!Object.hasOwn(m, url) || (to && m[url]?.to !== to)) return;
  delete m[url];
  writeMemory(storage, m);
}

const timeout = (ms) => Math.min(MAX_TIMER, Math.max(0, ms));
const sleep = (ms) => new Promise((r) => setTimeout(r, timeout(ms)));
const jitter = (ms) => Math.random() * ms;

export class RedirectingWebSocket extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  // options:
  //
  // maxHops (10): redirects followed in one chain. A chain ends only when
  // the app has been served, that is, when a socket delivered an app
  // message (as the Go client's Conn, which starts a new chain once a
  // message reached the app); a socket that merely counted as the app's
  // (it opened, and the app saw "open") does not end it. So a server that
  // accepts, holds and redirects again and again is followed maxHops times
  // at most. Then, as for any redirect it will not follow, the helper gives
  // up: "error", then "close" with the server's code (4307) and reason.
  //
  // maxRetries (5): 4503 waits in one chain before giving up the same way
  // (close code 4503). A 4503 sends the chain back to the first URL with a
  // fresh hop count, so a chain dials at most (maxRetries + 1) *
  // (maxHops + 1) times before an app message.
  //
  // maxRetryDelayMs (30000): the longest wait a server may ask for, as the
  // Go client's Dialer.MaxRetryDelay. Asking for more is refused, not
  // shortened (a shorter wait would only earn another refusal): a 4503
  // whose delay exceeds it is given up at once ("error", then "close" 4503);
  // a resolver's 503 whose retryAfter or Retry-After exceeds it is an answer
  // the helper cannot use, so it stops asking and dials the URL, where the
  // server's close code decides. A resolver's wait that is not a number of
  // seconds >= 0 (missing, negative, not a number) or is 0 is one second.
  //
  // backoffMs (500), maxBackoffMs (30000): the wait before reconnecting
  // after a socket that counted as the app's yet delivered nothing before
  // it was redirected or told to retry: backoffMs for the first such socket
  // of a chain, doubling for each next one, at most maxBackoffMs; each wait
  // is random in its upper half. A live move's jitter or a 4503's delay
  // applies instead when it is longer. Redirect stubs are followed at once.
  //
  // moveJitterMs (1000): upper bound of the random wait before a live move,
  // so a drained node's clients do not reconnect in one wave.
  //
  // retryJitterMs (1000): spread around a 4503's or a resolver's delay.
  //
  // resolve (none): URL prefix of the server's ResolveHandler, asked before
  // the first dial (again after a 503, at most maxRetries times).
  //
  // checkRedirect (none: every target is allowed): checkRedirect(url, from)
  // is called, with this as the helper, before the helper dials a target
  // it was sent to: a 4307 move (from a stub or a live move, cued or not;
  // url is the target resolved to an absolute ws: or wss: URL, from the
  // URL the socket was on), a resolver's answer and a remembered target
  // (from the URL given). Returning false (or throwing) vetoes it: a
  // resolver's answer or a remembered target is passed over for the URL
  // given; a move is not followed, and the helper reconnects at once, as
  // after a false cue, to the URL the socket was on, unseen by the app. If
  // that connection is redirected again before it delivered a message, a
  // veto of that redirect ends the connection ("error", "close" with the
  // server's code). A wss: target for a ws: URL is refused before it is
  // asked about; a 4503 is not asked about, as it returns to the URL given.
  //
  // offerSubprotocol (default: when protocols are given): offers
  // "wsredirect.v1", which tells a redirect at open; without it a socket
  // counts as the app's at its first app message, or settleMs after open.
  //
  // settleMs (50): how long after open a socket offered no marker may still
  // prove to be a redirect stub, by a redirect close; until then the app
  // sees no "open", sends queue, and a "wsr1 <url>" message is held as the
  // target such a close may name.
  //
  // maxQueuedMessages (1024), maxQueuedBytes (1 MiB): bounds of the queue
  // of messages sent during a move (see the top of this file); bytes count
  // a string as UTF-8. A send() with no room left is refused, as the Go
  // client's write fails with ErrQueueFull: the message is not queued, an
  // "error" event reports it at once, before send() returns (detail
  // { reason: "queue full", unsent: [data] }), and the queue and the
  // connection go on; no "close" follows. A later message that fits is
  // queued, so the new node may get a stream with holes: an app that needs
  // what reached the nodes to be a prefix of what it sent calls close() in
  // its listener, which reports the queue too ("closed") and makes further
  // send() calls throw.
  //
  // rememberMs (600000, 10 minutes): how long the URL a connection ended
  // on is remembered for the URL given to the constructor, when they
  // differ (a redirect, a live move or the resolver sent it there); the
  // next helper made for that URL dials the remembered URL first, skipping
  // the redirect (and the resolver) on reconnects. The server still
  // decides: a stale memory costs one more redirect, and the memory is
  // updated; a remembered URL whose socket closes before it counted as the
  // app's, with a code that is no redirect or retry (a network error, say),
  // is forgotten and the URL given is dialled as if nothing were
  // remembered, unseen by the app. An entry expires rememberMs after it was
  // stored, used or not; a connection that ends on the URL given clears
  // it. Only close frames and the resolver's answers are remembered, never
  // anything a data message said, nor a reconnect after a false cue or a
  // veto. At most MAX_REMEMBERED (100) URLs are kept, the oldest forgotten
  // first. They are kept in sessionStorage (item "wsredirect.remembered"),
  // so a page reload benefits, or where there is none in memory, for the
  // helpers using the same WebSocket constructor. wss is
  // never left for a remembered ws URL. The helper's remembered property is
  // the URL it dialled from memory (null: none, or it failed and the URL
  // given was dialled instead). 0 (or less): off, nothing is read or stored.
  //
  // storage (sessionStorage, else in memory): where to remember, an object
  // with getItem, setItem and removeItem (tests inject one).
  //
  // WebSocket (globalThis.WebSocket): the constructor to use: tests inject
  // one; in Node, the ws package's or the built-in one. A failed handshake
  // that fires "error" and no "close" (Node's built-in WebSocket,
  // nodejs/undici#3546) is taken as closed with 1006.
  constructor(url, protocols = [], options = {}) {
    super();
    this._opt = { maxHops: 10, maxRetries: 5, maxRetryDelayMs: 30000, backoffMs: 500, maxBackoffMs: 30000,
      moveJitterMs: 1000, retryJitterMs: 1000, settleMs: 50, resolve: null, checkRedirect: null,
      WebSocket: globalThis.WebSocket, maxQueuedMessages: 1024, maxQueuedBytes: 1 << 20, rememberMs: 600000,
      storage: null,
      // An option given as undefined keeps its default: maxHops: undefined
      // must not lift the cap.
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) };
    this._first = wsURL(url, globalThis.location?.href);
    if (!this._first) throw new SyntaxError(`RedirectingWebSocket: bad URL ${url}`);
    // Chromium fails a handshake that offered protocols when the server
    // selects none, so by default the marker rides only with the app's own
    // protocols, one of which its server must select anyway. It goes last,
    // so a server that picks the first protocol it knows picks the app's.
    const app = typeof protocols === "string" ? [protocols] : [...protocols];
    this._marked = this._opt.offerSubprotocol ?? app.length > 0;
    this._protocols = this._marked ? [...app, SUBPROTOCOL] : app;
    this.url = this._first;
    // URLs followed to reach the current connection, since the dial or
    // the last 4503, or since the last socket that delivered an app message.
    this.hops = [];
    this._ws = null;
    this._real = false; // the current socket is the app's, not a redirect stub
    this._served = false; // a socket delivered an app message since the last move
    this._idle = 0; // sockets of this chain that counted as the app's but delivered nothing
    this._state = RedirectingWebSocket.CONNECTING;
    this._opened = false; // the app has seen "open": a move keeps its view OPEN
    this._leaving = false; // a cue was read: the socket closes, sends queue
    this._moving = false; // a redirect or retry close came since a socket last counted as the app's
    this._vetoed = false; // checkRedirect vetoed a move since a socket last delivered a message
    this._cueFalseAt = -Infinity; // Date.now() when a cue last proved false
    this._queue = []; // { data, size } sent by the app during a move
    this._queuedBytes = 0;
    this._why = null; // "closed" once the app closed it
    this._closing = false;
    this._retries = 0;
    this._binaryType = "blob";
    this._storage = this._opt.rememberMs > 0 ? this._opt.storage ?? defaultStorage(this._opt.WebSocket) : null;
    // The URL dialled from memory for this connection, or null.
    this.remembered = null;
    for (const t of TYPES) {
      this["on" + t] = null;
      this.addEventListener(t, (e) => this["on" + t]?.call(this, e));
    }
    this._start();
  }

  get readyState() { return this._state; }
  get protocol() { return this._real ? this._ws.protocol : ""; }
  get extensions() { return this._real ? this._ws.extensions : ""; }
  get bufferedAmount() { return (this._ws?.bufferedAmount ?? 0) + this._queuedBytes; }
  get binaryType() { return this._binaryType; }
  set binaryType(v) { this._binaryType = v; if (this._ws) this._ws.binaryType = v; }

  // send sends data on the app's socket, or queues it while the connection
  // moves (see the top of this file). It throws before the first "open" and
  // once the app closed the socket or the helper gave it up.
  send(data) {
    if (this._state !== RedirectingWebSocket.OPEN) throw new DOMException("not open", "InvalidStateError");
    if (this._direct()) {
      this._ws.send(data);
      return;
    }
    const size = byteLength(data);
    if (this._queue.length + 1 > this._opt.maxQueuedMessages || this._queuedBytes + size > this._opt.maxQueuedBytes) {
      this._emit("error", { detail: { reason: "queue full", unsent: [data] } }, CustomEvent);
      return;
    }
    this._queue.push({ data: copy(data), size });
    this._queuedBytes += size;
  }

  // _direct reports whether a message may go out on the current socket now:
  // it is the app's and open, it is not leaving on a cue, nothing waits
  // before it.
  _direct() {
    return this._real && !this._leaving && this._queue.length === 0 && this._ws.readyState === 1;
  }

  // _drain sends the queue on the current socket when it may.
  _drain() {
    if (this._queue.length === 0 || !this._real || this._leaving || this._ws.readyState !== 1) return;
    const q = this._queue;
    this._queue = [];
    this._queuedBytes = 0;
    for (const m of q) this._ws.send(m.data);
  }

  close(code, reason) {
    if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999)) {
      throw new DOMException(`close code ${code}`, "InvalidAccessError");
    }
    if (this._state >= RedirectingWebSocket.CLOSING) return;
    this._why = "closed";
    this._closing = true;
    this._state = RedirectingWebSocket.CLOSING;
    clearTimeout(this._timer);
    if (this._ws && this._ws.readyState <= 1) this._ws.close(code, reason);
    // Between sockets (waiting out a move, a retry or resolve), or on a
    // socket already closing after a cue, there is no close handshake of
    // the app's to wait for.
    else queueMicrotask(() => this._finish(code ?? 1005, reason ?? "", true, false));
  }

  // _start dials the URL remembered for this one, if any; else it asks the
  // resolver, when there is one, so a page reaches its node in one dial; any
  // answer it cannot use falls back to the close-code path.
  async _start() {
    const to = this._storage && recall(this._storage, this._first, this._opt.rememberMs);
    const guess = to && this._vet(to, this._first);
    if (guess && guess !== this._first) {
      if (this._allows(guess, this._first)) {
        this.remembered = guess;
        this._dial(guess, { guess: true });
        return;
      }
      forget(this._storage, this._first, to);
    }
    await this._resolveAndDial();
  }

  // _resolveAndDial asks the resolver and dials.
  async _resolveAndDial() {
    let target = this._first;
    for (let tries = 0; this._opt.resolve && tries <= this._opt.maxRetries; tries++) {
      try {
        const u = new URL(this._first);
        const res = await fetch(this._opt.resolve.replace(/\/$/, "") + u.pathname + u.search, { cache: "no-store" });
        const body = Object(await res.json().catch(() => null)); // null: {}
        if (res.status === 503) {
          const secs = retryAfter(body, res.headers) || 1;
          // Longer than the cap: dial, and let the server's close code say.
          if (secs * 1000 > this._opt.maxRetryDelayMs) break;
          await sleep(secs * 1000 + (jitter(2) - 1) * this._opt.retryJitterMs);
          if (this._closing) return;
          continue;
        }
        const to = res.ok && body.url ? this._vet(body.url, this._first) : null;
        if (to && (to === this._first || this._allows(to, this._first))) target = to;
      } catch { /* unreachable resolver: dial directly */ }
      break;
    }
    if (!this._closing) this._dial(target);
  }

  // _vet resolves a target against the URL it came from and refuses a
  // downgrade from wss to ws, which would expose the connection.
  _vet(target, from) {
    const to = wsURL(target, from);
    if (!to || (from.startsWith("wss:") && to.startsWith("ws:"))) return null;
    return to;
  }

  // _allows asks the app's checkRedirect whether to go from one URL to
  // another; a check that throws vetoes, as one that is broken must not
  // let everything through.
  _allows(to, from) {
    const check = this._opt.checkRedirect;
    if (typeof check !== "function") return true;
    try {
      return check.call(this, to, from) !== false;
    } catch {
      return false;
    }
  }

  // _cueAllowed reports whether a cue is acted on now: not within
  // CUE_QUIET_MS of one that proved false (a clock set back ends the wait).
  _cueAllowed() {
    const since = Date.now() - this._cueFalseAt;
    return !(since >= 0 && since < CUE_QUIET_MS);
  }

  // _dial dials url. guess: it is a remembered target, left for the URL
  // given if it fails before it counts as the app's. rejoin: it reconnects
  // the app to the URL it is on after a false cue or a veto, unseen by the
  // app (no "open" when the app saw one) and not remembered.
  _dial(url, { guess = false, rejoin = false } = {}) {
    this.url = url;
    const ws = new this._opt.WebSocket(url, this._protocols);
    ws.binaryType = this._binaryType;
    this._ws = ws;
    this._real = false;
    // An open socket is pending until it proves to be the app's: at once
    // when the marker was offered and not selected; without the marker, at
    // its first app message or after settleMs without a redirect close.
    // held: a "wsr1 " message on a stub or a pending socket, which may be
    // the target of a "wsr1 +" close that follows. cue: the cue read on
    // the app's socket and what came after it, while its close is answered.
    let opened = false, stub = false, pending = false, settle, errored = false, ended = false;
    let held = null, cue = null;
    const deliver = (e) => {
      if (this._state !== RedirectingWebSocket.OPEN) return; // the app closed it in a listener
      this._served = true;
      this._emit("message", { data: e.data, origin: e.origin, lastEventId: e.lastEventId });
    };
    // What the app sent during a move goes out before "open" is dispatched,
    // so before anything the app sends from its listener.
    const reveal = () => {
      if (!pending) return;
      pending = false;
      clearTimeout(settle);
      this._real = true;
      this._moving = false;
      const seen = this._opened;
      this._opened = true;
      if (!rejoin) this._remember(url, guess);
      this._state = this._closing ? RedirectingWebSocket.CLOSING : RedirectingWebSocket.OPEN;
      if (!this._closing) this._drain();
      if (!(rejoin && seen)) this.dispatchEvent(new Event("open"));
      if (held !== null) {
        const e = held;
        held = null;
        deliver(e);
      }
    };
    // A cue proved false: what was held reaches the app as the ordinary
    // messages it was, and the app is reconnected where it was.
    const cueFalse = (c) => {
      this._cueFalseAt = Date.now();
      this._leaving = false;
      deliver(c.e);
      for (const e of c.after) deliver(e);
      if (!this._closing && this._state !== RedirectingWebSocket.CLOSED) this._rejoin(url);
    };
    ws.onopen = () => {
      if (this._ws !== ws) return;
      opened = true;
      if (ws.protocol === SUBPROTOCOL) { stub = true; return; }
      pending = true;
      if (this._marked) reveal();
      else settle = setTimeout(reveal, this._opt.settleMs);
    };
    ws.onmessage = (e) => {
      if (this._ws !== ws || this._state === RedirectingWebSocket.CLOSED) return;
      if (cue) {
        cue.after.push(e);
        return;
      }
      if (stub) {
        held = isRedirectMessage(e.data) ? e : null;
        return;
      }
      if (pending) {
        if (held === null && isRedirectMessage(e.data) && !isCue(e.data)) {
          held = e;
          return;
        }
        reveal();
      }
      if (isCue(e.data) && this._cueAllowed() && !this._closing) {
        // Close from this side, so that everything sent so far goes out
        // ahead of the close frame; the server's answer to it says where
        // to go, if the cue was the server's.
        const c = { e, after: [] };
        c.timer = setTimeout(() => {
          if (this._ws !== ws || cue !== c || this._state === RedirectingWebSocket.CLOSED) return;
          cue = null;
          ended = true; // the old socket is left to close by itself
          cueFalse(c);
        }, CUE_ANSWER_MS);
        cue = c;
        this._leaving = true;
        ws.close(1000);
        return;
      }
      deliver(e);
    };
    const onclose = (ev) => {
      if (ended) return;
      ended = true;
      if (this._ws !== ws || this._state === RedirectingWebSocket.CLOSED) return;
      clearTimeout(settle);
      let e = ev;
      if (cue) {
        const c = cue;
        cue = null;
        clearTimeout(c.timer);
        this._leaving = false;
        if (!this._closing && answersCue(e, url)) {
          // The server's answer: the cue was its own.
          for (const m of c.after) deliver(m);
        } else if (!this._closing && (e.code === 1000 || e.code === 1005)) {
          cueFalse(c);
          return;
        } else {
          deliver(c.e);
          for (const m of c.after) deliver(m);
        }
        if (this._state === RedirectingWebSocket.CLOSED) return;
      }
      const wasReal = this._real;
      if (guess && !wasReal && !this._closing && e.code !== CLOSE_REDIRECT && e.code !== CLOSE_RETRY) {
        // The remembered target failed: the URL given, as if nothing
        // were remembered; the app sees none of it.
        forget(this._storage, this._first, url);
        this.remembered = null;
        this._resolveAndDial();
        return;
      }
      // A held message is a target only for a "wsr1 +" close; else it was
      // the app's.
      const target = e.code === CLOSE_REDIRECT && e.reason === SEE_MESSAGE ? held?.data ?? null : null;
      if (target !== null) held = null;
      else if (held !== null && pending && !this._closing) reveal();
      if (!this._closing && this._follow(e, url, target, this._real)) return;
      if (!this._closing) reveal(); // it was the app's after all
      this._finish(e.code, e.reason, e.wasClean, errored);
    };
    ws.onclose = onclose;
    ws.onerror = () => {
      errored = true;
      // A failed handshake may fire no close (undici).
      if (!opened) setTimeout(() => onclose({ type: "close", code: 1006, reason: "", wasClean: false }), 0);
    };
  }

  // _rejoin reconnects to url, where the app's connection is, at once and
  // unseen by the app: after a false cue, or a veto of a move.
  _rejoin(url) {
    this._moving = true; // from here on, a give-up with messages queued is a move that failed
    this._real = false;
    this._state = this._opened ? RedirectingWebSocket.OPEN : RedirectingWebSocket.CONNECTING;
    this._dial(url, { rejoin: true });
  }

  // _remember records where the connection ended up when a socket counts
  // as the app's: the URL given clears the memory, another URL is stored,
  // and a remembered target reached without a redirect keeps its entry, and
  // its age.
  _remember(url, guess) {
    if (!this._storage || guess) return;
    if (url === this._first) forget(this._storage, this._first);
    else remember(this._storage, this._first, url, this._opt.rememberMs);
  }

  // _follow acts on a redirect or retry close and reports whether it did;
  // false leaves the close, with an error, to the app. lastMessage is the
  // held target of a "wsr1 +" close, or null.
  _follow(e, url, lastMessage, wasReal) {
    if (e.code !== CLOSE_REDIRECT && e.code !== CLOSE_RETRY) return false;
    // From here on, a give-up with messages queued is a move that failed.
    this._moving = true;
    // A connection that delivered an app message starts a new chain: its
    // hop count says how far this move went, not the first connect. One
    // that only opened does not, or a server that holds each socket past
    // settleMs (or selects the app's protocol) and then redirects again
    // would be followed forever; each such socket makes the next wait longer.
    let backoff = 0;
    if (this._served) {
      this._served = false;
      this.hops = [];
      this._retries = 0;
      this._idle = 0;
      this._vetoed = false;
    } else if (wasReal) {
      const ms = Math.min(this._opt.maxBackoffMs, this._opt.backoffMs * 2 ** this._idle++);
      backoff = ms / 2 + jitter(ms / 2);
    }
    if (e.code === CLOSE_REDIRECT) {
      const raw = parseRedirect(e.reason, lastMessage, url);
      const live = wasReal || e.reason.startsWith(SAME_PATH);
      const to = raw && this._vet(raw, url);
      if (!to || this.hops.length >= this._opt.maxHops) return this._fail(e);
      if (!this._allows(to, url)) {
        // A veto keeps the app where it was, once: a node that redirects
        // again at once will not be talked out of it.
        if (this._vetoed) return this._fail(e);
        this._vetoed = true;
        this._rejoin(url);
        return true;
      }
      this.hops.push(to);
      this._state = this._opened ? RedirectingWebSocket.OPEN : RedirectingWebSocket.CONNECTING;
      this._real = false;
      this._emit("redirect", { detail: { from: url, to, code: e.code, live } }, CustomEvent);
      // A close() from a redirect listener has already queued the close.
      if (!this._closing) this._later(Math.max(live ? jitter(this._opt.moveJitterMs) : 0, backoff), to);
      return true;
    }
    const secs = parseRetry(e.reason);
    if (secs === null || secs * 1000 > this._opt.maxRetryDelayMs || this._retries >= this._opt.maxRetries) {
      return this._fail(e);
    }
    this._retries++;
    this.hops = [];
    this._state = this._opened ? RedirectingWebSocket.OPEN : RedirectingWebSocket.CONNECTING;
    this._real = false;
    this._later(Math.max(secs * 1000 + (jitter(2) - 1) * this._opt.retryJitterMs, backoff), this._first);
    return true;
  }

  _fail(e) {
    this._finish(e.code, e.reason, e.wasClean, true);
    return true;
  }

  _later(ms, url) {
    clearTimeout(this._timer);
    this._timer = setTimeout(() => { if (!this._closing) this._dial(url); }, timeout(ms));
  }

  // _finish ends the app's connection for good. Messages still queued will
  // never be sent: they are reported in the "error" event that precedes
  // "close", with why.
  _finish(code, reason, wasClean, error) {
    if (this._state === RedirectingWebSocket.CLOSED) return;
    this._state = RedirectingWebSocket.CLOSED;
    this._leaving = false;
    clearTimeout(this._timer);
    const unsent = this._queue.map((m) => m.data);
    this._queue = [];
    this._queuedBytes = 0;
    if (unsent.length > 0 || (error && this._moving)) {
      const why = this._why ?? (this._moving ? "move failed" : "closed");
      this._emit("error", { detail: { reason: why, unsent } }, CustomEvent);
    } else if (error) {
      this.dispatchEvent(new Event("error"));
    }
    this._emit("close", { code, reason, wasClean }, globalThis.CloseEvent ?? null);
  }

  // _emit builds a fresh event (a received one cannot be dispatched again),
  // falling back to a plain Event where a constructor is missing (Node).
  _emit(type, init, Ctor = globalThis.MessageEvent) {
    const ev = Ctor ? new Ctor(type, init) : Object.assign(new Event(type), init);
    this.dispatchEvent(ev);
  }
}
