//! The critical path of a trace and each span's self time.
//!
//! The critical path is the chain of work the trace's end waited on, Jaeger's
//! definition (jaeger-ui `CriticalPath`): from the root's end, walk back; at
//! each span the synchronous child that finished last (before the point reached)
//! is what the span waited for, the time after that child's end is the span's
//! own; descend into that child, and when a span has no such child, its time back
//! to its start is its own and the walk returns to its parent at its start.
//! Children are first clipped to their parent (a child outliving its parent
//! cannot delay it; one entirely outside it is left out), asynchronous children
//! are left out (the parent does not wait for them). Iterative: a trace 10,000
//! spans deep does not exhaust the stack.

use crate::trace::Trace;
use serde::Serialize;

/// A stretch of the critical path spent in one span (its own work, not its children's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Index of the span in `Trace::spans`.
    pub span: usize,
    pub start: i64,
    pub end: i64,
}

/// Each span's interval clipped to its parent's (clipped) interval, top down;
/// `None` for spans entirely outside their parent, and their subtrees.
pub fn clipped(trace: &Trace) -> Vec<Option<(i64, i64)>> {
    let mut out = vec![None; trace.spans.len()];
    let Some(root) = trace.root else {
        return out;
    };
    let r = &trace.spans[root];
    out[root] = Some((r.start, r.end.max(r.start)));
    let mut stack = vec![root];
    let mut seen = vec![false; trace.spans.len()];
    while let Some(p) = stack.pop() {
        if std::mem::replace(&mut seen[p], true) {
            continue;
        }
        let Some((ps, pe)) = out[p] else { continue };
        for &c in &trace.children[p] {
            let s = &trace.spans[c];
            let (cs, ce) = (s.start.max(ps), s.end.min(pe));
            if cs <= ce && s.start <= pe && s.end >= ps {
                out[c] = Some((cs, ce));
                stack.push(c);
            }
        }
    }
    out
}

/// The critical path, in time order. Empty for an empty trace.
pub fn critical_path(trace: &Trace) -> Vec<Segment> {
    let Some(root) = trace.root else {
        return Vec::new();
    };
    let clip = clipped(trace);
    // Synchronous, clipped children of each span, latest end first.
    let kids: Vec<Vec<(usize, i64, i64)>> = trace
        .children
        .iter()
        .map(|cs| {
            let mut v: Vec<(usize, i64, i64)> = cs
                .iter()
                .filter(|&&c| !trace.spans[c].asynchronous)
                .filter_map(|&c| clip[c].map(|(s, e)| (c, s, e)))
                .collect();
            v.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)));
            v
        })
        .collect();
    let mut out = Vec::new();
    // Where each span's search for its next child resumes: the walk only goes
    // back in time, so a child passed over (ending at or after the point
    // reached) is never a candidate again. Linear in spans: rescanning from the
    // first child each time was quadratic in fan-out (a root with 100,000
    // sequential children: 6.8 s).
    let mut cursor = vec![0usize; trace.spans.len()];
    let (mut cur, mut before) = (root, None::<i64>);
    // Each step goes down to a child or up to the parent at an earlier time; the
    // bound only guards against malformed input.
    for _ in 0..(4 * trace.spans.len() + 4) {
        let Some((start, end)) = clip[cur] else { break };
        let until = before.unwrap_or(end);
        if let Some(b) = before {
            while kids[cur].get(cursor[cur]).is_some_and(|k| k.2 >= b) {
                cursor[cur] += 1;
            }
        }
        let last = kids[cur].get(cursor[cur]);
        match last {
            Some(&(child, _, child_end)) => {
                if child_end < until {
                    out.push(Segment {
                        span: cur,
                        start: child_end,
                        end: until,
                    });
                }
                cur = child;
                before = None;
            }
            None => {
                if start < until {
                    out.push(Segment {
                        span: cur,
                        start,
                        end: until,
                    });
                }
                match trace.parent[cur] {
                    Some(p) if cur != root => {
                        before = Some(start);
                        cur = p;
                    }
                    _ => break,
                }
            }
        }
    }
    out.reverse();
    out
}

/// Time of each span on the critical path.
pub fn critical_times(trace: &Trace, path: &[Segment]) -> Vec<i64> {
    let mut t = vec![0; trace.spans.len()];
    for s in path {
        t[s.span] += s.end - s.start;
    }
    t
}

