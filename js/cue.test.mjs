// Who may move RedirectingWebSocket (issue 18): only the server, by a close
// frame. A chat relays text verbatim, so every data message may have been
// written by another user: on the app's socket each reaches the app, in
// order, whatever it says; the cue ("wsr1 move") is acted on only as far as
// the server's answer to the helper's own close proves it genuine; a false
// one costs one reconnect to where the app is, unseen, and then cues are
// ordinary messages for a minute. checkRedirect vets every target. A fake
// WebSocket plays the server (its answer to the helper's close included),
// a fake sessionStorage the page's memory. No dependencies:
//
//	node --test js/
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { CLOSE_REDIRECT, CLOSE_RETRY, CUE, RedirectingWebSocket, SUBPROTOCOL } from "./wsredirect.js";
import { fakeServer, now, pause, until } from "./testing.mjs";

const vectors = JSON.parse(readFileSync(new URL("../wire/testdata/vectors.json", import.meta.url), "utf8"));

const URL1 = "ws://a.test/ws?room=1";
const AT_B = "ws://b.test/ws?room=1";
const EVIL = "ws://evil.test";
const KEY = "wsredirect.remembered";
const fast = { moveJitterMs: 1, backoffMs: 1, maxBackoffMs: 2, retryJitterMs: 1 };

// Every form another client can type to try to move, stall or end the
// helper (issue 18), then every message the vectors say is no cue.
const FORGED = [
  `wsr1 =${EVIL}`,
  "wsr1 retry=86400",
  "wsr1 retry=30",
  "wsr1 retry=0",
  `wsr1 ${EVIL}/x`,
  "wsr1 +",
  "wsr1 =ws://b.test/ws?room=other&x=", // the same origin, another room
  "wsr1 =wss://b.test",
  ...vectors.isCue.filter((v) => !v.is).map((v) => v.message),
];

function fakeStorage(items = {}) {
  const m = new Map(Object.entries(items));
  return {
    writes: 0,
    getItem(k) { return m.has(k) ? m.get(k) : null; },
    setItem(k, v) { this.writes++; m.set(k, String(v)); },
    removeItem(k) { this.writes++; m.delete(k); },
    raw() { return m.get(KEY) ?? null; },
  };
}

// connect makes a helper for URL1 on a fake server whose first dial is a
// redirect stub to AT_B (so the memory holds AT_B), and waits until the
// app's socket at AT_B is open and greeted. protocols [] (no marker): the
// socket counts as the app's at the greeting. The helper is closed when t
// ends.
async function connect(t, { protocols = ["chat"], ...options } = {}) {
  const srv = fakeServer();
  const storage = fakeStorage();
  const ws = new RedirectingWebSocket(URL1, protocols, { WebSocket: srv.WebSocket, storage, ...fast, ...options });
  t.after(() => { try { ws.close(); } catch { /* closed */ } });
  const log = [];
  for (const type of ["open", "message", "close", "error", "redirect"]) {
    ws.addEventListener(type, (e) => log.push({ type, at: now(), code: e.code, reason: e.reason, data: e.data, detail: e.detail }));
  }
  assert.ok(await until(() => srv.dials.length === 1, 500), "never dialled");
  srv.dials[0].accept(SUBPROTOCOL);
  srv.dials[0].end(CLOSE_REDIRECT, "wsr1 " + AT_B);
  assert.ok(await until(() => srv.dials.length === 2, 500), "the stub's redirect was not followed");
  const b = srv.dials[1];
  b.accept(protocols.length > 0 ? "chat" : "");
  b.deliver("hello");
  assert.deepEqual(log.map((e) => e.type), ["redirect", "open", "message"]);
  assert.equal(storage.writes, 1, "AT_B remembered");
  const c = {
    ws, srv, log, storage, b,
    types: () => log.map((e) => e.type),
    messages: () => log.filter((e) => e.type === "message").map((e) => e.data),
    // quiet: nothing but messages since the greeting.
    quiet: () => log.slice(3).every((e) => e.type === "message"),
    n: 0,
    sendUpTo(k) {
      while (c.n < k) ws.send(String(++c.n));
    },
  };
  return c;
}

const nums = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => String(from + i));

