// The demo page: rooms over RedirectingWebSocket, nodes from /api/nodes.
import { RedirectingWebSocket } from "/wsredirect.js";

const COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#65a30d", "#db2777"];
const WORDS = ["lobby", "general", "music", "games", "books", "movies", "news", "sports", "travel", "food",
  "tech", "art", "science", "pets", "garden", "random"];

const me = "guest-" + Math.random().toString(36).slice(2, 6);
let nodes = []; // as /api/nodes lists them
const rooms = new Map(); // name → { ws, card, node }
const busy = new Set(); // nodes with a drain or undrain in flight
const $ = (id) => document.getElementById(id);

function color(id) {
  const i = nodes.findIndex((n) => n.id === id);
  return i < 0 ? "#64748b" : COLORS[i % COLORS.length];
}

function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

// ---- nodes ----

async function refreshNodes() {
  try {
    const res = await fetch("/api/nodes", { cache: "no-store" });
    nodes = (await res.json()).nodes;
    renderNodes();
  } catch {
    status("the front door is not answering");
  }
}

// renderNodes updates the node cards in place, so a button is never swapped
// out from under a click.
function renderNodes() {
  const list = $("nodes");
  const cards = new Map([...list.children].map((c) => [c.dataset.node, c]));
  for (const n of nodes) {
    let card = cards.get(n.id);
    if (!card) {
      card = el("article", { className: "node" },
        el("div", { className: "node-head" },
          el("span", { className: "dot" }), el("strong", { textContent: n.id }), el("span", { className: "pill" })),
        el("div", { className: "url", textContent: n.url }),
        el("div", { className: "stats" }),
        el("div", { className: "chips" }),
        el("button"));
      card.dataset.node = n.id;
      card.style.setProperty("--c", color(n.id));
      const button = card.querySelector("button");
      button.dataset.node = n.id;
      button.onclick = () => control(n.id, button.dataset.action, button);
      list.append(card);
    }
    const here = [...rooms].filter(([, r]) => r.node === n.id).map(([name]) => name);
    card.classList.toggle("draining", n.draining);
    card.querySelector(".pill").textContent = n.draining ? "draining" : "serving";
    card.querySelector(".stats").textContent = `${plural(n.conns, "connection")} · ${plural(n.rooms, "room")}`;
    card.querySelector(".chips").replaceChildren(...here.map((name) => el("span", { className: "chip", textContent: "#" + name })));
    const button = card.querySelector("button");
    button.dataset.action = n.draining ? "undrain" : "drain";
    button.textContent = n.draining ? "Undrain" : "Drain";
    button.className = n.draining ? "secondary" : "danger";
    button.disabled = busy.has(n.id);
  }
  $("summary").textContent = `${nodes.length} nodes on loopback, rooms sharded by name over a consistent-hash ring. ` +
    `The front door (${location.host}) sends every WebSocket to its room's node.`;
}

const plural = (k, word) => `${k} ${word}${k === 1 ? "" : "s"}`;

async function control(id, action, button) {
  busy.add(id);
  button.disabled = true;
  status(`${action === "drain" ? "draining" : "undraining"} ${id}…`);
  try {
    const res = await fetch(`/api/nodes/${encodeURIComponent(id)}/${action}`, { method: "POST" });
    const body = await res.json();
    if (!res.ok) status(body.error || res.statusText, true);
    else if (action === "drain") status(`${id} is draining: ${plural(body.moved, "connection")} moved to the rooms' next owners`);
    else status(`${id} is back: ${plural(body.moved, "connection")} moved home`);
  } catch (e) {
    status(String(e), true);
  }
  busy.delete(id);
  await refreshNodes();
}

function status(text, error = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", error);
}

// ---- rooms ----

function join(raw) {
  const name = raw.trim().toLowerCase().replace(/[^a-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40);
  if (!name || rooms.has(name)) return;
  const card = $("room-card").content.firstElementChild.cloneNode(true);
  card.dataset.room = name;
  card.querySelector(".room-name").textContent = "#" + name;
  // node serves the room now (null while moving); last served it before.
  const room = { card, node: null, last: null, ws: null };
  rooms.set(name, room);
  $("rooms").prepend(card);
  $("empty").hidden = true;

  const url = new URL("/rooms/" + encodeURIComponent(name), location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  // A short move jitter: a real fleet spreads reconnects over a second or
  // more, a demo should move while you watch.
  const ws = new RedirectingWebSocket(url.href, ["demo.chat"], { moveJitterMs: 300 });
  room.ws = ws;
  let via = null;

  ws.addEventListener("redirect", (e) => {
    if (e.detail.live) {
      note(room, `${room.last} is draining: moving…`);
      badge(room, null, "moving…");
    } else {
      via = "front door";
    }
  });
  ws.onmessage = (e) => {
    let m;
    try { m = JSON.parse(e.data); } catch { return; }
    if (m.node) {
      const from = room.last;
      room.last = m.node;
      badge(room, m.node);
      if (!from) note(room, `joined on ${m.node}` + (via ? ` (sent there by the ${via} with a 4307 close)` : ""));
      else if (from !== m.node) note(room, `moved from ${from} to ${m.node}`);
      refreshNodes(); // the node's counts changed too
    } else {
      line(room, m.from, m.text);
    }
  };
  ws.onclose = (e) => {
    badge(room, null, `closed (${e.code})`);
    note(room, `connection closed: ${e.code}${e.reason ? " " + e.reason : ""}`);
    room.node = null;
    renderNodes();
  };
  card.querySelector(".say").onsubmit = (e) => {
    e.preventDefault();
    const input = e.target.querySelector("input");
    if (!input.value.trim() || ws.readyState !== RedirectingWebSocket.OPEN) return;
    ws.send(JSON.stringify({ from: me, text: input.value.trim() }));
    input.value = "";
  };
  card.querySelector(".leave").onclick = () => {
    ws.close();
    rooms.delete(name);
    card.remove();
    $("empty").hidden = rooms.size > 0;
    renderNodes();
  };
}

function badge(room, node, text) {
  const b = room.card.querySelector(".node-badge");
  room.node = node;
  b.textContent = node ?? text;
  b.dataset.node = node ?? "";
  b.classList.toggle("pending", !node);
  room.card.style.setProperty("--c", node ? color(node) : "#94a3b8");
}

function note(room, text) {
  append(room, el("li", { className: "note", textContent: text }));
}

function line(room, from, text) {
  append(room, el("li", {}, el("b", { textContent: (from || "anonymous") + (from === me ? " (you)" : "") }), " ", text));
}

function append(room, item) {
  const log = room.card.querySelector(".log");
  log.append(item);
  while (log.children.length > 50) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
}

$("join").onsubmit = (e) => {
  e.preventDefault();
  join($("room").value);
  $("room").value = "";
};
$("random").onclick = () => {
  const free = WORDS.filter((w) => !rooms.has(w));
  for (let i = 0; i < 3 && free.length; i++) join(free.splice(Math.floor(Math.random() * free.length), 1)[0]);
};

await refreshNodes();
setInterval(refreshNodes, 1000);
window.ready = true; // tests start once the nodes are shown
