// runbase dashboard: plain JavaScript over /api/v1/, charts by uPlot (vendored).
// Every page has its own URL; this script reads the path and renders the page. Page state
// that tests read is kept in window.__runbase.
"use strict";

const RB = (window.__runbase = { page: null, ready: false, charts: {}, events: 0, errors: [] });
const main = document.getElementById("main");
let me = null; // { user, role, csrf_token, login_required }

// ---------- DOM helpers (text only, never HTML from data) ----------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const link = (href, text) => h("a", { href }, text);
const enc = encodeURIComponent;
const qs = new URLSearchParams(location.search);

function fmtTime(us) {
  if (us === null || us === undefined) return "";
  return new Date(us / 1000).toLocaleString();
}
function fmtMs(ms) { return ms === null || ms === undefined ? "" : new Date(ms).toLocaleString(); }
function fmtDuration(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function fmtNum(v) {
  if (v === null || v === undefined) return "";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(4) : v.toPrecision(6).replace(/\.?0+$/, "");
}
function statusEl(s) { return h("span", { class: "status-" + s }, s); }

function showError(e) {
  RB.errors.push(String(e.message || e));
  main.prepend(h("div", { class: "error" }, String(e.message || e)));
}

// ---------- API ----------
async function api(path, opts = {}) {
  const init = { credentials: "same-origin", headers: {} };
  if (opts.body !== undefined) {
    init.method = opts.method || "POST";
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(opts.body);
  } else if (opts.method) init.method = opts.method;
  if (init.method && init.method !== "GET" && me) init.headers["x-csrf-token"] = me.csrf_token;
  const r = await fetch(path, init);
  if (r.status === 401 && !opts.noRedirect) {
    location.href = "/login?next=" + enc(location.pathname + location.search);
    throw new Error("login required");
  }
  const text = await r.text();
  let body;
  try { body = JSON.parse(text); } catch { body = { message: text }; }
  if (!r.ok) throw new Error((body.error_code ? body.error_code + ": " : "") + (body.message || r.statusText));
  return body;
}

// One event stream per page (Server-Sent Events); EventSource reconnects by itself and
// resumes with Last-Event-ID. `reset` means events were missed: reload the data.
function follow(params, handlers) {
  let src = null;
  const open = () => {
    src = new EventSource("/api/v1/events?" + new URLSearchParams(params));
    for (const name of ["metrics", "run", "reset", "ready"]) {
      src.addEventListener(name, (e) => {
        RB.events++;
        if (name === "ready") RB.live = true;
        const f = handlers[name];
        if (f) f(name === "reset" || name === "ready" ? {} : JSON.parse(e.data));
      });
    }
    RB.stream = src.url;
  };
  open();
  // A page left for another (and kept in the back/forward cache) must not hold its stream:
  // browsers allow 6 connections per host over HTTP/1.1, across all tabs.
  window.addEventListener("pagehide", () => src && src.close());
  window.addEventListener("pageshow", (e) => {
    if (e.persisted) {
      open();
      if (handlers.reset) handlers.reset({});
    }
  });
}

function debounce(f, ms) {
  let t = null;
  return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); };
}

// ---------- tables ----------
function grid(columns, rows, opts = {}) {
  const head = h("tr", {}, columns.map((c, i) => h("th", {}, opts.header ? opts.header(c, i) : c.name || c)));
  const body = rows.map((row, r) =>
    h("tr", {}, row.map((v, i) => {
      const custom = opts.cell ? opts.cell(columns[i], v, row, r) : undefined;
      const isNum = typeof v === "number";
      return h("td", { class: isNum ? "num" : null }, custom !== undefined ? custom : isNum ? fmtNum(v) : v === null ? "" : String(v));
    })));
  return h("div", { class: "scroll" }, h("table", { class: "grid" }, h("thead", {}, head), h("tbody", {}, body)));
}

// ---------- charts ----------
const PALETTE = ["#0b62c4", "#d1495b", "#2a9d8f", "#e9a03b", "#6a4c93", "#8ab17d", "#ef476f", "#118ab2", "#7a5c3e", "#3d405b"];

// EMA smoothing as TensorBoard does it (debiased), skipping nulls.
function smooth(ys, weight) {
  if (!weight) return ys;
  const out = new Array(ys.length);
  let last = 0, n = 0;
  for (let i = 0; i < ys.length; i++) {
    const y = ys[i];
    if (y === null || !Number.isFinite(y)) { out[i] = y; continue; }
    last = last * weight + (1 - weight) * y;
    n++;
    out[i] = last / (1 - Math.pow(weight, n));
  }
  return out;
}