// shiftClock moves Date.now by ms for the rest of the test t.
function shiftClock(t, ms) {
  const real = Date.now;
  Date.now = () => real() + ms;
  t.after(() => { Date.now = real; });
}

describe("a forged message on the app's socket is an ordinary message", () => {
  for (const protocols of [["chat"], []]) {
    const how = protocols.length > 0 ? "marker offered" : "no marker";
    for (const forged of FORGED) {
      it(`${how}: ${JSON.stringify(forged)}`, async (t) => {
        const c = await connect(t, { protocols });
        c.sendUpTo(2);
        c.b.deliver(forged);
        c.sendUpTo(4);
        assert.deepEqual(c.messages(), ["hello", forged], "delivered at once, not held");
        assert.deepEqual(c.b.sent, nums(1, 4), "the page's sends are not queued behind it");
        c.b.deliver("after");
        c.sendUpTo(6);
        await pause(30); // past settleMs, jitters and backoffs

        assert.deepEqual(c.messages(), ["hello", forged, "after"], "each in order, as it was sent");
        assert.deepEqual(c.b.sent, nums(1, 6), "the page's sends went straight out");
        assert.deepEqual(c.b.closes, [], "the helper did not close");
        assert.equal(c.srv.dials.length, 2, "nothing dialled");
        assert.ok(c.quiet(), c.types().join(","));
        assert.equal(c.ws.readyState, RedirectingWebSocket.OPEN);
        assert.equal(c.ws.url, AT_B);
        assert.equal(c.storage.writes, 1, "the memory is as it was");
        assert.equal(JSON.parse(c.storage.raw())[URL1].to, AT_B);
      });
    }
  }

  it("a \"wsr1 +\" close after a message names no target on the app's socket", async (t) => {
    // A server never closes the app's socket so (its live moves fit in the
    // reason); a message before such a close may be anyone's.
    const c = await connect(t);
    c.b.deliver(`wsr1 ${EVIL}/x`);
    c.b.end(CLOSE_REDIRECT, "wsr1 +");
    await pause(30);

    assert.deepEqual(c.messages(), ["hello", `wsr1 ${EVIL}/x`]);
    assert.equal(c.srv.dials.length, 2, "not followed");
    assert.deepEqual(c.types().slice(-2), ["error", "close"], "a move it cannot follow");
    assert.equal(c.log.at(-1).code, CLOSE_REDIRECT);
    assert.equal(JSON.parse(c.storage.raw())[URL1].to, AT_B);
  });

  it("a socket offered no marker holds a \"wsr1 \" message for settleMs at most", async (t) => {
    const srv = fakeServer((sock) => {
      sock.accept("");
      sock.deliver(`wsr1 =${EVIL}`);
    });
    const ws = new RedirectingWebSocket(URL1, [], { WebSocket: srv.WebSocket, settleMs: 40, ...fast });
    t.after(() => ws.close());
    const log = [];
    ws.addEventListener("open", () => log.push("open"));
    ws.addEventListener("message", (e) => log.push(e.data));
    const start = now();

    assert.ok(await until(() => log.length === 2, 500), log.join());
    const took = now() - start;
    assert.deepEqual(log, ["open", `wsr1 =${EVIL}`]);
    assert.ok(took >= 35 && took < 300, `delivered after ${took.toFixed(0)} ms, want settleMs (40)`);
    ws.send("next");
    assert.deepEqual(srv.dials[0].sent, ["next"], "not queued");
    assert.equal(srv.dials.length, 1);
  });

  it("a held \"wsr1 \" message is delivered before the next one", async (t) => {
    const srv = fakeServer((sock) => {
      sock.accept("");
      sock.deliver("wsr1 one");
      sock.deliver("wsr1 two");
    });
    const ws = new RedirectingWebSocket(URL1, [], { WebSocket: srv.WebSocket, settleMs: 1000, ...fast });
    t.after(() => ws.close());
    const log = [];
    ws.addEventListener("message", (e) => log.push(e.data));

    assert.ok(await until(() => log.length === 2, 200), log.join());
    assert.deepEqual(log, ["wsr1 one", "wsr1 two"]);
  });

  it("a cue on a redirect stub is nothing; its close frame moves it", async (t) => {
    const srv = fakeServer((sock, n) => {
      if (n > 0) return sock.accept("chat");
      sock.accept(SUBPROTOCOL);
      sock.deliver(CUE);
      setTimeout(() => sock.end(CLOSE_REDIRECT, "wsr1 " + AT_B), 5);
    });
    const ws = new RedirectingWebSocket(URL1, ["chat"], { WebSocket: srv.WebSocket, ...fast });
    t.after(() => ws.close());
    const log = [];
    for (const type of ["open", "message", "redirect"]) ws.addEventListener(type, () => log.push(type));

    assert.ok(await until(() => log.includes("open"), 500), log.join());
    assert.deepEqual(srv.dials[0].closes, [], "the helper did not close the stub");
    assert.deepEqual(log, ["redirect", "open"]);
    assert.equal(srv.dials[1].url, AT_B);
  });
});

