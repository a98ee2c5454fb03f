//! The collector's layering, checked: each module may import only the modules
//! listed for it, so no module imports one above it and there are no circles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → the crate modules it may import.
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("telemetry", &[]),
    ("config", &[]),
    ("grpc", &[]),
    ("filter_stats", &[]),
    ("ui", &[]),
    ("listen", &["telemetry", "grpc"]),
    ("memory", &["telemetry", "grpc"]),
    ("security", &["grpc"]),
    ("ingest", &["model"]),
    ("store", &["model"]),
    ("sampling", &["telemetry", "grpc"]),
    ("metrics", &["model", "store"]),
    ("pipeline", &["model", "store", "telemetry", "metrics"]),
    ("forward", &["ingest", "pipeline", "telemetry", "config"]),
    ("kafka", &["telemetry"]),
    (
        "query",
        &[
            "model",
            "store",
            "telemetry",
            "memory",
            "metrics",
            "sampling",
        ],
    ),
    (
        "sink",
        &[
            "ingest",
            "pipeline",
            "forward",
            "sampling",
            "telemetry",
            "model",
            "memory",
            "grpc",
            "kafka",
        ],
    ),
    (
        "receiver",
        &["sink", "grpc", "memory", "ingest", "telemetry", "kafka"],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`store/sqlite.rs` → `store`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

#[test]
fn no_module_imports_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let Some(may) = allowed.get(module.as_str()) else {
            continue; // main, lib, this file
        };
        // A module's `tests.rs` (or `…_tests.rs`) is test code through and through.
        if file
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n == "tests.rs" || n.ends_with("_tests.rs"))
        {
            continue;
        }
        checked += 1;
        let text = std::fs::read_to_string(&file).unwrap();
        // Test code may use fixtures from sibling layers; product code may not.
        let product = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, _) in product.match_indices("crate::") {
            let rest = &product[i + "crate::".len()..];
            let used: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if used != module && !may.contains(used.as_str()) {
                violations.push(format!("{}: imports crate::{used}", file.display()));
            }
        }
    }
    assert!(checked > 15, "the check saw only {checked} files");
    assert!(
        violations.is_empty(),
        "layer violations:\n{}",
        violations.join("\n")
    );
}
