//! A parsed query bound to the columns it searches: each word analysed by
//! its column's analyzer into the terms the index holds, and the meaning
//! of a match fixed here once, for the index and for brute force alike.
//!
//! - A word that analyses to one term looks that term up; to several
//!   (`wi-fi` → `wi`, `fi`), it is the phrase of them (as tantivy's query
//!   parser does); to none (a stop word), the clause is dropped.
//! - A phrase's terms keep the gaps between their positions (a dropped stop
//!   word still takes its place); with slop `s`, the terms' positions minus
//!   their places in the phrase may spread over `s`, as in Lucene (a swap
//!   of two neighbours costs 2).
//! - A prefix or fuzzy word is normalised (lowercased, and folded under
//!   `english`) but not stemmed, as Lucene's multi-term queries are.
//! - A boolean query matches when all its `Must` clauses match, none of its
//!   `MustNot` clauses does, and, if it has no `Must` clause, at least one
//!   `Should` clause does. One with only `MustNot` clauses matches every
//!   value that none of them matches (Lucene would match nothing: SQL's
//!   `match(body, '-spam')` means "without spam").
//!
//! [`Bound::matches`] evaluates a bound query on one value by analysing it:
//! the reference the index must agree with, and the answer for parts
//! without the index.

use std::collections::HashMap;

use super::analysis::{Analyzer, fold_to_ascii, lowercase};
use super::query::{Occur, Query};
use crate::error::{Error, Result};

/// The largest boost a clause may end up with (boosts of nested clauses
/// multiply).
pub const MAX_BOOST: f32 = 1e9;

/// A query with its words analysed, for one column.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    Term {
        term: String,
        boost: f32,
    },
    /// Terms with their positions relative to the first.
    Phrase {
        terms: Vec<(String, u32)>,
        slop: u32,
        boost: f32,
    },
    Prefix {
        prefix: String,
        boost: f32,
    },
    Fuzzy {
        term: String,
        edits: u8,
        boost: f32,
    },
    Boolean(Vec<(Occur, Bound)>),
    /// What a word without terms (a stop word) becomes: no clause at all.
    Nothing,
}

impl Bound {
    /// Binds `query` to `column` analysed by `analyzer`. A query naming
    /// another column is an error naming it.
    pub fn bind(query: &Query, column: &str, analyzer: Analyzer) -> Result<Bound> {
        bind(query, column, analyzer, 1.0)
    }

    /// Whether every value the query matches has a term: false for a query
    /// of only excluded clauses, which matches values without any (and,
    /// in SQL, needs the value not to be NULL, which no index knows).
    pub fn needs_terms(&self) -> bool {
        match self {
            Bound::Boolean(clauses) => {
                let must: Vec<&Bound> = clauses
                    .iter()
                    .filter(|(o, _)| *o == Occur::Must)
                    .map(|(_, c)| c)
                    .collect();
                let should: Vec<&Bound> = clauses
                    .iter()
                    .filter(|(o, _)| *o == Occur::Should)
                    .map(|(_, c)| c)
                    .collect();
                match must.is_empty() {
                    false => must.iter().any(|c| c.needs_terms()),
                    true => !should.is_empty() && should.iter().all(|c| c.needs_terms()),
                }
            }
            _ => true,
        }
    }

    /// Whether `value` (analysed by `analyzer`) matches.
    pub fn matches(&self, analyzer: Analyzer, value: &str) -> bool {
        let analysed = Analysed::of(analyzer, value);
        self.matches_analysed(&analysed)
    }