const chartOpts = { x: qs.get("x") || "step", smoothing: Number(qs.get("smoothing") || 0), log: qs.get("log") === "1" };

// A metric chart of one or more runs. Each series: { run, label, start_us, step[], ts_us[], value[] }.
class MetricChart {
  constructor(el, key, width) {
    this.el = el; this.key = key; this.width = width; this.series = []; this.plot = null; this.zoomed = null;
  }
  xOf(s, i) {
    if (chartOpts.x === "time") return s.ts_us[i] / 1e6;
    if (chartOpts.x === "relative") return (s.ts_us[i] - s.start_us) / 1e6;
    return s.step[i];
  }
  data() {
    const tables = this.series.map((s) => {
      const idx = s.step.map((_, i) => i).sort((a, b) => this.xOf(s, a) - this.xOf(s, b) || a - b);
      const xs = idx.map((i) => this.xOf(s, i));
      let ys = idx.map((i) => s.value[i]);
      ys = smooth(ys, chartOpts.smoothing);
      if (chartOpts.log) ys = ys.map((y) => (y !== null && y > 0 ? y : null));
      return [xs, ys];
    });
    if (tables.length === 1) return tables[0];
    if (tables.length === 0) return [[], []];
    return uPlot.join(tables);
  }
  points() { return this.series.reduce((n, s) => n + s.step.length, 0); }
  draw() {
    const t0 = performance.now();
    const data = this.data();
    if (this.plot) {
      this.plot.setData(data, !this.zoomed);
    } else {
      const self = this;
      const opts = {
        width: this.width, height: 240,
        scales: { x: { time: chartOpts.x === "time" }, y: { distr: chartOpts.log ? 3 : 1 } },
        series: [{ label: chartOpts.x }, ...this.series.map((s, i) => ({
          label: s.label, stroke: PALETTE[i % PALETTE.length], width: 1.25, spanGaps: true, points: { show: false },
        }))],
        axes: [{}, { size: 60 }],
        legend: { live: true },
        cursor: { drag: { x: true, y: false } },
        hooks: { setSelect: [(u) => {
          if (u.select.width < 2) return;
          const lo = u.posToVal(u.select.left, "x"), hi = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ width: 0, height: 0 }, false);
          self.zoom(lo, hi);
        }] },
      };
      opts.cursor.bind = { dblclick: () => () => { self.zoom(null, null); return null; } };
      this.plot = new uPlot(opts, data, this.el);
    }
    RB.charts[this.key] = { points: this.points(), series: this.series.length, drawMs: performance.now() - t0, zoomed: !!this.zoomed };
  }
  // Zooming asks the server again for the range at full resolution (null: everything).
  async zoom(lo, hi) {
    this.zoomed = lo === null ? null : [lo, hi];
    await Promise.all(this.series.map((s) => this.fetchInto(s)));
    this.draw();
    if (this.zoomed) this.plot.setScale("x", { min: lo, max: hi });
  }
  rangeParams(s) {
    if (!this.zoomed) return {};
    let [lo, hi] = this.zoomed;
    if (chartOpts.x === "step") return { x: "step", from: Math.floor(lo), to: Math.ceil(hi) };
    if (chartOpts.x === "relative") { lo = s.start_us / 1e6 + lo; hi = s.start_us / 1e6 + hi; }
    return { x: "time", from: Math.floor(lo * 1e6), to: Math.ceil(hi * 1e6) };
  }
  async fetchInto(s) {
    const p = new URLSearchParams({ key: this.key, points: String(this.width), ...this.rangeParams(s) });
    const r = await api(`/api/v1/runs/${s.run}/metric?` + p);
    s.step = r.step; s.ts_us = r.ts_us; s.value = r.value; s.total = r.total; s.downsampled = r.downsampled;
  }
  // Appends live points; `onlyNewer` skips those at or before the series' last point
  // (events that arrived while the series was being fetched).
  append(run, update, onlyNewer) {
    const s = this.series.find((x) => x.run === run);
    if (!s) return;
    if (update.truncated) { this.fetchInto(s).then(() => this.draw()); return; }
    const n = s.step.length;
    const last = n ? [s.step[n - 1], s.ts_us[n - 1]] : null;
    for (let i = 0; i < update.step.length; i++) {
      if (onlyNewer && last && (update.step[i] < last[0] || (update.step[i] === last[0] && update.ts_us[i] <= last[1]))) continue;
      s.step.push(update.step[i]); s.ts_us.push(update.ts_us[i]); s.value.push(update.value[i]);
    }
    // Past a few points per pixel, ask the server for the series downsampled again.
    if (!this.zoomed && s.step.length > 8 * this.width) { this.fetchInto(s).then(() => this.draw()); return; }
    this.draw();
  }
}

