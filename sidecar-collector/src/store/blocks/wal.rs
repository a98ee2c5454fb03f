//! The write-ahead log: every accepted batch is appended to the current
//! segment as one frame (length, CRC-32 of the payload, payload) and, with
//! `Durability::Fsync`, synced before `write` returns — the group commit that
//! acknowledges its senders. A segment is released (deleted) only once every
//! span in it is in a block the backend holds.
//!
//! Replay reads the segments in order; a frame cut short or failing its
//! checksum ends its segment (a crash mid-append), and what follows it in that
//! segment is dropped with a log line: everything before it was acknowledged,
//! nothing after it was.

use super::super::rows::{corrupt, io};
use super::super::sqlite::Durability;
use super::super::StoreError;
use super::Row;
use prost::Message;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A frame's header: payload length and its CRC-32.
const HEADER: usize = 8;
/// The largest frame replay accepts (a corrupt length must not allocate gigabytes).
const MAX_FRAME: u32 = 1 << 30;

#[derive(Clone, PartialEq, prost::Message)]
struct WalBatch {
    /// The distinct origins of the batch; spans point into it.
    #[prost(bytes = "vec", repeated, tag = "1")]
    origins: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "2")]
    spans: Vec<WalSpan>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WalSpan {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    parent_span_id: Vec<u8>,
    #[prost(string, tag = "4")]
    service: String,
    #[prost(string, tag = "5")]
    operation: String,
    #[prost(int32, tag = "6")]
    kind: i32,
    #[prost(int64, tag = "7")]
    start_us: i64,
    #[prost(int64, tag = "8")]
    duration_us: i64,
    #[prost(bool, tag = "9")]
    error: bool,
    #[prost(int32, tag = "10")]
    status_code: i32,
    #[prost(uint32, tag = "11")]
    origin: u32,
    #[prost(bytes = "vec", tag = "12")]
    body: Vec<u8>,
    /// The span's tag hashes (packed; absent in frames written before them).
    #[prost(fixed64, repeated, tag = "13")]
    tags: Vec<u64>,
}

