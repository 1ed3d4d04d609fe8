//! The best-scoring rows of a part, mostly without scoring every match:
//! MaxScore over windows of rows for a disjunction of terms (Turtle and
//! Flood, 1995, as Lucene's `MaxScoreBulkScorer` runs it), or every row
//! scored a norms block at a time when its lists are short (Lucene's
//! `BooleanScorer`; bounds pass little of short lists, and cost seeks);
//! block-max intersection for a conjunction (Ding and Suel, "Faster top-k
//! document retrieval using block-max indexes", 2011), block by block for
//! one term.
//!
//! Each posting block's impacts bound the scores of its rows exactly (the
//! best score of its competitive (frequency, length) pairs), read by
//! their lead first (see [`super::postings`]): alone when the query
//! scores as the part's reference scoring does, else scaled, to pass a
//! block before its other pairs are read. A
//! [`Collector`] holds the best rows so far and says what score a row
//! must beat; blocks whose bounds cannot beat it are passed without
//! decoding their rows' scores, and rows that cannot beat it are never
//! scored in full.
//!
//! Queries of other shapes (phrases, prefixes, nested booleans) are not
//! searched here: [`search`] says so and the caller scores every match.
//! Scores equal [`super::score`]'s to the bit: clauses are summed in the
//! same order.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use async_trait::async_trait;

use super::bm25::TermScorer;
use super::bound::Bound;
use super::component::{NORMS_PER_BLOCK, TextIndexReader};
use super::counts::{self, Counter};
use super::postings::{BLOCK_LEN, Cursor, END, PostingList};
use super::query::Occur;
use super::score::{Norms, Scoring};
use super::search::{matching_rows, union};
use crate::error::Result;

/// Where the rows found go: the caller's top-k.
#[async_trait]
pub trait Collector: Send {
    /// The score a row must beat to be collected; `f32::NEG_INFINITY`
    /// until the collector is full.
    fn threshold(&self) -> f32;

    /// Offers a row beating the threshold (rows come in ascending order).
    async fn collect(&mut self, row: u32, score: f32) -> Result<()>;

    /// Takes a row as [`Self::collect`] does when the collector needs
    /// nothing read to decide (`Some`, with the outcome); `None` (the
    /// default) when the row must be offered by `collect`. The searches
    /// ask this first: an `async` call through a trait object allocates
    /// its future.
    fn collect_now(&mut self, _row: u32, _score: f32) -> Option<Result<()>> {
        None
    }

    /// The first row at or after `row` the collector may take ([`END`]
    /// if none): rows before it are passed over without scoring. A
    /// collector for a scan whose other filters pruned granules skips
    /// them so (the default takes every row). An answer holds until the
    /// next [`Self::collect`]: a search may skip rows by it until then (a
    /// collector learns which rows fail its filters only from the rows
    /// offered to it).
    fn next_candidate(&mut self, row: u32) -> u32 {
        row
    }
}

/// A row found: its score, part (by position in the searched order) and
/// row in the part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    pub score: f32,
    pub part: usize,
    pub row: u32,
}

/// The best `k` rows so far, over parts searched in order: a heap whose
/// top is the worst of them (lowest score; of equal scores, the latest in
/// table order, so that ties keep the earliest rows).
pub struct TopRows {
    k: usize,
    heap: BinaryHeap<Worst>,
}

#[derive(Debug, Clone, Copy)]
struct Worst(Ranked);

impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        // Greater = worse: a lower score, then a later row.
        other
            .0
            .score
            .total_cmp(&self.0.score)
            .then((self.0.part, self.0.row).cmp(&(other.0.part, other.0.row)))
    }
}

impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Worst {}

impl TopRows {
    pub fn new(k: usize) -> Self {
        TopRows {
            k,
            heap: BinaryHeap::new(),
        }
    }

    /// What a row must score to enter.
    pub fn threshold(&self) -> f32 {
        match self.heap.len() < self.k {
            true => f32::NEG_INFINITY,
            false => self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.score),
        }
    }

    /// Adds `candidate`, which beats the threshold, dropping the worst
    /// (in its place: one sift instead of a pop's and a push's).
    pub fn push(&mut self, candidate: Ranked) {
        match self.heap.len() < self.k {
            true => self.heap.push(Worst(candidate)),
            false => {
                if let Some(mut worst) = self.heap.peek_mut() {
                    *worst = Worst(candidate);
                }
            }
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<Ranked> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|w| w.0)
            .collect()
    }
}

/// What the search counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct SearchCounts {
    /// Rows scored in full.
    pub scored: usize,
    /// Times a run of rows was passed by block bounds.
    pub blocks_skipped: usize,
}

/// Term clauses of a query this module searches: `Should` terms (a
/// disjunction), or `Must` terms with optional `Should` terms; `MustNot`
/// clauses of any kind exclude rows.
struct Shape<'b> {
    /// (term, boost, required), in the query's order.
    terms: Vec<(&'b str, f32, bool)>,
    excluded: Vec<&'b Bound>,
}

fn shape(bound: &Bound) -> Option<Shape<'_>> {
    match bound {
        Bound::Term { term, boost } => Some(Shape {
            terms: vec![(term, *boost, false)],
            excluded: Vec::new(),
        }),
        Bound::Boolean(clauses) => {
            let mut shape = Shape {
                terms: Vec::new(),
                excluded: Vec::new(),
            };
            for (occur, clause) in clauses {
                match (occur, clause) {
                    (Occur::MustNot, c) => shape.excluded.push(c),
                    (occur, Bound::Term { term, boost }) => {
                        shape.terms.push((term, *boost, *occur == Occur::Must))
                    }
                    _ => return None,
                }
            }
            (!shape.terms.is_empty()).then_some(shape)
        }
        _ => None,
    }
}

