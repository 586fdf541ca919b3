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
// frame arrives: CLOSING) and end (the close completes: the close event).
// onDial(sock, n), when given, is called for the n-th dial (0-based) once
// the constructor has returned, as a real socket connects later. Like a
// browser's, a socket sends only while OPEN: what is sent on it otherwise
// is dropped without a word (kept in dropped, for tests to see).
export function fakeServer(onDial = null) {
  const dials = [];
  class FakeWebSocket {
    constructor(url, protocols = []) {
      Object.assign(this, {
        url, offered: [...protocols], at: now(), readyState: 0, protocol: "", extensions: "", bufferedAmount: 0,
        binaryType: "blob", sent: [], dropped: [], onopen: null, onmessage: null, onerror: null, onclose: null,
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
    closeFrame() {
      if (this.readyState === 1) this.readyState = 2;
    }
    end(code, reason = "", wasClean = true) {
      if (this.readyState === 3) return;
      if (!wasClean) this.onerror?.({ type: "error" });
      this.readyState = 3;
      this.onclose?.({ type: "close", code, reason, wasClean });
    }
    // The helper's side.
    send(data) { (this.readyState === 1 ? this.sent : this.dropped).push(data); }
    close(code, reason) {
      if (this.readyState >= 2) return;
      const wasOpen = this.readyState === 1;
      this.readyState = 2;
      pause(0).then(() => this.end(wasOpen ? code ?? 1005 : 1006, wasOpen ? reason ?? "" : "", wasOpen));
    }
  }
  return { WebSocket: FakeWebSocket, dials };
}
