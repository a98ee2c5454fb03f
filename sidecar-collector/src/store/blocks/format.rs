//! A block's Parquet file: one row per span, sorted by trace id (then start),
//! row groups of `rows_per_group` spans, zstd, dictionary-encoded names and
//! origins, a split-block bloom filter and min/max statistics on the trace id
//! (a lookup reads the one row group whose range and filter match), and
//! statistics on service, operation, start and duration for search.
//!
//! Format version 2 adds `tags`: each span's tag hashes
//! ([`crate::model::tag_hash`] of every key = value Jaeger's tag search can
//! match: attributes, event attributes, resource attributes, scope, `error`,
//! `span.kind`), sorted, with a bloom filter per row group. Tag filters are
//! pushed down to it (a row group whose filter lacks a wanted tag is skipped)
//! and rows are matched on it, without decoding span bodies.
//!
//! A reader of a later version reads earlier files as they are (the golden
//! blocks in `tests/golden/block-v1/` and `block-v2/` keep it so); a column
//! added later is optional to the reader (version 1 blocks have no `tags`:
//! their rows' tags come from the bodies).

use super::super::rows::corrupt;
use super::super::StoreError;
use super::Row;
use arrow_array::builder::{
    BinaryBuilder, BinaryDictionaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, Int32Builder,
    Int64Builder, ListBuilder, StringDictionaryBuilder, UInt64Builder,
};
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::bloom_filter::Sbbf;
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::ChunkReader;
use parquet::schema::types::ColumnPath;
use std::borrow::Borrow;
use std::ops::Range;
use std::sync::Arc;

/// The block format this version writes.
pub const FORMAT_VERSION: u32 = 2;

pub const TRACE_ID: usize = 0;
pub const SPAN_ID: usize = 1;
pub const PARENT_SPAN_ID: usize = 2;
pub const SERVICE: usize = 3;
pub const OPERATION: usize = 4;
pub const KIND: usize = 5;
pub const START_US: usize = 6;
pub const DURATION_US: usize = 7;
pub const STATUS_CODE: usize = 8;
pub const ERROR: usize = 9;
pub const ORIGIN: usize = 10;
pub const BODY: usize = 11;
/// Format 2 on.
pub const TAGS: usize = 12;

fn tags_path() -> ColumnPath {
    ColumnPath::new(vec!["tags".into(), "list".into(), "item".into()])
}

fn tag_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::UInt64, false))
}

pub fn schema() -> SchemaRef {
    let dict = |v: DataType| DataType::Dictionary(Box::new(DataType::Int32), Box::new(v));
    Arc::new(Schema::new(vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), false),
        Field::new("span_id", DataType::FixedSizeBinary(8), false),
        Field::new("parent_span_id", DataType::FixedSizeBinary(8), true),
        Field::new("service", dict(DataType::Utf8), false),
        Field::new("operation", dict(DataType::Utf8), false),
        Field::new("kind", DataType::Int32, false),
        Field::new("start_us", DataType::Int64, false),
        Field::new("duration_us", DataType::Int64, false),
        Field::new("status_code", DataType::Int32, false),
        Field::new("error", DataType::Boolean, false),
        Field::new("origin", dict(DataType::Binary), false),
        Field::new("body", DataType::Binary, false),
        Field::new("tags", DataType::List(tag_item()), false),
    ]))
}

fn pq(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("block: {e}"))
}

