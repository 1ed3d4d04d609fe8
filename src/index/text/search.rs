//! Which rows of a part a bound query matches, from the part's text index
//! alone (no value is read): terms by their postings, phrases by the
//! positions of rows holding every term, prefixes and fuzzy words by the
//! terms of the dictionary they accept (a prefix range, a Levenshtein
//! automaton), booleans by set operations on sorted row lists. The meaning
//! is [`Bound::matches`]'; this finds the same rows without analysing any.
//!
//! Row sets here are sorted, duplicate-free `Vec<u32>` of part rows. A
//! query of only excluded clauses matches every row of the part that the
//! clauses do not: the caller restricts that to rows with a value.

use arrow::buffer::BooleanBuffer;
use fst::{IntoStreamer, Streamer};

use super::bound::{Bound, phrase_freq, phrase_in, within_edits};
use super::component::{ListBytes, TextIndexReader};
use super::postings::{Cursor, END};
use super::query::Occur;
use crate::error::Result;

/// The rows of the part `reader` indexes that `bound` matches.
pub async fn matching_rows(reader: &TextIndexReader, bound: &Bound) -> Result<Vec<u32>> {
    Box::pin(rows_of(reader, bound)).await
}

async fn rows_of(reader: &TextIndexReader, bound: &Bound) -> Result<Vec<u32>> {
    Ok(match bound {
        Bound::Term { term, .. } => reader.rows(term).await?,
        Bound::Phrase { terms, slop, .. } => phrase_rows(reader, terms, *slop).await?,
        Bound::Prefix { prefix, .. } => {
            let terms = reader.terms_with_prefix(prefix).await?;
            union_of_terms(reader, &terms).await?
        }
        Bound::Fuzzy { term, edits, .. } => {
            let terms = reader.terms_within_edits(term, *edits).await?;
            union_of_terms(reader, &terms).await?
        }
        Bound::Boolean(clauses) => boolean_rows(reader, clauses).await?,
        Bound::Nothing => Vec::new(),
    })
}

/// How many rows of the part `reader` indexes that `bound` matches are
/// not `deleted`. A union of terms (an OR of words, a prefix, a fuzzy
/// word), less rows holding excluded words, is counted from its lists'
/// rows without scoring: when they are many for the part, each list's
/// blocks set (or, excluded, clear) bits in a bitmap, which is counted;
/// when few, they are listed, sorted and counted.
pub async fn count_matching(
    reader: &TextIndexReader,
    bound: &Bound,
    deleted: Option<&BooleanBuffer>,
) -> Result<u64> {
    let live = |rows: &[u32]| rows.iter().filter(|&&r| !is_deleted(deleted, r)).count() as u64;
    let Some((terms, excluded)) = union_shape(reader, bound).await? else {
        return Ok(live(&matching_rows(reader, bound).await?));
    };
    let mut blocks = Vec::with_capacity(terms.len());
    for term in &terms {
        if let Some(info) = reader.term(term).await? {
            blocks.push(reader.postings(&info).await?);
        }
    }
    let mut excluded_blocks = Vec::with_capacity(excluded.len());
    for term in &excluded {
        if let Some(info) = reader.term(term).await? {
            excluded_blocks.push(reader.postings(&info).await?);
        }
    }
    let part_rows = reader.summary().part_rows as usize;
    let total: usize = blocks.iter().map(|l| l.rows() as usize).sum();
    // A bitmap costs a word per 64 part rows to clear and to count,
    // listing a few operations per row and a sort. Measured on the union
    // queries over 137,000 rows (the median query's fastest of 100 runs,
    // parsing included): listing up to a row per 64 part rows 11.0 µs,
    // up to a row per 512 7.1 µs; the bitmap for all but unions of under
    // a row per 4,096 measured the same 7.1 µs (with the listing by way
    // of `matching_rows`, which looked the terms up again: 11.8 µs at a
    // row per 64).
    if total < part_rows / 512 {
        // The few rows are looked up in the excluded lists, which are
        // not listed (they may be long).
        let lists = reader.posting_lists(&excluded_blocks)?;
        let mut excluded = reader.cursors(&lists)?;
        let mut count = 0;
        for row in sorted_rows(reader, &blocks)? {
            if is_deleted(deleted, row) {
                continue;
            }
            let mut kept = true;
            for cursor in &mut excluded {
                if cursor.seek(row).map_err(|e| reader.malformed(e))? == row {
                    kept = false;
                    break;
                }
            }
            count += u64::from(kept);
        }
        return Ok(count);
    }
    let mut words = RowBits::new(part_rows);
    set_bits(reader, &blocks, &mut words, true)?;
    set_bits(reader, &excluded_blocks, &mut words, false)?;
    if let Some(deleted) = deleted {
        for row in deleted.set_indices().take_while(|&r| r < part_rows) {
            words[row / 64] &= !(1 << (row % 64));
        }
    }
    Ok(words.iter().map(|w| u64::from(w.count_ones())).sum())
}

