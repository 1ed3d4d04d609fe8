//! A table's text indexes as one: each part's index of a column, and the
//! BM25 statistics of the column over a snapshot's live rows, so a row's
//! score depends on neither the part it is in nor the deletes elsewhere.
//!
//! Over a snapshot, for a text-indexed column:
//! - `rows`: live rows with at least one token;
//! - `total_len`: their lengths as the one-byte length codes decode them
//!   (exact up to 40 tokens), summed; the mean BM25 divides by is this
//!   over `rows`. Lucene sums exact lengths; the codes are what a deleted
//!   row leaves behind, and using them everywhere keeps a table with
//!   deletes scoring exactly as one built from its live rows;
//! - a term's document frequency: live rows holding it.

use std::sync::Arc;

use arrow::buffer::BooleanBuffer;

use super::Snapshot;
use super::Table;
use super::log::PartEntry;
use crate::error::{Error, Result};
use crate::index::text::bm25::{ColumnStats, decode_length};
use crate::index::text::bound::Bound;
use crate::index::text::component::{NORMS_PER_BLOCK, TextIndexReader};
use crate::index::text::score::{Scoring, scored_terms};

/// BM25's statistics of one column over a snapshot's live rows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextStatistics {
    pub column: ColumnStats,
    /// Live rows holding each asked-for term, in the order asked.
    pub doc_freqs: Vec<u64>,
}

impl Table {
    /// The text index of `column` in the part `entry`, if the part has one
    /// built with the analyzer the table declares.
    pub async fn text_index(
        &self,
        snapshot: &Snapshot,
        entry: &PartEntry,
        column: &str,
    ) -> Result<Option<TextIndexReader>> {
        let Some(analyzer) = snapshot.options.text.indexes.get(column) else {
            return Ok(None);
        };
        let index = self.entry_index(snapshot, entry).await?;
        let storage = self.storage_for(entry)?;
        crate::plan::text::open_text_index(&index, &storage, column, analyzer)
            .await
            .map_err(|e| e.context(format!("table '{}', part '{}'", self.name(), entry.name)))
    }

    /// What scoring `bound` on `column` needs from `snapshot`: BM25's
    /// parameters, the column's statistics over the live rows and the
    /// document frequency of each term the query scores.
    pub async fn text_scoring(
        &self,
        snapshot: &Snapshot,
        column: &str,
        bound: &Bound,
    ) -> Result<Scoring> {
        let terms = scored_terms(bound);
        let stats = self.text_statistics(snapshot, column, &terms).await?;
        Ok(Scoring::new(
            snapshot.options.text.bm25,
            stats.column,
            &terms,
            &stats.doc_freqs,
        ))
    }

    /// The statistics of `column` over `snapshot`'s live rows, with the
    /// document frequencies of `terms` (analysed). Every part must hold the
    /// column's index: a part without one (declared after it was written)
    /// is an error naming it, until `diagon_optimize(t, true)` builds it.
    pub async fn text_statistics(
        &self,
        snapshot: &Snapshot,
        column: &str,
        terms: &[String],
    ) -> Result<TextStatistics> {
        let parts = self.text_parts(snapshot, column).await?;
        statistics_of(&parts, terms).await
    }

    /// Every part's index of `column` with its deletion mask, in snapshot
    /// order; a part without the index is an error naming it. Opened once
    /// per snapshot, then shared by its readers.
    pub(crate) async fn text_parts(
        &self,
        snapshot: &Snapshot,
        column: &str,
    ) -> Result<Arc<TextColumn>> {
        self.check_text_column(snapshot, column)?;
        if let Some(opened) = crate::sync::lock(&snapshot.derived.text).get(column) {
            return Ok(opened.clone());
        }
        let mut parts = Vec::with_capacity(snapshot.parts.len());
        for entry in &snapshot.parts {
            let Some(reader) = self.text_index(snapshot, entry, column).await? else {
                return Err(self.missing_text_index(entry, column));
            };
            let mask = self.deletion_mask(entry).await?;
            parts.push(TextPart {
                reader,
                mask,
                nulls_or_deleted: tokio::sync::OnceCell::new(),
            });
        }
        let stats = column_stats(&parts).await?;
        let opened = Arc::new(TextColumn { parts, stats });
        let mut derived = crate::sync::lock(&snapshot.derived.text);
        Ok(derived.entry(column.to_string()).or_insert(opened).clone())
    }

