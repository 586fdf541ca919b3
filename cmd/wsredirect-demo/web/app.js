// The demo page: rooms over RedirectingWebSocket; nodes, their operations
// and charts from /api/nodes and /api/stats, polled every half second.
import { RedirectingWebSocket } from "/wsredirect.js";

const COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#65a30d", "#db2777"];
const WORDS = ["lobby", "general", "music", "games", "books", "movies", "news", "sports", "travel", "food",
  "tech", "art", "science", "pets", "garden", "random"];
const POLL_MS = 500;
const SHOW_DONE_S = 8; // how long a finished operation's result stays on its card

const me = "guest-" + Math.random().toString(36).slice(2, 6);
let fleet = null; // as /api/nodes answers
let nodes = []; // fleet.nodes
let stats = null; // as /api/stats answers
const rooms = new Map(); // name → { ws, card, node, last, … }
const pending = new Set(); // nodes with a request of ours in flight
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

const plural = (k, word) => `${k} ${word}${k === 1 ? "" : "s"}`;
const secs = (s) => `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;

// ---- the fleet ----

async function poll() {
  try {
    const [n, s] = await Promise.all([
      fetch("/api/nodes", { cache: "no-store" }).then((r) => r.json()),
      fetch("/api/stats", { cache: "no-store" }).then((r) => r.json()),
    ]);
    fleet = n;
    nodes = n.nodes;
    stats = s;
    render();
  } catch {
    status("the front door is not answering", true);
  }
}

function render() {
  renderFront();
  renderNodes();
}

function renderFront() {
  const where = fleet.embedded ? "embedded etcd" : "etcd";
  $("summary").textContent = `${nodes.length} nodes on loopback, registered in ${where} at ${fleet.etcd}; ` +
    `rooms are sharded by name over a consistent-hash ring, and the front door sends every WebSocket to its room's node.`;
  $("front-url").textContent = fleet.front.replace(/^http:\/\//, "");
  $("etcd").textContent = `${where} ${fleet.etcd} · lease TTL ${fleet.ttl} s`;
  $("etcd-keys").textContent = `keys under ${fleet.prefix}`;
  $("clients").textContent = fleet.clients;
  for (const s of document.querySelectorAll(".settle")) s.textContent = fleet.settle;
  for (const s of document.querySelectorAll(".ttl")) s.textContent = fleet.ttl;
  const rate = stats.front.rate;
  $("front-rate").textContent = fmtRate(rate.at(-1) ?? 0);
  chart(document.querySelector(".front-chart svg"), rate, rateScale());
  const ctl = `etcdctl --endpoints ${fleet.etcd}`;
  $("etcdctl").textContent = [
    "# the fleet: members (on their nodes' leases) and drains",
    `${ctl} get --prefix ${fleet.prefix}`,
    "# drain node-1 from outside, 3 s ahead so every server hears first; its node moves its connections",
    `${ctl} put ${fleet.prefix}drains/node-1 "{\\"since\\":\\"$(date -u -d '+3 sec' +%FT%TZ)\\"}"`,
    `${ctl} del ${fleet.prefix}drains/node-1`,
    "# each node's Prometheus metrics",
    ...nodes.map((n) => `curl -s ${n.metrics} | grep ^wsredirect_`),
  ].join("\n");
}

const connScale = () => Math.max(4, ...nodes.map((n) => Math.max(0, ...(stats.nodes[n.id]?.conns ?? [0]))));
const rateScale = () => Math.max(2, ...stats.front.rate, ...nodes.map((n) => Math.max(0, ...(stats.nodes[n.id]?.rate ?? [0]))));
const fmtRate = (r) => (r >= 10 ? Math.round(r) : r.toFixed(1).replace(/\.0$/, ""));

