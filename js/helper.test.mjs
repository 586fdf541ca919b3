// RedirectingWebSocket against fake servers: a WebSocket class injected
// through the helper's WebSocket option plays the server, and a stubbed
// fetch plays the resolver. These pin the limits a hostile or broken server
// must not get around (issue 11): the hop cap holds until the app has been
// served, reconnects back off, and no wait a server asks for is longer than
// maxRetryDelayMs. Real timers with small option values; every test ends
// within a bound of its own. No dependencies:
//
//	node --test js/
import { after, afterEach, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";

import { CLOSE_REDIRECT, CLOSE_RETRY, RedirectingWebSocket, SUBPROTOCOL } from "./wsredirect.js";
import { fakeServer, now, pause, until as untilEvery } from "./testing.mjs";

const until = (cond, ms) => untilEvery(cond, ms, 5);

// connect starts a helper and records what it dispatches; the helper is
// closed when the test t ends, whatever happened.
function connect(t, url, protocols, options) {
  const ws = new RedirectingWebSocket(url, protocols, options);
  t.after(() => ws.close());
  const log = [];
  for (const type of ["open", "message", "close", "error", "redirect"]) {
    ws.addEventListener(type, (e) => log.push({ type, at: now(), code: e.code, reason: e.reason, data: e.data, detail: e.detail }));
  }
  return { ws, log, types: () => log.map((e) => e.type), closed: () => log.some((e) => e.type === "close") };
}

// redirectToSelf is a server that keeps redirecting every dial to the URL
// dialled, after a hold that makes the helper count the socket as the app's.
const redirectToSelf = ({ protocol = "", holdMs }) => fakeServer((sock) => {
  sock.accept(protocol);
  setTimeout(() => sock.end(CLOSE_REDIRECT, "wsr1 " + sock.url), holdMs);
});

const URL1 = "ws://a.test/ws?room=1";

describe("hop cap holds until the app is served", () => {
  for (const tc of [
    // Without the marker a socket counts as the app's after settleMs.
    { name: "no marker: held past settleMs, then 4307 to itself", protocols: [], protocol: "", holdMs: 20 },
    // With the marker a socket counts as the app's at once when the server
    // selects another protocol.
    { name: "marker offered, app protocol selected, then 4307 to itself", protocols: ["chat"], protocol: "chat", holdMs: 5 },
  ]) {
    it(tc.name, async (t) => {
      const srv = redirectToSelf(tc);
      const c = connect(t, URL1, tc.protocols, {
        WebSocket: srv.WebSocket, settleMs: 10, moveJitterMs: 1, backoffMs: 1, maxBackoffMs: 4,
      });

      const gaveUp = await until(c.closed, 1500);

      assert.ok(gaveUp, `the helper never gave up: ${srv.dials.length} dials in 1.5 s`);
      assert.equal(srv.dials.length, 11, "the first dial and maxHops (10) redirects");
      assert.deepEqual(c.types().slice(-2), ["error", "close"], "given up as for any redirect it will not follow");
      const closed = c.log.at(-1);
      assert.equal(closed.code, CLOSE_REDIRECT);
      assert.equal(closed.reason, "wsr1 " + URL1);
      assert.equal(c.types().filter((t) => t === "redirect").length, 10);
      assert.equal(c.ws.readyState, RedirectingWebSocket.CLOSED);
      await pause(50);
      assert.equal(srv.dials.length, 11, "nothing dialled after giving up");
    });
  }

  it("maxHops applies to such a chain too", async (t) => {
    const srv = redirectToSelf({ protocol: "chat", holdMs: 2 });
    const c = connect(t, URL1, ["chat"], { WebSocket: srv.WebSocket, maxHops: 3, moveJitterMs: 1, backoffMs: 1, maxBackoffMs: 2 });

    assert.ok(await until(c.closed, 1000), `the helper never gave up: ${srv.dials.length} dials`);
    assert.equal(srv.dials.length, 4);
  });

  it("an option given as undefined keeps its default", async (t) => {
    const srv = redirectToSelf({ protocol: "chat", holdMs: 2 });
    const c = connect(t, URL1, ["chat"], {
      WebSocket: srv.WebSocket, maxHops: undefined, moveJitterMs: 1, backoffMs: 1, maxBackoffMs: 2,
    });

    assert.ok(await until(c.closed, 1000), `the helper never gave up: ${srv.dials.length} dials`);
    assert.equal(srv.dials.length, 11);
  });

  it("a 4503 after an unserved app socket counts against maxRetries", async (t) => {
    const srv = fakeServer((sock) => {
      sock.accept("");
      setTimeout(() => sock.end(CLOSE_RETRY, "wsr1 retry=0"), 20);
    });
    const c = connect(t, URL1, [], { WebSocket: srv.WebSocket, settleMs: 10, retryJitterMs: 1, backoffMs: 1, maxBackoffMs: 4 });

    assert.ok(await until(c.closed, 1500), `the helper never gave up: ${srv.dials.length} dials in 1.5 s`);
    assert.equal(srv.dials.length, 6, "the first dial and maxRetries (5) retries");
    assert.deepEqual(c.types().slice(-2), ["error", "close"]);
    assert.equal(c.log.at(-1).code, CLOSE_RETRY);
  });

  it("a connection that delivered a message starts a new chain", async (t) => {
    // Fifteen moves, more than maxHops, each after an app message: a
    // fleet moving a live page around, which must go on being followed.
    const srv = fakeServer((sock, n) => {
      sock.accept("");
      sock.deliver(`hello ${n}`);
      if (n < 15) setTimeout(() => sock.end(CLOSE_REDIRECT, `wsr1 ws://n${n + 1}.test/ws?room=1`), 2);
    });
    const c = connect(t, URL1, [], { WebSocket: srv.WebSocket, settleMs: 10, moveJitterMs: 1 });

    assert.ok(await until(() => c.log.filter((e) => e.type === "message").length === 16, 2000), c.types().join(","));
    assert.equal(srv.dials.length, 16);
    assert.ok(!c.closed());
    assert.equal(c.ws.readyState, RedirectingWebSocket.OPEN);
    assert.equal(c.ws.url, "ws://n15.test/ws?room=1");
    assert.deepEqual(c.ws.hops, ["ws://n15.test/ws?room=1"], "the hops since the last served connection");
  });

  it("a held redirect message is not an app message", async (t) => {
    // The out-of-band target ("wsr1 <url>" then "wsr1 +") on a socket
    // offered no marker, still pending, reaches the app as nothing, so it
    // does not end the chain.
    const srv = fakeServer((sock) => {
      sock.accept("");
      sock.deliver("wsr1 " + sock.url);
      sock.end(CLOSE_REDIRECT, "wsr1 +");
    });
    const c = connect(t, URL1, [], { WebSocket: srv.WebSocket, settleMs: 200, moveJitterMs: 1, backoffMs: 1, maxBackoffMs: 2 });

    assert.ok(await until(c.closed, 1000), `the helper never gave up: ${srv.dials.length} dials`);
    assert.equal(srv.dials.length, 11);
    assert.ok(!c.types().includes("message"));
  });

  it("redirect stubs (marker selected) are followed without a backoff", async (t) => {
    const srv = fakeServer((sock, n) => {
      if (n < 10) {
        sock.accept(SUBPROTOCOL);
        sock.end(CLOSE_REDIRECT, `wsr1 ws://n${n + 1}.test/ws?room=1`);
      } else {
        sock.accept("chat");
        sock.deliver("hello");
      }
    });
    const c = connect(t, URL1, ["chat"], { WebSocket: srv.WebSocket, backoffMs: 1000 });

    assert.ok(await until(() => c.types().includes("message"), 500), c.types().join(","));
    assert.equal(srv.dials.length, 11, "ten hops: at the cap, not over it");
    assert.deepEqual(c.types(), [...Array(10).fill("redirect"), "open", "message"]);
  });
});

describe("backoff between reconnects of unserved app sockets", () => {
  let random;
  beforeEach(() => { random = Math.random; Math.random = () => 0.999; });
  afterEach(() => { Math.random = random; });

  it("doubles from backoffMs up to maxBackoffMs", async (t) => {
    const srv = redirectToSelf({ protocol: "chat", holdMs: 0 });
    const c = connect(t, URL1, ["chat"], { WebSocket: srv.WebSocket, maxHops: 6, moveJitterMs: 0, backoffMs: 40, maxBackoffMs: 100 });

    assert.ok(await until(c.closed, 3000), `the helper never gave up: ${srv.dials.length} dials`);
    assert.equal(srv.dials.length, 7);
    const gaps = srv.dials.slice(1).map((d, i) => d.at - srv.dials[i].at);
    // With Math.random near 1 each wait is its whole bound: 40, 80, then
    // 100 (not 160, 320, 640) once the bound is reached.
    const want = [40, 80, 100, 100, 100, 100];
    for (const [i, w] of want.entries()) {
      assert.ok(gaps[i] >= w - 2, `wait ${i + 1}: ${gaps[i].toFixed(1)} ms, want at least ${w}: ${gaps.map((g) => g.toFixed(0))}`);
      assert.ok(gaps[i] < w + 100, `wait ${i + 1}: ${gaps[i].toFixed(1)} ms, want about ${w}: ${gaps.map((g) => g.toFixed(0))}`);
    }
  });
});

describe("a 4503's delay is capped by maxRetryDelayMs", () => {
  // retry stubs with the marker and closes with a 4503 asking for secs.
  const retry = (secs) => fakeServer((sock, n) => {
    if (n === 0) {
      sock.accept(SUBPROTOCOL);
      sock.end(CLOSE_RETRY, `wsr1 retry=${secs}`);
    } else {
      sock.accept("chat");
      sock.deliver("hello");
    }
  });

  for (const secs of [31, 86400]) {
    it(`retry=${secs}: over the 30 s default, given up at once`, async (t) => {
      const srv = retry(secs);
      const c = connect(t, URL1, ["chat"], { WebSocket: srv.WebSocket });

      assert.ok(await until(c.closed, 300), `still waiting after 300 ms: ${c.types()}`);
      assert.deepEqual(c.types(), ["error", "close"]);
      assert.equal(c.log[1].code, CLOSE_RETRY);
      assert.equal(c.log[1].reason, `wsr1 retry=${secs}`);
      assert.equal(srv.dials.length, 1);
    });
  }

  it("retry=30: at the default cap, waited for", async (t) => {
    const srv = retry(30);
    const c = connect(t, URL1, ["chat"], { WebSocket: srv.WebSocket });

    await pause(150);
    assert.deepEqual(c.types(), [], "waiting, silently");
    assert.equal(c.ws.readyState, RedirectingWebSocket.CONNECTING);
    assert.equal(srv.dials.length, 1);
  });

  it("maxRetryDelayMs sets the cap", async (t) => {
    const over = retry(1);
    const c1 = connect(t, URL1, ["chat"], { WebSocket: over.WebSocket, maxRetryDelayMs: 500, retryJitterMs: 0 });
    const at = retry(0);
    const c2 = connect(t, URL1, ["chat"], { WebSocket: at.WebSocket, maxRetryDelayMs: 0, retryJitterMs: 0 });

    assert.ok(await until(() => c1.closed() && c2.types().includes("message"), 300), `${c1.types()} / ${c2.types()}`);
    assert.deepEqual(c1.types(), ["error", "close"]);
    assert.deepEqual(c2.types(), ["open", "message"]);
    assert.equal(at.dials.length, 2);
  });
});

describe("a resolver's wait is capped by maxRetryDelayMs", { concurrency: true }, () => {
  // Each test has a resolver prefix of its own; fetch is routed by it.
  const resolvers = new Map();
  const realFetch = globalThis.fetch;
  globalThis.fetch = async (url) => {
    for (const [prefix, r] of resolvers) {
      if (url.startsWith(prefix + "/")) {
        r.asked.push(url);
        return r.answer(r.asked.length - 1);
      }
    }
    throw new TypeError(`no resolver for ${url}`);
  };
  after(() => { globalThis.fetch = realFetch; });
  let n = 0;
  const resolver = (answer) => {
    const r = { prefix: `http://resolve.test/r${n++}`, answer, asked: [] };
    resolvers.set(r.prefix, r);
    return r;
  };
  const refuse = (body, headers = {}) => () => new Response(body === undefined ? "" : JSON.stringify(body),
    { status: 503, headers: { "Content-Type": "application/json", ...headers } });
  // The socket side answers what the resolver did: no node now, and for
  // longer than the cap.
  const refusing = () => fakeServer((sock) => {
    sock.accept(SUBPROTOCOL);
    sock.end(CLOSE_RETRY, "wsr1 retry=86400");
  });

  for (const tc of [
    // Far past what setTimeout can hold (2^31-1 ms, about 24.8 days),
    // which would fire at once.
    { name: "retryAfter 9223372035", body: { retryAfter: 9223372035 } },
    { name: "retryAfter 1e400 (Infinity)", raw: '{"retryAfter":1e400}' },
    { name: "Retry-After: 100000 (27 hours)", body: {}, headers: { "Retry-After": "100000" } },
    { name: "Retry-After as a date a year away", body: {}, headers: { "Retry-After": new Date(Date.now() + 365 * 86400e3).toUTCString() } },
    { name: "retryAfter 31", body: { retryAfter: 31 } },
  ]) {
    it(`${tc.name}: the resolver is not asked again; the dial's close code decides`, async (t) => {
      const r = resolver(tc.raw
        ? () => new Response(tc.raw, { status: 503, headers: { "Content-Type": "application/json" } })
        : refuse(tc.body, tc.headers));
      const srv = refusing();
      const c = connect(t, URL1, ["chat"], { WebSocket: srv.WebSocket, resolve: r.prefix, retryJitterMs: 1 });

      assert.ok(await until(c.closed, 400), `no close after 400 ms: ${r.asked.length} resolves, ${srv.dials.length} dials`);
      assert.equal(r.asked.length, 1, "asked once");
      assert.equal(srv.dials.length, 1);
      assert.equal(srv.dials[0].url, URL1, "the URL asked about");
      assert.deepEqual(c.types(), ["error", "close"]);
      assert.equal(c.log[1].code, CLOSE_RETRY);
    });
  }

  it("retryAfter 30: at the cap, waited for", async (t) => {
    const r = resolver(refuse({ retryAfter: 30 }));
    const srv = refusing();
    const c = connect(t, URL1, ["chat"], { WebSocket: srv.WebSocket, resolve: r.prefix });

    await pause(200);
    assert.equal(r.asked.length, 1);
    assert.equal(srv.dials.length, 0);
    assert.deepEqual(c.types(), []);
  });

  for (const tc of [
    { name: "retryAfter -5", body: { retryAfter: -5 } },
    { name: "retryAfter \"soon\"", body: { retryAfter: "soon" } },
    { name: "Retry-After: -5", body: {}, headers: { "Retry-After": "-5" } },
    { name: "Retry-After: soon", body: {}, headers: { "Retry-After": "soon" } },
    { name: "a body that is null", body: null },
    { name: "no body, no Retry-After", body: undefined },
  ]) {
    it(`${tc.name}: unusable, so the default second`, async (t) => {
      const r = resolver((i) => i === 0
        ? refuse(tc.body, tc.headers)()
        : new Response(JSON.stringify({ url: "ws://b.test/ws?room=1" }), { status: 200 }));
      const srv = fakeServer((sock) => { sock.accept("chat"); sock.deliver("hello"); });
      const c = connect(t, URL1, ["chat"], { WebSocket: srv.WebSocket, resolve: r.prefix, retryJitterMs: 0 });

      await pause(500);
      assert.equal(r.asked.length, 1, "not asked again at once");
      assert.equal(srv.dials.length, 0, "not dialled at once");
      assert.ok(await until(() => c.types().includes("message"), 1500), `${r.asked.length} resolves, ${c.types()}`);
      assert.equal(r.asked.length, 2);
      assert.equal(srv.dials[0].url, "ws://b.test/ws?room=1", "the second answer was used");
    });
  }
});
