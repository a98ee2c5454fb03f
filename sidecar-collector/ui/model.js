// OTLP JSON (api_v3's answer, or a file the user uploads) → the spans the views draw.

const KINDS = ["unspecified", "internal", "server", "client", "producer", "consumer"];

function value(v) {
  if (!v) return "";
  if ("stringValue" in v) return v.stringValue;
  if ("intValue" in v) return String(v.intValue);
  if ("doubleValue" in v) return String(v.doubleValue);
  if ("boolValue" in v) return String(v.boolValue);
  if ("arrayValue" in v) return JSON.stringify((v.arrayValue.values || []).map(value));
  if ("kvlistValue" in v) {
    return JSON.stringify(
      Object.fromEntries((v.kvlistValue.values || []).map((kv) => [kv.key, value(kv.value)])),
    );
  }
  if ("bytesValue" in v) return v.bytesValue;
  return "";
}

export const attrs = (list) => (list || []).map((kv) => [kv.key, value(kv.value)]);

/** Nanosecond decimal strings → milliseconds relative to `t0` (a BigInt). */
const ms = (ns, t0) => Number(BigInt(ns) - t0) / 1e6;

/** Spans of an OTLP TracesData, with their tree; times in ms from the trace start. */
export function build(tracesData) {
  const raw = [];
  for (const rs of tracesData?.resourceSpans || []) {
    const resource = attrs(rs.resource?.attributes);
    const service = resource.find(([k]) => k === "service.name")?.[1] || "unknown_service";
    for (const ss of rs.scopeSpans || []) {
      for (const s of ss.spans || []) raw.push({ s, resource, service, scope: ss.scope || {} });
    }
  }
  if (!raw.length) return null;
  const t0 = raw.reduce((m, r) => {
    const v = BigInt(r.s.startTimeUnixNano);
    return v < m ? v : m;
  }, BigInt(raw[0].s.startTimeUnixNano));
  const spans = raw.map(({ s, resource, service, scope }) => {
    const a = attrs(s.attributes);
    return {
      traceId: s.traceId,
      id: s.spanId,
      parentId: s.parentSpanId || "",
      name: s.name,
      service,
      kind: KINDS[s.kind || 0] || "unspecified",
      start: ms(s.startTimeUnixNano, t0),
      end: ms(s.endTimeUnixNano, t0),
      startNs: s.startTimeUnixNano,
      error: s.status?.code === 2,
      statusMessage: s.status?.message || "",
      attributes: a,
      events: (s.events || []).map((e) => ({
        name: e.name,
        at: ms(e.timeUnixNano, t0),
        attributes: attrs(e.attributes),
      })),
      links: (s.links || []).map((l) => ({ traceId: l.traceId, spanId: l.spanId })),
      resource,
      scope: `${scope.name || ""} ${scope.version || ""}`.trim(),
      sampler: a.find(([k]) => k === "sampler.type")?.[1] || "",
      probability: a.find(([k]) => k === "sampler.param")?.[1] || "",
      children: [],
      depth: 0,
    };
  });
  const byId = new Map(spans.map((s) => [s.id, s]));
  const roots = [];
  const warnings = [];
  for (const s of spans) {
    const p = s.parentId && byId.get(s.parentId);
    if (p && p !== s) p.children.push(s);
    else {
      if (s.parentId) warnings.push(`span ${s.id} (${s.name}): parent ${s.parentId} is not in the trace`);
      roots.push(s);
    }
  }
  for (const s of spans) s.children.sort((a, b) => a.start - b.start);
  roots.sort((a, b) => a.start - b.start);
  // Depth first, iteratively (deep traces).
  const order = [];
  const stack = roots.slice().reverse().map((r) => [r, 0]);
  const seen = new Set();
  while (stack.length) {
    const [s, d] = stack.pop();
    if (seen.has(s)) continue;
    seen.add(s);
    s.depth = d;
    order.push(s);
    for (let i = s.children.length - 1; i >= 0; i--) stack.push([s.children[i], d + 1]);
  }
  const end = Math.max(...spans.map((s) => s.end));
  const root = roots[0];
  return {
    traceId: spans[0].traceId,
    t0,
    spans: order,
    byId,
    roots,
    warnings,
    duration: end,
    root,
    services: [...new Set(spans.map((s) => s.service))].sort(),
  };
}

function hue(service) {
  let h = 0;
  for (const c of service) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return h % 360;
}

/** A stable colour per service, for bars and lines. */
export function colour(service) {
  return `hsl(${hue(service)} 55% 42%)`;
}

/** The same hue dark enough for text on white, and for white text on it (≥ 4.5:1). */
export function textColour(service) {
  return `hsl(${hue(service)} 60% 28%)`;
}

export function fmtMs(v) {
  if (v >= 1000) return `${(v / 1000).toFixed(2)} s`;
  if (v >= 1) return `${v.toFixed(2)} ms`;
  return `${(v * 1000).toFixed(0)} µs`;
}