/// Encodes rows as one frame payload (also what a replica answers its
/// peers): a `WalBatch`, written field by field straight from the rows (no
/// message built per span: the copies and allocations cost more than the
/// write itself). `decode` reads it with the derived message.
pub(super) fn encode(rows: &[Row]) -> Vec<u8> {
    use prost::encoding::{encode_varint, encoded_len_varint};
    fn len_bytes(tag: u32, b: &[u8]) -> usize {
        if b.is_empty() {
            0
        } else {
            encoded_len_varint(u64::from(tag << 3 | 2))
                + encoded_len_varint(b.len() as u64)
                + b.len()
        }
    }
    fn len_varint(tag: u32, v: u64) -> usize {
        if v == 0 {
            0
        } else {
            encoded_len_varint(u64::from(tag << 3)) + encoded_len_varint(v)
        }
    }
    fn len_packed(tag: u32, v: &[u64]) -> usize {
        if v.is_empty() {
            0
        } else {
            encoded_len_varint(u64::from(tag << 3 | 2))
                + encoded_len_varint(v.len() as u64 * 8)
                + v.len() * 8
        }
    }
    fn put_bytes(buf: &mut Vec<u8>, tag: u32, b: &[u8]) {
        if !b.is_empty() {
            encode_varint(u64::from(tag << 3 | 2), buf);
            encode_varint(b.len() as u64, buf);
            buf.extend_from_slice(b);
        }
    }
    fn put_varint(buf: &mut Vec<u8>, tag: u32, v: u64) {
        if v != 0 {
            encode_varint(u64::from(tag << 3), buf);
            encode_varint(v, buf);
        }
    }
    let mut origins: Vec<&[u8]> = Vec::new();
    let mut index: std::collections::HashMap<*const u8, u32> = Default::default();
    let origin_of: Vec<u32> = rows
        .iter()
        .map(|r| {
            *index.entry(r.origin.as_ptr()).or_insert_with(|| {
                origins.push(&r.origin);
                (origins.len() - 1) as u32
            })
        })
        .collect();
    let total: usize = rows
        .iter()
        .map(|r| r.body.len() + r.origin.len() / 8 + r.tags.len() * 8 + 100)
        .sum();
    let mut buf = Vec::with_capacity(total + origins.iter().map(|o| o.len() + 4).sum::<usize>());
    for o in &origins {
        encode_varint(u64::from(1u32 << 3 | 2), &mut buf);
        encode_varint(o.len() as u64, &mut buf);
        buf.extend_from_slice(o);
    }
    for (r, o) in rows.iter().zip(origin_of) {
        let parent = r.parent_span_id.as_ref().map_or(&[][..], |p| &p[..]);
        let fields = [
            (6, r.kind as u64),
            (7, r.start_us as u64),
            (8, r.duration_us as u64),
            (9, u64::from(r.error)),
            (10, r.status_code as u64),
            (11, u64::from(o)),
        ];
        let len = len_bytes(1, &r.trace_id)
            + len_bytes(2, &r.span_id)
            + len_bytes(3, parent)
            + len_bytes(4, r.service.as_bytes())
            + len_bytes(5, r.operation.as_bytes())
            + fields
                .iter()
                .map(|(t, v)| len_varint(*t, *v))
                .sum::<usize>()
            + len_bytes(12, &r.body)
            + len_packed(13, &r.tags);
        encode_varint(u64::from(2u32 << 3 | 2), &mut buf);
        encode_varint(len as u64, &mut buf);
        put_bytes(&mut buf, 1, &r.trace_id);
        put_bytes(&mut buf, 2, &r.span_id);
        put_bytes(&mut buf, 3, parent);
        put_bytes(&mut buf, 4, r.service.as_bytes());
        put_bytes(&mut buf, 5, r.operation.as_bytes());
        for (t, v) in fields {
            put_varint(&mut buf, t, v);
        }
        put_bytes(&mut buf, 12, &r.body);
        if !r.tags.is_empty() {
            encode_varint(u64::from(13u32 << 3 | 2), &mut buf);
            encode_varint(r.tags.len() as u64 * 8, &mut buf);
            for t in r.tags.iter() {
                buf.extend_from_slice(&t.to_le_bytes());
            }
        }
    }
    buf
}

pub(super) fn decode(payload: &[u8]) -> Result<Vec<Row>, StoreError> {
    let batch = WalBatch::decode(payload).map_err(corrupt)?;
    let origins: Vec<Arc<[u8]>> = batch.origins.into_iter().map(Arc::from).collect();
    let mut names = super::Names::default();
    batch
        .spans
        .into_iter()
        .map(|s| {
            let bad = |what: &str| StoreError::Corrupt(format!("WAL span: {what}"));
            Ok(Row {
                trace_id: s.trace_id.try_into().map_err(|_| bad("trace_id"))?,
                span_id: s.span_id.try_into().map_err(|_| bad("span_id"))?,
                parent_span_id: match s.parent_span_id.len() {
                    0 => None,
                    _ => Some(
                        s.parent_span_id
                            .try_into()
                            .map_err(|_| bad("parent_span_id"))?,
                    ),
                },
                service: names.get(&s.service),
                operation: names.get(&s.operation),
                kind: s.kind,
                start_us: s.start_us,
                duration_us: s.duration_us,
                error: s.error,
                status_code: s.status_code,
                origin: origins
                    .get(s.origin as usize)
                    .cloned()
                    .ok_or_else(|| bad("origin"))?,
                body: s.body.into(),
                tags: s.tags.into(),
            }
            .with_tags())
        })
        .collect()
}

/// The log: numbered segment files in one directory.
pub struct Wal {
    dir: PathBuf,
    durability: Durability,
    /// The segment appended to, and its number.
    file: File,
    seq: u64,
    /// Bytes of every segment not yet released, by number.
    sizes: std::collections::BTreeMap<u64, u64>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.wal"))
}

fn list(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let e = e.map_err(|e| io(dir, e))?;
        let name = e.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(seq);
    }
    out.sort_unstable();
    Ok(out)
}

/// One segment's frames as read back.
pub struct Replayed {
    pub seq: u64,
    pub batches: Vec<Vec<Row>>,
}

