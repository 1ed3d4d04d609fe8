//! BM25 scores of the rows of a part that a bound query matches, with
//! statistics over the whole snapshot ([`Scoring`]), as Lucene scores:
//!
//! - a term: `boost · idf · freq / (freq + k1 · (1 - b + b · len / avg_len))`
//!   with `len` the row's one-byte length code decoded;
//! - a phrase: the same with the phrase's frequency (see
//!   [`super::bound::phrase_freq`]) and the sum of its terms' idfs;
//! - a prefix or fuzzy word: its boost, for every row it matches (Lucene's
//!   constant-score rewrite of multi-term queries);
//! - a boolean query: the sum of the scores of its matching `Must` and
//!   `Should` clauses; `MustNot` clauses add nothing, and a query of only
//!   those scores 0.
//!
//! Matching is [`super::search`]'s; this also reads frequencies, positions
//! and length codes, so it is kept for queries that ask for scores.

use std::collections::HashMap;
use std::sync::Arc;

use super::bm25::{Bm25, ColumnStats, TermScorer, idf};
use super::bound::Bound;
use super::component::{NORMS_PER_BLOCK, TextIndexReader};
use super::postings::END;
use super::query::Occur;
use super::search::{difference, matching_rows, phrase_occurrences};
use crate::error::Result;

/// What scoring needs beyond a part: BM25's parameters and the column's
/// statistics over the snapshot, with the document frequency of every term
/// the query scores.
#[derive(Debug, Clone)]
pub struct Scoring {
    pub bm25: Bm25,
    pub column: ColumnStats,
    doc_freqs: HashMap<String, u64>,
    /// A scorer of weight 1: its length normalisation (256 divisions) is
    /// the column's, computed once for every term scored.
    unit: TermScorer,
}

impl Scoring {
    /// `doc_freqs[i]` is the document frequency of `terms[i]`.
    pub fn new(bm25: Bm25, column: ColumnStats, terms: &[String], doc_freqs: &[u64]) -> Self {
        Scoring {
            bm25,
            column,
            unit: TermScorer::with_weight(bm25, column, 1.0),
            doc_freqs: terms
                .iter()
                .cloned()
                .zip(doc_freqs.iter().copied())
                .collect(),
        }
    }

    fn idf(&self, term: &str) -> f32 {
        // A term no live row holds scores no row; its idf is still defined.
        let doc_freq = self.doc_freqs.get(term).copied().unwrap_or(0);
        idf(self.column.rows, doc_freq)
    }

    fn scorer(&self, weight: f32) -> TermScorer {
        self.unit.with_same_norms(weight)
    }

    /// The scorer of `term` with `boost`.
    pub fn term_scorer(&self, term: &str, boost: f32) -> TermScorer {
        self.scorer(boost * self.idf(term))
    }
}

/// Rows in ascending order, each with its score.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hits {
    pub rows: Vec<u32>,
    pub scores: Vec<f32>,
}

impl Hits {
    fn constant(rows: Vec<u32>, score: f32) -> Self {
        let scores = vec![score; rows.len()];
        Hits { rows, scores }
    }