/// One term's postings being walked.
struct Clause<'l, 'a> {
    /// Position in the query, for summing in the query's order.
    order: usize,
    required: bool,
    list: &'l PostingList<'a>,
    cursor: Cursor<'l, 'a>,
    scorer: TermScorer,
    leads: Leads<'l>,
    /// Each block's score bound once needed (NaN before: a search visits
    /// few of a frequent term's blocks), and a bound on them all (NaN
    /// until needed).
    block_max: Vec<f32>,
    max: f32,
    /// The rows of the block last asked about and its bound: the search
    /// asks about the same block many times before it moves on.
    window: (u32, u32, f32),
    /// Impacts that did not decode (see [`Clause::bound`]).
    fault: Option<String>,
}

impl Clause<'_, '_> {
    fn row(&self) -> u32 {
        self.cursor.row()
    }

    /// The block holding `row` (`None` past the list): the cursor's own
    /// block when it holds it, else found by the skip entries.
    fn block_at(&self, row: u32) -> Option<usize> {
        let b = self.cursor.block();
        let starts_before = b == 0 || self.list.last_row(b - 1) < row;
        if b < self.list.blocks() && starts_before && row <= self.list.last_row(b) {
            return Some(b);
        }
        match starts_before && b < self.list.blocks() {
            // Past the cursor's block: search on from it.
            true => self.list.block_of_from(b, row),
            false => self.list.block_of(row),
        }
    }

    /// The bound on the scores of the block holding `row` (0 past the list).
    #[inline]
    fn block_max_at(&mut self, row: u32) -> f32 {
        self.window_at(row).2
    }

    /// The last row of the block holding `row` (`END` past the list).
    #[inline]
    fn block_end_at(&mut self, row: u32) -> u32 {
        self.window_at(row).1
    }

    /// The first and last rows of the block holding `row` and its bound
    /// (past the list: its rows to `END`, bound 0).
    #[inline]
    fn window_at(&mut self, row: u32) -> (u32, u32, f32) {
        let (first, last, _) = self.window;
        if first <= row && row <= last {
            return self.window;
        }
        self.window = match self.block_at(row) {
            Some(b) => {
                let first = match b {
                    0 => 0,
                    b => self.list.last_row(b - 1) + 1,
                };
                (first, self.list.last_row(b), self.bound(b))
            }
            None => (
                self.list.last_row(self.list.blocks() - 1).saturating_add(1),
                END,
                0.0,
            ),
        };
        self.window
    }

    /// A bound on the scores of the rows from `lo` to `hi` the clause
    /// holds: the best of its blocks' bounds there, or of all its blocks'
    /// when the window spans more than `SPAN` of them.
    fn max_between(&mut self, lo: u32, hi: u32) -> f32 {
        let from = self.row().max(lo);
        if from > hi {
            return 0.0;
        }
        let Some(first) = self.block_at(from) else {
            return 0.0;
        };
        let mut best = 0f32;
        for b in first..self.list.blocks() {
            if b - first == SPAN {
                return self.max_all();
            }
            best = best.max(self.bound(b));
            if self.list.last_row(b) >= hi {
                break;
            }
        }
        best
    }

    /// The best of all the blocks' bounds: the list's lead's score when
    /// leads are exact.
    fn max_all(&mut self) -> f32 {
        if self.max.is_nan() {
            self.max = match self.leads {
                Leads::Exact => match self.list.list_lead() {
                    Ok((freq, code)) => self.scorer.score(freq, code),
                    Err(fault) => {
                        self.fault.get_or_insert(fault);
                        f32::INFINITY
                    }
                },
                _ => (0..self.list.blocks())
                    .map(|b| self.bound(b))
                    .fold(0.0, f32::max),
            };
        }
        self.max
    }

    /// Whether block `b` may hold a row scoring above `threshold`, the
    /// block's lead read first: it decides alone when it bounds the
    /// block exactly, and a scaled lead's bound passes most blocks a
    /// search passes before their impacts are read.
    fn block_may_beat(&self, b: usize, threshold: f32) -> std::result::Result<bool, String> {
        if let Leads::Scaled(reference, scale) = self.leads {
            let (freq, code) = self.list.lead(b)?;
            let upper = self
                .scorer
                .score_tf(scale * reference.tf(freq as f32, code));
            if !may_beat(upper, threshold, 1) {
                return Ok(false);
            }
        }
        Ok(may_beat(self.exact_bound(b)?, threshold, 1))
    }

    /// The best score of block `b`'s rows: its lead's when leads are
    /// exact, else the best of its impacts'.
    fn exact_bound(&self, b: usize) -> std::result::Result<f32, String> {
        match self.leads {
            Leads::Exact => {
                let (freq, code) = self.list.lead(b)?;
                Ok(self.scorer.score(freq, code))
            }
            _ => block_max(self.list, b, &self.scorer),
        }
    }

    /// Block `b`'s bound, computed the first time. Impacts that do not
    /// decode bound nothing (infinity, so the search goes on correctly)
    /// and are kept as the clause's fault, which the search reports when
    /// it ends (the loops that ask for bounds stay free of error paths:
    /// with them, the union search ran 7% more instructions).
    fn bound(&mut self, b: usize) -> f32 {
        let known = self.block_max[b];
        if !known.is_nan() {
            return known;
        }
        let bound = match self.exact_bound(b) {
            Ok(bound) => bound,
            Err(fault) => {
                self.fault.get_or_insert(fault);
                f32::INFINITY
            }
        };
        self.block_max[b] = bound;
        bound
    }
}

/// Rows a disjunction's essential clauses gather at once, as Lucene's
/// `MaxScoreBulkScorer` (measured: 1,024 took 10% longer on the union
/// queries; the buffers are reused, so their size costs nothing).
const WINDOW: usize = 4096;

/// Blocks of a clause whose bounds a window's bound is the best of; a
/// window spanning more takes the clause's bound on all its blocks (a
/// frequent term's window under a rare term's block).
const SPAN: usize = 8;

