// RedirectingWebSocket's memory of redirects (issue 13): a helper made for a
// URL that an earlier one was redirected from dials the remembered target
// first, so reconnects skip the redirect; a stale memory costs one more
// redirect, a remembered target that fails falls back to the URL given.
// A fake WebSocket injected through the WebSocket option plays a fleet of
// hosts, a fake sessionStorage plays the page's. No dependencies:
//
//	node --test js/
import { after, afterEach, describe, it } from "node:test";
import assert from "node:assert/strict";

import { CLOSE_REDIRECT, CLOSE_RETRY, MAX_REMEMBERED, RedirectingWebSocket, SUBPROTOCOL } from "./wsredirect.js";
import { fakeServer, now, pause, until } from "./testing.mjs";


const URL1 = "ws://a.test/ws?room=1";
const AT_B = "ws://b.test/ws?room=1";
const AT_C = "ws://c.test/ws?room=1";
const KEY = "wsredirect.remembered";

// fakeStorage is a sessionStorage: strings in, strings out, and a count of
// writes.
function fakeStorage(items = {}) {
  const m = new Map(Object.entries(items));
  return {
    writes: 0,
    getItem(k) { return m.has(k) ? m.get(k) : null; },
    setItem(k, v) { this.writes++; m.set(k, String(v)); },
    removeItem(k) { this.writes++; m.delete(k); },
    memory() { return JSON.parse(m.get(KEY) ?? "{}"); },
  };
}

// fleet returns a WebSocket class that plays hosts: owner(url) names the
// URL that serves it now. The owner accepts with the app's protocol and
// greets; any other up host answers with a redirect stub to the owner; a
// host in down fails the handshake (1006, no open).
function fleet() {
  const f = { down: new Set(), owner: AT_B };
  // serve plays every dial; a test may wrap it.
  f.serve = (sock) => {
    if (f.down.has(new URL(sock.url).host)) return sock.end(1006, "", false); // error, then close
    if (sock.url === f.owner) {
      sock.accept("chat");
      sock.deliver("hello from " + new URL(sock.url).host);
      return;
    }
    sock.accept(SUBPROTOCOL);
    sock.end(CLOSE_REDIRECT, "wsr1 " + f.owner);
  };
  const srv = fakeServer((sock) => f.serve(sock));
  f.WebSocket = srv.WebSocket;
  f.socks = srv.dials;
  Object.defineProperty(f, "dials", { get: () => srv.dials.map((s) => s.url) }); // the URLs dialled
  return f;
}

// connect makes a helper, waits for its first app message and returns what
// it dispatched and what it dialled; the helper is closed when t ends.
async function connect(t, f, options, url = URL1) {
  const from = f.dials.length;
  const ws = new RedirectingWebSocket(url, ["chat"], { WebSocket: f.WebSocket, moveJitterMs: 1, ...options });
  t.after(() => ws.close());
  const log = [];
  for (const type of ["open", "message", "close", "error", "redirect"]) ws.addEventListener(type, () => log.push(type));
  assert.ok(await until(() => log.includes("message") || log.includes("close"), 1000), `no message: ${log}`);
  assert.ok(!log.includes("close"), `closed: ${log}`);
  return { ws, types: log, dials: f.dials.slice(from) };
}