    fn matches_analysed(&self, value: &Analysed) -> bool {
        match self {
            Bound::Term { term, .. } => value.positions.contains_key(term.as_str()),
            Bound::Phrase { terms, slop, .. } => phrase_matches(value, terms, *slop),
            Bound::Prefix { prefix, .. } => value.positions.keys().any(|t| t.starts_with(prefix)),
            Bound::Fuzzy { term, edits, .. } => value
                .positions
                .keys()
                .any(|t| within_edits(term, t, *edits as usize)),
            Bound::Boolean(clauses) => {
                let mut any_must = false;
                let mut any_should = false;
                let mut should_matched = false;
                for (occur, clause) in clauses {
                    let matched = clause.matches_analysed(value);
                    match occur {
                        Occur::Must if !matched => return false,
                        Occur::Must => any_must = true,
                        Occur::MustNot if matched => return false,
                        Occur::MustNot => {}
                        Occur::Should => {
                            any_should = true;
                            should_matched |= matched;
                        }
                    }
                }
                any_must || !any_should || should_matched
            }
            Bound::Nothing => false,
        }
    }
}

fn bind(query: &Query, column: &str, analyzer: Analyzer, boost: f32) -> Result<Bound> {
    let check_column = |named: &Option<String>| match named {
        Some(c) if !c.eq_ignore_ascii_case(column) => Err(Error::Query {
            at: 0,
            reason: format!("the query names column '{c}', but searches '{column}'"),
        }),
        _ => Ok(()),
    };
    Ok(match query {
        Query::Term { column: c, text } => {
            check_column(c)?;
            words(analyzer, text, 0, boost)
        }
        Query::Phrase {
            column: c,
            text,
            slop,
        } => {
            check_column(c)?;
            words(analyzer, text, *slop, boost)
        }
        Query::Prefix { column: c, prefix } => {
            check_column(c)?;
            Bound::Prefix {
                prefix: normalize(analyzer, prefix),
                boost,
            }
        }
        Query::Fuzzy {
            column: c,
            text,
            edits,
        } => {
            check_column(c)?;
            Bound::Fuzzy {
                term: normalize(analyzer, text),
                edits: *edits,
                boost,
            }
        }
        Query::Boost { query, boost: b } => {
            // Scores multiply boosts by idfs and sum them in f32: a
            // larger boost would overflow them.
            let boost = boost * b;
            if !(boost.is_finite() && boost.abs() <= MAX_BOOST) {
                return Err(Error::Query {
                    at: 0,
                    reason: format!("boosts multiply to {boost}, past the largest, {MAX_BOOST:e}"),
                });
            }
            bind(query, column, analyzer, boost)?
        }
        Query::Boolean(clauses) => {
            let mut bound = Vec::with_capacity(clauses.len());
            for (occur, clause) in clauses {
                match bind(clause, column, analyzer, boost)? {
                    Bound::Nothing => {}
                    b => bound.push((*occur, b)),
                }
            }
            match bound.len() {
                0 => Bound::Nothing,
                _ => Bound::Boolean(bound),
            }
        }
    })
}

/// `text` analysed: nothing, a term, or the phrase of its terms.
fn words(analyzer: Analyzer, text: &str, slop: u32, boost: f32) -> Bound {
    let mut tokens: Vec<(String, u32)> = Vec::new();
    analyzer.analyze(text, |t| tokens.push((t.term.to_string(), t.position)));
    match tokens.len() {
        0 => Bound::Nothing,
        1 => Bound::Term {
            term: tokens.pop().expect("one token").0,
            boost,
        },
        _ => phrase(tokens, slop, boost),
    }
}

fn phrase(tokens: Vec<(String, u32)>, slop: u32, boost: f32) -> Bound {
    let first = tokens[0].1;
    Bound::Phrase {
        terms: tokens.into_iter().map(|(t, p)| (t, p - first)).collect(),
        slop,
        boost,
    }
}

/// The form a prefix or fuzzy word is compared in: the analyzer's case
/// and folding, without stemming or splitting.
pub fn normalize(analyzer: Analyzer, word: &str) -> String {
    let mut lower = String::new();
    match analyzer {
        Analyzer::Whitespace | Analyzer::Raw => word.to_string(),
        Analyzer::English => {
            lowercase(word, &mut lower);
            let mut folded = String::new();
            fold_to_ascii(&lower, &mut folded);
            folded
        }
        _ => {
            lowercase(word, &mut lower);
            lower
        }
    }
}

