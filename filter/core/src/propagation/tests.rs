use super::*;
use proptest::prelude::*;

fn headers<'a>(pairs: &'a [(&'a str, &'a [u8])]) -> IncomingHeaders<'a> {
    let mut h = IncomingHeaders::default();
    for (n, v) in pairs {
        h.observe(n, v);
    }
    h
}

const TP: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn extraction_table() {
    struct Case {
        headers: Vec<(&'static str, &'static [u8])>,
        parent: Option<&'static str>,
        sampled: Option<bool>,
        debug: bool,
        invalid: bool,
        why: &'static str,
    }
    let cases = vec![
        Case {
            headers: vec![("traceparent", TP)],
            parent: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            sampled: Some(true),
            debug: false,
            invalid: false,
            why: "w3c",
        },
        Case {
            headers: vec![("traceparent", TP), ("traceparent", TP)],
            parent: None,
            sampled: None,
            debug: false,
            invalid: true,
            why: "two traceparent headers",
        },
        Case {
            headers: vec![
                ("traceparent", b"garbage"),
                ("b3", b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ],
            parent: Some("80f198ee56343ba864fe8b2a57d3eff7"),
            sampled: Some(true),
            debug: false,
            invalid: true,
            why: "bad w3c falls back to b3",
        },
        Case {
            headers: vec![("b3", b"a3ce929d0e0e4736-e457b5a2e4d86bd1-d")],
            parent: Some("0000000000000000a3ce929d0e0e4736"),
            sampled: Some(true),
            debug: true,
            invalid: false,
            why: "b3 single 64-bit debug",
        },
        Case {
            headers: vec![("b3", b"0")],
            parent: None,
            sampled: Some(false),
            debug: false,
            invalid: false,
            why: "b3: 0 denies",
        },
        Case {
            headers: vec![
                ("x-b3-traceid", b"80f198ee56343ba864fe8b2a57d3eff7"),
                ("x-b3-spanid", b"e457b5a2e4d86bd1"),
                ("x-b3-sampled", b"0"),
            ],
            parent: Some("80f198ee56343ba864fe8b2a57d3eff7"),
            sampled: Some(false),
            debug: false,
            invalid: false,
            why: "b3 multi",
        },
        Case {
            headers: vec![
                ("x-b3-traceid", b"80f198ee56343ba864fe8b2a57d3eff7"),
                ("x-b3-spanid", b"e457b5a2e4d86bd1"),
            ],
            parent: Some("80f198ee56343ba864fe8b2a57d3eff7"),
            sampled: None,
            debug: false,
            invalid: false,
            why: "b3 multi deferred",
        },
        Case {
            headers: vec![("x-b3-sampled", b"1")],
            parent: None,
            sampled: Some(true),
            debug: false,
            invalid: false,
            why: "b3 multi decision only",
        },
        Case {
            headers: vec![("uber-trace-id", b"abc:def:0:3")],
            parent: Some("00000000000000000000000000000abc"),
            sampled: Some(true),
            debug: true,
            invalid: false,
            why: "jaeger debug",
        },
        Case {
            headers: vec![("uber-trace-id", b"abc:def:0:0")],
            parent: Some("00000000000000000000000000000abc"),
            sampled: Some(false),
            debug: false,
            invalid: false,
            why: "jaeger not sampled",
        },
        Case {
            headers: vec![("uber-trace-id", b"zzz")],
            parent: None,
            sampled: None,
            debug: false,
            invalid: true,
            why: "bad jaeger",
        },
        Case {
            headers: vec![],
            parent: None,
            sampled: None,
            debug: false,
            invalid: false,
            why: "nothing",
        },
    ];
    for c in cases {
        let e = extract(&headers(&c.headers));
        assert_eq!(
            e.parent.map(|p| p.trace_id.to_hex()).as_deref(),
            c.parent,
            "{}",
            c.why
        );
        assert_eq!(e.sampled, c.sampled, "{}", c.why);
        assert_eq!(e.debug, c.debug, "{}", c.why);
        assert_eq!(e.invalid, c.invalid, "{}", c.why);
    }
}

#[test]
fn tracestate_handling() {
    let e = extract(&headers(&[
        ("traceparent", TP),
        ("tracestate", b"congo=t61"),
    ]));
    assert_eq!(e.tracestate, TraceState::Keep("congo=t61".into()));
    let e = extract(&headers(&[
        ("traceparent", TP),
        ("tracestate", b"a=1"),
        ("tracestate", b"b=2"),
    ]));
    assert_eq!(
        e.tracestate,
        TraceState::Replace("a=1,b=2".into()),
        "several headers are combined"
    );
    let e = extract(&headers(&[("traceparent", TP), ("tracestate", b"A=1")]));
    assert_eq!(e.tracestate, TraceState::Remove, "nothing valid left");
    let e = extract(&headers(&[("traceparent", b"bad"), ("tracestate", b"a=1")]));
    assert_eq!(
        e.tracestate,
        TraceState::Remove,
        "no tracestate without a valid traceparent"
    );
}

fn apply(edits: &[HeaderEdit], into: &mut Vec<(String, Vec<u8>)>) {
    for (n, v) in edits {
        into.retain(|(k, _)| k != n);
        if let Some(v) = v {
            into.push((n.to_string(), v.as_bytes().to_vec()));
        }
    }
}

fn reextract(edits: &[HeaderEdit]) -> Extracted {
    let mut hs = Vec::new();
    apply(edits, &mut hs);
    let mut h = IncomingHeaders::default();
    for (n, v) in &hs {
        h.observe(n, v);
    }
    extract(&h)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary header bytes never panic, in any format.
    #[test]
    fn arbitrary_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..200), which in 0usize..8) {
        let names = ["traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags", "uber-trace-id"];
        let e = extract(&headers(&[(names[which], &v), ("x-b3-spanid", &v)]));
        // Whatever parsed must be a valid context.
        if let Some(p) = e.parent {
            prop_assert!(p.trace_id.is_valid() && p.span_id.is_valid());
        }
        let _ = w3c::sanitize_tracestate(&v);
    }

    /// Inject then extract gives back the same ids and decision, in every format.
    #[test]
    fn inject_extract_roundtrip(t in any::<[u8; 16]>(), s in any::<[u8; 8]>(), sampled in any::<bool>(), debug in any::<bool>(), short in any::<bool>(), fmt in 0usize..4) {
        let mut t = t;
        if short { t[..8].fill(0); }
        prop_assume!(t.iter().any(|b| *b != 0) && s.iter().any(|b| *b != 0));
        let formats = [Formats::W3C, Formats::B3_MULTI, Formats::B3_SINGLE, Formats::JAEGER][fmt];
        let debug = debug && formats != Formats::W3C; // W3C has no debug flag
        let sampled = sampled || debug;
        let ts = TraceState::Absent;
        let ctx = Outgoing { trace_id: TraceId(t), span_id: SpanId(s), parent_span_id: None, sampled, debug, w3c_flags: 0, tracestate: &ts, traceparent: None };
        let edits = inject_edits(&ctx, formats);
        let e = reextract(&edits);
        let p = e.parent.expect("parent");
        prop_assert_eq!(p.trace_id, TraceId(t));
        prop_assert_eq!(p.span_id, SpanId(s));
        prop_assert_eq!(e.sampled, Some(sampled));
        prop_assert_eq!(e.debug, debug);
        prop_assert!(!e.invalid);
    }
}
