// The meshtrace UI: a small router over views; deep links (/trace/{id},
// /search?…) work on reload because the collector answers every UI path with
// this page. No framework, no build step, nothing fetched from elsewhere.

import { searchView } from "./views/search.js";
import { traceView } from "./views/trace.js";
import { hotspotsView } from "./views/hotspots.js";
import { monitorView } from "./views/monitor.js";
import { compareView } from "./views/compare.js";
import { mapView } from "./views/map.js";
import { comparisonView } from "./views/comparison.js";
import { samplingView } from "./views/sampling.js";

const view = document.getElementById("view");

const routes = [
  [/^\/(search)?$/, () => searchView(view)],
  [/^\/trace\/([0-9a-fA-F]{1,32})$/, (m) => traceView(view, m[1])],
  [/^\/hotspots$/, () => hotspotsView(view)],
  [/^\/monitor$/, () => monitorView(view)],
  [/^\/compare$/, () => compareView(view)],
  [/^\/map$/, () => mapView(view)],
  [/^\/comparison$/, () => comparisonView(view)],
  [/^\/sampling$/, () => samplingView(view)],
];

function setCurrent(path) {
  for (const a of document.querySelectorAll("header nav a")) {
    const here = a.getAttribute("href") === path || (path === "/" && a.getAttribute("href") === "/search");
    if (here) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

export async function render() {
  const path = location.pathname.replace(/\/+$/, "") || "/";
  setCurrent(path);
  for (const [re, show] of routes) {
    const m = path.match(re);
    if (m) {
      try {
        await show(m);
      } catch (e) {
        view.replaceChildren(errorBox(e.message || String(e)));
      }
      return;
    }
  }
  view.replaceChildren(errorBox(`No page at ${path}.`));
}

export function errorBox(msg) {
  const d = document.createElement("div");
  d.className = "error-box";
  d.setAttribute("role", "alert");
  d.textContent = msg;
  return d;
}

export function go(url) {
  history.pushState(null, "", url);
  render();
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-link]");
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  go(a.getAttribute("href"));
});

window.addEventListener("popstate", render);

document.getElementById("lookup").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = new FormData(e.target).get("id").trim().toLowerCase();
  if (/^[0-9a-f]{1,32}$/.test(id)) go(`/trace/${id}`);
  else view.replaceChildren(errorBox(`"${id}" is not a trace id (1 to 32 hex characters).`));
});

render();
