"""The status page: one server-rendered HTML document and a small vanilla script (no front-end build).

The script polls ``/api/v1/…`` every ``web.refresh_s`` seconds and draws each symbol's closes as inline SVG with
the allowed signals marked.  Tokens typed into the page stay in ``sessionStorage`` (gone with the tab) and travel
only in request headers (``Authorization`` for reads, ``X-Write-Token`` for actions), never in a cookie or URL:
see :mod:`ultra_signals.web.security` for why that is the CSRF defence.  Every value is inserted with
``textContent`` / SVG attributes, never as HTML, so a symbol or reason string cannot inject markup.
"""

from __future__ import annotations

import html as _html

#: Scripts only from this server (no inline script, no eval); inline styles for the one stylesheet.
CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_STYLE = """
:root { --bg:#0f1419; --card:#1a2029; --fg:#e6e6e6; --dim:#8b949e; --ok:#2ea043; --warn:#d29922; --bad:#f85149;
  --acc:#58a6ff; }
* { box-sizing:border-box; }
body { margin:0; font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; background:var(--bg);
  color:var(--fg); }
header { display:flex; flex-wrap:wrap; gap:.5rem 1rem; align-items:center; padding:.75rem 1rem;
  background:var(--card); position:sticky; top:0; z-index:1; }
header h1 { font-size:1.1rem; margin:0; }
.state { font-weight:700; padding:.2rem .6rem; border-radius:1rem; color:#000; }
.state.ACTIVE { background:var(--ok); } .state.REDUCING { background:var(--warn); }
.state.HALTED { background:var(--bad); } .state.PAUSED { background:var(--warn); } .state.unknown { background:var(--dim); }
main { display:grid; gap:1rem; padding:1rem; grid-template-columns:repeat(auto-fit,minmax(min(100%,22rem),1fr)); }
section { background:var(--card); border-radius:.5rem; padding:.75rem 1rem; min-width:0; overflow-x:auto; }
section h2 { font-size:.95rem; margin:0 0 .5rem; color:var(--dim); text-transform:uppercase; letter-spacing:.05em; }
table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
td, th { text-align:left; padding:.2rem .3rem; border-bottom:1px solid #2a313c; font-size:.9rem; white-space:nowrap; }
td:last-child { white-space:normal; }
.dim { color:var(--dim); } .LONG { color:var(--ok); } .SHORT { color:var(--bad); }
.bar { height:.6rem; background:#2a313c; border-radius:.3rem; overflow:hidden; }
.bar > div { height:100%; background:var(--acc); }
.bar.full > div { background:var(--bad); }
.controls { display:flex; flex-wrap:wrap; gap:.5rem; align-items:center; }
input { background:var(--bg); color:var(--fg); border:1px solid #2a313c; border-radius:.3rem; padding:.5rem;
  font-size:1rem; min-width:0; flex:1 1 12rem; }
button { font-size:1rem; padding:.55rem .9rem; border-radius:.3rem; border:0; background:var(--acc); color:#000;
  cursor:pointer; }
button.danger { background:var(--bad); } button.warn { background:var(--warn); }
svg { width:100%; height:auto; display:block; }
#msg { min-height:1.2em; font-size:.9rem; }
.wide { grid-column:1/-1; }
"""

