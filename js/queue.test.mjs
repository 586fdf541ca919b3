// RedirectingWebSocket's send queue across moves (issue 14): what the app
// sends while the helper moves its connection is queued and sent, in order,
// on the new connection before anything sent later; what cannot be sent is
// reported in an "error" event, never dropped silently. A fake WebSocket
// injected through the helper's WebSocket option plays both ends, step by
// step: the test says when the server's close frame arrives (the socket
// turns CLOSING, as a browser's does, and drops what is sent on it from then
// on, as a browser does) and when the close completes. Real timers with
// small option values; every test ends within a bound of its own. No
// dependencies:
//
//	node --test js/
import { describe, it } from "node:test";
import assert from "node:assert/strict";

import { CLOSE_REDIRECT, CLOSE_RETRY, CUE, RedirectingWebSocket } from "./wsredirect.js";
import { fakeServer, pause, until } from "./testing.mjs";


const URL1 = "ws://a.test/ws?room=1";
const MOVE = "wsr1 =ws://b.test";
const URL2 = "ws://b.test/ws?room=1";
const fast = { moveJitterMs: 1, backoffMs: 1, maxBackoffMs: 2, retryJitterMs: 1 };

// connect starts a helper on a fresh fake server, records what it
// dispatches and waits for its first socket to be the app's; the helper is
// closed when the test t ends, whatever happened.
async function connect(t, options = {}) {
  const srv = fakeServer();
  const ws = new RedirectingWebSocket(URL1, ["chat"], { WebSocket: srv.WebSocket, ...fast, ...options });
  t.after(() => { try { ws.close(); } catch { /* closed */ } });
  const log = [];
  for (const type of ["open", "message", "close", "error", "redirect"]) {
    ws.addEventListener(type, (e) => log.push({ type, code: e.code, reason: e.reason, data: e.data, detail: e.detail }));
  }
  assert.ok(await until(() => srv.dials.length === 1, 500), "never dialled");
  srv.dials[0].accept("chat");
  srv.dials[0].deliver("hello");
  assert.deepEqual(log.map((e) => e.type), ["open", "message"]);
  const c = {
    ws, srv, log,
    types: () => log.map((e) => e.type),
    errors: () => log.filter((e) => e.type === "error"),
    closed: () => log.some((e) => e.type === "close"),
    n: 0,
    // sendNext sends the next number; whatever send throws is returned.
    sendNext() {
      const m = String(++c.n);
      try { ws.send(m); } catch (err) { return err; }
      return null;
    },
    sendUpTo(k) {
      while (c.n < k) {
        const err = c.sendNext();
        assert.equal(err, null, `send(${c.n}) threw ${err?.name}: ${err?.message}; readyState ${ws.readyState}`);
      }
    },
  };
  return c;
}

const nums = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => String(from + i));

