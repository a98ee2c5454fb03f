// Compare two traces: their spans merged by (service, operation) path from the
// root, each node with both counts, both durations and the delta; nodes that
// exist in one trace only are marked.

import * as api from "../api.js";
import { colour, fmtMs, textColour } from "../model.js";
import { errorBox, go } from "../app.js";
import { el } from "../dom.js";


export async function compareView(view) {
  const q = new URLSearchParams(location.search);
  const a = el("input", { name: "a", id: "cmp-a", placeholder: "trace id A", value: q.get("a") || "", spellcheck: "false" });
  const b = el("input", { name: "b", id: "cmp-b", placeholder: "trace id B", value: q.get("b") || "", spellcheck: "false" });
  const form = el("form", { class: "toolbar", id: "compare-form" },
    el("label", {}, "A ", a), el("label", {}, "B ", b), el("button", { type: "submit", class: "primary" }, "Compare"));
  const out = el("section", { id: "compare", "aria-live": "polite" });
  view.replaceChildren(el("h1", {}, "Compare two traces"), form, out);
  form.addEventListener("submit", (e) => { e.preventDefault(); go(`/compare?${new URLSearchParams(new FormData(form))}`); });
  if (!q.get("a") || !q.get("b")) return;
  let d;
  try {
    d = await api.diff(q.get("a"), q.get("b"));
  } catch (e) {
    out.replaceChildren(errorBox(e.message));
    return;
  }
  const only = { a: "only in A", b: "only in B", both: "" };
  out.replaceChildren(
    el("p", {}, el("a", { href: `/trace/${d.a}`, "data-link": "" }, `A ${d.a}`), " · ", el("a", { href: `/trace/${d.b}`, "data-link": "" }, `B ${d.b}`)),
    el("table", { class: "grid", id: "diff-table" },
      el("thead", {}, el("tr", {}, ...["service / operation", "spans A", "spans B", "duration A", "duration B", "Δ"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...d.nodes.map((n) => el("tr", { class: `diff-${n.presence}`, "data-presence": n.presence, "data-operation": n.operation },
        el("td", { style: `padding-left:${8 + n.depth * 16}px` },
          el("span", { style: `color:${textColour(n.service)};font-weight:600` }, n.service), ` ${n.operation} `,
          only[n.presence] ? el("span", { class: "only" }, only[n.presence]) : null),
        el("td", { class: "num" }, String(n.countA)), el("td", { class: "num" }, String(n.countB)),
        el("td", { class: "num" }, fmtMs(n.durationA / 1e6)), el("td", { class: "num" }, fmtMs(n.durationB / 1e6)),
        el("td", { class: `num ${n.delta > 0 ? "slower" : n.delta < 0 ? "faster" : ""}` }, `${n.delta > 0 ? "+" : n.delta < 0 ? "−" : ""}${fmtMs(Math.abs(n.delta) / 1e6)}`))))));
}
