"""Calls one unary gRPC method with a raw (possibly malformed) message, using grpcio.

usage: grpc_raw.py HOST:PORT /package.Service/Method [--ca FILE] [--cert FILE --key FILE]
       [--token TOKEN] < MESSAGE_BYTES
(TLS with that CA, a client certificate for mutual TLS, a bearer token.)
Prints {"code": "OK"|status name, "details": ..., "response_hex": ...} as JSON.
"""
import json
import sys

import grpc

target, method, message = sys.argv[1], sys.argv[2], sys.stdin.buffer.read()
opts = dict(zip(sys.argv[3::2], sys.argv[4::2]))
read = lambda k: open(opts[k], "rb").read() if k in opts else None
if "--ca" in opts:
    credentials = grpc.ssl_channel_credentials(read("--ca"), read("--key"), read("--cert"))
    channel = grpc.secure_channel(target, credentials)
else:
    channel = grpc.insecure_channel(target)
metadata = [("authorization", "Bearer " + opts["--token"])] if "--token" in opts else None
with channel:
    call = channel.unary_unary(method)  # no serializers: bytes go as they are
    try:
        response = call(message, timeout=10, metadata=metadata)
        print(json.dumps({"code": "OK", "details": "", "response_hex": response.hex()}))
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().name, "details": e.details(), "response_hex": ""}))