/// A disjunction's windows: the clauses' bounds in the current one, and
/// which are essential.
struct Windows {
    /// By clause (query order): its bound in the window.
    bounds: Vec<f32>,
    /// Clauses by ascending bound: `..split` non-essential, `split..`
    /// essential.
    by_bound: Vec<usize>,
    /// `prefix[j]`: the bounds of `by_bound[..=j]` summed.
    prefix: Vec<f32>,
    split: usize,
    /// By clause: its score in the row being completed, 0.0 if it does
    /// not hold it (0.0 between rows).
    scores: Vec<f32>,
    gather: Option<Gather>,
    /// [`slack`] for all the clauses.
    slack: f32,
}

impl Windows {
    /// Chooses the window from `lo` and partitions the clauses by their
    /// bounds in it against `threshold`; returns its last row (`None`
    /// when no clause holds a row from `lo` on). The window ends where the first of the
    /// essential clauses' blocks (all clauses', at first) ends, and spans
    /// at least 32 rows per such clause (Lucene's choice: windows ending
    /// at every block boundary of many clauses cost more in bounds than
    /// they save).
    fn partition(
        &mut self,
        clauses: &mut [Box<Clause<'_, '_>>],
        lo: u32,
        threshold: f32,
    ) -> Option<u32> {
        // Leads whose lists end before `lo` bound nothing: without one
        // left, every clause leads; without any, no row is left.
        let leads = &self.by_bound[self.split.min(clauses.len() - 1)..];
        let (hi, leads) = match window_end(clauses, leads, lo) {
            (_, 0) => window_end(clauses, &self.by_bound, lo),
            found => found,
        };
        if leads == 0 {
            return None;
        }
        let hi = hi.max(lo.saturating_add(32 * leads - 1)).min(END - 1);
        for (i, clause) in clauses.iter_mut().enumerate() {
            self.bounds[i] = clause.max_between(lo, hi);
        }
        let bounds = &self.bounds;
        self.by_bound
            .sort_unstable_by(|&a, &b| bounds[a].total_cmp(&bounds[b]).then(a.cmp(&b)));
        let mut sum = 0.0f32;
        self.split = 0;
        for (j, &i) in self.by_bound.iter().enumerate() {
            sum += self.bounds[i];
            self.prefix[j] = sum;
            if self.split == j && !may_beat(sum, threshold, j + 1) {
                self.split = j + 1;
            }
        }
        Some(hi)
    }

    /// The scores of the row being completed summed in query order from
    /// 0.0, as `score` sums them (an absent clause's 0.0 leaves the sum
    /// as it is), leaving them all 0.0.
    fn take_score(&mut self) -> f32 {
        self.scores
            .iter_mut()
            .fold(0.0f32, |sum, s| sum + std::mem::take(s))
    }

    /// Whether a row whose clauses' scores are bounded by `upper` may
    /// beat `threshold` ([`may_beat`] for all the clauses).
    #[inline]
    fn may_beat(&self, upper: f32, threshold: f32) -> bool {
        upper * self.slack > threshold
    }

    /// The non-essential clauses' bounds summed.
    fn weak(&self) -> f32 {
        self.split.checked_sub(1).map_or(0.0, |j| self.prefix[j])
    }

    /// Whether `threshold` has risen past the bound that made the
    /// weakest essential clause essential: partitioned anew, it would
    /// not be.
    fn outgrown(&self, threshold: f32) -> bool {
        let j = self.split;
        j < self.prefix.len() && !may_beat(self.prefix[j], threshold, j + 1)
    }
}

/// The first block end at or after `lo` among `leads` (by index into
/// `clauses`) whose lists hold rows from `lo` on, and how many do.
fn window_end(clauses: &mut [Box<Clause<'_, '_>>], leads: &[usize], lo: u32) -> (u32, u32) {
    let (mut hi, mut found) = (END - 1, 0);
    for &i in leads {
        let clause = &mut clauses[i];
        let at = clause.row().max(lo);
        if at == END {
            continue;
        }
        // Past its list, a clause's window ends at END.
        let end = clause.block_end_at(at);
        if end != END {
            hi = hi.min(end);
            found += 1;
        }
    }
    (hi, found)
}

/// The essential clauses' rows of a window: which rows some clause
/// holds, a bit each, and each clause's frequency in each (0 where it
/// does not hold it). All zero between windows.
struct Gather {
    marks: Marks,
    freqs: Vec<u32>,
    /// Rows per sub-window: `WINDOW`, fewer for queries of more than 8
    /// terms (the buffers stay within 8 windows of frequencies).
    window: usize,
}

impl Gather {
    /// One for `clauses` clauses: a spare one of the thread's, all zero,
    /// when it has one that fits (allocating and zeroing a new one for
    /// every search was 3% of the union queries' instructions, and made
    /// windows of 4,096 rows cost more than windows of 1,024).
    fn new(clauses: usize) -> Self {
        let window = (WINDOW * 8 / clauses).clamp(64, WINDOW) / 64 * 64;
        let spare = SPARE_GATHERS.with_borrow_mut(|spares| {
            let at = spares
                .iter()
                .position(|g| g.window == window && g.freqs.len() >= window * clauses)?;
            Some(spares.swap_remove(at))
        });
        spare.unwrap_or_else(|| Gather {
            marks: Marks::new(window),
            freqs: vec![0; window * clauses],
            window,
        })
    }

    /// Keeps `self`, all zero again, for the thread's next disjunction
    /// (a few, of at most 8 windows of frequencies).
    fn spare(self) {
        debug_assert!(self.marks.is_clear() && self.freqs.iter().all(|&f| f == 0));
        SPARE_GATHERS.with_borrow_mut(|spares| {
            if spares.len() < 4 && self.freqs.len() <= WINDOW * 8 {
                spares.push(self);
            }
        });
    }
}

