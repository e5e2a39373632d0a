// vigild's status page: reads /status.json every refresh_ms and redraws. Every value from the
// daemon, client names above all, is inserted with textContent or as an SVG attribute value,
// never parsed as markup (no HTML-parsing property or call appears in this file; a unit test
// in src/ops/status_page.rs checks). Nothing is logged to the console: a failed fetch is shown
// on the page.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
let refreshMs = 2000;
// Each reason keeps its colour across refreshes: its index in reaps.total.
let reasonIndex = new Map();

function $(id) { return document.getElementById(id); }

function setText(id, value) {
  const el = $(id);
  if (el) el.textContent = String(value);
}

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = String(text);
  return el;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }

function duration(ms) {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1000) return ms + " ms";
  let s = ms / 1000;
  if (s < 60) return (s < 10 ? s.toFixed(2) : s.toFixed(1)) + " s";
  let m = Math.floor(s / 60); s = Math.round(s % 60);
  if (m < 60) return m + "m" + (s ? s + "s" : "");
  const h = Math.floor(m / 60); m = m % 60;
  return h + "h" + (m ? m + "m" : "");
}

function rate(x) { return x >= 10 ? x.toFixed(0) : x.toFixed(2); }

function colour(reason) {
  return "c" + ((reasonIndex.get(reason) || 0) % 20);
}

function overview(d) {
  setText("version", d.version + " · up " + duration(d.uptime_ms));
  setText("live", d.sessions.live);
  setText("max", d.sessions.max);
  setText("peak", d.sessions.peak);
  setText("accepted", d.sessions.accepted);
  setText("rejected", d.sessions.rejected);
  setText("reaped", d.sessions.reaped);
  setText("accept-rate", rate(d.rates.accepts_per_s));
  setText("reap-rate", rate(d.rates.reaps_per_s));
  setText("suspect-count", d.watch.complete ? d.watch.suspect : "-");
  setText("scanned", d.watch.scanned);
  setText("subscribers", d.presence.subscribers);
  setText("dropped", d.presence.dropped);
}

// Stacked bars: one per minute, oldest left, one colour per reason.
function reasonsChart(d) {
  const chart = $("reasons-chart");
  const legend = $("reasons-legend");
  clear(chart); clear(legend);
  const W = 720, H = 150, left = 34, bottom = 18, top = 8;
  const minutes = d.reaps.accepts_per_minute.length;
  const totals = new Array(minutes).fill(0);
  for (const s of d.reaps.per_minute) s.counts.forEach((n, i) => { totals[i] += n; });
  const peak = Math.max(1, ...totals);
  const bw = (W - left - 4) / minutes;
  const y = (n) => (H - bottom) - n * (H - bottom - top) / peak;
  chart.appendChild(svg("line", { x1: left, y1: H - bottom, x2: W, y2: H - bottom, class: "axis" }));
  chart.appendChild(svg("text", { x: left - 4, y: top + 8, "text-anchor": "end" }, peak));
  chart.appendChild(svg("text", { x: left - 4, y: H - bottom, "text-anchor": "end" }, 0));
  chart.appendChild(svg("text", { x: left, y: H - 4 }, "-" + minutes + " min"));
  chart.appendChild(svg("text", { x: W - 4, y: H - 4, "text-anchor": "end" }, "now"));
  const base = new Array(minutes).fill(0);
  for (const s of d.reaps.per_minute) {
    const g = svg("g", { class: colour(s.reason), "data-reason": s.reason });
    s.counts.forEach((n, i) => {
      if (!n) return;
      const y0 = y(base[i]), y1 = y(base[i] + n);
      const r = svg("rect", { x: left + i * bw + 1, y: y1, width: Math.max(1, bw - 2), height: Math.max(1, y0 - y1) });
      r.appendChild(svg("title", {}, s.reason + ": " + n + " (" + (minutes - 1 - i) + " min ago)"));
      g.appendChild(r);
      base[i] += n;
    });
    chart.appendChild(g);
    const li = document.createElement("li");
    li.dataset.reason = s.reason;
    li.dataset.count = String(s.counts.reduce((a, b) => a + b, 0));
    const sw = document.createElement("span");
    sw.className = "swatch " + colour(s.reason);
    li.appendChild(sw);
    li.appendChild(document.createTextNode(s.reason + ": " + li.dataset.count));
    legend.appendChild(li);
  }
  if (!d.reaps.per_minute.length) {
    const li = document.createElement("li");
    li.textContent = "no reaps in the last hour";
    legend.appendChild(li);
  }
}

