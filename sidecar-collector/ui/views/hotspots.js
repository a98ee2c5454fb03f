// Hotspots: for the traces a search finds, which (service, operation) pairs
// hold how much of the end-to-end latency on the critical path, ranked, with
// the p50/p95 of their critical-path time and self time per trace, and the
// traces where each took longest.

import { colour, fmtMs, textColour } from "../model.js";
import { errorBox, go } from "../app.js";
import * as api from "../api.js";
import { el } from "../dom.js";


export async function hotspotsView(view) {
  const q = new URLSearchParams(location.search);
  const services = await api.services();
  const service = el("select", { name: "service", id: "hs-service" }, ...services.map((s) => el("option", { value: s }, s)));
  if (q.get("service")) service.value = q.get("service");
  const lookback = el("select", { name: "lookback", id: "hs-lookback" },
    ...["15m", "1h", "6h", "24h", "48h"].map((l) => el("option", { value: l }, `last ${l}`)));
  lookback.value = q.get("lookback") || "1h";
  const limit = el("input", { type: "number", name: "limit", id: "hs-limit", min: "1", max: "2000", value: q.get("limit") || "500" });
  const form = el("form", { class: "toolbar", id: "hotspots-form" },
    el("label", {}, "Service ", service), el("label", {}, "Time ", lookback),
    el("label", {}, "Traces ", limit), el("button", { type: "submit", class: "primary" }, "Analyse"));
  const out = el("section", { "aria-live": "polite", id: "hotspots" });
  view.replaceChildren(el("h1", {}, "Hotspots on the critical path"), form, out);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    go(`/hotspots?${new URLSearchParams(new FormData(form))}`);
  });
  // Or the traces picked in search results (`traceID` repeated).
  const picked = q.getAll("traceID");
  if (!q.get("service") && !picked.length) return;
  out.replaceChildren(el("p", { class: "muted" }, "Reading traces…"));
  let r;
  try {
    r = picked.length
      ? await api.hotspotsOf(picked)
      : await api.hotspots(q.get("service"), q.get("lookback") || "1h", q.get("limit") || "500");
  } catch (e) {
    out.replaceChildren(errorBox(e.message));
    return;
  }
  const rows = r.hotspots.map((h, i) => el("tr", { "data-operation": h.operation, "data-service": h.service },
    el("td", {}, String(i + 1)),
    el("td", {}, el("span", { style: `color:${textColour(h.service)};font-weight:600` }, h.service), ` ${h.operation}`),
    el("td", {}, el("div", { class: "share", style: `width:${Math.max(1, 100 * h.share)}%` }), ` ${(100 * h.share).toFixed(1)}%`),
    el("td", { class: "num" }, fmtMs(h.criticalP50Ns / 1e6)),
    el("td", { class: "num" }, fmtMs(h.criticalP95Ns / 1e6)),
    el("td", { class: "num" }, fmtMs(h.selfP50Ns / 1e6)),
    el("td", { class: "num" }, fmtMs(h.selfP95Ns / 1e6)),
    el("td", { class: "num" }, String(h.traces)),
    el("td", {}, ...h.examples.map(([id]) => el("a", { href: `/trace/${id}`, "data-link": "" }, `${id.slice(0, 8)} `)))));
  out.replaceChildren(
    el("p", { id: "hotspots-summary" }, `${picked.length ? `The ${picked.length} traces picked in search results: ` : ""}${r.traces} traces, ${fmtMs(r.totalNs / 1e6)} end to end in all.`),
    r.truncated ? errorBox(r.truncated) : "",
    el("table", { class: "grid", id: "hotspot-table" },
      el("thead", {}, el("tr", {}, ...["#", "service / operation", "share of latency", "critical p50", "critical p95", "self p50", "self p95", "traces", "examples"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows)));
}