describe("sends during a move are queued and sent in order on the new connection", () => {
  it("4307 live move: before the close frame to the old socket, the rest to the new, in order", async (t) => {
    const c = await connect(t);
    const [a] = c.srv.dials;
    let sentAtOpen = null;
    c.ws.addEventListener("open", () => {
      if (c.srv.dials.length === 2) {
        sentAtOpen = c.n;
        c.ws.send("from the open listener");
      }
    });

    c.sendUpTo(10);
    a.closeFrame(); // the helper can tell only by the socket's readyState
    c.sendUpTo(20);
    a.end(CLOSE_REDIRECT, MOVE);
    assert.equal(c.ws.readyState, RedirectingWebSocket.OPEN, "the app's view stays OPEN during a move");
    c.sendUpTo(30); // between sockets
    assert.ok(await until(() => c.srv.dials.length === 2, 500), "the move was not followed");
    const b = c.srv.dials[1];
    assert.equal(b.url, URL2);
    c.sendUpTo(40); // dialling
    b.accept("chat");
    assert.equal(sentAtOpen, 40, "open comes after the queue went out");
    c.sendUpTo(50); // on the new socket

    assert.deepEqual(a.sent, nums(1, 10), "the old socket got what was sent before its close frame");
    assert.deepEqual(a.dropped, [], "nothing sent on a CLOSING socket");
    assert.deepEqual(b.sent, [...nums(11, 40), "from the open listener", ...nums(41, 50)]);
    assert.deepEqual(b.dropped, []);
    assert.deepEqual(c.errors(), []);
    assert.deepEqual(c.types(), ["open", "message", "redirect", "open"]);
  });

  it("a cued move: the helper closes the socket itself; before the cue to the old, the rest to the new", async (t) => {
    const c = await connect(t);
    const [a] = c.srv.dials;
    a.answer = () => ({ code: CLOSE_REDIRECT, reason: MOVE }); // the middleware's answer to the client's close

    c.sendUpTo(10);
    a.deliver(CUE); // the server's cue, in order with its messages
    assert.deepEqual(a.closes, [1000], "closed from the client's side at once, with a normal closure");
    assert.equal(a.readyState, 2);
    c.sendUpTo(20); // queued: the old socket is CLOSING, nothing is sent on it
    a.deliver("late"); // a browser drops what arrives on a CLOSING socket
    assert.ok(await until(() => c.srv.dials.length === 2, 500), "the move was not followed");
    const b = c.srv.dials[1];
    assert.equal(b.url, URL2, "the answer's base, with the path and query dialled");
    b.accept("chat");
    c.sendUpTo(25);

    assert.deepEqual(a.sent, nums(1, 10), "everything sent before the cue, and only that, on the old socket");
    assert.deepEqual(b.sent, nums(11, 25));
    assert.deepEqual([...a.dropped, ...b.dropped], [], "nothing sent on a closing socket");
    assert.deepEqual(c.errors(), []);
    assert.deepEqual(c.types(), ["open", "message", "redirect", "open"], "the server's cue is not the app's");
    assert.equal(c.log.find((e) => e.type === "redirect").detail.code, CLOSE_REDIRECT);
  });

  it("a cued retry: closed from the client's side, queued through the wait", async (t) => {
    const c = await connect(t);
    const [a] = c.srv.dials;
    a.answer = () => ({ code: CLOSE_RETRY, reason: "wsr1 retry=0" });

    c.sendUpTo(3);
    a.deliver(CUE);
    c.sendUpTo(6);
    assert.ok(await until(() => c.srv.dials.length === 2, 500), "the retry was not followed");
    const b = c.srv.dials[1];
    assert.equal(b.url, URL1);
    b.accept("chat");

    assert.deepEqual(a.sent, nums(1, 3));
    assert.deepEqual(b.sent, nums(4, 6));
    assert.deepEqual(c.errors(), []);
    assert.deepEqual(c.types(), ["open", "message", "open"]);
  });

  it("an app that closes after a cue gets its own close, and the queue reported", async (t) => {
    const c = await connect(t);
    const [a] = c.srv.dials;
    a.answer = () => ({ code: CLOSE_REDIRECT, reason: MOVE });

    a.deliver(CUE);
    c.sendUpTo(2);
    c.ws.close(4000, "bye");
    assert.ok(await until(() => c.closed(), 500), "never closed");
    await pause(20);
    assert.equal(c.srv.dials.length, 1, "no move after the app closed");
    assert.deepEqual(c.errors().map((e) => e.detail), [{ reason: "closed", unsent: ["1", "2"] }]);
    const closed = c.log.find((e) => e.type === "close");
    assert.equal(closed.code, 4000, "the app's own close, the socket being closed already");
  });

  it("a \"wsr1 \" message on the app's socket holds nothing: sends go straight out", async (t) => {
    const c = await connect(t);
    const [a] = c.srv.dials;

    c.sendUpTo(3);
    a.deliver("wsr1 is what this app calls its greeting");
    c.sendUpTo(6);
    assert.deepEqual(a.sent, nums(1, 6), "nothing queued after it");
    a.deliver("wsr1 ws://b.test/ws?room=1&long=1");
    c.sendUpTo(9);

    assert.deepEqual(a.sent, nums(1, 9));
    assert.deepEqual(c.log.filter((e) => e.type === "message").map((e) => e.data),
      ["hello", "wsr1 is what this app calls its greeting", "wsr1 ws://b.test/ws?room=1&long=1"]);
    assert.deepEqual(a.closes, []);
  });

  it("a 4503 during a live connection: queued through the wait, sent on reconnect", async (t) => {
    const c = await connect(t);
    const [a] = c.srv.dials;

    c.sendUpTo(4);
    a.closeFrame();
    c.sendUpTo(8);
    a.end(CLOSE_RETRY, "wsr1 retry=0");
    c.sendUpTo(12);
    assert.ok(await until(() => c.srv.dials.length === 2, 500), "the retry was not followed");
    const b = c.srv.dials[1];
    assert.equal(b.url, URL1);
    b.accept("chat");

    assert.deepEqual(a.sent, nums(1, 4));
    assert.deepEqual(b.sent, nums(5, 12));
    assert.deepEqual(c.errors(), []);
  });

  it("bufferedAmount counts queued bytes", async (t) => {
    const c = await connect(t);
    const [a] = c.srv.dials;

    a.bufferedAmount = 7; // the old socket's own, until it is gone
    a.closeFrame();
    c.ws.send("abc"); // 3 bytes
    c.ws.send("é€😀"); // 2 + 3 + 4 bytes of UTF-8
    c.ws.send(new Uint8Array(5));
    c.ws.send(new ArrayBuffer(6));
    assert.equal(c.ws.bufferedAmount, 7 + 3 + 9 + 5 + 6);
    a.end(CLOSE_REDIRECT, MOVE);
    assert.ok(await until(() => c.srv.dials.length === 2, 500), "the move was not followed");
    const b = c.srv.dials[1];
    assert.equal(c.ws.bufferedAmount, 3 + 9 + 5 + 6, "a dialling socket buffers nothing");
    b.accept("chat");
    assert.equal(c.ws.bufferedAmount, 0, "all sent");
    assert.equal(b.sent.length, 4);
  });

  it("a buffer changed after send() is queued as it was", async (t) => {
    const c = await connect(t);
    const [a] = c.srv.dials;

    a.closeFrame();
    const buf = new Uint8Array([1, 2, 3]);
    c.ws.send(buf);
    buf[0] = 9;
    a.end(CLOSE_REDIRECT, MOVE);
    assert.ok(await until(() => c.srv.dials.length === 2, 500), "the move was not followed");
    c.srv.dials[1].accept("chat");

    assert.deepEqual([...c.srv.dials[1].sent[0]], [1, 2, 3]);
  });

  it("send() throws before the first open and after close(), not during a move", async (t) => {
    const srv = fakeServer();
    const ws = new RedirectingWebSocket(URL1, ["chat"], { WebSocket: srv.WebSocket, ...fast });
    t.after(() => ws.close());
    assert.throws(() => ws.send("early"), { name: "InvalidStateError" });
    assert.ok(await until(() => srv.dials.length === 1, 500));
    srv.dials[0].accept("chat");
    srv.dials[0].end(CLOSE_REDIRECT, MOVE);
    assert.doesNotThrow(() => ws.send("moving"));
    assert.equal(ws.readyState, RedirectingWebSocket.OPEN);
    assert.ok(await until(() => srv.dials.length === 2, 500));
    srv.dials[1].accept("chat");
    assert.deepEqual(srv.dials[1].sent, ["moving"]);
    ws.close();
    assert.throws(() => ws.send("late"), { name: "InvalidStateError" });
  });
});

