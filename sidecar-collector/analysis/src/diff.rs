//! Structural diff of two traces: spans are matched by their path of (service,
//! operation) pairs from the root, so the same call in both traces lines up
//! whatever its span ids; each node says how many spans each trace has there
//! and their summed durations, and which nodes exist in one trace only.
//!
//! A path is never materialised: both traces are laid over one tree of paths
//! (a trie), each node known by its parent node and its (service, operation),
//! so a span finds its node in one hash lookup from its parent's. O(n log n)
//! in spans (the sort of siblings); a chain 3,000 deep once took gigabytes.

use crate::trace::{Span, Trace};
use serde::Serialize;
use std::collections::HashMap;

/// One node of the merged tree, in depth-first order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffNode {
    pub depth: usize,
    pub service: String,
    pub operation: String,
    pub count_a: u32,
    pub count_b: u32,
    /// Summed durations (ns).
    pub duration_a: i64,
    pub duration_b: i64,
    /// `duration_b - duration_a` (ns).
    pub delta: i64,
    /// `a`, `b` or `both`.
    pub presence: &'static str,
}

const NO_PARENT: usize = usize::MAX;

/// One path of the merged tree.
struct Node {
    depth: usize,
    service: usize,
    operation: usize,
    /// (spans, summed duration) in each trace.
    a: Option<(u32, i64)>,
    b: Option<(u32, i64)>,
    /// Earliest start from its trace's root, in either trace (ordering siblings).
    earliest: i64,
    children: Vec<usize>,
}

/// The tree of paths both traces are laid over.
#[derive(Default)]
struct Paths {
    names: Vec<String>,
    name_ids: HashMap<String, usize>,
    nodes: Vec<Node>,
    /// (parent node, service, operation) → node.
    index: HashMap<(usize, usize, usize), usize>,
    roots: Vec<usize>,
}

impl Paths {
    fn name(&mut self, s: &str) -> usize {
        if let Some(&i) = self.name_ids.get(s) {
            return i;
        }
        self.names.push(s.to_string());
        self.name_ids.insert(s.to_string(), self.names.len() - 1);
        self.names.len() - 1
    }

    /// The node under `parent` for `span`, made if new.
    fn node(&mut self, parent: usize, span: &Span) -> usize {
        let key = (parent, self.name(&span.service), self.name(&span.operation));
        if let Some(&n) = self.index.get(&key) {
            return n;
        }
        let id = self.nodes.len();
        self.nodes.push(Node {
            depth: if parent == NO_PARENT {
                0
            } else {
                self.nodes[parent].depth + 1
            },
            service: key.1,
            operation: key.2,
            a: None,
            b: None,
            earliest: i64::MAX,
            children: Vec::new(),
        });
        self.index.insert(key, id);
        if parent == NO_PARENT {
            self.roots.push(id);
        } else {
            self.nodes[parent].children.push(id);
        }
        id
    }

    /// Lays `t` over the tree: every root (orphans included, the trace's root
    /// first), each walked depth first; `second` says which side it is.
    fn add(&mut self, t: &Trace, second: bool) {
        let Some(root) = t.root else { return };
        let mut roots: Vec<usize> = (0..t.spans.len())
            .filter(|&i| t.parent[i].is_none())
            .collect();
        if roots.is_empty() {
            // A cycle: no span without a parent; its earliest span stands for the root.
            roots.push(root);
        }
        roots.sort_by_key(|&i| (i != root, t.spans[i].start));
        let origin = t.spans[root].start;
        let mut seen = vec![false; t.spans.len()];
        for r in roots {
            let mut stack: Vec<(usize, usize)> = vec![(r, NO_PARENT)];
            while let Some((i, parent)) = stack.pop() {
                if std::mem::replace(&mut seen[i], true) {
                    continue;
                }
                let span = &t.spans[i];
                let n = self.node(parent, span);
                let node = &mut self.nodes[n];
                let side = if second { &mut node.b } else { &mut node.a };
                let (count, total) = side.get_or_insert((0, 0));
                *count += 1;
                *total += span.duration();
                node.earliest = node.earliest.min(span.start.saturating_sub(origin));
                for &c in &t.children[i] {
                    stack.push((c, n));
                }
            }
        }
    }
}

