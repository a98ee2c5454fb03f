// Sampling: the strategy in force per service and operation (the strategies
// file, with adaptive probabilities where they apply), the probability traffic
// was actually sampled with and the rates behind it, and what changed when.

import * as api from "../api.js";
import { errorBox, go } from "../app.js";
import { el } from "../dom.js";


const pct = (v) => (v == null ? "—" : `${(100 * v).toPrecision(3)}%`);

function strategyText(s) {
  if (!s) return "—";
  if (s.rateLimitingSampling) return `rate limited, ${s.rateLimitingSampling.maxTracesPerSecond} traces/s`;
  const p = s.operationSampling?.defaultSamplingProbability ?? s.probabilisticSampling?.samplingRate;
  return `probabilistic ${pct(p)}`;
}

export async function samplingView(view) {
  const q = new URLSearchParams(location.search);
  const lookback = el("select", { name: "lookback", id: "smp-lookback" }, ...["15m", "1h", "6h", "24h"].map((l) => el("option", { value: l }, `last ${l}`)));
  lookback.value = q.get("lookback") || "1h";
  const form = el("form", { class: "toolbar" }, el("label", {}, "Rates over ", lookback), el("button", { type: "submit", class: "primary" }, "Show"));
  const out = el("section", { id: "sampling", "aria-live": "polite" });
  view.replaceChildren(el("h1", {}, "Sampling"), form, out);
  form.addEventListener("submit", (e) => { e.preventDefault(); go(`/sampling?${new URLSearchParams(new FormData(form))}`); });
  let page;
  try {
    page = await api.sampling(lookback.value);
  } catch (e) {
    out.replaceChildren(errorBox(e.message));
    return;
  }
  const rows = [];
  for (const s of page.services) {
    rows.push(el("tr", { "data-service": s.service },
      el("th", { scope: "row" }, s.service),
      el("td", {}, strategyText(s.strategy), s.adaptive ? el("span", { class: "only" }, "adaptive") : null),
      el("td", { class: "num" }, pct(s.effectiveProbability)),
      el("td", { class: "num" }, s.observedPerSecond.toFixed(3)),
      el("td", { class: "num" }, s.adjustedPerSecond.toFixed(3))));
    for (const o of s.strategy?.operationSampling?.perOperationStrategies || []) {
      rows.push(el("tr", { "data-operation": o.operation },
        el("td", { style: "padding-left:24px" }, o.operation), el("td", {}, `probabilistic ${pct(o.probabilisticSampling.samplingRate)}`),
        el("td", {}, ""), el("td", {}, ""), el("td", {}, "")));
    }
  }
  out.replaceChildren(
    el("table", { class: "grid", id: "sampling-table" },
      el("thead", {}, el("tr", {}, ...["service / operation", "strategy in force", "effective probability", "spans/s stored", "requests/s (adjusted)"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows)),
    el("h2", {}, "What changed when"),
    el("ol", { id: "changes" }, ...page.changes.slice().reverse().map((c) => el("li", {}, el("time", { datetime: new Date(c.atUnixMs).toISOString() }, new Date(c.atUnixMs).toLocaleString()), ` ${c.what}`))));
}
