// The collector's APIs as the UI uses them: api_v3 (OTLP JSON) for traces and
// search, v1 for what v3 lacks, the analysis endpoints.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function getJSON(path) {
  const r = await fetch(path, { headers: { accept: "application/json" } });
  let body = null;
  try {
    body = await r.json();
  } catch {
    // not JSON: fall through to the status check
  }
  if (!r.ok) {
    const msg =
      body?.error?.message || body?.errors?.[0]?.msg || `${r.status} ${r.statusText}`;
    throw new ApiError(r.status, msg);
  }
  return body;
}

// Copies a trace to the archive (`POST /api/archive/{id}`), kept past retention.
export async function archiveTrace(id) {
  const r = await fetch(`/api/archive/${encodeURIComponent(id)}`, { method: "POST" });
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try {
      const body = await r.json();
      msg = body?.errors?.[0]?.msg || msg;
    } catch {
      // not JSON
    }
    throw new ApiError(r.status, msg);
  }
}

export const services = () => getJSON("/api/v3/services").then((b) => b.services || []);

export const operations = (service) =>
  getJSON(`/api/v3/operations?service=${encodeURIComponent(service)}`).then(
    (b) => b.operations || [],
  );

export function findSummaries(q) {
  const p = new URLSearchParams();
  p.set("query.service_name", q.service);
  if (q.operation) p.set("query.operation_name", q.operation);
  p.set("query.start_time_min", q.start.toISOString());
  p.set("query.start_time_max", q.end.toISOString());
  if (q.minDuration) p.set("query.duration_min", q.minDuration);
  if (q.maxDuration) p.set("query.duration_max", q.maxDuration);
  if (q.limit) p.set("query.search_depth", String(q.limit));
  // Pairs (a key may repeat); with OR, any of them (meshtrace's query.attributes_op).
  if (q.tags && q.tags.length) p.set("query.attributes", JSON.stringify(q.tags));
  if (q.tagsAny) p.set("query.attributes_op", "or");
  return getJSON(`/api/v3/trace-summaries?${p}`).then((b) => b.summaries || []);
}

export const trace = (id) =>
  getJSON(`/api/v3/traces/${encodeURIComponent(id)}`).then((b) => b.result);

export const criticalPath = (id) =>
  getJSON(`/api/analysis/critical-path/${encodeURIComponent(id)}`);

/** Hotspots of the traces given by id (those picked in search results). */
export const hotspotsOf = (ids) =>
  getJSON(`/api/analysis/hotspots?${new URLSearchParams(ids.map((id) => ["traceID", id]))}`);

export const hotspots = (service, lookback, limit) =>
  getJSON(`/api/analysis/hotspots?service=${encodeURIComponent(service)}&lookback=${encodeURIComponent(lookback)}&limit=${encodeURIComponent(limit)}`);

/** Jaeger's SPM endpoints: `what` is calls, errors or latencies. */
export function spm(what, p) {
  const q = new URLSearchParams();
  q.set("service", p.service);
  for (const k of ["lookback", "step", "ratePer", "spanKind", "quantile"]) if (p[k] !== undefined) q.set(k, String(p[k]));
  if (p.groupByOperation) q.set("groupByOperation", "true");
  if (p.adjusted) q.set("adjusted", "true");
  q.set("endTs", String(Date.now()));
  return getJSON(`/api/metrics/${what}?${q}`);
}

export const diff = (a, b) =>
  getJSON(`/api/analysis/diff?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);

export const serviceMap = (lookback) =>
  getJSON(`/api/analysis/service-map?lookback=${encodeURIComponent(lookback)}`);

export function compareWindows(p) {
  const q = new URLSearchParams({ service: p.service, start: String(Math.round(p.start)), end: String(Math.round(p.end)), baselineOffset: p.baselineOffset });
  if (p.operation) q.set("operation", p.operation);
  return getJSON(`/api/analysis/compare-windows?${q}`);
}

export const sampling = (lookback) => getJSON(`/api/analysis/sampling?lookback=${encodeURIComponent(lookback)}`);
