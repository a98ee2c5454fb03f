"""Calls one unary gRPC method with a raw (possibly malformed) message, using grpcio.

usage: grpc_raw.py HOST:PORT /package.Service/Method < MESSAGE_BYTES
Prints {"code": "OK"|status name, "details": ..., "response_hex": ...} as JSON.
"""
import json
import sys

import grpc

target, method, message = sys.argv[1], sys.argv[2], sys.stdin.buffer.read()
with grpc.insecure_channel(target) as channel:
    call = channel.unary_unary(method)  # no serializers: bytes go as they are
    try:
        response = call(message, timeout=10)
        print(json.dumps({"code": "OK", "details": "", "response_hex": response.hex()}))
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().name, "details": e.details(), "response_hex": ""}))
