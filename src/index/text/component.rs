//! The text index of one column of one part, as a part component
//! (kind [`KIND`]): built from the part's rows granule by granule, read
//! back block by block.
//!
//! ```text
//! block 0                summary: part rows, rows with tokens, their total
//!                        length exact and as the length codes decode it,
//!                        terms, how many blocks of each kind follow, and
//!                        where each postings block starts in the postings
//! block 1                term dictionary: an fst map from term to ordinal
//! term info blocks       per term (TERMS_PER_BLOCK a block): document
//!                        frequency and where its list ends (terminfo.rs)
//! norm blocks            per part row (NORMS_PER_BLOCK a block): its length
//!                        code (bm25::encode_length; 0 for a row without tokens)
//! postings blocks        posting lists (postings.rs) end to end in term
//!                        order, cut between lists near POSTINGS_BLOCK_BYTES;
//!                        a longer list has a block alone
//! ```
//! A list's place in the postings is its offset in those blocks laid end
//! to end, so a term info holds one number for it (its end; it starts
//! where the previous term's ends); the summary's block starts say which
//! block holds it.
//! A row's length counts its token positions (tokens sharing a position,
//! such as one start's n-grams, count once, as Lucene discounts overlaps).
//! Rows without tokens (NULL, empty, only stop words) hold no posting and
//! do not count in the statistics, as in Lucene.

use std::sync::Arc;

use std::ops::Range;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::buffer::Buffer;
use arrow::datatypes::DataType;
use fst::{Map, MapBuilder};

use super::analysis::Analyzer;
use super::bm25::{ColumnStats, TermScorer, decode_length, encode_length};
use super::postings::{Cursor, Encoder, PostingList, TermPostings, get_varint, put_varint};
use super::terminfo;
use crate::encoding::Codec;
use crate::error::{Error, Result};
use crate::part::component::{BuiltComponent, Component, ComponentBuilder};

pub const KIND: &str = "text_index";
/// Version 4: each posting block's impacts start with its lead (see
/// [`super::postings`]). Version 3 (read too, its blocks bounded by all
/// their impacts): term infos bit-packed by group, list headers without
/// the row count (the term info has it), lists of fewer than a block's
/// rows without any header. A part whose component has another version
/// reads as a part without the index (its rows analysed; rebuilt by
/// `diagon_optimize(t, true)` and by merges).
pub const VERSION: u16 = 4;
/// The oldest version read.
const OLDEST_VERSION: u16 = 3;

/// Whether a text index component of `version` is read.
pub fn readable(version: u16) -> bool {
    (OLDEST_VERSION..=VERSION).contains(&version)
}

/// What BM25 scores a part's rows by: rows with tokens, and their coded
/// lengths summed (see [`Summary::coded_len`]).
fn scored_stats(stats: ColumnStats, coded_len: u64) -> ColumnStats {
    ColumnStats {
        rows: stats.rows,
        total_len: coded_len,
    }
}

pub use super::terminfo::TERMS_PER_BLOCK;
/// Rows per norm block.
pub const NORMS_PER_BLOCK: usize = 65536;
/// Where a postings block is cut (a longer list is a block of its own).
pub const POSTINGS_BLOCK_BYTES: usize = 256 << 10;

/// The summary: five u64 counts, three u32 block counts, then the
/// postings blocks' starts and their end (u64 each).
const SUMMARY_U64S: usize = 5;
const SUMMARY_FIXED_LEN: usize = 8 * SUMMARY_U64S + 4 * 3;

/// One term's postings while the part is being built, in one buffer of
/// varints (tantivy's in-memory form): per row, its distance from the
/// term's previous row (the first row: the row), then each position's
/// distance from the one before (the first: the position plus one, so
/// never 0), then a 0 that ends the row, written when the term's next
/// row starts (the last row's ends with the buffer). One allocation per
/// term, rather than three vectors of which two held a u32 a row.
#[derive(Default)]
struct TermBuffer {
    bytes: Vec<u8>,
    /// Rows so far; the last row plus one; the current row's last
    /// position plus one.
    rows: u32,
    next_row: u32,
    next_position: u32,
}