describe("what cannot be sent is reported", () => {
  it("queue full (maxQueuedMessages): the message that does not fit is refused and reported; the queue goes on", async (t) => {
    const c = await connect(t, { maxQueuedMessages: 5 });
    const [a] = c.srv.dials;
    const reported = [];
    c.ws.addEventListener("error", (e) => reported.push({ at: c.n, ...e.detail }));

    c.sendUpTo(3);
    a.closeFrame();
    c.sendUpTo(8); // 4..8 fill the queue
    c.sendUpTo(10); // no room
    assert.deepEqual(reported, [
      { at: 9, reason: "queue full", unsent: ["9"] },
      { at: 10, reason: "queue full", unsent: ["10"] },
    ], "each refused message reported before send() returned");
    assert.equal(c.ws.readyState, RedirectingWebSocket.OPEN);
    a.end(CLOSE_REDIRECT, MOVE);
    assert.ok(await until(() => c.srv.dials.length === 2, 500), "the move was not followed");
    const b = c.srv.dials[1];
    b.accept("chat");
    c.sendUpTo(12);

    assert.deepEqual(a.sent, nums(1, 3));
    assert.deepEqual(b.sent, [...nums(4, 8), "11", "12"], "the queue, then what was sent later");
    assert.deepEqual([...a.dropped, ...b.dropped], []);
    assert.ok(!c.closed());
  });

  it("queue full (maxQueuedBytes), between sockets; an app that closes in its listener", async (t) => {
    const c = await connect(t, { maxQueuedBytes: 10, moveJitterMs: 200 });
    const [a] = c.srv.dials;
    c.ws.addEventListener("error", (e) => { if (e.detail?.reason === "queue full") c.ws.close(); }, { once: true });

    a.closeFrame();
    a.end(CLOSE_REDIRECT, MOVE);
    c.ws.send("aaaa");
    c.ws.send("bbbb");
    c.ws.send("cccc"); // 12 bytes > 10
    assert.throws(() => c.ws.send("dd"), { name: "InvalidStateError" }, "closed by the app's listener");
    assert.ok(await until(c.closed, 500), `no close: ${c.types()}`);

    assert.deepEqual(c.errors().map((e) => e.detail), [
      { reason: "queue full", unsent: ["cccc"] },
      { reason: "closed", unsent: ["aaaa", "bbbb"] },
    ]);
    await pause(250);
    assert.equal(c.srv.dials.length, 1, "the move is abandoned");
  });

  it("a dial that fails: error with the unsent messages, then close", async (t) => {
    const c = await connect(t);
    const [a] = c.srv.dials;

    c.sendUpTo(2);
    a.closeFrame();
    c.sendUpTo(4);
    a.end(CLOSE_REDIRECT, MOVE);
    c.sendUpTo(6);
    assert.ok(await until(() => c.srv.dials.length === 2, 500), "the move was not followed");
    c.sendUpTo(7);
    c.srv.dials[1].end(1006, "", false); // connection refused

    const errs = c.errors();
    assert.equal(errs.length, 1, c.types().join(","));
    assert.equal(errs[0].detail?.reason, "move failed");
    assert.deepEqual(errs[0].detail?.unsent, nums(3, 7));
    assert.deepEqual(c.types().slice(-2), ["error", "close"]);
    assert.deepEqual(a.sent, nums(1, 2));
  });

  it("a retry longer than maxRetryDelayMs: error with the unsent messages", async (t) => {
    const c = await connect(t, { maxRetryDelayMs: 1000 });
    const [a] = c.srv.dials;

    a.closeFrame();
    c.sendUpTo(3);
    a.end(CLOSE_RETRY, "wsr1 retry=5");

    const errs = c.errors();
    assert.equal(errs.length, 1, c.types().join(","));
    assert.equal(errs[0].detail?.reason, "move failed");
    assert.deepEqual(errs[0].detail?.unsent, nums(1, 3));
    assert.equal(c.log.at(-1).code, CLOSE_RETRY);
  });

  it("the hop cap: error with the unsent messages", async (t) => {
    const c = await connect(t, { maxHops: 2 });
    const [a] = c.srv.dials;

    a.closeFrame();
    c.sendNext();
    a.end(CLOSE_REDIRECT, MOVE); // hop 1
    // Then redirect stubs (the marker selected), which are not the app's.
    for (let i = 1; i <= 2; i++) {
      assert.ok(await until(() => c.srv.dials.length === i + 1, 500), `hop ${i} not followed`);
      c.sendNext();
      c.srv.dials[i].accept("wsredirect.v1");
      c.srv.dials[i].end(CLOSE_REDIRECT, `wsr1 ws://n${i}.test/ws`); // hop 2, then one too many
    }

    const errs = c.errors();
    assert.equal(errs.length, 1, c.types().join(","));
    assert.equal(errs[0].detail?.reason, "move failed");
    assert.deepEqual(errs[0].detail?.unsent, nums(1, 3));
    assert.deepEqual(c.srv.dials.flatMap((s) => [...s.sent, ...s.dropped]), []);
    assert.equal(c.log.at(-1).code, CLOSE_REDIRECT);
  });

  it("the connection ends without a move: reported as closed", async (t) => {
    const c = await connect(t);
    const [a] = c.srv.dials;

    a.closeFrame();
    c.sendUpTo(2);
    a.end(1001, "going away");

    const errs = c.errors();
    assert.equal(errs.length, 1, c.types().join(","));
    assert.equal(errs[0].detail?.reason, "closed");
    assert.deepEqual(errs[0].detail?.unsent, nums(1, 2));
    assert.equal(c.log.at(-1).code, 1001);
  });

  it("the app closes during a move: reported as closed", async (t) => {
    const c = await connect(t, { moveJitterMs: 100 });
    const [a] = c.srv.dials;

    a.closeFrame();
    c.sendUpTo(2);
    a.end(CLOSE_REDIRECT, MOVE);
    c.sendUpTo(3);
    c.ws.close();
    assert.ok(await until(c.closed, 500));

    const errs = c.errors();
    assert.equal(errs.length, 1, c.types().join(","));
    assert.equal(errs[0].detail?.reason, "closed");
    assert.deepEqual(errs[0].detail?.unsent, nums(1, 3));
    await pause(150);
    assert.equal(c.srv.dials.length, 1);
  });
});
