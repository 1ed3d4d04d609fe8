//! A scan's text queries: [`TextPruner`] narrows each granule to the rows
//! a `match` query matches, from the part's text index, or, in a part
//! written before the index was declared, by analysing the column's values
//! (the same answer, slowly); [`ScanScores`] scores the rows a `bm25`
//! query matches, part by part, with the snapshot's statistics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{Array, AsArray, BooleanBufferBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;

use super::prune::{PartContext, Pruner};
use super::{Granule, ScanPlan, Selection, SkipReason};
use crate::error::{Error, Result};
use crate::index::text::Analyzer;
use crate::index::text::bound::Bound;
use crate::index::text::component::TextIndexReader;
use crate::index::text::counts::{Counter, SearchCounters, counted};
use crate::index::text::score::{Hits, Scoring, scored_rows};
use crate::index::text::search::matching_rows;
use crate::part::component::Component;
use crate::part::{PartIndex, ReadStats};
use crate::storage::Storage;

/// Granules read at once when a part without the index is searched by
/// analysing its values.
const GRANULES_PER_READ: usize = 8;

/// The text index of `column` (analysed by `analyzer`) in a part, if the
/// part has one.
pub async fn open_text_index(
    index: &PartIndex,
    storage: &Storage,
    column: &str,
    analyzer: &Analyzer,
) -> Result<Option<TextIndexReader>> {
    let Some(meta) = crate::index::text_index_meta(&index.meta.components, column, analyzer) else {
        return Ok(None);
    };
    let component = Component::open(storage, &crate::part::part_dir(&index.meta.name), meta)?;
    TextIndexReader::open(component).await.map(Some)
}

/// The values of a string array of any of Arrow's three string types;
/// `None` for another type.
pub fn strings(values: &dyn Array) -> Option<Box<dyn Iterator<Item = Option<&str>> + '_>> {
    Some(match values.data_type() {
        DataType::Utf8 => Box::new(values.as_string::<i32>().iter()),
        DataType::LargeUtf8 => Box::new(values.as_string::<i64>().iter()),
        DataType::Utf8View => Box::new(values.as_string_view().iter()),
        _ => return None,
    })
}

/// Keeps the rows of granules that a text query matches in one column.
#[derive(Debug)]
pub struct TextPruner {
    pub column: String,
    pub analyzer: Analyzer,
    pub bound: Bound,
    /// The call as written, for EXPLAIN.
    label: String,
    /// Whether to answer from the index where a part has one (off, every
    /// part's values are analysed: the reference the index must agree with).
    use_index: bool,
    /// Parts answered by their index, and by analysing values.
    indexed: AtomicUsize,
    unindexed: AtomicUsize,
    /// What searching the indexes did.
    counts: Arc<SearchCounters>,
}

impl TextPruner {
    pub fn new(
        column: &str,
        analyzer: Analyzer,
        query: &str,
        bound: Bound,
        use_index: bool,
    ) -> Self {
        TextPruner {
            column: column.to_string(),
            analyzer,
            bound,
            label: format!("match({column}, '{query}')"),
            use_index,
            indexed: AtomicUsize::new(0),
            unindexed: AtomicUsize::new(0),
            counts: Arc::default(),
        }
    }

    /// The matching rows of the granules still to be read, analysing each
    /// value of the column.
    async fn analyse_values(
        &self,
        part: &PartContext<'_>,
        granules: &[Granule],
    ) -> Result<Vec<u32>> {
        let index = part.index;
        let position = index
            .column_position(&self.column)
            .ok_or_else(|| Error::Table(format!("the part has no column '{}'", self.column)))?;
        let field = Field::new(&self.column, index.data_type(position).clone(), true);
        let schema = Arc::new(Schema::new(vec![field]));
        let read: Vec<bool> = granules.iter().map(Granule::is_read).collect();
        let mut rows = Vec::new();
        for run in crate::part::index::ranges_of(&read) {
            for start in run.clone().step_by(GRANULES_PER_READ) {
                let range = start..(start + GRANULES_PER_READ).min(run.end);
                let mut stats = ReadStats::default();
                let batches = crate::part::read_granules(
                    part.storage,
                    index,
                    &[position],
                    &schema,
                    range.clone(),
                    &mut stats,
                )
                .await?;
                for (g, batch) in range.zip(batches) {
                    let first = index.granule_starts[g] as u32;
                    let matched = self.matching_values(batch.column(0).as_ref())?;
                    rows.extend(matched.into_iter().map(|i| first + i));
                }
            }
        }
        Ok(rows)
    }

    /// Positions in `values` of the non-null values the query matches.
    fn matching_values(&self, values: &dyn Array) -> Result<Vec<u32>> {
        let strings = strings(values).ok_or_else(|| {
            Error::Table(format!(
                "match() needs a text column, but '{}' is {}",
                self.column,
                values.data_type()
            ))
        })?;
        Ok(strings
            .enumerate()
            .filter(|(_, v)| v.is_some_and(|v| self.bound.matches(self.analyzer, v)))
            .map(|(i, _)| i as u32)
            .collect())
    }
}

