use super::backend::Location;
use super::*;
use crate::store::suite::{self, records, span, BASE_NS};
use crate::store::SpanStore;

fn settings(dir: &Path) -> BlockSettings {
    BlockSettings {
        location: Location::Local(dir.join("bucket")),
        ..BlockSettings::default()
    }
}

/// Writes, then seals and uploads at once: every read after a write comes
/// from blocks in the backend.
struct Flushing(Arc<BlockStore>);

impl SpanWriter for Flushing {
    fn write(&self, spans: &[SpanRecord]) -> Result<(), StoreError> {
        self.0.write(spans)?;
        self.0.flush()
    }
    fn apply_retention(&self, cutoff_us: i64) -> Result<usize, StoreError> {
        self.0.apply_retention(cutoff_us)
    }
}

impl SpanReader for Flushing {
    fn traces_within(
        &self,
        ids: &[[u8; 16]],
        max_spans: usize,
        ctl: &ReadCtl,
    ) -> Result<TraceSet, StoreError> {
        self.0.traces_within(ids, max_spans, ctl)
    }
    fn find_trace_ids(&self, q: &TraceQuery, ctl: &ReadCtl) -> Result<Vec<[u8; 16]>, StoreError> {
        self.0.find_trace_ids(q, ctl)
    }
    fn services(&self, ctl: &ReadCtl) -> Result<Vec<String>, StoreError> {
        self.0.services(ctl)
    }
    fn operations(&self, service: &str, ctl: &ReadCtl) -> Result<Vec<(String, i32)>, StoreError> {
        self.0.operations(service, ctl)
    }
    fn dependencies(&self, a: i64, b: i64, ctl: &ReadCtl) -> Result<Vec<Edge>, StoreError> {
        self.0.dependencies(a, b, ctl)
    }
}

fn suite_with(make: impl Fn(&Path) -> Box<dyn SpanStore>) {
    let dirs = std::cell::RefCell::new(Vec::new());
    suite::run(&|| {
        let d = tempfile::tempdir().unwrap();
        let s = make(d.path());
        dirs.borrow_mut().push(d);
        s
    });
}

#[test]
fn blocks_pass_the_suite_from_the_head() {
    suite_with(|d| Box::new(BlockStore::open(d, settings(d)).unwrap()));
}

#[test]
fn blocks_pass_the_suite_from_uploaded_blocks() {
    suite_with(|d| {
        let s = BlockSettings {
            compaction_interval: Duration::ZERO,
            ..settings(d)
        };
        Box::new(Flushing(BlockStore::open(d, s).unwrap()))
    });
}

#[test]
fn blocks_pass_the_suite_while_heads_are_sealed_and_cut() {
    // Every write seals the head: reads meet sealed heads, pending blocks and
    // uploads in progress on the block thread.
    suite_with(|d| {
        Box::new(
            BlockStore::open(
                d,
                BlockSettings {
                    max_bytes: 1,
                    compaction_interval: Duration::ZERO,
                    ..settings(d)
                },
            )
            .unwrap(),
        )
    });
}

fn trace_ids(store: &dyn SpanReader) -> Vec<u8> {
    let q = TraceQuery {
        service: "svc".into(),
        start_us: 0,
        end_us: i64::MAX,
        limit: 1000,
        ..Default::default()
    };
    let mut ids: Vec<u8> = store
        .find_trace_ids(&q, &ReadCtl::unbounded())
        .unwrap()
        .iter()
        .map(|t| t[0])
        .collect();
    ids.sort();
    ids
}

fn write_traces(store: &dyn SpanWriter, from: u8, to: u8) {
    for t in from..to {
        store
            .write(&records(
                "svc",
                vec![
                    span(t, 1, 0, "root", BASE_NS + u64::from(t) * 1000, 10, 200),
                    span(t, 2, 1, "child", BASE_NS + u64::from(t) * 1000 + 1, 5, 200),
                ],
            ))
            .unwrap();
    }
}

#[test]
fn acknowledged_spans_survive_a_restart_from_the_wal() {
    let d = tempfile::tempdir().unwrap();
    {
        let s = BlockStore::open(d.path(), settings(d.path())).unwrap();
        write_traces(&*s, 1, 11);
        // No seal, no upload: a crash now leaves them only in the WAL.
    }
    let s = BlockStore::open(d.path(), settings(d.path())).unwrap();
    assert_eq!(trace_ids(&*s), (1..11).collect::<Vec<_>>());
    assert_eq!(s.trace(&[3; 16]).unwrap().len(), 2);
}