    /// The terms of `column`'s text index over `snapshot` starting with
    /// `prefix` (all with ""), in order, each with the live rows holding it;
    /// terms only deleted rows held are left out.
    pub async fn text_terms(
        &self,
        snapshot: &Snapshot,
        column: &str,
        prefix: &str,
    ) -> Result<Vec<(String, u64)>> {
        self.check_text_column(snapshot, column)?;
        let mut terms: std::collections::BTreeMap<String, u64> = Default::default();
        for entry in &snapshot.parts {
            let Some(reader) = self.text_index(snapshot, entry, column).await? else {
                return Err(self.missing_text_index(entry, column));
            };
            let mask = self.deletion_mask(entry).await?;
            for term in reader.terms_with_prefix(prefix).await? {
                let live = live_doc_freq(&reader, &term, mask.as_deref()).await?;
                *terms.entry(term).or_default() += live;
            }
        }
        Ok(terms.into_iter().filter(|(_, n)| *n > 0).collect())
    }

    /// An error unless `column` has a declared text index.
    pub(crate) fn check_text_column(&self, snapshot: &Snapshot, column: &str) -> Result<()> {
        match snapshot.options.text.indexes.contains_key(column) {
            true => Ok(()),
            false => Err(Error::Table(format!(
                "table '{}': column '{column}' has no text index (declare it with the \
                 option 'text_index')",
                self.name()
            ))),
        }
    }

    pub(crate) fn missing_text_index(&self, entry: &PartEntry, column: &str) -> Error {
        Error::Table(format!(
            "table '{}', part '{}': no text index on '{column}' yet; \
             run diagon_optimize('{}', true) to build it",
            self.name(),
            entry.name,
            self.name()
        ))
    }
}

/// One part's text index of a column and its deleted rows.
pub(crate) struct TextPart {
    pub reader: TextIndexReader,
    pub mask: Option<Arc<BooleanBuffer>>,
    /// Its deleted rows and the rows whose value is NULL, once a query
    /// that matches values without terms needed them (read from the
    /// column, kept with the snapshot).
    pub nulls_or_deleted: tokio::sync::OnceCell<Option<BooleanBuffer>>,
}

/// A column's text indexes over a snapshot: every part's, and the
/// column's statistics over the live rows.
pub(crate) struct TextColumn {
    pub parts: Vec<TextPart>,
    pub stats: ColumnStats,
}

/// The statistics of the live rows of `column`, with the document
/// frequencies of `terms`.
pub(crate) async fn statistics_of(column: &TextColumn, terms: &[String]) -> Result<TextStatistics> {
    let mut doc_freqs = vec![0; terms.len()];
    for part in &column.parts {
        let deleted = part.mask.as_deref();
        for (term, doc_freq) in terms.iter().zip(doc_freqs.iter_mut()) {
            *doc_freq += live_doc_freq(&part.reader, term, deleted).await?;
        }
    }
    Ok(TextStatistics {
        column: column.stats,
        doc_freqs,
    })
}

/// The column's statistics over the live rows of `parts`.
async fn column_stats(parts: &[TextPart]) -> Result<ColumnStats> {
    let mut stats = ColumnStats::default();
    for part in parts {
        let live = part_stats(&part.reader, part.mask.as_deref()).await?;
        stats.rows += live.rows;
        stats.total_len += live.total_len;
    }
    Ok(stats)
}

/// One part's live rows with tokens and their coded lengths.
async fn part_stats(
    reader: &TextIndexReader,
    deleted: Option<&BooleanBuffer>,
) -> Result<ColumnStats> {
    let summary = reader.summary();
    let mut part = summary.scored_stats();
    let disagree = || reader.malformed("its length codes disagree with its rows".into());
    if let Some(deleted) = deleted {
        // Take back what the deleted rows with tokens added.
        let mut block: Option<(usize, Arc<Vec<u8>>)> = None;
        for row in deleted.set_indices() {
            let b = row / NORMS_PER_BLOCK;
            if block.as_ref().is_none_or(|(at, _)| *at != b) {
                block = Some((b, reader.norms(b).await?));
            }
            let norms = &block.as_ref().expect("loaded above").1;
            let code = *norms.get(row % NORMS_PER_BLOCK).ok_or_else(disagree)?;
            let len = decode_length(code);
            if len > 0 {
                part.rows = part.rows.checked_sub(1).ok_or_else(disagree)?;
                part.total_len = part
                    .total_len
                    .checked_sub(u64::from(len))
                    .ok_or_else(disagree)?;
            }
        }
    }
    Ok(part)
}

/// Live rows of the part holding `term`.
async fn live_doc_freq(
    reader: &TextIndexReader,
    term: &str,
    deleted: Option<&BooleanBuffer>,
) -> Result<u64> {
    let Some(deleted) = deleted else {
        // Every row is live: the term info's count serves, without
        // decoding the postings.
        let info = reader.term(term).await?;
        return Ok(info.map_or(0, |i| u64::from(i.doc_freq)));
    };
    let rows = reader.rows(term).await?;
    let live = rows
        .iter()
        .filter(|&&row| row as usize >= deleted.len() || !deleted.value(row as usize))
        .count();
    Ok(live as u64)
}