function chartControls() {
  const set = (k, v) => { const p = new URLSearchParams(location.search); if (v === null) p.delete(k); else p.set(k, v); return "?" + p; };
  return h("div", { class: "controls" },
    "x axis:",
    ["step", "time", "relative"].map((x) => chartOpts.x === x ? h("b", {}, x) : link(set("x", x), x)),
    h("label", {}, "smoothing ",
      h("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: chartOpts.smoothing, id: "smoothing",
        onchange: (e) => { location.search = set("smoothing", e.target.value); } })),
    h("label", {}, h("input", { type: "checkbox", id: "logy", checked: chartOpts.log,
      onchange: (e) => { location.search = set("log", e.target.checked ? "1" : null); } }), " log y"),
    h("span", { class: "muted" }, "drag to zoom (full resolution), double-click to reset"));
}

function chartBox(title, extra) {
  const body = h("div", {});
  const box = h("div", { class: "chart", "data-key": title }, h("div", { class: "title" }, h("span", {}, title), extra || ""), body);
  return [box, body];
}

// ---------- pages ----------
async function pageExperiments() {
  const metric = qs.get("metric") || "";
  const mode = qs.get("mode") || "min";
  const load = async () => {
    const p = metric ? "?" + new URLSearchParams({ metric, mode }) : "";
    const r = await api("/api/v1/experiments" + p);
    const cols = ["name", "runs", "running", "last activity"].concat(metric ? [`${mode} ${metric}`] : []);
    const rows = r.experiments.map((e) => [e.name, e.run_count, e.running_count, fmtTime(e.last_activity_us)]
      .concat(metric ? [e.best === undefined ? null : e.best] : []));
    RB.rows = rows.length;
    return grid(cols, rows, { cell: (c, v) => (c === "name" ? link("/experiments/" + enc(v), v) : undefined) });
  };
  const holder = h("div", {}, await load());
  main.replaceChildren(
    h("h1", {}, "Experiments"),
    h("form", { class: "controls", method: "get", action: "/" },
      "best of metric ", h("input", { name: "metric", value: metric, placeholder: "e.g. val_loss" }),
      h("select", { name: "mode" }, h("option", { value: "min", selected: mode === "min" }, "min"), h("option", { value: "max", selected: mode === "max" }, "max")),
      h("button", {}, "Show")),
    holder);
  follow({ kinds: "run" }, {
    run: debounce(async () => holder.replaceChildren(await load()), 300),
    reset: async () => holder.replaceChildren(await load()),
  });
}