/// The rows of a window, marked by their place in it and taken back in
/// order. Bits say which words hold any, so a sparse window's empty words
/// are not visited (scanning them, and mispredicting whether each was
/// empty, was a fifth of the union queries' branch misses).
struct Marks {
    words: Vec<u64>,
    /// Bit `w % 64` of `nonzero[w / 64]` set when `words[w]` holds a mark.
    nonzero: Vec<u64>,
    /// The places taken (a window holds at most 65,536 rows).
    taken: Vec<u16>,
}

impl Marks {
    fn new(window: usize) -> Self {
        debug_assert!(window <= 1 << 16);
        let words = window.div_ceil(64);
        Marks {
            words: vec![0; words],
            nonzero: vec![0; words.div_ceil(64)],
            taken: vec![0; words * 64],
        }
    }

    #[inline]
    fn mark(&mut self, at: usize) {
        self.words[at / 64] |= 1 << (at % 64);
        self.nonzero[at / 4096] |= 1 << (at / 64 % 64);
    }

    /// Every place marked, in order, unmarking them all.
    fn take_all(&mut self) -> &[u16] {
        let mut n = 0;
        for (group, nonzero) in self.nonzero.iter_mut().enumerate() {
            while *nonzero != 0 {
                let word = group * 64 + nonzero.trailing_zeros() as usize;
                *nonzero &= *nonzero - 1;
                let mut bits = std::mem::take(&mut self.words[word]);
                while bits != 0 {
                    self.taken[n] = (word * 64) as u16 + bits.trailing_zeros() as u16;
                    bits &= bits - 1;
                    n += 1;
                }
            }
        }
        &self.taken[..n]
    }

    fn is_clear(&self) -> bool {
        self.nonzero.iter().all(|&w| w == 0) && self.words.iter().all(|&w| w == 0)
    }
}

/// A norms block's rows' scores, summed by every-row scoring, and which
/// rows have one.
struct Slots {
    marks: Marks,
    scores: Vec<f32>,
}

impl Slots {
    /// The thread's spare, all zero, or a new one (allocating and zeroing
    /// its 392 KiB for every search would cost more than most searches).
    fn new() -> Self {
        SPARE_SLOTS
            .with_borrow_mut(Option::take)
            .unwrap_or_else(|| Slots {
                marks: Marks::new(NORMS_PER_BLOCK),
                scores: vec![0.0; NORMS_PER_BLOCK],
            })
    }

    /// Keeps `self`, all zero again, for the thread's next search.
    fn spare(self) {
        debug_assert!(self.marks.is_clear() && self.scores.iter().all(|&s| s == 0.0));
        SPARE_SLOTS.with_borrow_mut(|spare| *spare = Some(self));
    }
}

thread_local! {
    static SPARE_GATHERS: std::cell::RefCell<Vec<Gather>> = const { std::cell::RefCell::new(Vec::new()) };
    static SPARE_SLOTS: std::cell::RefCell<Option<Slots>> = const { std::cell::RefCell::new(None) };
}

/// What completing a row found.
enum Completed {
    /// Its score, which beats the threshold.
    Score(f32),
    /// It cannot beat the threshold (or is excluded).
    Below,
    /// The collector takes no row before this one.
    SkipTo(u32),
}

/// How a search reads a block's lead (see [`super::postings`]).
#[derive(Clone, Copy)]
enum Leads<'r> {
    /// The query scores as the part's reference scoring does: a block's
    /// lead scores as its best row.
    Exact,
    /// Every row's normalised frequency is at most the scale times its
    /// normalised frequency under the reference scoring.
    Scaled(&'r TermScorer, f32),
    /// The index has no leads (version 3), or no scale bounds them.
    None,
}

impl<'r> Leads<'r> {
    fn new(reader: &'r TextIndexReader, scorer: &TermScorer) -> Self {
        let Some(reference) = reader.reference() else {
            return Leads::None;
        };
        if scorer.same_norms(reference) {
            return Leads::Exact;
        }
        match scorer.norms_scale(reference) {
            Some(scale) => Leads::Scaled(reference, scale),
            None => Leads::None,
        }
    }
}

/// The best score of block `b`'s rows, exactly as they score: the score
/// of its impacts' largest normalised frequency.
fn block_max(
    list: &PostingList<'_>,
    b: usize,
    scorer: &TermScorer,
) -> std::result::Result<f32, String> {
    let tf = list.block_max(b, |freq, norm| scorer.tf(freq as f32, norm))?;
    Ok(scorer.score_tf(tf))
}

/// Offers the part's rows that `bound` matches and could enter
/// `collector` to it, in row order, passing what block bounds rule out
/// (a disjunction of short lists is scored whole: see [`Plan`]).
/// Returns `None` when the query's shape is not one this searches
/// (nothing was offered).
pub async fn search(
    reader: &TextIndexReader,
    bound: &Bound,
    scoring: &Scoring,
    collector: &mut dyn Collector,
) -> Result<Option<SearchCounts>> {
    search_planned(reader, bound, scoring, collector, Plan::ByCost).await
}

/// How [`search_planned`] searches a disjunction of terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Plan {
    /// Every row scored when the lists are short, MaxScore otherwise.
    #[default]
    ByCost,
    /// MaxScore over windows whatever the lists' lengths.
    MaxScore,
    /// Every row of every list scored whatever their lengths.
    EveryRow,
}

