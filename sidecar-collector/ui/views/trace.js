// One trace: header, find, collapse/expand, JSON download and upload, a minimap,
// the waterfall (virtualized: only the rows on screen exist, so a 10,000-span
// trace scrolls like a small one) with service colours and the critical path
// highlighted, and the selected span's detail.

import * as api from "../api.js";
import { criticalPath } from "../analysis.js";
import { build, colour, fmtMs, textColour } from "../model.js";
import { errorBox } from "../app.js";
import { el } from "../dom.js";

const ROW = 24;
const OVERSCAN = 12;


export async function traceView(view, id) {
  view.replaceChildren(el("p", { class: "muted" }, `Loading trace ${id}…`));
  const started = performance.now();
  // The trace and its critical path in parallel: two reads of the same trace.
  const [traceResult, cpResult] = await Promise.allSettled([api.trace(id), api.criticalPath(id)]);
  if (traceResult.status === "rejected") {
    const e = traceResult.reason;
    view.replaceChildren(errorBox(e.status === 404 ? `Trace ${id} was not found.` : e.message));
    return;
  }
  const data = traceResult.value;
  const cp = cpResult.status === "fulfilled" ? cpResult.value : null;
  const cpError = cpResult.status === "rejected" ? cpResult.reason.message : null;
  show(view, data, cp, cpError);
  // The browser test reads this: time from navigation to the first screen of rows.
  window.__meshtraceFirstScreenMs = performance.now() - started;
}