/// Each span's self time: its (clipped) duration not covered by any child.
pub fn self_times(trace: &Trace) -> Vec<i64> {
    let clip = clipped(trace);
    (0..trace.spans.len())
        .map(|i| {
            let Some((s, e)) = clip[i] else {
                return trace.spans[i].duration();
            };
            let mut iv: Vec<(i64, i64)> =
                trace.children[i].iter().filter_map(|&c| clip[c]).collect();
            iv.sort_unstable();
            let mut covered = 0;
            let mut reach = s;
            for (cs, ce) in iv {
                let cs = cs.max(reach);
                if ce > cs {
                    covered += ce - cs;
                    reach = ce;
                }
            }
            (e - s) - covered
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::fixtures::span;
    use crate::trace::Trace;

    fn path(t: &Trace) -> Vec<(u64, i64, i64)> {
        critical_path(t)
            .iter()
            .map(|s| (t.spans[s.span].id, s.start, s.end))
            .collect()
    }

    #[test]
    fn sequential_children_all_on_the_path() {
        // root 0..100: a 10..40, b 50..90 (b has c 60..80).
        let t = Trace::new(vec![
            span(1, None, 0, 100, "root"),
            span(2, Some(1), 10, 40, "a"),
            span(3, Some(1), 50, 90, "b"),
            span(4, Some(3), 60, 80, "c"),
        ]);
        assert_eq!(
            path(&t),
            vec![
                (1, 0, 10),
                (2, 10, 40),
                (1, 40, 50),
                (3, 50, 60),
                (4, 60, 80),
                (3, 80, 90),
                (1, 90, 100)
            ]
        );
        let total: i64 = critical_path(&t).iter().map(|s| s.end - s.start).sum();
        assert_eq!(total, 100, "the path covers the root's duration");
        assert_eq!(self_times(&t), vec![30, 30, 20, 20]);
    }

    #[test]
    fn parallel_children_only_the_last_finishing_counts() {
        // a 10..50 and b 20..80 in parallel: b finishes last; a ends after b starts, so
        // a is off the path (jaeger-ui's rule: the next child must end before b's start).
        let t = Trace::new(vec![
            span(1, None, 0, 100, "root"),
            span(2, Some(1), 10, 50, "a"),
            span(3, Some(1), 20, 80, "b"),
        ]);
        assert_eq!(path(&t), vec![(1, 0, 20), (3, 20, 80), (1, 80, 100)]);
        assert_eq!(
            self_times(&t),
            vec![30, 40, 60],
            "self time: not covered by any child"
        );
    }

    #[test]
    fn async_children_and_children_outliving_their_parent() {
        // An async child (a message) is never waited for; a child that outlives its
        // parent counts up to the parent's end; one entirely after it, not at all.
        let mut asynchronous = span(2, Some(1), 10, 90, "queue");
        asynchronous.asynchronous = true;
        let t = Trace::new(vec![
            span(1, None, 0, 100, "root"),
            asynchronous,
            span(3, Some(1), 60, 150, "slow"),
            span(4, Some(1), 120, 130, "late"),
        ]);
        assert_eq!(path(&t), vec![(1, 0, 60), (3, 60, 100)]);
        // The async child still covers its parent's time for self time.
        assert_eq!(self_times(&t)[0], 10);
    }

    #[test]
    fn a_child_starting_before_its_parent_is_clipped() {
        let t = Trace::new(vec![
            span(1, None, 100, 200, "root"),
            span(2, Some(1), 50, 150, "early"),
        ]);
        assert_eq!(path(&t), vec![(2, 100, 150), (1, 150, 200)]);
    }

    #[test]
    fn a_deep_trace_does_not_recurse() {
        let n = 20_000u64;
        let spans = (1..=n)
            .map(|i| {
                span(
                    i,
                    (i > 1).then(|| i - 1),
                    i as i64,
                    2 * n as i64 - i as i64 + 1,
                    "s",
                )
            })
            .collect();
        let t = Trace::new(spans);
        let p = critical_path(&t);
        assert_eq!(
            p.len() as u64,
            2 * n - 1,
            "each span before and after its child, the leaf once"
        );
        assert_eq!(
            p.iter().map(|s| s.end - s.start).sum::<i64>(),
            t.spans[0].duration()
        );
    }

    #[test]
    fn empty_and_single() {
        assert!(critical_path(&Trace::new(vec![])).is_empty());
        let t = Trace::new(vec![span(1, None, 5, 9, "a")]);
        assert_eq!(path(&t), vec![(1, 5, 9)]);
    }
}