/// The terms of a union `bound` is (an OR of words, with words it
/// excludes; a prefix; a fuzzy word), or `None` for another shape.
async fn union_shape(
    reader: &TextIndexReader,
    bound: &Bound,
) -> Result<Option<(Vec<String>, Vec<String>)>> {
    Ok(match bound {
        Bound::Prefix { prefix, .. } => Some((reader.terms_with_prefix(prefix).await?, Vec::new())),
        Bound::Fuzzy { term, edits, .. } => {
            Some((reader.terms_within_edits(term, *edits).await?, Vec::new()))
        }
        Bound::Boolean(clauses)
            if clauses.iter().any(|(o, _)| *o == Occur::Should)
                && clauses
                    .iter()
                    .all(|(o, c)| *o != Occur::Must && matches!(c, Bound::Term { .. })) =>
        {
            let terms_of = |occur: Occur| -> Vec<String> {
                clauses
                    .iter()
                    .filter(|(o, _)| *o == occur)
                    .filter_map(|(_, c)| match c {
                        Bound::Term { term, .. } => Some(term.clone()),
                        _ => None,
                    })
                    .collect()
            };
            Some((terms_of(Occur::Should), terms_of(Occur::MustNot)))
        }
        _ => None,
    })
}

/// A bitmap of a part's rows, all clear: the thread's spare one when it
/// has one, given back when dropped. (A new one's pages were zeroed by
/// the kernel on first touch, the allocator having returned the freed
/// ones between queries: about a tenth of the union counts' perf
/// samples; reusing it took their mean time down 3%.)
struct RowBits(Vec<u64>);

/// The largest bitmap kept spare, in words (8 million rows).
const SPARE_WORDS: usize = 1 << 17;

thread_local! {
    static SPARE_BITS: std::cell::Cell<Vec<u64>> = const { std::cell::Cell::new(Vec::new()) };
}

impl RowBits {
    fn new(rows: usize) -> Self {
        let mut words = SPARE_BITS.take();
        words.clear();
        words.resize(rows.div_ceil(64), 0);
        RowBits(words)
    }
}

impl Drop for RowBits {
    fn drop(&mut self) {
        if self.0.capacity() <= SPARE_WORDS {
            SPARE_BITS.set(std::mem::take(&mut self.0));
        }
    }
}

impl std::ops::Deref for RowBits {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        &self.0
    }
}

impl std::ops::DerefMut for RowBits {
    fn deref_mut(&mut self) -> &mut [u64] {
        &mut self.0
    }
}

/// Sets (or clears) in `words` the bits of the rows of the lists of
/// `blocks`.
fn set_bits(
    reader: &TextIndexReader,
    blocks: &[ListBytes],
    words: &mut [u64],
    set: bool,
) -> Result<()> {
    for_each_block(reader, blocks, |rows| match set {
        true => set_rows(rows, words),
        false => rows
            .iter()
            .for_each(|&r| words[r as usize / 64] &= !(1 << (r % 64))),
    })
}

/// The rows of the lists of `blocks`, sorted, each once.
fn sorted_rows(reader: &TextIndexReader, blocks: &[ListBytes]) -> Result<Vec<u32>> {
    // Term infos claim the rows: a damaged one must not reserve past the part.
    let claimed: usize = blocks.iter().map(|l| l.rows() as usize).sum();
    let mut rows = Vec::with_capacity(claimed.min(reader.summary().part_rows as usize));
    for_each_block(reader, blocks, |block| rows.extend_from_slice(block))?;
    if blocks.len() > 1 {
        rows.sort_unstable();
        rows.dedup();
    }
    Ok(rows)
}