function show(view, data, cp, cpError) {
  const t = build(data);
  if (!t) {
    view.replaceChildren(errorBox("This trace has no spans."));
    return;
  }
  // Critical path segments by span, in ms from the trace start.
  const crit = new Map();
  const times = new Map();
  if (cp) {
    for (const seg of cp.criticalPath) {
      const list = crit.get(seg.spanId) || [];
      list.push([
        Number(BigInt(seg.startTimeUnixNano) - t.t0) / 1e6,
        Number(BigInt(seg.endTimeUnixNano) - t.t0) / 1e6,
      ]);
      crit.set(seg.spanId, list);
    }
    for (const s of cp.spans) times.set(s.spanId, s);
  }
  const collapsed = new Set();
  let selected = null;
  let query = "";
  let visible = [];

  const head = el("div", { class: "trace-head" },
    el("h1", {}, `${t.root.service}: ${t.root.name}`),
    el("span", { class: "muted", "data-testid": "trace-id" }, t.traceId),
    el("span", {}, `duration ${fmtMs(t.duration)}`),
    el("span", {}, `${t.spans.length} spans`),
    el("span", { "data-testid": "trace-depth" }, `depth ${t.spans.reduce((m, s) => Math.max(m, s.depth), 0) + 1}`),
    el("span", {}, `${t.services.length} services`),
    el("span", { class: "muted" }, new Date(Number(t.t0 / 1000000n)).toLocaleString()));
  const warnings = [...t.warnings, ...(cp?.warnings || []).map(describeWarning)];
  if (cpError) warnings.push(`critical path unavailable: ${cpError}`);
  const warnList = warnings.length
    ? el("ul", { class: "warnings", "aria-label": "warnings" }, ...warnings.map((w) => el("li", {}, w)))
    : null;

  const resetZoom = el("button", { type: "button", id: "reset-zoom", hidden: "" }, "Reset zoom");
  const find = el("input", { type: "search", placeholder: "Find in trace (name, service, attribute, event, resource)", "aria-label": "find in trace", id: "find" });
  const found = el("span", { class: "muted", "aria-live": "polite" });
  const upload = el("input", { type: "file", accept: ".json,application/json", id: "upload", class: "sr-only" });
  const toolbar = el("div", { class: "toolbar" }, find, found,
    el("button", { type: "button", onclick: () => { for (const s of t.spans) if (s.children.length) collapsed.add(s); refresh(); } }, "Collapse all"),
    el("button", { type: "button", onclick: () => { collapsed.clear(); refresh(); } }, "Expand all"),
    el("button", { type: "button", id: "download", onclick: () => download(t.traceId, data) }, "Download JSON"),
    archiveButton(t.traceId),
    el("label", { for: "upload", class: "button", role: "button", tabindex: "0" }, "Open JSON file…"), upload,
    resetZoom,
    el("span", { class: "legend" }, el("span", { class: "crit" }), "critical path"));
  upload.addEventListener("change", async () => {
    const f = upload.files?.[0];
    if (!f) return;
    try {
      const text = await f.text();
      const json = JSON.parse(text);
      // The critical path of the file's trace, computed here by the analysis wasm.
      let fileCp = null;
      let fileCpError = null;
      try {
        fileCp = await criticalPath(text);
      } catch (e) {
        fileCpError = e.message;
      }
      show(view, json.result || json, fileCp, fileCpError);
      history.replaceState(null, "", location.pathname);
    } catch (e) {
      view.prepend(errorBox(`${f.name}: ${e.message}`));
    }
  });

  const minimap = el("div", { class: "minimap", "aria-hidden": "true" });
  const canvas = el("canvas");
  minimap.append(canvas);
  const inner = el("div", { class: "wf-inner" });
  const wf = el("div", { class: "waterfall", tabindex: "0", role: "tree", "aria-label": "spans", id: "waterfall" }, inner);
  const detail = el("section", { class: "detail", "aria-live": "polite", id: "detail" },
    el("p", { class: "muted" }, "Select a span for its attributes, events, links and process."));
  // Time rulers (five ticks from 0 to the trace's duration, as Jaeger's) under the
  // minimap and over the waterfall's bars; the bars' area has the same gridlines.
  const wfTicks = el("div", { class: "wf-ticks-area" }, ruler(0, t.duration, "wf-ticks"));
  const wfRuler = el("div", { class: "wf-ruler" },
    el("div", { class: "wf-name muted" }, "service / operation"), wfTicks);
  // The waterfall's ruler scrolls with it sideways and stays on top (sticky).
  wf.prepend(wfRuler);
  const timeline = el("div", { id: "tab-timeline", role: "tabpanel", "aria-label": "timeline" },
    minimap, ruler(0, t.duration, "minimap-ticks"), wf, detail);
  // Other views of the same trace, from the same analysis report as the API's.
  const panels = {
    timeline: [timeline, "Timeline"],
    statistics: [el("div", { id: "tab-statistics", role: "tabpanel", "aria-label": "trace statistics" }), "Trace statistics"],
    spans: [el("div", { id: "tab-spans", role: "tabpanel", "aria-label": "spans table" }), "Spans table"],
    flamegraph: [el("div", { id: "tab-flamegraph", role: "tabpanel", "aria-label": "flamegraph" }), "Flamegraph"],
  };
  const tabs = el("div", { class: "tabs", role: "tablist", "aria-label": "trace views" });
  const showTab = (name) => {
    for (const [k, [panel]] of Object.entries(panels)) panel.hidden = k !== name;
    for (const b of tabs.children) b.setAttribute("aria-selected", b.dataset.tab === name ? "true" : "false");
    if (name === "statistics") panels.statistics[0].replaceChildren(statisticsTable(cp, cpError));
    if (name === "spans") panels.spans[0].replaceChildren(spansTable(t, times, select));
    if (name === "flamegraph") panels.flamegraph[0].replaceChildren(flamegraph(t, select));
    if (name === "timeline") requestAnimationFrame(draw);
  };
  for (const [k, [, label]] of Object.entries(panels)) {
    tabs.append(el("button", { type: "button", role: "tab", class: "tab", "data-tab": k, id: `tab-${k}-button`, onclick: () => {
      const u = new URL(location.href);
      if (k === "timeline") u.searchParams.delete("view");
      else u.searchParams.set("view", k);
      history.replaceState(null, "", u);
      showTab(k);
    } }, label));
  }
  view.replaceChildren(head, ...(warnList ? [warnList] : []), toolbar, tabs,
    ...Object.values(panels).map(([p]) => p));
  const asked = new URLSearchParams(location.search).get("view");
  showTab(panels[asked] ? asked : "timeline");

  // A span matches on its name, service, id, status message, attributes, its
  // events' names and attributes (an `exception` event's type and message) and
  // its resource's attributes, keys and values alike.
  const has = (text, q) => String(text).toLowerCase().includes(q);
  const anyPair = (pairs, q) => pairs.some(([k, v]) => has(k, q) || has(v, q));
  const matches = (s) => {
    if (!query) return false;
    const q = query.toLowerCase();
    return has(s.name, q) || has(s.service, q) || s.id.includes(q) || has(s.statusMessage, q) ||
      anyPair(s.attributes, q) || anyPair(s.resource, q) ||
      s.events.some((e) => has(e.name, q) || anyPair(e.attributes, q));
  };

  function computeVisible() {
    visible = [];
    const hidden = new Set();
    for (const s of t.spans) {
      const p = s.parentId && t.byId.get(s.parentId);
      if (p && (collapsed.has(p) || hidden.has(p))) {
        hidden.add(s);
        continue;
      }
      visible.push(s);
    }
  }

  // The waterfall's time window: the whole trace, or what was dragged on the minimap.
  let zoom = [0, t.duration || 1];
  // A drag on the minimap in progress: from and to, in pixels.
  let dragFrom = null;
  let dragTo = null;
  const span = () => Math.max(1e-9, zoom[1] - zoom[0]);
  const at = (ms) => (100 * (ms - zoom[0])) / span();
  function setZoom(z) {
    zoom = z || [0, t.duration || 1];
    wfTicks.replaceChildren(ruler(zoom[0], zoom[1], "wf-ticks"));
    resetZoom.hidden = !z;
    draw();
  }
  resetZoom.addEventListener("click", () => setZoom(null));

  function row(s, i) {
    const left = at(s.start);
    const width = Math.max(0.05, (100 * (s.end - s.start)) / span());
    const bars = el("div", { class: "wf-bar-area" },
      el("div", { class: "wf-bar", style: `left:${left}%;width:${width}%;background:${colour(s.service)}${s.error ? ";outline:2px solid #b42318" : ""}` }));
    for (const [a, b] of crit.get(s.id) || []) {
      bars.append(el("div", { class: "wf-crit", "data-critical": s.id, style: `left:${at(a)}%;width:${Math.max(0.05, (100 * (b - a)) / span())}%` }));
    }
    if (s.end >= zoom[0] && s.start <= zoom[1]) {
      bars.append(el("span", { class: "wf-label", style: `left:${Math.max(0, Math.min(left + width, 92))}%` }, ` ${fmtMs(s.end - s.start)}`));
    }
    const toggle = s.children.length
      ? el("button", { type: "button", class: "toggle", "aria-label": collapsed.has(s) ? "expand" : "collapse", onclick: (e) => { e.stopPropagation(); toggleSpan(s); } }, collapsed.has(s) ? "▸" : "▾")
      : el("span", { style: "display:inline-block;width:20px" });
    const name = el("div", { class: "wf-name", style: `padding-left:${4 + s.depth * 14}px`, title: `${s.service}: ${s.name}` },
      toggle, ...badges(s), el("span", { style: `color:${textColour(s.service)};font-weight:600` }, s.service), ` ${s.name}`,
      s.error ? el("span", { class: "badge-err" }, " !") : null);
    const r = el("div", {
      class: `wf-row${selected === s ? " selected" : ""}${matches(s) ? " match" : ""}`,
      style: `top:${i * ROW}px`, role: "treeitem", "aria-level": String(s.depth + 1),
      "aria-selected": selected === s ? "true" : "false", "data-span-id": s.id,
    }, name, bars);
    r.addEventListener("click", () => select(s));
    return r;
  }

  function draw() {
    const top = wf.scrollTop;
    const h = wf.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const last = Math.min(visible.length, Math.ceil((top + h) / ROW) + OVERSCAN);
    const rows = [];
    for (let i = first; i < last; i++) rows.push(row(visible[i], i));
    inner.replaceChildren(...rows);
    drawMinimap(top, h);
  }

  function drawMinimap(top, h) {
    const w = (canvas.width = minimap.clientWidth || 800);
    const ch = (canvas.height = minimap.clientHeight || 40);
    const g = canvas.getContext("2d");
    if (!g) return;
    g.clearRect(0, 0, w, ch);
    const n = visible.length || 1;
    const step = Math.max(1, Math.floor(n / ch));
    for (let i = 0; i < n; i += step) {
      const s = visible[i];
      g.fillStyle = colour(s.service);
      g.fillRect((w * s.start) / t.duration, (ch * i) / n, Math.max(1, (w * (s.end - s.start)) / t.duration), Math.max(1, ch / n));
    }
    // Outside the waterfall's window, greyed.
    const d = t.duration || 1;
    g.fillStyle = "rgba(246, 248, 250, 0.75)";
    g.fillRect(0, 0, (w * zoom[0]) / d, ch);
    g.fillRect((w * zoom[1]) / d, 0, w - (w * zoom[1]) / d, ch);
    if (dragFrom !== null && dragTo !== null) {
      g.fillStyle = "rgba(10, 88, 202, 0.2)";
      g.fillRect(Math.min(dragFrom, dragTo), 0, Math.abs(dragTo - dragFrom), ch);
    }
    g.strokeStyle = "#1f6feb";
    g.strokeRect(0, (ch * top) / (n * ROW), w - 1, Math.max(2, (ch * h) / (n * ROW)));
  }

  function refresh() {
    computeVisible();
    inner.style.height = `${visible.length * ROW}px`;
    const m = query ? t.spans.filter(matches) : [];
    found.textContent = query ? `${m.length} match${m.length === 1 ? "" : "es"}` : "";
    draw();
  }

  function toggleSpan(s) {
    if (collapsed.has(s)) collapsed.delete(s);
    else collapsed.add(s);
    refresh();
  }

  function select(s) {
    selected = s;
    detail.replaceChildren(...spanDetail(s, times.get(s.id)));
    const i = visible.indexOf(s);
    if (i >= 0 && (i * ROW < wf.scrollTop || (i + 1) * ROW > wf.scrollTop + wf.clientHeight)) {
      wf.scrollTop = Math.max(0, i * ROW - wf.clientHeight / 2);
    }
    draw();
  }

  // Drag across the minimap to zoom the waterfall to that time (as Jaeger's);
  // a click without a drag, or "Reset zoom", shows the whole trace again.
  const xOf = (e) => Math.max(0, Math.min(minimap.clientWidth, e.clientX - minimap.getBoundingClientRect().left));
  minimap.addEventListener("pointerdown", (e) => {
    dragFrom = xOf(e);
    dragTo = dragFrom;
    minimap.setPointerCapture?.(e.pointerId);
    e.preventDefault();
  });
  minimap.addEventListener("pointermove", (e) => {
    if (dragFrom === null) return;
    dragTo = xOf(e);
    draw();
  });
  minimap.addEventListener("pointerup", (e) => {
    if (dragFrom === null) return;
    const [a, b] = [dragFrom, xOf(e)].sort((x, y) => x - y);
    dragFrom = dragTo = null;
    const w = minimap.clientWidth || 1;
    if (b - a < 3) setZoom(null);
    else setZoom([(t.duration * a) / w, (t.duration * b) / w]);
  });
  wf.addEventListener("scroll", () => requestAnimationFrame(draw));
  wf.addEventListener("keydown", (e) => {
    const i = selected ? visible.indexOf(selected) : -1;
    if (e.key === "ArrowDown") select(visible[Math.min(visible.length - 1, i + 1)]);
    else if (e.key === "ArrowUp") select(visible[Math.max(0, i - 1)]);
    else if (e.key === "ArrowLeft" && selected?.children.length && !collapsed.has(selected)) toggleSpan(selected);
    else if (e.key === "ArrowRight" && selected && collapsed.has(selected)) toggleSpan(selected);
    else return;
    e.preventDefault();
  });
  find.addEventListener("input", () => {
    query = find.value.trim();
    refresh();
    const first = query && visible.find(matches);
    if (first) select(first);
  });
  window.addEventListener("resize", () => draw(), { passive: true });
  refresh();
}

