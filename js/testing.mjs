// Shared by the helper's Node tests (js/*.test.mjs); not a test itself.
import { after } from "node:test";

// Every timer set from here on is cleared when the test file ends, so a
// helper that schedules a wait of hours cannot keep the process alive.
const timers = new Set();
const realSetTimeout = globalThis.setTimeout;
globalThis.setTimeout = (fn, ms, ...args) => {
  const id = realSetTimeout(() => { timers.delete(id); fn(...args); }, ms);
  timers.add(id);
  return id;
};
after(() => { for (const id of timers) clearTimeout(id); });

export const now = () => performance.now();

// pause waits ms on a timer that is not tracked, so the test's own waits
// are not cleared under it.
export const pause = (ms) => new Promise((r) => realSetTimeout(r, ms));

// until polls cond every step milliseconds, for at most ms; it reports
// whether cond came true.
export async function until(cond, ms, step = 2) {
  for (const end = now() + ms; now() < end; await pause(step)) if (cond()) return true;
  return cond();
}

// fakeServer returns a WebSocket class, to inject through the helper's
// WebSocket option, whose every socket is recorded in dials, for a test to
// play the server with: accept, deliver, closeFrame (the server's close
// frame arrives: CLOSING), end (the close completes: the close event) and
// failHandshake (error and no close, as Node's built-in WebSocket does,
// nodejs/undici#3546). onDial(sock, n), when given, is called for the n-th
// dial (0-based) once the constructor has returned, as a real socket
// connects later. Like a browser's, a socket sends only while OPEN: what is
// sent on it otherwise is dropped without a word (kept in dropped, for
// tests to see), and it delivers messages only while OPEN, but for
// deliverLate, which plays Node's ws package delivering what arrives after
// the client's close. When the helper closes a socket, its closes records
// the code, and the server answers with what sock.answer(code, reason)
// returns a moment later: by default the echo (the code, or 1005); a test
// sets answer to play a server that answers otherwise ({ code, reason }),
// or never (null).
export function fakeServer(onDial = null) {
  const dials = [];
  class FakeWebSocket {
    constructor(url, protocols = []) {
      Object.assign(this, {
        url, offered: [...protocols], at: now(), readyState: 0, protocol: "", extensions: "", bufferedAmount: 0,
        binaryType: "blob", sent: [], dropped: [], closes: [], onopen: null, onmessage: null, onerror: null,
        onclose: null, answer: (code, reason) => ({ code: code ?? 1005, reason: reason ?? "" }),
      });
      const n = dials.push(this) - 1;
      if (onDial) setTimeout(() => onDial(this, n), 0);
    }
    // The server's side.
    accept(protocol = "") {
      if (this.readyState !== 0) return;
      this.protocol = protocol;
      this.readyState = 1;
      this.onopen?.({ type: "open" });
    }
    deliver(data) {
      if (this.readyState === 1) this.onmessage?.({ type: "message", data, origin: "", lastEventId: "" });
    }
    deliverLate(data) {
      if (this.readyState === 1 || this.readyState === 2) this.onmessage?.({ type: "message", data, origin: "", lastEventId: "" });
    }
    closeFrame() {
      if (this.readyState === 1) this.readyState = 2;
    }
    end(code, reason = "", wasClean = true) {
      if (this.readyState === 3) return;
      if (!wasClean) this.onerror?.({ type: "error" });
      this.readyState = 3;
      this.onclose?.({ type: "close", code, reason, wasClean });
    }
    failHandshake() {
      if (this.readyState !== 0) return;
      this.readyState = 3;
      this.onerror?.({ type: "error" });
    }
    // The helper's side.
    send(data) { (this.readyState === 1 ? this.sent : this.dropped).push(data); }
    close(code, reason) {
      if (this.readyState >= 2) return;
      this.closes.push(code);
      const wasOpen = this.readyState === 1;
      this.readyState = 2;
      if (!wasOpen) {
        pause(0).then(() => this.end(1006, "", false));
        return;
      }
      const a = this.answer(code, reason);
      if (a) pause(0).then(() => this.end(a.code, a.reason ?? ""));
    }
  }
  return { WebSocket: FakeWebSocket, dials };
}
