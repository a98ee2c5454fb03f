use super::*;
use meshtrace_proto::otlp::common::v1::{ArrayValue, KeyValueList};
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::{span, ResourceSpans, ScopeSpans, Span};

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    })
}

fn kv(k: &str, v: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v,
        ..Default::default()
    }
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// One span carrying `attrs`, an event and a link carrying `attrs` too, on a
/// resource carrying `attrs`; redacted; every copy's values, in order.
fn redacted(r: &Redaction, attrs: Vec<KeyValue>) -> Vec<String> {
    let mut req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: attrs.clone(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    attributes: attrs.clone(),
                    events: vec![span::Event {
                        attributes: attrs.clone(),
                        ..Default::default()
                    }],
                    links: vec![span::Link {
                        attributes: attrs,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    r.apply(&mut req);
    let rs = &req.resource_spans[0];
    let sp = &rs.scope_spans[0].spans[0];
    let mut out = Vec::new();
    for list in [
        &rs.resource.as_ref().unwrap().attributes,
        &sp.attributes,
        &sp.events[0].attributes,
        &sp.links[0].attributes,
    ] {
        out.extend(list.iter().map(|a| text(&a.value)));
    }
    out
}

#[test]
fn what_users_mean_by_a_credential_is_redacted_everywhere() {
    let r = Redaction::default();
    // Issue 21, finding 9: each returned in clear before.
    for key in [
        "api_key",
        "apikey",
        "API-Key",
        "password",
        "db.password",
        "token",
        "secret",
        "client_secret",
        "private_key",
        "http.request.header.x-amz-security-token",
        "http.request.header.x-auth-token",
        "http.request.header.x-goog-api-key",
        "aws.secret_access_key",
        "authorization",
        "http.request.header.authorization",
        "rpc.grpc.request.metadata.authorization",
        "Set-Cookie",
    ] {
        let out = redacted(&r, vec![kv(key, s("hunter2"))]);
        assert_eq!(
            out,
            vec![REDACTED; 4],
            "{key}: span, event, link and resource"
        );
    }
    for key in [
        "http.request.method",
        "author",
        "tokens",
        "gen_ai.usage.input_tokens",
        "messaging.kafka.message.key",
        "db.statement",
        "url.path",
        "password.policy.name",
    ] {
        let out = redacted(&r, vec![kv(key, s("kept"))]);
        assert_eq!(out, vec!["kept"; 4], "{key}");
    }
}

#[test]
fn nested_lists_and_arrays_are_searched() {
    let r = Redaction::default();
    let headers = AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: vec![kv("authorization", s("Bearer abc")), kv("accept", s("*/*"))],
        })),
    };
    let array = AnyValue {
        value: Some(any_value::Value::ArrayValue(ArrayValue {
            values: vec![headers.clone()],
        })),
    };
    let mut attrs = vec![
        kv("http.request.headers", Some(headers)),
        kv("batch", Some(array)),
    ];
    let n = r.redact_attrs(&mut attrs, 0, &mut String::new());
    assert_eq!(n, 2);
    let inner = |v: &Option<AnyValue>| -> Vec<(String, String)> {
        let list = match v.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::KvlistValue(l)) => l.clone(),
            Some(any_value::Value::ArrayValue(a)) => match a.values[0].value.as_ref() {
                Some(any_value::Value::KvlistValue(l)) => l.clone(),
                _ => panic!("array of lists"),
            },
            _ => panic!("a list"),
        };
        list.values
            .iter()
            .map(|a| (a.key.clone(), text(&a.value)))
            .collect()
    };
    for a in &attrs {
        assert_eq!(
            inner(&a.value),
            vec![
                ("authorization".into(), REDACTED.into()),
                ("accept".into(), "*/*".into())
            ]
        );
    }
}