#[test]
fn uploaded_blocks_are_read_by_a_collector_with_an_empty_disk() {
    let d = tempfile::tempdir().unwrap();
    let bucket = d.path().join("bucket");
    {
        let local = d.path().join("node-a");
        let s = BlockStore::open(
            &local,
            BlockSettings {
                location: Location::Local(bucket.clone()),
                ..BlockSettings::default()
            },
        )
        .unwrap();
        write_traces(&*s, 1, 21);
        s.flush().unwrap();
        assert_eq!(
            s.counts(),
            (1, 0, 0),
            "one block, nothing pending, heads empty"
        );
        assert_eq!(
            s.wal_bytes(),
            0,
            "the WAL is released once the block is uploaded"
        );
    }
    let other = d.path().join("node-b");
    let s = BlockStore::open(
        &other,
        BlockSettings {
            location: Location::Local(bucket),
            ..BlockSettings::default()
        },
    )
    .unwrap();
    assert_eq!(trace_ids(&*s), (1..21).collect::<Vec<_>>());
    let t = s.trace(&[7; 16]).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].span.name, "root");
    assert_eq!(
        s.services(&ReadCtl::unbounded()).unwrap(),
        vec!["svc".to_string()]
    );
}

#[test]
fn a_wal_already_in_blocks_is_not_replayed_twice() {
    // A crash after the upload and before the WAL's release: the segments'
    // block is in the backend, and the WAL is not turned into a second one.
    let d = tempfile::tempdir().unwrap();
    let wal_copy = d.path().join("wal-copy");
    {
        let s = BlockStore::open(d.path(), settings(d.path())).unwrap();
        write_traces(&*s, 1, 6);
        copy_dir(&d.path().join("wal"), &wal_copy);
        s.flush().unwrap();
    }
    std::fs::remove_dir_all(d.path().join("wal")).unwrap();
    copy_dir(&wal_copy, &d.path().join("wal"));
    let s = BlockStore::open(d.path(), settings(d.path())).unwrap();
    assert_eq!(s.counts(), (1, 0, 0), "no second block from the old WAL");
    assert_eq!(trace_ids(&*s), (1..6).collect::<Vec<_>>());
}

/// The block directories under `bucket` with their WAL ranges.
fn blocks_with_ranges(bucket: &Path) -> Vec<(PathBuf, WalRange)> {
    let mut out = Vec::new();
    let mut stack = vec![bucket.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "meta.json") {
                let meta: BlockMeta = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                out.push((dir.clone(), meta.wal.unwrap()));
            }
        }
    }
    out
}

#[test]
fn a_seal_uploaded_after_a_later_one_is_replayed_from_the_wal() {
    // A replayed head that could not be cut (a full disk) is kept in memory
    // while later seals are cut and uploaded; killed before its own upload,
    // the backend holds a later range than the WAL's first segments. They are
    // replayed: what the backend holds is counted range by range.
    let d = tempfile::tempdir().unwrap();
    let wal_copy = d.path().join("wal-copy");
    {
        let s = BlockStore::open(d.path(), settings(d.path())).unwrap();
        write_traces(&*s, 1, 6);
        copy_dir(&d.path().join("wal"), &wal_copy);
    }
    {
        // Replays traces 1-5 into a block, then 6-10 go to a later seal.
        let s = BlockStore::open(d.path(), settings(d.path())).unwrap();
        s.flush().unwrap();
        write_traces(&*s, 6, 11);
        s.flush().unwrap();
        assert_eq!(s.wal_bytes(), 0);
    }
    let mut blocks = blocks_with_ranges(&d.path().join("bucket"));
    blocks.sort_by_key(|(_, w)| w.first);
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    let (first, second) = (&blocks[0], &blocks[1]);
    assert!(first.1.last < second.1.first, "{blocks:?}");
    // The earlier seal's block never made it; its segments are still in the WAL.
    std::fs::remove_dir_all(&first.0).unwrap();
    copy_dir(&wal_copy, &d.path().join("wal"));
    let s = BlockStore::open(d.path(), settings(d.path())).unwrap();
    assert_eq!(trace_ids(&*s), (1..11).collect::<Vec<_>>());
    s.flush().unwrap();
    assert_eq!(s.wal_bytes(), 0, "released once uploaded again");
    let counts = s.counts();
    drop(s);
    // And the covered segments are not replayed twice either.
    copy_dir(&wal_copy, &d.path().join("wal"));
    let s = BlockStore::open(d.path(), settings(d.path())).unwrap();
    assert_eq!(s.counts(), counts, "no block made again");
    assert_eq!(trace_ids(&*s), (1..11).collect::<Vec<_>>());
}