/// Writes `rows` (sorted by trace id, then start) as a block to `out`; returns
/// it and where the row groups end (bloom filters, page index and footer
/// follow: what opening a block reads, in one request).
pub fn write<W: std::io::Write + Send, R: Borrow<Row>>(
    rows: &[R],
    rows_per_group: usize,
    out: W,
) -> Result<(W, u64), StoreError> {
    let traces = traces(rows.iter().map(|r| r.borrow()));
    let per_group = rows_per_group.max(1);
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).map_err(pq)?))
        .set_max_row_group_row_count(Some(per_group))
        .set_data_page_row_count_limit(1024)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_dictionary_enabled(ColumnPath::from("trace_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("span_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("parent_span_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("body"), false)
        // Nearly every start and duration differs: a dictionary would be tried and dropped.
        .set_column_dictionary_enabled(ColumnPath::from("start_us"), false)
        .set_column_dictionary_enabled(ColumnPath::from("duration_us"), false)
        .set_column_statistics_enabled(ColumnPath::from("body"), EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("origin"), EnabledStatistics::None)
        // Read by nothing (span ids are random, tags are found by their bloom
        // filter): min and max over every value were work for nothing.
        .set_column_statistics_enabled(ColumnPath::from("span_id"), EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("parent_span_id"), EnabledStatistics::None)
        .set_column_statistics_enabled(tags_path(), EnabledStatistics::None)
        .set_bloom_filter_position(parquet::file::properties::BloomFilterPosition::End)
        .set_column_bloom_filter_enabled(ColumnPath::from("trace_id"), true)
        .set_column_bloom_filter_fpp(ColumnPath::from("trace_id"), 0.01)
        .set_column_bloom_filter_max_ndv(
            ColumnPath::from("trace_id"),
            (traces.min(per_group) as u64).max(16),
        )
        .set_column_bloom_filter_enabled(tags_path(), true)
        .set_column_bloom_filter_fpp(tags_path(), 0.01)
        .set_column_bloom_filter_max_ndv(tags_path(), (per_group as u64).clamp(64, 16384))
        .build();
    let mut w = ArrowWriter::try_new(out, schema(), Some(props)).map_err(pq)?;
    for chunk in rows.chunks(per_group.min(8192)) {
        w.write(&batch(chunk)?).map_err(pq)?;
    }
    w.flush().map_err(pq)?;
    let data_end = w
        .flushed_row_groups()
        .iter()
        .flat_map(|rg| rg.columns().iter().map(|c| c.byte_range()))
        .map(|(start, len)| start + len)
        .max()
        .unwrap_or(0);
    Ok((w.into_inner().map_err(pq)?, data_end))
}

/// How many traces `rows` (sorted by trace id) hold.
pub fn traces<'a>(rows: impl Iterator<Item = &'a Row>) -> usize {
    let mut last: Option<&[u8; 16]> = None;
    let mut n = 0;
    for r in rows {
        if last != Some(&r.trace_id) {
            n += 1;
            last = Some(&r.trace_id);
        }
    }
    n
}

fn batch<R: Borrow<Row>>(rows: &[R]) -> Result<RecordBatch, StoreError> {
    let rows = || rows.iter().map(|r| r.borrow());
    let n = rows().count();
    let mut trace = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut span = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut parent = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut service = StringDictionaryBuilder::<Int32Type>::new();
    let mut operation = StringDictionaryBuilder::<Int32Type>::new();
    let mut kind = Int32Builder::with_capacity(n);
    let mut start = Int64Builder::with_capacity(n);
    let mut duration = Int64Builder::with_capacity(n);
    let mut status = Int32Builder::with_capacity(n);
    let mut error = BooleanBuilder::with_capacity(n);
    let mut origin = BinaryDictionaryBuilder::<Int32Type>::new();
    let mut body = BinaryBuilder::with_capacity(n, rows().map(|r| r.body.len()).sum());
    let mut tags = ListBuilder::with_capacity(
        UInt64Builder::with_capacity(rows().map(|r| r.tags.len()).sum()),
        n,
    )
    .with_field(tag_item());
    for r in rows() {
        trace.append_value(r.trace_id).map_err(pq)?;
        span.append_value(r.span_id).map_err(pq)?;
        match r.parent_span_id {
            Some(p) => parent.append_value(p).map_err(pq)?,
            None => parent.append_null(),
        }
        service.append(&*r.service).map_err(pq)?;
        operation.append(&*r.operation).map_err(pq)?;
        kind.append_value(r.kind);
        start.append_value(r.start_us);
        duration.append_value(r.duration_us);
        status.append_value(r.status_code);
        error.append_value(r.error);
        origin.append(&*r.origin).map_err(pq)?;
        body.append_value(&r.body);
        tags.values().append_slice(&r.tags);
        tags.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(trace.finish()),
        Arc::new(span.finish()),
        Arc::new(parent.finish()),
        Arc::new(service.finish()),
        Arc::new(operation.finish()),
        Arc::new(kind.finish()),
        Arc::new(start.finish()),
        Arc::new(duration.finish()),
        Arc::new(status.finish()),
        Arc::new(error.finish()),
        Arc::new(origin.finish()),
        Arc::new(body.finish()),
        Arc::new(tags.finish()),
    ];
    RecordBatch::try_new(schema(), columns).map_err(pq)
}

/// What a reader keeps of an opened block: its Parquet metadata (with the
/// page index), and per row group the trace-id range and bloom filter.
pub struct Opened {
    pub meta: ArrowReaderMetadata,
    pub groups: Vec<Group>,
    /// The block has the `tags` column (format 2 on).
    pub has_tags: bool,
    /// What it holds in memory: the decoded footer and page index, the filters.
    pub bytes: u64,
}

pub struct Group {
    pub rows: usize,
    pub first_trace: [u8; 16],
    pub last_trace: [u8; 16],
    pub bloom: Option<Sbbf>,
    /// Bloom filter of the group's tag hashes (format 2 on).
    pub tags_bloom: Option<Sbbf>,
    /// Start range (µs) of the group's spans, when the statistics say.
    pub start: Option<(i64, i64)>,
}

impl Group {
    /// Whether a span of this group may carry the tag hashed `h` (no filter: yes).
    pub fn may_have_tag(&self, h: u64) -> bool {
        self.tags_bloom.as_ref().is_none_or(|b| b.check(&h))
    }

    /// Whether `id` may be in this group (range, then bloom filter).
    pub fn may_hold(&self, id: &[u8; 16]) -> bool {
        id >= &self.first_trace
            && id <= &self.last_trace
            && self.bloom.as_ref().is_none_or(|b| b.check(&id[..]))
    }
}

/// Reads a block's metadata and trace-id filters: everything from `index_at`
/// (where the row groups end) to the end of the file in one request.
pub fn open<R: Ranges + 'static>(source: R, index_at: Option<u64>) -> Result<Opened, StoreError> {
    let reader = match index_at.filter(|at| *at < source.len()) {
        Some(at) => Prefetched::new(source, std::slice::from_ref(&(at..u64::MAX)))?,
        None => Prefetched::new(source, &[])?,
    };
    let meta = ArrowReaderMetadata::load(
        &reader,
        ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional),
    )
    .map_err(pq)?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(reader, meta.clone());
    let md = meta.metadata().clone();
    let has_tags = meta.schema().field_with_name("tags").is_ok();
    let mut groups = Vec::with_capacity(md.num_row_groups());
    for (i, rg) in md.row_groups().iter().enumerate() {
        let id_of = |b: Option<&[u8]>| -> Result<[u8; 16], StoreError> {
            b.and_then(|b| <[u8; 16]>::try_from(b).ok())
                .ok_or_else(|| pq("a row group has no trace-id statistics"))
        };
        let ids = rg
            .column(TRACE_ID)
            .statistics()
            .ok_or_else(|| pq("a row group has no trace-id statistics"))?;
        let start = rg.column(START_US).statistics().and_then(|s| match s {
            parquet::file::statistics::Statistics::Int64(v) => Some((*v.min_opt()?, *v.max_opt()?)),
            _ => None,
        });
        groups.push(Group {
            rows: rg.num_rows() as usize,
            first_trace: id_of(ids.min_bytes_opt())?,
            last_trace: id_of(ids.max_bytes_opt())?,
            bloom: builder
                .get_row_group_column_bloom_filter(i, TRACE_ID)
                .map_err(pq)?,
            tags_bloom: if has_tags {
                builder
                    .get_row_group_column_bloom_filter(i, TAGS)
                    .map_err(pq)?
            } else {
                None
            },
            start,
        });
    }
    let filters: usize = groups
        .iter()
        .flat_map(|g| [g.bloom.as_ref(), g.tags_bloom.as_ref()])
        .flatten()
        .map(|b| b.num_blocks() * 32)
        .sum();
    let bytes = (md.memory_size()
        + filters
        + groups.capacity() * std::mem::size_of::<Group>()
        + std::mem::size_of::<Opened>()) as u64;
    Ok(Opened {
        meta,
        groups,
        has_tags,
        bytes,
    })
}

