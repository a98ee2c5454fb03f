// Sends one small trace with Jaeger's Node.js client (npm jaeger-client 3.19.0):
// UDP Thrift binary to an agent port (6832) or Thrift binary over HTTP to a
// collector (/api/traces).
//
// usage: node jaeger_send.mjs udp HOST PORT | node jaeger_send.mjs http URL
// Prints the ids it created as JSON, after the sender has flushed.
import jaeger from 'jaeger-client';

const [mode, a, b] = process.argv.slice(2);
const reporter = mode === 'udp'
  ? { agentHost: a, agentPort: Number(b), flushIntervalMs: 100 }
  : { collectorEndpoint: a, flushIntervalMs: 100 };
const tracer = jaeger.initTracer(
  { serviceName: `legacy-node-${mode}`, sampler: { type: 'const', param: 1 }, reporter },
  { tags: { 'deployment.environment': 'e2e' } },
);
const parent = tracer.startSpan('GET /node', { tags: { 'span.kind': 'server', 'http.status_code': 200 } });
const child = tracer.startSpan('SELECT node', { childOf: parent, tags: { 'span.kind': 'client', 'db.rows': 3 } });
child.log({ event: 'retry', attempt: 2 });
child.setTag('error', true);
child.finish();
parent.finish();
const ctx = parent.context();
await new Promise((done) => tracer.close(done));
console.log(JSON.stringify({
  trace_id: ctx.traceIdStr.padStart(32, '0'),
  parent: ctx.spanIdStr.padStart(16, '0'),
  child: child.context().spanIdStr.padStart(16, '0'),
}));