#[test]
fn covered_ranges_merge_and_answer_by_segment() {
    let c = Covered::new(
        [
            (5, 7),
            (1, 2),
            (3, 4),
            (10, 12),
            (9, 8),
            (20, 21),
            (22, 30),
            (25, 26),
        ]
        .into_iter(),
    );
    assert_eq!(c.0, vec![(1, 7), (10, 12), (20, 30)]);
    for (seq, held) in [
        (0, false),
        (1, true),
        (4, true),
        (7, true),
        (8, false),
        (9, false),
        (19, false),
        (26, true),
        (30, true),
    ] {
        assert_eq!(c.holds(seq), held, "{seq}");
    }
    assert!(c.holds(12) && !c.holds(13) && !c.holds(u64::MAX));
    assert!(!Covered::new(std::iter::empty()).holds(0));
    let top = Covered::new([(u64::MAX - 1, u64::MAX), (0, u64::MAX - 2)].into_iter());
    assert_eq!(top.0, vec![(0, u64::MAX)]);
}

#[test]
fn a_block_that_cannot_be_written_leaves_no_file() {
    // A volume too small for the block: the write fails midway (a full disk).
    let d = tempfile::tempdir().unwrap();
    let small = d.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&small)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "this test mounts a small tmpfs and needs root: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&small);
    let s = BlockStore::open(d.path(), settings(d.path())).unwrap();
    write_traces(&*s, 1, 2);
    let template: Row = s.head_now().read().unwrap().rows().next().unwrap().clone();
    // Bodies that do not compress: 4,000 rows of 100 pseudo-random bytes.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut rows: Vec<Row> = (0..4000)
        .map(|_| {
            let mut r = template.clone();
            r.trace_id = u128::from(next()).to_be_bytes();
            r.body = Bytes::from((0..100).map(|_| next() as u8).collect::<Vec<u8>>());
            r
        })
        .collect();
    sort_and_dedup(&mut rows);
    let cutter = Cutter {
        pending_dir: small.clone(),
        backend: s.cutter.backend.clone(),
        replica: "local".into(),
        rows_per_group: 1000,
        wal_id: "w".into(),
    };
    let Err(e) = cutter.block(0, &rows, None) else {
        panic!("64 KiB holds 400 KB of random bytes")
    };
    assert!(e.to_string().contains("No space left"), "{e}");
    let left: Vec<_> = std::fs::read_dir(&small).unwrap().collect();
    assert!(left.is_empty(), "a partial block is left: {left:?}");
    // What fits is written and kept.
    let b = cutter.block(0, &rows[..10], None).unwrap();
    assert!(matches!(&b.source, Source::Pending(p, _) if p.exists()));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_full_wal_refuses_writes_retryably() {
    let d = tempfile::tempdir().unwrap();
    let s = BlockStore::open(
        d.path(),
        BlockSettings {
            wal_max_bytes: 2000,
            ..settings(d.path())
        },
    )
    .unwrap();
    let mut refused = None;
    for t in 1..50u8 {
        if let Err(e) = s.write(&records("svc", vec![span(t, 1, 0, "x", BASE_NS, 1, 200)])) {
            refused = Some((t, e));
            break;
        }
    }
    let (t, e) = refused.expect("the WAL's limit refuses writes");
    assert!(matches!(e, StoreError::WalFull { .. }), "{e}");
    assert!(e.to_string().contains("wal.max_bytes"), "{e}");
    // Everything accepted before is readable.
    assert_eq!(trace_ids(&*s).len(), usize::from(t) - 1);
    // Once uploaded, the WAL is released and writes are taken again.
    s.flush().unwrap();
    s.write(&records("svc", vec![span(200, 1, 0, "x", BASE_NS, 1, 200)]))
        .unwrap();
}