describe("a reconnect goes straight to the remembered target", () => {
  it("redirected once, then the remembered URL is dialled first", async (t) => {
    const f = fleet();
    const storage = fakeStorage();
    const first = await connect(t, f, { storage });
    assert.deepEqual(first.dials, [URL1, AT_B]);
    assert.deepEqual(first.types, ["redirect", "open", "message"]);
    assert.equal(first.ws.remembered, null);
    assert.equal(storage.memory()[URL1].to, AT_B);

    first.ws.close();
    const again = await connect(t, f, { storage });
    assert.deepEqual(again.dials, [AT_B], "one dial, none to the URL given");
    assert.deepEqual(again.types, ["open", "message"], "no redirect to see");
    assert.equal(again.ws.remembered, AT_B);
    assert.equal(again.ws.url, AT_B);
    assert.deepEqual(again.ws.hops, []);
  });

  it("stale: the remembered node redirects onward, once, and the memory follows", async (t) => {
    const f = fleet();
    const storage = fakeStorage();
    await connect(t, f, { storage });
    f.owner = AT_C;
    const stale = await connect(t, f, { storage });
    assert.deepEqual(stale.dials, [AT_B, AT_C]);
    assert.deepEqual(stale.types, ["redirect", "open", "message"]);
    assert.equal(storage.memory()[URL1].to, AT_C);
    assert.deepEqual((await connect(t, f, { storage })).dials, [AT_C]);
  });

  it("back on the URL given: the memory is cleared", async (t) => {
    const f = fleet();
    const storage = fakeStorage();
    await connect(t, f, { storage });
    f.owner = URL1;
    assert.deepEqual((await connect(t, f, { storage })).dials, [AT_B, URL1]);
    assert.equal(storage.getItem(KEY), null);
    assert.deepEqual((await connect(t, f, { storage })).dials, [URL1]);
  });

  it("the remembered target is down: the URL given, unseen by the app", async (t) => {
    const f = fleet();
    const storage = fakeStorage();
    await connect(t, f, { storage });
    f.down.add("b.test");
    f.owner = AT_C;
    const c = await connect(t, f, { storage });
    assert.deepEqual(c.dials, [AT_B, URL1, AT_C]);
    assert.deepEqual(c.types, ["redirect", "open", "message"], "no error, no close from the failed guess");
    assert.equal(c.ws.remembered, null);
    assert.equal(storage.memory()[URL1].to, AT_C);
  });

  it("the remembered target is down and the server still sends there: its failure, once", async (t) => {
    const f = fleet();
    const storage = fakeStorage();
    await connect(t, f, { storage });
    f.down.add("b.test");
    const ws = new RedirectingWebSocket(URL1, ["chat"], { WebSocket: f.WebSocket, storage });
    t.after(() => ws.close());
    const from = f.dials.length;
    const log = [];
    for (const type of ["open", "close", "error", "redirect"]) ws.addEventListener(type, (e) => log.push(type + (e.code ? " " + e.code : "")));
    assert.ok(await until(() => log.some((e) => e.startsWith("close")), 1000), log.join());
    assert.deepEqual(f.dials.slice(from - 1), [AT_B, URL1, AT_B]);
    assert.deepEqual(log, ["redirect", "error", "close 1006"]);
    assert.equal(storage.getItem(KEY), null, "forgotten");
  });

  it("a 4503 from the remembered target sends the helper to the URL given", async (t) => {
    const f = fleet();
    const storage = fakeStorage();
    await connect(t, f, { storage });
    const serve = f.serve;
    let once = true;
    f.serve = (sock) => {
      if (sock.url === AT_B && once) {
        once = false;
        sock.accept(SUBPROTOCOL);
        return sock.end(CLOSE_RETRY, "wsr1 retry=0");
      }
      serve(sock);
    };
    const c = await connect(t, f, { storage, retryJitterMs: 0 });
    assert.deepEqual(c.dials, [AT_B, URL1, AT_B]);
  });
});

