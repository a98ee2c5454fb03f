// Search: service, operation (with its span kind), tags, duration bounds (Go
// syntax, as Jaeger takes them), lookback or a time range, limit. The form lives
// in the URL, so a search is a link. Results: a duration-over-time scatter plot
// and the list (root service and operation, duration, spans, errors, services),
// sorted by recency, duration, spans or errors (in the URL); two results picked
// open Compare, any picked open their Hotspots.

import * as api from "../api.js";
import { colour, fmtMs, textColour } from "../model.js";
import { errorBox, go } from "../app.js";
import { el } from "../dom.js";

const LOOKBACKS = [
  ["5m", 5 * 60e3], ["15m", 15 * 60e3], ["1h", 3600e3], ["6h", 6 * 3600e3],
  ["24h", 24 * 3600e3], ["2d", 48 * 3600e3], ["custom", 0],
];


/** `key=value` pairs separated by spaces (a value may be "quoted"), in order;
 *  a key may repeat (with OR: `http.response.status_code=500 http.response.status_code=503`). */
export function parseTags(text) {
  const tags = [];
  const re = /([^\s=]+)=("([^"]*)"|(\S*))/g;
  let m;
  let rest = text;
  while ((m = re.exec(text))) {
    tags.push([m[1], m[3] ?? m[4]]);
    rest = rest.replace(m[0], "");
  }
  if (rest.trim()) throw new Error(`tags: "${rest.trim()}" is not key=value`);
  return tags;
}

function field(label, input) {
  return el("label", {}, label, input);
}

export async function searchView(view) {
  const q = new URLSearchParams(location.search);
  const services = await api.services();
  const serviceSel = el("select", { name: "service", id: "service", required: "" },
    ...services.map((s) => el("option", { value: s }, s)));
  if (q.get("service")) serviceSel.value = q.get("service");
  const opSel = el("select", { name: "operation", id: "operation" });
  const tags = el("input", { name: "tags", id: "tags", placeholder: "error=true http.response.status_code=503", value: q.get("tags") || "" });
  // How tags combine: all on one span (Jaeger's rule) or any of them.
  const tagsOp = el("select", { name: "tagsOp", id: "tagsOp", "aria-label": "combine tags with" },
    el("option", { value: "and" }, "all (AND)"), el("option", { value: "or" }, "any (OR)"));
  tagsOp.value = q.get("tagsOp") === "or" ? "or" : "and";
  const minD = el("input", { name: "minDuration", id: "minDuration", placeholder: "e.g. 100ms", value: q.get("minDuration") || "" });
  const maxD = el("input", { name: "maxDuration", id: "maxDuration", placeholder: "e.g. 1.5s", value: q.get("maxDuration") || "" });
  const lookback = el("select", { name: "lookback", id: "lookback" },
    ...LOOKBACKS.map(([n]) => el("option", { value: n }, n === "custom" ? "custom range" : `last ${n}`)));
  lookback.value = q.get("lookback") || "1h";
  const start = el("input", { type: "datetime-local", name: "start", id: "start", value: q.get("start") || "" });
  const end = el("input", { type: "datetime-local", name: "end", id: "end", value: q.get("end") || "" });
  const range = el("div", { class: "row" }, field("From", start), field("To", end));
  const limit = el("input", { type: "number", name: "limit", id: "limit", min: "1", max: "1500", value: q.get("limit") || "20" });
  const showRange = () => { range.hidden = lookback.value !== "custom"; };
  lookback.addEventListener("change", showRange);
  showRange();

  async function loadOperations() {
    opSel.replaceChildren(el("option", { value: "" }, "all operations"));
    if (!serviceSel.value) return;
    const ops = await api.operations(serviceSel.value);
    for (const o of ops) opSel.append(el("option", { value: o.name }, `${o.name} (${o.spanKind})`));
    if (q.get("operation")) opSel.value = q.get("operation");
  }
  serviceSel.addEventListener("change", () => { q.delete("operation"); loadOperations(); });
  await loadOperations();

  const form = el("form", { class: "search", id: "search-form" },
    field("Service", serviceSel), field("Operation", opSel),
    el("div", { class: "row" }, field("Tags", tags), field("Match", tagsOp)),
    el("div", { class: "row" }, field("Min duration", minD), field("Max duration", maxD)),
    field("Time", lookback), range, field("Limit", limit),
    el("button", { type: "submit", class: "primary" }, "Find traces"));
  const out = el("section", { "aria-live": "polite", id: "results" });
  view.replaceChildren(el("h1", {}, "Search traces"),
    services.length
      ? el("div", { class: "search-layout" }, form, out)
      : el("p", { class: "muted" }, "No services yet: no spans have been stored."));

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) p.set(k, v);
    go(`/search?${p}`);
  });
  if (q.get("service")) await run(q, out);
}