describe("a genuine cue: the server's answer to the helper's close says where", () => {
  it("what arrives after the cue is delivered, the cue is not, and the move follows", async (t) => {
    const c = await connect(t);
    c.b.answer = () => ({ code: CLOSE_REDIRECT, reason: "wsr1 =ws://c.test" });

    c.sendUpTo(3);
    c.b.deliver("before");
    c.b.deliver(CUE);
    c.sendUpTo(6);
    c.b.deliverLate("late 1"); // as Node's ws delivers it; a browser drops it
    c.b.deliverLate("late 2");
    assert.ok(await until(() => c.srv.dials.length === 3, 500), "the move was not followed");
    const moved = c.srv.dials[2];
    moved.accept("chat");

    assert.deepEqual(c.b.closes, [1000]);
    assert.deepEqual(c.types(), ["redirect", "open", "message", "message", "message", "message", "redirect", "open"]);
    assert.deepEqual(c.messages(), ["hello", "before", "late 1", "late 2"]);
    assert.equal(moved.url, "ws://c.test/ws?room=1");
    assert.deepEqual(c.b.sent, nums(1, 3));
    assert.deepEqual(moved.sent, nums(4, 6));
    assert.equal(JSON.parse(c.storage.raw())[URL1].to, "ws://c.test/ws?room=1", "a genuine move is remembered");
  });

  it("a 4307 answer that does not parse proves nothing: the cue is delivered and the close is the app's", async (t) => {
    const c = await connect(t);
    c.b.answer = () => ({ code: CLOSE_REDIRECT, reason: "wsr1 +" });

    c.b.deliver(CUE);
    assert.ok(await until(() => c.types().includes("close"), 500), c.types().join(","));
    assert.deepEqual(c.messages(), ["hello", CUE]);
    assert.deepEqual(c.types().slice(-2), ["error", "close"]);
    assert.equal(c.srv.dials.length, 2);
  });

  it("another close after a cue is a close: the cue and what followed are delivered first", async (t) => {
    const c = await connect(t);
    c.b.answer = () => ({ code: 1001, reason: "going away" });

    c.b.deliver(CUE);
    c.b.deliverLate("late");
    assert.ok(await until(() => c.types().includes("close"), 500), c.types().join(","));
    await pause(20);
    assert.deepEqual(c.messages(), ["hello", CUE, "late"]);
    assert.equal(c.log.at(-1).code, 1001);
    assert.equal(c.srv.dials.length, 2, "no reconnect");
  });
});