#[test]
fn block_files_keep_trace_order_statistics_and_bloom_filters() {
    let d = tempfile::tempdir().unwrap();
    let s = BlockStore::open(
        d.path(),
        BlockSettings {
            rows_per_group: 16,
            ..settings(d.path())
        },
    )
    .unwrap();
    write_traces(&*s, 1, 101);
    s.flush().unwrap();
    let st = s.state.read().unwrap();
    let b = st.blocks.values().next().unwrap();
    assert_eq!(b.meta.spans, 200);
    assert_eq!(b.meta.traces, 100);
    assert_eq!(b.meta.format_version, 2);
    let o = b.opened(&MetaBudget::default()).unwrap();
    assert!(o.has_tags);
    assert!(o.groups.iter().all(|g| g.tags_bloom.is_some()));
    let tag = crate::model::tag_hash("http.response.status_code", "200");
    assert!(o.groups.iter().all(|g| g.may_have_tag(tag)));
    let absent = crate::model::tag_hash("http.response.status_code", "418");
    assert!(
        o.groups.iter().filter(|g| g.may_have_tag(absent)).count() <= 2,
        "bloom filters rule groups out"
    );
    assert_eq!(o.groups.len(), 200 / 16 + 1, "row groups of 16 spans");
    for w in o.groups.windows(2) {
        assert!(w[0].last_trace <= w[1].first_trace, "sorted by trace id");
    }
    assert!(o.groups.iter().all(|g| g.bloom.is_some()));
    let holders = o.groups.iter().filter(|g| g.may_hold(&[50; 16])).count();
    assert!((1..=2).contains(&holders), "one row group to read, not all");
    assert!(!o.groups.iter().any(|g| g.may_hold(&[0xfe; 16])));
}

/// The golden blocks: one written by each format version, kept in the
/// repository, read by every later version. `MESHTRACE_WRITE_GOLDEN=1` writes
/// this version's (only when the format version changes, as a new directory).
#[test]
fn the_golden_v1_block_is_read_by_this_version() {
    golden_block(1);
}

#[test]
fn the_golden_v2_block_is_read_by_this_version() {
    golden_block(2);
}