    fn push(&mut self, row: u32, score: f32) {
        self.rows.push(row);
        self.scores.push(score);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The score of each of `rows` (ascending): 0 for a row not matched.
    pub fn scores_of(&self, rows: impl IntoIterator<Item = u64>) -> Vec<f32> {
        let mut j = 0;
        rows.into_iter()
            .map(|row| {
                while j < self.rows.len() && u64::from(self.rows[j]) < row {
                    j += 1;
                }
                match self.rows.get(j) {
                    Some(&r) if u64::from(r) == row => self.scores[j],
                    _ => 0.0,
                }
            })
            .collect()
    }
}

/// The terms whose document frequencies scoring `bound` needs, each once.
pub fn scored_terms(bound: &Bound) -> Vec<String> {
    let mut terms = Vec::new();
    collect_terms(bound, &mut terms);
    terms.sort();
    terms.dedup();
    terms
}

fn collect_terms(bound: &Bound, out: &mut Vec<String>) {
    match bound {
        Bound::Term { term, .. } => out.push(term.clone()),
        Bound::Phrase { terms, .. } => out.extend(terms.iter().map(|(t, _)| t.clone())),
        Bound::Boolean(clauses) => clauses.iter().for_each(|(_, c)| collect_terms(c, out)),
        Bound::Prefix { .. } | Bound::Fuzzy { .. } | Bound::Nothing => {}
    }
}

/// The rows of the part `reader` indexes that `bound` matches, with their
/// scores.
pub async fn scored_rows(
    reader: &TextIndexReader,
    bound: &Bound,
    scoring: &Scoring,
) -> Result<Hits> {
    let mut norms = Norms::new(reader);
    let hits = Box::pin(score(reader, bound, scoring, &mut norms)).await?;
    super::counts::add(super::counts::Counter::RowsScored, hits.rows.len());
    Ok(hits)
}

async fn score(
    reader: &TextIndexReader,
    bound: &Bound,
    scoring: &Scoring,
    norms: &mut Norms<'_>,
) -> Result<Hits> {
    Ok(match bound {
        Bound::Term { term, boost } => {
            let scorer = scoring.term_scorer(term, *boost);
            term_hits(reader, term, &scorer, norms).await?
        }
        Bound::Phrase { terms, slop, boost } => {
            phrase_hits(reader, terms, *slop, *boost, scoring, norms, None).await?
        }
        Bound::Prefix { boost, .. } | Bound::Fuzzy { boost, .. } => {
            Hits::constant(matching_rows(reader, bound).await?, *boost)
        }
        Bound::Boolean(clauses) => {
            let mut must: Option<Hits> = None;
            let mut should: Option<Hits> = None;
            let mut excluded: Vec<u32> = Vec::new();
            // Required phrases come last, scored only on the rows the
            // other required clauses leave (two-phase).
            let phrase_last = clauses
                .iter()
                .filter(|(o, c)| !(*o == Occur::Must && matches!(c, Bound::Phrase { .. })))
                .chain(
                    clauses
                        .iter()
                        .filter(|(o, c)| *o == Occur::Must && matches!(c, Bound::Phrase { .. })),
                );
            for (occur, clause) in phrase_last {
                if let (Occur::Must, Bound::Phrase { terms, slop, boost }) = (occur, clause) {
                    let candidates = must.as_ref().map(|m| m.rows.as_slice());
                    let hits =
                        phrase_hits(reader, terms, *slop, *boost, scoring, norms, candidates)
                            .await?;
                    must = Some(match must {
                        Some(m) => intersect_sum(&m, &hits),
                        None => hits,
                    });
                    continue;
                }
                match occur {
                    Occur::MustNot => {
                        let rows = matching_rows(reader, clause).await?;
                        excluded = super::search::union(&excluded, &rows);
                    }
                    Occur::Must => {
                        let hits = Box::pin(score(reader, clause, scoring, norms)).await?;
                        must = Some(match must {
                            Some(m) => intersect_sum(&m, &hits),
                            None => hits,
                        });
                    }
                    Occur::Should => {
                        let hits = Box::pin(score(reader, clause, scoring, norms)).await?;
                        should = Some(match should {
                            Some(s) => union_sum(&s, &hits),
                            None => hits,
                        });
                    }
                }
            }
            let candidates = match (must, should) {
                (Some(must), Some(should)) => add_optional(&must, &should),
                (Some(must), None) => must,
                (None, Some(should)) => should,
                (None, None) => {
                    Hits::constant((0..reader.summary().part_rows as u32).collect(), 0.0)
                }
            };
            without(candidates, &excluded)
        }
        Bound::Nothing => Hits::default(),
    })
}

/// Every row holding `term`, scored.
async fn term_hits(
    reader: &TextIndexReader,
    term: &str,
    scorer: &TermScorer,
    norms: &mut Norms<'_>,
) -> Result<Hits> {
    let Some(info) = reader.term(term).await? else {
        return Ok(Hits::default());
    };
    let bytes = reader.postings(&info).await?;
    let list = bytes.open(reader)?;
    let mut cursor = list.cursor().map_err(|e| reader.malformed(e))?;
    let mut hits = Hits::default();
    while cursor.row() != END {
        let row = cursor.row();
        hits.push(row, scorer.score(cursor.freq(), norms.get(row).await?));
        cursor.advance().map_err(|e| reader.malformed(e))?;
    }
    Ok(hits)
}

/// Rows holding the phrase (among `candidates` when given), scored by its
/// frequency in each, with the sum of its terms' idfs.
async fn phrase_hits(
    reader: &TextIndexReader,
    terms: &[(String, u32)],
    slop: u32,
    boost: f32,
    scoring: &Scoring,
    norms: &mut Norms<'_>,
    candidates: Option<&[u32]>,
) -> Result<Hits> {
    let idf: f32 = terms.iter().map(|(t, _)| scoring.idf(t)).sum();
    let scorer = scoring.scorer(boost * idf);
    let mut hits = Hits::default();
    for (row, freq) in phrase_occurrences(reader, terms, slop, true, candidates).await? {
        hits.push(row, scorer.score_freq(freq, norms.get(row).await?));
    }
    Ok(hits)
}

/// Rows in both, their scores summed.
fn intersect_sum(a: &Hits, b: &Hits) -> Hits {
    let (mut i, mut j, mut out) = (0, 0, Hits::default());
    while i < a.len() && j < b.len() {
        match a.rows[i].cmp(&b.rows[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a.rows[i], a.scores[i] + b.scores[j]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Rows in either, their scores summed where in both.
fn union_sum(a: &Hits, b: &Hits) -> Hits {
    let (mut i, mut j, mut out) = (0, 0, Hits::default());
    while i < a.len() || j < b.len() {
        let row = match (a.rows.get(i), b.rows.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => unreachable!("loop condition"),
        };
        let mut score = 0.0;
        if a.rows.get(i) == Some(&row) {
            score += a.scores[i];
            i += 1;
        }
        if b.rows.get(j) == Some(&row) {
            score += b.scores[j];
            j += 1;
        }
        out.push(row, score);
    }
    out
}

/// `required`'s rows, each adding `optional`'s score where it has the row.
fn add_optional(required: &Hits, optional: &Hits) -> Hits {
    let mut out = required.clone();
    let mut j = 0;
    for (row, score) in out.rows.iter().zip(out.scores.iter_mut()) {
        while j < optional.len() && optional.rows[j] < *row {
            j += 1;
        }
        if optional.rows.get(j) == Some(row) {
            *score += optional.scores[j];
        }
    }
    out
}

/// `hits` without the rows of `excluded` (sorted).
fn without(hits: Hits, excluded: &[u32]) -> Hits {
    if excluded.is_empty() {
        return hits;
    }
    let kept = difference(&hits.rows, excluded);
    let mut out = Hits::default();
    let mut k = 0;
    for (row, score) in hits.rows.into_iter().zip(hits.scores) {
        if kept.get(k) == Some(&row) {
            out.push(row, score);
            k += 1;
        }
    }
    out
}

/// The length codes of a part's rows, a norm block at a time.
pub(crate) struct Norms<'a> {
    reader: &'a TextIndexReader,
    block: Option<(usize, Arc<Vec<u8>>)>,
}

impl<'a> Norms<'a> {
    pub(crate) fn new(reader: &'a TextIndexReader) -> Self {
        Norms {
            reader,
            block: None,
        }
    }

    /// The length codes of `rows` (ascending), into `out`.
    pub(crate) async fn codes(&mut self, rows: &[u32], out: &mut [u8]) -> Result<()> {
        let (Some(&first), Some(&last)) = (rows.first(), rows.last()) else {
            return Ok(());
        };
        let b = first as usize / NORMS_PER_BLOCK;
        if last as usize / NORMS_PER_BLOCK == b {
            // One norms block holds them all: a gather.
            self.get(first).await?;
            let (_, codes) = self.block.as_ref().expect("loaded by get");
            let base = b * NORMS_PER_BLOCK;
            if let Some(codes) = codes.get(..=last as usize - base) {
                for (&row, code) in rows.iter().zip(out.iter_mut()) {
                    *code = codes[row as usize - base];
                }
                return Ok(());
            }
        }
        for (&row, code) in rows.iter().zip(out.iter_mut()) {
            *code = self.get(row).await?;
        }
        Ok(())
    }

    /// `row`'s length code if its norms block is the one loaded.
    #[inline]
    pub(crate) fn cached(&self, row: u32) -> Option<u8> {
        let (b, codes) = self.block.as_ref()?;
        let at = (row as usize).checked_sub(b * NORMS_PER_BLOCK)?;
        codes.get(at).copied()
    }

    pub(crate) async fn get(&mut self, row: u32) -> Result<u8> {
        let codes = self.load(row).await?;
        codes
            .get(row as usize % NORMS_PER_BLOCK)
            .copied()
            .ok_or_else(|| {
                self.reader
                    .malformed(format!("row {row} has no length code"))
            })
    }

    /// The length codes of the norms block holding `row`, from the row
    /// the block starts at.
    pub(crate) async fn block(&mut self, row: u32) -> Result<(u32, Arc<Vec<u8>>)> {
        let codes = self.load(row).await?.clone();
        Ok((row - row % NORMS_PER_BLOCK as u32, codes))
    }

    /// Loads the norms block holding `row` unless it is the one loaded.
    async fn load(&mut self, row: u32) -> Result<&Arc<Vec<u8>>> {
        let b = row as usize / NORMS_PER_BLOCK;
        if self.block.as_ref().is_none_or(|(at, _)| *at != b) {
            self.block = Some((b, self.reader.norms(b).await?));
        }
        Ok(&self.block.as_ref().expect("loaded above").1)
    }
}
