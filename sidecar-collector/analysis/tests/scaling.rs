//! Every analysis at n and 8n spans, on the shapes that break naive
//! algorithms — a chain (each span the parent of the next), a fan (one root,
//! every other span its sequential child) and a random tree — must grow like
//! n log n, not n²: the CPU time at 8n over the time at n stays under 20×
//! (n log n predicts ~9×, a quadratic step 64×). CPU time of this thread
//! (`/proc/thread-self/schedstat`), the best of three runs, so a busy machine
//! does not make it fail; the bound is generous for the same reason.

// A test: its helpers fail it with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_analysis::hotspots::Hotspots;
use meshtrace_analysis::report::critical_path_report;
use meshtrace_analysis::windows::{compare, Attributes, SpanFacts};
use meshtrace_analysis::{diff, Span};

const N: usize = 8_000;
const MAX_GROWTH: f64 = 20.0;

fn span(id: u64, parent: Option<u64>, start: i64, end: i64, service: usize) -> Span {
    Span {
        id,
        parent,
        start,
        end,
        asynchronous: false,
        service: format!("svc{}", service % 7),
        operation: format!("op{}", service % 13),
        process: format!("svc{}/pod", service % 7),
    }
}

/// Each span the parent of the next, nested in time.
fn chain(n: usize) -> Vec<Span> {
    (1..=n as u64)
        .map(|i| {
            span(
                i,
                (i > 1).then(|| i - 1),
                i as i64,
                (2 * n as u64 - i + 1) as i64 * 10,
                i as usize,
            )
        })
        .collect()
}

/// One root, every other span its child, one after another.
fn fan(n: usize) -> Vec<Span> {
    let mut v = vec![span(1, None, 0, 10 * n as i64 + 10, 0)];
    v.extend(
        (2..=n as u64).map(|i| span(i, Some(1), 10 * i as i64, 10 * i as i64 + 5, i as usize)),
    );
    v
}

/// A random tree: each span's parent is an earlier one (a fixed-seed xorshift).
fn random(n: usize) -> Vec<Span> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut v = vec![span(1, None, 0, 1_000_000_000, 0)];
    for i in 2..=n as u64 {
        let p = 1 + next() % (i - 1);
        let start = (next() % 900_000_000) as i64;
        v.push(span(
            i,
            Some(p),
            start,
            start + (next() % 100_000_000) as i64,
            i as usize,
        ));
    }
    v
}

/// This thread's CPU time, ns.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat (Linux)")
}

/// The best of three CPU times of `f` on input `make(n)` (the input is built outside the timing).
fn best<T>(n: usize, make: &impl Fn(usize) -> T, f: &impl Fn(T)) -> u64 {
    (0..3)
        .map(|_| {
            let input = make(n);
            let t = cpu_ns();
            f(input);
            cpu_ns() - t
        })
        .min()
        .unwrap()
        .max(1)
}

fn growth<T>(name: &str, make: impl Fn(usize) -> T, f: impl Fn(T)) {
    let small = best(N, &make, &f);
    let large = best(8 * N, &make, &f);
    let ratio = large as f64 / small as f64;
    println!(
        "{name}: n={N} {:.1} ms, 8n {:.1} ms, growth {ratio:.1}x",
        small as f64 / 1e6,
        large as f64 / 1e6
    );
    assert!(
        ratio < MAX_GROWTH,
        "{name}: {ratio:.1}x the CPU time at 8x the spans (n log n would be ~9x)"
    );
}

type Shape = (&'static str, fn(usize) -> Vec<Span>);
const SHAPES: [Shape; 3] = [("chain", chain), ("fan", fan), ("random", random)];

#[test]
fn critical_path_self_time_and_skew_scale() {
    for (shape, make) in SHAPES {
        growth(&format!("critical path, {shape}"), make, |s| {
            let r = critical_path_report("t".into(), s);
            assert!(!r.critical_path.is_empty());
        });
    }
}

#[test]
fn diff_scales() {
    for (shape, make) in SHAPES {
        growth(
            &format!("diff, {shape}"),
            |n| (make(n), make(n)),
            |(a, b)| {
                let d = diff::diff(a, b);
                assert!(d.iter().all(|n| n.presence == "both"));
            },
        );
    }
}

#[test]
fn hotspots_scale() {
    for (shape, make) in SHAPES {
        growth(&format!("hotspots, {shape}"), make, |s| {
            let mut h = Hotspots::new(500, 1000);
            h.add("t", s);
            assert!(!h.ranked().is_empty());
        });
    }
}

#[test]
fn window_comparison_scales() {
    let facts = |n: usize, names: &mut Attributes| -> Vec<SpanFacts> {
        (0..n)
            .map(|i| SpanFacts {
                duration_ns: (i % 1000) as i64,
                error: i % 50 == 0,
                attributes: vec![
                    names.intern("pod", &format!("p{}", i % 97)).0,
                    names.intern("http.route", &format!("/r{}", i % 31)).0,
                ],
            })
            .collect()
    };
    growth(
        "window vs baseline",
        |n| {
            let mut names = Attributes::default();
            (facts(n, &mut names), facts(n, &mut names), names)
        },
        |(w, b, names)| {
            let c = compare(&w, 60.0, &b, 60.0, &names, 20, 2);
            assert_eq!(c.window.spans, w.len() as u64);
        },
    );
}
