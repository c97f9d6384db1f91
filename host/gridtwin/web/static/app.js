// GridTwin web view: hash-routed pages over /api/ui/*, kept live by server-sent events (/api/ui/events).
// Hand-written, no framework and no chart library: the charts are a few SVG paths (see docs/web.md).
"use strict";

const $main = document.getElementById("main");
const $live = document.getElementById("live");
const PLANT = ["pv_array", "buck_converter", "electrolyser", "gas_separator", "h2_tank", "battery"];
const RANGES = [["5 min", 300e3], ["15 min", 900e3], ["1 h", 3600e3]];
let view = null;          // what the page shows: {name, ...its state}
let skew = 0;             // server clock - this clock, ms
let started = null;       // the daemon's start time: a new one means a restart, so reload
let es = null;
const freq = {};          // grid bus -> recent [t, f_hz] for its sparkline

function esc(s) {
  return String(s == null ? "" : s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
    "'": "&#39;"}[c]));
}
function fmt(v, digits) {
  if (v == null || v === "") return "–";
  if (typeof v !== "number") return esc(v);
  const a = Math.abs(v);
  const d = digits != null ? digits : (a >= 1000 ? 0 : a >= 100 ? 1 : a >= 1 ? 2 : 3);
  return v.toFixed(d);
}
function ago(ms) {
  if (ms == null) return "never";
  const s = Math.max(0, (Date.now() + skew - ms) / 1000);
  if (s < 90) return s.toFixed(0) + " s ago";
  if (s < 5400) return (s / 60).toFixed(0) + " min ago";
  return (s / 3600).toFixed(1) + " h ago";
}
function clock(ms) { return ms == null ? "–" : new Date(ms).toLocaleTimeString(); }
function badge(state) { return `<span class="badge s-${esc(state)}">${esc(state)}</span>`; }
async function api(path) {
  const r = await fetch(path, {cache: "no-store"});
  if (r.status === 401) { location.href = "/ui/login"; throw new Error("log in first"); }  // HTTPS beyond loopback
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}
function note(data) {
  if (data.now) skew = data.now - Date.now();
}

// -- routing -------------------------------------------------------------------------------------
function route() {
  const h = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  const parts = h.split("/").filter(Boolean);
  document.querySelectorAll("nav a").forEach(a => a.classList.toggle("on",
    a.dataset.nav === (parts[0] || "fleet") || (parts[0] === "node" && a.dataset.nav === "fleet")));
  if (parts[0] === "node" && parts[1]) return showNode(parts[1]);
  if (parts[0] === "twin") return showTwin();
  if (parts[0] === "alerts") return showAlerts();
  if (parts[0] === "energy") return showEnergy();
  return showFleet();
}
function failed(err) {
  $main.innerHTML = `<p class="muted">Cannot load this page: ${esc(err.message)}.
    It retries when the daemon is back.</p>`;
}
window.addEventListener("hashchange", route);

// -- fleet ---------------------------------------------------------------------------------------
async function showFleet() {
  view = {name: "fleet"};
  try { renderFleet(await api("/api/ui/fleet")); } catch (e) { failed(e); }
}
function renderFleet(d) {
  note(d);
  if (view.name !== "fleet") return;
  view.nodes = d.nodes;
  const counts = {};
  d.nodes.forEach(n => { counts[n.state] = (counts[n.state] || 0) + 1; });
  const rows = d.nodes.map(n => `<tr id="n-${esc(n.id)}">
    <td><a href="#/node/${encodeURIComponent(n.id)}">${esc(n.id)}</a></td><td>${badge(n.state)}</td>
    <td class="ls" data-ms="${n.last_seen == null ? "" : n.last_seen}">${ago(n.last_seen)}</td>
    <td class="num">${fmt(n.rssi, 0)}</td><td class="num">${fmt(n.heap, 0)}</td><td>${esc(n.fw || "–")}</td>
    <td class="num">${fmt(n.drops, 0)}</td><td class="num">${fmt(n.outbox, 0)}</td><td>${esc(n.role || "")}</td></tr>`);
  $main.innerHTML = `<h1>Fleet <span class="muted">${d.nodes.length} nodes · ${Object.entries(counts)
    .map(([s, c]) => `${c} ${esc(s)}`).join(" · ")}</span></h1>
    <div class="scroll"><table id="fleet"><thead><tr><th>node</th><th>state</th><th>last seen</th><th>RSSI dBm</th>
    <th>heap B</th><th>firmware</th><th>drops</th><th>outbox</th><th>role</th></tr></thead>
    <tbody>${rows.join("")}</tbody></table></div>`;
}
function tickAges() {
  document.querySelectorAll("td.ls").forEach(td => {
    td.textContent = ago(td.dataset.ms === "" ? null : Number(td.dataset.ms));
  });
}
setInterval(tickAges, 1000);