/// [`search`], a disjunction searched as `plan` says (tests hold both
/// ways to the same answers).
pub async fn search_planned(
    reader: &TextIndexReader,
    bound: &Bound,
    scoring: &Scoring,
    collector: &mut dyn Collector,
    plan: Plan,
) -> Result<Option<SearchCounts>> {
    let Some(shape) = shape(bound) else {
        return Ok(None);
    };
    let mut excluded: Vec<u32> = Vec::new();
    for clause in &shape.excluded {
        excluded = union(&excluded, &matching_rows(reader, clause).await?);
    }
    // Postings of every term; a required term no row holds matches nothing.
    let mut blocks = Vec::new();
    let mut present = Vec::new();
    for (order, (term, boost, required)) in shape.terms.iter().enumerate() {
        match reader.term(term).await? {
            Some(info) => {
                blocks.push(reader.postings(&info).await?);
                present.push((order, *term, *boost, *required));
            }
            None if *required => return Ok(Some(SearchCounts::default())),
            None => {}
        }
    }
    let lists = reader.posting_lists(&blocks)?;
    let mut clauses = Vec::with_capacity(lists.len());
    // The clauses' scorers share their length factors: one scale for all.
    let mut leads = None;
    for (list, (order, term, boost, required)) in lists.iter().zip(present) {
        let scorer = scoring.term_scorer(term, boost);
        let leads = *leads.get_or_insert_with(|| Leads::new(reader, &scorer));
        let clause = Box::new(Clause {
            order,
            required,
            list,
            cursor: list.cursor().map_err(|e| reader.malformed(e))?,
            scorer,
            leads,
            block_max: vec![f32::NAN; list.blocks()],
            max: f32::NAN,
            // Empty: no row lies in it.
            window: (1, 0, 0.0),
            fault: None,
        });
        clauses.push(clause);
    }
    let mut search = Search {
        reader,
        plan,
        present: vec![None; shape.terms.len()],
        norms: Norms::new(reader),
        excluded,
        counts: SearchCounts::default(),
    };
    match clauses.len() {
        1 => search.single(&mut clauses[0], collector).await?,
        _ if clauses.iter().any(|c| c.required) => {
            let (mut required, mut optional): (Vec<_>, Vec<_>) =
                clauses.into_iter().partition(|c| c.required);
            search
                .conjunction(&mut required, &mut optional, collector)
                .await?;
            clauses = required.into_iter().chain(optional).collect();
        }
        _ => search.disjunction(&mut clauses, collector).await?,
    }
    if let Some(fault) = clauses.iter_mut().find_map(|c| c.fault.take()) {
        return Err(reader.malformed(fault));
    }
    Ok(Some(search.counts))
}

struct Search<'r> {
    reader: &'r TextIndexReader,
    plan: Plan,
    /// The scores of a row's clauses by query order (required, score),
    /// all `None` between rows.
    present: Vec<Option<(bool, f32)>>,
    norms: Norms<'r>,
    /// Rows a `MustNot` clause matches, sorted.
    excluded: Vec<u32>,
    counts: SearchCounts,
}