fn golden_block(version: u32) {
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/block-v{version}"));
    let fixture = || {
        let mut spans = Vec::new();
        for t in 1..=3u8 {
            spans.push(span(
                t,
                1,
                0,
                "GET /golden",
                BASE_NS + u64::from(t) * 1000,
                7_000,
                200,
            ));
            spans.push(span(
                t,
                2,
                1,
                "SELECT",
                BASE_NS + u64::from(t) * 1000 + 10,
                3_000,
                500,
            ));
        }
        records("golden", spans)
    };
    if std::env::var_os("MESHTRACE_WRITE_GOLDEN").is_some() && version == format::FORMAT_VERSION {
        let d = tempfile::tempdir().unwrap();
        let s = BlockStore::open(
            d.path(),
            BlockSettings {
                replica: "golden".into(),
                ..settings(d.path())
            },
        )
        .unwrap();
        s.write(&fixture()).unwrap();
        s.flush().unwrap();
        let meta = s.backend.list("blocks").unwrap();
        std::fs::create_dir_all(&golden).unwrap();
        for (key, _) in meta {
            let name = key.rsplit('/').next().unwrap().to_string();
            let bytes = s.backend.get(&key).unwrap().unwrap();
            std::fs::write(golden.join(name), bytes).unwrap();
        }
    }
    // Placed in a bucket as any block is, and read through the engine.
    let d = tempfile::tempdir().unwrap();
    let meta: BlockMeta =
        serde_json::from_slice(&std::fs::read(golden.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta.format_version, version);
    let dir = d.path().join("bucket").join(meta.dir_key());
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["meta.json", "data.parquet"] {
        std::fs::copy(golden.join(f), dir.join(f)).unwrap();
    }
    let s = BlockStore::open(&d.path().join("node"), settings(d.path())).unwrap();
    assert_eq!(s.counts(), (1, 0, 0));
    let want = fixture();
    for t in 1..=3u8 {
        let got = s.trace(&[t; 16]).unwrap();
        assert_eq!(got.len(), 2, "trace {t}");
        for (g, w) in got
            .iter()
            .zip(want.iter().filter(|r| r.trace_id == [t; 16]))
        {
            assert_eq!(g.span, Span::decode(&w.body[..]).unwrap(), "span whole");
        }
        assert_eq!(
            got[0].origin.resource.attributes[0],
            suite::kv("service.name", "golden")
        );
    }
    let q = TraceQuery {
        service: "golden".into(),
        operation: Some("SELECT".into()),
        start_us: 0,
        end_us: i64::MAX,
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        s.find_trace_ids(&q, &ReadCtl::unbounded()).unwrap().len(),
        3
    );
    assert_eq!(
        s.operations("golden", &ReadCtl::unbounded()).unwrap().len(),
        2
    );
    // Tags: from the bodies (format 1) or the tag column (format 2 on).
    let tagged = |tags: &[(&str, &str)], any: bool| {
        let q = TraceQuery {
            service: "golden".into(),
            start_us: 0,
            end_us: i64::MAX,
            limit: 10,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tags_any: any,
            ..Default::default()
        };
        s.find_trace_ids(&q, &ReadCtl::unbounded()).unwrap().len()
    };
    assert_eq!(tagged(&[("http.response.status_code", "500")], false), 3);
    assert_eq!(tagged(&[("http.response.status_code", "501")], false), 0);
    assert_eq!(
        tagged(
            &[("service.name", "golden"), ("span.kind", "server")],
            false
        ),
        3
    );
    assert_eq!(
        tagged(
            &[("http.response.status_code", "501"), ("key", "k1")],
            false
        ),
        0
    );
    assert_eq!(
        tagged(&[("http.response.status_code", "501"), ("key", "k1")], true),
        3
    );
}

#[test]
fn reads_while_blocks_are_merged_miss_nothing() {
    // Every flush uploads a block and merges it with the last merged one,
    // deleting both: a read whose snapshot predates the merge meets deleted
    // blocks and is read again, never answering without a stored trace.
    let d = tempfile::tempdir().unwrap();
    let s = BlockStore::open(
        d.path(),
        BlockSettings {
            compaction_interval: Duration::ZERO,
            ..settings(d.path())
        },
    )
    .unwrap();
    let flushed = std::sync::atomic::AtomicU8::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reads = 0;
            while !done.load(Ordering::SeqCst) {
                let n = flushed.load(Ordering::SeqCst);
                let found = trace_ids(&*s);
                assert!(
                    (1..=n).all(|t| found.contains(&t)),
                    "search after {n} flushes found {found:?}"
                );
                let ids: Vec<[u8; 16]> = (1..=n).map(|t| [t; 16]).collect();
                let set = s
                    .traces_within(&ids, usize::MAX, &ReadCtl::unbounded())
                    .unwrap();
                assert_eq!(set.traces.len(), ids.len(), "by id after {n} flushes");
                reads += 1;
            }
            reads
        });
        for t in 1..=40u8 {
            write_traces(&*s, t, t + 1);
            s.flush().unwrap();
            flushed.store(t, Ordering::SeqCst);
        }
        done.store(true, Ordering::SeqCst);
        let reads = reader.join().unwrap();
        assert!(reads > 10, "{reads} reads overlapped the merges");
    });
    assert_eq!(s.counts().0, 1, "all merged into one block");
}

#[test]
fn compaction_merges_small_blocks_and_stores_each_span_once() {
    let d = tempfile::tempdir().unwrap();
    let s = BlockStore::open(
        d.path(),
        BlockSettings {
            compaction_interval: Duration::ZERO,
            ..settings(d.path())
        },
    )
    .unwrap();
    // Three blocks; the second batch is sent twice (a retried export), the
    // third holds a Zipkin-style shared span id with another body.
    write_traces(&*s, 1, 11);
    s.flush().unwrap();
    let retried = records("svc", vec![span(50, 1, 0, "root", BASE_NS, 10, 200)]);
    s.write(&retried).unwrap();
    s.flush().unwrap();
    s.write(&retried).unwrap();
    s.write(&records(
        "other",
        vec![span(50, 1, 0, "serve", BASE_NS + 1, 8, 200)],
    ))
    .unwrap();
    // The last flush uploads the third block, then merges all three.
    s.flush().unwrap();
    let st = s.state.read().unwrap();
    assert_eq!(st.blocks.len(), 1, "merged into one block");
    let merged = st.blocks.values().next().unwrap();
    assert_eq!(
        merged.meta.spans,
        10 * 2 + 2,
        "the retried span once, both shared-id spans"
    );
    drop(st);
    assert_eq!(s.trace(&[50; 16]).unwrap().len(), 2);
    assert_eq!(trace_ids(&*s), (1..11).chain([50]).collect::<Vec<_>>());
    // The old blocks are gone from the bucket, index and data.
    let objects = s.backend.list("blocks").unwrap();
    assert_eq!(objects.len(), 2, "{objects:?}");
}