/** Five ticks from `from` to `to` ms, placed over a bar area. */
function ruler(from, to, cls) {
  return el("div", { class: `ruler ${cls}`, "aria-hidden": "true" },
    ...[0, 1, 2, 3, 4].map((i) => el("span", { class: "tick", style: `left:${25 * i}%` }, fmtMs(from + ((to - from) * i) / 4))));
}

/** A row's badges: HTTP and gRPC status, database or messaging system, span kind. */
function badges(s) {
  const a = new Map(s.attributes);
  const out = [];
  const http = a.get("http.response.status_code") ?? a.get("http.status_code");
  if (http !== undefined && http !== "") {
    const n = Number(http);
    out.push(el("span", { class: `badge${n >= 500 ? " bad" : n >= 400 ? " warn" : ""}`, title: `HTTP status ${http}`, "data-badge": "http" }, String(http)));
  }
  const grpc = a.get("rpc.grpc.status_code");
  if (grpc !== undefined && grpc !== "") {
    out.push(el("span", { class: `badge${Number(grpc) !== 0 ? " bad" : ""}`, title: `gRPC status ${grpc}`, "data-badge": "grpc" }, `grpc ${grpc}`));
  }
  if (a.get("db.system")) out.push(el("span", { class: "badge", title: `database: ${a.get("db.system")}`, "data-badge": "db" }, `⛁ ${a.get("db.system")}`));
  else if (a.get("messaging.system")) out.push(el("span", { class: "badge", title: `messaging: ${a.get("messaging.system")}`, "data-badge": "messaging" }, `✉ ${a.get("messaging.system")}`));
  if (["server", "client", "producer", "consumer"].includes(s.kind)) {
    out.push(el("span", { class: "badge kind", title: `span kind: ${s.kind}`, "data-badge": "kind" }, s.kind));
  }
  return out;
}

