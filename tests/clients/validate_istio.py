"""Offline checks of the manifests under istio/ (run by scripts/validate-istio).

For each kustomization directory given:
  1. render it with `kubectl kustomize` (the kustomize that `kubectl apply -k` runs);
  2. Kubernetes resources against Kubernetes' schemas (PyPI kubernetes-validate, strict:
     unknown fields are errors);
  3. custom resources against their CRD schemas (npm @kubernetes-models/istio and
     @kubernetes-models/prometheus-operator);
  4. the Envoy configuration each WasmPlugin / EnvoyFilter becomes, through
     `envoy --mode validate` with the built filter (the wasm module, or the native
     module found by name in target/module): Envoy loads it and runs its configuration
     hook, so a configuration the filter refuses fails here too.
A kind none of these knows is an error: nothing is skipped silently.

Prints one line per problem and a summary per directory; exits 1 if any problem.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.33.0"
# Custom resources checked against their CRD schemas (tests/node/validate_istio.mjs):
# Istio's, and prometheus-operator's PrometheusRule (istio/monitoring).
ISTIO_GROUPS = ("extensions.istio.io/", "networking.istio.io/", "telemetry.istio.io/",
                "security.istio.io/", "monitoring.coreos.com/")
WASM = ROOT / "target/wasm32-wasip1/release/meshtrace_filter.wasm"
# The native build (scripts/build-module), found by name as in a pod:
# ENVOY_DYNAMIC_MODULES_SEARCH_PATH/libmeshtrace.so.
MODULE_DIR = ROOT / "target/module"


def envoy_bin():
    found = sorted(ROOT.glob(".venv/lib/python3*/site-packages/envoy/_bin/envoy"))
    if not found:
        sys.exit("no Envoy in .venv: run scripts/setup")
    return found[0]


def render(directory):
    r = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip()
    return [d for d in yaml.safe_load_all(r.stdout) if d], None


def name_of(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def check_kubernetes(doc):
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        return None
    except kubernetes_validate.ValidationError as e:
        where = "/".join(str(p) for p in e.path)
        return f"{name_of(doc)}: {where}: {e.message}"
    except Exception as e:  # SchemaNotFoundError and the like: unknown kind
        return f"{name_of(doc)}: no Kubernetes schema ({type(e).__name__}: {e})"


def check_istio(docs):
    if not docs:
        return []
    r = subprocess.run(["node", str(ROOT / "tests/node/validate_istio.mjs")],
                       input=json.dumps(docs), capture_output=True, text=True)
    if r.returncode != 0:
        return [f"the Istio schema check failed to run: {r.stderr.strip()}"]
    return json.loads(r.stdout)


def router():
    return {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def static_cluster(name, port):
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": port}}}}]}]}}


def wasm_filter_of_wasmplugin(wp):
    """The HTTP filter istiod generates for a WasmPlugin: the pluginConfig as a JSON
    StringValue, the VM's environment, the fail strategy; the module is our build."""
    spec = wp.get("spec", {})
    env = {e["name"]: "10.0.0.1" for e in spec.get("vmConfig", {}).get("env", [])
           if "name" in e}
    config = {
        "name": wp["metadata"]["name"],
        "root_id": spec.get("pluginName", wp["metadata"]["name"]),
        "failure_policy": "FAIL_OPEN" if spec.get("failStrategy") == "FAIL_OPEN" else "FAIL_CLOSED",
        "vm_config": {"runtime": "envoy.wasm.runtime.v8",
                      "code": {"local": {"filename": str(WASM)}},
                      "environment_variables": {"key_values": env}},
    }
    if "pluginConfig" in spec:
        config["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                   "value": json.dumps(spec["pluginConfig"])}
    return {"name": config["name"], "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": config}}


def envoy_filter_parts(ef):
    """HTTP filters and clusters an EnvoyFilter adds (the module path points at our build)."""
    filters, clusters = [], []
    for p in ef.get("spec", {}).get("configPatches", []):
        value = json.loads(json.dumps(p.get("patch", {}).get("value", {})))
        if p.get("applyTo") == "HTTP_FILTER":
            vm = value.get("typed_config", {}).get("config", {}).get("vm_config", {})
            if "code" in vm:
                vm["code"] = {"local": {"filename": str(WASM)}}
            filters.append(value)
        elif p.get("applyTo") == "CLUSTER":
            clusters.append(value)
    return filters, clusters