/// Reads `columns` of the rows `selection` (row ranges within row group
/// `group`), their column chunks fetched at once (concurrently, from an object
/// store); with a selection and the page index, only the pages it covers.
pub fn read<R: Ranges + 'static>(
    source: R,
    opened: &Opened,
    group: usize,
    columns: &[usize],
    selection: Option<&[Range<usize>]>,
) -> Result<Vec<RecordBatch>, StoreError> {
    let ranges = byte_ranges(opened, group, columns, selection);
    let reader = Prefetched::new(source, &ranges)?;
    decode(reader, opened, group, columns, selection)
}

/// Reads `columns` of whole row groups `groups`: every chunk fetched in one
/// round of concurrent requests, then each group decoded.
pub fn read_groups<R: Ranges + 'static>(
    source: R,
    opened: &Opened,
    groups: &[usize],
    columns: &[usize],
) -> Result<Vec<(usize, Vec<RecordBatch>)>, StoreError> {
    let ranges: Vec<Range<u64>> = groups
        .iter()
        .flat_map(|g| byte_ranges(opened, *g, columns, None))
        .collect();
    let shared = Shared(Arc::new(Prefetched::new(source, &ranges)?));
    groups
        .iter()
        .map(|g| Ok((*g, decode(shared.clone(), opened, *g, columns, None)?)))
        .collect()
}

