//! Clock skew between sidecars. Two spans of one request written by different
//! processes (a client span in one pod, the server span in another) are timed by
//! different clocks; a server span that starts before its client span, or ends
//! after it, is impossible and means the clocks disagree. As Jaeger's adjuster
//! does, such a child (and everything below it) is shifted to sit in the middle
//! of its parent, or to start with it when it is longer. Spans of the same
//! process are never moved: their clock is the same.

use crate::trace::{Trace, TraceWarning};

/// Shifts skewed subtrees in place; each shift is recorded as a warning.
pub fn adjust(trace: &mut Trace) {
    let Some(root) = trace.root else { return };
    let n = trace.spans.len();
    let mut delta = vec![0i64; n];
    let mut seen = vec![false; n];
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if std::mem::replace(&mut seen[p], true) {
            continue;
        }
        for ci in 0..trace.children[p].len() {
            let c = trace.children[p][ci];
            let inherited = delta[p];
            let (parent, child) = (&trace.spans[p], &trace.spans[c]);
            let (ps, pe) = (parent.start, parent.end);
            let (cs, ce) = (child.start + inherited, child.end + inherited);
            let own =
                if child.process != parent.process && !child.asynchronous && (cs < ps || ce > pe) {
                    let (pd, cd) = (pe - ps, ce - cs);
                    if cd > pd {
                        ps - cs
                    } else {
                        ps + (pd - cd) / 2 - cs
                    }
                } else {
                    0
                };
            let child = &mut trace.spans[c];
            child.start = cs + own;
            child.end = ce + own;
            delta[c] = inherited + own;
            if own != 0 {
                let span = child.id;
                trace.warnings.push(TraceWarning::ClockSkew {
                    span,
                    shift_ns: own,
                });
            }
            stack.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::fixtures::span;

    #[test]
    fn a_server_span_before_its_client_is_moved_into_it_with_its_children() {
        // The client (pod a) 1000..2000; the server (pod b) claims 500..1300: b's clock
        // is behind. It is centred in the client: 1100..1900, its child moves with it.
        let mut t = Trace::new(vec![
            span(1, None, 1000, 2000, "a"),
            span(2, Some(1), 500, 1300, "b"),
            span(3, Some(2), 600, 700, "b"),
        ]);
        adjust(&mut t);
        assert_eq!((t.spans[1].start, t.spans[1].end), (1100, 1900));
        assert_eq!((t.spans[2].start, t.spans[2].end), (1200, 1300));
        assert_eq!(
            t.warnings,
            vec![TraceWarning::ClockSkew {
                span: 2,
                shift_ns: 600
            }]
        );
    }

    #[test]
    fn the_same_process_and_fitting_children_are_left_alone() {
        let mut t = Trace::new(vec![
            span(1, None, 1000, 2000, "a"),
            span(2, Some(1), 900, 1100, "a"),
            span(3, Some(1), 1200, 1300, "b"),
        ]);
        adjust(&mut t);
        assert_eq!((t.spans[1].start, t.spans[2].start), (900, 1200));
        assert!(t.warnings.is_empty());
    }

    #[test]
    fn a_longer_child_starts_with_its_parent() {
        let mut t = Trace::new(vec![
            span(1, None, 1000, 1100, "a"),
            span(2, Some(1), 0, 500, "b"),
        ]);
        adjust(&mut t);
        assert_eq!((t.spans[1].start, t.spans[1].end), (1000, 1500));
    }
}