// -- a node --------------------------------------------------------------------------------------
async function showNode(id) {
  view = {name: "node", id, metric: null, range: 3600e3, since: null, until: null, points: []};
  try { renderNode(await api(`/api/ui/node?id=${encodeURIComponent(id)}`)); } catch (e) { failed(e); }
}
function renderNode(d) {
  note(d);
  if (view.name !== "node" || view.id !== d.node.id) return;
  const n = d.node;
  view.units = {};
  d.metrics.forEach(m => { view.units[m.name] = m.unit; });
  const numeric = d.metrics.filter(m => typeof m.value === "number" || m.value == null);
  if (!view.metric || !view.units.hasOwnProperty(view.metric)) view.metric = (numeric[0] || d.metrics[0] || {}).name;
  const sensors = d.metrics.map(m => `<tr><td>${esc(m.name)}</td>
    <td class="num" id="v-${esc(m.name)}">${fmt(m.value)}</td>
    <td>${esc(m.unit)}</td><td class="msg muted">${esc(m.description)}</td></tr>`).join("");
  const logs = d.logs.slice().reverse().map(l => `<tr><td>${clock(l.ts || l.received)}</td><td>${esc(l.lvl)}</td>
    <td>${esc(l.mod)}</td><td class="msg">${esc(l.msg)}</td></tr>`).join("");
  const cmds = d.commands.map(c => `<tr><td>${clock(c.created)}</td><td>${esc(c.cmd)}</td>
    <td class="msg">${esc(c.args)}</td><td>${badge(c.state)}</td>
    <td class="msg">${esc(c.ok === 0 ? c.err || c.result : c.result)}</td>
    <td>${c.finished ? clock(c.finished) : "–"}</td></tr>`).join("");
  $main.innerHTML = `<h1><a href="#/">Fleet</a> / ${esc(n.id)} ${badge(n.state)}</h1>
    <div class="cards">
      <div class="card"><div class="muted">last seen</div><div class="big ls-node">${ago(n.last_seen)}</div></div>
      <div class="card"><div class="muted">RSSI</div><div class="big">${fmt(n.rssi, 0)} dBm</div></div>
      <div class="card"><div class="muted">heap free / min</div>
        <div class="big">${fmt(n.heap, 0)} / ${fmt(n.heap_min, 0)}</div></div>
      <div class="card"><div class="muted">firmware</div><div class="big">${esc(n.fw || "–")}</div></div>
      <div class="card"><div class="muted">drops · outbox</div>
        <div class="big">${fmt(n.drops, 0)} · ${fmt(n.outbox, 0)}</div></div>
    </div>
    <h2>Sensors</h2>
    <div class="scroll"><table id="sensors">
    <thead><tr><th>metric</th><th>value</th><th>unit</th><th>what</th></tr></thead>
    <tbody>${sensors || '<tr><td colspan="4" class="muted">no readings yet</td></tr>'}</tbody></table></div>
    <h2>Chart</h2>
    <div class="controls"><select id="metric">${numeric.map(m =>
      `<option${m.name === view.metric ? " selected" : ""}>${esc(m.name)}</option>`).join("")}</select>
      ${RANGES.map(([l, ms]) => `<button data-range="${ms}">${l}</button>`).join("")}
      <span class="muted" id="range-note">drag across the chart to zoom</span></div>
    <div class="chart" id="chart"></div>
    <h2>Commands</h2>
    ${d.buttons.length ? `<div class="controls">${d.buttons.map(c =>
      `<button data-cmd="${esc(c)}">${esc(c)}</button>`).join("")}
      <span id="cmd-result" class="muted"></span></div>` : ""}
    <div class="scroll"><table id="commands"><thead><tr><th>sent</th><th>command</th><th>args</th><th>ack</th>
    <th>result</th><th>done</th></tr></thead>
    <tbody>${cmds || '<tr><td colspan="6" class="muted">none</td></tr>'}</tbody></table></div>
    <h2>Log</h2>
    <div class="scroll"><table id="logs">
    <thead><tr><th>time</th><th>level</th><th>module</th><th>message</th></tr></thead>
    <tbody>${logs || '<tr><td colspan="4" class="muted">no log lines</td></tr>'}</tbody></table></div>`;
  view.lastSeen = n.last_seen;
  document.getElementById("metric").addEventListener("change", e => { view.metric = e.target.value; loadSeries(); });
  document.querySelectorAll("[data-range]").forEach(b => b.addEventListener("click", () => {
    view.range = Number(b.dataset.range); view.since = view.until = null; loadSeries();
  }));
  document.querySelectorAll("[data-cmd]").forEach(b => b.addEventListener("click", () => sendCommand(b.dataset.cmd)));
  loadSeries();
}
async function sendCommand(cmd) {
  const out = document.getElementById("cmd-result");
  out.textContent = `${cmd}: waiting for the ack ...`;
  try {
    const r = await fetch("/api/ui/cmd", {method: "POST", headers: {"Content-Type": "application/json",
      "X-Requested-With": "gridtwin"}, body: JSON.stringify({node: view.id, cmd})});
    const d = await r.json();
    const said = d.ack ? JSON.stringify(d.ack.result || d.ack.err || "") : "";
    out.textContent = d.ack ? `${cmd}: ${d.ack.ok ? "ok" : "refused"} ${said}`
      : `${cmd}: ${d.error}${d.hint ? " (" + d.hint + ")" : ""}`;
  } catch (e) { out.textContent = `${cmd}: ${e.message}`; }
}
async function loadSeries() {
  if (!view.metric) return;
  const live = view.since == null;
  const until = live ? Date.now() + skew : view.until;
  const since = live ? until - view.range : view.since;
  document.querySelectorAll("[data-range]").forEach(b =>
    b.classList.toggle("on", live && Number(b.dataset.range) === view.range));
  document.getElementById("range-note").textContent = live ? "live · drag across the chart to zoom"
    : `${clock(since)} – ${clock(until)} · pick a range to go live again`;
  try {
    const d = await api(`/api/ui/series?node=${encodeURIComponent(view.id)}&metric=${encodeURIComponent(view.metric)}`
      + `&since=${Math.round(since)}&until=${Math.round(until)}`);
    if (view.name !== "node" || d.metric !== view.metric) return;
    view.points = d.points;
    view.window = [since, until];
    drawChart();
  } catch (e) { /* the stream's reconnect reloads the page */ }
}
function drawChart() {
  const box = document.getElementById("chart");
  if (!box) return;
  const W = Math.max(300, box.clientWidth - 12), H = 220, L = 48, R = 8, T = 8, B = 22;
  const [t0, t1] = view.window;
  const pts = view.points;
  let lo = Infinity, hi = -Infinity;
  pts.forEach(p => { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); });
  if (!pts.length) { lo = 0; hi = 1; }
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
  const x = t => L + (t - t0) / (t1 - t0) * (W - L - R), y = v => T + (hi - v) / (hi - lo) * (H - T - B);
  const path = pts.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
  let grid = "";
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4, yy = y(v).toFixed(1);
    grid += `<line x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}" stroke="#eceff3"/>
      <text x="${L - 4}" y="${yy}" dy="4" text-anchor="end" font-size="10" fill="#6b7480">${fmt(v)}</text>`;
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + (t1 - t0) * i / 4, xx = x(t).toFixed(1);
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    grid += `<text x="${xx}" y="${H - 6}" text-anchor="${anchor}" font-size="10" fill="#6b7480">${
      new Date(t - skew).toLocaleTimeString()}</text>`;
  }
  box.innerHTML = `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" id="chart-svg">${grid}
    <text x="${L + 4}" y="${T + 10}" font-size="11" fill="#1c2430">${esc(view.metric)} ${
      esc(view.units[view.metric] || "")} · ${pts.length} points</text>
    <path d="${path}" fill="none" stroke="#1d4e89" stroke-width="1.5" vector-effect="non-scaling-stroke"/>
    <rect id="sel" x="0" y="${T}" width="0" height="${H - T - B}" fill="rgba(29,78,137,.15)"/></svg>`;
  const svg = box.firstElementChild, sel = svg.querySelector("#sel");
  const toT = ev => { const r = svg.getBoundingClientRect(); const px = (ev.clientX - r.left) / r.width * W;
    return t0 + (Math.min(W - R, Math.max(L, px)) - L) / (W - L - R) * (t1 - t0); };
  let from = null;
  svg.addEventListener("pointerdown", ev => { from = toT(ev); svg.setPointerCapture(ev.pointerId); });
  svg.addEventListener("pointermove", ev => {
    if (from == null) return;
    const a = x(Math.min(from, toT(ev))), b = x(Math.max(from, toT(ev)));
    sel.setAttribute("x", a); sel.setAttribute("width", b - a);
  });
  svg.addEventListener("pointerup", ev => {
    if (from == null) return;
    const to = toT(ev), a = Math.min(from, to), b = Math.max(from, to);
    from = null;
    if (b - a > 2000) { view.since = a; view.until = b; loadSeries(); } else sel.setAttribute("width", 0);
  });
}
function nodeReading(r, at) {
  Object.entries(r.m).forEach(([k, v]) => {
    const td = document.getElementById("v-" + k);
    if (!td) return;
    td.textContent = typeof v === "number" ? fmt(v) : String(v);
    td.classList.remove("flash"); void td.offsetWidth; td.classList.add("flash");  // restarts the animation
  });
  const ls = document.querySelector(".ls-node");
  if (ls) { view.lastSeen = at; ls.textContent = ago(at); }
  const v = r.m[view.metric];
  if (view.since == null && typeof v === "number" && view.window) {
    const until = Date.now() + skew;
    view.window = [until - view.range, until];
    view.points.push([r.ts, v]);
    while (view.points.length && view.points[0][0] < view.window[0]) view.points.shift();
    drawChart();
  }
}
setInterval(() => {
  const ls = document.querySelector(".ls-node");
  if (ls && view && view.name === "node") ls.textContent = ago(view.lastSeen);
}, 1000);