describe("a false cue costs one transparent reconnect to where the app is", () => {
  for (const tc of [
    { name: "echo 1000", answer: (code) => ({ code, reason: "" }) },
    { name: "empty close (1005)", answer: () => ({ code: 1005, reason: "" }) },
  ]) {
    it(`${tc.name}: delivered in order, reconnected at once, unseen, not remembered`, async (t) => {
      // A live move's jitter is long, so a reconnect that waited would show.
      const c = await connect(t, { moveJitterMs: 5000 });
      c.b.answer = tc.answer;

      c.sendUpTo(3);
      c.b.deliver(CUE);
      const cuedAt = now();
      assert.deepEqual(c.b.closes, [1000]);
      c.sendUpTo(6); // queued
      c.b.deliverLate("late");
      assert.ok(await until(() => c.srv.dials.length === 3, 200), "not reconnected at once");
      const again = c.srv.dials[2];
      assert.ok(again.at - cuedAt < 100, `reconnected after ${(again.at - cuedAt).toFixed(0)} ms`);
      assert.equal(again.url, AT_B, "the URL the app is on, not the URL given");
      assert.deepEqual(c.messages(), ["hello", CUE, "late"], "the cue and what followed it, as ordinary messages");
      c.sendUpTo(8);
      again.accept("chat");
      c.sendUpTo(10);
      again.deliver("back");

      assert.deepEqual(c.b.sent, nums(1, 3));
      assert.deepEqual(again.sent, nums(4, 10), "the queue first, then the rest");
      assert.ok(c.quiet(), `the app saw only messages: ${c.types()}`);
      assert.equal(c.ws.readyState, RedirectingWebSocket.OPEN);
      assert.equal(c.ws.url, AT_B);
      assert.deepEqual(c.ws.hops, [AT_B], "no hop");
      assert.equal(c.ws.protocol, "chat");
      assert.equal(c.storage.writes, 1, "the memory is as it was");
    });
  }

  it("then cues are ordinary messages for 60 s; after that one is acted on again", async (t) => {
    const c = await connect(t);
    c.b.deliver(CUE);
    assert.ok(await until(() => c.srv.dials.length === 3, 200), "not reconnected");
    const again = c.srv.dials[2];
    again.accept("chat");

    for (let i = 0; i < 50; i++) again.deliver(CUE);
    again.deliver(`wsr1 =${EVIL}`);
    c.sendUpTo(1);
    await pause(30);
    assert.deepEqual(again.closes, [], "no more closes within the minute");
    assert.equal(c.srv.dials.length, 3, "no more reconnects");
    assert.deepEqual(c.messages(), ["hello", ...Array(51).fill(CUE), `wsr1 =${EVIL}`]);
    assert.deepEqual(again.sent, ["1"]);

    shiftClock(t, 59000);
    again.deliver(CUE);
    assert.deepEqual(again.closes, [], "59 s on: still quiet");
    shiftClock(t, 61000);
    again.deliver(CUE);
    assert.deepEqual(again.closes, [1000], "61 s on: a cue is acted on again");
    assert.ok(await until(() => c.srv.dials.length === 4, 200));
    assert.ok(c.quiet(), c.types().join(","));
  });

  it("no answer within 5 s: the same, once 5 s have passed", async (t) => {
    const c = await connect(t);
    c.b.answer = () => null; // never answers the close

    c.b.deliver(CUE);
    c.sendUpTo(2);
    await pause(4000);
    assert.equal(c.srv.dials.length, 2, "waiting for the answer");
    assert.deepEqual(c.messages(), ["hello"], "the cue is held meanwhile");
    assert.ok(await until(() => c.srv.dials.length === 3, 2000), "never gave up waiting");
    const again = c.srv.dials[2];
    again.accept("chat");
    c.b.end(1000); // the old socket's close, at last: it is gone already

    assert.deepEqual(c.messages(), ["hello", CUE]);
    assert.deepEqual(again.sent, nums(1, 2));
    assert.ok(c.quiet(), c.types().join(","));
    assert.equal(c.ws.readyState, RedirectingWebSocket.OPEN);
  });

  for (const fail of ["close 1006", "error only (undici)"]) {
    it(`a reconnect that fails (${fail}) ends the connection with what was queued`, async (t) => {
      const c = await connect(t);
      c.b.deliver(CUE);
      c.sendUpTo(2);
      assert.ok(await until(() => c.srv.dials.length === 3, 200));
      const again = c.srv.dials[2];
      if (fail === "close 1006") again.end(1006, "", false);
      else again.failHandshake();

      assert.ok(await until(() => c.types().includes("close"), 500), c.types().join(","));
      const errs = c.log.filter((e) => e.type === "error");
      assert.deepEqual(errs.map((e) => e.detail), [{ reason: "move failed", unsent: nums(1, 2) }]);
      assert.equal(c.log.at(-1).code, 1006);
      assert.equal(c.srv.dials.length, 3, "once");
    });
  }

  it("an app that closes while the cue waits for its answer gets its own close", async (t) => {
    const c = await connect(t);
    c.b.answer = () => null;

    c.b.deliver(CUE);
    c.ws.close(4000, "bye");
    assert.ok(await until(() => c.types().includes("close"), 500));
    await pause(20);
    assert.equal(c.log.at(-1).code, 4000);
    assert.equal(c.srv.dials.length, 2);
  });
});

