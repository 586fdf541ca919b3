// victim.mjs runs RedirectingWebSocket (js/wsredirect.js) in Node over real
// sockets, for the e2e attack tests (attack_test.go): one helper per entry
// of the protocols list, all dialling url, sharing one memory of redirects
// (as the helpers of a page share its sessionStorage).
//
//	node victim.mjs ws|builtin <url> <options JSON> <protocols JSON, e.g. [["chat"],[]]>
//
// ws: the ws package's WebSocket; builtin: Node's own (undici; Node 20
// needs --experimental-websocket). Every event a helper dispatches is
// printed as one JSON line: { victim, type, url, protocol, readyState,
// hops, data, code, reason, detail }. Commands come one JSON object a line
// on stdin: { cmd: "send", victim, data }; { cmd: "state", victim, id },
// answered by { type: "state", id, victim, readyState, url, memory };
// { cmd: "exit" }. Anything thrown is printed as { victim, type: "thrown",
// data }.
import { createInterface } from "node:readline";

import { RedirectingWebSocket } from "../../js/wsredirect.js";

const [impl, url, options = "{}", protocolSets = "[[]]"] = process.argv.slice(2);
if (!url || (impl !== "ws" && impl !== "builtin")) {
  console.error("usage: node victim.mjs ws|builtin ws://host/path [options JSON] [protocols JSON]");
  process.exit(2);
}
const WebSocket = impl === "ws" ? (await import("ws")).WebSocket : globalThis.WebSocket;
if (typeof WebSocket !== "function") {
  console.error("victim.mjs: no WebSocket (Node 20 needs --experimental-websocket for builtin)");
  process.exit(2);
}

const KEY = "wsredirect.remembered";
const items = new Map();
const storage = {
  getItem: (k) => items.get(k) ?? null,
  setItem: (k, v) => { items.set(k, String(v)); },
  removeItem: (k) => { items.delete(k); },
};

const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

const victims = JSON.parse(protocolSets).map((protocols, victim) => {
  const ws = new RedirectingWebSocket(url, protocols, { ...JSON.parse(options), WebSocket, storage });
  for (const type of ["open", "message", "close", "error", "redirect"]) {
    ws.addEventListener(type, (e) => {
      const ev = { victim, type, url: ws.url, protocol: ws.protocol, readyState: ws.readyState, hops: [...ws.hops] };
      if (type === "message") ev.data = typeof e.data === "string" ? e.data : `(binary ${e.data?.byteLength ?? e.data?.size})`;
      if (type === "close") Object.assign(ev, { code: e.code, reason: e.reason });
      if (e.detail !== undefined) ev.detail = e.detail;
      out(ev);
    });
  }
  return ws;
});

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const m = JSON.parse(line);
  const ws = victims[m.victim];
  try {
    switch (m.cmd) {
      case "send":
        ws.send(m.data);
        break;
      case "state":
        out({ type: "state", id: m.id, victim: m.victim, readyState: ws.readyState, url: ws.url, memory: storage.getItem(KEY) });
        break;
      case "exit":
        for (const v of victims) v.close();
        setTimeout(() => process.exit(0), 100);
        break;
    }
  } catch (err) {
    out({ victim: m.victim, type: "thrown", data: String(err) });
  }
});
rl.on("close", () => process.exit(0));
