"""Sends one small trace with a real Jaeger sender, in the old-SDK venv
(.venv-jaeger, tests/requirements-jaeger.txt).

usage: jaeger_send.py SENDER TARGET
  jaeger-client HOST:PORT   Jaeger's Python client (jaeger-client 4.8.0), UDP Thrift
                            compact to an agent port (6831), with logs and a
                            FOLLOWS_FROM reference
  otel-udp HOST:PORT        OpenTelemetry's Jaeger exporter (1.21.0), UDP Thrift compact
  otel-http URL             the same exporter to a collector (Thrift binary over HTTP,
                            e.g. http://127.0.0.1:14268/api/traces)
Prints the ids it created as JSON, after the sender has flushed.
"""
import json
import sys
import time

sender, target = sys.argv[1], sys.argv[2]
hexid = lambda v, n: format(v, f"0{n}x")

if sender == "jaeger-client":
    import opentracing
    from jaeger_client import Config

    host, port = target.rsplit(":", 1)
    tracer = Config(
        config={
            "sampler": {"type": "const", "param": 1},
            "local_agent": {"reporting_host": host, "reporting_port": int(port)},
            "reporter_flush_interval": 0.1,
        },
        service_name="legacy-python",
        validate=True,
    ).new_tracer()
    parent = tracer.start_span("GET /legacy", tags={"span.kind": "server", "http.status_code": 200})
    cause = tracer.start_span("enqueue", child_of=parent)
    cause.finish()
    child = tracer.start_span(
        "SELECT legacy",
        references=[opentracing.child_of(parent.context), opentracing.follows_from(cause.context)],
        tags={"span.kind": "client", "error": True, "db.rows": 3, "ratio": 0.25, "authorization": "Bearer secret-token"},
    )
    child.log_kv({"event": "retry", "attempt": 2})
    child.finish()
    parent.finish()
    # The reporter sends from its own thread every reporter_flush_interval;
    # close() flushes what is left.
    time.sleep(0.5)
    tracer.close()
    time.sleep(1.5)
    print(
        json.dumps(
            {
                "trace_id": hexid(parent.context.trace_id, 32),
                "parent": hexid(parent.context.span_id, 16),
                "cause": hexid(cause.context.span_id, 16),
                "child": hexid(child.context.span_id, 16),
            }
        )
    )
    sys.exit(0)

from opentelemetry.exporter.jaeger.thrift import JaegerExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

if sender == "otel-udp":
    host, port = target.rsplit(":", 1)
    exporter = JaegerExporter(agent_host_name=host, agent_port=int(port))
elif sender == "otel-http":
    exporter = JaegerExporter(collector_endpoint=target)
else:
    sys.exit(f"unknown sender {sender!r}")
provider = TracerProvider(resource=Resource.create({"service.name": f"jaeger-{sender}", "deployment.environment": "e2e"}))
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("meshtrace-e2e-jaeger", "0.9")
parent = tracer.start_span("GET /orders", kind=SpanKind.SERVER, attributes={"orders": 4})
parent.add_event("cache miss", {"key": "o-1"})
child = tracer.start_span("SELECT orders", kind=SpanKind.CLIENT, context=set_span_in_context(parent))
child.set_status(Status(StatusCode.ERROR, "deadlock"))
child.end()
parent.end()
flushed = provider.force_flush(10_000)
provider.shutdown()
print(
    json.dumps(
        {
            "flushed": flushed,
            "trace_id": hexid(parent.get_span_context().trace_id, 32),
            "parent": hexid(parent.get_span_context().span_id, 16),
            "child": hexid(child.get_span_context().span_id, 16),
        }
    )
)