/// Bytes `read` fetches for these columns and rows.
pub fn fetched_bytes(opened: &Opened, group: usize, columns: &[usize]) -> u64 {
    byte_ranges(opened, group, columns, None)
        .iter()
        .map(|r| r.end - r.start)
        .sum()
}

/// The byte ranges holding `columns` of `group`: whole chunks, or with a
/// selection and an offset index, each chunk's dictionary and the pages
/// holding selected rows.
pub fn byte_ranges(
    opened: &Opened,
    group: usize,
    columns: &[usize],
    selection: Option<&[Range<usize>]>,
) -> Vec<Range<u64>> {
    let md = opened.meta.metadata();
    let Some(rg) = md.row_groups().get(group) else {
        return Vec::new();
    };
    let rows = rg.num_rows().max(0) as u64;
    let pages = md.offset_index().and_then(|o| o.get(group));
    let mut out = Vec::new();
    for c in columns {
        let Some(chunk) = rg.columns().get(*c) else {
            continue;
        };
        let (start, len) = chunk.byte_range();
        let locations = pages.and_then(|p| p.get(*c)).map(|o| o.page_locations());
        let (Some(sel), Some(locs)) = (selection, locations.filter(|l| !l.is_empty())) else {
            out.push(start..start + len);
            continue;
        };
        // The dictionary page precedes the data pages.
        let first = locs[0].offset.max(0) as u64;
        if first > start {
            out.push(start..first);
        }
        for (i, p) in locs.iter().enumerate() {
            let from = p.first_row_index.max(0) as u64;
            let to = locs
                .get(i + 1)
                .map_or(rows, |n| n.first_row_index.max(0) as u64);
            if sel
                .iter()
                .any(|r| (r.start as u64) < to && (r.end as u64) > from)
            {
                let at = p.offset.max(0) as u64;
                out.push(at..at + p.compressed_page_size.max(0) as u64);
            }
        }
    }
    out
}

fn decode<R: ChunkReader + 'static>(
    reader: R,
    opened: &Opened,
    group: usize,
    columns: &[usize],
    selection: Option<&[Range<usize>]>,
) -> Result<Vec<RecordBatch>, StoreError> {
    let rows = opened.groups.get(group).map_or(0, |g| g.rows);
    let mask = ProjectionMask::roots(opened.meta.parquet_schema(), columns.iter().copied());
    let mut b = ParquetRecordBatchReaderBuilder::new_with_metadata(reader, opened.meta.clone())
        .with_row_groups(vec![group])
        .with_projection(mask)
        .with_batch_size(8192);
    if let Some(ranges) = selection {
        b = b.with_row_selection(RowSelection::from_consecutive_ranges(
            ranges.iter().cloned(),
            rows,
        ));
    }
    b.build()
        .map_err(pq)?
        .map(|r| r.map_err(pq))
        .collect::<Result<Vec<_>, _>>()
}

