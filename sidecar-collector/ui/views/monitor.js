// Service performance (the Monitor tab's content, from the SPM endpoints): per
// service, and per operation, the request rate as sampled and adjusted for
// sampling, the error rate, and latency p50/p95/p99 over time.

import * as api from "../api.js";
import { colour, fmtMs } from "../model.js";
import { errorBox, go } from "../app.js";
import { el } from "../dom.js";


const LOOKBACKS = { "15m": 15 * 60e3, "1h": 3600e3, "6h": 6 * 3600e3, "24h": 24 * 3600e3, "48h": 48 * 3600e3 };

/** A line chart of series [{label, points: [[t, v]]}] as SVG over the window
 *  [from, to] (ms since the epoch): a time axis with five labelled ticks, three
 *  value gridlines with units, a legend with the last values, and on hover the
 *  values at the nearest time; clicking there calls `onPick(t)`. Drawn by hand:
 *  this whole file (11 KB) is a fifth of uPlot 1.6.32's minified script (51 KB,
 *  from its npm package), and these charts hold at most a few hundred points. */
function chart(title, series, format, id, { from, to, onPick } = {}) {
  const ns = "http://www.w3.org/2000/svg";
  const svgEl = (name, attrs) => {
    const e = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  };
  const W = 600;
  const [L, R, T, B] = [72, 588, 10, 146];
  const svg = svgEl("svg", { viewBox: `0 0 ${W} 180`, class: "chart", role: "img", "aria-label": title });
  const all = series.flatMap((s) => s.points);
  const shown = from && to ? ` — ${new Date(from).toLocaleString()} to ${new Date(to).toLocaleTimeString()}` : "";
  const fig = el("figure", { class: "chart-box", id }, el("figcaption", {}, title, el("span", { class: "muted window" }, shown)));
  if (!all.length) {
    fig.append(el("p", { class: "muted" }, "no data in this window"));
    return fig;
  }
  const t0 = from ?? Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(to ?? 0, ...all.map((p) => p[0]), t0 + 1);
  // All zero (no errors): a scale of one unit, not of nothing.
  const vMax = Math.max(...all.map((p) => p[1])) || 1;
  const x = (t) => L + ((R - L) * (t - t0)) / (t1 - t0);
  const y = (v) => B - ((B - T) * v) / vMax;
  // Value gridlines and labels: 0, half, the maximum.
  for (const v of [0, vMax / 2, vMax]) {
    svg.append(svgEl("line", { x1: L, x2: R, y1: y(v), y2: y(v), stroke: "#d0d7de", "stroke-width": 1 }));
    const label = svgEl("text", { x: L - 6, y: y(v) + 5, "font-size": 15, "text-anchor": "end", class: "y-tick" });
    label.textContent = format(v);
    svg.append(label);
  }
  // Time ticks: five, across the window.
  const hhmm = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((t1 - t0) * i) / 4;
    svg.append(svgEl("line", { x1: x(t), x2: x(t), y1: B, y2: B + 4, stroke: "#57606a" }));
    const label = svgEl("text", { x: x(t), y: B + 22, "font-size": 15, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle", class: "x-tick" });
    label.textContent = hhmm(t);
    svg.append(label);
  }
  const legend = el("div", { class: "legend" });
  for (const s of series) {
    const c = s.colour || colour(s.label);
    const path = svgEl("polyline", { points: s.points.map(([t, v]) => `${x(t)},${y(v)}`).join(" "), fill: "none", stroke: c, "stroke-width": 2, "data-series": s.label });
    if (s.dashed) path.setAttribute("stroke-dasharray", "5 3");
    svg.append(path);
    // Points too: a window with one point would otherwise draw nothing.
    for (const [t, v] of s.points) svg.append(svgEl("circle", { cx: x(t), cy: y(v), r: 2.5, fill: c, "data-series": s.label, "data-value": format(v) }));
    const last = s.points[s.points.length - 1];
    legend.append(el("span", {}, el("span", { class: "swatch", style: `background:${c}` }), ` ${s.label}: ${last ? format(last[1]) : "—"}`));
  }
  // Hover: a line at the nearest time with the value of each series there.
  const cursor = svgEl("line", { y1: T, y2: B, stroke: "#1b1f24", "stroke-dasharray": "2 2", visibility: "hidden" });
  const tip = el("div", { class: "chart-tip", role: "status", hidden: "" });
  const times = [...new Set(all.map((p) => p[0]))].sort((a, b) => a - b);
  const nearest = (t) => times.reduce((best, u) => (Math.abs(u - t) < Math.abs(best - t) ? u : best), times[0]);
  // A little past the plot, so points on its edges are under the pointer too.
  const hit = svgEl("rect", { x: L - 8, y: T - 8, width: R - L + 16, height: B - T + 12, fill: "transparent", class: "chart-hit" });
  hit.style.cursor = onPick ? "pointer" : "crosshair";
  const timeAt = (e) => {
    const r = svg.getBoundingClientRect();
    const px = ((e.clientX - r.left) / r.width) * W;
    return nearest(t0 + ((px - L) / (R - L)) * (t1 - t0));
  };
  hit.addEventListener("mousemove", (e) => {
    const t = timeAt(e);
    cursor.setAttribute("x1", x(t));
    cursor.setAttribute("x2", x(t));
    cursor.setAttribute("visibility", "visible");
    tip.replaceChildren(el("strong", {}, new Date(t).toLocaleTimeString()),
      ...series.map((s) => {
        // Each series' own point nearest that time (their timestamps may differ a little).
        const p = s.points.reduce((b, q) => (!b || Math.abs(q[0] - t) < Math.abs(b[0] - t) ? q : b), null);
        if (p && Math.abs(p[0] - t) > (t1 - t0) / 50) return el("div", {}, ` ${s.label}: —`);
        return el("div", {}, el("span", { class: "swatch", style: `background:${s.colour || colour(s.label)}` }), ` ${s.label}: ${p ? format(p[1]) : "—"}`);
      }));
    tip.hidden = false;
  });
  hit.addEventListener("mouseleave", () => { cursor.setAttribute("visibility", "hidden"); tip.hidden = true; });
  if (onPick) hit.addEventListener("click", (e) => onPick(timeAt(e)));
  svg.append(cursor, hit);
  fig.append(el("div", { class: "chart-area" }, svg, tip), legend);
  return fig;
}

const points = (family, match) => {
  const m = family.metrics.find((x) => match(x.labels));
  return (m?.metricPoints || []).map((p) => [Date.parse(p.timestamp), p.gaugeValue.doubleValue]);
};
const label = (labels, name) => labels.find((l) => l.name === name)?.value;

export async function monitorView(view) {
  const q = new URLSearchParams(location.search);
  const services = await api.services();
  const service = el("select", { name: "service", id: "mon-service" }, ...services.map((s) => el("option", { value: s }, s)));
  if (q.get("service")) service.value = q.get("service");
  const lookback = el("select", { name: "lookback", id: "mon-lookback" }, ...Object.keys(LOOKBACKS).map((l) => el("option", { value: l }, `last ${l}`)));
  lookback.value = q.get("lookback") || "1h";
  const kind = el("select", { name: "spanKind", id: "mon-kind" }, ...["server", "client", "internal", "producer", "consumer"].map((k) => el("option", { value: k }, k)));
  kind.value = q.get("spanKind") || "server";
  const form = el("form", { class: "toolbar", id: "monitor-form" },
    el("label", {}, "Service ", service), el("label", {}, "Span kind ", kind), el("label", {}, "Time ", lookback),
    el("button", { type: "submit", class: "primary" }, "Show"));
  const out = el("section", { id: "monitor", "aria-live": "polite" });
  view.replaceChildren(el("h1", {}, "Service performance"), form, out);
  form.addEventListener("submit", (e) => { e.preventDefault(); go(`/monitor?${new URLSearchParams(new FormData(form))}`); });
  const svc = q.get("service") || services[0];
  if (!svc) {
    out.replaceChildren(el("p", { class: "muted" }, "No services yet."));
    return;
  }
  const lb = LOOKBACKS[q.get("lookback") || "1h"] || 3600e3;
  const step = Math.max(60e3, Math.round(lb / 60));
  const base = { service: svc, lookback: lb, step, ratePer: Math.max(step, 300e3), spanKind: kind.value };
  let calls, adjusted, errors, lat;
  try {
    [calls, adjusted, errors, ...lat] = await Promise.all([
      api.spm("calls", base), api.spm("calls", { ...base, adjusted: true }), api.spm("errors", base),
      api.spm("latencies", { ...base, quantile: 0.5 }), api.spm("latencies", { ...base, quantile: 0.95 }),
      api.spm("latencies", { ...base, quantile: 0.99 }),
    ]);
  } catch (e) {
    out.replaceChildren(errorBox(e.message));
    return;
  }
  const all = () => true;
  // The window shown, and a click on a chart: that service's traces around that time.
  const to = Date.now();
  const win = { from: to - lb, to };
  const local = (t) => {
    const d = new Date(t - new Date(t).getTimezoneOffset() * 60e3);
    return d.toISOString().slice(0, 16);
  };
  win.onPick = (t) => go(`/search?${new URLSearchParams({ service: svc, lookback: "custom", start: local(t - step), end: local(t + step) })}`);
  const rate = (v) => `${v >= 10 || v === 0 ? v.toFixed(1) : v.toPrecision(2)}/s`;
  out.replaceChildren(el("div", { class: "charts" },
    chart("Requests per second", [
      { label: "adjusted for sampling", points: points(adjusted, all), colour: "#0a58ca" },
      { label: "sampled", points: points(calls, all), colour: "#57606a", dashed: true },
    ], rate, "chart-rate", win),
    chart("Error rate", [{ label: "errors", points: points(errors, all), colour: "#b42318" }], (v) => `${(100 * v).toFixed(1)}%`, "chart-errors", win),
    chart("Latency", [
      { label: "p50", points: points(lat[0], all), colour: "#1a7f37" },
      { label: "p95", points: points(lat[1], all), colour: "#9a6700" },
      { label: "p99", points: points(lat[2], all), colour: "#cf222e" },
    ], fmtMs, "chart-latency", win)),
    el("h2", {}, "By operation"), el("div", { id: "by-operation" }, el("p", { class: "muted" }, "Loading…")));
  try {
    const [opCalls, opAdj, opErr, opP95] = await Promise.all([
      api.spm("calls", { ...base, groupByOperation: true }), api.spm("calls", { ...base, groupByOperation: true, adjusted: true }),
      api.spm("errors", { ...base, groupByOperation: true }), api.spm("latencies", { ...base, groupByOperation: true, quantile: 0.95 }),
    ]);
    const last = (fam, op) => {
      const p = points(fam, (ls) => label(ls, "operation") === op);
      return p.length ? p[p.length - 1][1] : NaN;
    };
    const ops = opCalls.metrics.map((m) => label(m.labels, "operation")).sort();
    const fmt = (v, f) => (Number.isFinite(v) ? f(v) : "—");
    document.getElementById("by-operation").replaceChildren(el("table", { class: "grid", id: "operation-table" },
      el("thead", {}, el("tr", {}, ...["operation", "req/s adjusted", "req/s sampled", "error rate", "p95"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...ops.map((op) => el("tr", { "data-operation": op },
        el("td", {}, el("a", { href: `/search?service=${encodeURIComponent(svc)}&operation=${encodeURIComponent(op)}`, "data-link": "" }, op)),
        el("td", { class: "num" }, fmt(last(opAdj, op), rate)), el("td", { class: "num" }, fmt(last(opCalls, op), rate)),
        el("td", { class: "num" }, fmt(last(opErr, op), (v) => `${(100 * v).toFixed(1)}%`)), el("td", { class: "num" }, fmt(last(opP95, op), fmtMs)))))));
  } catch (e) {
    document.getElementById("by-operation").replaceChildren(errorBox(e.message));
  }
}