async function pageRuns(name) {
  const columns = (qs.get("columns") || "").split(",").filter(Boolean);
  const filter = qs.get("filter") || "";
  const order = qs.get("order") || "start_time";
  const desc = qs.get("desc") !== "false";
  const offset = Number(qs.get("offset") || 0);
  const limit = Number(qs.get("limit") || 50);
  const here = (changes) => {
    const p = new URLSearchParams(location.search);
    for (const [k, v] of Object.entries(changes)) { if (v === null || v === "") p.delete(k); else p.set(k, v); }
    return "?" + p;
  };
  const selected = new Set();
  const compareLink = h("a", { id: "compare", href: "#" }, "Compare selected (0)");
  const updateCompare = () => {
    compareLink.textContent = `Compare selected (${selected.size})`;
    compareLink.href = "/compare?runs=" + [...selected].join(",");
  };
  const tableHolder = h("div", {});
  const load = async () => {
    const p = new URLSearchParams({ columns: columns.join(","), order, desc: String(desc), offset: String(offset), limit: String(limit) });
    if (filter) p.set("filter", filter);
    const r = await api(`/api/v1/experiments/${enc(name)}/runs?` + p);
    const shown = ["name", "status", "user_name", "start_time", "duration_s"].concat(
      r.columns.map((c) => c.name).filter((c) => c.startsWith("params.") || c.startsWith("metrics.") || c.startsWith("tags.")));
    const index = Object.fromEntries(r.columns.map((c, i) => [c.name, i]));
    const rows = r.rows.map((row) => [row[index.run_id]].concat(shown.map((c) => row[index[c]])));
    RB.rows = rows.length; RB.total = r.total;
    RB.table = { columns: shown, rows: rows.map((x) => x.slice(1)), order, desc };
    const cols = ["", ...shown];
    const table = grid(cols, rows, {
      header: (c) => c === "" ? "" : link(here({ order: c, desc: c === order ? String(!desc) : "true", offset: null }),
        c + (c === order ? (desc ? " ▼" : " ▲") : "")),
      cell: (c, v, row) => {
        if (c === "") return h("input", { type: "checkbox", "data-run": v, onchange: (e) => { e.target.checked ? selected.add(v) : selected.delete(v); updateCompare(); } });
        if (c === "name") return link("/runs/" + row[0], v);
        if (c === "status") return statusEl(v);
        if (c === "start_time") return fmtMs(v);
        if (c === "duration_s") return fmtDuration(v);
        return undefined;
      },
    });
    const size = r.limit; // what the server used
    const pager = h("div", { class: "controls" },
      `${r.total} runs · showing ${r.total && rows.length ? offset + 1 : 0}–${offset + rows.length}`,
      offset > 0 ? link(here({ offset: String(Math.max(0, offset - size)) }), "← previous") : "",
      offset + size < r.total ? link(here({ offset: String(offset + size) }), "next →") : "");
    tableHolder.replaceChildren(pager, table);
  };
  const picker = h("details", {}, h("summary", {}, "Columns"), h("p", { class: "muted" }, "loading keys…"));
  main.replaceChildren(
    h("h1", {}, "Experiment ", name),
    h("form", { class: "controls", method: "get", id: "filter-form" },
      h("input", { name: "filter", id: "filter", value: filter, placeholder: "filter: params.lr = '0.1' and metrics.loss < 0.5" }),
      h("input", { type: "hidden", name: "columns", value: columns.join(",") }),
      h("input", { type: "hidden", name: "order", value: order }),
      h("input", { type: "hidden", name: "desc", value: String(desc) }),
      h("button", {}, "Filter"), compareLink),
    picker, tableHolder);
  try { await load(); } catch (e) { showError(e); }
  api(`/api/v1/experiments/${enc(name)}/keys`).then((k) => {
    const boxes = [];
    for (const [ns, keys] of [["params", k.params], ["metrics", k.metrics], ["tags", k.tags]]) {
      for (const key of keys) {
        const col = ns + "." + key;
        boxes.push(h("label", {}, h("input", { type: "checkbox", value: col, checked: columns.includes(col) }), col));
      }
    }
    const apply = h("button", { type: "button", onclick: () => {
      const chosen = [...picker.querySelectorAll("input:checked")].map((i) => i.value);
      location.search = here({ columns: chosen.join(","), offset: null });
    } }, "Apply");
    picker.replaceChildren(h("summary", {}, "Columns"), h("div", { class: "columns" }, boxes), apply);
  }).catch(showError);
  follow({ experiment: name, kinds: "run" }, { run: debounce(load, 300), reset: load });
}

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
function checkRunId(id) {
  if (!UUID.test(id)) throw new Error(`invalid run id "${id}": expected a UUID`);
  return id;
}