// -- the twin ------------------------------------------------------------------------------------
async function showTwin() {
  view = {name: "twin"};
  try { renderTwin(await api("/api/ui/twin")); } catch (e) { failed(e); }
}
function renderTwin(d) {
  if (view.name !== "twin") return;
  view.topology = d.topology; view.units = d.units || {};
  $main.innerHTML = `<h1>Twin <span class="muted" id="twin-t"></span></h1>
    <h2>Grid frequency</h2><div class="cards" id="grid"></div>
    <h2>Power chain</h2><div class="diagram" id="diagram"></div>
    <h2>Electrolyser plant</h2><div class="scroll" id="plant"></div>`;
  twinState({t: d.t, components: d.components});
}
function twinState(doc) {
  if (!view || view.name !== "twin") return;
  const comps = doc.components || {};
  const t = document.getElementById("twin-t");
  t.textContent = doc.t == null ? "no twin state yet (is the twin running?)" : `t = ${fmt(doc.t, 1)} s`;
  Object.entries(comps).filter(([, c]) => c.kind === "grid_bus").forEach(([id, c]) => {
    const s = freq[id] = (freq[id] || []).concat([[doc.t, c.m.f_hz]]).slice(-120);
    void s;
  });
  document.getElementById("grid").innerHTML = Object.entries(comps).filter(([, c]) => c.kind === "grid_bus")
    .map(([id, c]) => `<div class="card"><div class="muted">${esc(id)} ${badge(c.status)}</div>
      <div class="big" id="f-${esc(id)}">${fmt(c.m.f_hz, 3)} Hz</div>${spark(freq[id])}
      <div class="muted">RoCoF ${fmt(c.m.rocof_hzs, 4)} Hz/s · load ${fmt(c.m.load_mw, 0)} MW</div></div>`).join("")
    || '<p class="muted">no grid bus in this twin</p>';
  document.getElementById("diagram").innerHTML = diagram(view.topology.filter(c => c.kind !== "grid_bus"), comps);
  const plant = view.topology.filter(c => PLANT.includes(c.kind) && comps[c.id]);
  document.getElementById("plant").innerHTML = plant.length ? `<table id="plant-table">
    <thead><tr><th>element</th><th>kind</th>
    <th>state</th><th>values</th></tr></thead><tbody>${plant.map(c => `<tr><td>${esc(c.id)}</td><td>${esc(c.kind)}</td>
    <td>${badge(comps[c.id].status)}</td><td class="msg">${Object.entries(comps[c.id].m).map(([k, v]) =>
      `${esc(k)} <b>${fmt(v)}</b>${esc(view.units[k] ? " " + view.units[k] : "")}`).join(" · ")}</td></tr>`)
      .join("")}</tbody></table>`
    : '<p class="muted">no electrolyser plant in this twin</p>';
}
function spark(s) {
  if (!s || s.length < 2) return "";
  const vs = s.map(p => p[1]), lo = Math.min(...vs), hi = Math.max(...vs, lo + 1e-6);
  const d = s.map((p, i) =>
    `${i ? "L" : "M"}${(i / (s.length - 1) * 160).toFixed(1)},${(30 - (p[1] - lo) / (hi - lo) * 28 + 1).toFixed(1)}`)
    .join("");
  return `<svg width="160" height="32" viewBox="0 0 160 32"><path d="${d}" fill="none" stroke="#1d4e89"/></svg>`;
}
function diagram(topo, comps) {
  // one-line diagram: each element one column right of its furthest parent, lines parent -> child
  const depth = {}, rows = {}, pos = {};
  topo.forEach(c => { depth[c.id] = Math.max(-1, ...c.parents.map(p => depth[p] == null ? -1 : depth[p])) + 1; });
  topo.forEach(c => { const d = depth[c.id]; rows[d] = (rows[d] || 0) + 1; pos[c.id] = [d, rows[d] - 1]; });
  const BW = 124, BH = 54, GX = 26, GY = 14;
  const W = (Math.max(0, ...Object.values(depth)) + 1) * (BW + GX) + 10;
  const H = Math.max(1, ...Object.values(rows)) * (BH + GY) + 10;
  const xy = id => [10 + pos[id][0] * (BW + GX), 10 + pos[id][1] * (BH + GY)];
  let lines = "", boxes = "";
  topo.forEach(c => c.parents.filter(p => pos[p]).forEach(p => {
    const [x1, y1] = xy(p), [x2, y2] = xy(c.id), on = comps[c.id] && comps[c.id].m.energized !== 0;
    const ya = y1 + BH / 2, yb = y2 + BH / 2;
    lines += `<path d="M${x1 + BW},${ya} C${x1 + BW + GX / 2},${ya} ${x2 - GX / 2},${yb} ${x2},${yb}" fill="none"
      stroke="${on ? "#1f8a4c" : "#b8bec7"}" stroke-width="2"/>`;
  }));
  const colour = {ok: "#1f8a4c", normal: "#1f8a4c", running: "#1f8a4c", off: "#8a8f98", fault: "#c62828",
    tripped: "#c62828"};
  topo.forEach(c => {
    const [x, y] = xy(c.id), s = comps[c.id] || {m: {}, status: "unknown"};
    const p = s.m.p_kw != null ? `${fmt(s.m.p_kw)} kW` : s.m.p_bar != null ? `${fmt(s.m.p_bar)} bar`
      : s.m.hto_pct != null ? `HTO ${fmt(s.m.hto_pct)} %` : "";
    const edge = colour[s.status] || "#c77d00";
    boxes += `<g id="el-${esc(c.id)}">
      <rect x="${x}" y="${y}" width="${BW}" height="${BH}" rx="5" fill="#fff" stroke="${edge}" stroke-width="2"/>
      <text x="${x + 8}" y="${y + 16}" font-size="12" font-weight="600">${esc(c.id)}</text>
      <text x="${x + BW - 8}" y="${y + 16}" font-size="10" text-anchor="end" fill="${edge}">${esc(s.status)}</text>
      <text x="${x + 8}" y="${y + 31}" font-size="10" fill="#6b7480">${esc(c.kind)}</text>
      <text x="${x + 8}" y="${y + 47}" font-size="12" class="p">${esc(p)}</text></g>`;
  });
  return `<svg width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" id="oneline">${lines}${boxes}</svg>`;
}