impl TermBuffer {
    fn add(&mut self, row: u32, position: u32) {
        if self.rows == 0 || self.next_row != row + 1 {
            if self.rows > 0 {
                self.bytes.push(0);
            }
            put_varint(row - self.next_row, &mut self.bytes);
            (self.rows, self.next_row, self.next_position) = (self.rows + 1, row + 1, 0);
        }
        // Positions rise within a row (saturated ones, past u32::MAX
        // tokens in one value, stay apart rather than end the row).
        let next = position.saturating_add(1);
        put_varint(
            next.saturating_sub(self.next_position).max(1),
            &mut self.bytes,
        );
        self.next_position = next;
    }

    /// The postings, into `rows`, `freqs` and `positions` (cleared first;
    /// positions as lists store them).
    fn decode(&self, rows: &mut Vec<u32>, freqs: &mut Vec<u32>, positions: &mut Vec<u8>) {
        rows.clear();
        freqs.clear();
        positions.clear();
        let (bytes, mut at, mut next_row) = (&self.bytes, 0, 0);
        // The buffer was written by `add`: every varint is whole.
        let varint = |at: &mut usize| get_varint(bytes, at).expect("a term buffer's varints");
        while at < bytes.len() {
            let row = next_row + varint(&mut at);
            rows.push(row);
            next_row = row + 1;
            let mut freq = 0;
            while at < bytes.len() {
                match varint(&mut at) {
                    0 => break,
                    distance => put_varint(distance - 1, positions),
                }
                freq += 1;
            }
            freqs.push(freq);
        }
    }
}

/// Builds the text index of one column from the part's granules.
pub struct TextIndexBuilder {
    column: usize,
    name: String,
    analyzer: Analyzer,
    terms: rustc_hash::FxHashMap<Box<str>, TermBuffer>,
    /// Length of every part row so far (0 without tokens).
    lens: Vec<u32>,
    stats: ColumnStats,
    coded_len: u64,
    /// Bytes the terms' names and postings buffers hold (their capacity).
    buffered: usize,
}

impl TextIndexBuilder {
    /// A builder for the column at `column` (named `name`) of the part's
    /// schema, analysed by `analyzer`.
    pub fn new(column: usize, name: &str, analyzer: Analyzer) -> Self {
        TextIndexBuilder {
            column,
            name: name.to_string(),
            analyzer,
            terms: Default::default(),
            lens: Vec::new(),
            stats: ColumnStats::default(),
            coded_len: 0,
            buffered: 0,
        }
    }

    fn add_value(&mut self, row: u32, text: &str) {
        let mut len = 0u32;
        let mut last_position = None;
        let (terms, buffered) = (&mut self.terms, &mut self.buffered);
        self.analyzer.analyze(text, |token| {
            if last_position != Some(token.position) {
                len += 1;
                last_position = Some(token.position);
            }
            let buffer = match terms.get_mut(token.term) {
                Some(buffer) => buffer,
                None => {
                    *buffered += token.term.len();
                    terms.entry(Box::from(token.term)).or_default()
                }
            };
            let capacity = buffer.bytes.capacity();
            buffer.add(row, token.position);
            *buffered += buffer.bytes.capacity() - capacity;
        });
        self.lens.push(len);
        if len > 0 {
            self.stats.rows += 1;
            self.stats.total_len += u64::from(len);
            self.coded_len += u64::from(decode_length(encode_length(len)));
        }
    }
}

/// Each row's text of a string column (`None` for NULL).
fn for_each_text(name: &str, array: &dyn Array, mut f: impl FnMut(Option<&str>)) -> Result<()> {
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().for_each(&mut f),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().for_each(&mut f),
        DataType::Utf8View => array.as_string_view().iter().for_each(&mut f),
        other => {
            return Err(Error::UnsupportedType {
                column: name.to_string(),
                data_type: format!("{other} for a text index (it takes strings)"),
            });
        }
    }
    Ok(())
}