async function pageRun(id) {
  checkRunId(id);
  const r = await api("/api/v1/runs/" + id);
  const run = r.run;
  const statusHolder = h("span", {}, statusEl(run.status));
  const endHolder = h("span", {}, run.ended_at_us ? fmtTime(run.ended_at_us) : "");
  const kv = (pairs) => h("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  const params = Object.entries(r.params);
  const tags = Object.entries(r.tags);
  const width = Math.max(420, Math.min(900, Math.floor((main.clientWidth - 40) / 2) - 20));
  const charts = new Map();
  // Lineage sits in the summary: "read" (table versions, linking to the table) and
  // "produced" (model versions).
  const chartsEl = h("div", { class: "charts" });
  const details = h("div", { class: "details" },
    h("div", {}, h("h2", {}, "Params"), params.length ? grid(["key", "value"], params) : h("p", { class: "muted" }, "none")),
    h("div", {}, h("h2", {}, "Tags"), tags.length ? grid(["key", "value"], tags) : h("p", { class: "muted" }, "none")));
  main.replaceChildren(
    h("h1", {}, "Run ", h("span", { id: "run-name" }, run.name), " ", statusHolder),
    kv([["experiment", link("/experiments/" + enc(run.experiment), run.experiment)], ["run id", run.run_id], ["kind", run.kind],
      ["user", run.user_name || ""], ["started", fmtTime(run.started_at_us)], ["ended", endHolder],
      ["parent", run.parent_run_id ? link("/runs/" + run.parent_run_id, run.parent_run_id) : ""],
      ["read", r.inputs.length ? r.inputs.map((i) => h("div", {}, link(`/tables/${enc(i.table)}?version=${i.version}`, `${i.table} v${i.version}`))) : "—"],
      ["produced", r.models.length ? r.models.map((m) => h("div", {}, link(`/models#${enc(m.name)}`, `${m.name} v${m.version}`))) : "—"]]),
    r.alerts.length ? h("div", { id: "alerts" }, h("h2", {}, "Alerts"),
      r.stopped_by ? h("p", { class: "error" }, `stopped by alert ${r.stopped_by}`) : "",
      grid(["fired", "alert", "kind", "action", "value", "message"],
        r.alerts.map((a) => [fmtTime(a.fired_at_us), a.alert, a.kind, a.action, a.value, a.message]))) : "",
    h("h2", {}, "Metrics"), chartControls(), chartsEl,
    details,
    h("h2", {}, "Artifacts"),
    r.artifacts.length ? grid(["path", "size", "sha256"], r.artifacts.map((a) => [a.path, a.size_bytes, a.sha256]),
      { cell: (c, v) => (c === "path" ? link(`/api/v1/runs/${id}/artifacts/${v.split("/").map(enc).join("/")}`, v) : undefined) })
      : h("p", { class: "muted" }, "none"),
    r.children.length ? h("div", {}, h("h2", {}, "Child runs"), grid(["name", "status"], r.children.map((c) => [c, c.status]),
      { cell: (col, v) => (col === "name" ? link("/runs/" + v.run_id, v.name) : col === "status" ? statusEl(v) : undefined) })) : "");
  const addChart = async (key) => {
    if (charts.has(key)) return charts.get(key);
    const csv = link(`/api/v1/runs/${id}/metric?key=${enc(key)}&format=csv`, "CSV");
    const [box, body] = chartBox(key, csv);
    chartsEl.append(box);
    const c = new MetricChart(body, key, width);
    charts.set(key, c);
    c.series.push({ run: id, label: run.name, start_us: run.started_at_us, step: [], ts_us: [], value: [] });
    await c.fetchInto(c.series[0]);
    c.draw();
    return c;
  };
  // Follow before fetching, so nothing committed in between is missed: events wait in
  // `queue` until the charts are loaded, then add only what the fetch did not have.
  let loaded = false;
  const queue = [];
  RB.status = run.status;
  const onMetrics = async (e, onlyNewer) => {
    for (const s of e.series) {
      if (!charts.has(s.key)) await addChart(s.key); else charts.get(s.key).append(id, s, onlyNewer);
    }
  };
  follow({ runs: id }, {
    metrics: (e) => (loaded ? onMetrics(e, false) : queue.push(e)),
    run: (e) => {
      statusHolder.replaceChildren(statusEl(e.run.status));
      endHolder.textContent = e.run.ended_at_us ? fmtTime(e.run.ended_at_us) : "";
      RB.status = e.run.status;
    },
    reset: async () => { for (const c of charts.values()) { await c.fetchInto(c.series[0]); c.draw(); } },
  });
  await Promise.all(r.metrics.map((m) => addChart(m.key)));
  for (const e of queue.splice(0)) await onMetrics(e, true);
  loaded = true;
  // For tests and the console: zoom a chart, read a chart's values.
  RB.zoom = (key, lo, hi) => charts.get(key).zoom(lo, hi);
  window.__runbase_peek = (key) => charts.get(key).series[0].value.filter((v) => v !== null);
  RB.alerts = r.alerts.length;
  RB.ready = true;
}

async function pageCompare() {
  const ids = (qs.get("runs") || "").split(",").filter(Boolean).map(checkRunId);
  if (!ids.length) { main.replaceChildren(h("h1", {}, "Compare"), h("p", {}, "Select runs in an experiment's runs table.")); return; }
  const runs = await Promise.all(ids.map((id) => api("/api/v1/runs/" + id)));
  const keys = [...new Set(runs.flatMap((r) => r.metrics.map((m) => m.key)))].sort();
  const paramKeys = [...new Set(runs.flatMap((r) => Object.keys(r.params)))].sort();
  const width = Math.max(420, Math.min(900, Math.floor((main.clientWidth - 40) / 2) - 20));
  const chartsEl = h("div", { class: "charts" });
  const px = qs.get("param") || paramKeys[0] || "";
  const my = qs.get("metric") || keys[0] || "";
  const pick = (name, options, value) => h("select", { name }, options.map((o) => h("option", { value: o, selected: o === value }, o)));
  const scatterEl = h("div", {});
  const parEl = h("div", {});
  main.replaceChildren(
    h("h1", {}, `Compare ${runs.length} runs`),
    grid(["run", "experiment", "status", ...paramKeys], runs.map((r) => [r.run, r.run.experiment, r.run.status, ...paramKeys.map((k) => r.params[k] ?? null)]),
      { cell: (c, v) => (c === "run" ? link("/runs/" + v.run_id, v.name) : c === "status" ? statusEl(v) : undefined) }),
    h("h2", {}, "Metrics"), chartControls(), chartsEl,
    h("h2", {}, "Param against metric"),
    h("form", { class: "controls", method: "get" }, h("input", { type: "hidden", name: "runs", value: ids.join(",") }),
      "x: param ", pick("param", paramKeys, px), " y: metric ", pick("metric", keys, my), h("button", {}, "Show")),
    scatterEl, h("h2", {}, "Parallel coordinates"), parEl);
  for (const key of keys) {
    const [box, body] = chartBox(key);
    chartsEl.append(box);
    const c = new MetricChart(body, key, width);
    for (const r of runs) {
      if (!r.metrics.some((m) => m.key === key)) continue;
      const s = { run: r.run.run_id, label: r.run.name, start_us: r.run.started_at_us, step: [], ts_us: [], value: [] };
      c.series.push(s);
    }
    await Promise.all(c.series.map((s) => c.fetchInto(s)));
    c.draw();
  }
  // Scatter: one point per run (latest value of the metric against the param).
  const latest = (r, k) => { const m = r.metrics.find((x) => x.key === k); return m ? m.value : null; };
  const cat = {}; // categorical params map to indexes
  const num = (v, k) => { const n = Number(v); if (v !== undefined && v !== null && v !== "" && Number.isFinite(n)) return n; cat[k] = cat[k] || []; if (!cat[k].includes(v)) cat[k].push(v); return cat[k].indexOf(v); };
  if (px && my) {
    const pts = runs.map((r) => [num(r.params[px], px), latest(r, my)]).sort((a, b) => a[0] - b[0]);
    new uPlot({ width, height: 260, mode: 1, scales: { x: { time: false } },
      series: [{ label: px }, { label: my, stroke: PALETTE[0], paths: () => null, points: { show: true, size: 8, fill: PALETTE[0] } }] },
    [pts.map((p) => p[0]), pts.map((p) => p[1])], scatterEl);
    RB.scatter = pts.length;
  }
  // Parallel coordinates over every param and the chosen metric (SVG: one line per run).
  const axes = [...paramKeys, ...(my ? ["metric: " + my] : [])];
  if (axes.length) {
    const W = Math.max(600, axes.length * 120), H = 260, pad = 30;
    const values = runs.map((r) => axes.map((a) => (a.startsWith("metric: ") ? latest(r, my) : num(r.params[a], a))));
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "parcoords"); svg.setAttribute("width", W); svg.setAttribute("height", H);
    const el = (tag, attrs, text) => { const e = document.createElementNS(svg.namespaceURI, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text !== undefined) e.textContent = text; svg.append(e); return e; };
    const xs = axes.map((_, i) => pad + (i * (W - 2 * pad)) / Math.max(1, axes.length - 1));
    const ranges = axes.map((_, i) => { const v = values.map((r) => r[i]).filter((x) => x !== null); return [Math.min(...v), Math.max(...v)]; });
    const y = (i, v) => { const [lo, hi] = ranges[i]; return v === null ? null : H - pad - ((v - lo) / (hi - lo || 1)) * (H - 2 * pad); };
    axes.forEach((a, i) => { el("line", { x1: xs[i], x2: xs[i], y1: pad, y2: H - pad, stroke: "#999" }); el("text", { x: xs[i], y: 14, "text-anchor": "middle" }, a); });
    values.forEach((row, r) => {
      const pts = row.map((v, i) => [xs[i], y(i, v)]).filter((p) => p[1] !== null);
      el("polyline", { points: pts.map((p) => p.join(",")).join(" "), fill: "none", stroke: PALETTE[r % PALETTE.length], "stroke-width": 1.5 });
    });
    parEl.append(svg);
    RB.parallel = values.length;
  }
  RB.ready = true;
}

