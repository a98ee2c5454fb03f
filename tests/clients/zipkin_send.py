"""Sends one small trace with the real OpenTelemetry Python SDK's Zipkin exporter
(Zipkin v2 JSON, POST /api/v2/spans).

usage: zipkin_send.py ENDPOINT   (e.g. http://127.0.0.1:9411/api/v2/spans)
Prints the ids it created as JSON, after the exporter has flushed.
"""
import json
import sys

from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

provider = TracerProvider(resource=Resource.create({"service.name": "zipkin-client"}))
provider.add_span_processor(SimpleSpanProcessor(ZipkinExporter(endpoint=sys.argv[1])))
tracer = provider.get_tracer("meshtrace-e2e-zipkin", "0.9")

parent = tracer.start_span(
    "GET /orders",
    kind=SpanKind.SERVER,
    attributes={"http.request.method": "GET", "orders": 4, "authorization": "Bearer secret-token"},
)
parent.add_event("cache miss")
child = tracer.start_span("SELECT orders", kind=SpanKind.CLIENT, context=set_span_in_context(parent))
child.set_status(Status(StatusCode.ERROR, "deadlock"))
child.end()
parent.end()

flushed = provider.force_flush(10_000)
provider.shutdown()
hexid = lambda v, n: format(v, f"0{n}x")
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
