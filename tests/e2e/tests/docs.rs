//! The documentation a newcomer navigates: README.md is a front page (at most
//! 200 lines) that leads to docs/; every relative link in them (and in
//! istio/README.md) reaches a file that exists and, with `#anchor`, a heading
//! in it, as GitHub names headings.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and
/// `_` dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown file's headings (outside code fences).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fence = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fence = !fence;
        } else if !fence && line.starts_with('#') {
            let heading = line.trim_start_matches('#');
            if heading.starts_with(' ') {
                out.insert(slug(heading));
            }
        }
    }
    out
}

/// The relative link targets of a markdown file: `](target)`, outside code fences.
fn links(text: &str) -> Vec<String> {
    let mut fence = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            if !target.contains("://") && !target.starts_with("mailto:") {
                out.push(target.to_string());
            }
            rest = &rest[end..];
        }
    }
    out
}

fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("istio/README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn the_readme_is_a_front_page_that_leads_to_every_document() {
    let root = meshtrace_testkit::workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 200,
        "README.md has {lines} lines: the details belong in docs/"
    );
    for doc in markdown_files(&root)
        .iter()
        .filter(|p| p.starts_with(root.join("docs")))
    {
        let name = format!("docs/{}", doc.file_name().unwrap().to_string_lossy());
        assert!(
            readme.contains(&format!("]({name})")),
            "README.md's table of documents lacks {name}"
        );
    }
}

#[test]
fn every_link_in_the_documentation_reaches_its_file_and_heading() {
    let root = meshtrace_testkit::workspace_root();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        let dir = file.parent().unwrap();
        for target in links(&text) {
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let to = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path)
            };
            if !to.exists() {
                broken.push(format!("{}: {target}: no such file", file.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let text = std::fs::read_to_string(&to).unwrap_or_default();
                if !anchors(&text).contains(anchor) {
                    broken.push(format!("{}: {target}: no such heading", file.display()));
                }
            }
        }
    }
    assert!(
        checked > 30,
        "only {checked} links found: is the parser right?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Repository paths a document names between backticks (`scripts/demo`,
/// `tests/e2e/tests/x.rs`, `istio/collector`): generated ones (`target/`) and
/// patterns (`*`, `<…>`, `{…}`, `…`) left out.
fn named_paths(text: &str) -> Vec<String> {
    const ROOTS: [&str; 7] = [
        "scripts/",
        "tests/",
        "istio/",
        "sidecar-collector/",
        "filter/",
        "proto/",
        "docs/",
    ];
    text.split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|code| code.split_whitespace())
        .map(|w| w.trim_end_matches([',', ';', ':', '.', ')']))
        .filter(|w| ROOTS.iter().any(|r| w.starts_with(r)))
        .filter(|w| !w.contains(['*', '<', '{', '…', '$', '=']))
        .map(|w| w.split(['#', '?', ':']).next().unwrap_or(w).to_string())
        .collect()
}

#[test]
fn every_script_and_file_the_documentation_names_exists() {
    let root = meshtrace_testkit::workspace_root();
    let mut missing = Vec::new();
    let mut checked = 0;
    for file in markdown_files(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        for path in named_paths(&text) {
            checked += 1;
            if !root.join(&path).exists() {
                missing.push(format!("{}: `{path}`", file.display()));
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} paths found: is the parser right?"
    );
    assert!(
        missing.is_empty(),
        "named but missing:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_flag_of_the_collector_is_in_the_configuration_reference() {
    let root = meshtrace_testkit::workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let out = meshtrace_testkit::collector::command()
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let flags: BTreeSet<&str> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches([',', '.']))
        .filter(|w| !matches!(*w, "--help" | "--version"))
        .collect();
    assert!(flags.len() >= 15, "{help}");
    let missing: Vec<&&str> = flags
        .iter()
        .filter(|f| !doc.contains(&format!("| `{f}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md's flag table lacks {missing:?}"
    );
}

#[test]
fn headings_are_named_as_github_names_them() {
    assert_eq!(
        slug("The blocks engine (`store.engine: blocks`, the default)"),
        "the-blocks-engine-storeengine-blocks-the-default"
    );
    assert_eq!(
        slug("Jaeger api_v3 and the analysis API"),
        "jaeger-api_v3-and-the-analysis-api"
    );
    let t = "# Title\n```\n# not a heading\n```\n## Reads are bounded\n#hashtag\n";
    assert_eq!(
        anchors(t),
        ["title", "reads-are-bounded"].map(String::from).into()
    );
    assert_eq!(
        links("see [a](docs/a.md#x) and [b](https://x.y/) and [c](#local)\n```\n[d](no.md)\n```"),
        ["docs/a.md#x", "#local"].map(String::from).to_vec()
    );
    assert_eq!(
        named_paths("run `scripts/demo --duration 20`, see `tests/e2e/tests/x.rs:12` and `target/a`, `istio/<x>`"),
        ["scripts/demo", "tests/e2e/tests/x.rs"].map(String::from).to_vec()
    );
}