SCRIPT = r"""
"use strict";
const API = "/api/v1";
const REFRESH_MS = Number(document.body.dataset.refresh || "2") * 1000;
const $ = (id) => document.getElementById(id);
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function svgEl(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}
function readHeaders() {
  const t = sessionStorage.getItem("readToken");
  return t ? { "Authorization": "Bearer " + t } : {};
}
async function get(path) {
  const r = await fetch(API + path, { headers: readHeaders(), cache: "no-store" });
  if (!r.ok) {
    let why = r.status + "";
    try { const j = await r.json(); why = j.detail || j.error || why; } catch (_) {}
    throw new Error(path + ": " + why);
  }
  return r.json();
}
function row(cells, cls) {
  const tr = el("tr");
  cells.forEach((c, i) => tr.appendChild(el("td", c, cls && cls[i])));
  return tr;
}
function fill(id, rows) { const t = $(id); t.replaceChildren(...rows); }

function renderStatus(s) {
  const run = s.run || {};
  $("run-id").textContent = run.run_id || "no run yet";
  $("run-meta").textContent = [run.mode, run.source, run.simulated ? "SIMULATED" : "", "v" + s.version]
    .filter(Boolean).join(" · ");
  const state = s.trading.state === "ACTIVE" && s.paused ? "PAUSED" : s.trading.state;
  const st = $("state");
  st.textContent = state;
  st.className = "state " + (["ACTIVE", "REDUCING", "HALTED", "PAUSED"].includes(state) ? state : "unknown");
  st.title = s.trading.line;
  const up = run.uptime_s == null ? "-" : Math.round(run.uptime_s) + " s";
  const rows = [
    row(["trading", s.trading.line]), row(["paused", s.paused ? "yes" : "no"]),
    row(["market time", s.market_time || "-"]), row(["counters", s.counter_backend || "-"]),
    row(["uptime", up]), row(["status", run.status || "-"]),
  ];
  for (const [sym, age] of Object.entries(s.data_age_s || {}))
    rows.push(row(["data age " + sym, age == null ? "no data" : age.toFixed(1) + " s"]));
  for (const t of s.trips || []) rows.push(row(["breaker " + t.breaker, t.detail], [null, "dim"]));
  fill("status-rows", rows);
}
function capRow(w) {
  const tr = el("tr");
  tr.appendChild(el("td", w.name));
  tr.appendChild(el("td", w.used + " / " + (w.cap == null ? "-" : w.cap), "cap-" + w.name));
  const td = el("td");
  const bar = el("div", null, "bar" + (w.cap != null && w.used >= w.cap ? " full" : ""));
  const inner = el("div");
  inner.style.width = (w.cap ? Math.min(100, 100 * w.used / w.cap) : 0) + "%";
  bar.appendChild(inner); td.appendChild(bar); tr.appendChild(td);
  return tr;
}
function renderCaps(c) {
  const rows = c.windows.map(capRow);
  for (const [sym, ws] of Object.entries(c.per_symbol || {}))
    for (const w of ws) rows.push(capRow({ ...w, name: sym + " " + w.name }));
  fill("caps-rows", rows);
}
function renderDecisions(d) {
  fill("decision-rows", d.decisions.map((x) => row(
    [x.time.slice(11, 16), x.symbol, x.side, x.allowed ? "ALLOWED" : x.reason, x.score.toFixed(2)],
    [null, null, x.side, x.allowed ? "LONG" : "dim", null])));
}
function renderSignals(d) {
  const px = (v) => String(Number(v.toPrecision(6)));
  const rows = d.signals.map((x) => row(
    [x.time.slice(11, 16), x.symbol, x.side, px(x.entry), px(x.stop), x.targets.length ? px(x.targets[0]) : "-"],
    [null, null, x.side]));
  fill("signal-rows", rows.length ? rows : [row(["no signals yet"], ["dim"])]);
}
function renderBlocked(b) {
  const rows = Object.entries(b.by_reason).sort((a, c) => c[1] - a[1]).map(([k, v]) => row([k, v]));
  fill("blocked-rows", rows.length ? rows : [row(["none"], ["dim"])]);
}
function renderPositions(p) {
  const px = (v) => String(Number(v.toPrecision(6)));
  const rows = p.positions.map((x) => row(
    [x.symbol, x.side, x.entry == null ? "pending" : px(x.entry), px(x.stop), px(x.target),
     x.unrealized == null ? "-" : x.unrealized.toFixed(2)], [null, x.side]));
  fill("position-rows", rows.length ? rows : [row(["no open positions"], ["dim"])]);
}
function renderLatency(l) {
  $("latency").textContent = l.samples ? "p50 " + l.p50_ms.toFixed(3) + " ms · p99 " + l.p99_ms.toFixed(3) +
    " ms (" + l.samples + " decisions)" : "no samples";
}
function renderCharts(p) {
  const box = $("charts");
  const charts = [];
  for (const [sym, pts] of Object.entries(p.prices)) {
    if (pts.length < 2) continue;
    const W = 600, H = 160, pad = 4;
    const t0 = pts[0].ts, t1 = pts[pts.length - 1].ts;
    const lo = Math.min(...pts.map((x) => x.close)), hi = Math.max(...pts.map((x) => x.close));
    const X = (t) => pad + (W - 2 * pad) * (t - t0) / Math.max(1, t1 - t0);
    const Y = (v) => H - pad - (H - 2 * pad) * (v - lo) / Math.max(1e-12, hi - lo);
    const fig = el("figure"); fig.style.margin = "0 0 .75rem";
    fig.appendChild(el("figcaption", sym + "  " + pts[pts.length - 1].close, "dim"));
    const svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": sym + " closes" });
    svg.appendChild(svgEl("polyline", { points: pts.map((x) => X(x.ts).toFixed(1) + "," + Y(x.close).toFixed(1))
      .join(" "), fill: "none", stroke: "#58a6ff", "stroke-width": 1.5 }));
    for (const s of p.signals) {
      if (s.symbol !== sym || s.ts < t0 || s.ts > t1) continue;
      const c = svgEl("circle", { cx: X(s.ts).toFixed(1), cy: Y(Math.min(hi, Math.max(lo, s.entry))).toFixed(1),
        r: 5, fill: s.side === "LONG" ? "#2ea043" : "#f85149", class: "signal-mark" });
      const title = svgEl("title", {}); title.textContent = s.side + " @ " + s.entry; c.appendChild(title);
      svg.appendChild(c);
    }
    fig.appendChild(svg); charts.push(fig);
  }
  box.replaceChildren(...(charts.length ? charts : [el("p", "no prices from a running process", "dim")]));
}
function renderPnl(p) {
  const f = (x) => x == null ? "-" : (x >= 0 ? "+" : "") + x.toFixed(2);
  fill("pnl-rows", [
    row(["today " + (p.today || ""), f(p.realized_today) + " USDT (" + p.trades_today + " trades)"]),
    row(["since start", f(p.realized_total) + " USDT (" + p.trades_total + " trades)"]),
    row(["unrealised", f(p.unrealized) + " (" + p.marked + "/" + p.open_positions + " marked)"]),
  ]);
}
async function refresh() {
  const jobs = [["/status", renderStatus], ["/decisions?limit=15", renderDecisions],
    ["/signals?limit=5", renderSignals],
    ["/blocked", renderBlocked], ["/positions", renderPositions], ["/latency", renderLatency],
    ["/prices", renderCharts]];
  const errors = [];
  await Promise.all(jobs.map(async ([path, fn]) => {
    try { fn(await get(path)); } catch (e) { errors.push(e.message); }
  }));
  try { renderCaps(await get("/caps")); } catch (e) {  // 404 before the run's first decision
    fill("caps-rows", [row([e.message.replace(/^\/caps: /, "")], ["dim"])]);
  }
  try { renderPnl(await get("/pnl")); } catch (e) {  // a build without a PnL report answers 501: say so, calmly
    fill("pnl-rows", [row([e.message], ["dim"])]);
  }
  $("conn").textContent = errors.length ? "⚠ " + errors[0] : "updated " + new Date().toLocaleTimeString();
  document.body.dataset.loaded = "1";
}
async function act(name, body) {
  const token = sessionStorage.getItem("writeToken");
  const msg = $("msg");
  if (!token) { msg.textContent = "type the write token first"; return; }
  if (body.confirm && !window.confirm(name + ": are you sure?")) return;
  const r = await fetch(API + "/control/" + name, {
    method: "POST", headers: { "Content-Type": "application/json", "X-Write-Token": token, ...readHeaders() },
    body: JSON.stringify(body),
  });
  let j = {}; try { j = await r.json(); } catch (_) {}
  msg.textContent = r.ok ? name + ": done (" + j.trading.state + (j.paused ? ", paused" : "") + ")"
    : name + " refused: " + (j.detail || r.status);
  refresh();
}
function init() {
  for (const [id, key] of [["write-token", "writeToken"], ["read-token", "readToken"]]) {
    const input = $(id);
    input.value = sessionStorage.getItem(key) || "";
    input.addEventListener("change", () => {
      if (input.value) sessionStorage.setItem(key, input.value); else sessionStorage.removeItem(key);
      refresh();
    });
  }
  $("btn-pause").addEventListener("click", () => act("pause", {}));
  $("btn-resume").addEventListener("click", () => {
    const st = $("state").textContent;
    act("resume", { confirm: st === "HALTED" || st === "REDUCING" });
  });
  $("btn-stop-entry").addEventListener("click", () => act("stop-entry", {}));
  refresh();
  setInterval(refresh, REFRESH_MS);
}
document.addEventListener("DOMContentLoaded", init);
"""