/// Calls `f` with each block's rows (rising) of the lists of `blocks`,
/// every row checked to lie in the part.
fn for_each_block(
    reader: &TextIndexReader,
    blocks: &[ListBytes],
    mut f: impl FnMut(&[u32]),
) -> Result<()> {
    let part_rows = reader.summary().part_rows as usize;
    for list in reader.posting_lists(blocks)? {
        let mut cursor = list.cursor().map_err(|e| reader.malformed(e))?;
        for b in 0..list.blocks() {
            if cursor.enter_block(b).map_err(|e| reader.malformed(e))? == END {
                break;
            }
            // A block's rows rise (its decoding checks it): its last
            // row bounds them all.
            let rows = cursor.block_rows();
            if let Some(&last) = rows.last()
                && last as usize >= part_rows
            {
                return Err(reader.malformed(format!("row {last} past the part's rows")));
            }
            f(rows);
        }
    }
    Ok(())
}

/// Sets the bits of `rows` (rising, each under `64 * words.len()`).
/// Rows of a dense block share words, and setting each in memory would
/// chain every store through the one before to the same word: their
/// bits are gathered in a register a word at a time. A sparse block's
/// rows, mostly a word each, are set one by one (the register's word
/// would change at nearly every row, a branch missed as often).
fn set_rows(rows: &[u32], words: &mut [u64]) {
    let (Some(&first), Some(&last)) = (rows.first(), rows.last()) else {
        return;
    };
    if ((last - first) as usize) < rows.len() * 4 {
        let mut at = first as usize / 64;
        let mut word = 0u64;
        for &r in rows {
            if r as usize / 64 != at {
                words[at] |= word;
                at = r as usize / 64;
                word = 0;
            }
            word |= 1 << (r % 64);
        }
        words[at] |= word;
    } else {
        rows.iter()
            .for_each(|&r| words[r as usize / 64] |= 1 << (r % 64));
    }
}

/// Whether `row` is set in `deleted` (a mask shorter than the part
/// leaves the rows past it live).
pub(crate) fn is_deleted(deleted: Option<&BooleanBuffer>, row: u32) -> bool {
    deleted.is_some_and(|d| (row as usize) < d.len() && d.value(row as usize))
}

async fn boolean_rows(reader: &TextIndexReader, clauses: &[(Occur, Bound)]) -> Result<Vec<u32>> {
    // Required terms intersect by leaping through their postings (skip
    // entries pass whole blocks), not by listing each term's rows.
    let required_terms: Vec<&str> = clauses
        .iter()
        .filter_map(|(occur, clause)| match (occur, clause) {
            (Occur::Must, Bound::Term { term, .. }) => Some(term.as_str()),
            _ => None,
        })
        .collect();
    let mut must: Option<Vec<u32>> = match required_terms.len() {
        0 | 1 => None,
        _ => Some(intersect_terms(reader, &required_terms).await?),
    };
    let mut should: Vec<Vec<u32>> = Vec::new();
    let mut excluded: Vec<Vec<u32>> = Vec::new();
    let any_must = clauses.iter().any(|(occur, _)| *occur == Occur::Must);
    for (occur, clause) in clauses {
        let intersected =
            must.is_some() && required_terms.len() > 1 && matches!(clause, Bound::Term { .. });
        // Required phrases come last, checked only on the rows the other
        // required clauses leave (two-phase: positions are costly).
        let phrase = matches!(clause, Bound::Phrase { .. });
        if *occur == Occur::Must && (intersected || phrase) {
            continue;
        }
        // With a required clause, optional ones only score.
        if *occur == Occur::Should && any_must {
            continue;
        }
        let rows = Box::pin(rows_of(reader, clause)).await?;
        match occur {
            Occur::Must => must = Some(must.map_or(rows.clone(), |m| intersect(&m, &rows))),
            Occur::Should => should.push(rows),
            Occur::MustNot => excluded.push(rows),
        }
    }
    let part_rows = reader.summary().part_rows as usize;
    let should = (!should.is_empty()).then(|| union_all(should, part_rows));
    let excluded = union_all(excluded, part_rows);
    for (occur, clause) in clauses {
        if let (Occur::Must, Bound::Phrase { terms, slop, .. }) = (occur, clause) {
            let found = phrase_occurrences(reader, terms, *slop, false, must.as_deref()).await?;
            let rows: Vec<u32> = found.into_iter().map(|(row, _)| row).collect();
            must = Some(must.map_or(rows.clone(), |m| intersect(&m, &rows)));
        }
    }
    // Must clauses decide alone (should clauses only score); without them,
    // a should clause must match; with neither, every row qualifies.
    let candidates = match (must, should) {
        (Some(must), _) => must,
        (None, Some(should)) => should,
        (None, None) => (0..reader.summary().part_rows as u32).collect(),
    };
    Ok(difference(&candidates, &excluded))
}

