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
//	4307 "wsr1 +"        go to the url in the "wsr1 <url>" text message just before
//	4307 "wsr1 =<base>"  live drain: same path and query on base
//	4503 "wsr1 retry=N"  wait N seconds, then dial the original url again
//
// Usage (no build step; the Go server can serve this file with ScriptHandler):
//
//	import { RedirectingWebSocket } from "/wsredirect.js";
//	const ws = new RedirectingWebSocket("wss://chat.example.com/rooms/42?room=42", ["chat.v1"]);
//	ws.onmessage = (e) => console.log(e.data);
//	ws.addEventListener("redirect", (e) => console.log("moved", e.detail.from, "->", e.detail.to));

export const SUBPROTOCOL = "wsredirect.v1";
export const CLOSE_REDIRECT = 4307;
export const CLOSE_RETRY = 4503;
const V1 = "wsr1 ";
const SEE_MESSAGE = V1 + "+";
const SAME_PATH = V1 + "=";
const RETRY = V1 + "retry=";
const MAX_RETRY = 86400; // wire.MaxRetry, a day: a reason asking for more is refused
const TYPES = ["open", "message", "close", "error", "redirect"];

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

// isRedirectMessage mirrors Go's IsRedirectMessage: whether a text message
// may be the target of a "wsr1 +" close that follows, and so is kept from
// the app until the next frame says which it is.
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

const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const jitter = (ms) => Math.random() * ms;

