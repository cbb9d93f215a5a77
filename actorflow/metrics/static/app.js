// actorflow metrics page: polls /api/metrics?series=charts every second and draws the figures.
// Self-contained: no libraries. Every figure shown is also written into the DOM as text
// with data attributes (data-metric, data-step="<step>@<worker>", data-worker,
// data-pipeline, data-value) so scripts and tests can read what the page shows.
"use strict";

const POLL_MS = 1000;
const MIN_SPAN = 30; // seconds shown at least on the time axis
const PCTS = ["p50", "p90", "p95", "p99", "p99.9"];
const PALETTE = [
  "#3b6fb6", "#e8773a", "#3a9e6b", "#c9485b", "#8a63c2",
  "#b8902d", "#2a9bb5", "#d1649e", "#6b7a3a", "#7a5a44",
];
const LAT_COLORS = { p50: "#3b6fb6", p99: "#c9485b", "p99.9": "#8a63c2" };

const charts = new Map(); // canvas id -> last spec, redrawn on resize
let lastData = null;

// --- formatting -------------------------------------------------------------------

function fmtNum(v) {
  if (v === null || v === undefined) return "–";
  const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  return v.toLocaleString("en-US", { maximumFractionDigits: digits });
}

function fmtCompact(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return trim(v / 1e9) + "G";
  if (a >= 1e6) return trim(v / 1e6) + "M";
  if (a >= 1e3) return trim(v / 1e3) + "k";
  return trim(v);
}

function trim(v) {
  return String(Number(v.toFixed(Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2)));
}

function fmtSec(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1e-3) return trim(s * 1e6) + " µs";
  if (s < 1) return trim(s * 1e3) + " ms";
  return trim(s) + " s";
}

function fmtClock(t) {
  const d = new Date(t * 1000);
  return [d.getHours(), d.getMinutes(), d.getSeconds()]
    .map((x) => String(x).padStart(2, "0")).join(":");
}

function fmtAge(s) {
  if (s < 1) return "now";
  if (s < 90) return Math.round(s) + " s ago";
  return Math.round(s / 60) + " min ago";
}

// --- DOM helpers ------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k === "style") e.style.cssText = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function slug(s) {
  return String(s).replace(/[^A-Za-z0-9_-]+/g, "_");
}

// A cell (or any element) holding one figure: formatted text, raw value in data-value.
function figure(tag, attrs, value, fmt) {
  const a = Object.assign({}, attrs, { "data-value": value === null ? "" : value });
  return el(tag, a, fmt(value));
}

// --- charts -----------------------------------------------------------------------

