// The service map over a time range: services as nodes, laid out left to right
// by call depth, and each edge with its request rate (adjusted for sampling),
// error rate and p95, from the service-graph history.

import * as api from "../api.js";
import { colour, fmtMs, textColour } from "../model.js";
import { errorBox, go } from "../app.js";
import { el } from "../dom.js";


const NS = "http://www.w3.org/2000/svg";
const svgEl = (tag, attrs, text) => {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};

/** Columns by depth from the services nothing calls (cycles fall back to column 0). */
function layout(services, edges) {
  const incoming = new Map(services.map((s) => [s, 0]));
  for (const e of edges) if (e.client !== e.server) incoming.set(e.server, (incoming.get(e.server) || 0) + 1);
  const depth = new Map();
  const queue = services.filter((s) => !incoming.get(s));
  for (const s of queue) depth.set(s, 0);
  while (queue.length) {
    const s = queue.shift();
    for (const e of edges) {
      if (e.client === s && e.server !== s && !depth.has(e.server)) {
        depth.set(e.server, depth.get(s) + 1);
        queue.push(e.server);
      }
    }
  }
  for (const s of services) if (!depth.has(s)) depth.set(s, 0);
  const columns = new Map();
  for (const s of services) {
    const d = depth.get(s);
    columns.set(d, [...(columns.get(d) || []), s]);
  }
  const pos = new Map();
  for (const [d, list] of columns) list.forEach((s, i) => pos.set(s, { x: 40 + d * 400, y: 40 + i * 110 }));
  return pos;
}

export async function mapView(view) {
  const q = new URLSearchParams(location.search);
  const lookback = el("select", { name: "lookback", id: "map-lookback" }, ...["15m", "1h", "6h", "24h", "48h"].map((l) => el("option", { value: l }, `last ${l}`)));
  lookback.value = q.get("lookback") || "1h";
  const form = el("form", { class: "toolbar", id: "map-form" }, el("label", {}, "Time ", lookback), el("button", { type: "submit", class: "primary" }, "Show"));
  const out = el("section", { id: "map", "aria-live": "polite" });
  view.replaceChildren(el("h1", {}, "Service map"), form, out);
  form.addEventListener("submit", (e) => { e.preventDefault(); go(`/map?${new URLSearchParams(new FormData(form))}`); });
  let m;
  try {
    m = await api.serviceMap(lookback.value);
  } catch (e) {
    out.replaceChildren(errorBox(e.message));
    return;
  }
  if (!m.edges.length) {
    out.replaceChildren(el("p", { class: "muted" }, "No calls between services in this window."));
    return;
  }
  const pos = layout(m.services, m.edges);
  const width = Math.max(...[...pos.values()].map((p) => p.x)) + 240;
  const height = Math.max(...[...pos.values()].map((p) => p.y)) + 90;
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, class: "service-map", role: "img", "aria-label": "service map", width: "100%", height: String(height) });
  const defs = svgEl("defs", {});
  const marker = svgEl("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "8", markerHeight: "8", orient: "auto-start-reverse" });
  marker.append(svgEl("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#57606a" }));
  defs.append(marker);
  svg.append(defs);
  for (const e of m.edges) {
    const a = pos.get(e.client);
    const b = pos.get(e.server);
    const g = svgEl("g", { "data-edge": `${e.client}->${e.server}` });
    const x1 = a.x + 160, y1 = a.y + 25, x2 = b.x, y2 = b.y + 25;
    g.append(svgEl("line", { x1, y1, x2: x2 - 2, y2, stroke: e.errorRate > 0.05 ? "#b42318" : "#57606a", "stroke-width": String(1.5 + Math.min(4, Math.log10(1 + e.adjustedPerSecond))), "marker-end": "url(#arrow)" }));
    const label = `${e.adjustedPerSecond.toFixed(2)}/s · ${(100 * e.errorRate).toFixed(1)}% err · p95 ${e.p95Ms == null ? "—" : fmtMs(e.p95Ms)}`;
    g.append(svgEl("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 6, "text-anchor": "middle", "font-size": "11", fill: "#1b1f24" }, label));
    svg.append(g);
  }
  for (const [s, p] of pos) {
    const g = svgEl("g", { "data-service": s });
    g.append(svgEl("rect", { x: p.x, y: p.y, width: 160, height: 50, rx: 6, fill: "#fff", stroke: colour(s), "stroke-width": "2" }));
    g.append(svgEl("text", { x: p.x + 80, y: p.y + 30, "text-anchor": "middle", "font-size": "13", "font-weight": "600", fill: textColour(s) }, s));
    svg.append(g);
  }
  out.replaceChildren(svg,
    el("table", { class: "grid", id: "edge-table" },
      el("thead", {}, el("tr", {}, ...["client → server", "req/s adjusted", "req/s sampled", "requests", "error rate", "p95"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...m.edges.map((e) => el("tr", { "data-edge": `${e.client}->${e.server}` },
        el("td", {}, `${e.client} → ${e.server}${e.connectionType ? ` (${e.connectionType})` : ""}`),
        el("td", { class: "num" }, e.adjustedPerSecond.toFixed(3)), el("td", { class: "num" }, e.requestsPerSecond.toFixed(3)),
        el("td", { class: "num" }, String(e.requests)), el("td", { class: "num" }, `${(100 * e.errorRate).toFixed(1)}%`),
        el("td", { class: "num" }, e.p95Ms == null ? "—" : fmtMs(e.p95Ms)))))));
}
