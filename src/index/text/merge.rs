//! Merging one column's text indexes through a part merge's row map: the
//! merged part's index is written from its inputs' postings, remapped,
//! never from re-analysed text (as Lucene and tantivy merge segments).
//!
//! Terms come from the inputs' dictionaries in byte order (a k-way merge
//! of their streams). For each term, every input's list is decoded, its
//! rows mapped to output rows (deleted rows dropped), the lists merged by
//! output row and encoded; a term that only deleted rows held is dropped.
//! Each row's length code moves with it, and the blocks' impacts come from
//! the codes as a build's do, so the merged index is byte for byte the one
//! a build from the merged rows writes, but for the summary's exact total
//! length, which a merge cannot know for deleted rows (it subtracts their
//! coded lengths; scoring never reads it).
//!
//! Memory: the output index (as a build holds it, encoded), one length
//! code per output row, the row maps (four bytes per input row), each
//! input's term dictionary and its current term info and postings
//! blocks, and one term's postings at a time (twice: gathered and
//! ordered). Never an input's whole postings.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

use arrow::buffer::Buffer;
use fst::{IntoStreamer, Streamer};

use super::analysis::Analyzer;
use super::bm25::{ColumnStats, decode_length};
use super::component::{IndexWriter, NORMS_PER_BLOCK, TERMS_PER_BLOCK, TermInfo, TextIndexReader};
use super::postings::{END, TermPostings, put_positions};
use crate::error::{Error, Result};
use crate::part::component::BuiltComponent;

/// In a row map, an input row that reaches no output row (deleted).
pub const DROPPED: u32 = u32::MAX;

/// The text index of the merged part, from the indexes of its inputs
/// (`inputs[i]` the index of input `i`, `maps[i][row]` the output row of
/// its row `row` or [`DROPPED`]) over `output_rows` rows. Every output row
/// must come from exactly one input row.
pub async fn merge(
    name: &str,
    analyzer: Analyzer,
    inputs: &[TextIndexReader],
    maps: &[Vec<u32>],
    output_rows: u64,
) -> Result<BuiltComponent> {
    if inputs.len() != maps.len() {
        return Err(Error::Table(format!(
            "text index on '{name}': {} inputs, {} row maps",
            inputs.len(),
            maps.len()
        )));
    }
    if output_rows >= u64::from(DROPPED) {
        return Err(Error::Table(format!(
            "text index on '{name}': a part holds at most {} rows",
            DROPPED - 1
        )));
    }
    for (reader, map) in inputs.iter().zip(maps) {
        if reader.summary().part_rows != map.len() as u64 {
            return Err(reader.malformed(format!(
                "the index covers {} rows, its part has {}",
                reader.summary().part_rows,
                map.len()
            )));
        }
    }
    let (norms, stats, coded_len) = merge_norms(inputs, maps, output_rows).await?;
    let mut writer = IndexWriter::new(name, analyzer, stats, coded_len);
    let mut sources: Vec<Source> = inputs.iter().map(Source::new).collect();
    let dictionaries =
        futures::future::try_join_all(inputs.iter().map(|r| r.dictionary_once())).await?;
    let mut streams: Vec<fst::map::Stream<'_>> =
        dictionaries.iter().map(|d| d.into_stream()).collect();
    // The next term of each input, smallest first (ties by input).
    let mut heads: BinaryHeap<Reverse<(Vec<u8>, usize, u64)>> = BinaryHeap::new();
    for (i, stream) in streams.iter_mut().enumerate() {
        if let Some((term, ordinal)) = stream.next() {
            heads.push(Reverse((term.to_vec(), i, ordinal)));
        }
    }
    let mut postings = Gathered::default();
    while let Some(Reverse((term, i, ordinal))) = heads.pop() {
        postings.clear();
        let mut holders = vec![(i, ordinal)];
        while let Some(Reverse((next, _, _))) = heads.peek()
            && *next == term
        {
            let Some(Reverse((_, j, o))) = heads.pop() else {
                break;
            };
            holders.push((j, o));
        }
        for &(i, ordinal) in &holders {
            let (bytes, range, rows) = sources[i].list(ordinal).await?;
            postings.add(&inputs[i], &bytes[range], rows, &maps[i])?;
            if let Some((next, o)) = streams[i].next() {
                heads.push(Reverse((next.to_vec(), i, o)));
            }
        }
        if let Some(merged) = postings.ordered(holders.len() > 1) {
            writer.add_term(&term, merged, &norms)?;
        }
    }
    writer.finish(norms)
}