function niceStep(raw) {
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function timeStep(span, maxTicks) {
  for (const s of [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]) {
    if (span / s <= maxTicks) return s;
  }
  return 7200;
}

// spec: {series: [{label, color, points: [[t, v|null], ...], dash, width}],
//        xMin, xMax, log (y log scale), fmt (y tick format), empty (text when no data)}
function drawChart(canvas, spec) {
  charts.set(canvas.id, { canvas, spec });
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 480;
  const h = canvas.clientHeight || 180;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const m = { l: 56, r: 12, t: 10, b: 22 };
  const pw = w - m.l - m.r;
  const ph = h - m.t - m.b;
  const { xMin, xMax } = spec;
  const values = [];
  for (const s of spec.series) {
    for (const [t, v] of s.points) {
      if (v !== null && t >= xMin && t <= xMax && (!spec.log || v > 0)) values.push(v);
    }
  }
  ctx.font = "11px system-ui, -apple-system, 'Segoe UI', sans-serif";
  ctx.textBaseline = "middle";

  // y scale and its grid
  let y;
  const ticks = [];
  if (spec.log) {
    const lo = values.length ? Math.floor(Math.log10(Math.min(...values))) : -4;
    let hi = values.length ? Math.ceil(Math.log10(Math.max(...values))) : -1;
    if (hi <= lo) hi = lo + 1;
    y = (v) => m.t + ph - ((Math.log10(v) - lo) / (hi - lo)) * ph;
    for (let k = lo; k <= hi; k++) {
      ticks.push(Math.pow(10, k));
      if (hi - lo <= 2 && k < hi) ticks.push(2 * Math.pow(10, k), 5 * Math.pow(10, k));
    }
  } else {
    const max = values.length ? Math.max(...values) : 0;
    const step = niceStep(max > 0 ? max / 4 : 1);
    const top = Math.max(step, Math.ceil((max * 1.05) / step) * step);
    y = (v) => m.t + ph - (v / top) * ph;
    for (let v = 0; v <= top + step / 2; v += step) ticks.push(v);
  }
  const fmt = spec.fmt || fmtCompact;
  ctx.strokeStyle = "#e6e8ec";
  ctx.lineWidth = 1;
  ctx.fillStyle = "#6b7280";
  ctx.textAlign = "right";
  for (const v of ticks) {
    const py = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(m.l, py);
    ctx.lineTo(m.l + pw, py);
    ctx.stroke();
    ctx.fillText(fmt(v), m.l - 6, py);
  }
  // x axis
  const x = (t) => m.l + ((t - xMin) / (xMax - xMin)) * pw;
  const step = timeStep(xMax - xMin, Math.max(2, Math.floor(pw / 78)));
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (let t = Math.ceil(xMin / step) * step; t <= xMax; t += step) {
    const px = Math.round(x(t)) + 0.5;
    ctx.strokeStyle = "#f0f1f4";
    ctx.beginPath();
    ctx.moveTo(px, m.t);
    ctx.lineTo(px, m.t + ph);
    ctx.stroke();
    if (px > m.l + 20 && px < m.l + pw - 20) ctx.fillText(fmtClock(t), px, m.t + ph + 6);
  }
  ctx.strokeStyle = "#9aa1ad";
  ctx.beginPath();
  ctx.moveTo(m.l + 0.5, m.t);
  ctx.lineTo(m.l + 0.5, m.t + ph + 0.5);
  ctx.lineTo(m.l + pw, m.t + ph + 0.5);
  ctx.stroke();

  // series
  ctx.save();
  ctx.beginPath();
  ctx.rect(m.l, m.t - 4, pw + 4, ph + 8);
  ctx.clip();
  let drawn = 0;
  const lasts = {};
  for (const s of spec.series) {
    ctx.strokeStyle = s.color;
    ctx.fillStyle = s.color;
    ctx.lineWidth = s.width || 1.75;
    ctx.lineJoin = "round";
    ctx.setLineDash(s.dash || []);
    ctx.beginPath();
    let pen = false;
    let last = null;
    for (const [t, v] of s.points) {
      if (v === null || (spec.log && v <= 0)) {
        pen = false;
        continue;
      }
      const px = x(t);
      const py = y(v);
      if (pen) ctx.lineTo(px, py);
      else ctx.moveTo(px, py);
      pen = true;
      last = [px, py, v];
      if (t >= xMin) drawn++;
    }
    ctx.stroke();
    ctx.setLineDash([]);
    if (last) {
      ctx.beginPath();
      ctx.arc(last[0], last[1], 2.5, 0, 2 * Math.PI);
      ctx.fill();
      lasts[s.label] = last[2];
    }
  }
  ctx.restore();
  if (!drawn) {
    ctx.fillStyle = "#9aa1ad";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillText(spec.empty || "waiting for data", m.l + pw / 2, m.t + ph / 2);
  }
  canvas.dataset.points = String(drawn);
  canvas.dataset.last = JSON.stringify(lasts);
}

function legend(box, series, fmt) {
  box.replaceChildren(
    ...series.map((s) => {
      const v = lastValue(s.points);
      return el(
        "span",
        { class: "item", "data-series": s.label, "data-value": v === null ? "" : v },
        el("i", { style: `background:${s.color}` }),
        el("span", { class: "label", text: s.label }),
        el("b", { text: fmt(v) }),
      );
    }),
  );
}

function lastValue(points) {
  for (let i = points.length - 1; i >= 0; i--) if (points[i][1] !== null) return points[i][1];
  return null;
}

function chartBox(id, title, unit) {
  return el(
    "div",
    { class: "chart-box" },
    el("div", { class: "chart-title", text: title }, unit ? el("span", { text: unit }) : null),
    el("canvas", { id: "chart-" + id }),
    el("div", { class: "legend", id: "legend-" + id }),
  );
}

function showChart(id, series, range, opts) {
  const canvas = document.getElementById("chart-" + id);
  if (!canvas) return;
  drawChart(canvas, Object.assign({ series }, range, opts || {}));
  const box = document.getElementById("legend-" + id);
  if (box) legend(box, series, (opts && opts.legendFmt) || fmtNum);
}

function pctSeries(lat, labels) {
  // lat.series rows: [t, p50, p90, p95, p99, p99.9]
  return labels.map((label) => ({
    label,
    color: LAT_COLORS[label] || "#555",
    points: (lat.series || []).map((r) => [r[0], r[1 + PCTS.indexOf(label)]]),
  }));
}

// --- rendering --------------------------------------------------------------------

function timeRange(data) {
  let first = data.time;
  const scan = (s) => {
    if (s && s.series && s.series.length && s.series[0][0] < first) first = s.series[0][0];
  };
  for (const p of data.pipelines) scan(p.ingest);
  for (const w of data.workers) scan(w.ingest);
  for (const s of data.steps) for (const pw of s.per_worker) scan(pw.throughput);
  const span = Math.min(data.window, Math.max(MIN_SPAN, data.time - first));
  return { xMin: data.time - span, xMax: data.time };
}

function workerColors(data) {
  const names = [...new Set(data.workers.map((w) => w.worker))].sort();
  const colors = {};
  names.forEach((n, i) => (colors[n] = PALETTE[i % PALETTE.length]));
  return colors;
}

function keyed(container, key, make) {
  let node = container.querySelector(`:scope > [data-key="${CSS.escape(key)}"]`);
  if (!node) {
    node = make();
    node.dataset.key = key;
    container.append(node);
  }
  node.dataset.seen = "1";
  return node;
}

function sweep(container) {
  for (const c of [...container.children]) {
    if (c.dataset.seen) delete c.dataset.seen;
    else c.remove();
  }
}

function stat(label, attrs, value, fmt, sub) {
  return el(
    "div",
    { class: "stat" },
    el("div", { class: "stat-label", text: label }),
    figure("div", Object.assign({ class: "stat-value" }, attrs), value, fmt),
    sub ? el("div", { class: "stat-sub", text: sub }) : null,
  );
}

function mmm(t) {
  return `min ${fmtNum(t.min)} · median ${fmtNum(t.median)} · max ${fmtNum(t.max)}`;
}

function renderPipelines(data, range, multiApp) {
  const box = document.getElementById("pipeline-cards");
  for (const p of data.pipelines) {
    const id = slug(`${p.app}-${p.name}`);
    const card = keyed(box, `${p.app}|${p.name}`, () =>
      el(
        "div",
        { class: "card", "data-pipeline": p.name, "data-app": p.app },
        el("h3", {}),
        el("div", { class: "stats" }),
        el(
          "div",
          { class: "charts" },
          chartBox(`pipeline-throughput-${id}`, "Throughput", "records/s"),
          chartBox(`pipeline-latency-${id}`, "Latency, ingest → sink", "per record"),
        ),
      ),
    );
    card.querySelector("h3").replaceChildren(
      el("span", { text: p.name }),
      el("small", { text: (multiApp ? p.app + " · " : "") + p.workers.join(", ") }),
    );
    const a = { "data-pipeline": p.name, "data-app": p.app };
    const lw = p.latency.window || {};
    card.querySelector(".stats").replaceChildren(
      stat("ingest/s", Object.assign({ "data-metric": "ingest" }, a), p.ingest.last, fmtNum,
        mmm(p.ingest)),
      stat("output/s", Object.assign({ "data-metric": "output" }, a), p.output.last, fmtNum,
        mmm(p.output)),
      el(
        "div",
        { class: "stat" },
        el("div", { class: "stat-label", text: "latency over the window" }),
        el(
          "div",
          { class: "pcts" },
          ...PCTS.map((q) =>
            el("span", {}, el("small", { text: q }),
              figure("b", Object.assign({ "data-metric": "latency-" + q }, a), lw[q] ?? null,
                fmtSec)),
          ),
        ),
        el("div", { class: "stat-sub", text: `${fmtNum(p.latency.count)} records` }),
      ),
    );
    showChart(`pipeline-throughput-${id}`, [
      { label: "ingest", color: PALETTE[0], points: p.ingest.series || [] },
      { label: "output", color: PALETTE[2], points: p.output.series || [], dash: [5, 3] },
    ], range);
    showChart(`pipeline-latency-${id}`, pctSeries(p.latency, ["p50", "p99"]), range, {
      log: true, fmt: fmtSec, legendFmt: fmtSec, empty: "no records reached a sink yet",
    });
  }
  sweep(box);
}

function renderWorkers(data, range, colors) {
  showChart("workers-ingest", data.workers.map((w) => ({
    label: w.worker,
    color: colors[w.worker],
    points: w.ingest.series || [],
    dash: w.stale ? [3, 3] : null,
  })), range);
  const tbody = document.querySelector("#worker-table tbody");
  tbody.replaceChildren(
    ...data.workers.map((w) => {
      const a = { "data-worker": w.worker, "data-app": w.app };
      const m = (name) => Object.assign({ class: "num", "data-metric": name }, a);
      return el(
        "tr",
        Object.assign({ class: w.stale ? "stale" : "" }, a),
        el("td", {}, el("i", { class: "dot", style: `background:${colors[w.worker]}` }),
          el("span", { text: w.worker })),
        el("td", {}, el("span", {
          class: "badge " + (w.stale ? "bad" : "ok"),
          "data-metric": "status", ...a, text: w.stale ? "stale" : "up",
        })),
        figure("td", m("ingest"), w.ingest.last, fmtNum),
        figure("td", m("ingest-min"), w.ingest.min, fmtNum),
        figure("td", m("ingest-median"), w.ingest.median, fmtNum),
        figure("td", m("ingest-max"), w.ingest.max, fmtNum),
        figure("td", m("output"), w.output.last, fmtNum),
        figure("td", m("age"), w.age, fmtAge),
        figure("td", m("reports"), w.reports, fmtNum),
        figure("td", m("dropped_reports"), w.dropped_reports, fmtNum),
        figure("td", m("restarts"), w.restarts, fmtNum),
        figure("td", m("rescale_pause"), w.cluster ? w.cluster.last_pause_seconds : null,
          (v) => (v === null || v === undefined ? "–" : fmtNum(v) + " s")),
      );
    }),
  );
}

function renderSteps(data, range, colors, multiApp) {
  const box = document.getElementById("step-cards");
  const rows = [];
  for (const s of data.steps) {
    const id = slug(`${s.app}-${s.id}`);
    const card = keyed(box, `${s.app}|${s.id}`, () =>
      el(
        "div",
        { class: "card", "data-step": s.id, "data-app": s.app },
        el("h3", {}),
        el(
          "div",
          { class: "charts" },
          chartBox(`step-throughput-${id}`, "Throughput", "records out/s"),
          chartBox(`step-latency-${id}`, "Latency per batch", "all workers"),
        ),
      ),
    );
    card.querySelector("h3").replaceChildren(
      el("span", { text: s.name }),
      el("span", { class: "kind kind-" + s.kind, text: s.kind }),
      el("small", { text: (multiApp ? s.app + " · " : "") + (s.pipeline || "") }),
    );
    const series = s.per_worker.map((pw) => ({
      label: pw.worker,
      color: colors[pw.worker] || "#555",
      points: pw.throughput.series || [],
      dash: pw.stale ? [3, 3] : null,
    }));
    if (s.per_worker.length > 1) {
      series.push({ label: "total", color: "#30343b", points: s.throughput.series || [],
        width: 1.25, dash: [6, 3] });
    }
    showChart(`step-throughput-${id}`, series, range);
    showChart(`step-latency-${id}`, pctSeries(s.latency, ["p50", "p99"]), range, {
      log: true, fmt: fmtSec, legendFmt: fmtSec, empty: "no batches yet",
    });

    rows.push(stepRow(s, null, s.id, colors));
    for (const pw of s.per_worker) rows.push(stepRow(s, pw, pw.key, colors));
  }
  sweep(box);
  document.querySelector("#step-table tbody").replaceChildren(...rows);
}

function stepRow(s, pw, key, colors) {
  const src = pw || s;
  const lat = src.latency.window || {};
  const a = { "data-step": key, "data-app": s.app };
  const m = (name) => Object.assign({ class: "num", "data-metric": name }, a);
  const total = pw === null;
  return el(
    "tr",
    Object.assign({ class: total ? "total" : pw.stale ? "stale" : "" }, a),
    el("td", { text: total ? s.name : "" }),
    total
      ? el("td", { class: "muted", text: s.per_worker.length > 1 ? "all workers" : "" })
      : el("td", {}, el("i", { class: "dot", style: `background:${colors[pw.worker]}` }),
        el("span", { text: pw.worker + (pw.stale ? " (stale)" : "") })),
    el("td", { class: "muted", text: total ? s.kind : "" }),
    figure("td", m("throughput"), src.throughput.last, fmtNum),
    figure("td", m("throughput-min"), src.throughput.min, fmtNum),
    figure("td", m("throughput-median"), src.throughput.median, fmtNum),
    figure("td", m("throughput-max"), src.throughput.max, fmtNum),
    ...PCTS.map((q) => figure("td", m("latency-" + q), lat[q] ?? null, fmtSec)),
    figure("td", m("records_out"), src.records_out, fmtNum),
    figure("td", m("errors"), src.errors, fmtNum),
    figure("td", m("buffered"), src.buffered, fmtNum),
    figure("td", m("held_acks"), src.held_acks, fmtNum),
  );
}

function render(data) {
  lastData = data;
  const multiApp = data.apps.length > 1;
  document.getElementById("apps").replaceChildren(
    ...data.apps.map((a) => el("span", { class: "app", "data-app": a, text: a })),
  );
  const up = data.workers.filter((w) => !w.stale).length;
  const stale = data.workers.length - up;
  const summary = document.getElementById("summary");
  summary.replaceChildren(...[
    figure("span", { "data-metric": "workers-up" }, up, (v) => `${v} up`),
    stale ? figure("span", { class: "bad", "data-metric": "workers-stale" }, stale,
      (v) => `${v} stale`) : null,
    figure("span", { "data-metric": "reports" }, data.hub.reports,
      (v) => `${fmtNum(v)} reports`),
    data.hub.invalid_reports ? figure("span", { class: "bad", "data-metric": "invalid" },
      data.hub.invalid_reports, (v) => `${fmtNum(v)} refused`) : null,
  ].filter((x) => x));
  document.getElementById("empty").hidden = data.workers.length > 0;
  const range = timeRange(data);
  const colors = workerColors(data);
  renderPipelines(data, range, multiApp);
  renderWorkers(data, range, colors);
  renderSteps(data, range, colors, multiApp);
  document.body.dataset.updated = String(data.time);
}

function setStatus(ok, data, err) {
  const s = document.getElementById("status");
  s.dataset.status = ok ? "live" : "down";
  s.textContent = ok ? `live · ${fmtClock(data.time)}` : `hub unreachable (${err})`;
}

async function poll() {
  try {
    const res = await fetch("/api/metrics?series=charts", { cache: "no-store" });
    if (!res.ok) throw new Error("HTTP " + res.status);
    const data = await res.json();
    render(data);
    setStatus(true, data);
  } catch (e) {
    setStatus(false, null, e.message || e);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    for (const [id, { canvas, spec }] of [...charts]) {
      if (canvas.isConnected) drawChart(canvas, spec);
      else charts.delete(id);
    }
  }, 100);
});

poll();