/** The trace as a flamegraph (an icicle: the root on top, each span under its
 *  parent, across its time), with the time ruler; spans under half a pixel are
 *  left out. Clicking a span opens it in the timeline. */
function flamegraph(t, select) {
  const ns = "http://www.w3.org/2000/svg";
  const W = 1000;
  const H = 18;
  const depth = t.spans.reduce((m, s) => Math.max(m, s.depth), 0) + 1;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "flame");
  svg.setAttribute("viewBox", `0 0 ${W} ${depth * H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `flamegraph of ${t.spans.length} spans, ${depth} levels`);
  svg.style.height = `${depth * H}px`;
  const d = t.duration || 1;
  for (const s of t.spans) {
    const w = (W * (s.end - s.start)) / d;
    if (w < 0.5) continue;
    const g = document.createElementNS(ns, "g");
    g.setAttribute("data-span-id", s.id);
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("x", String((W * s.start) / d));
    r.setAttribute("y", String(s.depth * H));
    r.setAttribute("width", String(Math.max(0.5, w)));
    r.setAttribute("height", String(H - 1));
    r.setAttribute("fill", colour(s.service));
    r.setAttribute("stroke", s.error ? "#b42318" : "none");
    const title = document.createElementNS(ns, "title");
    title.textContent = `${s.service}: ${s.name} ${fmtMs(s.end - s.start)}`;
    g.append(r, title);
    g.style.cursor = "pointer";
    g.addEventListener("click", () => { document.querySelector("#tab-timeline-button")?.click(); select(s); });
    svg.append(g);
  }
  // Names where a bar is wide enough, as HTML over the drawing (an SVG stretched
  // to the width would stretch its text).
  const labels = el("div", { class: "flame-labels", "aria-hidden": "true", style: `height:${depth * H}px` });
  for (const s of t.spans) {
    const w = (100 * (s.end - s.start)) / d;
    if (w < 6) continue;
    labels.append(el("span", { style: `left:${(100 * s.start) / d}%;width:${w}%;top:${s.depth * H}px` }, `${s.service}: ${s.name}`));
  }
  return el("div", {}, ruler(0, t.duration, "flame-ticks"), el("div", { class: "flame-wrap" }, svg, labels));
}

/** Jaeger's Trace Statistics: per service and operation, from the analysis report. */
function statisticsTable(cp, cpError) {
  if (!cp) return errorBox(`trace statistics unavailable: ${cpError || "no analysis"}`);
  const ms = (ns) => fmtMs(ns / 1e6);
  return el("table", { class: "grid", id: "stats-table" },
    el("thead", {}, el("tr", {}, ...["service", "operation", "count", "total", "self", "min", "avg", "max"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...(cp.statistics || []).map((r) => el("tr", { "data-operation": r.operation, "data-service": r.service },
      el("td", { style: `color:${textColour(r.service)};font-weight:600` }, r.service), el("td", {}, r.operation),
      el("td", { class: "num" }, String(r.count)), el("td", { class: "num" }, ms(r.totalNs)),
      el("td", { class: "num" }, ms(r.selfNs)), el("td", { class: "num" }, ms(r.minNs)),
      el("td", { class: "num" }, ms(r.avgNs)), el("td", { class: "num" }, ms(r.maxNs))))));
}

/** Every span as a row (at most 2,000 shown), sorted by start, duration or self
 *  time; a row opens the span in the timeline. */
function spansTable(t, times, select) {
  const LIMIT = 2000;
  const rows = t.spans.map((s) => ({ s, dur: s.end - s.start, self: (times.get(s.id)?.selfNs ?? NaN) / 1e6 }));
  const body = el("tbody");
  const by = {
    start: (a, b) => a.s.start - b.s.start,
    duration: (a, b) => b.dur - a.dur,
    self: (a, b) => (b.self || 0) - (a.self || 0),
  };
  const fill = (key) => {
    rows.sort(by[key]);
    body.replaceChildren(...rows.slice(0, LIMIT).map(({ s, dur, self }) => el("tr", { "data-span-id": s.id },
      el("td", { style: `color:${textColour(s.service)};font-weight:600` }, s.service),
      el("td", {}, el("a", { href: `#${s.id}`, onclick: (e) => { e.preventDefault(); document.querySelector("#tab-timeline-button")?.click(); select(s); } }, s.name)),
      el("td", {}, s.kind), el("td", { class: "num" }, `+${fmtMs(s.start)}`), el("td", { class: "num" }, fmtMs(dur)),
      el("td", { class: "num" }, Number.isNaN(self) ? "—" : fmtMs(self)), el("td", {}, s.error ? "error" : ""))));
  };
  const sortButton = (key, label) => el("button", { type: "button", class: "link", "data-sort": key, onclick: () => fill(key) }, label);
  fill("start");
  return el("div", {},
    t.spans.length > LIMIT ? el("p", { class: "muted" }, `the first ${LIMIT} of ${t.spans.length} spans in the chosen order`) : null,
    el("table", { class: "grid", id: "spans-table" },
      el("thead", {}, el("tr", {},
        el("th", { scope: "col" }, "service"), el("th", { scope: "col" }, "operation"), el("th", { scope: "col" }, "kind"),
        el("th", { scope: "col" }, sortButton("start", "start")), el("th", { scope: "col" }, sortButton("duration", "duration")),
        el("th", { scope: "col" }, sortButton("self", "self time")), el("th", { scope: "col" }, "status"))),
      body));
}