_BODY = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>ultra-signals</title>
<style>{style}</style>
<script src="/app.js" defer></script>
</head>
<body data-refresh="{refresh}">
<header>
  <h1>ultra-signals</h1>
  <span id="state" class="state unknown">…</span>
  <strong id="run-id">…</strong>
  <span id="run-meta" class="dim"></span>
  <span id="conn" class="dim"></span>
</header>
<main>
  <section><h2>Run</h2><table><tbody id="status-rows"></tbody></table></section>
  <section><h2>Cap windows</h2><table><tbody id="caps-rows"></tbody></table>
    <h2 style="margin-top:.75rem">Latency</h2><div id="latency" class="dim"></div></section>
  <section><h2>Control</h2>
    <div class="controls">
      <input id="write-token" type="password" autocomplete="off" placeholder="write token" aria-label="write token">
      <button id="btn-pause" class="warn">Pause</button>
      <button id="btn-resume">Resume</button>
      <button id="btn-stop-entry" class="danger">Stop entries</button>
    </div>
    <p id="msg" role="status"></p>
    <details><summary class="dim">read token</summary>
      <input id="read-token" type="password" autocomplete="off" placeholder="read token (when set)"
        aria-label="read token"></details>
  </section>
  <section class="wide"><h2>Prices and signals</h2><div id="charts"></div></section>
  <section><h2>Last signals</h2>
    <table><thead><tr><th>time</th><th>symbol</th><th>side</th><th>entry</th><th>stop</th><th>target</th></tr>
    </thead><tbody id="signal-rows"></tbody></table></section>
  <section><h2>Last decisions</h2>
    <table><thead><tr><th>time</th><th>symbol</th><th>side</th><th>verdict</th><th>score</th></tr></thead>
    <tbody id="decision-rows"></tbody></table></section>
  <section><h2>Blocked by reason</h2><table><tbody id="blocked-rows"></tbody></table></section>
  <section><h2>PnL</h2><table><tbody id="pnl-rows"></tbody></table></section>
  <section><h2>Positions</h2>
    <table><thead><tr><th>symbol</th><th>side</th><th>entry</th><th>stop</th><th>target</th><th>uPnL</th></tr></thead>
    <tbody id="position-rows"></tbody></table></section>
</main>
</body>
</html>
"""


def html(refresh_s: float) -> str:
    return _BODY.replace("{style}", _STYLE).replace("{refresh}", _html.escape(f"{refresh_s:g}"))
