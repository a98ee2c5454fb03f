// A window against a baseline window for a service (and operation): latency
// percentiles, error rate and throughput with their deltas, and the attribute
// values over-represented in the window's slow or failed spans.

import * as api from "../api.js";
import { fmtMs } from "../model.js";
import { errorBox, go } from "../app.js";
import { el } from "../dom.js";


const WINDOWS = { "15m": 15 * 60e3, "1h": 3600e3, "6h": 6 * 3600e3, "24h": 24 * 3600e3 };
const pct = (v) => `${(100 * v).toFixed(1)}%`;
const signed = (v, f) => `${v > 0 ? "+" : v < 0 ? "−" : ""}${f(Math.abs(v))}`;

export async function comparisonView(view) {
  const q = new URLSearchParams(location.search);
  const services = await api.services();
  const service = el("select", { name: "service", id: "cw-service" }, ...services.map((s) => el("option", { value: s }, s)));
  if (q.get("service")) service.value = q.get("service");
  const operation = el("input", { name: "operation", id: "cw-operation", placeholder: "all operations", value: q.get("operation") || "" });
  const windowSel = el("select", { name: "window", id: "cw-window" }, ...Object.keys(WINDOWS).map((w) => el("option", { value: w }, `last ${w}`)));
  windowSel.value = q.get("window") || "1h";
  const offset = el("select", { name: "baselineOffset", id: "cw-offset" }, ...["1h", "24h", "168h"].map((o) => el("option", { value: o }, o === "168h" ? "a week earlier" : `${o} earlier`)));
  offset.value = q.get("baselineOffset") || "24h";
  const form = el("form", { class: "toolbar", id: "comparison-form" },
    el("label", {}, "Service ", service), el("label", {}, "Operation ", operation),
    el("label", {}, "Window ", windowSel), el("label", {}, "Baseline ", offset),
    el("button", { type: "submit", class: "primary" }, "Compare"));
  const out = el("section", { id: "comparison", "aria-live": "polite" });
  view.replaceChildren(el("h1", {}, "Window vs baseline"), form, out);
  form.addEventListener("submit", (e) => { e.preventDefault(); go(`/comparison?${new URLSearchParams(new FormData(form))}`); });
  if (!q.get("service")) return;
  const end = Date.now() * 1000;
  const start = end - (WINDOWS[windowSel.value] || 3600e3) * 1000;
  let c;
  try {
    c = await api.compareWindows({ service: q.get("service"), operation: q.get("operation") || "", start, end, baselineOffset: offset.value });
  } catch (e) {
    out.replaceChildren(errorBox(e.message));
    return;
  }
  const row = (label, w, b, d) => el("tr", {}, el("th", { scope: "row" }, label), el("td", { class: "num" }, w), el("td", { class: "num" }, b), el("td", { class: "num" }, d));
  const ms = (ns) => fmtMs(ns / 1e6);
  // No baseline: no delta (null), never a delta against zero.
  const delta = (d, fmt) => (d === null || d === undefined ? "—" : signed(d, fmt));
  out.replaceChildren(
    ...(c.baselineEmpty ? [el("p", { class: "notice", id: "no-baseline", role: "status" }, c.notice || "No baseline data: nothing to compare against.")] : []),
    el("table", { class: "grid", id: "window-stats" },
      el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", { scope: "col" }, "window"), el("th", { scope: "col" }, "baseline"), el("th", { scope: "col" }, "Δ"))),
      el("tbody", {},
        row("p50", ms(c.window.p50Ns), (c.baselineEmpty ? "—" : ms(c.baseline.p50Ns)), delta(c.deltaP50Ns, ms)),
        row("p95", ms(c.window.p95Ns), (c.baselineEmpty ? "—" : ms(c.baseline.p95Ns)), delta(c.deltaP95Ns, ms)),
        row("p99", ms(c.window.p99Ns), (c.baselineEmpty ? "—" : ms(c.baseline.p99Ns)), delta(c.deltaP99Ns, ms)),
        row("error rate", pct(c.window.errorRate), pct(c.baseline.errorRate), delta(c.deltaErrorRate, pct)),
        row("spans read per second", c.window.perSecond.toFixed(3), c.baseline.perSecond.toFixed(3), delta(c.deltaPerSecond, (v) => v.toFixed(3))),
        row("spans", String(c.window.spans), String(c.baseline.spans), ""))),
    el("h2", {}, `Over-represented in the window's slow (> ${ms(c.slowThresholdNs)}) or failed spans (${c.selected})`),
    c.overrepresented.length
      ? el("table", { class: "grid", id: "overrepresented" },
        el("thead", {}, el("tr", {}, ...["attribute", "in slow or failed", c.baselineEmpty ? "in the window's other spans" : "in baseline", "difference", "spans"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ...c.overrepresented.map((o) => el("tr", { "data-attr": `${o.key}=${o.value}` },
          el("td", {}, `${o.key} = ${o.value}`), el("td", { class: "num" }, pct(o.inSelection)),
          el("td", { class: "num" }, pct(o.inBaseline)), el("td", { class: "num" }, signed(o.score, pct)),
          el("td", { class: "num" }, String(o.count))))))
      : el("p", { class: "muted" }, "Nothing stands out."));
}
