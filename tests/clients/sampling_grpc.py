"""Asks a collector's jaeger.api_v2.SamplingManager for a service's strategy, with a
stub generated here and now (grpcio-tools) from the project's proto/jaeger/api_v2/sampling.proto.

usage: sampling_grpc.py PROTO_ROOT HOST:PORT SERVICE
Prints the response as JSON (proto3 JSON mapping, camelCase field names, every field),
or {"error": CODE, "details": ...}.
"""
import importlib
import json
import os
import sys
import tempfile

import grpc
from google.protobuf import json_format
from grpc_tools import protoc

proto_root, target, service = sys.argv[1], sys.argv[2], sys.argv[3]
out = tempfile.mkdtemp(prefix="meshtrace-stubs-")
rc = protoc.main([
    "protoc",
    f"-I{proto_root}",
    f"--python_out={out}",
    f"--grpc_python_out={out}",
    os.path.join(proto_root, "jaeger/api_v2/sampling.proto"),
])
if rc != 0:
    sys.exit(f"protoc failed on sampling.proto ({rc})")
sys.path.insert(0, out)
pb = importlib.import_module("jaeger.api_v2.sampling_pb2")
pb_grpc = importlib.import_module("jaeger.api_v2.sampling_pb2_grpc")

with grpc.insecure_channel(target) as channel:
    stub = pb_grpc.SamplingManagerStub(channel)
    try:
        r = stub.GetSamplingStrategy(pb.SamplingStrategyParameters(serviceName=service), timeout=10)
    except grpc.RpcError as e:
        print(json.dumps({"error": e.code().name, "details": e.details()}))
        sys.exit(0)
print(json.dumps(json_format.MessageToDict(r, always_print_fields_with_no_presence=True)))