/// Row ranges (within `group`) of the trace-id pages whose min/max may hold
/// one of `ids`, by the page index (the ids are sorted, so usually one page
/// each); the whole group when the block has no page index.
pub fn id_pages(opened: &Opened, group: usize, ids: &[[u8; 16]]) -> Vec<Range<usize>> {
    let rows = opened.groups.get(group).map_or(0, |g| g.rows);
    let md = opened.meta.metadata();
    let index = md
        .column_index()
        .and_then(|c| c.get(group))
        .and_then(|c| c.get(TRACE_ID));
    let locations = md
        .offset_index()
        .and_then(|o| o.get(group))
        .and_then(|o| o.get(TRACE_ID))
        .map(|o| o.page_locations());
    let (Some(ColumnIndexMetaData::FIXED_LEN_BYTE_ARRAY(index)), Some(locs)) = (index, locations)
    else {
        return std::iter::once(0..rows).collect();
    };
    let mut out: Vec<Range<usize>> = Vec::new();
    for (i, p) in locs.iter().enumerate() {
        let (Some(min), Some(max)) = (index.min_value(i), index.max_value(i)) else {
            return std::iter::once(0..rows).collect();
        };
        if ids.iter().any(|id| &id[..] >= min && &id[..] <= max) {
            let from = p.first_row_index.max(0) as usize;
            let to = locs
                .get(i + 1)
                .map_or(rows, |n| n.first_row_index.max(0) as usize);
            match out.last_mut() {
                Some(last) if last.end == from => last.end = to,
                _ => out.push(from..to),
            }
        }
    }
    out
}

/// The column of `batch` at `name`, as `T`.
pub fn col<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, StoreError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| corrupt(format!("block column {name} missing or of another type")))
}

/// What blocks are read from: byte ranges, several at once.
pub trait Ranges: ChunkReader {
    fn ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<bytes::Bytes>, StoreError>;
}

impl Ranges for std::fs::File {
    fn ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<bytes::Bytes>, StoreError> {
        ranges
            .iter()
            .map(|r| {
                self.get_bytes(r.start, (r.end - r.start) as usize)
                    .map_err(pq)
            })
            .collect()
    }
}

/// A reader that serves the byte ranges it fetched up front, and anything
/// else from its source.
pub struct Prefetched<R> {
    source: R,
    parts: Vec<(u64, bytes::Bytes)>,
}

impl<R: Ranges> Prefetched<R> {
    /// Fetches `ranges` (an end past the file means "to its end").
    pub fn new(source: R, ranges: &[Range<u64>]) -> Result<Prefetched<R>, StoreError> {
        let len = source.len();
        let ranges: Vec<Range<u64>> = ranges
            .iter()
            .map(|r| r.start.min(len)..r.end.min(len))
            .filter(|r| r.start < r.end)
            .collect();
        let parts = if ranges.is_empty() {
            Vec::new()
        } else {
            ranges
                .iter()
                .map(|r| r.start)
                .zip(source.ranges(&ranges)?)
                .collect()
        };
        Ok(Prefetched { source, parts })
    }
}

/// A `Prefetched` several readers share (one per row group decoded).
pub struct Shared<R>(Arc<Prefetched<R>>);

impl<R> Clone for Shared<R> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<R: ChunkReader> parquet::file::reader::Length for Shared<R> {
    fn len(&self) -> u64 {
        parquet::file::reader::Length::len(&*self.0)
    }
}

impl<R: ChunkReader> ChunkReader for Shared<R> {
    type T = bytes::buf::Reader<bytes::Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        self.0.get_read(start)
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        self.0.get_bytes(start, length)
    }
}

impl<R: ChunkReader> parquet::file::reader::Length for Prefetched<R> {
    fn len(&self) -> u64 {
        self.source.len()
    }
}

impl<R: ChunkReader> ChunkReader for Prefetched<R> {
    type T = bytes::buf::Reader<bytes::Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        let len = self.source.len().saturating_sub(start) as usize;
        Ok(self.get_bytes(start, len)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        let end = start.saturating_add(length as u64);
        for (at, b) in &self.parts {
            if start >= *at && end <= at + b.len() as u64 {
                let from = (start - at) as usize;
                return Ok(b.slice(from..from + length));
            }
        }
        self.source.get_bytes(start, length)
    }
}

/// The `tags` column of a batch: each row's sorted tag hashes.
pub struct TagLists<'a> {
    offsets: &'a [i32],
    values: &'a [u64],
}

impl TagLists<'_> {
    /// Row `i`'s tag hashes (none if out of range).
    pub fn of(&self, i: usize) -> &[u64] {
        let (Some(from), Some(to)) = (self.offsets.get(i), self.offsets.get(i + 1)) else {
            return &[];
        };
        self.values
            .get(*from as usize..*to as usize)
            .unwrap_or_default()
    }
}

