//! The pipeline's edges, side by side in one run, interleaved over `--rounds`:
//!
//! Phase R, each receiver's CPU per stored span against direct OTLP: the same
//! spans (`--receiver-spans`, 100 per request, 8 attributes each) sent to a
//! fresh all-in-one collector as OTLP/HTTP protobuf, Zipkin v2 JSON, Jaeger
//! Thrift over HTTP, Jaeger gRPC `PostSpans` and Jaeger UDP Thrift compact
//! (paced: UDP has no backpressure); the collector's CPU from the first
//! request until every span is stored, per stored span.
//!
//! Phase K, the Kafka path against direct OTLP: `--kafka-spans` spans to an
//! all-in-one collector, and to a gateway (`store.enabled: false`,
//! `kafka.brokers`) in front of a tansu broker and an ingester: CPU per
//! stored span of each process, and the latency from a sender's `200` to
//! the trace being queryable at the ingester (`--probes` single traces).
//!
//! `--receivers 0` / `--kafka 0` leave a phase out. Ends with a RESULT line.

// A benchmark: a failed step stops it with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_collector::grpc::StrictCodec;
use meshtrace_proto::jaeger::model;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message;
use meshtrace_testkit::bench::{arg, clk_tck, guard, pct};
use meshtrace_testkit::collector::{metric, post_to, Collector, Opts};
use meshtrace_testkit::kafka::Broker;
use meshtrace_testkit::otlp::{now_ns, request};
use std::time::{Duration, Instant};
use thrift::protocol::{
    TBinaryOutputProtocol, TCompactOutputProtocol, TFieldIdentifier, TListIdentifier,
    TMessageIdentifier, TMessageType, TOutputProtocol, TStructIdentifier, TType,
};

const PER_REQUEST: usize = 100;
const ATTRIBUTES: usize = 8;

