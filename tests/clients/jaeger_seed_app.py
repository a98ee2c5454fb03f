"""The seed's application (its "Application-Level Tracing" snippet): a Flask app,
auto-instrumented for Flask and requests, exporting to a Jaeger agent with
OpenTelemetry's Jaeger exporter (Thrift compact over UDP, agent_port=6831 in the
seed) — here the sidecar collector's Jaeger receiver. Runs in .venv-jaeger.

usage: jaeger_seed_app.py APP_PORT AGENT_PORT DOWNSTREAM_URL
GET /checkout calls DOWNSTREAM_URL with requests and answers its status.
"""
import sys

from flask import Flask
import requests
from opentelemetry import trace
from opentelemetry.exporter.jaeger.thrift import JaegerExporter
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

app_port, agent_port, downstream = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
app = Flask(__name__)

# Configure tracing (the seed's lines; the agent is the pod's sidecar collector).
trace.set_tracer_provider(TracerProvider(resource=Resource.create({"service.name": "seed-app"})))
jaeger_exporter = JaegerExporter(
    agent_host_name="127.0.0.1",
    agent_port=agent_port,
)
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(jaeger_exporter))

# Auto-instrument Flask app
FlaskInstrumentor().instrument_app(app)
RequestsInstrumentor().instrument()


@app.route("/checkout")
def checkout():
    r = requests.get(downstream, timeout=10)
    return f"inventory answered {r.status_code}\n", r.status_code


app.run(host="127.0.0.1", port=app_port, threaded=True)