impl Search<'_> {
    /// One term: block by block, the blocks whose best cannot beat the
    /// threshold passed without decoding; the others scored a block at a
    /// time (one loop the compiler vectorises), and only their rows that
    /// beat the threshold offered.
    async fn single(
        &mut self,
        clause: &mut Clause<'_, '_>,
        collector: &mut dyn Collector,
    ) -> Result<()> {
        let list = clause.list;
        let mut codes = [0u8; BLOCK_LEN];
        let mut scores = [0f32; BLOCK_LEN];
        let scorer = &clause.scorer;
        let mut next_block = 0;
        while next_block < list.blocks() {
            let b = next_block;
            next_block += 1;
            let first = match b {
                0 => 0,
                b => list.last_row(b - 1).saturating_add(1),
            };
            let candidate = collector.next_candidate(first);
            // No row of the block may be taken: on to the block holding
            // the next that may, none decoded between.
            let to = match candidate {
                END => None,
                c if c > list.last_row(b) => Some(list.block_of_from(b, c)),
                _ => Some(Some(b)),
            };
            // Block 0 was decoded when the cursor opened: not skipped.
            let passed = |to: usize| to - b - usize::from(b == 0);
            let Some(Some(to)) = to else {
                counts::add(Counter::BlocksSkipped, passed(list.blocks()));
                break;
            };
            if to != b {
                counts::add(Counter::BlocksSkipped, passed(to));
                next_block = to;
                continue;
            }
            let mut threshold = collector.threshold();
            let may = clause.block_may_beat(b, threshold);
            if !may.map_err(|e| self.reader.malformed(e))? {
                self.counts.blocks_skipped += 1;
                counts::add(Counter::BlocksSkipped, usize::from(b > 0));
                continue;
            }
            if clause
                .cursor
                .enter_block(b)
                .map_err(|e| self.reader.malformed(e))?
                == END
            {
                break;
            }
            let (rows, freqs) = clause.cursor.block_postings();
            let n = rows.len();
            self.norms.codes(rows, &mut codes[..n]).await?;
            scorer.score_block(freqs, &codes[..n], &mut scores[..n]);
            self.counts.scored += n;
            // The next row the collector may take, asked again after
            // each row it takes (taking one may make a granule's other
            // filters known, and rows failing them are passed unoffered).
            let mut next = 0;
            for (&row, &score) in rows.iter().zip(&scores[..n]) {
                if score <= threshold || row < next {
                    continue;
                }
                next = collector.next_candidate(row);
                if next == row && !self.is_excluded(row) {
                    offer_row(collector, row, score).await?;
                    threshold = collector.threshold();
                    next = 0;
                }
            }
        }
        Ok(())
    }

    /// Every row scored when the lists hold few postings in all (see
    /// [`Self::every_row`]); else MaxScore over windows of rows (Turtle
    /// and Flood, 1995; Lucene's `MaxScoreBulkScorer`). For each window,
    /// each term's bound is the best of its blocks there; the weakest
    /// terms whose bounds summed cannot beat the threshold are
    /// non-essential: a row only they hold cannot enter, so only the
    /// essential terms' rows are visited, and the others are looked up
    /// (strongest first) for a row only while its score may still beat
    /// the threshold. A window no term is essential in is passed without
    /// decoding anything.
    async fn disjunction(
        &mut self,
        clauses: &mut [Box<Clause<'_, '_>>],
        collector: &mut dyn Collector,
    ) -> Result<()> {
        let n = clauses.len();
        if n == 0 {
            return Ok(());
        }
        let postings: u64 = clauses.iter().map(|c| u64::from(c.list.len())).sum();
        let every_row = match self.plan {
            Plan::ByCost => postings <= EVERY_ROW_LIMIT,
            Plan::MaxScore => false,
            Plan::EveryRow => true,
        };
        if every_row {
            return self.every_row(clauses, collector).await;
        }
        let mut w = Windows {
            bounds: vec![0.0; n],
            by_bound: (0..n).collect(),
            prefix: vec![0.0; n],
            split: 0,
            scores: vec![0.0; n],
            gather: None,
            slack: slack(n),
        };
        let mut lo = 0u32;
        loop {
            let first = clauses.iter().map(|c| c.row()).min().unwrap_or(END);
            lo = collector.next_candidate(lo.max(first));
            if lo == END {
                break;
            }
            let threshold = collector.threshold();
            let Some(hi) = w.partition(clauses, lo, threshold) else {
                break;
            };
            let essential = n - w.split;
            let next = match essential {
                0 => {
                    self.counts.blocks_skipped += 1;
                    hi.saturating_add(1)
                }
                1 => {
                    self.one_essential(clauses, &mut w, lo, hi, collector)
                        .await?
                }
                _ => self.essentials(clauses, &mut w, lo, hi, collector).await?,
            };
            if next == END {
                break;
            }
            lo = next;
        }
        if let Some(gather) = w.gather.take() {
            gather.spare();
        }
        Ok(())
    }

    /// Every row of every clause scored, a norms block of rows at a time:
    /// each clause's postings in it taken in turn, their scores added
    /// into the rows' slots in the query's order (so summed as `score`
    /// sums), then the rows that beat the threshold offered in row order
    /// (Lucene's `BooleanScorer`, tantivy's `Union`, over windows as
    /// large as the norms blocks: smaller ones measured slower, by the
    /// seeks and bookkeeping of each). It seeks nothing and bounds
    /// nothing: cheaper than MaxScore when the lists are too short for
    /// their bounds to pass much of them.
    async fn every_row(
        &mut self,
        clauses: &mut [Box<Clause<'_, '_>>],
        collector: &mut dyn Collector,
    ) -> Result<()> {
        let mut slots = Slots::new();
        let mut from = clauses.iter().map(|c| c.row()).min().unwrap_or(END);
        loop {
            from = collector.next_candidate(from);
            if from == END {
                break;
            }
            // The window: the norms block holding `from`, every row of
            // which up to `to` has a length code and a slot.
            let (base, codes) = self.norms.block(from).await?;
            // A norms block holds a code at least (`norm_block`); a row
            // past the last one is a damaged list's, which would
            // otherwise start this window again for ever.
            let to = base + (codes.len() as u32).saturating_sub(1);
            if from > to {
                return Err(self
                    .reader
                    .malformed(format!("row {from} has no length code")));
            }
            let mut after = END;
            for clause in clauses.iter_mut() {
                self.seek_one(clause, from)?;
                let (marks, scores, scorer) = (&mut slots.marks, &mut slots.scores, &clause.scorer);
                let next = clause
                    .cursor
                    .take_until(to, |row, freq| {
                        let at = (row - base) as usize;
                        marks.mark(at);
                        scores[at] += scorer.score(freq, codes[at]);
                    })
                    .map_err(|e| self.reader.malformed(e))?;
                after = after.min(next);
            }
            let mut threshold = collector.threshold();
            let taken = slots.marks.take_all();
            self.counts.scored += taken.len();
            for &at in taken {
                let score = std::mem::take(&mut slots.scores[usize::from(at)]);
                let row = base + u32::from(at);
                if score <= threshold
                    || self.is_excluded(row)
                    || collector.next_candidate(row) != row
                {
                    continue;
                }
                offer_row(collector, row, score).await?;
                threshold = collector.threshold();
            }
            from = after;
        }
        slots.spare();
        Ok(())
    }

    /// The rows from `lo` to `hi` of the one essential clause, each
    /// completed by the others while it may beat the threshold. Returns
    /// the row to go on from: past the window; sooner when the threshold
    /// rose enough to partition the clauses anew; later when the
    /// collector takes no row before it.
    async fn one_essential(
        &mut self,
        clauses: &mut [Box<Clause<'_, '_>>],
        w: &mut Windows,
        lo: u32,
        hi: u32,
        collector: &mut dyn Collector,
    ) -> Result<u32> {
        let e = w.by_bound[w.split];
        let weak = w.weak();
        let mut threshold = collector.threshold();
        let mut row = self.seek_one(&mut clauses[e], lo)?;
        while row <= hi {
            let norm = match self.norms.cached(row) {
                Some(norm) => norm,
                None => self.norms.get(row).await?,
            };
            let clause = &mut clauses[e];
            let score = clause.scorer.score(clause.cursor.freq(), norm);
            if w.may_beat(score + weak, threshold) {
                w.scores[e] = score;
                match self.complete(clauses, w, row, norm, score, threshold, collector)? {
                    Completed::Score(score) => {
                        offer_row(collector, row, score).await?;
                        threshold = collector.threshold();
                        if w.outgrown(threshold) {
                            return Ok(row.saturating_add(1));
                        }
                    }
                    Completed::Below => {}
                    Completed::SkipTo(next) if next > hi => return Ok(next),
                    Completed::SkipTo(next) => {
                        row = self.seek_one(&mut clauses[e], next)?;
                        continue;
                    }
                }
            }
            row = clauses[e]
                .cursor
                .advance()
                .map_err(|e| self.reader.malformed(e))?;
        }
        Ok(hi.saturating_add(1))
    }

    /// The rows from `lo` to `hi` of two or more essential clauses,
    /// gathered `WINDOW` rows at a time (their frequencies side by side),
    /// then each completed by the non-essential clauses in row order.
    async fn essentials(
        &mut self,
        clauses: &mut [Box<Clause<'_, '_>>],
        w: &mut Windows,
        lo: u32,
        hi: u32,
        collector: &mut dyn Collector,
    ) -> Result<u32> {
        let n = clauses.len();
        let mut gather = w.gather.take().unwrap_or_else(|| Gather::new(n));
        let window = gather.window;
        let weak = w.weak();
        let mut threshold = collector.threshold();
        let mut skip_to = 0;
        let mut from = lo;
        let essential: Vec<usize> = w.by_bound[w.split..].to_vec();
        let mut row_scores = vec![0f32; essential.len()];
        let result = loop {
            let to = hi.min(from.saturating_add(window as u32 - 1));
            // The first row of any essential clause after `to`: where
            // the next sub-window starts.
            let mut after = END;
            for (k, &i) in essential.iter().enumerate() {
                let clause = &mut clauses[i];
                self.seek_one(clause, from)?;
                let freqs = &mut gather.freqs[k * window..(k + 1) * window];
                let marks = &mut gather.marks;
                let next = clause
                    .cursor
                    .take_until(to, |row, freq| {
                        let at = (row - from) as usize;
                        marks.mark(at);
                        freqs[at] = freq;
                    })
                    .map_err(|e| self.reader.malformed(e))?;
                after = after.min(next);
            }
            for &at in gather.marks.take_all() {
                let at = usize::from(at);
                let row = from + at as u32;
                if row < skip_to {
                    for k in 0..essential.len() {
                        gather.freqs[k * window + at] = 0;
                    }
                    continue;
                }
                let norm = match self.norms.cached(row) {
                    Some(norm) => norm,
                    None => self.norms.get(row).await?,
                };
                // The essential clauses' scores, by their place among them
                // (0.0 where absent: adding it leaves the sum); only a row
                // that may beat the threshold hands them on.
                let mut partial = 0.0;
                for (k, (&i, score)) in essential.iter().zip(&mut row_scores).enumerate() {
                    let freq = std::mem::take(&mut gather.freqs[k * window + at]);
                    // Scored whatever the frequency, then masked to 0.0
                    // where absent: whether a clause holds the row is a
                    // coin toss a branch would mispredict.
                    let scored = clauses[i].scorer.score(freq.max(1), norm);
                    let present = 0u32.wrapping_sub(u32::from(freq != 0));
                    *score = f32::from_bits(scored.to_bits() & present);
                    partial += *score;
                }
                if !w.may_beat(partial + weak, threshold) {
                    continue;
                }
                for (&i, &score) in essential.iter().zip(&row_scores) {
                    w.scores[i] = score;
                }
                match self.complete(clauses, w, row, norm, partial, threshold, collector)? {
                    Completed::Score(score) => {
                        offer_row(collector, row, score).await?;
                        threshold = collector.threshold();
                        skip_to = 0;
                    }
                    Completed::Below => {}
                    Completed::SkipTo(next) => skip_to = next,
                }
            }
            // No essential row before `after`: the rows between are only
            // the weak clauses', which cannot enter (past the window they
            // may, partitioned anew).
            from = after.max(skip_to);
            if from > hi {
                break hi.saturating_add(1).max(skip_to);
            }
            if w.outgrown(threshold) {
                break from;
            }
        };
        w.gather = Some(gather);
        Ok(result)
    }

    /// Completes `row`, whose essential clauses' scores (in
    /// `w.scores`, summing to `partial`) may beat `threshold`: looks the
    /// non-essential clauses up, strongest first, while the row may still
    /// beat it, and sums its scores as `score` does. Leaves `w.scores`
    /// all zero.
    #[allow(clippy::too_many_arguments)]
    fn complete(
        &mut self,
        clauses: &mut [Box<Clause<'_, '_>>],
        w: &mut Windows,
        row: u32,
        norm: u8,
        mut partial: f32,
        threshold: f32,
        collector: &mut dyn Collector,
    ) -> Result<Completed> {
        let outcome = 'row: {
            if self.is_excluded(row) {
                break 'row Completed::Below;
            }
            let next = collector.next_candidate(row);
            if next != row {
                break 'row Completed::SkipTo(next);
            }
            for j in (0..w.split).rev() {
                if !w.may_beat(partial + w.prefix[j], threshold) {
                    break 'row Completed::Below;
                }
                let i = w.by_bound[j];
                let clause = &mut clauses[i];
                if self.seek_one(clause, row)? == row {
                    let score = clause.scorer.score(clause.cursor.freq(), norm);
                    w.scores[i] = score;
                    partial += score;
                }
            }
            self.counts.scored += 1;
            match w.take_score() {
                score if score > threshold => Completed::Score(score),
                _ => Completed::Below,
            }
        };
        w.take_score();
        Ok(outcome)
    }

    /// Whether a `MustNot` clause matches `row`.
    #[inline]
    fn is_excluded(&self, row: u32) -> bool {
        !self.excluded.is_empty() && self.excluded.binary_search(&row).is_ok()
    }

    /// Moves `clause` to its first row at or after `target`.
    fn seek_one(&self, clause: &mut Clause<'_, '_>, target: u32) -> Result<u32> {
        match clause.row() < target {
            true => clause
                .cursor
                .seek(target)
                .map_err(|e| self.reader.malformed(e)),
            false => Ok(clause.row()),
        }
    }

    /// Block-max intersection: required clauses leapfrog to a common row;
    /// a row whose blocks cannot beat the threshold passes the rest of the
    /// shortest of those blocks.
    async fn conjunction<'l, 'a>(
        &mut self,
        required: &mut [Box<Clause<'l, 'a>>],
        optional: &mut [Box<Clause<'l, 'a>>],
        collector: &mut dyn Collector,
    ) -> Result<()> {
        // Leading with the rarest term makes the fewest seeks.
        required.sort_by_key(|c| c.list.len());
        let mut target = 0u32;
        'rows: loop {
            target = collector.next_candidate(target);
            if target == END {
                return Ok(());
            }
            for clause in required.iter_mut() {
                let row = clause
                    .cursor
                    .seek(target)
                    .map_err(|e| self.reader.malformed(e))?;
                if row == END {
                    return Ok(());
                }
                if row > target {
                    target = row;
                    continue 'rows;
                }
            }
            let row = target;
            let threshold = collector.threshold();
            let upper: f32 = required
                .iter_mut()
                .chain(optional.iter_mut())
                .map(|c| c.block_max_at(row))
                .sum();
            let terms = required.len() + optional.len();
            if !may_beat(upper, threshold, terms) {
                // Every bound summed holds to the end of its block: the
                // first block to end (optional terms' too) ends the run,
                // and the runs after it whose bounds cannot beat the
                // threshold either are passed without decoding.
                let mut next = row;
                loop {
                    self.counts.blocks_skipped += 1;
                    next = required
                        .iter_mut()
                        .chain(optional.iter_mut())
                        .map(|c| c.block_end_at(next))
                        .min()
                        .unwrap_or(END)
                        .saturating_add(1);
                    if next == END {
                        return Ok(());
                    }
                    let upper: f32 = required
                        .iter_mut()
                        .chain(optional.iter_mut())
                        .map(|c| c.block_max_at(next))
                        .sum();
                    if may_beat(upper, threshold, terms) {
                        break;
                    }
                }
                target = next;
                continue;
            }
            for clause in optional.iter_mut() {
                clause
                    .cursor
                    .seek(row)
                    .map_err(|e| self.reader.malformed(e))?;
            }
            self.offer(required, optional, row, threshold, collector)
                .await?;
            match row.checked_add(1) {
                Some(next) if next != END => target = next,
                _ => return Ok(()),
            }
        }
    }

    /// Scores `row`, held by every clause of `matched` and by those of
    /// `optional` that are on it, and offers it if it beats `threshold`.
    async fn offer(
        &mut self,
        matched: &mut [Box<Clause<'_, '_>>],
        optional: &mut [Box<Clause<'_, '_>>],
        row: u32,
        threshold: f32,
        collector: &mut dyn Collector,
    ) -> Result<()> {
        if self.is_excluded(row) {
            return Ok(());
        }
        let norm = match self.norms.cached(row) {
            Some(norm) => norm,
            None => self.norms.get(row).await?,
        };
        let Some(score) = self.score_row(matched, optional, row, norm) else {
            return Ok(());
        };
        self.counts.scored += 1;
        if score > threshold {
            offer_row(collector, row, score).await?;
        }
        Ok(())
    }

    /// `row`'s score, summed as `score` sums: required clauses in query
    /// order, then optional ones in query order, then the two sums.
    fn score_row(
        &mut self,
        matched: &mut [Box<Clause<'_, '_>>],
        optional: &mut [Box<Clause<'_, '_>>],
        row: u32,
        norm: u8,
    ) -> Option<f32> {
        if let ([only], []) = (&mut *matched, &*optional) {
            return Some(only.scorer.score(only.cursor.freq(), norm));
        }
        let present = &mut self.present;
        for c in matched.iter_mut() {
            present[c.order] = Some((c.required, c.scorer.score(c.cursor.freq(), norm)));
        }
        for c in optional.iter_mut().filter(|c| c.row() == row) {
            present[c.order] = Some((c.required, c.scorer.score(c.cursor.freq(), norm)));
        }
        let (mut must, mut should) = (None::<f32>, None::<f32>);
        for (required, score) in present.iter_mut().filter_map(Option::take) {
            let sum = if required { &mut must } else { &mut should };
            *sum = Some(sum.map_or(score, |s| s + score));
        }
        match (must, should) {
            (Some(must), Some(should)) => Some(must + should),
            (must, should) => must.or(should),
        }
    }
}