/// Rows holding every one of `terms` (at least two): cursors leapfrog,
/// the rarest leading.
async fn intersect_terms(reader: &TextIndexReader, terms: &[&str]) -> Result<Vec<u32>> {
    let mut blocks = Vec::with_capacity(terms.len());
    for term in terms {
        let Some(info) = reader.term(term).await? else {
            return Ok(Vec::new());
        };
        blocks.push(reader.postings(&info).await?);
    }
    blocks.sort_by_key(ListBytes::rows);
    let lists = reader.posting_lists(&blocks)?;
    let mut cursors = reader.cursors(&lists)?;
    let mut rows = Vec::new();
    let mut target = 0u32;
    while let Some(row) = align(reader, &mut cursors, target)? {
        rows.push(row);
        match row.checked_add(1) {
            Some(next) => target = next,
            None => break,
        }
    }
    Ok(rows)
}

/// Rows holding any of `terms` (merging term by term would copy the
/// result once per term).
async fn union_of_terms(reader: &TextIndexReader, terms: &[String]) -> Result<Vec<u32>> {
    let mut lists = Vec::with_capacity(terms.len());
    for term in terms {
        lists.push(reader.rows(term).await?);
    }
    Ok(union_all(lists, reader.summary().part_rows as usize))
}

/// Rows holding every term, then checked by the terms' positions.
async fn phrase_rows(
    reader: &TextIndexReader,
    terms: &[(String, u32)],
    slop: u32,
) -> Result<Vec<u32>> {
    let found = phrase_occurrences(reader, terms, slop, false, None).await?;
    Ok(found.into_iter().map(|(row, _)| row).collect())
}

/// The rows holding the phrase `terms` within `slop`, each with the
/// phrase's frequency there (see [`super::bound::phrase_freq`]) when
/// `count` is set, else 1; only among `candidates` (sorted) when given.
pub(crate) async fn phrase_occurrences(
    reader: &TextIndexReader,
    terms: &[(String, u32)],
    slop: u32,
    count: bool,
    candidates: Option<&[u32]>,
) -> Result<Vec<(u32, f32)>> {
    let mut blocks = Vec::with_capacity(terms.len());
    for (term, _) in terms {
        let Some(info) = reader.term(term).await? else {
            return Ok(Vec::new());
        };
        blocks.push(reader.postings(&info).await?);
    }
    let lists = reader.posting_lists(&blocks)?;
    let mut cursors = reader.cursors(&lists)?;
    let mut positions: Vec<Vec<u32>> = vec![Vec::new(); terms.len()];
    let mut found = Vec::new();
    let mut target = 0u32;
    let mut next_candidate = 0;
    while let Some(row) = align(reader, &mut cursors, target)? {
        if let Some(candidates) = candidates {
            // Leap to the first candidate at or after the row.
            next_candidate += candidates[next_candidate..].partition_point(|&c| c < row);
            match candidates.get(next_candidate) {
                None => break,
                Some(&c) if c > row => {
                    target = c;
                    continue;
                }
                Some(_) => {}
            }
        }
        for (cursor, out) in cursors.iter_mut().zip(positions.iter_mut()) {
            cursor.positions(out).map_err(|e| reader.malformed(e))?;
        }
        let slices: Vec<&[u32]> = positions.iter().map(Vec::as_slice).collect();
        let freq = match count {
            true => phrase_freq(terms, &slices, slop),
            false => f32::from(u8::from(phrase_in(terms, &slices, slop))),
        };
        if freq > 0.0 {
            found.push((row, freq));
        }
        match row.checked_add(1) {
            Some(next) => target = next,
            None => break,
        }
    }
    Ok(found)
}

/// Moves every cursor to the first row at or after `target` that all of
/// them hold (leapfrogging: each jumps to the row the last one found), or
/// `None` when one runs out.
pub(crate) fn align(
    reader: &TextIndexReader,
    cursors: &mut [Cursor<'_, '_>],
    mut target: u32,
) -> Result<Option<u32>> {
    'rows: loop {
        for cursor in cursors.iter_mut() {
            let row = cursor.seek(target).map_err(|e| reader.malformed(e))?;
            if row == END {
                return Ok(None);
            }
            if row > target {
                target = row;
                continue 'rows;
            }
        }
        return Ok(Some(target));
    }
}