impl ComponentBuilder for TextIndexBuilder {
    /// The term table, the terms' names, their postings buffers and the
    /// rows' lengths, by capacity.
    fn memory_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(Box<str>, TermBuffer)>() + 1;
        self.buffered + self.terms.capacity() * entry + 4 * self.lens.capacity()
    }

    fn add_granule(&mut self, first_row: u64, granule: &RecordBatch) -> Result<()> {
        if first_row != self.lens.len() as u64 {
            return Err(Error::Schema(format!(
                "text index on '{}': granule at row {first_row} after {} rows",
                self.name,
                self.lens.len()
            )));
        }
        let end = first_row + granule.num_rows() as u64;
        if end > u64::from(u32::MAX) {
            return Err(Error::Schema(format!(
                "text index on '{}': a part holds at most {} rows",
                self.name,
                u32::MAX
            )));
        }
        let (name, column) = (self.name.clone(), granule.column(self.column).clone());
        let mut row = first_row as u32;
        for_each_text(&name, column.as_ref(), |text| {
            match text {
                Some(text) => self.add_value(row, text),
                None => self.lens.push(0),
            }
            row += 1;
        })?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<BuiltComponent> {
        let TextIndexBuilder {
            name,
            analyzer,
            terms,
            lens,
            stats,
            coded_len,
            ..
        } = *self;
        let mut terms: Vec<(Box<str>, TermBuffer)> = terms.into_iter().collect();
        terms.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let norms: Vec<u8> = lens.iter().map(|&l| encode_length(l)).collect();
        let mut writer = IndexWriter::new(&name, analyzer, stats, coded_len);
        let (mut rows, mut freqs, mut positions) = (Vec::new(), Vec::new(), Vec::new());
        for (term, buffer) in &terms {
            buffer.decode(&mut rows, &mut freqs, &mut positions);
            let postings = TermPostings {
                rows: &rows,
                freqs: &freqs,
                positions: &positions,
            };
            writer.add_term(term.as_bytes(), postings, &norms)?;
        }
        writer.finish(norms)
    }
}

/// Writes a text index component from its terms in order: what building
/// from rows and merging through a row map share.
pub(crate) struct IndexWriter {
    name: String,
    analyzer: Analyzer,
    dictionary: MapBuilder<Vec<u8>>,
    terms: u64,
    /// Per term: its rows, and where its list ends in the postings.
    doc_freqs: Vec<u32>,
    ends: Vec<u64>,
    postings_blocks: Vec<Vec<u8>>,
    /// Where each postings block starts in the postings (then `current`).
    postings_starts: Vec<u64>,
    /// The postings block being filled, and one list's encoding.
    current: Vec<u8>,
    list: Vec<u8>,
    encoder: Encoder,
    /// The part's rows with tokens and their lengths (see [`Summary`]).
    stats: ColumnStats,
    coded_len: u64,
}

impl IndexWriter {
    /// A writer of the index of column `name` analysed by `analyzer`,
    /// over a part's rows whose statistics are `stats` and `coded_len`
    /// (see [`Summary`]).
    pub(crate) fn new(name: &str, analyzer: Analyzer, stats: ColumnStats, coded_len: u64) -> Self {
        IndexWriter {
            name: name.to_string(),
            analyzer,
            dictionary: MapBuilder::memory(),
            terms: 0,
            doc_freqs: Vec::new(),
            ends: Vec::new(),
            postings_blocks: Vec::new(),
            postings_starts: vec![0],
            current: Vec::new(),
            list: Vec::new(),
            encoder: Encoder::new(scored_stats(stats, coded_len)),
            stats,
            coded_len,
        }
    }

    /// Adds the next term (terms come in byte order) with its postings;
    /// `norms` holds every part row's length code (the blocks' impacts are
    /// computed from them, so a merge, which has only the codes, writes
    /// the same bytes as a build: a code decodes to a length that encodes
    /// back to it).
    pub(crate) fn add_term(
        &mut self,
        term: &[u8],
        postings: TermPostings<'_>,
        norms: &[u8],
    ) -> Result<()> {
        let name = &self.name;
        self.dictionary
            .insert(term, self.terms)
            .map_err(|e| Error::Schema(format!("text index on '{name}': {e}")))?;
        self.terms += 1;
        self.list.clear();
        let len_of = |row: u32| decode_length(norms[row as usize]);
        self.encoder.encode(postings, len_of, &mut self.list);
        if !self.current.is_empty() && self.current.len() + self.list.len() > POSTINGS_BLOCK_BYTES {
            self.cut_postings_block();
        }
        self.current.extend_from_slice(&self.list);
        let start = *self
            .postings_starts
            .last()
            .expect("the first block's start");
        self.doc_freqs.push(postings.rows.len() as u32);
        self.ends.push(start + self.current.len() as u64);
        Ok(())
    }

