import type { Dashboard, DataSourceRef } from "@grafana/schema";
import type { Options as timeseriesOptions } from "@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen";
import type { Options as heatmapOptions } from "@grafana/schema/dist/esm/raw/composable/heatmap/panelcfg/x/HeatmapPanelCfg_types.gen";
import type { Options as statOptions } from "@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen";
import type { Options as tableOptions } from "@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen";

/** The fields of a query Grafana's Prometheus data source writes and reads. */
interface PrometheusQuery {
  refId: string;
  expr: string;
  datasource?: DataSourceRef;
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
  format?: "time_series" | "table" | "heatmap";
  interval?: string;
}
export const dashboard = {
 "title": "meshtrace",
 "uid": "meshtrace",
 "description": "Metrics meshtrace derives from the mesh's spans: RED, latency, service graph, SLOs, sampling, collector health.",
 "tags": [
  "meshtrace",
  "tracing",
  "istio"
 ],
 "editable": true,
 "graphTooltip": 1,
 "schemaVersion": 39,
 "version": 1,
 "refresh": "30s",
 "time": {
  "from": "now-1h",
  "to": "now"
 },
 "timezone": "browser",
 "annotations": {
  "list": []
 },
 "links": [],
 "templating": {
  "list": [
   {
    "name": "datasource",
    "label": "Prometheus",
    "type": "datasource",
    "query": "prometheus",
    "current": {},
    "hide": 0,
    "options": []
   },
   {
    "name": "service",
    "label": "Service",
    "type": "query",
    "datasource": {
     "type": "prometheus",
     "uid": "${datasource}"
    },
    "query": {
     "query": "label_values(traces_span_metrics_calls_total, service_name)",
     "refId": "service"
    },
    "definition": "label_values(traces_span_metrics_calls_total, service_name)",
    "includeAll": true,
    "multi": true,
    "allValue": ".*",
    "refresh": 2,
    "sort": 1,
    "current": {},
    "hide": 0,
    "options": []
   }
  ]
 },
 "panels": [
  {
   "type": "row",
   "title": "RED per service (server spans)",
   "collapsed": false,
   "id": 1,
   "gridPos": {
    "h": 1,
    "w": 24,
    "x": 0,
    "y": 0
   },
   "panels": []
  },
  {
   "type": "timeseries",
   "title": "Requests per second",
   "description": "Adjusted: each stored span counts 1/p (the real request rate). Sampled: spans stored.",
   "id": 2,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 8,
    "x": 0,
    "y": 1
   },
   "fieldConfig": {
    "defaults": {
     "unit": "reqps"
    },
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (service_name) (rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval]))",
     "legendFormat": "{{service_name}} (adjusted)",
     "range": true
    },
    {
     "refId": "B",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (service_name) (rate(traces_span_metrics_calls_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval]))",
     "legendFormat": "{{service_name}} (sampled)",
     "range": true
    }
   ]
  },
  {
   "type": "timeseries",
   "title": "Error ratio",
   "description": "Fraction of server requests whose span has an error status.",
   "id": 3,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 8,
    "x": 8,
    "y": 1
   },
   "fieldConfig": {
    "defaults": {
     "unit": "percentunit"
    },
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (service_name) (rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\",status_code=\"STATUS_CODE_ERROR\"}[$__rate_interval]) or 0 * rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval])) / sum by (service_name) (rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval]))",
     "legendFormat": "{{service_name}}",
     "range": true
    }
   ]
  },
  {
   "type": "timeseries",
   "title": "Latency p50 / p95 / p99",
   "description": "Server span duration quantiles (histogram_quantile over the spanmetrics buckets).",
   "id": 4,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 8,
    "x": 16,
    "y": 1
   },
   "fieldConfig": {
    "defaults": {
     "unit": "ms"
    },
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "histogram_quantile(0.5, sum by (service_name, le) (rate(traces_span_metrics_duration_milliseconds_bucket{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval])))",
     "legendFormat": "{{service_name}} p50",
     "range": true
    },
    {
     "refId": "B",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "histogram_quantile(0.95, sum by (service_name, le) (rate(traces_span_metrics_duration_milliseconds_bucket{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval])))",
     "legendFormat": "{{service_name}} p95",
     "range": true
    },
    {
     "refId": "C",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "histogram_quantile(0.99, sum by (service_name, le) (rate(traces_span_metrics_duration_milliseconds_bucket{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval])))",
     "legendFormat": "{{service_name}} p99",
     "range": true
    }
   ]
  },
  {
   "type": "row",
   "title": "Per operation",
   "collapsed": false,
   "id": 5,
   "gridPos": {
    "h": 1,
    "w": 24,
    "x": 0,
    "y": 9
   },
   "panels": []
  },
  {
   "type": "timeseries",
   "title": "Requests per second by operation",
   "description": "Adjusted for sampling.",
   "id": 6,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 12,
    "x": 0,
    "y": 10
   },
   "fieldConfig": {
    "defaults": {
     "unit": "reqps"
    },
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (service_name, span_name) (rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval]))",
     "legendFormat": "{{service_name}} {{span_name}}",
     "range": true
    }
   ]
  },
  {
   "type": "timeseries",
   "title": "p95 latency by operation",
   "description": "Server spans.",
   "id": 7,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 12,
    "x": 12,
    "y": 10
   },
   "fieldConfig": {
    "defaults": {
     "unit": "ms"
    },
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "histogram_quantile(0.95, sum by (service_name, span_name, le) (rate(traces_span_metrics_duration_milliseconds_bucket{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval])))",
     "legendFormat": "{{service_name}} {{span_name}}",
     "range": true
    }
   ]
  },
  {
   "type": "table",
   "title": "Operations now",
   "description": "Request rate, error rate and p95 per operation over the last 5 minutes.",
   "id": 8,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 24,
    "x": 0,
    "y": 18
   },
   "fieldConfig": {
    "defaults": {},
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (service_name, span_name) (rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[5m]))",
     "legendFormat": "rps",
     "instant": true,
     "range": false,
     "format": "table"
    },
    {
     "refId": "B",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (service_name, span_name) (rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\",status_code=\"STATUS_CODE_ERROR\"}[5m]) or 0 * rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[5m]))",
     "legendFormat": "errors",
     "instant": true,
     "range": false,
     "format": "table"
    },
    {
     "refId": "C",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "histogram_quantile(0.95, sum by (service_name, span_name, le) (rate(traces_span_metrics_duration_milliseconds_bucket{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[5m])))",
     "legendFormat": "p95",
     "instant": true,
     "range": false,
     "format": "table"
    }
   ],
   "transformations": [
    {
     "id": "merge",
     "options": {}
    }
   ]
  },
  {
   "type": "row",
   "title": "Latency distribution",
   "collapsed": false,
   "id": 9,
   "gridPos": {
    "h": 1,
    "w": 24,
    "x": 0,
    "y": 26
   },
   "panels": []
  },
  {
   "type": "heatmap",
   "title": "Server span latency heatmap",
   "description": "Spans per duration bucket over time.",
   "id": 10,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 24,
    "x": 0,
    "y": 27
   },
   "fieldConfig": {
    "defaults": {},
    "overrides": []
   },
   "options": {
    "calculate": false,
    "yAxis": {
     "unit": "ms"
    },
    "cellGap": 1
   },
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (le) (increase(traces_span_metrics_duration_milliseconds_bucket{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval]))",
     "legendFormat": "{{le}}",
     "range": true,
     "format": "heatmap"
    }
   ]
  },
  {
   "type": "row",
   "title": "Service graph",
   "collapsed": false,
   "id": 11,
   "gridPos": {
    "h": 1,
    "w": 24,
    "x": 0,
    "y": 35
   },
   "panels": []
  },
  {
   "type": "table",
   "title": "Edges (client → server)",
   "description": "Requests between services: a client span paired with the server span it is the parent of.",
   "id": 12,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 16,
    "x": 0,
    "y": 36
   },
   "fieldConfig": {
    "defaults": {},
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (client, server) (rate(traces_service_graph_request_total[5m]))",
     "legendFormat": "rps",
     "instant": true,
     "range": false,
     "format": "table"
    },
    {
     "refId": "B",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (client, server) (rate(traces_service_graph_request_failed_total[5m]))",
     "legendFormat": "failed",
     "instant": true,
     "range": false,
     "format": "table"
    },
    {
     "refId": "C",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "histogram_quantile(0.95, sum by (client, server, le) (rate(traces_service_graph_request_server_seconds_bucket[5m])))",
     "legendFormat": "p95 (s)",
     "instant": true,
     "range": false,
     "format": "table"
    }
   ],
   "transformations": [
    {
     "id": "merge",
     "options": {}
    }
   ]
  },
  {
   "type": "timeseries",
   "title": "Unpaired and dropped halves",
   "description": "Client or server spans whose other half never arrived (an uninstrumented peer) or did not fit the pending table.",
   "id": 13,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 8,
    "x": 16,
    "y": 36
   },
   "fieldConfig": {
    "defaults": {
     "unit": "ops"
    },
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum(rate(traces_service_graph_unpaired_spans_total[$__rate_interval])) or vector(0)",
     "legendFormat": "unpaired",
     "range": true
    },
    {
     "refId": "B",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum(rate(traces_service_graph_dropped_spans_total[$__rate_interval]))",
     "legendFormat": "dropped",
     "range": true
    }
   ]
  },
  {
   "type": "row",
   "title": "SLOs (istio/monitoring/slos.yaml)",
   "collapsed": false,
   "id": 14,
   "gridPos": {
    "h": 1,
    "w": 24,
    "x": 0,
    "y": 44
   },
   "panels": []
  },
  {
   "type": "timeseries",
   "title": "Availability budget burn rate (1h)",
   "description": "1 = spending the error budget exactly over 30 days; 14.4 pages (with the 5m window).",
   "id": 15,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 8,
    "x": 0,
    "y": 45
   },
   "fieldConfig": {
    "defaults": {},
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "meshtrace:slo_errors:ratio_rate1h / on (service_name) (1 - meshtrace:slo_availability_objective)",
     "legendFormat": "{{service_name}}",
     "range": true
    }
   ]
  },
  {
   "type": "timeseries",
   "title": "Latency budget burn rate (1h)",
   "description": "Slow requests against the latency objective.",
   "id": 16,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 8,
    "x": 8,
    "y": 45
   },
   "fieldConfig": {
    "defaults": {},
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "meshtrace:slo_latency_slow:ratio_rate1h / on (service_name) (1 - meshtrace:slo_latency_objective)",
     "legendFormat": "{{service_name}}",
     "range": true
    }
   ]
  },
  {
   "type": "stat",
   "title": "Availability (1d)",
   "description": "Fraction of server requests without error over the last day.",
   "id": 17,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 8,
    "x": 16,
    "y": 45
   },
   "fieldConfig": {
    "defaults": {
     "unit": "percentunit"
    },
    "overrides": []
   },
   "options": {
    "reduceOptions": {
     "calcs": [
      "lastNotNull"
     ],
     "fields": "",
     "values": false
    }
   },
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "1 - meshtrace:slo_errors:ratio_rate1d",
     "legendFormat": "{{service_name}}",
     "range": true
    }
   ]
  },
  {
   "type": "row",
   "title": "Sampling",
   "collapsed": false,
   "id": 18,
   "gridPos": {
    "h": 1,
    "w": 24,
    "x": 0,
    "y": 53
   },
   "panels": []
  },
  {
   "type": "timeseries",
   "title": "Configured vs effective probability",
   "description": "Configured: the strategies file. Effective: spans stored ÷ requests they stand for.",
   "id": 19,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 12,
    "x": 0,
    "y": 54
   },
   "fieldConfig": {
    "defaults": {
     "unit": "percentunit"
    },
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "max by (service) (meshtrace_sampling_configured_probability{operation=\"\"})",
     "legendFormat": "{{service}} configured",
     "range": true
    },
    {
     "refId": "B",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (service_name) (rate(traces_span_metrics_calls_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval])) / sum by (service_name) (rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval]))",
     "legendFormat": "{{service_name}} effective",
     "range": true
    }
   ]
  },
  {
   "type": "timeseries",
   "title": "Filter: spans exported vs dropped",
   "description": "The filter's Envoy stats (wasmcustom.meshtrace.*), summed over sidecars.",
   "id": 20,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 12,
    "x": 12,
    "y": 54
   },
   "fieldConfig": {
    "defaults": {
     "unit": "ops"
    },
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum(rate(meshtrace_spans_exported[$__rate_interval]))",
     "legendFormat": "exported",
     "range": true
    },
    {
     "refId": "B",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum(rate(meshtrace_spans_dropped[$__rate_interval]))",
     "legendFormat": "dropped",
     "range": true
    },
    {
     "refId": "C",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum(rate(meshtrace_spans_sampled[$__rate_interval]))",
     "legendFormat": "sampled",
     "range": true
    }
   ]
  },
  {
   "type": "row",
   "title": "Collector health",
   "collapsed": false,
   "id": 21,
   "gridPos": {
    "h": 1,
    "w": 24,
    "x": 0,
    "y": 62
   },
   "panels": []
  },
  {
   "type": "stat",
   "title": "Collectors up",
   "description": "Collector targets Prometheus scrapes successfully.",
   "id": 22,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 4,
    "x": 0,
    "y": 63
   },
   "fieldConfig": {
    "defaults": {},
    "overrides": []
   },
   "options": {
    "reduceOptions": {
     "calcs": [
      "lastNotNull"
     ],
     "fields": "",
     "values": false
    }
   },
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum(up{job=\"meshtrace-collector\"})",
     "legendFormat": "up",
     "range": true
    }
   ]
  },
  {
   "type": "timeseries",
   "title": "Spans in",
   "description": "Received, stored, refused (retry later), rejected (invalid), forwarded and dropped (sidecars).",
   "id": 23,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 10,
    "x": 4,
    "y": 63
   },
   "fieldConfig": {
    "defaults": {
     "unit": "ops"
    },
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (job) (rate(meshtrace_collector_spans_received_total[$__rate_interval]))",
     "legendFormat": "{{job}} received",
     "range": true
    },
    {
     "refId": "B",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (job) (rate(meshtrace_collector_spans_stored_total[$__rate_interval]))",
     "legendFormat": "{{job}} stored",
     "range": true
    },
    {
     "refId": "C",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (job) (rate(meshtrace_collector_spans_refused_total[$__rate_interval]))",
     "legendFormat": "{{job}} refused",
     "range": true
    },
    {
     "refId": "D",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (job) (rate(meshtrace_collector_spans_rejected_total[$__rate_interval]))",
     "legendFormat": "{{job}} rejected",
     "range": true
    },
    {
     "refId": "E",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (job) (rate(meshtrace_collector_spans_forwarded_total[$__rate_interval]))",
     "legendFormat": "{{job}} forwarded",
     "range": true
    },
    {
     "refId": "F",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (job) (rate(meshtrace_collector_spans_dropped_total[$__rate_interval]))",
     "legendFormat": "{{job}} dropped",
     "range": true
    }
   ]
  },
  {
   "type": "timeseries",
   "title": "Memory",
   "description": "Resident memory, bytes queued for the store or upstream, decode budget in use.",
   "id": 24,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 10,
    "x": 14,
    "y": 63
   },
   "fieldConfig": {
    "defaults": {
     "unit": "bytes"
    },
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (job) (process_resident_memory_bytes)",
     "legendFormat": "{{job}} resident",
     "range": true
    },
    {
     "refId": "B",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (job) (meshtrace_collector_queue_bytes)",
     "legendFormat": "{{job}} queued",
     "range": true
    },
    {
     "refId": "C",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (job) (meshtrace_collector_memory_decode_in_use_bytes)",
     "legendFormat": "{{job}} decoding",
     "range": true
    }
   ]
  },
  {
   "type": "timeseries",
   "title": "Query latency p95",
   "description": "Query API latency by endpoint.",
   "id": 25,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 12,
    "x": 0,
    "y": 71
   },
   "fieldConfig": {
    "defaults": {
     "unit": "s"
    },
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "histogram_quantile(0.95, sum by (endpoint, le) (rate(meshtrace_collector_query_duration_seconds_bucket[$__rate_interval])))",
     "legendFormat": "{{endpoint}}",
     "range": true
    }
   ]
  },
  {
   "type": "timeseries",
   "title": "Span metrics cardinality",
   "description": "Label sets held per table, and spans folded into the otel_metric_overflow series.",
   "id": 26,
   "datasource": {
    "type": "prometheus",
    "uid": "${datasource}"
   },
   "gridPos": {
    "h": 8,
    "w": 12,
    "x": 12,
    "y": 71
   },
   "fieldConfig": {
    "defaults": {},
    "overrides": []
   },
   "options": {},
   "targets": [
    {
     "refId": "A",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (table) (meshtrace_metrics_series)",
     "legendFormat": "{{table}}",
     "range": true
    },
    {
     "refId": "B",
     "datasource": {
      "type": "prometheus",
      "uid": "${datasource}"
     },
     "expr": "sum by (table) (rate(meshtrace_metrics_overflow_spans_total[$__rate_interval]))",
     "legendFormat": "{{table}} folded/s",
     "range": true
    }
   ]
  }
 ]
} satisfies Dashboard;
export const options1 = {} satisfies Partial<timeseriesOptions>;
export const targets1 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (service_name) (rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval]))",
  "legendFormat": "{{service_name}} (adjusted)",
  "range": true
 },
 {
  "refId": "B",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (service_name) (rate(traces_span_metrics_calls_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval]))",
  "legendFormat": "{{service_name}} (sampled)",
  "range": true
 }
] satisfies PrometheusQuery[];
export const options2 = {} satisfies Partial<timeseriesOptions>;
export const targets2 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (service_name) (rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\",status_code=\"STATUS_CODE_ERROR\"}[$__rate_interval]) or 0 * rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval])) / sum by (service_name) (rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval]))",
  "legendFormat": "{{service_name}}",
  "range": true
 }
] satisfies PrometheusQuery[];
export const options3 = {} satisfies Partial<timeseriesOptions>;
export const targets3 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "histogram_quantile(0.5, sum by (service_name, le) (rate(traces_span_metrics_duration_milliseconds_bucket{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval])))",
  "legendFormat": "{{service_name}} p50",
  "range": true
 },
 {
  "refId": "B",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "histogram_quantile(0.95, sum by (service_name, le) (rate(traces_span_metrics_duration_milliseconds_bucket{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval])))",
  "legendFormat": "{{service_name}} p95",
  "range": true
 },
 {
  "refId": "C",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "histogram_quantile(0.99, sum by (service_name, le) (rate(traces_span_metrics_duration_milliseconds_bucket{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval])))",
  "legendFormat": "{{service_name}} p99",
  "range": true
 }
] satisfies PrometheusQuery[];
export const options5 = {} satisfies Partial<timeseriesOptions>;
export const targets5 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (service_name, span_name) (rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval]))",
  "legendFormat": "{{service_name}} {{span_name}}",
  "range": true
 }
] satisfies PrometheusQuery[];
export const options6 = {} satisfies Partial<timeseriesOptions>;
export const targets6 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "histogram_quantile(0.95, sum by (service_name, span_name, le) (rate(traces_span_metrics_duration_milliseconds_bucket{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval])))",
  "legendFormat": "{{service_name}} {{span_name}}",
  "range": true
 }
] satisfies PrometheusQuery[];
export const options7 = {} satisfies Partial<tableOptions>;
export const targets7 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (service_name, span_name) (rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[5m]))",
  "legendFormat": "rps",
  "instant": true,
  "range": false,
  "format": "table"
 },
 {
  "refId": "B",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (service_name, span_name) (rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\",status_code=\"STATUS_CODE_ERROR\"}[5m]) or 0 * rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[5m]))",
  "legendFormat": "errors",
  "instant": true,
  "range": false,
  "format": "table"
 },
 {
  "refId": "C",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "histogram_quantile(0.95, sum by (service_name, span_name, le) (rate(traces_span_metrics_duration_milliseconds_bucket{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[5m])))",
  "legendFormat": "p95",
  "instant": true,
  "range": false,
  "format": "table"
 }
] satisfies PrometheusQuery[];
export const options9 = {
 "calculate": false,
 "yAxis": {
  "unit": "ms"
 },
 "cellGap": 1
} satisfies Partial<heatmapOptions>;
export const targets9 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (le) (increase(traces_span_metrics_duration_milliseconds_bucket{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval]))",
  "legendFormat": "{{le}}",
  "range": true,
  "format": "heatmap"
 }
] satisfies PrometheusQuery[];
export const options11 = {} satisfies Partial<tableOptions>;
export const targets11 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (client, server) (rate(traces_service_graph_request_total[5m]))",
  "legendFormat": "rps",
  "instant": true,
  "range": false,
  "format": "table"
 },
 {
  "refId": "B",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (client, server) (rate(traces_service_graph_request_failed_total[5m]))",
  "legendFormat": "failed",
  "instant": true,
  "range": false,
  "format": "table"
 },
 {
  "refId": "C",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "histogram_quantile(0.95, sum by (client, server, le) (rate(traces_service_graph_request_server_seconds_bucket[5m])))",
  "legendFormat": "p95 (s)",
  "instant": true,
  "range": false,
  "format": "table"
 }
] satisfies PrometheusQuery[];
export const options12 = {} satisfies Partial<timeseriesOptions>;
export const targets12 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum(rate(traces_service_graph_unpaired_spans_total[$__rate_interval])) or vector(0)",
  "legendFormat": "unpaired",
  "range": true
 },
 {
  "refId": "B",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum(rate(traces_service_graph_dropped_spans_total[$__rate_interval]))",
  "legendFormat": "dropped",
  "range": true
 }
] satisfies PrometheusQuery[];
export const options14 = {} satisfies Partial<timeseriesOptions>;
export const targets14 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "meshtrace:slo_errors:ratio_rate1h / on (service_name) (1 - meshtrace:slo_availability_objective)",
  "legendFormat": "{{service_name}}",
  "range": true
 }
] satisfies PrometheusQuery[];
export const options15 = {} satisfies Partial<timeseriesOptions>;
export const targets15 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "meshtrace:slo_latency_slow:ratio_rate1h / on (service_name) (1 - meshtrace:slo_latency_objective)",
  "legendFormat": "{{service_name}}",
  "range": true
 }
] satisfies PrometheusQuery[];
export const options16 = {
 "reduceOptions": {
  "calcs": [
   "lastNotNull"
  ],
  "fields": "",
  "values": false
 }
} satisfies Partial<statOptions>;
export const targets16 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "1 - meshtrace:slo_errors:ratio_rate1d",
  "legendFormat": "{{service_name}}",
  "range": true
 }
] satisfies PrometheusQuery[];
export const options18 = {} satisfies Partial<timeseriesOptions>;
export const targets18 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "max by (service) (meshtrace_sampling_configured_probability{operation=\"\"})",
  "legendFormat": "{{service}} configured",
  "range": true
 },
 {
  "refId": "B",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (service_name) (rate(traces_span_metrics_calls_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval])) / sum by (service_name) (rate(meshtrace_span_calls_adjusted_total{span_kind=\"SPAN_KIND_SERVER\",service_name=~\"$service\"}[$__rate_interval]))",
  "legendFormat": "{{service_name}} effective",
  "range": true
 }
] satisfies PrometheusQuery[];
export const options19 = {} satisfies Partial<timeseriesOptions>;
export const targets19 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum(rate(meshtrace_spans_exported[$__rate_interval]))",
  "legendFormat": "exported",
  "range": true
 },
 {
  "refId": "B",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum(rate(meshtrace_spans_dropped[$__rate_interval]))",
  "legendFormat": "dropped",
  "range": true
 },
 {
  "refId": "C",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum(rate(meshtrace_spans_sampled[$__rate_interval]))",
  "legendFormat": "sampled",
  "range": true
 }
] satisfies PrometheusQuery[];
export const options21 = {
 "reduceOptions": {
  "calcs": [
   "lastNotNull"
  ],
  "fields": "",
  "values": false
 }
} satisfies Partial<statOptions>;
export const targets21 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum(up{job=\"meshtrace-collector\"})",
  "legendFormat": "up",
  "range": true
 }
] satisfies PrometheusQuery[];
export const options22 = {} satisfies Partial<timeseriesOptions>;
export const targets22 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (job) (rate(meshtrace_collector_spans_received_total[$__rate_interval]))",
  "legendFormat": "{{job}} received",
  "range": true
 },
 {
  "refId": "B",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (job) (rate(meshtrace_collector_spans_stored_total[$__rate_interval]))",
  "legendFormat": "{{job}} stored",
  "range": true
 },
 {
  "refId": "C",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (job) (rate(meshtrace_collector_spans_refused_total[$__rate_interval]))",
  "legendFormat": "{{job}} refused",
  "range": true
 },
 {
  "refId": "D",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (job) (rate(meshtrace_collector_spans_rejected_total[$__rate_interval]))",
  "legendFormat": "{{job}} rejected",
  "range": true
 },
 {
  "refId": "E",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (job) (rate(meshtrace_collector_spans_forwarded_total[$__rate_interval]))",
  "legendFormat": "{{job}} forwarded",
  "range": true
 },
 {
  "refId": "F",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (job) (rate(meshtrace_collector_spans_dropped_total[$__rate_interval]))",
  "legendFormat": "{{job}} dropped",
  "range": true
 }
] satisfies PrometheusQuery[];
export const options23 = {} satisfies Partial<timeseriesOptions>;
export const targets23 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (job) (process_resident_memory_bytes)",
  "legendFormat": "{{job}} resident",
  "range": true
 },
 {
  "refId": "B",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (job) (meshtrace_collector_queue_bytes)",
  "legendFormat": "{{job}} queued",
  "range": true
 },
 {
  "refId": "C",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (job) (meshtrace_collector_memory_decode_in_use_bytes)",
  "legendFormat": "{{job}} decoding",
  "range": true
 }
] satisfies PrometheusQuery[];
export const options24 = {} satisfies Partial<timeseriesOptions>;
export const targets24 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "histogram_quantile(0.95, sum by (endpoint, le) (rate(meshtrace_collector_query_duration_seconds_bucket[$__rate_interval])))",
  "legendFormat": "{{endpoint}}",
  "range": true
 }
] satisfies PrometheusQuery[];
export const options25 = {} satisfies Partial<timeseriesOptions>;
export const targets25 = [
 {
  "refId": "A",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (table) (meshtrace_metrics_series)",
  "legendFormat": "{{table}}",
  "range": true
 },
 {
  "refId": "B",
  "datasource": {
   "type": "prometheus",
   "uid": "${datasource}"
  },
  "expr": "sum by (table) (rate(meshtrace_metrics_overflow_spans_total[$__rate_interval]))",
  "legendFormat": "{{table}} folded/s",
  "range": true
 }
] satisfies PrometheusQuery[];
