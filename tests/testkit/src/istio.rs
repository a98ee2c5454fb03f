//! The files under `istio/` that are also loaded outside Kubernetes: the filter's
//! configuration (the single source of every `pluginConfig`) and the strategies file.

use crate::workspace_root;
use serde_json::Value;
use std::path::PathBuf;

/// `istio/config/plugin-config.yaml`: kustomize copies its `spec` into the WasmPlugin's
/// `pluginConfig` and the EnvoyFilter's configuration.
pub fn plugin_config_path() -> PathBuf {
    workspace_root().join("istio/config/plugin-config.yaml")
}

/// `istio/collector/strategies.json`: the central collector's strategies (a ConfigMap in
/// the cluster, generated from this file).
pub fn strategies_path() -> PathBuf {
    workspace_root().join("istio/collector/strategies.json")
}

/// The filter configuration of the manifests, as the JSON object Istio hands the filter.
pub fn plugin_config() -> Result<Value, String> {
    let path = plugin_config_path();
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: Value =
        serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    match doc.get("spec") {
        Some(spec) if spec.is_object() => Ok(spec.clone()),
        _ => Err(format!("{}: no `spec` object", path.display())),
    }
}
