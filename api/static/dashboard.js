// The live view of one key's calls: counters from GET /stats/calls and a page of GET /calls (the
// server filters and counts, so a key with millions of calls shows them truly), then GET /stream
// (read with fetch, so the key travels in a header) for every new call and transition, which
// updates the rows in place and has the counters and the page read again at most once a
// second; and of its queues: a tile
// each from GET /stats/queues, kept current by the stream's `stats` messages, and a chart of the
// chosen queue's last hour (GET /stats/queues/{id}/series, drawn by uPlot from api/static/uplot/).
// No build step.
//
// Every value that comes from the API is a tenant's text (a queue id, an agent id, metadata):
// it is only ever put in the page as text, through `el` below, never parsed as markup. The page
// is served with a Content-Security-Policy that runs no inline or foreign script besides.
"use strict";

const KEY_SLOT = "mock-comms.key";
const STATUSES = ["QUEUED", "RINGING", "ANSWERED", "ON_HOLD", "UNANSWERED", "COMPLETED"];
const BREACHES = new Set(["wait_sla_exceeded", "hold_limit_exceeded"]);
const PAGE_SIZE = 50;
const RELOAD_EVERY_MS = 1000;     // counters and the page are read again at most this often
const calls = new Map();          // the page's calls, in the server's order: call_id -> call
let page = 1, total = 0;          // the page shown, and how many calls match the filters
let counts = null;                // GET /stats/calls
let reloadAt = 0, reloadTimer = null, reloadPage = false;
const queues = new Map();         // queue_id -> its figures (GET /stats/queues, `stats`), and when
let target = 80;                  // the service level a queue should meet, in % (the API says)
let chartQueue = null, chart = null, chartAt = 0, chartTimer = null;
const CHART_EVERY_MS = 5000;      // a chart reloads at most this often
let selected = null;
let stream = null;                // AbortController of the open stream

const $ = id => document.getElementById(id);
const key = () => sessionStorage.getItem(KEY_SLOT);

// An element with attributes and children; a child that is not a node becomes a text node.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { "Authorization": `Bearer ${key()}`, "Content-Type": "application/json", ...(options.headers || {}) } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw Object.assign(new Error(body.message || response.statusText), { status: response.status });
  return body;
}

function age(iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m ${s % 60}s` : `${Math.floor(s / 3600)}h ${Math.floor(s / 60) % 60}m`;
}

const label = status => String(status).replace("_", " ");
const statusChip = status => el("span", { class: `status ${status}` }, label(status));
const flagChips = flags => (flags || []).map(f => el("span", { class: BREACHES.has(f) ? "flag breach" : "flag" }, f));
const breached = call => (call.flags || []).some(f => BREACHES.has(f));

// The list's filters, as GET /calls takes them (the server filters: every call of the key).
function filters() {
  const params = new URLSearchParams();
  for (const [id, name] of [["f-status", "status"], ["f-flag", "flag"], ["f-queue", "queue_id"], ["f-to", "to"]]) {
    const value = $(id).value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

const number = n => Number(n).toLocaleString("en");

function route(call) {
  if (!call.queue_id) return [`${call.from || "?"} → ${call.to || "?"}`];
  return ["queue ", el("b", {}, call.queue_id), call.agent_id ? ` · agent ${call.agent_id}` : null];
}

function row(call) {
  const classes = ["call", breached(call) ? "breached" : "", call.call_id === selected ? "selected" : ""];
  return el("tr", { class: classes.filter(Boolean).join(" "), "data-id": call.call_id },
    el("td", {}, statusChip(call.status)),
    el("td", {}, route(call)),
    el("td", { class: "muted age", "data-created": call.created_at }, age(call.created_at)),
    el("td", {}, flagChips(call.flags)),
    el("td", { class: "mono muted" }, String(call.call_id).slice(0, 8)));
}

function render() {
  if (counts) {
    $("counters").replaceChildren(
      ...STATUSES.map(s => el("div", { class: "card counter", "data-status": s }, el("b", {}, number(counts.by_status[s] || 0)), el("span", {}, label(s)))),
      el("div", { class: "card counter breach" }, el("b", { id: "breaches" }, number(counts.breaches) + (counts.breaches_capped ? "+" : "")), el("span", {}, "SLA breaches")));
  }
  const rows = [...calls.values()];
  $("calls").replaceChildren(...rows.map(row));
  $("empty").classList.toggle("hidden", rows.length > 0);
  const first = (page - 1) * PAGE_SIZE;
  $("showing").textContent = rows.length ? `showing ${number(first + 1)}–${number(first + rows.length)} of ${number(total)}` : `showing 0 of ${number(total)}`;
  $("prev").disabled = page <= 1;
  $("next").disabled = first + rows.length >= total;
}

// A call's status callbacks by seq, each with its attempts (only for a call that has them).
async function callbacksOf(callId, call) {
  if (!call.status_callback) return new Map();
  const log = await api(`/calls/${encodeURIComponent(callId)}/callbacks`);
  return new Map(log.data.map(delivery => [delivery.seq, delivery]));
}

function callbackAttempts(delivery) {
  if (!delivery) return null;
  const ok = a => a.status_code >= 200 && a.status_code < 300;
  return el("ul", { class: "callbacks", "data-state": delivery.state },
    delivery.attempts.map(a => el("li", { class: ok(a) ? "ok" : "failed" },
      `callback #${a.attempt}: ${a.status_code ?? a.error} · ${Math.round(a.latency_ms)} ms`)),
    delivery.attempts.length ? null : el("li", {}, `callback ${delivery.state}`));
}