async function pageModels() {
  const r = await api("/api/v1/models");
  const aliases = {};
  for (const a of r.aliases) (aliases[a.name + "/" + a.version] = aliases[a.name + "/" + a.version] || []).push(a.alias);
  RB.rows = r.models.length;
  main.replaceChildren(h("h1", {}, "Models"),
    r.models.length ? grid(["name", "version", "aliases", "task", "target", "inputs", "metrics", "run", "created", "export"],
      r.models.map((m) => [m.name, m.version, (aliases[m.name + "/" + m.version] || []).join(", "), m.task, m.target || "",
        (m.input_columns || []).join(", "), JSON.stringify(m.metrics), m.run_id, fmtTime(m.created_at_us), m]),
      { cell: (c, v) => c === "name" ? h("a", { id: v, href: "#" + enc(v) }, v)
        : c === "run" ? (v ? link("/runs/" + v, v.slice(0, 8)) : "")
        : c === "export" ? link(`/api/v1/models/${enc(v.name)}/versions/${v.version}/export`, "TorchScript") : undefined })
      : h("p", { class: "muted" }, "No models yet: TRAIN registers one per run."));
  RB.ready = true;
}

async function pageJobs() {
  const holder = h("div", {});
  const load = async () => {
    const r = await api("/api/v1/jobs");
    const idx = Object.fromEntries(r.columns.map((c, i) => [c.name, i]));
    const cols = ["run_id", "model", "user_name", "state", "device", "epoch", "epochs", "progress", "val_loss", "elapsed_seconds"];
    const canCancel = me && me.role !== "readonly";
    const rows = r.rows.map((row) => cols.map((c) => row[idx[c]]).concat(canCancel ? [row[idx.run_id]] : []));
    RB.rows = rows.length;
    holder.replaceChildren(rows.length ? grid(cols.concat(canCancel ? [""] : []), rows, {
      cell: (c, v) => c === "run_id" ? link("/runs/" + v, v.slice(0, 8))
        : c === "progress" ? h("span", { class: "progress", title: fmtNum(v) }, h("span", { style: `width:${Math.round((v || 0) * 100)}%` }))
        : c === "" ? h("button", { class: "cancel", onclick: async (e) => { e.target.disabled = true; try { await api(`/api/v1/jobs/${v}/cancel`, { method: "POST", body: {} }); } catch (err) { showError(err); } } }, "Cancel")
        : undefined,
    }) : h("p", { class: "muted" }, "No training is running."));
    RB.ready = true;
  };
  main.replaceChildren(h("h1", {}, "Jobs"), holder);
  await load();
  setInterval(() => load().catch(showError), 1000);
}