// renderNodes updates the node cards in place, so a button is never swapped
// out from under a click.
function renderNodes() {
  const list = $("nodes");
  const cards = new Map([...list.children].map((c) => [c.dataset.node, c]));
  const cmax = connScale(), rmax = rateScale();
  for (const n of nodes) {
    let card = cards.get(n.id);
    if (!card) {
      card = $("node-card").content.firstElementChild.cloneNode(true);
      card.dataset.node = n.id;
      card.style.setProperty("--c", color(n.id));
      card.querySelector(".node-id").textContent = n.id;
      card.querySelector(".node-url").textContent = n.url;
      card.querySelector(".metrics").href = n.metrics;
      for (const b of card.querySelectorAll("button")) {
        b.dataset.node = n.id;
        b.onclick = () => control(n.id, b.dataset.action, b);
      }
      card.querySelector(".crash").dataset.action = "crash";
      list.append(card);
    }
    card.dataset.state = n.state;
    card.classList.toggle("draining", n.state === "draining");
    card.querySelector(".pill").textContent = { serving: "serving", draining: "draining", down: "crashed", gone: "gone" }[n.state];

    const series = stats.nodes[n.id] ?? { conns: [], rate: [] };
    const conns = card.querySelector(".conns");
    conns.querySelector("b").textContent = n.conns;
    chart(conns.querySelector("svg"), series.conns ?? [], cmax);
    const rate = card.querySelector(".rate");
    rate.querySelector("b").textContent = fmtRate(series.rate.at(-1) ?? 0);
    chart(rate.querySelector("svg"), series.rate, rmax);

    card.querySelector(".stats").textContent = n.up ? `${plural(n.conns, "connection")} in ${plural(n.rooms, "room")}` : "not running";
    const here = [...rooms].filter(([, r]) => r.node === n.id).map(([name]) => name);
    card.querySelector(".chips").replaceChildren(...here.map((name) => el("span", { className: "chip", textContent: "#" + name })));
    renderProgress(card, n);

    const busy = pending.has(n.id) || !!n.op?.active;
    const main = card.querySelector(".primary-action");
    main.dataset.action = !n.up ? "restart" : n.draining ? "undrain" : "drain";
    main.textContent = { restart: "Restart", undrain: "Undrain", drain: "Drain" }[main.dataset.action];
    main.className = "primary-action " + (n.up && !n.draining ? "warn" : "secondary");
    main.disabled = busy;
    const crash = card.querySelector(".crash");
    crash.hidden = !n.up;
    crash.disabled = busy;
  }
}

// renderProgress shows the node's operation: under way, or just done.
function renderProgress(card, n) {
  const box = card.querySelector(".progress");
  const o = n.op;
  let text = "", frac = null, kind = "";
  if (!o?.active && (n.state === "down" || n.state === "gone")) {
    kind = "crash";
    if (o?.kind === "restart" && o.phase === "failed") text = `restart failed: ${o.error}`;
    else if (n.state === "down") {
      text = n.leaseLeft > 0 ? `crashed: etcd drops it when its lease expires, in ${secs(n.leaseLeft)}…` : "crashed: lease expiring…";
      frac = 1 - (n.leaseLeft ?? 0) / fleet.ttl;
    } else text = "crashed: its lease expired and its rooms moved to the other nodes";
  } else if (o && (o.active || o.age < SHOW_DONE_S || (o.kind === "drain" && n.draining))) {
    kind = o.kind;
    const counts = `${o.moved} moved · ${o.cut} cut · ${o.remaining} left`;
    const share = () => (o.moved + o.cut + o.remaining > 0 ? (o.moved + o.cut) / (o.moved + o.cut + o.remaining) : 1);
    if (o.phase === "failed") text = `${o.kind} failed: ${o.error}`;
    else if (o.kind === "drain") {
      if (o.phase === "starting" || o.phase === "writing") text = "writing the drain record to etcd…";
      else if (o.phase === "settling") { text = `draining in ${secs(o.in)}…`; frac = 1 - o.in / fleet.settle; }
      else if (o.active) { text = `moving its connections: ${counts}`; frac = share(); }
      else text = `drained: ${plural(o.moved, "connection")} moved, ${o.cut} cut, in ${secs(o.took)}`;
    } else if (o.kind === "undrain" || o.kind === "restart") {
      const what = o.kind === "undrain" ? "undrain" : "new registration";
      if (o.phase === "starting" || o.phase === "registering") text = "registering on a new lease…";
      else if (o.phase === "spreading") text = `the ${what} reaches every server through etcd…`;
      else if (o.active) { text = `moving its rooms back: ${counts}`; frac = share(); }
      else text = `${o.kind === "undrain" ? "undrained" : "restarted on a new lease"}: ${plural(o.moved, "connection")} moved back in ${secs(o.took)}`;
    }
  }
  box.hidden = !text;
  box.dataset.kind = kind;
  box.classList.toggle("error", o?.phase === "failed");
  box.querySelector(".progress-text").textContent = text;
  const bar = box.querySelector(".bar");
  bar.hidden = frac === null;
  bar.firstElementChild.style.width = `${Math.round(Math.min(1, Math.max(0, frac ?? 0)) * 100)}%`;
}