#[test]
fn urls_keep_everything_but_the_credentials() {
    let r = Redaction::default();
    let cases = [
        (
            "url.full",
            "https://shop.example/api/orders?id=7&access_token=abc123&page=2#top",
            "https://shop.example/api/orders?id=7&access_token=REDACTED&page=2#top",
        ),
        (
            "url.full",
            "https://alice:s3cret@db.example:5432/orders?sslmode=require",
            "https://REDACTED:REDACTED@db.example:5432/orders?sslmode=require",
        ),
        (
            "http.url",
            "http://svc/cb?code=xyz&state=1&X-Amz-Signature=f00&api_key=k",
            "http://svc/cb?code=REDACTED&state=1&X-Amz-Signature=REDACTED&api_key=REDACTED",
        ),
        (
            "url.query",
            "q=shoes&token=t0k&lang=en",
            "q=shoes&token=REDACTED&lang=en",
        ),
        (
            "http.target",
            "/login?user=bob&password=pw",
            "/login?user=bob&password=REDACTED",
        ),
        (
            "url.original",
            "ftp://user@host/file",
            "ftp://REDACTED@host/file",
        ),
    ];
    for (key, url, want) in cases {
        let out = redacted(&r, vec![kv(key, s(url))]);
        assert_eq!(out[1], want, "{key}: {url}");
    }
    // Nothing to mask: untouched (and not counted).
    for (key, url) in [
        ("url.full", "https://shop.example/search?q=token&page=2"),
        ("url.full", "https://shop.example/a@b/c"),
        ("http.target", "/healthz"),
        ("url.query", "a=1&b=2"),
        ("url.path", "/login?password=not-a-url-key"),
    ] {
        let mut attrs = vec![kv(key, s(url))];
        assert_eq!(
            r.redact_attrs(&mut attrs, 0, &mut String::new()),
            0,
            "{url}"
        );
        assert_eq!(text(&attrs[0].value), url);
    }
}

#[test]
fn additions_exemptions_and_patterns() {
    let r = Redaction::new(
        &["x-session".into()],
        &["http.request.header.cookie".into()],
    )
    .with_patterns(&[
        r"(?i)bearer\s+[a-z0-9._~+/-]+=*".into(),
        r"AKIA[0-9A-Z]{16}".into(),
    ])
    .unwrap();
    assert!(r.is_sensitive("X_SESSION"));
    assert!(
        !r.is_sensitive("http.request.header.cookie"),
        "allowed whole key"
    );
    assert!(r.is_sensitive("cookie"));
    let out = redacted(
        &r,
        vec![
            kv(
                "exception.message",
                s("call failed with Bearer eyJhbGciOi.x-y_z== at 10:00"),
            ),
            kv(
                "log",
                s("using AKIAABCDEFGHIJKLMNOP and AKIAQQQQQQQQQQQQQQQQ"),
            ),
            kv("note", s("nothing here")),
        ],
    );
    assert_eq!(out[3], "call failed with [REDACTED] at 10:00");
    assert_eq!(out[4], "using [REDACTED] and [REDACTED]");
    assert_eq!(out[5], "nothing here");
    let e = Redaction::default()
        .with_patterns(&["ok".into(), "(unclosed".into()])
        .unwrap_err();
    assert!(e.to_string().starts_with("redaction.patterns[1]"), "{e}");
}

mod shapes {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The shape filter never changes an answer: whatever the key, it is
        /// sensitive exactly when its normalized last segment is a name.
        #[test]
        fn the_shape_filter_only_skips_keys_that_are_no_name(
            prefix in "[a-z.]{0,6}",
            segment in "[a-zA-Z_\\-é]{0,12}",
            extra in prop::collection::vec("[a-zA-Z_\\-é]{0,70}", 0..3),
        ) {
            let r = Redaction::new(&extra, &[]);
            let key = format!("{prefix}{segment}");
            let last = key.rsplit('.').next().unwrap_or(&key);
            let expected = r.names.contains(normalized(last).as_str());
            prop_assert_eq!(r.is_sensitive(&key), expected, "{}", key);
        }
    }

    #[test]
    fn every_default_name_passes_the_filter() {
        let r = Redaction::default();
        for n in DEFAULT_NAMES.iter().chain(SENSITIVE_HEADERS) {
            assert!(r.is_sensitive(n), "{n}");
            assert!(
                r.is_sensitive(&format!("http.request.header.{}", n.to_uppercase())),
                "{n}"
            );
        }
        for k in [
            "http.request.method",
            "url.path",
            "x-request-id",
            "team",
            "server.address",
        ] {
            assert!(!r.is_sensitive(k), "{k}");
        }
    }
}
