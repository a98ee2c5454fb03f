// Checks a Grafana dashboard JSON model against Grafana's own types (npm
// @grafana/schema), with the TypeScript compiler: the dashboard must satisfy
// `Dashboard` (excess properties are errors), each panel's options the `Options` of
// its panel plugin, and each query the fields Grafana's Prometheus query editor
// writes. Then what types cannot say: unique panel ids, panels that do not overlap,
// queries that use the dashboard's datasource variable.
// Usage: node tests/node/check_dashboard.mjs DASHBOARD.json; prints problems, exits 1 if any.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const file = process.argv[2];
const board = JSON.parse(readFileSync(file, "utf8"));
const problems = [];

const OPTIONS = {
  timeseries: "TimeSeriesPanelCfg_types.gen",
  heatmap: "HeatmapPanelCfg_types.gen",
  stat: "StatPanelCfg_types.gen",
  table: "TablePanelCfg_types.gen",
};
const lit = (v) => JSON.stringify(v, null, 1);

let ts = `import type { Dashboard, DataSourceRef } from "@grafana/schema";\n`;
for (const [kind, mod] of Object.entries(OPTIONS)) {
  const dir = kind === "timeseries" ? "timeseries" : kind;
  ts += `import type { Options as ${kind}Options } from "@grafana/schema/dist/esm/raw/composable/${dir}/panelcfg/x/${mod}";\n`;
}
ts += `
/** The fields of a query Grafana's Prometheus data source writes and reads. */
interface PrometheusQuery {
  refId: string;
  expr: string;
  datasource?: DataSourceRef;
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
  format?: "time_series" | "table" | "heatmap";
  interval?: string;
}
export const dashboard = ${lit(board)} satisfies Dashboard;
`;
board.panels.forEach((p, i) => {
  if (p.type === "row") return;
  const kind = OPTIONS[p.type];
  if (!kind) {
    problems.push(`panel ${p.id} (${p.title}): no options type known for panel type ${p.type}`);
  } else {
    ts += `export const options${i} = ${lit(p.options ?? {})} satisfies Partial<${p.type}Options>;\n`;
  }
  ts += `export const targets${i} = ${lit(p.targets ?? [])} satisfies PrometheusQuery[];\n`;
});

const dir = mkdtempSync(join(here, ".check-dashboard-"));
writeFileSync(join(dir, "dashboard.ts"), ts);
try {
  execFileSync(
    process.execPath,
    [join(here, "node_modules/typescript/bin/tsc"), "--noEmit", "--strict", "--skipLibCheck",
     "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext",
     join(dir, "dashboard.ts")],
    { cwd: here, stdio: "pipe" },
  );
} catch (e) {
  problems.push(`not a valid Grafana dashboard model:\n${e.stdout}${e.stderr}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const ids = new Set();
const cells = new Map();
for (const p of board.panels) {
  if (ids.has(p.id)) problems.push(`panel id ${p.id} is used twice`);
  ids.add(p.id);
  const g = p.gridPos;
  let overlap;
  for (let x = g.x; x < g.x + g.w; x++) {
    for (let y = g.y; y < g.y + g.h; y++) {
      const other = cells.get(`${x},${y}`);
      if (other !== undefined && overlap === undefined) overlap = [other, x, y];
      cells.set(`${x},${y}`, p.id);
    }
  }
  if (overlap) problems.push(`panels ${overlap[0]} and ${p.id} overlap at (${overlap[1]}, ${overlap[2]})`);
  if (g.x + g.w > 24) problems.push(`panel ${p.id} is wider than the grid`);
  for (const t of p.targets ?? []) {
    if (t.datasource?.uid !== "${datasource}") {
      problems.push(`panel ${p.id} query ${t.refId}: not on the $datasource variable`);
    }
  }
}
process.stdout.write(problems.map((p) => `- ${p}\n`).join(""));
process.exit(problems.length ? 1 : 0);