impl Wal {
    /// Opens the log in `dir`, handing each existing segment's batches to
    /// `replay` in order (oldest first), then starts a new segment.
    pub fn open(
        dir: &Path,
        durability: Durability,
        mut replay: impl FnMut(Replayed) -> Result<(), StoreError>,
    ) -> Result<Wal, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut sizes = std::collections::BTreeMap::new();
        let mut last = 0;
        for seq in list(dir)? {
            let path = segment_path(dir, seq);
            let (batches, good) = read_segment(&path)?;
            let len = std::fs::metadata(&path).map_err(|e| io(&path, e))?.len();
            if good < len {
                tracing::warn!(segment = %path.display(), kept_bytes = good, dropped_bytes = len - good,
                    "WAL segment ends in a torn or corrupt frame (a crash while appending): kept what precedes it");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io(&path, e))?;
                f.set_len(good).map_err(|e| io(&path, e))?;
                f.sync_all().map_err(|e| io(&path, e))?;
            }
            sizes.insert(seq, good);
            last = seq;
            replay(Replayed { seq, batches })?;
        }
        let seq = last + 1;
        let file = create_segment(dir, seq)?;
        sizes.insert(seq, 0);
        Ok(Wal {
            dir: dir.to_path_buf(),
            durability,
            file,
            seq,
            sizes,
        })
    }

    /// The segment being appended to.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Bytes held by segments not yet released.
    pub fn bytes(&self) -> u64 {
        self.sizes.values().sum()
    }

    /// Appends `rows` as one frame; synced before it returns with `Durability::Fsync`.
    pub fn append(&mut self, rows: &[Row]) -> Result<(), StoreError> {
        let payload = encode(rows);
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        let path = segment_path(&self.dir, self.seq);
        let written = self
            .file
            .write_all(&header)
            .and_then(|()| self.file.write_all(&payload));
        if let Err(e) = written {
            // Whatever part was written is a torn frame: cut it off so later
            // frames stay readable (replay stops at the first bad frame).
            let at = self.sizes.get(&self.seq).copied().unwrap_or(0);
            let _ = self.file.set_len(at);
            return Err(io(&path, e));
        }
        if self.durability == Durability::Fsync {
            self.file.sync_data().map_err(|e| io(&path, e))?;
        }
        *self.sizes.entry(self.seq).or_default() += (HEADER + payload.len()) as u64;
        Ok(())
    }

    /// Starts a new segment; returns its number.
    pub fn roll(&mut self) -> Result<u64, StoreError> {
        let next = self.seq + 1;
        self.file = create_segment(&self.dir, next)?;
        self.seq = next;
        self.sizes.insert(next, 0);
        Ok(next)
    }

    /// Deletes every segment numbered below `seq` (their spans are in the backend).
    pub fn release_below(&mut self, seq: u64) -> Result<usize, StoreError> {
        let old: Vec<u64> = self
            .sizes
            .range(..seq.min(self.seq))
            .map(|(s, _)| *s)
            .collect();
        for s in &old {
            let path = segment_path(&self.dir, *s);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path, e)),
            }
            self.sizes.remove(s);
        }
        Ok(old.len())
    }
}

fn create_segment(dir: &Path, seq: u64) -> Result<File, StoreError> {
    let path = segment_path(dir, seq);
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io(&path, e))?;
    // The new name is durable before anything in it is acknowledged.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))?;
    Ok(f)
}