// -- alerts --------------------------------------------------------------------------------------
async function showAlerts() {
  view = {name: "alerts"};
  try { renderAlerts(await api("/api/ui/alerts")); } catch (e) { failed(e); }
}
function alertRows(list, history) {
  return list.slice().reverse().map(a => `<tr><td>${clock(a.ts)}</td><td>${badge(a.severity)}</td>
    <td>${esc(a.kind)}</td>
    <td>${a.node ? `<a href="#/node/${encodeURIComponent(a.node)}">${esc(a.node)}</a>` : ""}</td>
    <td class="msg">${esc(a.message)}</td>
    ${history ? `<td>${a.active ? "active" : "cleared " + clock(a.cleared)}</td>` : ""}</tr>`).join("");
}
function renderAlerts(d) {
  if (view.name !== "alerts") return;
  $main.innerHTML = `<h1>Alerts <span class="muted">${d.active.length} active</span></h1>
    <h2>Active</h2><div class="scroll"><table id="active">
    <thead><tr><th>since</th><th>severity</th><th>kind</th><th>node</th><th>message</th></tr></thead>
    <tbody>${alertRows(d.active, false) || '<tr><td colspan="5" class="muted">none</td></tr>'}</tbody></table></div>
    <h2>History</h2><div class="scroll"><table id="history">
    <thead><tr><th>raised</th><th>severity</th><th>kind</th><th>node</th><th>message</th><th>state</th></tr></thead>
    <tbody>${alertRows(d.history, true) || '<tr><td colspan="6" class="muted">none</td></tr>'}</tbody></table></div>`;
}