/// Offers `row` to `collector`: at once when it can take it so.
async fn offer_row(collector: &mut dyn Collector, row: u32, score: f32) -> Result<()> {
    match collector.collect_now(row, score) {
        Some(taken) => taken,
        None => collector.collect(row, score).await,
    }
}

/// Disjunctions of at most this many postings in all score every row
/// (measured on the union queries of the text benchmark: the medians of
/// limits from 8,192 to 65,536 were within noise of each other, the mean
/// rose above 32,768, as lists long enough for MaxScore to pass most of
/// them were scored whole).
const EVERY_ROW_LIMIT: u64 = 32_768;

/// Whether scores bounded by `upper`, a sum of `terms` bounds, may beat
/// `threshold`. One term's bound is its block's best score computed as
/// scores are, so it compares exactly (a block whose best only ties the
/// threshold is passed, as ties keep the earlier row). Summed bounds are
/// added in another order than scores are, so a score may round a hair
/// above their sum: the comparison leaves that much room.
fn may_beat(upper: f32, threshold: f32, terms: usize) -> bool {
    upper * slack(terms) > threshold
}

/// The room [`may_beat`] leaves for a sum of `terms` bounds, as a factor
/// (1 for one bound: multiplying by it changes nothing). A disjunction
/// keeps its own, for the sums of all its clauses (working it out for
/// every row was 4% of the union queries' instructions).
fn slack(terms: usize) -> f32 {
    match terms {
        0 | 1 => 1.0,
        n => 1.0 + 1e-6 * n as f32,
    }
}