// -- queues: a tile each, and a chart of the one clicked ---------------------------------------

const seconds = s => s === null || s === undefined ? "–" : s < 60 ? `${Math.round(s)}s` : `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
const percent = p => p === null || p === undefined ? "–" : `${p}%`;
const standing = q => q.service_level_pct === null ? "idle" : q.service_level_pct >= target ? "meeting" : "missing";
// The oldest waiting call keeps waiting between two messages: its wait goes on from when they said.
const longestWait = q => q.longest_wait_s === null ? null : q.longest_wait_s + (Date.now() - q.at) / 1000;

function tile(q) {
  const state = standing(q);
  return el("div", { class: `card tile ${state}${q.queue_id === chartQueue ? " selected" : ""}`, "data-queue": q.queue_id, "data-state": state },
    el("div", { class: "tile-head" }, el("b", {}, q.queue_id), el("span", { class: "muted" }, `target ${target}%`)),
    el("div", { class: "sl", title: "service level" }, percent(q.service_level_pct)),
    el("dl", {},
      el("dt", {}, "waiting"), el("dd", { class: "waiting" }, q.waiting_now),
      el("dt", {}, "longest wait"), el("dd", { class: "longest" }, seconds(longestWait(q))),
      el("dt", {}, "ASA"), el("dd", { class: "asa" }, seconds(q.asa_s)),
      el("dt", {}, "AHT"), el("dd", { class: "aht" }, seconds(q.aht_s)),
      el("dt", {}, "abandoned"), el("dd", { class: "abandon" }, percent(q.abandon_rate_pct))));
}

function renderTiles() {
  const sorted = [...queues.values()].sort((a, b) => a.queue_id.localeCompare(b.queue_id));
  $("tiles").replaceChildren(...sorted.map(tile));
  $("tiles-hint").classList.toggle("hidden", sorted.length === 0 || chartQueue !== null);
  $("chart-card").classList.toggle("hidden", chartQueue === null);
}

async function loadQueues() {
  const answer = await api("/stats/queues?window=1h");
  target = answer.service_level_target_pct;
  queues.clear();
  for (const q of answer.data) queues.set(q.queue_id, { ...q, at: Date.now() });
  renderTiles();
  await loadChart();
}

function onStats(figures) {
  queues.set(figures.queue_id, { ...figures, at: Date.now() });
  renderTiles();
  if (figures.queue_id === chartQueue) chartSoon();
}

function chartSoon() {
  if (chartTimer !== null) return;
  chartTimer = setTimeout(() => { chartTimer = null; loadChart(); }, Math.max(0, chartAt + CHART_EVERY_MS - Date.now()));
}

async function loadChart() {
  if (chartQueue === null) return;
  chartAt = Date.now();
  const series = await api(`/stats/queues/${encodeURIComponent(chartQueue)}/series?window=1h&bucket=1m`);
  const points = series.data;
  const data = [
    points.map(p => Date.parse(p.start) / 1000),
    points.map(p => p.service_level_pct),
    points.map(p => p.offered),
    points.map(p => p.answered),
    points.map(p => p.abandoned),
  ];
  $("chart-title").textContent = series.queue_id;
  if (chart === null) {
    chart = new uPlot({
      width: Math.max(320, $("chart").clientWidth), height: 200,
      scales: { x: { time: true }, pct: { range: [0, 100] } },
      series: [
        {},
        { label: "service level %", scale: "pct", stroke: "#12b76a", width: 2, spanGaps: true },
        { label: "offered", scale: "calls", stroke: "#2e90fa" },
        { label: "answered", scale: "calls", stroke: "#475467" },
        { label: "abandoned", scale: "calls", stroke: "#f04438" },
      ],
      axes: [{}, { scale: "pct", values: (u, ticks) => ticks.map(t => `${t}%`) }, { scale: "calls", side: 1, grid: { show: false } }],
    }, data, $("chart"));
  } else {
    chart.setData(data);
  }
}

async function showTimeline(callId) {
  selected = callId;
  render();
  const call = calls.get(callId) || {};
  const [history, callbacks] = await Promise.all([
    api(`/calls/${encodeURIComponent(callId)}/events`), callbacksOf(callId, call)]);
  const metadata = call.metadata && Object.keys(call.metadata).length ? JSON.stringify(call.metadata, null, 2) : null;
  const play = call.recording_url ? el("a", { href: "#", id: "play" }, "Download recording") : null;
  $("detail").replaceChildren(
    el("h2", {}, "Call ", el("span", { class: "mono" }, String(callId).slice(0, 8))),
    el("div", { class: "muted" }, `${call.source || ""} ${call.type || ""} call`, call.queue_id ? ` · queue ${call.queue_id}` : null,
       call.agent_id ? ` · agent ${call.agent_id}` : null),
    el("div", {}, flagChips(call.flags)),
    metadata ? el("pre", { class: "meta mono", id: "metadata" }, metadata) : null,
    play ? el("p", {}, play) : null,
    el("ol", { class: "timeline", id: "timeline" }, history.data.map(e => el("li", { "data-seq": e.seq },
      statusChip(e.status), " ", el("span", { class: "muted" }, e.event),
      el("div", { class: "muted mono" }, new Date(e.occurred_at).toLocaleTimeString()),
      flagChips(e.raised_flags), callbackAttempts(callbacks.get(e.seq))))));
  if (play) play.onclick = async event => {
    event.preventDefault();
    const response = await fetch(call.recording_url, { headers: { "Authorization": `Bearer ${key()}` } });
    const url = URL.createObjectURL(await response.blob());
    el("a", { href: url, download: `${callId}.wav` }).click();
  };
}

async function refreshCall(callId) {
  try {
    const call = await api(`/calls/${encodeURIComponent(callId)}`);
    if (calls.has(callId)) calls.set(callId, call);   // in place: the page keeps its order
  } catch (error) { /* gone or not ours */ }
}

async function loadCalls() {
  const params = filters();
  params.set("limit", PAGE_SIZE);
  params.set("page", page);
  let answer;
  try {
    answer = await api(`/calls?${params}`);
  } catch (error) {
    if (error.status !== 400) throw error;
    $("filter-error").textContent = error.message;   // a filter the API refuses, said as it says it
    return;
  }
  $("filter-error").textContent = "";
  total = answer.total;
  if (answer.data.length === 0 && page > 1 && total > 0) {   // the page emptied: go to the last one
    page = Math.ceil(total / PAGE_SIZE);
    return loadCalls();
  }
  calls.clear();
  for (const call of answer.data) calls.set(call.call_id, call);
  render();
}

async function loadCounts() {
  counts = await api("/stats/calls");
  render();
}

// The counters (and the page, `withPage`) from the server again, at most once every
// RELOAD_EVERY_MS however many messages come.
function reloadSoon(withPage) {
  reloadPage = reloadPage || withPage;
  if (reloadTimer !== null) return;
  reloadTimer = setTimeout(async () => {
    reloadTimer = null;
    reloadAt = Date.now();
    const pageToo = reloadPage;
    reloadPage = false;
    try { await Promise.all([loadCounts(), pageToo ? loadCalls() : null]); } catch (error) { /* the next message tries again */ }
  }, Math.max(0, reloadAt + RELOAD_EVERY_MS - Date.now()));
}

function setConnection(state, text) {
  $("conn").className = state;
  $("conn").textContent = text;
}

async function follow() {
  stream = new AbortController();
  let backoff = 500;
  while (!stream.signal.aborted) {
    try {
      const response = await fetch("/stream", { headers: { "Authorization": `Bearer ${key()}` }, signal: stream.signal });
      if (!response.ok) throw new Error(`stream answered ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        // aiohttp-sse ends lines with \r\n; a lone \r at the end of a chunk waits for its \n.
        buffer = (buffer + value).replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = (frame.match(/^event: (.*)$/m) || [])[1];
          const data = frame.split("\n").filter(l => l.startsWith("data: ")).map(l => l.slice(6)).join("\n");
          if (event === "ready") { setConnection("live", "live"); backoff = 500; await Promise.all([loadCounts(), loadCalls()]); await loadQueues(); }
          else if (event === "resync") { await Promise.all([loadCounts(), loadCalls()]); await loadQueues(); }
          else if (event === "call") { await onMessage(JSON.parse(data)); }
          else if (event === "stats") { onStats(JSON.parse(data)); }
        }
      }
    } catch (error) {
      if (stream.signal.aborted) return;
    }
    setConnection("down", "reconnecting…");
    await new Promise(resolve => setTimeout(resolve, backoff));
    backoff = Math.min(backoff * 2, 10000);
  }
}

