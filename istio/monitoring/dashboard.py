"""The Grafana dashboard, as data: generate.py writes it to dashboard.json.

Rows: RED per service, per operation, latency heatmap, service graph, SLO burn,
sampling (configured vs effective probability, the filter's exported and dropped
spans), collector health. Every expression here is checked against a real
Prometheus scraping the demo (tests/demo/tests/monitoring_e2e.rs): each returns data.
"""

SERVER = 'span_kind="SPAN_KIND_SERVER",service_name=~"$service"'
CALLS = f"traces_span_metrics_calls_total{{{SERVER}}}"
ADJUSTED = f"meshtrace_span_calls_adjusted_total{{{SERVER}}}"
DURATION = f"traces_span_metrics_duration_milliseconds_bucket{{{SERVER}}}"
DS = {"type": "prometheus", "uid": "${datasource}"}


class Board:
    def __init__(self):
        self.panels = []
        self.y = 0
        self.x = 0
        self.row_h = 0

    def row(self, title):
        self.newline()
        self.panels.append({
            "type": "row", "title": title, "collapsed": False, "id": len(self.panels) + 1,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": [],
        })
        self.y += 1

    def newline(self):
        if self.x:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0

    def panel(self, kind, title, targets, description, w=8, h=8, unit=None, options=None,
              field_config=None, transformations=None):
        if self.x + w > 24:
            self.newline()
        defaults = dict(field_config or {})
        if unit:
            defaults["unit"] = unit
        p = {
            "type": kind,
            "title": title,
            "description": description,
            "id": len(self.panels) + 1,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options or {},
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": DS, **t} for i, t in enumerate(targets)
            ],
        }
        if transformations:
            p["transformations"] = transformations
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)


def q(expr, legend, **extra):
    return {"expr": expr, "legendFormat": legend, "range": True, **extra}


def instant(expr, legend):
    return {"expr": expr, "legendFormat": legend, "instant": True, "range": False, "format": "table"}