describe("checkRedirect vets every target", () => {
  it("is asked with the target and the URL it was sent from, as a method of the helper", async (t) => {
    const asked = [];
    const c = await connect(t, { checkRedirect(url, from) { asked.push({ url, from, self: this }); return true; } });
    assert.deepEqual(asked.map(({ url, from }) => ({ url, from })), [{ url: AT_B, from: URL1 }]);
    assert.equal(asked[0].self, c.ws);
  });

  for (const tc of [
    { name: "false", check: () => false },
    { name: "a throw", check: () => { throw new Error("broken"); } },
  ]) {
    it(`a stub's redirect vetoed (${tc.name}): the URL it was on again, and a veto there ends it`, async (t) => {
      const srv = fakeServer((sock) => {
        sock.accept(SUBPROTOCOL);
        sock.end(CLOSE_REDIRECT, `wsr1 ${EVIL}/x`);
      });
      const ws = new RedirectingWebSocket(URL1, ["chat"], { WebSocket: srv.WebSocket, checkRedirect: tc.check, ...fast });
      t.after(() => ws.close());
      const log = [];
      for (const type of ["open", "close", "error", "redirect"]) ws.addEventListener(type, (e) => log.push(type + (e.code ? " " + e.code : "")));

      assert.ok(await until(() => log.some((e) => e.startsWith("close")), 500), log.join());
      assert.deepEqual(srv.dials.map((d) => d.url), [URL1, URL1], "never the vetoed target");
      assert.deepEqual(log, ["error", `close ${CLOSE_REDIRECT}`]);
    });
  }

  it("a live move vetoed: reconnected where the app was, unseen; vetoed again once served, and then ended", async (t) => {
    const c = await connect(t, { checkRedirect: (url) => !url.startsWith("ws://c.test"), moveJitterMs: 5000 });
    const MOVE_C = "wsr1 =ws://c.test";

    c.sendUpTo(2);
    c.b.closeFrame();
    c.sendUpTo(4);
    c.b.end(CLOSE_REDIRECT, MOVE_C);
    assert.ok(await until(() => c.srv.dials.length === 3, 200), "not reconnected at once");
    const again = c.srv.dials[2];
    assert.equal(again.url, AT_B);
    again.accept("chat");
    again.deliver("served again");
    assert.deepEqual(again.sent, nums(3, 4));
    assert.ok(c.quiet(), c.types().join(","));

    // Served since: a veto keeps the app where it is once more.
    again.end(CLOSE_REDIRECT, MOVE_C);
    assert.ok(await until(() => c.srv.dials.length === 4, 200));
    const third = c.srv.dials[3];
    assert.equal(third.url, AT_B);
    // Redirected again before it served anything: that veto ends it.
    third.accept(SUBPROTOCOL);
    third.end(CLOSE_REDIRECT, "wsr1 ws://c.test/ws?room=1");
    assert.deepEqual(c.types().slice(-2), ["error", "close"]);
    assert.ok(!c.types().slice(3).includes("redirect"));
    assert.equal(c.srv.dials.length, 4);
    assert.equal(JSON.parse(c.storage.raw())[URL1].to, AT_B, "the memory is as it was");
  });

  it("a cued move vetoed: reconnected where the app was, and the cue budget is not spent", async (t) => {
    let allow = false;
    const c = await connect(t, { checkRedirect: (url) => url === AT_B || allow });
    c.b.answer = () => ({ code: CLOSE_REDIRECT, reason: "wsr1 =ws://c.test" });

    c.b.deliver(CUE);
    assert.ok(await until(() => c.srv.dials.length === 3, 200));
    const again = c.srv.dials[2];
    assert.equal(again.url, AT_B);
    again.accept("chat");
    again.deliver("served");
    assert.deepEqual(c.messages(), ["hello", "served"], "the genuine cue is not the app's");

    allow = true;
    again.answer = () => ({ code: CLOSE_REDIRECT, reason: "wsr1 =ws://c.test" });
    again.deliver(CUE);
    assert.deepEqual(again.closes, [1000], "the next cue is acted on");
    assert.ok(await until(() => c.srv.dials.length === 4, 500));
    assert.equal(c.srv.dials[3].url, "ws://c.test/ws?room=1");
  });

  it("a remembered target vetoed is not dialled, and is forgotten", async (t) => {
    const srv = fakeServer((sock) => sock.accept("chat"));
    const storage = fakeStorage({ [KEY]: JSON.stringify({ [URL1]: { to: `${EVIL}/ws?room=1`, at: Date.now() } }) });
    const ws = new RedirectingWebSocket(URL1, ["chat"], {
      WebSocket: srv.WebSocket, storage, checkRedirect: (url) => !url.startsWith(EVIL),
    });
    t.after(() => ws.close());

    assert.ok(await until(() => ws.readyState === RedirectingWebSocket.OPEN, 500));
    assert.deepEqual(srv.dials.map((d) => d.url), [URL1]);
    assert.equal(ws.remembered, null);
    assert.equal(storage.raw(), null);
  });

  describe("a resolver's answer", () => {
    const realFetch = globalThis.fetch;
    after(() => { globalThis.fetch = realFetch; });

    it("vetoed, the URL given is dialled", async (t) => {
      globalThis.fetch = async () => new Response(JSON.stringify({ url: `${EVIL}/ws?room=1` }), { status: 200 });
      const srv = fakeServer((sock) => sock.accept("chat"));
      const asked = [];
      const ws = new RedirectingWebSocket(URL1, ["chat"], {
        WebSocket: srv.WebSocket, resolve: "http://resolve.test/r", storage: fakeStorage(),
        checkRedirect: (url, from) => { asked.push([url, from]); return false; },
      });
      t.after(() => ws.close());

      assert.ok(await until(() => ws.readyState === RedirectingWebSocket.OPEN, 500));
      assert.deepEqual(asked, [[`${EVIL}/ws?room=1`, URL1]]);
      assert.deepEqual(srv.dials.map((d) => d.url), [URL1]);
    });
  });
});

