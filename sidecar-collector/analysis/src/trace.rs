//! A trace as a tree.

use serde::Serialize;
use std::collections::HashMap;

/// One span, as the analyses need it. Times are nanoseconds since the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub id: u64,
    pub parent: Option<u64>,
    pub start: i64,
    pub end: i64,
    /// The parent does not wait for it (a FOLLOWS_FROM reference, a producer's
    /// message): never on its parent's critical path.
    pub asynchronous: bool,
    pub service: String,
    pub operation: String,
    /// The process that wrote it (its clock): a sidecar, a pod. Clock skew is
    /// only corrected between spans of different processes.
    pub process: String,
}

impl Span {
    pub fn duration(&self) -> i64 {
        (self.end - self.start).max(0)
    }
}

/// Something about a trace's shape the analyses worked around.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TraceWarning {
    /// A span's parent is not in the trace (not sampled there, not arrived yet).
    MissingParent { span: u64, parent: u64 },
    /// More than one span without a parent in the trace; the earliest is the root.
    SeveralRoots { roots: usize },
    /// A span was shifted by `shift_ns` to fit in its parent (clock skew).
    ClockSkew { span: u64, shift_ns: i64 },
    /// Two spans share an id; the later ones are left out.
    DuplicateId { span: u64 },
}

/// Spans with their children, and the root.
#[derive(Debug, Clone)]
pub struct Trace {
    pub spans: Vec<Span>,
    /// Children of each span (indices), by start time.
    pub children: Vec<Vec<usize>>,
    /// Index of each span's parent in the trace.
    pub parent: Vec<Option<usize>>,
    /// The root: the earliest span without a parent in the trace.
    pub root: Option<usize>,
    pub warnings: Vec<TraceWarning>,
}

impl Trace {
    /// Builds the tree. A span whose parent is absent becomes a root (and a warning).
    pub fn new(spans: Vec<Span>) -> Trace {
        let mut warnings = Vec::new();
        let mut seen = HashMap::with_capacity(spans.len());
        let mut kept = Vec::with_capacity(spans.len());
        for s in spans {
            if seen.contains_key(&s.id) {
                warnings.push(TraceWarning::DuplicateId { span: s.id });
                continue;
            }
            seen.insert(s.id, kept.len());
            kept.push(s);
        }
        let spans = kept;
        let mut children = vec![Vec::new(); spans.len()];
        let mut parent = vec![None; spans.len()];
        let mut roots = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            match s.parent {
                Some(p) => match seen.get(&p) {
                    Some(&pi) if pi != i => {
                        parent[i] = Some(pi);
                        children[pi].push(i);
                    }
                    _ => {
                        warnings.push(TraceWarning::MissingParent {
                            span: s.id,
                            parent: p,
                        });
                        roots.push(i);
                    }
                },
                None => roots.push(i),
            }
        }
        for c in &mut children {
            c.sort_by_key(|&i| (spans[i].start, spans[i].id));
        }
        // A cycle (a → b → a) leaves no root: the earliest span is taken.
        let root = roots
            .iter()
            .copied()
            .min_by_key(|&i| (spans[i].start, spans[i].id))
            .or_else(|| (0..spans.len()).min_by_key(|&i| (spans[i].start, spans[i].id)));
        if roots.len() > 1 {
            warnings.push(TraceWarning::SeveralRoots { roots: roots.len() });
        }
        Trace {
            spans,
            children,
            parent,
            root,
            warnings,
        }
    }

    /// Spans below `i` (itself included), depth first; safe against cycles.
    pub fn subtree(&self, i: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut seen = vec![false; self.spans.len()];
        let mut stack = vec![i];
        while let Some(x) = stack.pop() {
            if std::mem::replace(&mut seen[x], true) {
                continue;
            }
            out.push(x);
            stack.extend(self.children[x].iter().rev());
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::Span;

    /// A span of `service` from `start` to `end` (any unit), child of `parent`.
    pub fn span(id: u64, parent: Option<u64>, start: i64, end: i64, service: &str) -> Span {
        Span {
            id,
            parent,
            start,
            end,
            asynchronous: false,
            service: service.into(),
            operation: format!("op{id}"),
            process: service.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::span;
    use super::*;

    #[test]
    fn tree_roots_orphans_and_duplicates() {
        let t = Trace::new(vec![
            span(1, None, 0, 100, "a"),
            span(3, Some(1), 50, 60, "a"),
            span(2, Some(1), 10, 20, "b"),
            span(4, Some(9), 5, 6, "c"),
            span(2, Some(1), 0, 1, "dup"),
        ]);
        assert_eq!(t.root, Some(0));
        assert_eq!(t.children[0], vec![2, 1], "children by start time");
        assert!(t
            .warnings
            .contains(&TraceWarning::MissingParent { span: 4, parent: 9 }));
        assert!(t
            .warnings
            .contains(&TraceWarning::SeveralRoots { roots: 2 }));
        assert!(t.warnings.contains(&TraceWarning::DuplicateId { span: 2 }));
        assert_eq!(t.subtree(0), vec![0, 2, 1]);
    }

    #[test]
    fn a_cycle_has_no_root_but_does_not_loop() {
        let t = Trace::new(vec![
            span(1, Some(2), 0, 10, "a"),
            span(2, Some(1), 1, 5, "a"),
        ]);
        assert_eq!(t.root, Some(0));
        assert_eq!(t.subtree(0).len(), 2);
    }
}