async function pageTables() {
  const r = await api("/api/v1/tables");
  const idx = Object.fromEntries(r.columns.map((c, i) => [c.name, i]));
  RB.rows = r.rows.length;
  main.replaceChildren(h("h1", {}, "Tables"), r.rows.length ? grid(r.columns, r.rows, {
    cell: (c, v) => (c.name === "name" ? link("/tables/" + enc(v), v) : undefined),
  }) : h("p", { class: "muted" }, "No tables yet."));
  RB.ready = true;
  return idx;
}

async function pageTable(name) {
  const version = qs.get("version");
  const r = await api("/api/v1/tables/" + enc(name) + (version ? "?version=" + enc(version) : ""));
  main.replaceChildren(h("h1", {}, "Table ", name, version ? ` at version ${version}` : ""),
    h("h2", {}, "Versions"), grid(r.versions.columns, r.versions.rows, {
      cell: (c, v) => (c.name === "version" ? link(`/tables/${enc(name)}?version=${v}`, String(v)) : undefined),
    }),
    h("h2", {}, version ? `First rows at version ${version}` : "First rows"), grid(r.preview.columns, r.preview.rows));
  RB.rows = r.preview.rows.length;
  RB.ready = true;
}

async function pageQuery() {
  const sql = qs.get("sql") || "SELECT run_id, key, step, value FROM runbase.metrics LIMIT 100";
  const out = h("div", {});
  main.replaceChildren(h("h1", {}, "Query"),
    h("form", { method: "get", action: "/query" },
      h("textarea", { id: "sql", name: "sql" }, sql),
      h("div", { class: "controls" }, h("button", {}, "Run (read-only)"), h("span", { class: "muted" }, "one query; results are capped at 10,000 rows"))),
    out);
  if (!qs.get("sql")) { RB.ready = true; return; }
  try {
    const r = await api("/api/v1/query", { body: { sql } });
    RB.rows = r.rows.length;
    const numeric = r.columns.map((c, i) => i).filter((i) => r.rows.length && r.rows.every((row) => row[i] === null || typeof row[i] === "number"));
    if (numeric.length >= 2) {
      const [xi, ...yis] = numeric;
      const rows = [...r.rows].filter((row) => row[xi] !== null).sort((a, b) => a[xi] - b[xi]);
      const box = h("div", { class: "chart" });
      out.append(box);
      new uPlot({ width: Math.min(1000, main.clientWidth - 40), height: 280, scales: { x: { time: false } },
        series: [{ label: r.columns[xi].name }, ...yis.map((i, n) => ({ label: r.columns[i].name, stroke: PALETTE[n % PALETTE.length] }))] },
      [rows.map((row) => row[xi]), ...yis.map((i) => rows.map((row) => row[i]))], box);
      RB.chart = { x: r.columns[xi].name, y: yis.map((i) => r.columns[i].name), points: rows.length };
    }
    out.append(h("p", { class: "muted" }, `${r.rows.length} rows${r.truncated ? " (truncated)" : ""}`), grid(r.columns, r.rows));
  } catch (e) { showError(e); }
  RB.ready = true;
}

