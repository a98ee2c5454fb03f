"""Reads the Kafka exporter's topic as a third party would: Python's confluent-kafka
consumer, each message's value decoded as an OTLP ExportTraceServiceRequest with the
OpenTelemetry protobuf package (opentelemetry-proto).

usage: kafka_read.py BOOTSTRAP TOPIC COUNT
Prints [{"key": hex, "partition": p, "trace_ids": [hex...], "spans": n, "services": [...]}]
for the first COUNT messages (or as many as came within 30 s).
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"third-party-{uuid.uuid4()}",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([topic])
out = []
deadline = time.time() + 30
while len(out) < count and time.time() < deadline:
    m = c.poll(1.0)
    if m is None or m.error():
        continue
    req = ExportTraceServiceRequest()
    req.ParseFromString(m.value())
    traces, services, spans = set(), set(), 0
    for rs in req.resource_spans:
        for a in rs.resource.attributes:
            if a.key == "service.name":
                services.add(a.value.string_value)
        for ss in rs.scope_spans:
            for s in ss.spans:
                traces.add(s.trace_id.hex())
                spans += 1
    out.append({"key": m.key().hex(), "partition": m.partition(), "trace_ids": sorted(traces),
                "spans": spans, "services": sorted(services)})
c.close()
print(json.dumps(out))