#[async_trait]
impl Pruner for TextPruner {
    fn reason(&self) -> SkipReason {
        SkipReason::Text(self.column.clone())
    }

    async fn prune(&self, part: &PartContext<'_>, granules: &mut [Granule]) -> Result<bool> {
        let reader = match self.use_index {
            true => open_text_index(part.index, part.storage, &self.column, &self.analyzer).await?,
            false => None,
        };
        let rows = match reader {
            Some(reader) => {
                self.indexed.fetch_add(1, Ordering::Relaxed);
                counted(&self.counts, matching_rows(&reader, &self.bound)).await?
            }
            None => {
                self.unindexed.fetch_add(1, Ordering::Relaxed);
                self.analyse_values(part, granules).await?
            }
        };
        select(part.index, granules, &rows, &self.reason());
        Ok(true)
    }

    fn report(&self) -> Vec<(String, usize)> {
        let searched = [
            Counter::TermsLookedUp,
            Counter::BlocksDecoded,
            Counter::BlocksSkipped,
        ]
        .map(|c| {
            let name = format!("text_{}_{}", self.column, c.name());
            (name, self.counts.get(c))
        });
        let mut report = vec![
            (
                format!("text_{}_parts_indexed", self.column),
                self.indexed.load(Ordering::Relaxed),
            ),
            (
                format!("text_{}_parts_unindexed", self.column),
                self.unindexed.load(Ordering::Relaxed),
            ),
        ];
        report.extend(searched);
        report
    }

    fn describe(&self) -> Option<String> {
        Some(self.label.clone())
    }
}

/// Narrows the granules still to be read to `rows` (sorted part rows):
/// a granule none of them is in is skipped for `reason`.
fn select(index: &PartIndex, granules: &mut [Granule], rows: &[u32], reason: &SkipReason) {
    for (g, granule) in granules.iter_mut().enumerate() {
        if !granule.is_read() {
            continue;
        }
        let start = index.granule_starts[g];
        let len = index.granule_rows(g);
        let from = rows.partition_point(|&r| u64::from(r) < start);
        let to = rows.partition_point(|&r| u64::from(r) < start + len);
        if from == to {
            *granule = Granule::Skip(reason.clone());
            continue;
        }
        if to - from == len as usize {
            continue; // every row matches: the granule stays as it was
        }
        let mut bits = BooleanBufferBuilder::new(len as usize);
        bits.append_n(len as usize, false);
        for &r in &rows[from..to] {
            bits.set_bit((u64::from(r) - start) as usize, true);
        }
        let matched = bits.finish();
        let selected = match granule {
            Granule::Select(s) => &s.rows & &matched,
            _ => matched,
        };
        *granule = match selected.count_set_bits() {
            0 => Granule::Skip(reason.clone()),
            _ => Granule::Select(Selection::rows(selected)),
        };
    }
}

/// One BM25 score a scan computes: the rows `bound` matches in `column`,
/// scored with the snapshot's statistics.
#[derive(Debug, Clone)]
pub struct ScoreRequest {
    pub column: String,
    pub analyzer: Analyzer,
    pub bound: Bound,
    pub scoring: Scoring,
}

impl ScoreRequest {
    /// The text index `part` scores with; every part must have one.
    pub async fn index(&self, part: &super::PartPlan) -> Result<TextIndexReader> {
        open_text_index(&part.index, &part.storage, &self.column, &self.analyzer)
            .await?
            .ok_or_else(|| {
                Error::Table(format!(
                    "part '{}' has no text index on '{}' to score with (written before \
                     the index was declared, with another analyzer or in an older format: \
                     diagon_optimize('<table>', true) builds it)",
                    part.name(),
                    self.column
                ))
            })
    }
}

/// The scores a scan computes, part by part when first needed: a part a
/// top-k search or a LIMIT never reaches is never scored.
#[derive(Debug)]
pub struct ScanScores {
    pub requests: Vec<ScoreRequest>,
    /// Per part of the plan, each request's hits.
    parts: Vec<tokio::sync::OnceCell<Vec<Arc<Hits>>>>,
}

impl ScanScores {
    pub fn new(requests: Vec<ScoreRequest>, parts: usize) -> Self {
        ScanScores {
            requests,
            parts: (0..parts).map(|_| tokio::sync::OnceCell::new()).collect(),
        }
    }

    /// Every request's hits in part `p` of `plan`, which must hold the
    /// scored columns' indexes.
    pub async fn part(&self, plan: &ScanPlan, p: usize) -> Result<&[Arc<Hits>]> {
        let part = &plan.parts[p];
        let cell = self
            .parts
            .get(p)
            .ok_or_else(|| Error::Table(format!("no scores for part {p} of the plan")))?;
        let hits = cell
            .get_or_try_init(|| async {
                let mut all = Vec::with_capacity(self.requests.len());
                for request in &self.requests {
                    let reader = request.index(part).await?;
                    let hits = scored_rows(&reader, &request.bound, &request.scoring).await?;
                    all.push(Arc::new(hits));
                }
                Ok::<_, Error>(all)
            })
            .await?;
        Ok(hits)
    }
}