#[test]
fn sealed_heads_that_cannot_be_cut_refuse_writes_within_twice_max_bytes() {
    let d = tempfile::tempdir().unwrap();
    let s = BlockStore::open(
        d.path(),
        BlockSettings {
            max_bytes: 4000,
            // The block thread does not run a round by itself during the test.
            max_age: Duration::from_secs(3600),
            ..settings(d.path())
        },
    )
    .unwrap();
    // Blocks cannot be written: the pending directory is a file.
    let pending = d.path().join("pending");
    std::fs::remove_dir_all(&pending).unwrap();
    std::fs::write(&pending, b"not a directory").unwrap();
    let mut refused = None;
    for t in 1..200u8 {
        match s.write(&records("svc", vec![span(t, 1, 0, "x", BASE_NS, 1, 200)])) {
            Ok(()) => {
                // What the block thread would do: cut sealed heads (it fails here).
                let _ = s.work();
            }
            Err(e) => {
                refused = Some((t, e));
                break;
            }
        }
    }
    let (t, e) = refused.expect("sealed heads waiting for blocks refuse writes");
    assert!(matches!(e, StoreError::HeadFull { .. }), "{e}");
    assert!(e.to_string().contains("store.blocks.max_bytes"), "{e}");
    let head = s.head_now().read().unwrap().bytes;
    let held = s.sealed_bytes() + head;
    assert!(
        held <= 2 * 4000 + 1000,
        "memory within twice max_bytes: {held}"
    );
    assert!(s.health().0.is_err(), "not ready for writes while full");
    // Everything accepted before is readable from memory.
    assert_eq!(trace_ids(&*s).len(), usize::from(t) - 1);
    // The disk is back: the sealed heads become blocks and writes are taken again.
    std::fs::remove_file(&pending).unwrap();
    std::fs::create_dir_all(&pending).unwrap();
    s.work().unwrap();
    assert_eq!(s.sealed_bytes(), 0);
    s.write(&records("svc", vec![span(250, 1, 0, "x", BASE_NS, 1, 200)]))
        .unwrap();
    s.flush().unwrap();
    assert_eq!(trace_ids(&*s).len(), usize::from(t));
}

/// A trace id spread over the id space (`n` from 0 to 65,535).
fn wide_id(n: u16) -> [u8; 16] {
    let mut id = [0x5a; 16];
    id[..2].copy_from_slice(&n.to_be_bytes());
    id
}

