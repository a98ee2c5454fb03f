"""Sends one small trace with py_zipkin (Yelp's Zipkin client), encoded as Zipkin
v1 JSON and posted to POST /api/v1/spans.

usage: zipkin_v1_send.py ENDPOINT   (e.g. http://127.0.0.1:9411/api/v1/spans)
Prints the ids it created as JSON, after the spans were posted (the answer's
status too).
"""
import json
import sys
import urllib.request

from py_zipkin import Kind
from py_zipkin.encoding import Encoding
from py_zipkin.transport import BaseTransportHandler
from py_zipkin.zipkin import zipkin_span

endpoint = sys.argv[1]
statuses = []


class Http(BaseTransportHandler):
    def get_max_payload_bytes(self):
        return None

    def send(self, payload):
        if isinstance(payload, str):
            payload = payload.encode()
        req = urllib.request.Request(endpoint, data=payload, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            statuses.append(r.status)


with zipkin_span(
    service_name="v1-frontend",
    span_name="GET /v1",
    transport_handler=Http(),
    sample_rate=100.0,
    encoding=Encoding.V1_JSON,
    kind=Kind.SERVER,
    host="10.0.0.1",
    port=8080,
) as server:
    server.update_binary_annotations({"http.path": "/v1", "orders": 4})
    with zipkin_span(service_name="v1-frontend", span_name="SELECT v1", kind=Kind.CLIENT) as client:
        client.add_sa_binary_annotation(port=5432, service_name="postgres", host="10.0.0.9")
        client.add_annotation("retry")
    ids = server.zipkin_attrs
    child = client.zipkin_attrs
print(json.dumps({"statuses": statuses, "trace_id": ids.trace_id.rjust(32, "0"), "server": ids.span_id, "client": child.span_id}))