/// The `tags` column of `batch`.
pub fn tag_lists(batch: &RecordBatch) -> Result<TagLists<'_>, StoreError> {
    use arrow_array::cast::AsArray;
    let list = batch
        .column_by_name("tags")
        .and_then(|c| c.as_list_opt::<i32>())
        .ok_or_else(|| corrupt("block column tags missing"))?;
    let values = list
        .values()
        .as_primitive_opt::<arrow_array::types::UInt64Type>()
        .ok_or_else(|| corrupt("block column tags values"))?;
    Ok(TagLists {
        offsets: list.value_offsets(),
        values: values.values(),
    })
}

/// Every column of `opened`, in schema order.
pub fn all(opened: &Opened) -> Vec<usize> {
    let mut v = V1.to_vec();
    if opened.has_tags {
        v.push(TAGS);
    }
    v
}

/// The columns of format 1, in schema order.
const V1: [usize; 12] = [
    TRACE_ID,
    SPAN_ID,
    PARENT_SPAN_ID,
    SERVICE,
    OPERATION,
    KIND,
    START_US,
    DURATION_US,
    STATUS_CODE,
    ERROR,
    ORIGIN,
    BODY,
];

/// The rows of a batch read with every column ([`all`]).
pub fn rows(batch: &RecordBatch, names: &mut super::Names) -> Result<Vec<Row>, StoreError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type as I32, Int64Type as I64};
    let fixed = |name: &str| col::<arrow_array::FixedSizeBinaryArray>(batch, name);
    let (ids, spans, parents) = (
        fixed("trace_id")?,
        fixed("span_id")?,
        fixed("parent_span_id")?,
    );
    let dict = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_dictionary_opt::<I32>())
            .ok_or_else(|| corrupt(format!("block column {name} is not a dictionary")))
    };
    let (service, operation, origin) = (dict("service")?, dict("operation")?, dict("origin")?);
    let text = |d: &arrow_array::DictionaryArray<I32>, name: &str| {
        d.values()
            .as_string_opt::<i32>()
            .cloned()
            .ok_or_else(|| corrupt(format!("block column {name} values")))
    };
    let (services, operations) = (text(service, "service")?, text(operation, "operation")?);
    let origins = origin
        .values()
        .as_binary_opt::<i32>()
        .ok_or_else(|| corrupt("block column origin values"))?;
    let origin_values: Vec<Arc<[u8]>> = (0..origins.len())
        .map(|i| Arc::from(origins.value(i)))
        .collect();
    let int32 = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_primitive_opt::<I32>())
            .ok_or_else(|| corrupt(format!("block column {name}")))
    };
    let int64 = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_primitive_opt::<I64>())
            .ok_or_else(|| corrupt(format!("block column {name}")))
    };
    let (kind, status) = (int32("kind")?, int32("status_code")?);
    let (start, duration) = (int64("start_us")?, int64("duration_us")?);
    let error = col::<arrow_array::BooleanArray>(batch, "error")?;
    let body = col::<arrow_array::BinaryArray>(batch, "body")?;
    let key = |d: &arrow_array::DictionaryArray<I32>, i: usize| d.keys().value(i) as usize;
    let tags = if batch.column_by_name("tags").is_some() {
        Some(tag_lists(batch)?)
    } else {
        None
    };
    (0..batch.num_rows())
        .map(|i| {
            let bad = |what: &str| corrupt(format!("block row {i}: {what}"));
            Ok(Row {
                trace_id: ids.value(i).try_into().map_err(|_| bad("trace_id"))?,
                span_id: spans.value(i).try_into().map_err(|_| bad("span_id"))?,
                parent_span_id: if parents.is_null(i) {
                    None
                } else {
                    Some(
                        parents
                            .value(i)
                            .try_into()
                            .map_err(|_| bad("parent_span_id"))?,
                    )
                },
                service: names.get(services.value(key(service, i))),
                operation: names.get(operations.value(key(operation, i))),
                kind: kind.value(i),
                start_us: start.value(i),
                duration_us: duration.value(i),
                error: error.value(i),
                status_code: status.value(i),
                origin: origin_values
                    .get(key(origin, i))
                    .cloned()
                    .ok_or_else(|| bad("origin"))?,
                body: bytes::Bytes::copy_from_slice(body.value(i)),
                tags: Arc::from(tags.as_ref().map_or(&[][..], |t| t.of(i))),
            }
            .with_tags())
        })
        .collect()
}