function describeWarning(w) {
  if (w.kind === "clock_skew") return `span ${w.span.toString(16)}: shifted ${fmtMs(w.shift_ns / 1e6)} to fit its parent (clock skew between sidecars)`;
  if (w.kind === "missing_parent") return `span ${w.span.toString(16)}: its parent is not in the trace`;
  if (w.kind === "several_roots") return `${w.roots} spans without a parent in the trace`;
  return JSON.stringify(w);
}

function table(rows) {
  return el("table", {}, ...rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, String(v)))));
}

function spanDetail(s, times) {
  const parts = [
    el("h2", {}, `${s.service}: ${s.name}`),
    table([
      ["span id", s.id], ["parent", s.parentId || "(root)"], ["kind", s.kind],
      ["start", `+${fmtMs(s.start)}`], ["duration", fmtMs(s.end - s.start)],
      ["status", s.error ? `error ${s.statusMessage}` : "ok/unset"],
      ["sampler", s.sampler ? `${s.sampler}${s.probability ? ` (p = ${s.probability})` : ""}` : "—"],
      ...(times ? [["self time", fmtMs(times.selfNs / 1e6)], ["on the critical path", fmtMs(times.criticalNs / 1e6)]] : []),
    ]),
    el("h3", {}, "Attributes"), table(s.attributes),
  ];
  if (s.events.length) {
    parts.push(el("h3", {}, "Events"));
    for (const e of s.events) parts.push(el("h4", {}, `+${fmtMs(e.at)} ${e.name}`), table(e.attributes));
  }
  if (s.links.length) parts.push(el("h3", {}, "Links"), table(s.links.map((l) => [l.traceId, l.spanId])));
  parts.push(el("h3", {}, "Process"), table([...s.resource, ["instrumentation scope", s.scope || "—"]]));
  return parts;
}

// Archive: the trace is copied to the archive and kept past the store's retention.
function archiveButton(id) {
  const status = el("span", { class: "muted", "aria-live": "polite", id: "archive-status" });
  const button = el("button", { type: "button", id: "archive", onclick: async () => {
    button.disabled = true;
    status.textContent = "archiving…";
    try {
      await api.archiveTrace(id);
      status.textContent = "archived: kept past retention";
    } catch (e) {
      status.textContent = `not archived: ${e.message}`;
      button.disabled = false;
    }
  } }, "Archive");
  return el("span", {}, button, " ", status);
}

function download(id, data) {
  const blob = new Blob([JSON.stringify({ result: data }, null, 2)], { type: "application/json" });
  const a = el("a", { href: URL.createObjectURL(blob), download: `trace-${id}.json` });
  document.body.append(a);
  a.click();
  a.remove();
}
