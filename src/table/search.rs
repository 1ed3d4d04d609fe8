//! Text search as a library call, without SQL: the best live rows of a
//! query by BM25 ([`Table::search`]) and how many live rows match
//! ([`Table::count_matches`]), over a snapshot. The query means what it
//! means in SQL's `match` and `bm25` on the column (the table's analyzer
//! and default operator). The index does not know NULLs: for a query
//! that matches values without terms (only excluded clauses), each
//! part's NULLs are read from the column and left out, as SQL leaves
//! them out.

use std::sync::Arc;

use arrow::array::Array;
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{Field, Schema};
use async_trait::async_trait;

use super::log::PartEntry;
use super::text::{TextPart, statistics_of};
use super::{Snapshot, Table};
use crate::error::Result;
use crate::index::text::bound::Bound;
use crate::index::text::score::{Scoring, scored_rows, scored_terms};
use crate::index::text::search::{count_matching, is_deleted};
use crate::index::text::topk::{Collector, Ranked, TopRows, search};
use crate::index::text::{Analyzer, DefaultOperator, Query};
use crate::table::TableOptions;

impl Table {
    /// The rows of `part` (the text index of `column` in part `entry`)
    /// that `bound` must not match: its deleted rows, and when the query
    /// matches values without terms, the rows whose value is NULL (no
    /// index knows them: read from the column once per snapshot).
    async fn unmatchable(
        &self,
        snapshot: &Snapshot,
        entry: &PartEntry,
        column: &str,
        bound: &Bound,
        part: &TextPart,
    ) -> Result<Option<BooleanBuffer>> {
        let deleted = part.mask.as_deref().cloned();
        if bound.needs_terms() {
            return Ok(deleted);
        }
        let nulls = part
            .nulls_or_deleted
            .get_or_try_init(|| self.nulls_or_deleted(snapshot, entry, column, deleted))
            .await?;
        Ok(nulls.clone())
    }

    /// The rows of part `entry` whose `column` is NULL, or `deleted`.
    async fn nulls_or_deleted(
        &self,
        snapshot: &Snapshot,
        entry: &PartEntry,
        column: &str,
        deleted: Option<BooleanBuffer>,
    ) -> Result<Option<BooleanBuffer>> {
        let index = self.entry_index(snapshot, entry).await?;
        let Some(position) = index.column_position(column) else {
            return Ok(deleted);
        };
        // A granule whose null count is unknown may hold NULLs.
        if index.null_counts(position).iter().all(|n| n == Some(0)) {
            return Ok(deleted);
        }
        let field = Field::new(column, index.data_type(position).clone(), true);
        let schema = Arc::new(Schema::new(vec![field]));
        let storage = self.storage_for(entry)?;
        let granules = 0..index.num_granules();
        let mut stats = crate::part::ReadStats::default();
        let batches = crate::part::read_granules(
            &storage,
            &index,
            &[position],
            &schema,
            granules,
            &mut stats,
        )
        .await?;
        let mut nulls = Vec::with_capacity(index.meta.rows as usize);
        for batch in &batches {
            let values = batch.column(0);
            nulls.extend((0..values.len()).map(|i| values.is_null(i)));
        }
        if let Some(deleted) = &deleted {
            let rows = nulls.len();
            for row in deleted.set_indices().take_while(|&r| r < rows) {
                nulls[row] = true;
            }
        }
        Ok(Some(BooleanBuffer::from(nulls)))
    }
}

/// A row found by [`Table::search`].
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The part holding the row, and its row number there.
    pub part: String,
    pub row: u32,
    pub score: f32,
}

/// How a table searches one of its columns: with the column's text
/// index analyzer (`standard` without one) and the table's default
/// operator. SQL's `match` and `bm25` carry it from planning to the scan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TextTarget {
    /// The column's name in its table.
    pub column: String,
    pub analyzer: Analyzer,
    pub operator: DefaultOperator,
}

impl TextTarget {
    /// How a table with `options` searches `column`.
    pub fn of(options: &TableOptions, column: &str) -> TextTarget {
        let text = &options.text;
        TextTarget {
            column: column.to_string(),
            analyzer: text.indexes.get(column).copied().unwrap_or_default(),
            operator: text.default_operator,
        }
    }

