//! Structural diff of two traces: spans are matched by their path of (service,
//! operation) pairs from the root, so the same call in both traces lines up
//! whatever its span ids; each node says how many spans each trace has there
//! and their summed durations, and which nodes exist in one trace only.

use crate::trace::{Span, Trace};
use serde::Serialize;
use std::collections::BTreeMap;

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

type Path = Vec<(String, String)>;
/// (spans, summed duration, earliest start from the root) at one path.
type Tally = (u32, i64, i64);

fn paths(t: &Trace) -> BTreeMap<Path, Tally> {
    // path → (count, summed duration, earliest start for ordering)
    let mut out: BTreeMap<Path, Tally> = BTreeMap::new();
    let Some(root) = t.root else { return out };
    // Every root (orphans included), each walked depth first.
    let mut roots: Vec<usize> = (0..t.spans.len())
        .filter(|&i| t.parent[i].is_none())
        .collect();
    roots.sort_by_key(|&i| (i != root, t.spans[i].start));
    for r in roots {
        let mut stack: Vec<(usize, Path)> = vec![(r, vec![key(&t.spans[r])])];
        let mut seen = vec![false; t.spans.len()];
        while let Some((i, p)) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            let e = out.entry(p.clone()).or_insert((0, 0, i64::MAX));
            e.0 += 1;
            e.1 += t.spans[i].duration();
            e.2 = e.2.min(t.spans[i].start - t.spans[root].start);
            for &c in &t.children[i] {
                let mut cp = p.clone();
                cp.push(key(&t.spans[c]));
                stack.push((c, cp));
            }
        }
    }
    out
}

fn key(s: &Span) -> (String, String) {
    (s.service.clone(), s.operation.clone())
}

/// The merged tree of `a` and `b`, depth first, children in start order.
pub fn diff(a: Vec<Span>, b: Vec<Span>) -> Vec<DiffNode> {
    let (pa, pb) = (paths(&Trace::new(a)), paths(&Trace::new(b)));
    let mut all: BTreeMap<&Path, (Option<&Tally>, Option<&Tally>)> = BTreeMap::new();
    for (p, v) in &pa {
        all.entry(p).or_default().0 = Some(v);
    }
    for (p, v) in &pb {
        all.entry(p).or_default().1 = Some(v);
    }
    // Order: depth first, siblings by their earliest start in either trace.
    let start = |p: &Path| {
        let sa = pa.get(p).map_or(i64::MAX, |v| v.2);
        let sb = pb.get(p).map_or(i64::MAX, |v| v.2);
        sa.min(sb)
    };
    let mut nodes: Vec<&Path> = all.keys().copied().collect();
    nodes.sort_by(|x, y| {
        // Compare prefix by prefix: the first differing level decides, by start then name.
        for (i, (kx, ky)) in x.iter().zip(y.iter()).enumerate() {
            if kx != ky {
                let px: Path = x[..=i].to_vec();
                let py: Path = y[..=i].to_vec();
                return start(&px).cmp(&start(&py)).then(kx.cmp(ky));
            }
        }
        x.len().cmp(&y.len())
    });
    nodes
        .into_iter()
        .map(|p| {
            let (va, vb) = all[p];
            let (ca, da) = va.map_or((0, 0), |v| (v.0, v.1));
            let (cb, db) = vb.map_or((0, 0), |v| (v.0, v.1));
            let last = p.last().cloned().unwrap_or_default();
            DiffNode {
                depth: p.len() - 1,
                service: last.0,
                operation: last.1,
                count_a: ca,
                count_b: cb,
                duration_a: da,
                duration_b: db,
                delta: db - da,
                presence: match (va.is_some(), vb.is_some()) {
                    (true, true) => "both",
                    (true, false) => "a",
                    _ => "b",
                },
            }
        })
        .collect()
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