// One row per detection reason: p50, p99 and max on a log scale, the bound as a red line.
function latency(d) {
  const chart = $("latency-chart");
  clear(chart);
  const rows = d.detection;
  const W = 720, left = 130, right = 10, rowH = 22, top = 20;
  const H = top + rows.length * rowH + 20;
  chart.setAttribute("viewBox", "0 0 " + W + " " + H);
  let hi = 1000;
  for (const r of rows) hi = Math.max(hi, r.max_ms || 0, r.bound_ms || 0);
  const lo = 1, span = Math.log10(hi * 1.5) - Math.log10(lo);
  const x = (ms) => left + (W - left - right) * (Math.log10(Math.max(lo, ms)) - Math.log10(lo)) / span;
  const ticks = [[1, "1 ms"], [10, "10 ms"], [100, "100 ms"], [1000, "1 s"], [10000, "10 s"], [60000, "1 min"], [600000, "10 min"], [3600000, "1 h"]];
  for (const [t, label] of ticks) {
    if (t > hi * 1.5) break;
    chart.appendChild(svg("line", { x1: x(t), y1: top, x2: x(t), y2: H - 18, class: "axis" }));
    chart.appendChild(svg("text", { x: x(t), y: H - 4, "text-anchor": "middle" }, label));
  }
  const key = svg("g", {});
  key.appendChild(svg("rect", { x: W - 330, y: 4, width: 14, height: 8, class: "lat-p50" }));
  key.appendChild(svg("text", { x: W - 312, y: 12 }, "p50"));
  key.appendChild(svg("rect", { x: W - 280, y: 5, width: 14, height: 6, class: "lat-p99" }));
  key.appendChild(svg("text", { x: W - 262, y: 12 }, "p99"));
  key.appendChild(svg("circle", { cx: W - 222, cy: 8, r: 3.5, class: "lat-max" }));
  key.appendChild(svg("text", { x: W - 214, y: 12 }, "max"));
  key.appendChild(svg("line", { x1: W - 172, y1: 2, x2: W - 172, y2: 14, class: "bound" }));
  key.appendChild(svg("text", { x: W - 166, y: 12 }, "configured bound"));
  chart.appendChild(key);
  rows.forEach((r, i) => {
    const cy = top + i * rowH + rowH / 2;
    const g = svg("g", { "data-reason": r.reason });
    g.appendChild(svg("text", { x: left - 6, y: cy + 4, "text-anchor": "end" }, r.reason + " (" + r.count + ")"));
    if (r.count > 0) {
      g.appendChild(svg("rect", { x: left, y: cy - 6, width: Math.max(1, x(r.p50_ms) - left), height: 12, class: "lat-p50" }));
      g.appendChild(svg("rect", { x: x(r.p50_ms), y: cy - 4, width: Math.max(1, x(r.p99_ms) - x(r.p50_ms)), height: 8, class: "lat-p99" }));
      g.appendChild(svg("circle", { cx: x(r.max_ms), cy: cy, r: 3.5, class: "lat-max" }));
    }
    if (r.bound_ms !== null) {
      g.appendChild(svg("line", { x1: x(r.bound_ms), y1: cy - 9, x2: x(r.bound_ms), y2: cy + 9, class: "bound" }));
    }
    chart.appendChild(g);
  });
  const body = $("latency").tBodies[0];
  clear(body);
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.reason = r.reason;
    if (r.bound_ms !== null && r.max_ms !== null && r.max_ms > r.bound_ms) tr.className = "over";
    cell(tr, r.reason); cell(tr, r.count);
    cell(tr, duration(r.min_ms)); cell(tr, duration(r.p50_ms));
    cell(tr, duration(r.p99_ms)); cell(tr, duration(r.max_ms));
    cell(tr, r.bound_ms === null ? "none" : duration(r.bound_ms));
    cell(tr, r.bound_from);
    body.appendChild(tr);
  }
}

function keepalive(d) {
  setText("ka-headline", d.keepalive.headline);
  const ul = $("ka-summary");
  clear(ul);
  for (const line of d.keepalive.summary) {
    const li = document.createElement("li");
    li.textContent = line;
    ul.appendChild(li);
  }
}

function sessions(id, list, columns, d) {
  const body = $(id).tBodies[0];
  clear(body);
  if (!list.length) {
    const tr = document.createElement("tr");
    const td = cell(tr, d.watch.complete ? "none" : "first sweep in progress", "empty");
    td.colSpan = columns.length;
    body.appendChild(tr);
    return;
  }
  for (const s of list) {
    const tr = document.createElement("tr");
    tr.dataset.id = String(s.id);
    for (const c of columns) {
      const v = s[c];
      const text = c.endsWith("_ms") ? duration(v) : v;
      cell(tr, text, c === "name" || c === "lib_name" ? "name" : "");
    }
    body.appendChild(tr);
  }
}

// Filled in by the fleet issue: shown only when /status.json has a `fleet` member.
function fleet(d) {
  const section = $("fleet");
  if (!d.fleet) { section.hidden = true; return; }
  section.hidden = false;
  const body = $("fleet-nodes").tBodies[0];
  clear(body);
  for (const n of d.fleet.nodes || []) {
    const tr = document.createElement("tr");
    cell(tr, n.node, "name"); cell(tr, n.epoch);
    cell(tr, duration(n.lease_age_ms)); cell(tr, n.sessions);
    body.appendChild(tr);
  }
}

function draw(d) {
  reasonIndex = new Map(d.reaps.total.map((t, i) => [t.reason, i]));
  overview(d);
  reasonsChart(d);
  latency(d);
  keepalive(d);
  sessions("suspect", d.suspect, ["id", "name", "lib_name", "addr", "silent_ms", "age_ms", "probes", "retransmits", "unacked"], d);
  sessions("silent", d.silent, ["id", "name", "lib_name", "addr", "silent_ms", "age_ms", "state", "probes", "unacked"], d);
  fleet(d);
  const w = d.watch;
  setText("watch", w.complete
    ? "Session lists: top " + w.top + " of " + w.scanned + " sessions swept " + duration(w.age_ms) + " ago (sweep took " + duration(w.sweep_ms) + ")."
    : "Session lists: the first sweep of the session table is in progress.");
  const asof = $("asof");
  asof.className = "";
  asof.textContent = "as of " + new Date(d.now_unix_ms).toLocaleTimeString() + ", refreshed every " + duration(d.refresh_ms);
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
}

async function refresh() {
  try {
    const r = await fetch("/status.json", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const d = await r.json();
    if (d.refresh_ms > 0) refreshMs = d.refresh_ms;
    draw(d);
  } catch (e) {
    const asof = $("asof");
    asof.className = "stale";
    asof.textContent = "cannot read /status.json (" + e.message + "); showing the last data";
  }
  setTimeout(refresh, refreshMs);
}

refresh();