#[test]
fn a_lookup_reads_only_the_pages_that_hold_its_trace() {
    let d = tempfile::tempdir().unwrap();
    let s = BlockStore::open(d.path(), settings(d.path())).unwrap();
    // 6,000 traces of two spans: a row group of 8,192 rows has 8 pages.
    let mut spans = Vec::new();
    for n in 0..6000u16 {
        for (k, parent) in [(1u8, 0u8), (2, 1)] {
            let mut sp = span(1, k, parent, "op", BASE_NS + u64::from(n) * 1000, 5, 200);
            sp.trace_id = wide_id(n).to_vec();
            spans.push(sp);
        }
    }
    s.write(&records("svc", spans)).unwrap();
    s.flush().unwrap();
    let block = s
        .state
        .read()
        .unwrap()
        .blocks
        .values()
        .next()
        .unwrap()
        .clone();
    let o = block.opened(&MetaBudget::default()).unwrap();
    assert!(o.groups[0].rows == 8192, "{}", o.groups[0].rows);
    let whole = format::fetched_bytes(&o, 0, &LOOKUP_COLUMNS);
    for n in [0u16, 1, 2047, 2048, 2049, 4095] {
        let id = wide_id(n);
        let gi = o.groups.iter().position(|g| g.may_hold(&id)).unwrap();
        let pages = format::id_pages(&o, gi, &[id]);
        let rows: usize = pages.iter().map(|r| r.len()).sum();
        assert!(
            (1..=2048).contains(&rows),
            "trace {n}: one or two pages, not {rows} rows"
        );
        let part: u64 = format::byte_ranges(&o, gi, &LOOKUP_COLUMNS, Some(&pages))
            .iter()
            .map(|r| r.end - r.start)
            .sum();
        assert!(
            part * 3 < whole,
            "trace {n}: {part} of {whole} bytes fetched"
        );
        let got = s.traces_within(&[id], 100, &ReadCtl::unbounded()).unwrap();
        assert_eq!(got.traces.len(), 1, "trace {n} found");
        assert_eq!(
            got.traces[0].spans.len(),
            2,
            "trace {n} whole, nothing else"
        );
    }
    // Several ids at once, from different pages and groups.
    let ids: Vec<[u8; 16]> = (0..6000u16).step_by(397).map(wide_id).collect();
    let got = s
        .traces_within(&ids, 10_000, &ReadCtl::unbounded())
        .unwrap();
    assert_eq!(got.traces.len(), ids.len());
    assert!(got.traces.iter().all(|t| t.spans.len() == 2));
    // A search reads row groups in waves and finds the newest traces.
    let q = TraceQuery {
        service: "svc".into(),
        start_us: 0,
        end_us: i64::MAX,
        limit: 5,
        ..Default::default()
    };
    let found = s.find_trace_ids(&q, &ReadCtl::unbounded()).unwrap();
    let newest: Vec<[u8; 16]> = (5995..6000u16).rev().map(wide_id).collect();
    assert_eq!(found, newest);
}

#[test]
fn recently_read_blocks_are_cached_on_local_disk_within_cache_bytes() {
    let d = tempfile::tempdir().unwrap();
    const DAY_NS: u64 = 86_400_000_000_000;
    let writer = BlockStore::open(&d.path().join("w"), settings(d.path())).unwrap();
    for t in 1..=6u8 {
        let start = BASE_NS + u64::from(t) * DAY_NS;
        writer
            .write(&records("svc", vec![span(t, 1, 0, "x", start, 1, 200)]))
            .unwrap();
        writer.flush().unwrap();
    }
    let largest = writer
        .state
        .read()
        .unwrap()
        .blocks
        .values()
        .map(|b| b.meta.data_bytes)
        .max()
        .unwrap();
    drop(writer);
    // Another collector on the bucket, with room for four of the six blocks.
    let budget = largest * 4 + largest / 2;
    let s = BlockStore::open(
        &d.path().join("r"),
        BlockSettings {
            cache_bytes: budget,
            ..settings(d.path())
        },
    )
    .unwrap();
    let ctl = ReadCtl::unbounded();
    let id = |t: u8| [t; 16];
    for t in 1..=6u8 {
        let got = s.traces_within(&[id(t)], 10, &ctl).unwrap();
        assert_eq!(got.traces.len(), 1, "trace {t} from the bucket");
    }
    s.work().unwrap();
    s.work().unwrap();
    let cache = s.cache.as_ref().unwrap();
    let (n, bytes) = cache.usage();
    assert!((1..=4).contains(&n), "{n} blocks cached");
    assert!(bytes <= budget, "{bytes} within {budget}");
    // A cached block is read from local disk: gone from the bucket, still found.
    let key = cache.keys().pop().unwrap();
    std::fs::remove_file(d.path().join("bucket").join(&key)).unwrap();
    let day_of_key = s
        .state
        .read()
        .unwrap()
        .blocks
        .values()
        .find(|b| b.data_key() == key)
        .unwrap()
        .meta
        .day;
    let t = (1..=6u8)
        .find(|t| day_of((BASE_NS + u64::from(*t) * DAY_NS) as i64 / 1000) == day_of_key)
        .unwrap();
    let got = s.traces_within(&[id(t)], 10, &ctl).unwrap();
    assert_eq!(got.traces.len(), 1, "trace {t} from the cache");
    // Retention deletes blocks and their cached copies.
    s.apply_retention(i64::MAX).unwrap();
    assert_eq!(cache.usage(), (0, 0));
    assert_eq!(
        std::fs::read_dir(d.path().join("r/cache")).unwrap().count(),
        0
    );
}