/// A value analysed: each term's positions, in order.
struct Analysed {
    positions: HashMap<String, Vec<u32>>,
}

impl Analysed {
    fn of(analyzer: Analyzer, value: &str) -> Self {
        let mut positions: HashMap<String, Vec<u32>> = HashMap::new();
        analyzer.analyze(value, |t| {
            positions
                .entry(t.term.to_string())
                .or_default()
                .push(t.position)
        });
        Analysed { positions }
    }
}

/// Whether the phrase `terms` (term, offset from the first) occurs within
/// `slop`, as Lucene's phrase queries define it: there is one position
/// per term (distinct for a repeated term) such that the positions minus
/// their offsets spread over at most `slop` (0: exactly in place; a swap
/// of two neighbours costs 2).
fn phrase_matches(value: &Analysed, terms: &[(String, u32)], slop: u32) -> bool {
    let Some(lists) = terms
        .iter()
        .map(|(t, _)| value.positions.get(t.as_str()).map(Vec::as_slice))
        .collect::<Option<Vec<_>>>()
    else {
        return false;
    };
    phrase_in(terms, &lists, slop)
}

/// Whether the phrase `terms` occurs in a value where term `i` is at
/// `lists[i]` (sorted positions), within `slop` (see [`phrase_matches`]).
pub fn phrase_in(terms: &[(String, u32)], lists: &[&[u32]], slop: u32) -> bool {
    if let Some(found) = exact_starts(terms, lists, slop, true) {
        return found > 0;
    }
    let (lows, order) = windows(terms, lists);
    lows.into_iter()
        .any(|low| assign(terms, lists, &order, low, slop, |_, _| {}).is_some())
}

/// How often the phrase occurs, as BM25 counts it (Lucene's phrase
/// frequency): each match adds `1 / (1 + distance)`. A match places every
/// term (a repeated term's occurrences in phrase order) so that positions
/// minus offsets spread over at most `slop`; it is identified by where it
/// starts (its least position minus offset), and its distance is the
/// least spread of the matches starting there. With slop 0 that is the
/// number of occurrences, overlapping ones included ("a a" in "a a a"
/// twice); 0 when the phrase does not occur.
pub fn phrase_freq(terms: &[(String, u32)], lists: &[&[u32]], slop: u32) -> f32 {
    if let Some(found) = exact_starts(terms, lists, slop, false) {
        return found as f32;
    }
    let (lows, order) = windows(terms, lists);
    let mut freq = 0.0;
    let mut last_start: Option<i64> = None;
    for low in lows {
        let Some((start, end)) = assign(terms, lists, &order, low, slop, |_, _| {}) else {
            continue;
        };
        // Two windows finding the same assignment start are one match.
        if last_start.is_some_and(|s| s >= start) {
            continue;
        }
        last_start = Some(start);
        freq += 1.0 / (1.0 + (end - start) as f32);
    }
    freq
}

/// The matches [`phrase_freq`] counts, each as the positions it places
/// the terms at (in the order of `terms`).
pub fn phrase_matches_at(terms: &[(String, u32)], lists: &[&[u32]], slop: u32) -> Vec<Vec<u32>> {
    let (lows, order) = windows(terms, lists);
    let mut matches = Vec::new();
    let mut last_start: Option<i64> = None;
    let mut placed = vec![0u32; terms.len()];
    for low in lows {
        let place = |i: usize, p: u32| placed[i] = p;
        let Some((start, _)) = assign(terms, lists, &order, low, slop, place) else {
            continue;
        };
        if last_start.is_some_and(|s| s >= start) {
            continue;
        }
        last_start = Some(start);
        matches.push(placed.clone());
    }
    matches
}