def build():
    b = Board()
    rate = "[$__rate_interval]"

    b.row("RED per service (server spans)")
    b.panel("timeseries", "Requests per second", [
        q(f"sum by (service_name) (rate({ADJUSTED}{rate}))", "{{service_name}} (adjusted)"),
        q(f"sum by (service_name) (rate({CALLS}{rate}))", "{{service_name}} (sampled)"),
    ], "Adjusted: each stored span counts 1/p (the real request rate). Sampled: spans stored.",
        unit="reqps")
    b.panel("timeseries", "Error ratio", [
        q(f'sum by (service_name) (rate(meshtrace_span_calls_adjusted_total{{{SERVER},status_code="STATUS_CODE_ERROR"}}{rate}) or 0 * rate({ADJUSTED}{rate}))'
          f" / sum by (service_name) (rate({ADJUSTED}{rate}))", "{{service_name}}"),
    ], "Fraction of server requests whose span has an error status.", unit="percentunit")
    b.panel("timeseries", "Latency p50 / p95 / p99", [
        q(f"histogram_quantile({x}, sum by (service_name, le) (rate({DURATION}{rate})))",
          f"{{{{service_name}}}} p{int(x * 100)}")
        for x in (0.5, 0.95, 0.99)
    ], "Server span duration quantiles (histogram_quantile over the spanmetrics buckets).",
        unit="ms")

    b.row("Per operation")
    b.panel("timeseries", "Requests per second by operation", [
        q(f"sum by (service_name, span_name) (rate({ADJUSTED}{rate}))", "{{service_name}} {{span_name}}"),
    ], "Adjusted for sampling.", w=12, unit="reqps")
    b.panel("timeseries", "p95 latency by operation", [
        q(f"histogram_quantile(0.95, sum by (service_name, span_name, le) (rate({DURATION}{rate})))",
          "{{service_name}} {{span_name}}"),
    ], "Server spans.", w=12, unit="ms")
    b.panel("table", "Operations now", [
        instant(f"sum by (service_name, span_name) (rate({ADJUSTED}[5m]))", "rps"),
        instant(f'sum by (service_name, span_name) (rate(meshtrace_span_calls_adjusted_total{{{SERVER},status_code="STATUS_CODE_ERROR"}}[5m]) or 0 * rate({ADJUSTED}[5m]))', "errors"),
        instant(f"histogram_quantile(0.95, sum by (service_name, span_name, le) (rate({DURATION}[5m])))", "p95"),
    ], "Request rate, error rate and p95 per operation over the last 5 minutes.", w=24,
        transformations=[{"id": "merge", "options": {}}])

    b.row("Latency distribution")
    b.panel("heatmap", "Server span latency heatmap", [
        q(f"sum by (le) (increase({DURATION}{rate}))", "{{le}}", format="heatmap"),
    ], "Spans per duration bucket over time.", w=24,
        options={"calculate": False, "yAxis": {"unit": "ms"}, "cellGap": 1})

    b.row("Service graph")
    b.panel("table", "Edges (client → server)", [
        instant("sum by (client, server) (rate(traces_service_graph_request_total[5m]))", "rps"),
        instant("sum by (client, server) (rate(traces_service_graph_request_failed_total[5m]))", "failed"),
        instant("histogram_quantile(0.95, sum by (client, server, le) (rate(traces_service_graph_request_server_seconds_bucket[5m])))", "p95 (s)"),
    ], "Requests between services: a client span paired with the server span it is the parent of.",
        w=16, transformations=[{"id": "merge", "options": {}}])
    b.panel("timeseries", "Unpaired and dropped halves", [
        q("sum(rate(traces_service_graph_unpaired_spans_total[$__rate_interval])) or vector(0)", "unpaired"),
        q("sum(rate(traces_service_graph_dropped_spans_total[$__rate_interval]))", "dropped"),
    ], "Client or server spans whose other half never arrived (an uninstrumented peer) or did not fit the pending table.",
        unit="ops")

    b.row("SLOs (istio/monitoring/slos.yaml)")
    b.panel("timeseries", "Availability budget burn rate (1h)", [
        q("meshtrace:slo_errors:ratio_rate1h / on (service_name) (1 - meshtrace:slo_availability_objective)",
          "{{service_name}}"),
    ], "1 = spending the error budget exactly over 30 days; 14.4 pages (with the 5m window).")
    b.panel("timeseries", "Latency budget burn rate (1h)", [
        q("meshtrace:slo_latency_slow:ratio_rate1h / on (service_name) (1 - meshtrace:slo_latency_objective)",
          "{{service_name}}"),
    ], "Slow requests against the latency objective.")
    b.panel("stat", "Availability (1d)", [
        q("1 - meshtrace:slo_errors:ratio_rate1d", "{{service_name}}"),
    ], "Fraction of server requests without error over the last day.", unit="percentunit",
        options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})

    b.row("Sampling")
    b.panel("timeseries", "Configured vs effective probability", [
        q("max by (service) (meshtrace_collector_sampling_configured_probability{operation=\"\"})",
          "{{service}} configured"),
        q(f"sum by (service_name) (rate({CALLS}{rate})) / sum by (service_name) (rate({ADJUSTED}{rate}))",
          "{{service_name}} effective"),
    ], "Configured: the strategies file. Effective: spans stored ÷ requests they stand for.",
        w=12, unit="percentunit")
    b.panel("timeseries", "Filter: spans exported vs dropped", [
        q("sum(rate(meshtrace_spans_exported[$__rate_interval]))", "exported"),
        q("sum(rate(meshtrace_spans_dropped[$__rate_interval]))", "dropped"),
        q("sum(rate(meshtrace_spans_sampled[$__rate_interval]))", "sampled"),
    ], "The filter's Envoy stats (wasmcustom.meshtrace.*), summed over sidecars.", w=12, unit="ops")

    b.row("Collector health")
    b.panel("stat", "Collectors up", [
        q('sum(up{job="meshtrace-collector"})', "up"),
    ], "Collector targets Prometheus scrapes successfully.", w=4,
        options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})
    b.panel("timeseries", "Spans in", [
        q(f"sum by (job) (rate(meshtrace_collector_spans_{x}_total[$__rate_interval]))", f"{{{{job}}}} {x}")
        for x in ("received", "stored", "refused", "rejected", "forwarded", "dropped")
    ], "Received, stored, refused (retry later), rejected (invalid), forwarded and dropped (sidecars).",
        w=10, unit="ops")
    b.panel("timeseries", "Memory", [
        q("sum by (job) (process_resident_memory_bytes)", "{{job}} resident"),
        q("sum by (job) (meshtrace_collector_queue_bytes)", "{{job}} queued"),
        q("sum by (job) (meshtrace_collector_memory_decode_in_use_bytes)", "{{job}} decoding"),
    ], "Resident memory, bytes queued for the store or upstream, decode budget in use.", w=10,
        unit="bytes")
    b.panel("timeseries", "Query latency p95", [
        q("histogram_quantile(0.95, sum by (endpoint, le) (rate(meshtrace_collector_query_duration_seconds_bucket[$__rate_interval])))",
          "{{endpoint}}"),
    ], "Query API latency by endpoint.", w=12, unit="s")
    b.panel("timeseries", "Span metrics cardinality", [
        q("sum by (table) (meshtrace_metrics_series)", "{{table}}"),
        q("sum by (table) (rate(meshtrace_metrics_overflow_spans_total[$__rate_interval]))", "{{table}} folded/s"),
    ], "Label sets held per table, and spans folded into the otel_metric_overflow series.", w=12)

    return {
        "title": "meshtrace",
        "uid": "meshtrace",
        "description": "Metrics meshtrace derives from the mesh's spans: RED, latency, service graph, SLOs, sampling, collector health.",
        "tags": ["meshtrace", "tracing", "istio"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {
                "name": "datasource", "label": "Prometheus", "type": "datasource",
                "query": "prometheus", "hide": 0, "options": [],
            },
            {
                "name": "service", "label": "Service", "type": "query", "datasource": DS,
                "query": {"query": "label_values(traces_span_metrics_calls_total, service_name)",
                          "refId": "service"},
                "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
                "hide": 0, "options": [],
            },
        ]},
        "panels": b.panels,
    }


def expressions(board):
    """Every PromQL expression of the dashboard (variables left in)."""
    out = []
    for p in board["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    return out
