//! The seed's pipeline, collector → Kafka → ingester → storage, with a real
//! Kafka-protocol broker (tansu, installed by scripts/setup): OTLP into a
//! central collector that writes to Kafka only (`store.enabled: false`), an
//! ingester (`--mode ingester`) that stores and serves whole traces; a third
//! party (Python's confluent-kafka) reads a message as OTLP; an ingester
//! SIGKILLed mid-batch loses nothing acknowledged and keeps each span once;
//! a broker outage becomes `503` for senders and nothing acknowledged is lost.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message;
use meshtrace_testkit::collector::{metric, Collector, Opts};
use meshtrace_testkit::kafka::Broker;
use meshtrace_testkit::otlp::{now_ns, request};
use meshtrace_testkit::python_client;
use meshtrace_testkit::s3::S3Server;
use serde_json::Value;
use std::time::{Duration, Instant};

const TOPIC: &str = "meshtrace-spans";

fn gateway_yaml(b: &Broker, extra: &str) -> String {
    format!(
        "mode: central\nstore:\n  enabled: false\nkafka:\n  brokers: [\"{}\"]\n{extra}",
        b.bootstrap()
    )
}

fn ingester_yaml(b: &Broker, extra: &str) -> String {
    format!(
        "mode: ingester\nkafka:\n  brokers: [\"{}\"]\n{extra}",
        b.bootstrap()
    )
}

fn start(dir_name: &str, yaml: String) -> Collector {
    Collector::start_opts(
        meshtrace_testkit::scratch_path(dir_name),
        Opts {
            yaml: Some(yaml),
            ..Opts::default()
        },
    )
}