/// An exact phrase (slop 0) whose (term, offset) pairs are distinct, as
/// phrases from analysis are: how many starts `s` put every term `i` at
/// `s + offset_i` (the first only, with `first`), by one merge driven by
/// the rarest term's positions; the general search sorts every position
/// and searches from each. `None` for another phrase.
fn exact_starts(
    terms: &[(String, u32)],
    lists: &[&[u32]],
    slop: u32,
    first: bool,
) -> Option<usize> {
    // Offsets first: they usually differ, and the terms are then not
    // compared (this runs for every row a phrase's terms share).
    let distinct = terms
        .iter()
        .enumerate()
        .all(|(i, a)| terms[..i].iter().all(|b| a.1 != b.1 || a.0 != b.0));
    if slop != 0 || !distinct || lists.len() != terms.len() {
        return None;
    }
    let rarest = (0..lists.len()).min_by_key(|&i| lists[i].len())?;
    let (mut few, mut many);
    let at: &mut [usize] = match lists.len() {
        n if n <= 8 => {
            few = [0usize; 8];
            &mut few[..n]
        }
        n => {
            many = vec![0usize; n];
            &mut many
        }
    };
    let mut found = 0;
    'starts: for &q in lists[rarest] {
        let start = i64::from(q) - i64::from(terms[rarest].1);
        for (i, list) in lists.iter().enumerate() {
            if i == rarest {
                continue;
            }
            let want = start + i64::from(terms[i].1);
            // Starts rise, so each list's pointer only moves on.
            let seen = &list[at[i]..];
            at[i] += seen.partition_point(|&p| i64::from(p) < want);
            if list.get(at[i]).is_none_or(|&p| i64::from(p) != want) {
                continue 'starts;
            }
        }
        found += 1;
        if first {
            break;
        }
    }
    Some(found)
}

/// Where a match may start (each term's positions minus its offset,
/// ascending), and the order to place the terms in: by (term, offset), so
/// that a repeated term's copies, whose windows are shifted copies of each
/// other, taking each one's first free position in turn is an assignment
/// whenever one exists.
fn windows(terms: &[(String, u32)], lists: &[&[u32]]) -> (Vec<i64>, Vec<usize>) {
    let mut lows: Vec<i64> = terms
        .iter()
        .zip(lists)
        .flat_map(|((_, offset), list)| {
            list.iter().map(move |&p| i64::from(p) - i64::from(*offset))
        })
        .collect();
    lows.sort_unstable();
    lows.dedup();
    let mut order: Vec<usize> = (0..terms.len()).collect();
    order.sort_by(|&a, &b| terms[a].cmp(&terms[b]));
    (lows, order)
}

/// The earliest positions placing every term within `[low, low + slop]`
/// (positions minus offsets), as the least and greatest of those; `place`
/// hears where each term (by index) is put.
fn assign(
    terms: &[(String, u32)],
    lists: &[&[u32]],
    order: &[usize],
    low: i64,
    slop: u32,
    mut place: impl FnMut(usize, u32),
) -> Option<(i64, i64)> {
    let mut last: Option<(&str, i64)> = None;
    let (mut start, mut end) = (i64::MAX, i64::MIN);
    for &i in order {
        let (term, offset) = (&terms[i].0, i64::from(terms[i].1));
        let from = low + offset;
        let to = from + i64::from(slop);
        let after = match last {
            Some((t, p)) if t == term.as_str() => p + 1,
            _ => i64::MIN,
        };
        let least = from.max(after);
        let list = lists[i];
        let at = list.partition_point(|&p| i64::from(p) < least);
        let p = list.get(at).map(|&p| i64::from(p)).filter(|&p| p <= to)?;
        place(i, p as u32);
        last = Some((term.as_str(), p));
        start = start.min(p - offset);
        end = end.max(p - offset);
    }
    Some((start, end))
}

/// Whether `a` and `b` are within `edits` insertions, deletions and
/// substitutions of each other, by characters (Levenshtein, as Lucene's
/// fuzzy query without transpositions).
pub fn within_edits(a: &str, b: &str, edits: usize) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > edits {
        return false;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()] <= edits
}