// -- energy --------------------------------------------------------------------------------------
const KPI_UNITS = {energy_kwh: "kWh", avg_kw: "kW", peak_kw: "kW", load_factor: "", pf_mean: "", h2_nm3: "Nm³",
  specific_kwh_nm3: "kWh/Nm³", efficiency_pct: "%", battery_discharge_kwh: "kWh", generation_kwh: "kWh",
  import_kwh: "kWh", consumption_kwh: "kWh", renewable_share_pct: "%", pue: ""};
async function showEnergy() {
  view = {name: "energy"};
  try { renderEnergy(await api("/api/ui/energy")); } catch (e) { failed(e); }
}
function renderEnergy(d) {
  if (view.name !== "energy") return;
  const cards = Object.entries(d.site).map(([k, v]) => `<div class="card"><div class="muted">${esc(k)}</div>
    <div class="big">${fmt(v)} ${esc(KPI_UNITS[k] || "")}</div></div>`).join("");
  const cols = [...new Set(d.nodes.flatMap(n => Object.keys(n).filter(k => k !== "id")))];
  const rows = d.nodes.map(n => `<tr><td><a href="#/node/${encodeURIComponent(n.id)}">${esc(n.id)}</a></td>
    ${cols.map(c => `<td class="num">${fmt(n[c])}</td>`).join("")}</tr>`).join("");
  const upto = d.last_bucket ? " · up to " + clock(d.last_bucket) : "";
  $main.innerHTML = `<h1>Energy <span class="muted">last 24 h${upto}</span></h1>
    <h2>Site</h2><div class="cards" id="site-kpi">${cards
      || '<p class="muted">no KPIs yet (analytics computes them from power readings)</p>'}</div>
    <h2>Nodes</h2><div class="scroll"><table id="node-kpi"><thead><tr><th>node</th>${cols.map(c =>
      `<th>${esc(c)}${KPI_UNITS[c] ? " " + esc(KPI_UNITS[c]) : ""}</th>`).join("")}</tr></thead>
    <tbody>${rows || '<tr><td class="muted">none yet</td></tr>'}</tbody></table></div>`;
}
setInterval(() => {  // KPIs are written per aggregation bucket, not per reading: a reload now and then
  if (view && view.name === "energy") api("/api/ui/energy").then(renderEnergy, () => {});
}, 10000);