// chart draws values (oldest first, one per sample) into svg, scaled to
// max, right-aligned so the newest sample is at the right edge.
function chart(svg, values, max) {
  const w = 119, h = 40, n = 120;
  const pts = values.slice(-n).map((v, i, a) => [w - (a.length - 1 - i) * (w / (n - 1)), h - 1 - (v / max) * (h - 3)]);
  const line = pts.length ? "M" + pts.map(([x, y]) => `${x.toFixed(2)},${y.toFixed(2)}`).join("L") : "";
  svg.querySelector(".line").setAttribute("d", line);
  svg.querySelector(".area").setAttribute("d", pts.length ? `${line}L${w},${h}L${pts[0][0].toFixed(2)},${h}Z` : "");
}

async function control(id, action, button) {
  if (!action) return;
  pending.add(id);
  button.disabled = true;
  status({ drain: `draining ${id}…`, undrain: `undraining ${id}…`, crash: `crashing ${id}…`, restart: `restarting ${id}…` }[action]);
  try {
    const res = await fetch(`/api/nodes/${encodeURIComponent(id)}/${action}`, { method: "POST" });
    const body = await res.json();
    if (!res.ok) status(body.error || res.statusText, true);
    else if (action === "drain") status(`${id} is drained: ${plural(body.moved, "connection")} moved to their rooms' next owners`);
    else if (action === "undrain") status(`${id} is back: ${plural(body.moved, "connection")} moved home`);
    else if (action === "crash") status(`${id} crashed without revoking its lease: watch it expire`);
    else status(`${id} restarted on a new lease: ${plural(body.moved, "connection")} moved back`);
  } catch (e) {
    status(String(e), true);
  }
  pending.delete(id);
  await poll();
}

async function clients(query) {
  try {
    const res = await fetch(`/api/clients?${query}`, { method: "POST" });
    const body = await res.json();
    if (!res.ok) status(body.error || res.statusText, true);
  } catch (e) {
    status(String(e), true);
  }
  await poll();
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
  const room = { name, card, node: null, last: null, ws: null, left: false, lost: 0 };
  rooms.set(name, room);
  $("rooms").prepend(card);
  $("empty").hidden = true;
  connect(room);

  card.querySelector(".say").onsubmit = (e) => {
    e.preventDefault();
    const input = e.target.querySelector("input");
    if (!input.value.trim() || room.ws?.readyState !== RedirectingWebSocket.OPEN) return;
    room.ws.send(JSON.stringify({ from: me, text: input.value.trim() }));
    input.value = "";
  };
  card.querySelector(".leave").onclick = () => {
    room.left = true;
    clearTimeout(room.retry);
    room.ws?.close();
    rooms.delete(name);
    card.remove();
    $("empty").hidden = rooms.size > 0;
    renderNodes();
  };
}

// connect opens the room's WebSocket through the front door. The helper
// follows redirects and moves; a connection that breaks (its node
// crashed) is opened again after a pause, as an app would: until the
// node's lease expires the front door still sends the room there.
function connect(room) {
  const url = new URL("/rooms/" + encodeURIComponent(room.name), location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  // A short move jitter: a real fleet spreads reconnects over a second or
  // more, a demo should move while you watch.
  const ws = new RedirectingWebSocket(url.href, ["demo.chat"], { moveJitterMs: 300 });
  room.ws = ws;
  let via = null;

  ws.addEventListener("redirect", (e) => {
    if (e.detail.live) {
      note(room, `${room.last} hands the room off: moving…`);
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
      else if (room.lost) note(room, `reconnected on ${m.node}` + (from !== m.node ? ` (${from} is gone)` : ""));
      else if (from !== m.node) note(room, `moved from ${from} to ${m.node}`);
      room.lost = 0;
      renderNodes(); // the chips
    } else {
      line(room, m.from, m.text);
    }
  };
  ws.onclose = (e) => {
    if (room.left || room.ws !== ws) return;
    room.node = null;
    const delay = Math.min(4000, 1000 * 2 ** Math.min(room.lost, 2));
    if (room.lost === 0) note(room, `connection lost (${e.code}${e.reason ? " " + e.reason : ""}): reconnecting…`);
    room.lost++;
    badge(room, null, "reconnecting…");
    room.retry = setTimeout(() => connect(room), delay);
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
$("add-clients").onclick = () => clients("add=50");
$("remove-clients").onclick = () => clients("remove=all");

await poll();
setInterval(poll, POLL_MS);
window.ready = true; // tests start once the nodes are shown