/// The spans of request `seq` (trace ids unique per request and run).
fn spans(run: u64, seq: u64, now: u64) -> Vec<Span> {
    (0..PER_REQUEST as u64)
        .map(|i| {
            let mut tid = [0u8; 16];
            tid[..8].copy_from_slice(&(run << 32 | seq).to_be_bytes());
            tid[8..].copy_from_slice(&(i / 10 + 1).to_be_bytes());
            Span {
                trace_id: tid.to_vec(),
                span_id: ((seq << 16) | (i + 1)).to_be_bytes().to_vec(),
                name: format!("GET /api/op{}", i % 20),
                kind: 2,
                start_time_unix_nano: now + i * 1000,
                end_time_unix_nano: now + i * 1000 + 2_000_000,
                attributes: (0..ATTRIBUTES)
                    .map(|a| KeyValue {
                        key: format!("attr.{a}"),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("value-{seq}-{a}"))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
        })
        .collect()
}

fn text(v: &KeyValue) -> String {
    match v.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        _ => String::new(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn zipkin_json(spans: &[Span]) -> Vec<u8> {
    let list: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            let tags: serde_json::Map<String, serde_json::Value> = s
                .attributes
                .iter()
                .map(|a| (a.key.clone(), serde_json::Value::String(text(a))))
                .collect();
            serde_json::json!({
                "traceId": hex(&s.trace_id), "id": hex(&s.span_id), "name": s.name,
                "kind": "SERVER", "timestamp": s.start_time_unix_nano / 1000,
                "duration": (s.end_time_unix_nano - s.start_time_unix_nano) / 1000,
                "localEndpoint": {"serviceName": "bench"}, "tags": tags,
            })
        })
        .collect();
    serde_json::to_vec(&list).unwrap_or_default()
}

fn i64_of(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_be_bytes(a)
}

/// A `jaeger.thrift` Batch written with `o` (the thrift crate's protocols).
fn thrift_batch(o: &mut dyn TOutputProtocol, spans: &[Span]) -> thrift::Result<()> {
    let field = |o: &mut dyn TOutputProtocol, ty, id| {
        o.write_field_begin(&TFieldIdentifier::new("f", ty, id))
    };
    o.write_struct_begin(&TStructIdentifier::new("Batch"))?;
    field(o, TType::Struct, 1)?;
    o.write_struct_begin(&TStructIdentifier::new("Process"))?;
    field(o, TType::String, 1)?;
    o.write_string("bench")?;
    o.write_field_end()?;
    o.write_field_stop()?;
    o.write_struct_end()?;
    o.write_field_end()?;
    field(o, TType::List, 2)?;
    o.write_list_begin(&TListIdentifier::new(TType::Struct, spans.len() as i32))?;
    for s in spans {
        o.write_struct_begin(&TStructIdentifier::new("Span"))?;
        for (id, v) in [
            (1, i64_of(&s.trace_id[8..])),
            (2, i64_of(&s.trace_id[..8])),
            (3, i64_of(&s.span_id)),
            (4, 0),
        ] {
            field(o, TType::I64, id)?;
            o.write_i64(v)?;
            o.write_field_end()?;
        }
        field(o, TType::String, 5)?;
        o.write_string(&s.name)?;
        o.write_field_end()?;
        field(o, TType::I32, 7)?;
        o.write_i32(1)?;
        o.write_field_end()?;
        field(o, TType::I64, 8)?;
        o.write_i64((s.start_time_unix_nano / 1000) as i64)?;
        o.write_field_end()?;
        field(o, TType::I64, 9)?;
        o.write_i64(((s.end_time_unix_nano - s.start_time_unix_nano) / 1000) as i64)?;
        o.write_field_end()?;
        field(o, TType::List, 10)?;
        o.write_list_begin(&TListIdentifier::new(
            TType::Struct,
            s.attributes.len() as i32 + 1,
        ))?;
        let tag = |o: &mut dyn TOutputProtocol, k: &str, v: &str| -> thrift::Result<()> {
            o.write_struct_begin(&TStructIdentifier::new("Tag"))?;
            field(o, TType::String, 1)?;
            o.write_string(k)?;
            o.write_field_end()?;
            field(o, TType::I32, 2)?;
            o.write_i32(0)?;
            o.write_field_end()?;
            field(o, TType::String, 3)?;
            o.write_string(v)?;
            o.write_field_end()?;
            o.write_field_stop()?;
            o.write_struct_end()
        };
        tag(o, "span.kind", "server")?;
        for a in &s.attributes {
            tag(o, &a.key, &text(a))?;
        }
        o.write_list_end()?;
        o.write_field_end()?;
        o.write_field_stop()?;
        o.write_struct_end()?;
    }
    o.write_list_end()?;
    o.write_field_end()?;
    o.write_field_stop()?;
    o.write_struct_end()
}

fn thrift_http(spans: &[Span]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut o = TBinaryOutputProtocol::new(&mut out, true);
        let _ = thrift_batch(&mut o, spans);
        let _ = o.flush();
    }
    out
}

fn thrift_udp(spans: &[Span]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut o = TCompactOutputProtocol::new(&mut out);
        let _ = o.write_message_begin(&TMessageIdentifier::new(
            "emitBatch",
            TMessageType::OneWay,
            1,
        ));
        let _ = o.write_struct_begin(&TStructIdentifier::new("args"));
        let _ = o.write_field_begin(&TFieldIdentifier::new("batch", TType::Struct, 1));
        let _ = thrift_batch(&mut o, spans);
        let _ = o.write_field_end();
        let _ = o.write_field_stop();
        let _ = o.write_struct_end();
        let _ = o.write_message_end();
        let _ = o.flush();
    }
    out
}