// -- live ----------------------------------------------------------------------------------------
let refetching = {};
function soon(what, fn) {  // at most one reload of a part at a time, and at most one a second
  if (refetching[what]) return;
  refetching[what] = setTimeout(() => { refetching[what] = null; fn(); }, 300);
}
function connect() {
  es = new EventSource("/api/ui/events");
  es.addEventListener("hello", ev => {
    const d = JSON.parse(ev.data);
    note(d);
    $live.textContent = "live"; $live.classList.remove("down");
    const restarted = started != null && started !== d.started;
    const reconnected = view && view.lost;
    started = d.started;
    if (restarted || reconnected) route();  // the daemon restarted, or we missed events: reload this page
  });
  es.addEventListener("reading", ev => {
    const d = JSON.parse(ev.data);
    if (!view) return;
    d.readings.forEach(r => {
      if (view.name === "node" && r.node === view.id) nodeReading(r, d.at);
      if (view.name === "fleet") {
        const td = document.querySelector(`#n-${CSS.escape(r.node)} td.ls`);
        if (td) { td.dataset.ms = d.at; td.textContent = ago(d.at); }
      }
    });
  });
  es.addEventListener("twin", ev => twinState(JSON.parse(ev.data)));
  es.addEventListener("changed", ev => {
    const d = JSON.parse(ev.data);
    if (!view) return;
    if (d.what === "fleet" && view.name === "fleet")
      soon("fleet", () => api("/api/ui/fleet").then(renderFleet, () => {}));
    if ((d.what === "commands" || d.what === "fleet") && view.name === "node" && d.nodes.includes(view.id))
      soon("node", () => api(`/api/ui/node?id=${encodeURIComponent(view.id)}`).then(renderNode, () => {}));
    if (d.what === "alerts" && view.name === "alerts")
      soon("alerts", () => api("/api/ui/alerts").then(renderAlerts, () => {}));
  });
  es.onerror = () => {
    $live.textContent = "reconnecting"; $live.classList.add("down");
    if (view) view.lost = true;
    // refused (beyond loopback after a restart: 401), so a new stream; api() goes to the login on a 401
    if (es.readyState === EventSource.CLOSED) {
      es.close(); api("/api/ui/fleet").catch(() => {}); setTimeout(connect, 1000);
    }
  };
}
connect();
route();