def envoy_validate(label, http_filters, clusters):
    names = {c.get("name") for c in clusters}
    clusters = clusters + [static_cluster("app", 8080)] if "app" not in names else clusters
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network."
                    "http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "inbound",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]},
           "http_filters": http_filters + [router()]}
    bootstrap = {
        "node": {"id": "sidecar~10.0.0.1~app-0.shop~shop.svc.cluster.local", "cluster": "app",
                 "metadata": {"NAMESPACE": "shop", "NAME": "app-0",
                              "LABELS": {"app": "app"}}},
        "static_resources": {
            "listeners": [{"name": "virtualInbound", "traffic_direction": "INBOUND",
                           "address": {"socket_address": {"address": "127.0.0.1",
                                                          "port_value": 15006}},
                           "filter_chains": [{"filters": [{
                               "name": "envoy.filters.network.http_connection_manager",
                               "typed_config": hcm}]}]}],
            "clusters": clusters}}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(bootstrap, f)
    try:
        env = dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=str(MODULE_DIR))
        r = subprocess.run([str(envoy_bin()), "--mode", "validate", "-c", f.name,
                            "-l", "error", "--disable-hot-restart"],
                           capture_output=True, text=True, timeout=120, env=env)
    finally:
        Path(f.name).unlink()
    if r.returncode == 0:
        return None
    lines = [ln for ln in (r.stdout + r.stderr).splitlines()
             if "error" in ln or "critical" in ln or "invalid" in ln]
    return f"{label}: envoy --mode validate refused it:\n      " + "\n      ".join(lines[-6:])


def check_dir(directory):
    docs, err = render(directory)
    if err:
        return [f"kubectl kustomize failed: {err}"], ""
    problems = []
    istio = [d for d in docs if d.get("apiVersion", "").startswith(ISTIO_GROUPS)]
    kube = [d for d in docs if d not in istio]
    for d in kube:
        p = check_kubernetes(d)
        if p:
            problems.append(p)
    problems += check_istio(istio)

    clusters = []
    plugins = []
    for d in istio:
        if d.get("kind") == "EnvoyFilter":
            f, c = envoy_filter_parts(d)
            clusters += c
            plugins += [(name_of(d), x) for x in f]
        elif d.get("kind") == "WasmPlugin":
            plugins.append((name_of(d), wasm_filter_of_wasmplugin(d)))
    envoy_checked = 0
    for label, f in plugins:
        envoy_checked += 1
        p = envoy_validate(label, [f], clusters)
        if p:
            problems.append(p)
    if clusters and not plugins:
        envoy_checked += 1
        p = envoy_validate("clusters", [], clusters)
        if p:
            problems.append(p)
    summary = (f"{len(docs)} resources: {len(kube)} Kubernetes, {len(istio)} custom (CRD), "
               f"{envoy_checked} Envoy configurations")
    return problems, summary


def main():
    if not WASM.exists():
        sys.exit(f"{WASM} is missing: run scripts/build-wasm")
    if not (MODULE_DIR / "libmeshtrace.so").exists():
        sys.exit(f"{MODULE_DIR}/libmeshtrace.so is missing: run scripts/build-module")
    dirs = sys.argv[1:] or ["istio", "istio/wasmplugin", "istio/envoyfilter", "istio/envoyfilter-module",
                            "istio/collector", "istio/collector-replicas", "istio/collector-kafka", "istio/policy",
                            "istio/monitoring",
                            "istio/examples/per-workload", "istio/examples/per-workload-native"]
    failed = False
    for d in dirs:
        problems, summary = check_dir(Path(d))
        if problems:
            failed = True
            print(f"FAIL {d}")
            for p in problems:
                print(f"  - {p}")
        else:
            print(f"ok   {d}: {summary}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