    /// Ends the postings block being filled; the next starts after it.
    fn cut_postings_block(&mut self) {
        let start = *self
            .postings_starts
            .last()
            .expect("the first block's start");
        self.postings_starts.push(start + self.current.len() as u64);
        self.postings_blocks.push(std::mem::take(&mut self.current));
    }

    /// The component, with every part row's length code.
    pub(crate) fn finish(mut self, norms: Vec<u8>) -> Result<BuiltComponent> {
        if !self.current.is_empty() {
            self.cut_postings_block();
        }
        let name = self.name;
        let dictionary = self
            .dictionary
            .into_inner()
            .map_err(|e| Error::Schema(format!("text index on '{name}': {e}")))?;
        let info_blocks = terminfo::encode(&self.doc_freqs, &self.ends)
            .map_err(|e| Error::Schema(format!("text index on '{name}': {e}")))?;
        let norm_blocks: Vec<Vec<u8>> = norms.chunks(NORMS_PER_BLOCK).map(<[u8]>::to_vec).collect();
        let summary = Summary {
            part_rows: norms.len() as u64,
            stats: self.stats,
            coded_len: self.coded_len,
            terms: self.terms,
            info_blocks: info_blocks.len() as u32,
            norm_blocks: norm_blocks.len() as u32,
            postings_blocks: self.postings_blocks.len() as u32,
            postings_starts: self.postings_starts,
        };
        let mut blocks = vec![summary.encode(), dictionary];
        blocks.extend(info_blocks);
        blocks.extend(norm_blocks);
        blocks.extend(self.postings_blocks);
        Ok(BuiltComponent {
            kind: KIND.to_string(),
            columns: vec![name],
            version: VERSION,
            params: self.analyzer.to_string(),
            blocks,
            codec: Codec::None,
        })
    }
}

/// Block 0 of a text index component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Rows of the part (norms cover every one).
    pub part_rows: u64,
    /// Rows with tokens and their lengths summed. The lengths are exact in
    /// a part built from rows; a merged part's are its inputs' less the
    /// deleted rows' coded lengths (a deleted row's exact length is not
    /// kept), so exact when no deleted row had more than 40 tokens.
    /// Scoring reads `coded_len`, never this.
    pub stats: ColumnStats,
    /// Their lengths as the length codes decode them, summed: what a
    /// table-wide mean can be kept from when rows are deleted (a deleted
    /// row's exact length is not stored, its code is).
    pub coded_len: u64,
    pub terms: u64,
    pub info_blocks: u32,
    pub norm_blocks: u32,
    pub postings_blocks: u32,
    /// Where each postings block starts in the postings, then where the
    /// last ends (`postings_blocks + 1` offsets, rising).
    pub postings_starts: Vec<u64>,
}

