// Validates custom resources against their CRD schemas: Istio's (npm
// @kubernetes-models/istio) and prometheus-operator's (@kubernetes-models/prometheus-operator).
// stdin: a JSON array of resources; stdout: a JSON array of "Kind/name: problem" strings.
import { readFileSync } from "node:fs";

const MODELS = {
  "extensions.istio.io/v1alpha1/WasmPlugin":
    "@kubernetes-models/istio/extensions.istio.io/v1alpha1/WasmPlugin",
  "networking.istio.io/v1alpha3/EnvoyFilter":
    "@kubernetes-models/istio/networking.istio.io/v1alpha3/EnvoyFilter",
  "telemetry.istio.io/v1/Telemetry": "@kubernetes-models/istio/telemetry.istio.io/v1/Telemetry",
  "telemetry.istio.io/v1alpha1/Telemetry":
    "@kubernetes-models/istio/telemetry.istio.io/v1alpha1/Telemetry",
  "security.istio.io/v1/AuthorizationPolicy":
    "@kubernetes-models/istio/security.istio.io/v1/AuthorizationPolicy",
  "security.istio.io/v1/PeerAuthentication":
    "@kubernetes-models/istio/security.istio.io/v1/PeerAuthentication",
  "monitoring.coreos.com/v1/PrometheusRule":
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule",
};

const docs = JSON.parse(readFileSync(0, "utf8"));
const problems = [];
for (const doc of docs) {
  const key = `${doc.apiVersion}/${doc.kind}`;
  const what = `${doc.kind}/${doc.metadata?.name}`;
  const path = MODELS[key];
  if (!path) {
    problems.push(`${what}: no CRD schema for ${key}`);
    continue;
  }
  const mod = await import(path);
  const Model = mod[doc.kind];
  try {
    new Model(doc).validate();
  } catch (e) {
    problems.push(`${what}: ${e.message}`);
  }
}
process.stdout.write(JSON.stringify(problems));