#[test]
fn opened_metadata_stays_within_metadata_bytes_and_reads_stay_whole() {
    let d = tempfile::tempdir().unwrap();
    const DAY_NS: u64 = 86_400_000_000_000;
    let writer = BlockStore::open(&d.path().join("w"), settings(d.path())).unwrap();
    for t in 1..=8u8 {
        let start = BASE_NS + u64::from(t) * DAY_NS;
        writer
            .write(&records("svc", vec![span(t, 1, 0, "x", start, 1, 200)]))
            .unwrap();
        writer.flush().unwrap();
    }
    drop(writer);
    let open = |limit: u64| {
        BlockStore::open(
            &d.path().join(format!("r{limit}")),
            BlockSettings {
                metadata_bytes: limit,
                ..settings(d.path())
            },
        )
        .unwrap()
    };
    // The size of one block's metadata, from a store without a limit.
    let big = open(u64::MAX);
    let ctl = ReadCtl::unbounded();
    for t in 1..=8u8 {
        assert_eq!(
            big.traces_within(&[[t; 16]], 10, &ctl)
                .unwrap()
                .traces
                .len(),
            1
        );
    }
    big.trim_metadata();
    let all = big.meta_budget.used.load(Ordering::Relaxed);
    let one = all / 8;
    assert!(one > 1000, "{all} bytes for 8 blocks");
    // Room for about three blocks' metadata: reads of all eight find every trace,
    // and what stays opened is within the limit.
    let limit = one * 3 + one / 2;
    let s = open(limit);
    for round in 0..3 {
        for t in 1..=8u8 {
            let got = s.traces_within(&[[t; 16]], 10, &ctl).unwrap();
            assert_eq!(got.traces.len(), 1, "round {round}, trace {t}");
        }
        assert_eq!(trace_ids(&*s).len(), 8, "a search over every block");
        s.work().unwrap();
        let held: u64 = s
            .state
            .read()
            .unwrap()
            .blocks
            .values()
            .map(|b| b.opened_bytes())
            .sum();
        assert!(held <= limit, "round {round}: {held} > {limit}");
        assert_eq!(held, s.meta_budget.used.load(Ordering::Relaxed));
    }
    // The most recently used stay: trace 8 was read last.
    let st = s.state.read().unwrap();
    let newest = st
        .blocks
        .values()
        .max_by_key(|b| b.last_used.load(Ordering::Relaxed))
        .unwrap();
    assert!(newest.opened_bytes() > 0);
}

/// A block uploaded to a local directory is a hard link to its pending file
/// (same inode, no copy), replacing an earlier upload; a key the object store
/// would encode is copied instead. Both read back whole.
#[test]
fn a_block_uploaded_to_a_local_directory_is_linked_not_copied() {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    let backend = super::backend::Backend::open(&Location::Local(d.path().join("bucket"))).unwrap();
    let pending = d.path().join("p.parquet");
    std::fs::write(&pending, b"first").unwrap();
    backend
        .put_file("blocks/1/a/data.parquet", &pending)
        .unwrap();
    let linked = d.path().join("bucket/blocks/1/a/data.parquet");
    assert_eq!(
        std::fs::metadata(&linked).unwrap().ino(),
        std::fs::metadata(&pending).unwrap().ino()
    );
    // Uploaded again (a retry after a crash): replaced, then the pending file goes.
    let again = d.path().join("q.parquet");
    std::fs::write(&again, b"second").unwrap();
    backend.put_file("blocks/1/a/data.parquet", &again).unwrap();
    std::fs::remove_file(&again).unwrap();
    std::fs::remove_file(&pending).unwrap();
    assert_eq!(
        backend.get("blocks/1/a/data.parquet").unwrap().unwrap(),
        Bytes::from_static(b"second")
    );
    let leftovers: Vec<_> = std::fs::read_dir(linked.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    // A key with a character the object store encodes: copied.
    std::fs::write(&pending, b"third").unwrap();
    backend
        .put_file("blocks/1/b c/data.parquet", &pending)
        .unwrap();
    assert_eq!(
        backend.get("blocks/1/b c/data.parquet").unwrap().unwrap(),
        Bytes::from_static(b"third")
    );
}