describe("what is remembered, where, for how long", () => {
  afterEach(() => { delete globalThis.sessionStorage; });

  it("sessionStorage when there is one, so a page reload benefits", async (t) => {
    const f = fleet();
    globalThis.sessionStorage = fakeStorage();
    await connect(t, f, {});
    assert.equal(globalThis.sessionStorage.memory()[URL1].to, AT_B);
    // A reload: a new page has none of the old one's objects, only its
    // sessionStorage.
    const reloaded = fleet();
    assert.deepEqual((await connect(t, reloaded, {})).dials, [AT_B]);
  });

  it("sessionStorage that throws: in memory instead", async (t) => {
    const f = fleet();
    Object.defineProperty(globalThis, "sessionStorage", {
      configurable: true, get() { throw new DOMException("denied", "SecurityError"); },
    });
    assert.deepEqual((await connect(t, f, {})).dials, [URL1, AT_B]);
    assert.deepEqual((await connect(t, f, {})).dials, [AT_B], "remembered for helpers using the same WebSocket");
    assert.deepEqual((await connect(t, fleet(), {})).dials, [URL1, AT_B], "not for another WebSocket constructor");
  });

  it("a storage whose writes fail: nothing remembered, the connection goes on", async (t) => {
    const f = fleet();
    const storage = fakeStorage();
    storage.setItem = () => { throw new DOMException("full", "QuotaExceededError"); };
    assert.deepEqual((await connect(t, f, { storage })).dials, [URL1, AT_B]);
    assert.deepEqual((await connect(t, f, { storage })).dials, [URL1, AT_B]);
  });

  it("garbage in storage reads as nothing remembered", async (t) => {
    for (const junk of ["{", "[1]", "null", JSON.stringify({ [URL1]: "ws://b.test/" }), JSON.stringify({ [URL1]: { to: AT_B } })]) {
      const f = fleet();
      const storage = fakeStorage({ [KEY]: junk });
      assert.deepEqual((await connect(t, f, { storage })).dials, [URL1, AT_B], junk);
      assert.equal(storage.memory()[URL1].to, AT_B);
    }
  });

  it("rememberMs: 0 turns it off", async (t) => {
    const f = fleet();
    const storage = fakeStorage({ [KEY]: JSON.stringify({ [URL1]: { to: AT_B, at: Date.now() } }) });
    for (let i = 0; i < 2; i++) {
      assert.deepEqual((await connect(t, f, { storage, rememberMs: 0 })).dials, [URL1, AT_B]);
    }
    assert.equal(storage.writes, 0, "nothing stored");
  });

  for (const tc of [
    { name: "default 10 minutes", options: {}, lifetime: 600000 },
    { name: "rememberMs", options: { rememberMs: 5000 }, lifetime: 5000 },
  ]) {
    it(`expires: ${tc.name}`, async (t) => {
      const realNow = Date.now;
      let now = realNow();
      Date.now = () => now;
      t.after(() => { Date.now = realNow; });
      const f = fleet();
      const storage = fakeStorage();
      const opts = { storage, ...tc.options };
      await connect(t, f, opts);
      now += tc.lifetime - 1;
      assert.deepEqual((await connect(t, f, opts)).dials, [AT_B]);
      now += 1;
      assert.deepEqual((await connect(t, f, opts)).dials, [URL1, AT_B], "a use does not extend it");
      assert.deepEqual((await connect(t, f, opts)).dials, [AT_B], "remembered afresh");
    });
  }

  it(`bounded: at most ${MAX_REMEMBERED} URLs, the oldest forgotten first`, async (t) => {
    const at = Date.now() - 1000;
    const old = Object.fromEntries(Array.from({ length: MAX_REMEMBERED }, (_, i) => [`ws://a.test/ws?room=x${i}`, { to: AT_C, at: at + i }]));
    const storage = fakeStorage({ [KEY]: JSON.stringify(old) });
    await connect(t, fleet(), { storage });
    const m = storage.memory();
    assert.equal(Object.keys(m).length, MAX_REMEMBERED);
    assert.equal(m[URL1].to, AT_B);
    assert.ok(!("ws://a.test/ws?room=x0" in m), "the oldest went");
    assert.ok("ws://a.test/ws?room=x1" in m);
  });

  it("the URL is the key: another query is another URL", async (t) => {
    const f = fleet();
    const storage = fakeStorage();
    await connect(t, f, { storage });
    f.owner = "ws://b.test/ws?room=2";
    assert.deepEqual((await connect(t, f, { storage }, "ws://a.test/ws?room=2")).dials, ["ws://a.test/ws?room=2", "ws://b.test/ws?room=2"]);
  });

  it("never from wss to a remembered ws URL", async (t) => {
    const f = fleet();
    f.owner = "wss://a.test/ws?room=1";
    const storage = fakeStorage({ [KEY]: JSON.stringify({ "wss://a.test/ws?room=1": { to: AT_B, at: Date.now() } }) });
    assert.deepEqual((await connect(t, f, { storage }, "wss://a.test/ws?room=1")).dials, ["wss://a.test/ws?room=1"]);
  });

  it("a live move is remembered too", async (t) => {
    const f = fleet();
    const storage = fakeStorage();
    const c = await connect(t, f, { storage });
    f.owner = AT_C;
    // The node the app is on drains it to c: "wsr1 =<base>" keeps path and query.
    const live = [];
    c.ws.addEventListener("message", (e) => live.push(e.data));
    f.socks.at(-1).end(CLOSE_REDIRECT, "wsr1 =ws://c.test");
    assert.ok(await until(() => live.length === 1, 1000));
    assert.equal(live[0], "hello from c.test");
    assert.equal(storage.memory()[URL1].to, AT_C);
  });
});

describe("the resolver", () => {
  const realFetch = globalThis.fetch;
  after(() => { globalThis.fetch = realFetch; });

  it("is skipped when a target is remembered, asked when it fails", async (t) => {
    const asked = [];
    globalThis.fetch = async (url) => {
      asked.push(url);
      return new Response(JSON.stringify({ url: AT_C }), { status: 200 });
    };
    const f = fleet();
    f.owner = AT_C;
    const storage = fakeStorage();
    const opts = { storage, resolve: "http://resolve.test/r" };
    assert.deepEqual((await connect(t, f, opts)).dials, [AT_C]);
    assert.equal(asked.length, 1);
    assert.equal(storage.memory()[URL1].to, AT_C, "the resolver's answer is remembered");
    assert.deepEqual((await connect(t, f, opts)).dials, [AT_C]);
    assert.equal(asked.length, 1, "not asked again");
    f.down.add("c.test");
    f.owner = AT_B;
    globalThis.fetch = async (url) => {
      asked.push(url);
      return new Response(JSON.stringify({ url: AT_B }), { status: 200 });
    };
    assert.deepEqual((await connect(t, f, opts)).dials, [AT_C, AT_B]);
    assert.equal(asked.length, 2, "asked after the remembered target failed");
  });
});
