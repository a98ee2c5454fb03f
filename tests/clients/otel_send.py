"""Sends one small trace with the real OpenTelemetry Python SDK.

usage: otel_send.py http|grpc ENDPOINT [--ca FILE] [--cert FILE --key FILE] [--token TOKEN]
(TLS with that CA, a client certificate for mutual TLS, a bearer token header).
Prints the ids it created as JSON, after the exporter has flushed.
"""
import json
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

protocol, endpoint = sys.argv[1], sys.argv[2]
opts = dict(zip(sys.argv[3::2], sys.argv[4::2]))
headers = {"authorization": "Bearer " + opts["--token"]} if "--token" in opts else None
if protocol == "http":
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(
        endpoint=endpoint + "/v1/traces",
        certificate_file=opts.get("--ca"),
        client_certificate_file=opts.get("--cert"),
        client_key_file=opts.get("--key"),
        headers=headers,
    )
elif "--ca" in opts:
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    read = lambda k: open(opts[k], "rb").read() if k in opts else None
    credentials = grpc.ssl_channel_credentials(read("--ca"), read("--key"), read("--cert"))
    exporter = OTLPSpanExporter(
        endpoint=endpoint, insecure=False, credentials=credentials, headers=headers
    )
else:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers)

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
