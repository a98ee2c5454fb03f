"""Sends spans to a collector's jaeger.api_v2.CollectorService/PostSpans with a stub
generated here and now (grpcio-tools) from the project's proto/jaeger/api_v2/model.proto
and collector.proto.

usage: jaeger_grpc.py PROTO_ROOT HOST:PORT TRACE_ID_HEX [garbage]
Sends a parent span (batch process) and a child with a process of its own, a log and
a FOLLOWS_FROM reference; prints {"ok": true} or {"error": CODE, "details": ...}.
With `garbage`, sends bytes that are no PostSpansRequest (through a raw method).
"""
import importlib
import importlib.resources
import json
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

proto_root, target, trace_hex = sys.argv[1], sys.argv[2], sys.argv[3]
garbage = len(sys.argv) > 4 and sys.argv[4] == "garbage"
out = tempfile.mkdtemp(prefix="meshtrace-stubs-")
api = os.path.join(proto_root, "jaeger/api_v2")
# google/protobuf/*.proto (Timestamp, Duration) ship with grpcio-tools.
well_known = str(importlib.resources.files("grpc_tools") / "_proto")
rc = protoc.main(["protoc", f"-I{api}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}",
                  os.path.join(api, "model.proto"), os.path.join(api, "collector.proto")])
if rc != 0:
    sys.exit(f"protoc failed on model.proto / collector.proto ({rc})")
sys.path.insert(0, out)
model = importlib.import_module("model_pb2")
collector = importlib.import_module("collector_pb2")
collector_grpc = importlib.import_module("collector_pb2_grpc")

trace_id = bytes.fromhex(trace_hex)
now = time.time_ns()


def ts(ns):
    from google.protobuf.timestamp_pb2 import Timestamp
    t = Timestamp()
    t.FromNanoseconds(ns)
    return t


def dur(ns):
    from google.protobuf.duration_pb2 import Duration
    d = Duration()
    d.FromNanoseconds(ns)
    return d


kv = model.KeyValue
parent = model.Span(
    trace_id=trace_id, span_id=bytes.fromhex("00000000000000a1"), operation_name="PostSpans parent",
    start_time=ts(now - 5_000_000), duration=dur(4_000_000),
    tags=[kv(key="span.kind", v_type=model.STRING, v_str="server"),
          kv(key="http.status_code", v_type=model.INT64, v_int64=503),
          kv(key="error", v_type=model.BOOL, v_bool=True)])
child = model.Span(
    trace_id=trace_id, span_id=bytes.fromhex("00000000000000a2"), operation_name="PostSpans child",
    references=[model.SpanRef(trace_id=trace_id, span_id=bytes.fromhex("00000000000000a1"), ref_type=model.CHILD_OF),
                model.SpanRef(trace_id=bytes.fromhex("ff" * 16), span_id=bytes.fromhex("00000000000000f1"), ref_type=model.FOLLOWS_FROM)],
    start_time=ts(now - 4_000_000), duration=dur(1_000_000),
    tags=[kv(key="span.kind", v_type=model.STRING, v_str="client"),
          kv(key="ratio", v_type=model.FLOAT64, v_float64=0.5),
          kv(key="blob", v_type=model.BINARY, v_binary=b"\x01\x02")],
    logs=[model.Log(timestamp=ts(now - 3_500_000), fields=[kv(key="event", v_type=model.STRING, v_str="retry"),
                                                           kv(key="attempt", v_type=model.INT64, v_int64=2)])],
    process=model.Process(service_name="grpc-db", tags=[kv(key="hostname", v_type=model.STRING, v_str="db-0")]))
batch = model.Batch(spans=[parent, child],
                    process=model.Process(service_name="grpc-sender", tags=[kv(key="jaeger.version", v_type=model.STRING, v_str="Go-2.30.0")]))

with grpc.insecure_channel(target) as channel:
    try:
        if garbage:
            raw = channel.unary_unary("/jaeger.api_v2.CollectorService/PostSpans",
                                      request_serializer=lambda b: b, response_deserializer=lambda b: b)
            raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)
        else:
            collector_grpc.CollectorServiceStub(channel).PostSpans(collector.PostSpansRequest(batch=batch), timeout=10)
    except grpc.RpcError as e:
        print(json.dumps({"error": e.code().name, "details": e.details()}))
        sys.exit(0)
print(json.dumps({"ok": True}))