fn trace_id(t: u32) -> [u8; 16] {
    let mut id = [0xab; 16];
    id[12..].copy_from_slice(&t.to_be_bytes());
    id
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn span(t: u32, id: u8, parent: Option<u8>, start: u64) -> Span {
    Span {
        trace_id: trace_id(t).to_vec(),
        span_id: vec![0, 0, 0, 0, 0, 0, t as u8, id],
        parent_span_id: parent
            .map(|p| vec![0, 0, 0, 0, 0, 0, t as u8, p])
            .unwrap_or_default(),
        name: format!("op-{id}"),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000_000,
        ..Default::default()
    }
}

/// POSTs until answered `200` (a sender retrying `503`s), within `within`.
fn post_until_ok(c: &Collector, body: &[u8], within: Duration) -> u16 {
    let deadline = Instant::now() + within;
    loop {
        let s = c.post_otlp(body);
        if s == 200 || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The spans of trace `t` once it has `n` (or what it has after the wait).
fn spans_of(c: &Collector, t: u32, n: usize) -> Vec<Value> {
    let v = c.get_json_until(&format!("/api/traces/{}", hex(&trace_id(t))), |v| {
        v["data"][0]["spans"]
            .as_array()
            .is_some_and(|s| s.len() >= n)
    });
    v["data"][0]["spans"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn metrics(c: &Collector) -> String {
    c.get("/metrics").1
}

#[test]
fn otlp_through_kafka_to_the_ingester_gives_whole_traces_and_readable_messages() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 3);
    let central = start("kafka-gateway", gateway_yaml(&broker, ""));
    let ingester = start("kafka-ingester", ingester_yaml(&broker, ""));
    let now = now_ns();
    // Each trace's spans in two exports, from two services: one partition per trace.
    for t in 0..20u32 {
        let first = request(
            "frontend",
            vec![span(t, 1, None, now), span(t, 2, Some(1), now)],
        );
        let second = request(
            "backend",
            vec![span(t, 3, Some(2), now), span(t, 4, Some(3), now)],
        );
        assert_eq!(central.post_otlp(&first.encode_to_vec()), 200);
        assert_eq!(central.post_otlp(&second.encode_to_vec()), 200);
    }
    for t in 0..20u32 {
        let spans = spans_of(&ingester, t, 4);
        assert_eq!(spans.len(), 4, "trace {t}: {spans:?}");
    }
    let m = metrics(&central);
    assert_eq!(
        metric(&m, "meshtrace_collector_kafka_spans_produced_total"),
        80,
        "{m}"
    );
    assert_eq!(
        metric(&m, "meshtrace_collector_kafka_messages_produced_total"),
        40
    );
    // The gateway stores nothing and serves no queries.
    assert_eq!(central.get("/api/services").0, 404);
    let v = ingester.get_json_until("/api/services", |v| {
        v["data"].as_array().is_some_and(|s| s.len() == 2)
    });
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");

    // A third party reads the topic: each message is one trace's spans, keyed by its id.
    let (msgs, stderr) = python_client("kafka_read.py", &[&broker.bootstrap(), TOPIC, "40"], b"");
    let msgs = msgs.as_array().unwrap();
    assert_eq!(msgs.len(), 40, "{stderr}");
    let mut partition_of = std::collections::HashMap::new();
    for m in msgs {
        assert_eq!(m["trace_ids"].as_array().unwrap().len(), 1, "{m}");
        assert_eq!(m["trace_ids"][0], m["key"], "keyed by its trace id: {m}");
        assert_eq!(m["spans"], 2, "{m}");
        let p = partition_of
            .entry(m["key"].to_string())
            .or_insert(m["partition"].clone());
        assert_eq!(*p, m["partition"], "a trace stays on one partition");
    }

    // The ingester commits what it stored and says how far behind it is.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = metrics(&ingester);
        let lag = m.contains("meshtrace_collector_kafka_consumer_lag{");
        if (lag && metric(&m, "meshtrace_collector_kafka_offset_commits_total") > 0)
            || Instant::now() > deadline
        {
            assert!(lag, "{m}");
            assert!(
                metric(&m, "meshtrace_collector_kafka_messages_consumed_total") >= 40,
                "{m}"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn an_ingester_killed_mid_batch_keeps_every_acknowledged_span_once() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 3);
    let central = start("kafka-kill-gateway", gateway_yaml(&broker, ""));
    let now = now_ns();
    const TRACES: u32 = 300;
    for t in 0..TRACES {
        let r = request(
            "kill",
            vec![
                span(t, 1, None, now),
                span(t, 2, Some(1), now),
                span(t, 3, Some(2), now),
            ],
        );
        assert_eq!(central.post_otlp(&r.encode_to_vec()), 200, "trace {t}");
    }
    let yaml = ingester_yaml(&broker, "  max_batch_messages: 20\n");
    let dir = meshtrace_testkit::scratch_path("kafka-kill-ingester");
    let first = Collector::start_opts(
        dir.clone(),
        Opts {
            yaml: Some(yaml.clone()),
            ..Opts::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(
        &metrics(&first),
        "meshtrace_collector_kafka_messages_consumed_total",
    ) < 40
    {
        assert!(Instant::now() < deadline, "the ingester consumed nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    let consumed = metric(
        &metrics(&first),
        "meshtrace_collector_kafka_messages_consumed_total",
    );
    let dir = first.kill_keep_data();
    assert!(
        consumed < u64::from(TRACES),
        "killed before the end ({consumed})"
    );
    let again = Collector::start_opts(
        dir,
        Opts {
            yaml: Some(yaml),
            ..Opts::default()
        },
    );
    // The killed member's partitions come back once its session times out (10 s).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = again.get("/api/traces?service=kill&limit=1000");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let found = v["data"].as_array().map_or(0, |d| d.len());
        if found == TRACES as usize || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for t in 0..TRACES {
        let spans = spans_of(&again, t, 3);
        assert_eq!(spans.len(), 3, "trace {t}, each span once: {spans:?}");
        let mut ids: Vec<_> = spans.iter().map(|s| s["spanID"].clone()).collect();
        ids.sort_by_key(|v| v.to_string());
        ids.dedup();
        assert_eq!(ids.len(), 3, "trace {t}: {spans:?}");
    }
    // Read again after the kill: stored twice, kept once.
    let m = metrics(&again);
    assert!(
        metric(&m, "meshtrace_collector_kafka_messages_consumed_total") > 0,
        "{m}"
    );
}

#[test]
fn a_broker_outage_is_backpressure_for_senders_and_loses_nothing_acknowledged() {
    let s3 = S3Server::start("kafka");
    let mut broker = Broker::start_on_s3(&s3, "kafka");
    broker.create_topic(TOPIC, 1);
    let central = start(
        "kafka-outage-gateway",
        gateway_yaml(&broker, "  delivery_timeout: 3s\n"),
    );
    let now = now_ns();
    let body = |t: u32| request("outage", vec![span(t, 1, None, now)]).encode_to_vec();
    let mut acknowledged = Vec::new();
    for t in 0..10u32 {
        assert_eq!(
            post_until_ok(&central, &body(t), Duration::from_secs(60)),
            200
        );
        acknowledged.push(t);
    }
    broker.stop();
    // Kafka is gone: the sender is told to retry (after the delivery timeout), never "ok".
    let during = central.post_otlp(&body(100));
    assert_eq!(during, 503, "{}", central.log());
    // The message that was not taken is counted once librdkafka gives it up
    // (on a slow machine the answer can come first).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = metrics(&central);
        if metric(&m, "meshtrace_collector_kafka_produce_failures_total") >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no produce failure counted: {m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.restart();
    for t in 10..20u32 {
        assert_eq!(
            post_until_ok(&central, &body(t), Duration::from_secs(90)),
            200,
            "after the outage: {}",
            broker.log()
        );
        acknowledged.push(t);
    }
    let ingester = start("kafka-outage-ingester", ingester_yaml(&broker, ""));
    for t in acknowledged {
        assert_eq!(spans_of(&ingester, t, 1).len(), 1, "acknowledged trace {t}");
    }
}
