// The helper's close-frame parsers against the Go package's test vectors
// (wire/testdata/vectors.json, read by wire/wire_test.go too), so the
// browser and the server cannot drift apart. No dependencies:
//
//	node --test js/
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import {
  CLOSE_REDIRECT, CLOSE_RETRY, CUE, CUE_ANSWER_MS, CUE_QUIET_MS, SUBPROTOCOL, isCue, isRedirectMessage, parseRedirect, parseRetry,
} from "./wsredirect.js";

const read = (rel) => readFileSync(new URL(rel, import.meta.url), "utf8");
const vectors = JSON.parse(read("../wire/testdata/vectors.json"));

describe("constants match package wire", () => {
  // Read from the Go source rather than copied, so a change there fails here.
  const src = read("../wire/wire.go");
  const goConst = (name, pattern) => {
    const m = src.match(new RegExp(`\\b${name}\\s*=\\s*${pattern}`));
    assert.ok(m, `wire/wire.go no longer declares ${name}`);
    return m[1];
  };
  it("CLOSE_REDIRECT is wire.CloseRedirect", () => {
    assert.equal(CLOSE_REDIRECT, Number(goConst("CloseRedirect", "(\\d+)")));
    assert.equal(CLOSE_REDIRECT, 4307);
  });
  it("CLOSE_RETRY is wire.CloseRetry", () => {
    assert.equal(CLOSE_RETRY, Number(goConst("CloseRetry", "(\\d+)")));
    assert.equal(CLOSE_RETRY, 4503);
  });
  it("SUBPROTOCOL is wire.Subprotocol", () => {
    assert.equal(SUBPROTOCOL, goConst("Subprotocol", '"([^"]*)"'));
    assert.equal(SUBPROTOCOL, "wsredirect.v1");
  });
  it("CUE is wire.Cue, as the vectors give it", () => {
    assert.equal(CUE, vectors.cue);
    assert.equal(CUE, goConst("Cue", '"([^"]*)"'));
  });
  it("the cue's timings are wire.CueAnswerWait and wire.CueQuiet, as the vectors give them", () => {
    assert.equal(CUE_ANSWER_MS, vectors.cueAnswerMs);
    assert.equal(CUE_QUIET_MS, vectors.cueQuietMs);
  });
});

// Each list must be there: a renamed key would otherwise pass vacuously.
const cases = (key) => {
  const list = vectors[key];
  assert.ok(Array.isArray(list) && list.length > 0, `vectors.json has no ${key} cases`);
  return list;
};

describe("parseRedirect", () => {
  for (const v of cases("parseRedirect")) {
    it(v.name, () => {
      assert.equal(parseRedirect(v.reason, v.lastMessage, v.current), v.target,
        `parseRedirect(${JSON.stringify(v.reason)}, ${JSON.stringify(v.lastMessage)}, ${JSON.stringify(v.current)})`);
    });
  }
});

describe("parseRetry", () => {
  for (const v of cases("parseRetry")) {
    it(v.name, () => {
      assert.equal(parseRetry(v.reason), v.seconds, `parseRetry(${JSON.stringify(v.reason)})`);
    });
  }
});

describe("isRedirectMessage", () => {
  for (const v of cases("isRedirectMessage")) {
    it(v.name, () => assert.equal(isRedirectMessage(v.message), v.is));
  }
});

describe("isCue", () => {
  for (const v of cases("isCue")) {
    it(v.name, () => assert.equal(isCue(v.message), v.is, `isCue(${JSON.stringify(v.message)})`));
  }
  it("a message that is not text is no cue", () => {
    assert.equal(isCue(new TextEncoder().encode(vectors.cue)), false);
    assert.equal(isCue(null), false);
  });
});

// What the Go server encodes, the helper reads back.
describe("reads what Go encodes", () => {
  const current = "wss://a.example.com/rooms/1?token=t%2Bt";
  for (const v of cases("encodeRedirect")) {
    it(`redirect: ${v.name}`, () => {
      assert.equal(isRedirectMessage(v.message), v.message !== "");
      assert.equal(parseRedirect(v.reason, v.message || null, current), v.target);
    });
  }
  for (const v of cases("encodeMove").filter((v) => v.reason !== null)) {
    it(`move: ${v.name}`, () => {
      assert.equal(parseRedirect(v.reason, null, current), v.base.replace(/\/$/, "") + "/rooms/1?token=t%2Bt");
    });
  }
  for (const v of cases("encodeRetry")) {
    it(`retry: ${v.name}`, () => {
      // wire.RetrySeconds: rounded up, at least 0, at most a day.
      const secs = Math.min(Math.ceil(Math.max(v.afterMs, 0) / 1000), 86400);
      assert.equal(parseRetry(v.reason), secs);
    });
  }
});
