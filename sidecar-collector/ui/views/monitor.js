// Service performance (the Monitor tab's content, from the SPM endpoints): per
// service, and per operation, the request rate as sampled and adjusted for
// sampling, the error rate, and latency p50/p95/p99 over time.

import * as api from "../api.js";
import { colour, fmtMs } from "../model.js";
import { errorBox, go } from "../app.js";
import { el } from "../dom.js";


const LOOKBACKS = { "15m": 15 * 60e3, "1h": 3600e3, "6h": 6 * 3600e3, "24h": 24 * 3600e3, "48h": 48 * 3600e3 };

/** A line chart of series [{label, points: [[t, v]]}] as SVG. */
function chart(title, series, format, id) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 600 180");
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const all = series.flatMap((s) => s.points);
  const fig = el("figure", { class: "chart-box", id }, el("figcaption", {}, title));
  if (!all.length) {
    fig.append(el("p", { class: "muted" }, "no data in this window"));
    return fig;
  }
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]), t0 + 1);
  const vMax = Math.max(...all.map((p) => p[1]), 1e-9);
  const x = (t) => 40 + (550 * (t - t0)) / (t1 - t0);
  const y = (v) => 165 - (150 * v) / vMax;
  const axis = document.createElementNS(ns, "text");
  axis.setAttribute("x", "2");
  axis.setAttribute("y", "14");
  axis.setAttribute("font-size", "11");
  axis.textContent = format(vMax);
  svg.append(axis);
  const legend = el("div", { class: "legend" });
  for (const s of series) {
    const path = document.createElementNS(ns, "polyline");
    path.setAttribute("points", s.points.map(([t, v]) => `${x(t)},${y(v)}`).join(" "));
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", s.colour || colour(s.label));
    path.setAttribute("stroke-width", "2");
    if (s.dashed) path.setAttribute("stroke-dasharray", "5 3");
    path.setAttribute("data-series", s.label);
    svg.append(path);
    // Points too: a window with one point would otherwise draw nothing.
    for (const [t, v] of s.points) {
      const c = document.createElementNS(ns, "circle");
      c.setAttribute("cx", x(t));
      c.setAttribute("cy", y(v));
      c.setAttribute("r", "2.5");
      c.setAttribute("fill", s.colour || colour(s.label));
      svg.append(c);
    }
    const last = s.points[s.points.length - 1];
    legend.append(el("span", {}, el("span", { class: "swatch", style: `background:${s.colour || colour(s.label)}` }), ` ${s.label}: ${last ? format(last[1]) : "—"}`));
  }
  fig.append(svg, legend);
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
  const rate = (v) => `${v >= 10 || v === 0 ? v.toFixed(1) : v.toPrecision(2)}/s`;
  out.replaceChildren(el("div", { class: "charts" },
    chart("Requests per second", [
      { label: "adjusted for sampling", points: points(adjusted, all), colour: "#0a58ca" },
      { label: "sampled", points: points(calls, all), colour: "#57606a", dashed: true },
    ], rate, "chart-rate"),
    chart("Error rate", [{ label: "errors", points: points(errors, all), colour: "#b42318" }], (v) => `${(100 * v).toFixed(1)}%`, "chart-errors"),
    chart("Latency", [
      { label: "p50", points: points(lat[0], all), colour: "#1a7f37" },
      { label: "p95", points: points(lat[1], all), colour: "#9a6700" },
      { label: "p99", points: points(lat[2], all), colour: "#cf222e" },
    ], fmtMs, "chart-latency")),
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