impl Summary {
    /// What BM25 scores the part's rows by (see [`Self::coded_len`]).
    pub fn scored_stats(&self) -> ColumnStats {
        scored_stats(self.stats, self.coded_len)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SUMMARY_FIXED_LEN + 8 * self.postings_starts.len());
        for value in [
            self.part_rows,
            self.stats.rows,
            self.stats.total_len,
            self.coded_len,
            self.terms,
        ] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        for value in [self.info_blocks, self.norm_blocks, self.postings_blocks] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        for start in &self.postings_starts {
            out.extend_from_slice(&start.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() < SUMMARY_FIXED_LEN {
            return Err(format!("summary of {} bytes", bytes.len()));
        }
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
        let u32_at = |i: usize| {
            let at = 8 * SUMMARY_U64S + 4 * i;
            u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
        };
        let summary = Summary {
            part_rows: u64_at(0),
            stats: ColumnStats {
                rows: u64_at(1),
                total_len: u64_at(2),
            },
            coded_len: u64_at(3),
            terms: u64_at(4),
            info_blocks: u32_at(0),
            norm_blocks: u32_at(1),
            postings_blocks: u32_at(2),
            postings_starts: bytes[SUMMARY_FIXED_LEN..]
                .chunks(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0xff; 8])))
                .collect(),
        };
        let expected_info = summary.terms.div_ceil(TERMS_PER_BLOCK as u64);
        let expected_norms = summary.part_rows.div_ceil(NORMS_PER_BLOCK as u64);
        if u64::from(summary.info_blocks) != expected_info
            || u64::from(summary.norm_blocks) != expected_norms
            || summary.stats.rows > summary.part_rows
            || summary.part_rows > u64::from(u32::MAX)
            || bytes.len() != SUMMARY_FIXED_LEN + 8 * (summary.postings_blocks as usize + 1)
            || summary.postings_starts.first() != Some(&0)
            || summary.postings_starts.windows(2).any(|w| w[0] >= w[1])
        {
            return Err("summary counts disagree".into());
        }
        Ok(summary)
    }
}

/// Where a term's postings lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermInfo {
    /// Rows of the part holding the term.
    pub doc_freq: u32,
    /// The postings block holding its list, and where the list lies in it.
    pub(crate) block: u32,
    offset: usize,
    len: usize,
}

/// A text index component opened for reading: blocks are fetched, checked
/// and cached one at a time as lookups need them.
#[derive(Debug, Clone)]
pub struct TextIndexReader {
    component: Component,
    summary: Summary,
    analyzer: Analyzer,
    /// The term dictionary once read: every query looks terms up in it,
    /// so a reader (opened once per snapshot) keeps it rather than
    /// finding it in the cache each time.
    dictionary: Arc<std::sync::OnceLock<Arc<Map<Vec<u8>>>>>,
    /// The scoring that picked the blocks' leads (version 4; a version 3
    /// index has none).
    reference: Option<TermScorer>,
}

/// A postings block, kept whole in the cache.
pub struct PostingsBlock(Vec<u8>);

/// One term's posting list as read: its postings block, where the list
/// lies in it, and its rows (the term info's document frequency).
pub struct ListBytes {
    block: Arc<PostingsBlock>,
    range: Range<usize>,
    rows: u32,
}

impl ListBytes {
    pub fn bytes(&self) -> &[u8] {
        &self.block.0[self.range.clone()]
    }

    pub fn rows(&self) -> u32 {
        self.rows
    }

    /// The list opened, `reader` naming it when it is malformed.
    pub fn open<'a>(&'a self, reader: &TextIndexReader) -> Result<PostingList<'a>> {
        reader.posting_list(self.bytes(), self.rows)
    }
}

impl TextIndexReader {
    /// Opens `component` (reading its summary block).
    pub async fn open(component: Component) -> Result<Self> {
        let meta = component.meta();
        let corrupt = |reason: String| {
            Error::corrupt(
                meta.file.clone(),
                format!("component {}: {reason}", meta.describe()),
            )
        };
        if meta.kind != KIND || !readable(meta.version) {
            return Err(corrupt(format!(
                "expected {KIND} version {OLDEST_VERSION} to {VERSION}, found {} version {}",
                meta.kind, meta.version
            )));
        }
        let analyzer =
            Analyzer::parse("analyzer", &meta.params).map_err(|e| corrupt(e.to_string()))?;
        let summary = Summary::clone(
            &*component
                .block(0, Summary::decode, |s| {
                    (SUMMARY_FIXED_LEN + 8 * s.postings_starts.len()) as u64
                })
                .await?,
        );
        let expected = 2
            + u64::from(summary.info_blocks)
            + u64::from(summary.norm_blocks)
            + u64::from(summary.postings_blocks);
        let blocks = component.block_count().await? as u64;
        if blocks != expected {
            return Err(corrupt(format!(
                "{blocks} blocks, its summary says {expected}"
            )));
        }
        let reference = (meta.version >= 4).then(|| TermScorer::reference(summary.scored_stats()));
        Ok(TextIndexReader {
            component,
            summary,
            analyzer,
            dictionary: Arc::default(),
            reference,
        })
    }