function pageLogin() {
  const next = qs.get("next") || "/";
  const err = h("div", {});
  const form = h("form", { class: "login", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api("/api/v1/login", { body: { user: form.user.value, password: form.password.value }, noRedirect: true });
      // Only somewhere on this server (no open redirect through ?next=).
      const to = new URL(next, location.origin);
      location.href = to.origin === location.origin ? to.pathname + to.search + to.hash : "/";
    } catch (x) { err.replaceChildren(h("div", { class: "error" }, x.message)); }
  } },
  h("label", {}, "User", h("br"), h("input", { name: "user", id: "user", autocomplete: "username" })),
  h("label", {}, "Password", h("br"), h("input", { name: "password", id: "password", type: "password", autocomplete: "current-password" })),
  h("button", { id: "login" }, "Log in"), err);
  main.replaceChildren(h("h1", {}, "Log in to runbase"), h("p", { class: "muted" }, "Your PostgreSQL user name and password."), form);
  RB.ready = true;
}

// ---------- routing ----------
async function route() {
  const path = location.pathname;
  const seg = path.split("/").filter(Boolean).map(decodeURIComponent);
  RB.page = seg[0] || "experiments";
  if (seg[0] === "login") return pageLogin();
  try {
    me = await api("/api/v1/whoami");
    document.getElementById("who").replaceChildren(me.user + " (" + me.role + ")",
      me.login_required ? h("button", { id: "logout", onclick: async () => { await api("/api/v1/logout", { method: "POST", body: {} }); location.href = "/login"; } }, "Log out") : "");
    RB.role = me.role;
    RB.csrf = me.csrf_token;
  } catch (e) { if (String(e.message) === "login required") return; throw e; }
  if (!seg.length) return pageExperiments();
  if (seg[0] === "experiments" && seg[1]) return pageRuns(seg[1]);
  if (seg[0] === "runs" && seg[1]) return pageRun(seg[1]);
  if (seg[0] === "compare") return pageCompare();
  if (seg[0] === "models") return pageModels();
  if (seg[0] === "jobs") return pageJobs();
  if (seg[0] === "tables" && seg[1]) return pageTable(seg[1]);
  if (seg[0] === "tables") return pageTables();
  if (seg[0] === "query") return pageQuery();
  main.replaceChildren(h("h1", {}, "Not found"));
}

route().then(() => { RB.ready = true; }).catch((e) => { showError(e); RB.ready = true; });