/// The merged tree of `a` and `b`, depth first, children in start order.
pub fn diff(a: Vec<Span>, b: Vec<Span>) -> Vec<DiffNode> {
    let mut paths = Paths::default();
    paths.add(&Trace::new(a), false);
    paths.add(&Trace::new(b), true);
    // Siblings by their earliest start in either trace, then by name.
    let order = |p: &Paths, x: &usize, y: &usize| {
        let (nx, ny) = (&p.nodes[*x], &p.nodes[*y]);
        nx.earliest
            .cmp(&ny.earliest)
            .then_with(|| p.names[nx.service].cmp(&p.names[ny.service]))
            .then_with(|| p.names[nx.operation].cmp(&p.names[ny.operation]))
    };
    let mut roots = std::mem::take(&mut paths.roots);
    roots.sort_by(|x, y| order(&paths, x, y));
    for n in 0..paths.nodes.len() {
        let mut children = std::mem::take(&mut paths.nodes[n].children);
        children.sort_by(|x, y| order(&paths, x, y));
        paths.nodes[n].children = children;
    }
    let mut out = Vec::with_capacity(paths.nodes.len());
    let mut stack: Vec<usize> = roots.into_iter().rev().collect();
    while let Some(n) = stack.pop() {
        let node = &paths.nodes[n];
        let (ca, da) = node.a.unwrap_or((0, 0));
        let (cb, db) = node.b.unwrap_or((0, 0));
        out.push(DiffNode {
            depth: node.depth,
            service: paths.names[node.service].clone(),
            operation: paths.names[node.operation].clone(),
            count_a: ca,
            count_b: cb,
            duration_a: da,
            duration_b: db,
            delta: db.saturating_sub(da),
            presence: match (node.a.is_some(), node.b.is_some()) {
                (true, true) => "both",
                (true, false) => "a",
                _ => "b",
            },
        });
        stack.extend(node.children.iter().rev());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::fixtures::span;

    fn op(mut s: Span, name: &str) -> Span {
        s.operation = name.into();
        s
    }

    #[test]
    fn same_calls_line_up_and_the_extra_one_is_marked() {
        let a = vec![
            op(span(1, None, 0, 100, "frontend"), "GET /"),
            op(span(2, Some(1), 10, 50, "checkout"), "POST /orders"),
            op(span(3, Some(2), 20, 30, "inventory"), "reserve"),
            op(span(4, Some(2), 30, 40, "inventory"), "reserve"),
        ];
        // Different ids; checkout slower; one reserve fewer; a fraud check added.
        let b = vec![
            op(span(11, None, 0, 180, "frontend"), "GET /"),
            op(span(12, Some(11), 10, 150, "checkout"), "POST /orders"),
            op(span(13, Some(12), 20, 30, "inventory"), "reserve"),
            op(span(14, Some(12), 40, 140, "fraud"), "check"),
        ];
        let d = diff(a, b);
        let rows: Vec<(usize, &str, u32, u32, i64, &str)> = d
            .iter()
            .map(|n| {
                (
                    n.depth,
                    n.operation.as_str(),
                    n.count_a,
                    n.count_b,
                    n.delta,
                    n.presence,
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                (0, "GET /", 1, 1, 80, "both"),
                (1, "POST /orders", 1, 1, 100, "both"),
                (2, "reserve", 2, 1, -10, "both"),
                (2, "check", 0, 1, 100, "b"),
            ]
        );
    }

    #[test]
    fn a_call_only_in_a() {
        let a = vec![span(1, None, 0, 10, "x"), span(2, Some(1), 1, 2, "y")];
        let b = vec![span(1, None, 0, 10, "x")];
        let d = diff(a, b);
        assert_eq!(d[1].presence, "a");
        assert_eq!((d[1].count_a, d[1].count_b), (1, 0));
    }
}