describe("a failed handshake that fires only error (undici)", () => {
  it("is a close 1006: the helper gives up instead of hanging", async (t) => {
    const srv = fakeServer((sock) => sock.failHandshake());
    const ws = new RedirectingWebSocket(URL1, ["chat"], { WebSocket: srv.WebSocket });
    t.after(() => ws.close());
    const log = [];
    for (const type of ["open", "close", "error"]) ws.addEventListener(type, (e) => log.push(type + (e.code ? " " + e.code : "")));

    assert.ok(await until(() => log.length === 2, 500), log.join());
    assert.deepEqual(log, ["error", "close 1006"]);
  });

  it("a remembered target that fails so is left for the URL given", async (t) => {
    const srv = fakeServer((sock) => (sock.url === URL1 ? sock.accept("chat") : sock.failHandshake()));
    const storage = fakeStorage({ [KEY]: JSON.stringify({ [URL1]: { to: AT_B, at: Date.now() } }) });
    const ws = new RedirectingWebSocket(URL1, ["chat"], { WebSocket: srv.WebSocket, storage });
    t.after(() => ws.close());
    const log = [];
    for (const type of ["open", "close", "error"]) ws.addEventListener(type, () => log.push(type));

    assert.ok(await until(() => log.length > 0, 500));
    assert.deepEqual(log, ["open"]);
    assert.deepEqual(srv.dials.map((d) => d.url), [AT_B, URL1]);
  });
});

// CLOSE_RETRY is used by the cued-retry test in queue.test.mjs; the genuine
// retry answer is pinned here too.
describe("a cued retry", () => {
  it("the answer 4503 waits and dials the URL given", async (t) => {
    const c = await connect(t);
    c.b.answer = () => ({ code: CLOSE_RETRY, reason: "wsr1 retry=0" });
    c.b.deliver(CUE);
    assert.ok(await until(() => c.srv.dials.length === 3, 500));
    assert.equal(c.srv.dials[2].url, URL1);
    assert.deepEqual(c.messages(), ["hello"]);
  });
});
