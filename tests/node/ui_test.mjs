// The UI in a real browser: Debian's chromium driven by playwright-core.
// Usage: node tests/node/ui_test.mjs CONFIG_JSON
//   {"base": "http://127.0.0.1:PORT", "service": "...", "trace": "<id>",
//    "critical": ["<span id>", …], "offPath": ["<span id>", …], "big": "<id>",
//    "artifacts": "<dir>"}
// Prints one JSON line of results; exits 1 with the reason on the first failure.
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

// axe-core (npm): the accessibility rules checked on every view (contrast, names of
// controls, links and images, landmarks' basics).
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const AXE_RULES = ["color-contrast", "label", "button-name", "link-name", "image-alt", "select-name", "aria-valid-attr", "aria-required-children", "duplicate-id"];

const cfg = JSON.parse(process.argv[2]);
mkdirSync(cfg.artifacts, { recursive: true });
const results = { views: {} };

function fail(msg) {
  console.error(`UI test failed: ${msg}`);
  console.log(JSON.stringify(results));
  process.exit(1);
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(e.message));
  // The UI runs under its Content-Security-Policy: a violation is a console error.
  const a11y = {};
  const shot = async (name) => {
    await page.screenshot({ path: `${cfg.artifacts}/${name}.png`, fullPage: false });
    // Evaluated through the DevTools protocol: the page's Content-Security-Policy
    // (no inline scripts) stays in force for the UI itself.
    await page.evaluate(AXE);
    const found = await page.evaluate(async (rules) => {
      const r = await window.axe.run(document, { runOnly: { type: "rule", values: rules } });
      return r.violations.map((v) => `${v.id}: ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")}`);
    }, AXE_RULES);
    a11y[name] = found;
  };
  const T = 30_000;

  // Search: the known trace is found.
  await page.goto(`${cfg.base}/search?service=${encodeURIComponent(cfg.service)}&lookback=2d&limit=50`);
  await page.waitForSelector(`[data-trace-id="${cfg.trace}"]`, { timeout: T }).catch(() => fail(`search did not list ${cfg.trace}`));
  results.views.search = { rows: await page.locator("#result-list li").count() };
  await shot("search");

  // Sort: "Most spans" puts the 10,000-span trace first, and the order stays in the URL.
  const firstIs = (id, what) => page.waitForFunction((want) => document.querySelector("#result-list a.result")?.dataset.traceId === want, id, { timeout: T })
    .catch(async () => fail(`${what}: first result ${await page.locator("#result-list a.result").first().getAttribute("data-trace-id").catch(() => "none")}, want ${id}`));
  await page.locator("#sort").selectOption("errors");
  await firstIs(cfg.trace, "sorted by errors");
  await page.locator("#sort").selectOption("spans");
  await firstIs(cfg.big, "sorted by spans");
  const order = await page.locator("#result-list a.result").evaluateAll((as) => as.map((a) => a.dataset.traceId));
  if (order.join() !== [cfg.big, cfg.compare.b, cfg.compare.a].join()) fail(`sorted by spans: ${order}`);
  if (new URL(page.url()).searchParams.get("sort") !== "spans") fail(`the sort is not in the URL: ${page.url()}`);
  await page.reload();
  await firstIs(cfg.big, "sorted by spans after a reload");
  if ((await page.locator("#sort").inputValue()) !== "spans") fail("the sort box does not show the URL's order");
  await page.locator("#sort").selectOption("recent");
  // Two results picked open Compare on that pair.
  if (!(await page.locator("#compare-selected").isDisabled())) fail("Compare selected is enabled with nothing selected");
  await page.locator(`[data-pick="${cfg.compare.a}"]`).check();
  await page.locator(`[data-pick="${cfg.compare.b}"]`).check();
  await page.locator("#compare-selected").click();
  await page.waitForSelector(`#diff-table tr[data-operation="${cfg.compare.onlyB}"][data-presence="b"]`, { timeout: T })
    .catch(() => fail(`compare from search did not open ${cfg.compare.a} vs ${cfg.compare.b}`));
  const opened = new URL(page.url()).searchParams;
  if (opened.get("a") !== cfg.compare.a || opened.get("b") !== cfg.compare.b) fail(`compare from search opened ${page.url()}`);
  results.views.search.sortAndCompare = true;
  // Hotspots of just the picked trace: the known one, whose pay holds 70 of its 100 ms.
  await page.goto(`${cfg.base}/search?service=${encodeURIComponent(cfg.service)}&lookback=2d&limit=50`);
  await page.waitForSelector(`[data-pick="${cfg.trace}"]`, { timeout: T }).catch(() => fail("search for hotspots of selected"));
  await page.locator(`[data-pick="${cfg.trace}"]`).check();
  await page.locator("#hotspots-selected").click();
  await page.waitForSelector(`#hotspot-table tr[data-operation="${cfg.hotspot.operation}"]`, { timeout: T })
    .catch(() => fail("hotspots of the selected trace showed no table"));
  const summary = await page.locator("#hotspots-summary").textContent();
  if (!/picked/.test(summary) || !/^.*: 1 traces/.test(summary)) fail(`hotspots of selected: ${summary}`);
  const top = await page.locator("#hotspot-table tbody tr").first().getAttribute("data-operation");
  if (top !== cfg.hotspot.operation) fail(`hotspots of the selected trace: top ${top}`);
  await page.goto(`${cfg.base}/search?service=${encodeURIComponent(cfg.service)}&lookback=2d&limit=50`);
  await page.waitForSelector(`[data-trace-id="${cfg.trace}"]`, { timeout: T }).catch(() => fail(`search did not list ${cfg.trace} once more`));

  // Tags with OR: a process tag that matches or a span kind that does not finds the
  // trace; with AND (Jaeger's rule) nothing matches both.
  const tagged = (op) => `${cfg.base}/search?service=${encodeURIComponent(cfg.service)}&lookback=2d&limit=50&tags=${encodeURIComponent(`service.name=${cfg.service} span.kind=nope`)}&tagsOp=${op}`;
  await page.goto(tagged("or"));
  await page.waitForSelector(`[data-trace-id="${cfg.trace}"]`, { timeout: T }).catch(() => fail("tags with OR did not find the trace"));
  if ((await page.locator("#tagsOp").inputValue()) !== "or") fail("the Match box does not show OR from the URL");
  await page.goto(tagged("and"));
  await page.waitForFunction(() => /No traces found|0 traces/.test(document.querySelector("#results")?.textContent || ""), null, { timeout: T })
    .catch(() => fail("tags with AND found a trace where no span has both"));
  results.views.search.tagsOr = true;
  await page.goto(`${cfg.base}/search?service=${encodeURIComponent(cfg.service)}&lookback=2d&limit=50`);
  await page.waitForSelector(`[data-trace-id="${cfg.trace}"]`, { timeout: T }).catch(() => fail(`search did not list ${cfg.trace} again`));

  // Keyboard: the result is a link reachable and opened with the keyboard.
  await page.locator(`[data-trace-id="${cfg.trace}"]`).focus();
  await page.keyboard.press("Enter");
  await page.waitForURL(`**/trace/${cfg.trace}`, { timeout: T }).catch(() => fail("Enter on a result did not open the trace"));
  await page.waitForSelector(".wf-row", { timeout: T }).catch(() => fail("the trace view showed no spans"));
  // The header's depth, the rulers' ticks (0 to the trace's 100 ms, in quarters), the root's badges.
  const depth = await page.locator("[data-testid=trace-depth]").textContent();
  if (depth !== "depth 2") fail(`trace depth: ${depth}`);
  const want = ["0 µs", "25.00 ms", "50.00 ms", "75.00 ms", "100.00 ms"].join();
  for (const r of [".wf-ticks", ".minimap-ticks"]) {
    const ticks = (await page.locator(`${r} .tick`).allTextContents()).join();
    if (ticks !== want) fail(`${r}: ${ticks}, want ${want}`);
  }
  // Drag across the middle half of the minimap: the waterfall's ruler shows 25 to 75 ms
  // (to the pixel); Reset zoom shows the whole trace again.
  const mm = await page.locator(".minimap").boundingBox();
  await page.mouse.move(mm.x + mm.width * 0.25, mm.y + mm.height / 2);
  await page.mouse.down();
  await page.mouse.move(mm.x + mm.width * 0.5, mm.y + mm.height / 2, { steps: 4 });
  await page.mouse.move(mm.x + mm.width * 0.75, mm.y + mm.height / 2, { steps: 4 });
  await page.mouse.up();
  const zoomed = (await page.locator(".wf-ticks .tick").allTextContents()).map((x) => parseFloat(x));
  if (Math.abs(zoomed[0] - 25) > 1 || Math.abs(zoomed[4] - 75) > 1 || Math.abs(zoomed[2] - 50) > 1) fail(`zoomed ruler: ${zoomed}`);
  if (await page.locator("#reset-zoom").isHidden()) fail("zoomed, but no Reset zoom");
  await shot("trace-zoomed");
  await page.locator("#reset-zoom").click();
  const whole = (await page.locator(".wf-ticks .tick").allTextContents()).join();
  if (whole !== want) fail(`after Reset zoom: ${whole}`);
  const root = page.locator('.wf-row[data-span-id="0000000000000001"]');
  const badgeText = async (kind) => root.locator(`[data-badge=${kind}]`).textContent().catch(() => "none");
  if ((await badgeText("http")) !== "502" || (await badgeText("kind")) !== "server") {
    fail(`root badges: http ${await badgeText("http")}, kind ${await badgeText("kind")}`);
  }
  // Trace statistics, from the analysis report, against the fixture's times by hand:
  // checkout 100 ms with 20 ms of its own (reserve 10..40 and pay 20..90 under it).
  await page.locator("#tab-statistics-button").click();
  await page.waitForSelector("#stats-table tbody tr", { timeout: T }).catch(() => fail("no trace statistics"));
  const statRow = async (op) => (await page.locator(`#stats-table tr[data-operation="${op}"] td`).allTextContents()).slice(2).join(" | ");
  for (const [op, want] of [
    ["GET /checkout", "1 | 100.00 ms | 20.00 ms | 100.00 ms | 100.00 ms | 100.00 ms"],
    ["pay", "1 | 70.00 ms | 70.00 ms | 70.00 ms | 70.00 ms | 70.00 ms"],
    ["reserve", "1 | 30.00 ms | 30.00 ms | 30.00 ms | 30.00 ms | 30.00 ms"],
  ]) {
    const got = await statRow(op);
    if (got !== want) fail(`statistics of ${op}: ${got}, want ${want}`);
  }
  if (new URL(page.url()).searchParams.get("view") !== "statistics") fail(`the trace view's tab is not in the URL: ${page.url()}`);
  await shot("trace-statistics");
  await page.reload();
  await page.waitForSelector("#stats-table tbody tr", { timeout: T }).catch(() => fail("the statistics tab did not survive a reload"));
  // Spans table: every span; sorted by duration, the root first.
  await page.locator("#tab-spans-button").click();
  await page.waitForSelector("#spans-table tbody tr", { timeout: T }).catch(() => fail("no spans table"));
  if ((await page.locator("#spans-table tbody tr").count()) !== 3) fail("the spans table does not hold the trace's 3 spans");
  await page.locator('#spans-table button[data-sort="duration"]').click();
  const firstSpan = await page.locator("#spans-table tbody tr").first().getAttribute("data-span-id");
  if (firstSpan !== "0000000000000001") fail(`spans by duration: first ${firstSpan}`);
  await shot("trace-spans-table");
  // Flamegraph: every span a bar, the root across the whole width; a bar opens its span.
  await page.locator("#tab-flamegraph-button").click();
  await page.waitForSelector(".flame g[data-span-id]", { timeout: T }).catch(() => fail("no flamegraph"));
  if ((await page.locator(".flame g[data-span-id]").count()) !== 3) fail("the flamegraph does not draw the trace's 3 spans");
  const rootBar = await page.locator('.flame g[data-span-id="0000000000000001"] rect').evaluate((r) => [r.getAttribute("x"), r.getAttribute("width")].join());
  if (rootBar !== "0,1000") fail(`the flamegraph's root bar: x,width ${rootBar}`);
  await shot("trace-flamegraph");
  await page.locator('.flame g[data-span-id="0000000000000003"]').click();
  await page.waitForFunction(() => /pay/.test(document.querySelector("#detail h2")?.textContent || ""), null, { timeout: T })
    .catch(() => fail("clicking a flamegraph bar did not open its span"));
  await page.locator("#tab-timeline-button").click();
  await page.waitForSelector(".wf-row", { state: "visible", timeout: T }).catch(() => fail("back on the timeline, no rows"));

  // The critical path: these spans have a critical segment, those do not.
  for (const id of cfg.critical) {
    if ((await page.locator(`.wf-crit[data-critical="${id}"]`).count()) === 0) fail(`span ${id} is not marked on the critical path`);
  }
  for (const id of cfg.offPath) {
    if ((await page.locator(`.wf-crit[data-critical="${id}"]`).count()) !== 0) fail(`span ${id} is marked on the critical path but is not on it`);
  }
  results.views.trace = { rows: await page.locator(".wf-row").count(), critical: await page.locator(".wf-crit").count() };
  await shot("trace");

  // Keyboard in the waterfall: ArrowDown selects the next span and shows it.
  await page.locator("#waterfall").focus();
  await page.keyboard.press("ArrowDown");
  await page.keyboard.press("ArrowDown");
  const detail = await page.locator("#detail h2").textContent().catch(() => "");
  if (!detail) fail("arrow keys did not select a span");
  results.views.trace.selected = detail;

  // Find in trace.
  await page.locator("#find").fill(cfg.findText);
  await page.waitForFunction(() => /match/.test(document.querySelector(".toolbar [aria-live]")?.textContent || ""), null, { timeout: T })
    .catch(() => fail("find did not report matches"));
  // An event's attribute (case aside) and an event's name find their one span.
  for (const [text, want] of [[cfg.findInEvent, "1 match"], ["exception", "1 match"]]) {
    await page.locator("#find").fill(text);
    await page.waitForFunction((w) => (document.querySelector(".toolbar [aria-live]")?.textContent || "") === w, want, { timeout: T })
      .catch(async () => fail(`find "${text}": ${await page.locator(".toolbar [aria-live]").textContent().catch(() => "")}, want ${want}`));
  }

  // Archive: the button copies the trace to the archive; the collector then has it there.
  await page.locator("#archive").click();
  await page.waitForFunction(() => /^archived/.test(document.querySelector("#archive-status")?.textContent || ""), null, { timeout: T })
    .catch(async () => fail(`archive: ${await page.locator("#archive-status").textContent().catch(() => "")}`));
  results.views.trace.archived = await page.locator("#archive-status").textContent();

  // A JSON file opened in the trace view: the trace under an id the collector does
  // not hold, so its critical path can only come from the analysis wasm in the page.
  const stored = await (await fetch(`${cfg.base}/api/v3/traces/${cfg.trace}`)).text();
  const offline = "f".repeat(32);
  const file = `${cfg.artifacts}/opened-file.json`;
  writeFileSync(file, stored.replaceAll(cfg.trace, offline));
  // A collector built before the analysis wasm (scripts/demo builds it beside the
  // collector): the file's trace is shown, and the view says its critical path is not.
  await page.route("**/meshtrace_analysis_wasm.wasm", (r) => r.fulfill({ status: 404, body: "" }));
  await page.locator(".trace-head").evaluate((h) => { h.dataset.before = "1"; });
  await page.locator("#upload").setInputFiles(file);
  await page.waitForSelector(".trace-head:not([data-before])", { timeout: T }).catch(() => fail("opening a JSON file without the wasm did not show its trace"));
  const noWasm = (await page.locator(".warnings").allTextContents()).join(" ");
  if (!/critical path unavailable: the critical path of a file is not available.*not built into this collector yet/.test(noWasm)) {
    fail(`opened file without the analysis wasm: the view should say so, it says: ${noWasm}`);
  }
  if ((await page.locator(".wf-row").count()) === 0) fail("opened file without the analysis wasm: no spans shown");
  await page.unroute("**/meshtrace_analysis_wasm.wasm");
  // The browser logs the 404 it was made to get; that one is expected.
  const expected404 = errors.findIndex((e) => /status of 404/.test(e));
  if (expected404 >= 0) errors.splice(expected404, 1);
  await page.locator("#upload").setInputFiles([]);
  await page.locator(".trace-head").evaluate((h) => { h.dataset.before = "1"; });
  await page.locator("#upload").setInputFiles(file);
  await page.waitForSelector(".trace-head:not([data-before])", { timeout: T }).catch(() => fail("opening a JSON file did not show its trace"));
  if ((await page.locator("[data-testid=trace-id]").textContent()) !== offline) fail("the opened file's trace is not the one shown");
  const fileWarnings = (await page.locator(".warnings").allTextContents()).join(" ");
  if (/critical path unavailable/.test(fileWarnings)) fail(`opened file: ${fileWarnings}`);
  for (const id of cfg.critical) {
    if ((await page.locator(`.wf-crit[data-critical="${id}"]`).count()) === 0) fail(`opened file: span ${id} is not marked on the critical path`);
  }
  for (const id of cfg.offPath) {
    if ((await page.locator(`.wf-crit[data-critical="${id}"]`).count()) !== 0) fail(`opened file: span ${id} is marked on the critical path but is not on it`);
  }
  results.views.openedFile = { critical: await page.locator(".wf-crit").count() };
  if (results.views.openedFile.critical !== results.views.trace.critical) {
    fail(`opened file: ${results.views.openedFile.critical} critical segments on screen, the collector's answer had ${results.views.trace.critical}`);
  }
  await page.goto(`${cfg.base}/trace/${cfg.trace}`);
  await page.waitForSelector(".wf-row", { timeout: T }).catch(() => fail("the trace did not open again"));

  // A deep link survives a reload; a trace id typed in the header opens it.
  await page.reload();
  await page.waitForSelector(".wf-row", { timeout: T }).catch(() => fail("reload of a deep link lost the trace"));
  await page.goto(`${cfg.base}/search`);
  await page.locator("#lookup-id").fill(cfg.trace);
  await page.keyboard.press("Enter");
  await page.waitForSelector(".wf-row", { timeout: T }).catch(() => fail("the trace id box did not open the trace"));

  // A 10,000-span trace: the first screen, and only a screenful of rows in the page.
  const t0 = Date.now();
  await page.goto(`${cfg.base}/trace/${cfg.big}`);
  await page.waitForSelector(".wf-row", { timeout: 60_000 }).catch(() => fail("the big trace did not render"));
  const firstScreen = await page.evaluate(() => window.__meshtraceFirstScreenMs);
  results.views.big = {
    first_screen_ms: Math.round(firstScreen),
    navigation_to_rows_ms: Date.now() - t0,
    rows_in_dom: await page.locator(".wf-row").count(),
  };
  if (results.views.big.rows_in_dom > 200) fail(`${results.views.big.rows_in_dom} rows in the page: not virtualized`);
  await page.locator("#waterfall").evaluate((w) => { w.scrollTop = w.scrollHeight / 2; });
  await page.waitForTimeout(200);
  if ((await page.locator(".wf-row").count()) === 0) fail("scrolling the big trace showed no rows");
  await shot("big-trace");

  // Hotspots over the service's traces: `pay` holds 70 ms of critical path (by hand).
  await page.goto(`${cfg.base}/hotspots?service=${encodeURIComponent(cfg.service)}&lookback=48h&limit=100`);
  await page.waitForSelector("#hotspot-table tbody tr", { timeout: T }).catch(() => fail("hotspots showed no table"));
  const pay = page.locator(`#hotspot-table tr[data-operation="${cfg.hotspot.operation}"] td`);
  if ((await pay.count()) === 0) fail(`no hotspot row for ${cfg.hotspot.operation}`);
  const p50 = (await pay.nth(3).textContent()).trim();
  if (p50 !== cfg.hotspot.criticalP50) fail(`hotspot ${cfg.hotspot.operation}: critical p50 ${p50}, expected ${cfg.hotspot.criticalP50}`);
  results.views.hotspots = { rows: await page.locator("#hotspot-table tbody tr").count(), [cfg.hotspot.operation]: p50 };
  await shot("hotspots");

  // Service performance from the SPM endpoints: rates (adjusted and sampled), errors,
  // latency, and the per-operation table.
  await page.goto(`${cfg.base}/monitor?service=${encodeURIComponent(cfg.service)}&lookback=1h`);
  // A service seen for a minute has one point (no zero-filled ones, as Prometheus):
  // its line is a dot, drawn but of no extent, so wait for it in the DOM.
  await page.waitForSelector('#chart-rate polyline[data-series="adjusted for sampling"]', { timeout: T, state: "attached" })
    .catch(() => fail("performance: no request-rate line"));
  const ratePoints = await page.locator("#chart-rate circle").count();
  if (ratePoints < 1) fail("performance: the request rate has no point");
  await page.waitForSelector(`#operation-table tr[data-operation="${cfg.monitorOperation}"]`, { timeout: T })
    .catch(() => fail(`performance: no row for ${cfg.monitorOperation}`));
  results.views.monitor = { operations: await page.locator("#operation-table tbody tr").count() };
  // Axes: five time ticks across the window, three value lines with units.
  const xt = await page.locator("#chart-rate .x-tick").allTextContents();
  if (xt.length !== 5 || xt.some((t) => !/\d/.test(t))) fail(`performance: time ticks ${xt}`);
  const yt = await page.locator("#chart-rate .y-tick").allTextContents();
  if (yt.length !== 3 || !yt.every((t) => t.endsWith("/s"))) fail(`performance: value ticks ${yt}`);
  // Hover where the point is: the values there, with units.
  const dotEl = page.locator('#chart-rate circle[data-series="adjusted for sampling"]').last();
  const dot = await dotEl.boundingBox();
  const ratePoint = await dotEl.getAttribute("data-value");
  await page.mouse.move(dot.x + dot.width / 2, dot.y + dot.height / 2);
  await page.waitForSelector("#chart-rate .chart-tip:not([hidden])", { timeout: T }).catch(() => fail("performance: hovering a point shows nothing"));
  const tipText = await page.locator("#chart-rate .chart-tip").textContent();
  if (!ratePoint?.endsWith("/s") || !tipText.includes(`adjusted for sampling: ${ratePoint}`)) fail(`performance: hover shows "${tipText}", the point is ${ratePoint}`);
  await shot("performance");
  // A click there opens that service's traces around that time.
  await page.mouse.click(dot.x + dot.width / 2, dot.y + dot.height / 2);
  await page.waitForURL("**/search?**", { timeout: T }).catch(() => fail("performance: a click on the chart did not open a search"));
  const sq = new URL(page.url()).searchParams;
  if (sq.get("service") !== cfg.service || sq.get("lookback") !== "custom" || !(sq.get("start") < sq.get("end"))) fail(`performance: the chart opened ${page.url()}`);
  await page.waitForSelector("#results > *:not(.muted)", { timeout: T }).catch(() => fail("performance: the search from the chart did not run"));

  // Compare: the span only B has is marked, the shared ones line up.
  await page.goto(`${cfg.base}/compare?a=${cfg.compare.a}&b=${cfg.compare.b}`);
  await page.waitForSelector("#diff-table tbody tr", { timeout: T }).catch(() => fail("compare showed no table"));
  if ((await page.locator(`#diff-table tr[data-operation="${cfg.compare.onlyB}"][data-presence="b"]`).count()) !== 1) {
    fail(`compare did not mark ${cfg.compare.onlyB} as only in B`);
  }
  const both = await page.locator('#diff-table tr[data-presence="both"]').count();
  if (both < 3) fail(`compare lined up ${both} shared nodes, expected 3`);
  results.views.compare = { rows: await page.locator("#diff-table tbody tr").count(), shared: both };
  await shot("compare");

  // The service map: the call between the two services is an edge.
  await page.goto(`${cfg.base}/map?lookback=1h`);
  await page.waitForSelector(`svg.service-map g[data-edge="${cfg.mapEdge}"]`, { timeout: T }).catch(() => fail(`the service map has no edge ${cfg.mapEdge}`));
  results.views.map = { edges: await page.locator("#edge-table tbody tr").count() };
  await shot("map");

  // Window vs baseline: the attribute planted only in the window's slow spans ranks first.
  await page.goto(`${cfg.base}/comparison?service=${cfg.comparison.service}&window=1h&baselineOffset=24h`);
  await page.waitForSelector("#overrepresented tbody tr", { timeout: T }).catch(() => fail("the comparison listed no attribute"));
  const first = await page.locator("#overrepresented tbody tr").first().getAttribute("data-attr");
  if (first !== cfg.comparison.top) fail(`the comparison ranked ${first} first, expected ${cfg.comparison.top}`);
  results.views.comparison = { top: first };
  await shot("comparison");
  // A baseline with no spans (a week earlier: nothing stored there) is said, with no delta against zero.
  await page.goto(`${cfg.base}/comparison?service=${cfg.comparison.service}&window=1h&baselineOffset=168h`);
  await page.waitForSelector("#no-baseline", { timeout: T }).catch(() => fail("an empty baseline showed no notice"));
  const deltas = await page.locator("#window-stats tbody td:last-child").allTextContents();
  if (deltas.some((d) => /[0-9]/.test(d))) fail(`an empty baseline still showed deltas: ${deltas.join(", ")}`);

  // Sampling: each service with its strategy and effective probability, and the change log.
  await page.goto(`${cfg.base}/sampling?lookback=1h`);
  await page.waitForSelector(`#sampling-table tr[data-service="${cfg.service}"]`, { timeout: T }).catch(() => fail("the sampling page lists no service"));
  if ((await page.locator("#changes li").count()) < 1) fail("the sampling page shows no change log");
  results.views.sampling = { services: await page.locator("#sampling-table tr[data-service]").count() };
  await shot("sampling");

  // A wide screen: every view again at 2560×1440 (axe-core on each).
  await page.setViewportSize({ width: 2560, height: 1440 });
  const enc = encodeURIComponent;
  for (const [name, path, ready] of [
    ["search", `/search?service=${enc(cfg.service)}&lookback=2d&limit=50`, `[data-trace-id="${cfg.trace}"]`],
    ["trace", `/trace/${cfg.trace}`, ".wf-row"],
    ["trace-statistics", `/trace/${cfg.trace}?view=statistics`, "#stats-table tbody tr"],
    ["trace-flamegraph", `/trace/${cfg.trace}?view=flamegraph`, ".flame g"],
    ["compare", `/compare?a=${cfg.compare.a}&b=${cfg.compare.b}`, "#diff-table tbody tr"],
    ["map", "/map?lookback=1h", "svg"],
    ["performance", `/monitor?service=${enc(cfg.service)}&lookback=1h`, "#operation-table tbody tr"],
    ["hotspots", `/hotspots?service=${enc(cfg.service)}&lookback=48h&limit=100`, "#hotspot-table tbody tr"],
    ["comparison", `/comparison?service=${cfg.comparison.service}&window=1h&baselineOffset=24h`, "table"],
    ["sampling", "/sampling?lookback=1h", "#sampling-table tr[data-service]"],
  ]) {
    await page.goto(`${cfg.base}${path}`);
    await page.waitForSelector(ready, { timeout: T, state: "attached" }).catch(() => fail(`wide screen: ${name} did not show ${ready}`));
    await shot(`${name}-wide`);
  }

  results.accessibility = a11y;
  const violations = Object.entries(a11y).flatMap(([v, list]) => list.map((x) => `${v}: ${x}`));
  if (violations.length) fail(`accessibility (axe-core): ${violations.join(" | ")}`);
  if (errors.length) fail(`console errors: ${errors.join(" | ")}`);
  results.console_errors = 0;
  console.log(JSON.stringify(results));
} finally {
  await browser.close();
}
