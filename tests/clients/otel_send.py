"""Sends one small trace with the real OpenTelemetry Python SDK.

usage: otel_send.py http|grpc ENDPOINT
Prints the ids it created as JSON, after the exporter has flushed.
"""
import json
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

protocol, endpoint = sys.argv[1], sys.argv[2]
if protocol == "http":
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces")
else:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)

provider = TracerProvider(
    resource=Resource.create({"service.name": "py-client", "deployment.environment": "test"})
)
provider.add_span_processor(BatchSpanProcessor(exporter))
tracer = provider.get_tracer("meshtrace-e2e", "1.2.3")

linked = tracer.start_span("background-job")
linked.end()

parent = tracer.start_span(
    "POST /checkout",
    kind=SpanKind.SERVER,
    attributes={
        "http.request.method": "POST",
        "cart.items": 3,
        "vip": True,
        "ratio": 0.5,
        "tags.list": ["a", "b"],
        "authorization": "Bearer secret-token",
        "http.request.header.cookie": ["session=abc"],
    },
)
parent.add_event("cart validated", {"rule": "max-items"})
child = tracer.start_span(
    "charge card",
    kind=SpanKind.CLIENT,
    context=set_span_in_context(parent),
    links=[Link(linked.get_span_context())],
)
child.set_status(Status(StatusCode.ERROR, "card declined"))
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
            "linked_trace": hexid(linked.get_span_context().trace_id, 32),
            "linked_span": hexid(linked.get_span_context().span_id, 16),
        }
    )
)