    /// The scoring that picked the blocks' leads (see [`super::postings`]),
    /// if its version has leads.
    pub fn reference(&self) -> Option<&TermScorer> {
        self.reference.as_ref()
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The analyzer the column was indexed with.
    pub fn analyzer(&self) -> Analyzer {
        self.analyzer
    }

    pub(crate) async fn dictionary(&self) -> Result<Arc<Map<Vec<u8>>>> {
        if let Some(dictionary) = self.dictionary.get() {
            return Ok(dictionary.clone());
        }
        let dictionary = self
            .component
            .block(
                1,
                |bytes| Map::new(bytes.to_vec()).map_err(|e| format!("term dictionary: {e}")),
                |map| map.as_fst().as_bytes().len() as u64,
            )
            .await?;
        Ok(self.dictionary.get_or_init(|| dictionary).clone())
    }

    /// Where `term` (already analysed) lies, or `None` if no row holds it.
    pub async fn term(&self, term: &str) -> Result<Option<TermInfo>> {
        super::counts::add(super::counts::Counter::TermsLookedUp, 1);
        let Some(ordinal) = self.dictionary().await?.get(term) else {
            return Ok(None);
        };
        if ordinal >= self.summary.terms {
            return Err(self.corrupt(format!("term ordinal {ordinal} past its terms")));
        }
        let block = 2 + ordinal as usize / TERMS_PER_BLOCK;
        let infos = self
            .component
            .block(block, |b| Ok(b.to_vec()), |b| b.len() as u64)
            .await?;
        self.info_in(&infos, ordinal).map(Some)
    }

    /// Term `ordinal`'s info from its term info block `infos`.
    pub(crate) fn info_in(&self, infos: &[u8], ordinal: u64) -> Result<TermInfo> {
        if ordinal >= self.summary.terms {
            return Err(self.corrupt(format!("term ordinal {ordinal} past its terms")));
        }
        let first = ordinal - ordinal % TERMS_PER_BLOCK as u64;
        let terms = (self.summary.terms - first).min(TERMS_PER_BLOCK as u64) as usize;
        let entry = terminfo::entry(infos, terms, (ordinal - first) as usize)
            .map_err(|e| self.corrupt(format!("term info {ordinal}: {e}")))?;
        // The postings block holding the list: the last starting at or
        // before its start; the list must end inside it.
        let starts = &self.summary.postings_starts;
        let block = starts
            .partition_point(|&s| s <= entry.start)
            .saturating_sub(1);
        match starts.get(block + 1) {
            Some(&next) if entry.end <= next => {}
            _ => {
                return Err(self.corrupt(format!(
                    "term info {ordinal}: postings {}..{} outside every postings block",
                    entry.start, entry.end
                )));
            }
        }
        Ok(TermInfo {
            doc_freq: entry.doc_freq,
            block: block as u32,
            offset: (entry.start - starts[block]) as usize,
            len: (entry.end - entry.start) as usize,
        })
    }

    /// The term dictionary read without caching it (a merge reads every
    /// block of its inputs once).
    pub(crate) async fn dictionary_once(&self) -> Result<Map<Vec<u8>>> {
        let bytes = self.component.read_block(1).await?;
        Map::new(bytes.to_vec()).map_err(|e| self.corrupt(format!("term dictionary: {e}")))
    }

    /// The term info block holding term `ordinal`, read without caching it.
    pub(crate) async fn infos_once(&self, ordinal: u64) -> Result<Buffer> {
        if ordinal >= self.summary.terms {
            return Err(self.corrupt(format!("term ordinal {ordinal} past its terms")));
        }
        let block = 2 + ordinal as usize / TERMS_PER_BLOCK;
        self.component.read_block(block).await
    }

    /// Postings block `block`, read without caching it.
    pub(crate) async fn postings_once(&self, block: u32) -> Result<Buffer> {
        if block >= self.summary.postings_blocks {
            return Err(self.corrupt(format!("postings block {block} past its blocks")));
        }
        let at = 2
            + self.summary.info_blocks as usize
            + self.summary.norm_blocks as usize
            + block as usize;
        self.component.read_block(at).await
    }

    /// The range of `info`'s list in its postings block `bytes`.
    pub(crate) fn list_range(&self, info: &TermInfo, bytes: &[u8]) -> Result<Range<usize>> {
        let range = info.offset..info.offset + info.len;
        match range.end <= bytes.len() {
            true => Ok(range),
            false => {
                Err(self.corrupt(format!("a posting list past postings block {}", info.block)))
            }
        }
    }

    /// `info`'s posting list: the postings block holding it, where.
    pub async fn postings(&self, info: &TermInfo) -> Result<ListBytes> {
        if info.block >= self.summary.postings_blocks {
            return Err(self.corrupt(format!("postings block {} past its blocks", info.block)));
        }
        let block = 2
            + self.summary.info_blocks as usize
            + self.summary.norm_blocks as usize
            + info.block as usize;
        let bytes = self
            .component
            .block(
                block,
                |b| Ok(PostingsBlock(b.to_vec())),
                |b| b.0.len() as u64,
            )
            .await?;
        let range = self.list_range(info, &bytes.0)?;
        Ok(ListBytes {
            block: bytes,
            range,
            rows: info.doc_freq,
        })
    }

    /// Opens the posting list `bytes` of `rows` rows, naming the component
    /// when it is malformed.
    pub fn posting_list<'a>(&self, bytes: &'a [u8], rows: u32) -> Result<PostingList<'a>> {
        let list = match self.reference {
            Some(_) => PostingList::open(bytes, rows),
            None => PostingList::open_without_leads(bytes, rows),
        };
        list.map_err(|e| self.corrupt(format!("posting list: {e}")))
    }

    /// The posting lists of `lists` (from [`Self::postings`]), opened.
    pub fn posting_lists<'a>(
        &self,
        lists: impl IntoIterator<Item = &'a ListBytes>,
    ) -> Result<Vec<PostingList<'a>>> {
        lists.into_iter().map(|l| l.open(self)).collect()
    }

    /// A cursor on the first row of each of `lists`.
    pub fn cursors<'l, 'a>(&self, lists: &'l [PostingList<'a>]) -> Result<Vec<Cursor<'l, 'a>>> {
        lists
            .iter()
            .map(|l| l.cursor().map_err(|e| self.malformed(e)))
            .collect()
    }

    /// The length codes of rows `NORMS_PER_BLOCK * b ..` (norm block `b`).
    pub async fn norms(&self, b: usize) -> Result<Arc<Vec<u8>>> {
        let (block, expected) = self.norm_block(b)?;
        self.component
            .block(
                block,
                |bytes| match bytes.len() == expected {
                    true => Ok(bytes.to_vec()),
                    false => Err(format!("{} length codes, expected {expected}", bytes.len())),
                },
                |n| n.len() as u64,
            )
            .await
    }

    /// Norm block `b`, read without caching it.
    pub(crate) async fn norms_once(&self, b: usize) -> Result<Buffer> {
        let (block, expected) = self.norm_block(b)?;
        let bytes = self.component.read_block(block).await?;
        match bytes.len() == expected {
            true => Ok(bytes),
            false => Err(self.corrupt(format!(
                "norm block {b}: {} length codes, expected {expected}",
                bytes.len()
            ))),
        }
    }

    /// Where norm block `b` is among the component's blocks, and how many
    /// codes it holds: every block NORMS_PER_BLOCK but the last, the rest.
    fn norm_block(&self, b: usize) -> Result<(usize, usize)> {
        if b >= self.summary.norm_blocks as usize {
            return Err(self.corrupt(format!("norm block {b} past its blocks")));
        }
        let rows = self.summary.part_rows as usize;
        let expected = (rows - b * NORMS_PER_BLOCK).min(NORMS_PER_BLOCK);
        Ok((2 + self.summary.info_blocks as usize + b, expected))
    }

    /// A malformed posting list, named with the component.
    pub(crate) fn malformed(&self, reason: String) -> Error {
        self.corrupt(format!("posting list: {reason}"))
    }

    fn corrupt(&self, reason: String) -> Error {
        let meta = self.component.meta();
        Error::corrupt(
            meta.file.clone(),
            format!("component {}: {reason}", meta.describe()),
        )
    }
}
