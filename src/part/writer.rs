//! Writes one immutable part from rows arriving sorted by the table's key,
//! in batches of any size.
//!
//! Rows are cut into granules as they arrive; each granule is encoded at
//! once, column by column, and handed to the component builders (the two
//! side by side, the columns on tokio's blocking pool, when the part has
//! builders), so the writer holds about one granule of rows and one write
//! buffer per column, whatever the size of the part. A writer whose write
//! failed is not used again. A part stays compact (one data file,
//! kept in memory until the end) while its rows take fewer bytes than
//! `min_bytes_for_wide_part`; past that its columns stream to files of
//! their own. Column files are written first, components next, the index
//! file last; none of them is visible to readers until the table commits
//! the part to its log.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, SchemaRef};
use bytes::Bytes;

use super::column;
use super::component::{BuiltComponent, ComponentBuilder, ComponentMeta};
use super::index::{self, ColumnMeta, INDEX_FILE, PartIndex, PartMeta};
use super::stats;
use crate::encoding::envelope::{self, ENVELOPE_HEADER_LEN, FileKind};
use crate::encoding::{CodecChain, encode_block};
use crate::error::{Error, Result};
use crate::storage::{FileWriter, Storage};

/// How to lay out a part: the table options that matter to the writer.
#[derive(Debug, Clone)]
pub struct PartLayout {
    /// Rows per granule, at most.
    pub granularity: usize,
    /// Uncompressed bytes per granule, at most (a granule has at least one
    /// row): wide strings make granules of fewer rows, not huge ones.
    pub granularity_bytes: usize,
    /// Parts whose rows take fewer bytes (in memory) than this are written
    /// compact: all columns in one data file.
    pub min_bytes_for_wide_part: usize,
    /// Positions of the sort-key columns in the batch schema.
    pub key: Vec<usize>,
    /// Codec of each column, by position.
    pub codecs: Vec<CodecChain>,
    /// Stable id of each column, by position (see `conform`); positions
    /// when empty.
    pub column_ids: Vec<u32>,
}

/// Directory of a part inside the table.
pub fn part_dir(name: &str) -> String {
    format!("parts/{name}")
}

/// A fresh, unique part name.
pub fn new_part_name() -> String {
    format!("p_{}", uuid::Uuid::new_v4().simple())
}

/// The data file of a compact part.
pub const COMPACT_FILE: &str = "data.bin";

/// A wide part's column files are handed to storage in pieces this large.
const COLUMN_WRITE_BYTES: usize = 1 << 20;

/// One column's encoded blocks and the statistics the index records.
struct ColumnSink {
    /// Blocks not yet handed to `file` (every block while the part may
    /// still be compact).
    buffer: Vec<u8>,
    /// The column's own file, once the part is wide.
    file: Option<Box<dyn FileWriter>>,
    /// CRC of the file so far (header included), for its footer.
    crc: crc32fast::Hasher,
    /// Bytes of blocks so far.
    len: u64,
    /// Offset of each granule's block, relative to the first block.
    marks: Vec<u64>,
    mins: Vec<ArrayRef>,
    maxs: Vec<ArrayRef>,
    nulls: Vec<u32>,
    uncompressed: u64,
}

impl ColumnSink {
    fn new() -> Self {
        ColumnSink {
            buffer: Vec::new(),
            file: None,
            crc: crc32fast::Hasher::new(),
            len: 0,
            marks: Vec::new(),
            mins: Vec::new(),
            maxs: Vec::new(),
            nulls: Vec::new(),
            uncompressed: 0,
        }
    }

    /// Hands what is buffered to the column's file, if it has one.
    async fn drain(&mut self) -> Result<()> {
        if let Some(file) = &mut self.file
            && !self.buffer.is_empty()
        {
            file.write(Bytes::from(std::mem::take(&mut self.buffer)))
                .await?;
        }
        Ok(())
    }
}