export class RedirectingWebSocket extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  // options: maxHops (10) redirects per chain; maxRetries (5) 4503 waits
  // before giving up; moveJitterMs (1000) upper bound of the random wait
  // before a live move, so a drained node's clients do not reconnect in one
  // wave; retryJitterMs (1000) spread around a 4503's delay; resolve: URL
  // prefix of the server's ResolveHandler, asked once before the first dial;
  // offerSubprotocol (default: when protocols are given) offers
  // "wsredirect.v1", which tells a redirect at open; without it a socket's
  // open waits up to settleMs (50) for a redirect close or an app message;
  // WebSocket: the constructor to use (tests inject one).
  constructor(url, protocols = [], options = {}) {
    super();
    this._opt = { maxHops: 10, maxRetries: 5, moveJitterMs: 1000, retryJitterMs: 1000, settleMs: 50, resolve: null,
      WebSocket: globalThis.WebSocket, ...options };
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
    this.hops = []; // URLs followed to reach the current connection
    this._ws = null;
    this._real = false; // the current socket is the app's, not a redirect stub
    this._state = RedirectingWebSocket.CONNECTING;
    this._closing = false;
    this._retries = 0;
    this._binaryType = "blob";
    for (const t of TYPES) {
      this["on" + t] = null;
      this.addEventListener(t, (e) => this["on" + t]?.call(this, e));
    }
    this._start();
  }

  get readyState() { return this._state; }
  get protocol() { return this._real ? this._ws.protocol : ""; }
  get extensions() { return this._real ? this._ws.extensions : ""; }
  get bufferedAmount() { return this._ws?.bufferedAmount ?? 0; }
  get binaryType() { return this._binaryType; }
  set binaryType(v) { this._binaryType = v; if (this._ws) this._ws.binaryType = v; }

  send(data) {
    if (this._state !== RedirectingWebSocket.OPEN) throw new DOMException("not open", "InvalidStateError");
    this._ws.send(data);
  }

  close(code, reason) {
    if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999)) {
      throw new DOMException(`close code ${code}`, "InvalidAccessError");
    }
    if (this._state >= RedirectingWebSocket.CLOSING) return;
    this._closing = true;
    this._state = RedirectingWebSocket.CLOSING;
    clearTimeout(this._timer);
    if (this._ws && this._ws.readyState <= 1) this._ws.close(code, reason);
    // Between sockets (waiting out a move, a retry or resolve) there is no
    // close handshake to wait for.
    else queueMicrotask(() => this._finish(code ?? 1005, reason ?? "", true, false));
  }

  // _start asks the resolver, when there is one, so a page reaches its node
  // in one dial; any answer it cannot use falls back to the close-code path.
  async _start() {
    let target = this._first;
    for (let tries = 0; this._opt.resolve && tries <= this._opt.maxRetries; tries++) {
      try {
        const u = new URL(this._first);
        const res = await fetch(this._opt.resolve.replace(/\/$/, "") + u.pathname + u.search, { cache: "no-store" });
        const body = await res.json().catch(() => ({}));
        if (res.status === 503) {
          const secs = Number(body.retryAfter ?? res.headers.get("Retry-After")) || 1;
          await sleep(secs * 1000 + (jitter(2) - 1) * this._opt.retryJitterMs);
          if (this._closing) return;
          continue;
        }
        if (res.ok && body.url) target = this._vet(body.url, this._first) ?? target;
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

  _dial(url) {
    this.url = url;
    const ws = new this._opt.WebSocket(url, this._protocols);
    ws.binaryType = this._binaryType;
    this._ws = ws;
    this._real = false;
    // An open socket is pending until it proves to be the app's: at once
    // when the marker was offered and not selected; without the marker, at
    // its first app message or after settleMs without a redirect close.
    let stub = false, pending = false, settle, errored = false, held = null;
    const reveal = () => {
      if (!pending) return;
      pending = false;
      clearTimeout(settle);
      this._real = true;
      this._retries = 0;
      this._state = this._closing ? RedirectingWebSocket.CLOSING : RedirectingWebSocket.OPEN;
      this.dispatchEvent(new Event("open"));
    };
    // A "wsr1 " text message may be the target of a "wsr1 +" close that
    // follows; it is held until the next frame says which it is.
    const flush = () => {
      if (held !== null && !stub) { reveal(); this._emit("message", { data: held }); }
      held = null;
    };
    ws.onopen = () => {
      if (ws.protocol === SUBPROTOCOL) { stub = true; return; }
      pending = true;
      if (this._marked) reveal();
      else settle = setTimeout(reveal, this._opt.settleMs);
    };
    ws.onmessage = (e) => {
      flush();
      if (isRedirectMessage(e.data)) held = e.data;
      else if (!stub) { reveal(); this._emit("message", { data: e.data, origin: e.origin, lastEventId: e.lastEventId }); }
    };
    ws.onerror = () => { errored = true; };
    ws.onclose = (e) => {
      if (this._ws !== ws) return;
      clearTimeout(settle);
      const wasReal = this._real;
      if (!this._closing && this._follow(e, url, held, wasReal)) return;
      if (!this._closing) reveal(); // it was the app's after all
      if (!(e.code === CLOSE_REDIRECT && e.reason === SEE_MESSAGE)) flush();
      this._finish(e.code, e.reason, e.wasClean, errored);
    };
  }

  // _follow acts on a redirect or retry close and reports whether it did;
  // false leaves the close, with an error, to the app.
  _follow(e, url, held, wasReal) {
    if (e.code === CLOSE_REDIRECT) {
      const raw = parseRedirect(e.reason, held, url);
      const live = wasReal || e.reason.startsWith(SAME_PATH);
      // A connection that was really open starts a new chain: its hop
      // count says how far this move went, not the first connect.
      if (wasReal) this.hops = [];
      const to = raw && this._vet(raw, url);
      if (!to || this.hops.length >= this._opt.maxHops) return this._fail(e);
      this.hops.push(to);
      this._state = RedirectingWebSocket.CONNECTING;
      this._real = false;
      this._emit("redirect", { detail: { from: url, to, code: e.code, live } }, CustomEvent);
      // A close() from a redirect listener has already queued the close.
      if (!this._closing) this._later(live ? jitter(this._opt.moveJitterMs) : 0, to);
      return true;
    }
    if (e.code === CLOSE_RETRY) {
      const secs = parseRetry(e.reason);
      if (secs === null || this._retries >= this._opt.maxRetries) return this._fail(e);
      this._retries++;
      this.hops = [];
      this._state = RedirectingWebSocket.CONNECTING;
      this._real = false;
      this._later(secs * 1000 + (jitter(2) - 1) * this._opt.retryJitterMs, this._first);
      return true;
    }
    return false;
  }

  _fail(e) {
    this._finish(e.code, e.reason, e.wasClean, true);
    return true;
  }

  _later(ms, url) {
    clearTimeout(this._timer);
    this._timer = setTimeout(() => { if (!this._closing) this._dial(url); }, Math.max(0, ms));
  }

  _finish(code, reason, wasClean, error) {
    if (this._state === RedirectingWebSocket.CLOSED) return;
    this._state = RedirectingWebSocket.CLOSED;
    clearTimeout(this._timer);
    if (error) this.dispatchEvent(new Event("error"));
    this._emit("close", { code, reason, wasClean }, globalThis.CloseEvent ?? null);
  }

  // _emit builds a fresh event (a received one cannot be dispatched again),
  // falling back to a plain Event where a constructor is missing (Node).
  _emit(type, init, Ctor = globalThis.MessageEvent) {
    const ev = Ctor ? new Ctor(type, init) : Object.assign(new Event(type), init);
    this.dispatchEvent(ev);
  }
}