/// Sorted rows in both.
pub fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Sorted rows in any of `lists` (each sorted), of a part of `part_rows`
/// rows: set in a bitmap when they are many for the part (a pass over
/// the bitmap costs a word per 64 rows), else merged.
pub fn union_all(mut lists: Vec<Vec<u32>>, part_rows: usize) -> Vec<u32> {
    match lists.len() {
        0 => return Vec::new(),
        1 => return lists.pop().expect("one list"),
        _ => {}
    }
    let total: usize = lists.iter().map(Vec::len).sum();
    let fits = lists.iter().flatten().all(|&r| (r as usize) < part_rows);
    if !fits || total < part_rows / 64 {
        // Few lists merge in linear passes; many, sorted at once.
        if lists.len() <= 4 {
            return lists
                .iter()
                .skip(1)
                .fold(lists[0].clone(), |a, b| union(&a, b));
        }
        let mut rows: Vec<u32> = lists.concat();
        rows.sort_unstable();
        rows.dedup();
        return rows;
    }
    let mut words = RowBits::new(part_rows);
    for &row in lists.iter().flatten() {
        words[row as usize / 64] |= 1 << (row % 64);
    }
    let mut rows = Vec::with_capacity(total);
    for (w, &word) in words.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            rows.push((w * 64) as u32 + bits.trailing_zeros());
            bits &= bits - 1;
        }
    }
    rows
}

/// Sorted rows in either.
pub fn union(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(a.len() + b.len()));
    while i < a.len() || j < b.len() {
        let take_a = j >= b.len() || (i < a.len() && a[i] <= b[j]);
        let row = if take_a { a[i] } else { b[j] };
        if take_a {
            i += 1;
        }
        if j < b.len() && b[j] == row {
            j += 1;
        }
        out.push(row);
    }
    out
}

/// Sorted rows of `a` not in `b`.
pub fn difference(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut j = 0;
    a.iter()
        .copied()
        .filter(|&row| {
            while j < b.len() && b[j] < row {
                j += 1;
            }
            j >= b.len() || b[j] != row
        })
        .collect()
}

impl TextIndexReader {
    /// The rows holding `term` (analysed), in order; none if no row does.
    pub async fn rows(&self, term: &str) -> Result<Vec<u32>> {
        let Some(info) = self.term(term).await? else {
            return Ok(Vec::new());
        };
        let bytes = self.postings(&info).await?;
        let list = bytes.open(self)?;
        let mut cursor = list.cursor().map_err(|e| self.malformed(e))?;
        // The list's length is bounded by its bytes (each row costs at
        // least a bit); the term info's is only a claim.
        let mut rows = Vec::with_capacity((list.len() as usize).min(bytes.bytes().len() * 8));
        while cursor.row() != super::postings::END {
            rows.push(cursor.row());
            cursor.advance().map_err(|e| self.malformed(e))?;
        }
        Ok(rows)
    }

    /// The dictionary's terms starting with `prefix`, in order.
    pub async fn terms_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let dictionary = self.dictionary().await?;
        let matcher = fst::automaton::Str::new(prefix);
        let mut stream = dictionary
            .search(fst::Automaton::starts_with(matcher))
            .into_stream();
        let mut terms = Vec::new();
        while let Some((term, _)) = stream.next() {
            terms.push(String::from_utf8_lossy(term).into_owned());
        }
        Ok(terms)
    }

    /// The dictionary's terms within `edits` edits of `term`, in order:
    /// a Levenshtein automaton walks the dictionary, visiting only the
    /// branches that can still match. A word whose automaton grows past
    /// fst's state limit (a long word at distance 2) falls back to a scan
    /// of the dictionary with the same distance.
    pub async fn terms_within_edits(&self, term: &str, edits: u8) -> Result<Vec<String>> {
        let dictionary = self.dictionary().await?;
        let mut terms = Vec::new();
        match fst::automaton::Levenshtein::new(term, u32::from(edits)) {
            Ok(automaton) => {
                let mut stream = dictionary.search(automaton).into_stream();
                while let Some((t, _)) = stream.next() {
                    terms.push(String::from_utf8_lossy(t).into_owned());
                }
            }
            Err(_) => {
                let mut stream = dictionary.stream();
                while let Some((t, _)) = stream.next() {
                    let t = String::from_utf8_lossy(t);
                    if within_edits(term, &t, edits as usize) {
                        terms.push(t.into_owned());
                    }
                }
            }
        }
        Ok(terms)
    }
}