fn jaeger_proto(spans: &[Span]) -> model::PostSpansRequest {
    let kv = |k: &str, v: String| model::KeyValue {
        key: k.into(),
        v_str: v,
        ..Default::default()
    };
    model::PostSpansRequest {
        batch: Some(model::Batch {
            process: Some(model::Process {
                service_name: "bench".into(),
                tags: vec![],
            }),
            spans: spans
                .iter()
                .map(|s| model::Span {
                    trace_id: s.trace_id.clone(),
                    span_id: s.span_id.clone(),
                    operation_name: s.name.clone(),
                    start_time: Some(model::Timestamp {
                        seconds: (s.start_time_unix_nano / 1_000_000_000) as i64,
                        nanos: (s.start_time_unix_nano % 1_000_000_000) as i32,
                    }),
                    duration: Some(model::Duration {
                        seconds: 0,
                        nanos: (s.end_time_unix_nano - s.start_time_unix_nano) as i32,
                    }),
                    tags: std::iter::once(kv("span.kind", "server".into()))
                        .chain(s.attributes.iter().map(|a| kv(&a.key, text(a))))
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        }),
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Format {
    Otlp,
    ZipkinJson,
    JaegerThriftHttp,
    JaegerGrpc,
    JaegerUdpCompact,
}

fn stored(c: &Collector) -> u64 {
    metric(
        &c.get("/metrics").1,
        "meshtrace_collector_spans_stored_total",
    )
}

fn wait_stored(c: &Collector, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while stored(c) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} spans stored",
            stored(c)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU seconds per stored span (µs) of one format on a fresh collector.
fn receiver_round(format: Format, requests: u64, run: u64, rt: &tokio::runtime::Runtime) -> f64 {
    let c = Collector::start_opts(
        meshtrace_testkit::scratch_path("bench-receiver"),
        Opts {
            args: vec!["--retention".into(), "30d".into()],
            ..Opts::default()
        },
    );
    let now = now_ns();
    let bodies: Vec<Vec<u8>> = (0..requests)
        .map(|seq| {
            let s = spans(run, seq, now);
            match format {
                Format::Otlp => request("bench", s).encode_to_vec(),
                Format::ZipkinJson => zipkin_json(&s),
                Format::JaegerThriftHttp => thrift_http(&s),
                Format::JaegerGrpc => jaeger_proto(&s).encode_to_vec(),
                Format::JaegerUdpCompact => thrift_udp(&s),
            }
        })
        .collect();
    let pid = c.child.id();
    let t0 = meshtrace_testkit::envoy::cpu_ticks(pid);
    match format {
        Format::Otlp | Format::ZipkinJson | Format::JaegerThriftHttp => {
            let (port, path, ct) = match format {
                Format::Otlp => (c.otlp_port, "/v1/traces", "application/x-protobuf"),
                Format::ZipkinJson => (c.zipkin_port, "/api/v2/spans", "application/json"),
                _ => (c.jaeger_http_port, "/api/traces", "application/x-thrift"),
            };
            for b in &bodies {
                let m = post_to(port, path, ct, &[], b).expect("answer");
                assert!(m.status() < 300, "{format:?}: {}", m.status());
            }
        }
        Format::JaegerGrpc => rt.block_on(async {
            let channel = tonic::transport::Channel::from_shared(format!(
                "http://127.0.0.1:{}",
                c.jaeger_grpc_port
            ))
            .expect("url")
            .connect()
            .await
            .expect("connect");
            let mut grpc = tonic::client::Grpc::new(channel);
            for b in &bodies {
                let req = model::PostSpansRequest::decode(b.as_slice()).expect("request");
                grpc.ready().await.expect("ready");
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/jaeger.api_v2.CollectorService/PostSpans",
                );
                let codec: StrictCodec<model::PostSpansRequest, model::PostSpansResponse> =
                    StrictCodec::default();
                grpc.unary(tonic::Request::new(req), path, codec)
                    .await
                    .expect("PostSpans");
            }
        }),
        Format::JaegerUdpCompact => {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
            // Paced: UDP has no backpressure, and a burst past the socket's
            // receive buffer (208 KiB by default) is lost: at most 4 packets
            // (about 100 KB) not yet stored.
            let deadline = Instant::now() + Duration::from_secs(300);
            for (i, b) in bodies.iter().enumerate() {
                udp.send_to(b, ("127.0.0.1", c.jaeger_compact_port))
                    .expect("send");
                let sent = (i as u64 + 1) * PER_REQUEST as u64;
                while stored(&c) + 4 * PER_REQUEST as u64 <= sent {
                    assert!(
                        Instant::now() < deadline,
                        "UDP packets lost: {} of {sent} spans stored",
                        stored(&c)
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    let n = requests * PER_REQUEST as u64;
    wait_stored(&c, n);
    let ticks = meshtrace_testkit::envoy::cpu_ticks(pid) - t0;
    ticks as f64 / clk_tck() / n as f64 * 1e6
}

fn kafka_yaml(b: &Broker, gateway: bool) -> String {
    if gateway {
        format!(
            "mode: central\nstore:\n  enabled: false\nkafka:\n  brokers: [\"{}\"]\n",
            b.bootstrap()
        )
    } else {
        format!(
            "mode: ingester\nretention: 30d\nkafka:\n  brokers: [\"{}\"]\n",
            b.bootstrap()
        )
    }
}

fn start_yaml(name: &str, yaml: String) -> Collector {
    Collector::start_opts(
        meshtrace_testkit::scratch_path(name),
        Opts {
            yaml: Some(yaml),
            ..Opts::default()
        },
    )
}

struct KafkaRound {
    direct_us: f64,
    gateway_us: f64,
    ingester_us: f64,
    broker_us: f64,
    latency_ms: Vec<f64>,
}

fn kafka_round(requests: u64, probes: u64, run: u64) -> KafkaRound {
    let now = now_ns();
    let bodies: Vec<Vec<u8>> = (0..requests)
        .map(|seq| request("bench", spans(run, seq, now)).encode_to_vec())
        .collect();
    let n = requests * PER_REQUEST as u64;
    // Direct: an all-in-one collector.
    let direct = Collector::start_opts(
        meshtrace_testkit::scratch_path("bench-direct"),
        Opts {
            args: vec!["--retention".into(), "30d".into()],
            ..Opts::default()
        },
    );
    let t0 = meshtrace_testkit::envoy::cpu_ticks(direct.child.id());
    for b in &bodies {
        assert_eq!(direct.post_otlp(b), 200);
    }
    wait_stored(&direct, n);
    let direct_us =
        (meshtrace_testkit::envoy::cpu_ticks(direct.child.id()) - t0) as f64 / clk_tck() / n as f64
            * 1e6;
    drop(direct);
    // Through Kafka.
    let broker = Broker::start();
    broker.create_topic("meshtrace-spans", 3);
    let gateway = start_yaml("bench-gateway", kafka_yaml(&broker, true));
    let ingester = start_yaml("bench-ingester", kafka_yaml(&broker, false));
    let pids = [gateway.child.id(), ingester.child.id(), broker_pid(&broker)];
    let before: Vec<u64> = pids
        .iter()
        .map(|p| meshtrace_testkit::envoy::cpu_ticks(*p))
        .collect();
    for b in &bodies {
        assert_eq!(gateway.post_otlp(b), 200);
    }
    wait_stored(&ingester, n);
    let per = |i: usize| {
        (meshtrace_testkit::envoy::cpu_ticks(pids[i]) - before[i]) as f64 / clk_tck() / n as f64
            * 1e6
    };
    let (gateway_us, ingester_us, broker_us) = (per(0), per(1), per(2));
    // Latency: a sender's 200 until the trace is queryable at the ingester.
    let mut latency_ms = Vec::new();
    for p in 0..probes {
        let s = spans(run | 1 << 20, 1_000_000 + p, now_ns());
        let one = request("probe", s[..1].to_vec());
        let id = hex(&one.resource_spans[0].scope_spans[0].spans[0].trace_id);
        assert_eq!(gateway.post_otlp(&one.encode_to_vec()), 200);
        let t = Instant::now();
        loop {
            if ingester.get(&format!("/api/traces/{id}")).0 == 200 {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "probe {p} never queryable"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        latency_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    KafkaRound {
        direct_us,
        gateway_us,
        ingester_us,
        broker_us,
        latency_ms,
    }
}

/// The broker's PID (the testkit keeps its child private: found by its port).
fn broker_pid(b: &Broker) -> u32 {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("tcp://127.0.0.1:{}", b.port)])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("the broker's pid")
}

fn median(mut v: Vec<f64>) -> f64 {
    pct(&mut v, 0.5)
}

fn main() {
    guard();
    let rounds = arg("--rounds", 3);
    let mut result = Vec::new();
    if arg("--receivers", 1) == 1 {
        let requests = arg("--receiver-spans", 100_000) / PER_REQUEST as u64;
        println!("# phase R: each receiver's collector CPU per stored span, {} spans ({PER_REQUEST} per request, {ATTRIBUTES} attributes each), fresh all-in-one collectors, interleaved over {rounds} rounds", requests * PER_REQUEST as u64);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let formats = [
            Format::Otlp,
            Format::ZipkinJson,
            Format::JaegerThriftHttp,
            Format::JaegerGrpc,
            Format::JaegerUdpCompact,
        ];
        let mut per: Vec<Vec<f64>> = vec![Vec::new(); formats.len()];
        for r in 0..rounds {
            for (i, f) in formats.iter().enumerate() {
                let us = receiver_round(*f, requests, r * 10 + i as u64 + 1, &rt);
                println!("round {r} {f:?}: {us:.2} µs CPU per span");
                per[i].push(us);
            }
        }
        let otlp = median(per[0].clone());
        println!("| receiver | µs CPU per stored span (median) | vs OTLP |");
        println!("|---|---|---|");
        for (i, f) in formats.iter().enumerate() {
            let m = median(per[i].clone());
            println!("| {f:?} | {m:.2} | {:.2} |", m / otlp);
            result.push(format!("{f:?}={m:.2}us({:.2}x)", m / otlp));
        }
    }
    if arg("--kafka", 1) == 1 {
        let requests = arg("--kafka-spans", 100_000) / PER_REQUEST as u64;
        let probes = arg("--probes", 20);
        println!("# phase K: OTLP direct to an all-in-one collector vs gateway → Kafka (tansu) → ingester, {} spans, interleaved over {rounds} rounds", requests * PER_REQUEST as u64);
        let mut rs = Vec::new();
        for r in 0..rounds {
            let k = kafka_round(requests, probes, 100 + r);
            println!(
                "round {r}: direct {:.2} µs/span; gateway {:.2}, ingester {:.2}, broker {:.2} µs/span; latency to queryable p50 {:.1} ms",
                k.direct_us,
                k.gateway_us,
                k.ingester_us,
                k.broker_us,
                median(k.latency_ms.clone())
            );
            rs.push(k);
        }
        let m = |f: &dyn Fn(&KafkaRound) -> f64| median(rs.iter().map(f).collect());
        let direct = m(&|k| k.direct_us);
        let (g, i, b) = (
            m(&|k| k.gateway_us),
            m(&|k| k.ingester_us),
            m(&|k| k.broker_us),
        );
        let mut lat: Vec<f64> = rs.iter().flat_map(|k| k.latency_ms.clone()).collect();
        let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
        println!("| path | µs CPU per stored span (median) |");
        println!("|---|---|");
        println!("| direct (all-in-one) | {direct:.2} |");
        println!("| gateway | {g:.2} |");
        println!("| ingester | {i:.2} |");
        println!("| broker (tansu) | {b:.2} |");
        println!(
            "| gateway + ingester (meshtrace) | {:.2} ({:.2}x direct) |",
            g + i,
            (g + i) / direct
        );
        println!("latency from a sender's 200 to queryable at the ingester: p50 {p50:.1} ms, p99 {p99:.1} ms");
        result.push(format!(
            "kafka: direct={direct:.2}us gateway={g:.2}us ingester={i:.2}us broker={b:.2}us meshtrace_ratio={:.2} latency_p50={p50:.1}ms p99={p99:.1}ms",
            (g + i) / direct
        ));
    }
    println!("RESULT {}", result.join(" "));
}