/// The output rows' length codes, with the statistics of those with
/// tokens: rows and coded lengths summed exactly, exact lengths as the
/// inputs' less the deleted rows' coded lengths.
async fn merge_norms(
    inputs: &[TextIndexReader],
    maps: &[Vec<u32>],
    output_rows: u64,
) -> Result<(Vec<u8>, ColumnStats, u64)> {
    let mut norms = vec![0u8; output_rows as usize];
    let (mut stats, mut coded_len) = (ColumnStats::default(), 0u64);
    let mut exact_len = 0u64;
    for (reader, map) in inputs.iter().zip(maps) {
        // Saturating: a damaged summary must not overflow (scoring never
        // reads this total).
        exact_len = exact_len.saturating_add(reader.summary().stats.total_len);
        for b in 0..reader.summary().norm_blocks as usize {
            let codes = reader.norms_once(b).await?;
            let rows = &map[b * NORMS_PER_BLOCK..][..codes.len()];
            for (&code, &out) in codes.iter().zip(rows) {
                let len = u64::from(decode_length(code));
                match norms.get_mut(out as usize) {
                    Some(slot) => *slot = code,
                    None if out == DROPPED => exact_len = exact_len.saturating_sub(len),
                    None => {
                        return Err(Error::Table(format!(
                            "a merge's row map sends a row to {out} of {output_rows}"
                        )));
                    }
                }
                if out != DROPPED && code > 0 {
                    stats.rows += 1;
                    coded_len += len;
                }
            }
        }
    }
    stats.total_len = exact_len;
    Ok((norms, stats, coded_len))
}

/// One input's blocks as its terms come, in order: the current term info
/// block and postings block, each read once.
struct Source<'r> {
    reader: &'r TextIndexReader,
    infos: Option<(u64, Buffer)>,
    postings: Option<(u32, Buffer)>,
}

impl<'r> Source<'r> {
    fn new(reader: &'r TextIndexReader) -> Self {
        Source {
            reader,
            infos: None,
            postings: None,
        }
    }

    /// Term `ordinal`'s posting list: its postings block, its range and
    /// its rows.
    async fn list(&mut self, ordinal: u64) -> Result<(Buffer, Range<usize>, u32)> {
        let info = self.info(ordinal).await?;
        let bytes = match &self.postings {
            Some((b, bytes)) if *b == info.block => bytes.clone(),
            _ => {
                let bytes = self.reader.postings_once(info.block).await?;
                self.postings = Some((info.block, bytes.clone()));
                bytes
            }
        };
        let range = self.reader.list_range(&info, &bytes)?;
        Ok((bytes, range, info.doc_freq))
    }

    async fn info(&mut self, ordinal: u64) -> Result<TermInfo> {
        let block = ordinal / TERMS_PER_BLOCK as u64;
        let infos = match &self.infos {
            Some((b, infos)) if *b == block => infos.clone(),
            _ => {
                let infos = self.reader.infos_once(ordinal).await?;
                self.infos = Some((block, infos.clone()));
                infos
            }
        };
        self.reader.info_in(&infos, ordinal)
    }
}

/// One term's postings gathered from the inputs, in output rows.
#[derive(Default)]
struct Gathered {
    /// (output row, frequency, where its encoded positions lie in
    /// `positions`: start and length).
    entries: Vec<(u32, u32, usize, usize)>,
    positions: Vec<u8>,
    /// The postings in output row order.
    rows: Vec<u32>,
    freqs: Vec<u32>,
    ordered_positions: Vec<u8>,
    scratch: Vec<u32>,
}

impl Gathered {
    fn clear(&mut self) {
        self.entries.clear();
        self.positions.clear();
    }

    /// Adds the live rows of the list `bytes` of `reader`, mapped by `map`.
    fn add(
        &mut self,
        reader: &TextIndexReader,
        bytes: &[u8],
        rows: u32,
        map: &[u32],
    ) -> Result<()> {
        let list = reader.posting_list(bytes, rows)?;
        let mut cursor = list.cursor().map_err(|e| reader.malformed(e))?;
        let mut row = cursor.row();
        while row != END {
            let out = *map
                .get(row as usize)
                .ok_or_else(|| reader.malformed(format!("row {row} past the part's rows")))?;
            if out != DROPPED {
                let freq = cursor.freq();
                cursor
                    .positions(&mut self.scratch)
                    .map_err(|e| reader.malformed(e))?;
                let at = self.positions.len();
                put_positions(&self.scratch, &mut self.positions);
                let len = self.positions.len() - at;
                self.entries.push((out, freq, at, len));
            }
            row = cursor.advance().map_err(|e| reader.malformed(e))?;
        }
        Ok(())
    }

    /// The gathered postings by output row (`None` if none is live);
    /// lists from several inputs interleave and are sorted first.
    fn ordered(&mut self, several: bool) -> Option<TermPostings<'_>> {
        if self.entries.is_empty() {
            return None;
        }
        if several && !self.entries.is_sorted_by_key(|e| e.0) {
            self.entries.sort_unstable_by_key(|e| e.0);
        }
        self.rows.clear();
        self.freqs.clear();
        self.ordered_positions.clear();
        for &(row, freq, at, len) in &self.entries {
            self.rows.push(row);
            self.freqs.push(freq);
            self.ordered_positions
                .extend_from_slice(&self.positions[at..at + len]);
        }
        Some(TermPostings {
            rows: &self.rows,
            freqs: &self.freqs,
            positions: &self.ordered_positions,
        })
    }
}