/// The batches of a segment, and how many of its bytes hold whole, valid frames.
fn read_segment(path: &Path) -> Result<(Vec<Vec<Row>>, u64), StoreError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| io(path, e))?;
    let mut at = 0usize;
    let mut batches = Vec::new();
    while data.len() - at >= HEADER {
        let len = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let crc = u32::from_le_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
        let start = at + HEADER;
        if len > MAX_FRAME || data.len() - start < len as usize {
            break;
        }
        let payload = &data[start..start + len as usize];
        if crc32fast::hash(payload) != crc {
            break;
        }
        match decode(payload) {
            Ok(rows) => batches.push(rows),
            Err(e) => {
                tracing::warn!(segment = %path.display(), error = %e, "WAL frame cannot be decoded");
                break;
            }
        }
        at = start + len as usize;
    }
    Ok((batches, at as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: u8) -> Row {
        Row {
            trace_id: [t; 16],
            span_id: [t; 8],
            parent_span_id: None,
            service: "s".into(),
            operation: "op".into(),
            kind: 2,
            start_us: 1,
            duration_us: 2,
            error: false,
            status_code: 0,
            origin: Arc::from(&b"origin"[..]),
            body: vec![t; 40].into(),
            tags: Arc::from(vec![u64::from(t), 1 << 63]),
        }
    }

    fn replay_all(dir: &Path) -> (Wal, Vec<(u64, usize)>) {
        let mut seen = Vec::new();
        let wal = Wal::open(dir, Durability::Fsync, |r| {
            seen.push((r.seq, r.batches.iter().map(Vec::len).sum()));
            Ok(())
        })
        .unwrap();
        (wal, seen)
    }

    #[test]
    fn the_hand_written_encoding_is_the_messages_encoding() {
        let mut rows = vec![row(1), row(2)];
        rows[1].parent_span_id = Some([9; 8]);
        rows[1].kind = 3;
        rows[1].start_us = -5;
        rows[1].error = true;
        rows[1].status_code = 2;
        rows[1].origin = Arc::from(&b"other origin"[..]);
        let derived = WalBatch {
            origins: vec![b"origin".to_vec(), b"other origin".to_vec()],
            spans: rows
                .iter()
                .enumerate()
                .map(|(i, r)| WalSpan {
                    trace_id: r.trace_id.to_vec(),
                    span_id: r.span_id.to_vec(),
                    parent_span_id: r.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
                    service: r.service.to_string(),
                    operation: r.operation.to_string(),
                    kind: r.kind,
                    start_us: r.start_us,
                    duration_us: r.duration_us,
                    error: r.error,
                    status_code: r.status_code,
                    origin: i as u32,
                    body: r.body.to_vec(),
                    tags: r.tags.to_vec(),
                })
                .collect(),
        };
        assert_eq!(encode(&rows), derived.encode_to_vec());
        let back = decode(&encode(&rows)).unwrap();
        assert_eq!(back[1].start_us, -5);
        assert_eq!(back[1].parent_span_id, Some([9; 8]));
        assert_eq!(&*back[1].origin, b"other origin");
    }

    #[test]
    fn frames_replay_in_order_and_a_torn_tail_is_cut() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut wal, seen) = replay_all(d.path());
            assert!(seen.is_empty());
            wal.append(&[row(1), row(2)]).unwrap();
            wal.roll().unwrap();
            wal.append(&[row(3)]).unwrap();
            wal.append(&[row(4)]).unwrap();
        }
        // A crash mid-append: half a frame at the end of segment 2.
        let seg = segment_path(d.path(), 2);
        let len = std::fs::metadata(&seg).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (wal, seen) = replay_all(d.path());
        assert_eq!(
            seen,
            vec![(1, 2), (2, 2)],
            "every acknowledged frame, in order"
        );
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            len,
            "torn tail cut off"
        );
        assert_eq!(wal.seq(), 3, "appends go to a new segment");
    }

    #[test]
    fn a_corrupt_frame_ends_its_segment() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = replay_all(d.path());
            wal.append(&[row(1)]).unwrap();
            wal.append(&[row(2)]).unwrap();
        }
        let seg = segment_path(d.path(), 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let (_, seen) = replay_all(d.path());
        assert_eq!(seen, vec![(1, 1)], "the frame before the corrupt one");
    }

    #[test]
    fn released_segments_are_deleted() {
        let d = tempfile::tempdir().unwrap();
        let (mut wal, _) = replay_all(d.path());
        wal.append(&[row(1)]).unwrap();
        let before = wal.bytes();
        assert!(before > 0);
        let next = wal.roll().unwrap();
        wal.append(&[row(2)]).unwrap();
        assert_eq!(wal.release_below(next).unwrap(), 1);
        assert!(wal.bytes() < before + 10);
        assert!(!segment_path(d.path(), 1).exists());
        assert!(segment_path(d.path(), next).exists());
        let (_, seen) = replay_all(d.path());
        assert_eq!(seen, vec![(2, 1)]);
    }
}