/// A part being written.
pub struct PartWriter {
    storage: Storage,
    name: String,
    layout: PartLayout,
    level: u32,
    schema: SchemaRef,
    builders: Vec<Box<dyn ComponentBuilder>>,
    /// Components built elsewhere, written after the builders'.
    built: Vec<BuiltComponent>,
    /// Rows not yet cut into a granule, in order.
    pending: Vec<RecordBatch>,
    /// Rows and counted bytes of `pending`.
    pending_rows: usize,
    pending_bytes: usize,
    columns: Vec<ColumnSink>,
    /// Rows of each granule written.
    granule_rows: Vec<u32>,
    /// First value of each key column in each granule (the primary index).
    first_keys: Vec<Vec<ArrayRef>>,
    rows: u64,
    /// Bytes the rows took in memory: whether the part is compact.
    memory_bytes: usize,
    wide: bool,
    /// Whether a granule's encoding failed or was cancelled midway: the
    /// sinks and builders no longer agree, and the writer is not used again.
    broken: bool,
    /// Scratch space for one granule's block payload.
    payload: Vec<u8>,
}

impl PartWriter {
    /// A writer of the new part `name` (from [`new_part_name`]) with rows of
    /// `schema`, building `builders`' components beside the columns.
    pub fn new(
        storage: &Storage,
        name: &str,
        schema: SchemaRef,
        layout: PartLayout,
        level: u32,
        builders: Vec<Box<dyn ComponentBuilder>>,
    ) -> Self {
        let columns = schema.fields().iter().map(|_| ColumnSink::new()).collect();
        let first_keys = layout.key.iter().map(|_| Vec::new()).collect();
        PartWriter {
            storage: storage.clone(),
            name: name.to_string(),
            layout,
            level,
            schema,
            builders,
            built: Vec::new(),
            pending: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
            columns,
            granule_rows: Vec::new(),
            first_keys,
            rows: 0,
            memory_bytes: 0,
            wide: false,
            broken: false,
            payload: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The memory the component builders hold (see
    /// [`ComponentBuilder::memory_bytes`]); rows not yet cut into a granule
    /// have not reached them.
    pub fn component_memory(&self) -> usize {
        self.builders.iter().map(|b| b.memory_bytes()).sum()
    }

    /// Adds a component built elsewhere (a merge remaps its inputs'),
    /// written with the builders' at [`Self::finish`].
    pub fn add_component(&mut self, component: BuiltComponent) {
        self.built.push(component);
    }

    fn dir(&self) -> String {
        part_dir(&self.name)
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows + self.pending_rows as u64
    }

    /// Appends rows, which must sort at or after every row written before.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.check_usable()?;
        let granularity = self.layout.granularity.max(1);
        let max_bytes = self.layout.granularity_bytes.max(1);
        let sizes = row_bytes(batch);
        let mut start = 0;
        for (row, &size) in sizes.iter().enumerate() {
            let count = self.pending_rows + (row - start);
            if count > 0 && (count == granularity || self.pending_bytes + size > max_bytes) {
                if row > start {
                    self.pending.push(batch.slice(start, row - start));
                    self.pending_rows += row - start;
                    start = row;
                }
                self.cut_granule().await?;
            }
            self.pending_bytes += size;
        }
        if start < batch.num_rows() {
            self.pending
                .push(batch.slice(start, batch.num_rows() - start));
            self.pending_rows += batch.num_rows() - start;
        }
        Ok(())
    }

    /// An error once a granule's encoding failed or was cancelled midway.
    fn check_usable(&self) -> Result<()> {
        match self.broken {
            true => Err(Error::Table(format!(
                "part '{}': an earlier write failed or was cancelled while encoding a granule",
                self.name
            ))),
            false => Ok(()),
        }
    }

    /// Encodes the pending rows as the next granule.
    async fn cut_granule(&mut self) -> Result<()> {
        let granule = match self.pending.len() {
            0 => return Ok(()),
            1 => self.pending.pop().expect("one batch"),
            _ => {
                let granule = concat_batches(&self.schema, &self.pending)?;
                self.pending.clear();
                granule
            }
        };
        self.pending_rows = 0;
        self.pending_bytes = 0;
        self.encode_granule(&granule).await?;
        self.memory_bytes += sliced_bytes(&granule);
        if !self.wide && self.memory_bytes >= self.layout.min_bytes_for_wide_part {
            self.go_wide().await?;
        }
        if self.wide {
            for column in &mut self.columns {
                if column.buffer.len() >= COLUMN_WRITE_BYTES {
                    column.drain().await?;
                }
            }
        }
        Ok(())
    }

    /// Encodes `granule`'s columns and hands it to the component builders.
    /// With builders, the columns are encoded meanwhile on tokio's
    /// blocking pool: a text index takes longer over a granule than its
    /// columns' compression does, so on two cores the one hides the other.
    async fn encode_granule(&mut self, granule: &RecordBatch) -> Result<()> {
        let first_row = self.rows;
        let overlap = !self.builders.is_empty() && tokio::runtime::Handle::try_current().is_ok();
        // Broken until the granule is in every sink and builder: a failure
        // (or a cancellation while the sinks are away) leaves some of them
        // a granule ahead of the others.
        self.broken = true;
        if overlap {
            let mut sinks = std::mem::take(&mut self.columns);
            let mut payload = std::mem::take(&mut self.payload);
            let codecs = self.layout.codecs.clone();
            let rows = granule.clone();
            let encoding = tokio::task::spawn_blocking(move || {
                let encoded = encode_columns(&rows, &codecs, &mut sinks, &mut payload);
                (sinks, payload, encoded)
            });
            let built = self.build_components(first_row, granule);
            let (sinks, payload, encoded) = encoding.await.map_err(|e| {
                Error::Table(format!("encoding the columns of part '{}': {e}", self.name))
            })?;
            (self.columns, self.payload) = (sinks, payload);
            encoded?;
            built?;
        } else {
            encode_columns(
                granule,
                &self.layout.codecs,
                &mut self.columns,
                &mut self.payload,
            )?;
            self.build_components(first_row, granule)?;
        }
        self.broken = false;
        for (j, &k) in self.layout.key.iter().enumerate() {
            self.first_keys[j].push(stats::value_at(granule.column(k).as_ref(), 0)?);
        }
        self.granule_rows.push(granule.num_rows() as u32);
        self.rows += granule.num_rows() as u64;
        Ok(())
    }

    fn build_components(&mut self, first_row: u64, granule: &RecordBatch) -> Result<()> {
        for builder in &mut self.builders {
            builder.add_granule(first_row, granule)?;
        }
        Ok(())
    }

    /// From here on each column streams to a file of its own.
    async fn go_wide(&mut self) -> Result<()> {
        self.wide = true;
        let dir = self.dir();
        for (i, column) in self.columns.iter_mut().enumerate() {
            let mut file = self.storage.create(&format!("{dir}/c{i}.bin")).await?;
            let header = envelope::header(FileKind::ColumnData);
            let mut crc = crc32fast::Hasher::new();
            crc.update(&header);
            crc.combine(&column.crc);
            column.crc = crc;
            file.write(Bytes::copy_from_slice(&header)).await?;
            column.file = Some(file);
            column.drain().await?;
        }
        Ok(())
    }

    /// Writes what remains, the components and the index; returns the index.
    /// The files are durable when this returns.
    pub async fn finish(mut self) -> Result<PartIndex> {
        self.check_usable()?;
        self.cut_granule().await?;
        if self.rows == 0 {
            return Err(Error::Table(format!("part '{}' has no rows", self.name)));
        }
        let dir = self.dir();
        let mut written = Vec::new();
        let column_metas = match self.wide {
            true => self.finish_wide(&mut written).await?,
            false => self.finish_compact(&mut written).await?,
        };
        let components = self.write_components(&mut written).await?;
        let granule_table = self.granule_table()?;
        let meta = PartMeta {
            name: self.name.clone(),
            rows: self.rows,
            level: self.level,
            granularity: self.layout.granularity.max(1) as u32,
            order_by: self
                .layout
                .key
                .iter()
                .map(|&k| self.schema.field(k).name().clone())
                .collect(),
            columns: column_metas,
            components,
            skip_indexes: Vec::new(),
        };
        let part = PartIndex::new(meta, granule_table)?;
        let index = format!("{dir}/{INDEX_FILE}");
        self.storage.put(&index, part.encode()?).await?;
        // Durable before any commit can name the part.
        written.push(index);
        self.storage.sync(written).await?;
        Ok(part)
    }

    fn column_meta(&self, i: usize, file: String, start: u64, file_len: u64) -> ColumnMeta {
        let field = self.schema.field(i);
        let sink = &self.columns[i];
        ColumnMeta {
            name: field.name().clone(),
            data_type: field.data_type().to_string(),
            nullable: field.is_nullable(),
            codec: self.layout.codecs[i].to_string(),
            file,
            file_len,
            data_start: start,
            data_end: start + sink.len,
            compressed_bytes: sink.len,
            uncompressed_bytes: sink.uncompressed,
            id: Some(self.layout.column_ids.get(i).copied().unwrap_or(i as u32)),
        }
    }

    async fn finish_wide(&mut self, written: &mut Vec<String>) -> Result<Vec<ColumnMeta>> {
        let dir = self.dir();
        let mut metas = Vec::with_capacity(self.columns.len());
        for i in 0..self.columns.len() {
            let sink = &mut self.columns[i];
            sink.drain().await?;
            let crc = std::mem::replace(&mut sink.crc, crc32fast::Hasher::new());
            let mut file = sink.file.take().expect("a wide part's column has a file");
            file.write(Bytes::copy_from_slice(&envelope::footer(crc)))
                .await?;
            let file_len = file.finish().await?;
            let name = format!("c{i}.bin");
            written.push(format!("{dir}/{name}"));
            metas.push(self.column_meta(i, name, ENVELOPE_HEADER_LEN as u64, file_len));
        }
        Ok(metas)
    }

    /// One data file: every column's blocks, one column after the other.
    async fn finish_compact(&mut self, written: &mut Vec<String>) -> Result<Vec<ColumnMeta>> {
        let mut data = envelope::header(FileKind::ColumnData).to_vec();
        let mut starts = Vec::with_capacity(self.columns.len());
        for sink in &mut self.columns {
            starts.push(data.len() as u64);
            data.extend_from_slice(&std::mem::take(&mut sink.buffer));
        }
        envelope::append_footer(&mut data);
        let file_len = data.len() as u64;
        let path = format!("{}/{COMPACT_FILE}", self.dir());
        self.storage.put(&path, data).await?;
        written.push(path);
        Ok((0..self.columns.len())
            .map(|i| self.column_meta(i, COMPACT_FILE.to_string(), starts[i], file_len))
            .collect())
    }

    async fn write_components(&mut self, written: &mut Vec<String>) -> Result<Vec<ComponentMeta>> {
        let mut metas = Vec::new();
        let mut built = Vec::new();
        for builder in std::mem::take(&mut self.builders) {
            built.push(builder.finish()?);
        }
        built.append(&mut self.built);
        // By kind, then column: the same order whether built or remapped.
        built.sort_by(|a, b| (&a.kind, &a.columns).cmp(&(&b.kind, &b.columns)));
        for (n, built) in built.into_iter().enumerate() {
            let file = format!("k{n}.cmp");
            let (bytes, meta) = built.encode(&file)?;
            let path = format!("{}/{file}", self.dir());
            self.storage.put(&path, bytes).await?;
            written.push(path);
            metas.push(meta);
        }
        Ok(metas)
    }

    /// The per-granule table of the index: rows, primary key, and each
    /// column's min, max, null count and mark.
    fn granule_table(&self) -> Result<RecordBatch> {
        let types: Vec<(String, DataType)> = self
            .schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        let schema = index::granule_schema(&types, &self.layout.key);
        let mut arrays: Vec<ArrayRef> = vec![index::counts_array(self.granule_rows.clone())];
        let context = |column: &String| {
            let (part, column) = (self.name.clone(), column.clone());
            move |e: Error| e.context(format!("part '{part}', statistics of column '{column}'"))
        };
        for (j, &k) in self.layout.key.iter().enumerate() {
            let (column, data_type) = &types[k];
            arrays.push(stats::concat(&self.first_keys[j], data_type).map_err(context(column))?);
        }
        // Marks are file offsets: a wide column's blocks follow its header;
        // a compact part's follow the columns before it.
        let mut start = ENVELOPE_HEADER_LEN as u64;
        for (i, sink) in self.columns.iter().enumerate() {
            let (column, data_type) = &types[i];
            arrays.push(stats::concat(&sink.mins, data_type).map_err(context(column))?);
            arrays.push(stats::concat(&sink.maxs, data_type).map_err(context(column))?);
            arrays.push(index::counts_array(sink.nulls.clone()));
            arrays.push(index::marks_array(
                sink.marks.iter().map(|m| m + start).collect(),
            ));
            if !self.wide {
                start += sink.len;
            }
        }
        Ok(RecordBatch::try_new(schema, arrays)?)
    }
}

/// Encodes each column of `granule` as its next block into its sink, with
/// the statistics the index records; `payload` is scratch space.
fn encode_columns(
    granule: &RecordBatch,
    codecs: &[CodecChain],
    sinks: &mut [ColumnSink],
    payload: &mut Vec<u8>,
) -> Result<()> {
    let schema = granule.schema();
    for (i, array) in granule.columns().iter().enumerate() {
        let codec = &codecs[i];
        let context = |e: Error| e.context(format!("column '{}'", schema.field(i).name()));
        let sink = &mut sinks[i];
        payload.clear();
        column::encode(array.as_ref(), &codec.transforms, payload).map_err(context)?;
        sink.uncompressed += payload.len() as u64;
        sink.marks.push(sink.len);
        let before = sink.buffer.len();
        encode_block(codec.compressor, payload, &mut sink.buffer).map_err(context)?;
        sink.crc.update(&sink.buffer[before..]);
        sink.len += (sink.buffer.len() - before) as u64;
        let (min, max) = stats::min_max(array.as_ref()).map_err(context)?;
        sink.mins.push(min);
        sink.maxs.push(max);
        sink.nulls.push(array.null_count() as u32);
    }
    Ok(())
}

/// Writes `batch` (sorted) as the new part `name` and returns its index.
pub async fn write_part(
    storage: &Storage,
    name: &str,
    batch: &RecordBatch,
    layout: &PartLayout,
    level: u32,
    builders: Vec<Box<dyn ComponentBuilder>>,
) -> Result<PartIndex> {
    let mut writer = PartWriter::new(
        storage,
        name,
        batch.schema(),
        layout.clone(),
        level,
        builders,
    );
    writer.write(batch).await?;
    writer.finish().await
}

/// Bytes each row of `batch` counts toward a granule's `granularity_bytes`
/// (see [`column::row_sizes`]).
fn row_bytes(batch: &RecordBatch) -> Vec<usize> {
    let mut sizes = vec![0; batch.num_rows()];
    for c in batch.columns() {
        for (size, column) in sizes.iter_mut().zip(column::row_sizes(c.as_ref())) {
            *size += column;
        }
    }
    sizes
}

/// Bytes of the rows in `batch`, counting only the slices it uses (a batch
/// sliced from a larger one does not own the larger one's memory).
pub fn sliced_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}