    /// `query` parsed and bound to the column.
    pub fn bind(&self, query: &str) -> Result<Bound> {
        let parsed = Query::parse(query, self.operator)?;
        Bound::bind(&parsed, &self.column, self.analyzer)
    }
}

impl Table {
    /// The `k` best live rows for `query` on the text-indexed `column`,
    /// best first (equal scores in table order), scored with the
    /// snapshot's statistics.
    pub async fn search(
        &self,
        snapshot: &Snapshot,
        column: &str,
        query: &str,
        k: usize,
    ) -> Result<Vec<SearchHit>> {
        let bound = TextTarget::of(&snapshot.options, column).bind(query)?;
        self.search_bound(snapshot, column, &bound, k).await
    }

    /// [`Self::search`] for a query already bound to the column (with
    /// [`TextTarget::bind`]): a query run many times is parsed once.
    pub async fn search_bound(
        &self,
        snapshot: &Snapshot,
        column: &str,
        bound: &Bound,
        k: usize,
    ) -> Result<Vec<SearchHit>> {
        // Each part's index is opened once, for statistics and search.
        let column_index = self.text_parts(snapshot, column).await?;
        let terms = scored_terms(bound);
        let stats = statistics_of(&column_index, &terms).await?;
        let scoring = Scoring::new(
            snapshot.options.text.bm25,
            stats.column,
            &terms,
            &stats.doc_freqs,
        );
        let mut best = TopRows::new(k);
        for (p, part) in column_index.parts.iter().enumerate() {
            if k == 0 {
                break;
            }
            let entry = &snapshot.parts[p];
            let unmatchable = self
                .unmatchable(snapshot, entry, column, bound, part)
                .await?;
            let mut live = LiveRows {
                best: &mut best,
                part: p,
                deleted: unmatchable.as_ref(),
            };
            let reader = &part.reader;
            if search(reader, bound, &scoring, &mut live).await?.is_none() {
                let hits = scored_rows(reader, bound, &scoring).await?;
                for (&row, &score) in hits.rows.iter().zip(&hits.scores) {
                    if score > live.threshold() {
                        live.collect(row, score).await?;
                    }
                }
            }
        }
        Ok(best
            .into_sorted()
            .into_iter()
            .map(|r| SearchHit {
                part: snapshot.parts[r.part].name.clone(),
                row: r.row,
                score: r.score,
            })
            .collect())
    }

    /// How many live rows of `column` match `query`, from its text index.
    pub async fn count_matches(
        &self,
        snapshot: &Snapshot,
        column: &str,
        query: &str,
    ) -> Result<u64> {
        let bound = TextTarget::of(&snapshot.options, column).bind(query)?;
        self.count_bound(snapshot, column, &bound).await
    }

    /// [`Self::count_matches`] for a query already bound to the column.
    pub async fn count_bound(
        &self,
        snapshot: &Snapshot,
        column: &str,
        bound: &Bound,
    ) -> Result<u64> {
        let mut count = 0u64;
        let column_index = self.text_parts(snapshot, column).await?;
        for (entry, part) in snapshot.parts.iter().zip(&column_index.parts) {
            let mask = self
                .unmatchable(snapshot, entry, column, bound, part)
                .await?;
            let (reader, mask) = (&part.reader, mask.as_ref());
            if let (Bound::Term { term, .. }, None) = (bound, mask) {
                // Every row is live: the term's count is in its term info.
                count += reader
                    .term(term)
                    .await?
                    .map_or(0, |i| u64::from(i.doc_freq));
                continue;
            }
            count += count_matching(reader, bound, mask).await?;
        }
        Ok(count)
    }
}

/// Offers a part's live rows to the best.
struct LiveRows<'a> {
    best: &'a mut TopRows,
    part: usize,
    deleted: Option<&'a BooleanBuffer>,
}

#[async_trait]
impl Collector for LiveRows<'_> {
    fn threshold(&self) -> f32 {
        self.best.threshold()
    }

    async fn collect(&mut self, row: u32, score: f32) -> Result<()> {
        self.collect_now(row, score).unwrap_or(Ok(()))
    }

    fn collect_now(&mut self, row: u32, score: f32) -> Option<Result<()>> {
        if !is_deleted(self.deleted, row) {
            self.best.push(Ranked {
                score,
                part: self.part,
                row,
            });
        }
        Some(Ok(()))
    }
}