async function onMessage(message) {
  const known = calls.get(message.call_id);
  if (known) {
    if (["call_routed", "call_ended"].includes(message.event)) await refreshCall(message.call_id);   // a new agent or end reason
    else Object.assign(known, { status: message.status, flags: message.flags, updated_at: message.timestamp });
    render();
    if (message.status === "COMPLETED") setTimeout(async () => { await refreshCall(message.call_id); render(); if (message.call_id === selected) showTimeline(selected); }, 1500);
  }
  // The counters move with every message; the page with new calls (on the first page, newest
  // first) and with the calls it shows (which may now leave its filters). A later page keeps
  // still while it is read.
  reloadSoon(Boolean(known) || page === 1);
  if (message.call_id === selected) await showTimeline(selected);
}

async function start() {
  $("login").classList.add("hidden");
  $("app").classList.remove("hidden");
  $("forget").classList.remove("hidden");
  $("who").textContent = `key ${key().slice(0, 4)}…`;
  follow();
}

$("login").addEventListener("submit", async event => {
  event.preventDefault();
  sessionStorage.setItem(KEY_SLOT, $("key").value.trim());
  try {
    await api("/calls?limit=1");
    start();
  } catch (error) {
    sessionStorage.removeItem(KEY_SLOT);
    $("login-error").textContent = error.message;
  }
});
$("forget").onclick = () => { sessionStorage.removeItem(KEY_SLOT); if (stream) stream.abort(); location.reload(); };
$("calls").addEventListener("click", event => { const tr = event.target.closest("tr.call"); if (tr) showTimeline(tr.dataset.id); });
$("tiles").addEventListener("click", event => {
  const chosen = event.target.closest(".tile");
  if (!chosen) return;
  chartQueue = chosen.dataset.queue;
  renderTiles();
  loadChart();
});
for (const id of ["f-status", "f-flag"]) $(id).addEventListener("input", () => { page = 1; loadCalls(); });
for (const id of ["f-queue", "f-to"]) $(id).addEventListener("change", () => { page = 1; loadCalls(); });
$("prev").onclick = () => { page = Math.max(1, page - 1); loadCalls(); };
$("next").onclick = () => { page += 1; loadCalls(); };
$("start").onclick = async () => {
  try {
    await api("/calls", { method: "POST", body: JSON.stringify({ from: $("n-from").value, to: $("n-to").value }) });
    reloadSoon(true);
  } catch (error) { alert(error.message); }
};
setInterval(() => {
  document.querySelectorAll("td.age").forEach(td => { td.textContent = age(td.dataset.created); });
  document.querySelectorAll(".tile").forEach(t => { t.querySelector(".longest").textContent = seconds(longestWait(queues.get(t.dataset.queue))); });
}, 1000);
// Calls leave the last hour as it slides, with no message to say so: read the figures again.
setInterval(() => { if (key() && stream) loadQueues().catch(() => {}); }, 60000);

if (key()) start(); else $("login").classList.remove("hidden");