async function run(q, out) {
  let tags;
  try {
    tags = parseTags(q.get("tags") || "");
  } catch (e) {
    out.replaceChildren(errorBox(e.message));
    return;
  }
  const now = new Date();
  let start;
  let end = now;
  const lb = LOOKBACKS.find(([n]) => n === (q.get("lookback") || "1h"));
  if (lb && lb[1]) start = new Date(now - lb[1]);
  else {
    start = new Date(q.get("start"));
    end = new Date(q.get("end"));
    if (isNaN(start) || isNaN(end)) {
      out.replaceChildren(errorBox("A custom range needs both From and To."));
      return;
    }
  }
  out.replaceChildren(el("p", { class: "muted" }, "Searching…"));
  let found;
  try {
    found = await api.findSummaries({
      service: q.get("service"), operation: q.get("operation"), tags, tagsAny: q.get("tagsOp") === "or", start, end,
      minDuration: q.get("minDuration"), maxDuration: q.get("maxDuration"),
      limit: Number(q.get("limit") || 20),
    });
  } catch (e) {
    out.replaceChildren(errorBox(e.status === 404 ? "No traces found." : e.message));
    return;
  }
  const rows = found.map((s) => ({
    ...s,
    startMs: Number(BigInt(s.minStartTimeUnixNano) / 1000000n),
    durMs: Number(BigInt(s.maxEndTimeUnixNano) - BigInt(s.minStartTimeUnixNano)) / 1e6,
  }));
  // The order is part of the URL (replaced, not pushed: the same search, shown otherwise).
  const sort = el("select", { id: "sort", "aria-label": "sort results" },
    ...Object.entries(SORTS).map(([k, [label]]) => el("option", { value: k }, label)));
  sort.value = SORTS[q.get("sort")] ? q.get("sort") : "recent";
  const list = el("ol", { class: "results", id: "result-list" });
  // Two results compared; the choice kept across re-sorting.
  const picked = new Set();
  const compare = el("button", { type: "button", id: "compare-selected", disabled: "" }, "Compare selected");
  const hot = el("button", { type: "button", id: "hotspots-selected", disabled: "" }, "Hotspots of selected");
  hot.addEventListener("click", () => go(`/hotspots?${new URLSearchParams([...picked].map((id) => ["traceID", id]))}`));
  const pickedText = el("span", { class: "muted", "aria-live": "polite" }, "select two traces to compare");
  const onPick = (id, on) => {
    if (on) picked.add(id);
    else picked.delete(id);
    compare.disabled = picked.size !== 2;
    hot.disabled = picked.size === 0;
    pickedText.textContent = picked.size === 2 ? "2 selected" : `${picked.size} selected; select two traces to compare`;
  };
  compare.addEventListener("click", () => {
    const [a, b] = [...picked];
    go(`/compare?${new URLSearchParams({ a, b })}`);
  });
  const show = () => {
    rows.sort(SORTS[sort.value][1]);
    list.replaceChildren(...rows.map((r) => resultItem(r, picked.has(r.traceId), onPick)));
  };
  sort.addEventListener("change", () => {
    const u = new URL(location.href);
    u.searchParams.set("sort", sort.value);
    history.replaceState(null, "", u);
    show();
  });
  show();
  out.replaceChildren(
    el("div", { class: "toolbar" }, el("span", {}, `${rows.length} trace${rows.length === 1 ? "" : "s"}`), sort, compare, hot, pickedText),
    scatter(rows),
    list);
}

/** Result orders: label and comparison (ties: most recent first). */
const SORTS = {
  recent: ["Most recent", (a, b) => b.startMs - a.startMs],
  longest: ["Longest first", (a, b) => b.durMs - a.durMs || b.startMs - a.startMs],
  spans: ["Most spans", (a, b) => b.spanCount - a.spanCount || b.startMs - a.startMs],
  errors: ["Most errors", (a, b) => (b.errorSpanCount || 0) - (a.errorSpanCount || 0) || b.startMs - a.startMs],
};

function resultItem(s, checked, onPick) {
  const services = s.services.map((x) =>
    el("span", { class: `tag${x.errorSpanCount ? " err" : ""}`, style: `background:${textColour(x.name)}` },
      `${x.name} (${x.spanCount})`));
  const pick = el("input", { type: "checkbox", class: "pick", "data-pick": s.traceId, "aria-label": `select trace ${s.traceId} to compare` });
  pick.checked = checked;
  pick.addEventListener("change", () => onPick(s.traceId, pick.checked));
  return el("li", { class: "result-row" }, pick,
    el("a", { href: `/trace/${s.traceId}`, "data-link": "", class: "result", "data-trace-id": s.traceId },
      el("span", { class: "title" }, `${s.rootServiceName}: ${s.rootOperationName}`),
      el("span", { class: "dur" }, fmtMs(s.durMs)),
      el("span", {}, ...services),
      el("span", { class: "muted" },
        `${s.spanCount} spans`, s.errorSpanCount ? el("span", { class: "badge-err" }, ` · ${s.errorSpanCount} errors`) : null,
        ` · ${new Date(s.startMs).toLocaleString()}`)));
}

/** Duration over time; bubble size by span count, red when a span failed. */
function scatter(rows) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "scatter");
  svg.setAttribute("viewBox", "0 0 1000 160");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "trace durations over time");
  if (!rows.length) return svg;
  const t0 = Math.min(...rows.map((r) => r.startMs));
  const t1 = Math.max(...rows.map((r) => r.startMs)) || t0 + 1;
  const dMax = Math.max(...rows.map((r) => r.durMs)) || 1;
  for (const r of rows) {
    const c = document.createElementNS(ns, "circle");
    c.setAttribute("cx", 20 + (960 * (r.startMs - t0)) / Math.max(1, t1 - t0));
    c.setAttribute("cy", 150 - (140 * r.durMs) / dMax);
    c.setAttribute("r", 3 + Math.min(8, Math.sqrt(r.spanCount)));
    c.setAttribute("fill", r.errorSpanCount ? "#b42318" : "#0a58ca");
    c.setAttribute("fill-opacity", "0.6");
    const t = document.createElementNS(ns, "title");
    t.textContent = `${r.rootOperationName} ${fmtMs(r.durMs)}`;
    c.append(t);
    c.style.cursor = "pointer";
    c.addEventListener("click", () => go(`/trace/${r.traceId}`));
    svg.append(c);
  }
  return svg;
}
