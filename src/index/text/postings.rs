//! The postings of one term in one part: the rows holding the term, how
//! often each holds it, and where (positions, for phrases), encoded as in
//! Lucene and tantivy: blocks of [`BLOCK_LEN`] rows with bit-packed
//! deltas, and a skip entry per block that lets a reader jump over blocks,
//! and bound their scores, without decoding them.
//!
//! A list of at least [`BLOCK_LEN`] rows:
//!
//! ```text
//! last_row: u32 LE                 the list's last row
//! skip entry per full block (SKIP_LEN bytes, u32 LE each):
//!     last_row                     the block's last row
//!     data_end                     end of the block's data (from the data's start)
//!     impacts_end                  end of its impacts (from the impacts' start)
//!     positions_end                end of its positions (from the positions' start)
//! tail_bytes: varint, impacts_len: varint   lengths of the tail and the impacts
//! lead: frequency varint, length code u8    the list's lead (the best
//!     of its blocks' leads)
//! data per full block: row_bits u8, freq_bits u8, row deltas (strictly
//!     increasing from the previous block's last row), frequency - 1,
//!     each BLOCK_LEN values bit-packed
//! tail (rows % BLOCK_LEN rows): varint row deltas, then varint frequency - 1
//! impacts per block, the tail's last (if it has rows): a varint count, then
//!     (frequency varint, length code u8) pairs: the block's lead first,
//!     then the others frequency ascending
//! positions: per row, its positions as varint deltas
//! ```
//!
//! A list of fewer rows (most terms) is a tail only, and has no header:
//! its tail, impacts and positions, where each ends found by reading
//! them. The impacts of a list of one row are its length code alone (its
//! one impact's frequency is the row's). The number of rows is not in the
//! list: the term info holds it.
//!
//! A block's impacts are its competitive (frequency, length code) pairs,
//! Lucene's: those no other row of the block beats on both (as often or
//! more, as short or shorter). BM25 grows with the frequency and falls with
//! the length whatever its parameters, so the best score of a block's rows
//! is the best of its impacts' scores: an exact bound, for the table's
//! statistics whatever they are when the query runs.
//!
//! A block's lead is the impact that scores best under the part's
//! reference scoring ([`TermScorer::reference`]: BM25's default
//! parameters and the part's own average length), so a search bounds a
//! block by one impact instead of all (tantivy keeps one such pair per
//! block, Lucene a list per level), and a list by its lead. Under the
//! reference scoring the lead's score is the block's bound, to the bit;
//! under any other, every row's normalised frequency is at most the
//! lead's times the largest ratio of the two scorings' length factors
//! ([`TermScorer::norms_scale`]).
//!
//! A reader opens a list in constant time (the skip entries are read where
//! a seek needs them, by galloping search) and decodes a block's
//! frequencies only when one is asked for.
//!
//! Invariants the writer guarantees and the reader checks before it
//! relies on them: rows strictly increase; each frequency is at least 1
//! and equals the number of the row's positions; positions of a row
//! strictly increase; every offset, length and bit width lies inside the
//! bytes.

use bitpacking::{BitPacker, BitPacker4x};

use super::bm25::{ColumnStats, TermScorer, encode_length};
use super::counts::{self, Counter};

/// Rows per packed block (the 4x packer's block: SIMD-friendly).
pub const BLOCK_LEN: usize = BitPacker4x::BLOCK_LEN;

/// Bytes of one skip entry.
const SKIP_LEN: usize = 16;
/// Where the skip entries start (after the last row).
const SKIPS_AT: usize = 4;

/// One term's postings in a part, as the index builder holds them:
/// parallel `rows` (strictly increasing) and `freqs` (each at least 1),
/// and every row's positions in row order, `freqs[i]` of them for row `i`,
/// strictly increasing within a row, already encoded as the list stores
/// them (each row's by [`put_positions`]): a builder keeps them in a
/// quarter of the memory, and encoding copies them.
#[derive(Debug, Clone, Copy)]
pub struct TermPostings<'a> {
    pub rows: &'a [u32],
    pub freqs: &'a [u32],
    pub positions: &'a [u8],
}

/// Encodes `postings` into `out`; `len_of` gives a row's length in tokens
/// (for the blocks' impacts), `stats` are the part's (for the blocks'
/// leads).
pub fn encode(
    postings: TermPostings<'_>,
    len_of: impl Fn(u32) -> u32,
    stats: ColumnStats,
    out: &mut Vec<u8>,
) {
    Encoder::new(stats).encode(postings, len_of, out);
}

/// Encodes posting lists one after another, its areas' buffers kept
/// from one list to the next (an index writes hundreds of thousands of
/// lists, most of a few bytes: allocating the areas anew for each took
/// a third of encoding a part's index).
pub struct Encoder {
    /// The part's reference scoring, which picks the blocks' leads.
    reference: TermScorer,
    skips: Vec<u8>,
    data: Vec<u8>,
    tail: Vec<u8>,
    impacts: Vec<u8>,
    positions: Vec<u8>,
    pairs: Impacts,
    frontier: Impacts,
}

/// (frequency, length code) pairs.
type Impacts = Vec<(u32, u8)>;

impl Encoder {
    /// An encoder for the lists of a part whose rows have `stats`.
    pub fn new(stats: ColumnStats) -> Self {
        Encoder {
            reference: TermScorer::reference(stats),
            skips: Vec::new(),
            data: Vec::new(),
            tail: Vec::new(),
            impacts: Vec::new(),
            positions: Vec::new(),
            pairs: Vec::new(),
            frontier: Vec::new(),
        }
    }

    /// Encodes `postings` into `out`, as [`encode`] does.
    pub fn encode(
        &mut self,
        postings: TermPostings<'_>,
        len_of: impl Fn(u32) -> u32,
        out: &mut Vec<u8>,
    ) {
        let TermPostings {
            rows: all_rows,
            freqs: all_freqs,
            positions: all_positions,
        } = postings;
        debug_assert!(!all_rows.is_empty() && all_rows.len() == all_freqs.len());
        debug_assert!(all_rows.windows(2).all(|w| w[0] < w[1]));
        let Encoder {
            reference,
            skips,
            data,
            tail: tail_bytes,
            impacts,
            positions,
            pairs,
            frontier,
        } = self;
        for area in [
            &mut *skips,
            &mut *data,
            &mut *tail_bytes,
            &mut *impacts,
            &mut *positions,
        ] {
            area.clear();
        }
        let packer = BitPacker4x::new();
        let full = all_rows.len() / BLOCK_LEN;
        let mut next_position = 0;
        // Copies the positions of rows with frequencies `freqs`.
        let mut put_rows_positions = |freqs: &[u32], positions: &mut Vec<u8>| {
            let values: u64 = freqs.iter().map(|&f| u64::from(f)).sum();
            let end = skip_varints(all_positions, next_position, values)
                .expect("a row's positions are its frequency's varints");
            positions.extend_from_slice(&all_positions[next_position..end]);
            next_position = end;
        };
        let mut rows = [0u32; BLOCK_LEN];
        let mut freqs = [0u32; BLOCK_LEN];
        let mut packed = [0u8; 4 * BLOCK_LEN];
        let mut previous: Option<u32> = None;
        let mut list_lead = None;
        for b in 0..full {
            let range = b * BLOCK_LEN..(b + 1) * BLOCK_LEN;
            rows.copy_from_slice(&all_rows[range.clone()]);
            for (i, &freq) in all_freqs[range.clone()].iter().enumerate() {
                freqs[i] = freq - 1;
            }
            put_rows_positions(&all_freqs[range.clone()], positions);
            let row_bits = packer.num_bits_strictly_sorted(previous, &rows);
            let freq_bits = packer.num_bits(&freqs);
            data.extend_from_slice(&[row_bits, freq_bits]);
            let n = packer.compress_strictly_sorted(previous, &rows, &mut packed, row_bits);
            data.extend_from_slice(&packed[..n]);
            let n = packer.compress(&freqs, &mut packed, freq_bits);
            data.extend_from_slice(&packed[..n]);
            let block = (&all_rows[range.clone()], &all_freqs[range]);
            let lead = put_impacts(block, &len_of, reference, (pairs, frontier), impacts);
            list_lead = best_lead(reference, list_lead, lead);
            let last_row = rows[BLOCK_LEN - 1];
            for word in [
                last_row,
                data.len() as u32,
                impacts.len() as u32,
                positions.len() as u32,
            ] {
                skips.extend_from_slice(&word.to_le_bytes());
            }
            previous = Some(last_row);
        }
        let tail = full * BLOCK_LEN..all_rows.len();
        let mut last = previous;
        for &row in &all_rows[tail.clone()] {
            put_varint(last.map_or(row, |l| row - l - 1), tail_bytes);
            last = Some(row);
        }
        for &freq in &all_freqs[tail.clone()] {
            put_varint(freq - 1, tail_bytes);
        }
        put_rows_positions(&all_freqs[tail.clone()], positions);
        if all_rows.len() == 1 {
            impacts.push(encode_length(len_of(all_rows[0])));
        } else if !tail.is_empty() {
            let block = (&all_rows[tail.clone()], &all_freqs[tail]);
            let lead = put_impacts(block, &len_of, reference, (pairs, frontier), impacts);
            list_lead = best_lead(reference, list_lead, lead);
        }
        if full > 0 {
            out.extend_from_slice(&all_rows[all_rows.len() - 1].to_le_bytes());
            out.extend_from_slice(skips);
            put_varint(tail_bytes.len() as u32, out);
            put_varint(impacts.len() as u32, out);
            let (freq, code) = list_lead.expect("a full block's lead");
            put_varint(freq, out);
            out.push(code);
        }
        for area in [&*data, &*tail_bytes, &*impacts, &*positions] {
            out.extend_from_slice(area);
        }
    }
}

/// The competitive (frequency, length code) pairs of a block's rows
/// (`rows`, `freqs`): the one `reference` scores best first, then the
/// others frequency ascending (see the module's documentation); `pairs`
/// and `frontier` are the encoder's buffers.
fn put_impacts(
    (rows, freqs): (&[u32], &[u32]),
    len_of: &impl Fn(u32) -> u32,
    reference: &TermScorer,
    (pairs, frontier): (&mut Impacts, &mut Impacts),
    out: &mut Vec<u8>,
) -> (u32, u8) {
    pairs.clear();
    pairs.extend(
        rows.iter()
            .zip(freqs)
            .map(|(&row, &freq)| (freq, encode_length(len_of(row)))),
    );
    // Most frequent first, shortest first among equals; each pair kept is
    // shorter than every more frequent one.
    pairs.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    frontier.clear();
    for &pair in pairs.iter() {
        if frontier.last().is_none_or(|last| pair.1 < last.1) {
            frontier.push(pair);
        }
    }
    // The first of the best.
    let mut lead = 0;
    for (i, &pair) in frontier.iter().enumerate() {
        if lead_key(reference, pair) > lead_key(reference, frontier[lead]) {
            lead = i;
        }
    }
    put_varint(frontier.len() as u32, out);
    let others = frontier
        .iter()
        .enumerate()
        .rev()
        .filter(|&(i, _)| i != lead);
    for (_, &(freq, code)) in std::iter::once((lead, &frontier[lead])).chain(others) {
        put_varint(freq, out);
        out.push(code);
    }
    frontier[lead]
}

/// The better of a list's best lead so far and a block's `lead` under
/// `reference` (the earlier of equals).
fn best_lead(
    reference: &TermScorer,
    best: Option<(u32, u8)>,
    lead: (u32, u8),
) -> Option<(u32, u8)> {
    match best {
        Some(best) if lead_key(reference, best) >= lead_key(reference, lead) => Some(best),
        _ => Some(lead),
    }
}

/// What leads are chosen by: an impact's normalised frequency under
/// `reference`, computed as a search computes a row's.
fn lead_key(reference: &TermScorer, (freq, code): (u32, u8)) -> f32 {
    reference.tf(freq as f32, code)
}

/// Whether a block's rows strictly rise: every pair compared without
/// stopping early, a loop the compiler vectorises (`any` short-circuits
/// and is not; the check ran three times as long as the decoding).
fn strictly_rising(rows: &[u32; BLOCK_LEN]) -> bool {
    let mut falls = 0u32;
    for i in 0..BLOCK_LEN - 1 {
        falls |= u32::from(rows[i] >= rows[i + 1]);
    }
    falls == 0
}

/// Encodes one row's positions (strictly increasing) as a list stores
/// them: the first, then each one's distance from the previous less one,
/// as varints.
pub fn put_positions(positions: &[u32], out: &mut Vec<u8>) {
    let mut last = None;
    for &p in positions {
        put_position(last, p, out);
        last = Some(p);
    }
}

/// Appends position `p` of a row whose previous position is `last`.
#[inline]
pub fn put_position(last: Option<u32>, p: u32, out: &mut Vec<u8>) {
    put_varint(last.map_or(p, |l| p - l - 1), out);
}

/// Where `n` varints starting at `pos` end, counted by their last bytes
/// (high bit clear) eight bytes at a time; an error past the end.
fn skip_varints(bytes: &[u8], mut pos: usize, mut n: u64) -> Result<usize, String> {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while n >= 8 {
        let Some(chunk) = bytes.get(pos..pos + 8) else {
            break;
        };
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // A one in each byte that ends a varint, summed across the bytes
        // by one multiplication (into the top byte; at most 8): without
        // a popcount instruction in the baseline target, `count_ones`
        // took a dozen.
        let ends = (((!word & HIGH) >> 7).wrapping_mul(0x0101_0101_0101_0101)) >> 56;
        if ends > n {
            break;
        }
        // The chunk's complete varints are passed; one it cuts goes on
        // in the next.
        n -= ends;
        pos += 8;
    }
    while n > 0 {
        let byte = *bytes.get(pos).ok_or("positions run past the end")?;
        n -= u64::from(byte < 0x80);
        pos += 1;
    }
    Ok(pos)
}

pub(crate) fn put_varint(mut v: u32, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline(always)]
pub(crate) fn get_varint(bytes: &[u8], pos: &mut usize) -> Result<u32, String> {
    // Most values (deltas, frequencies) take one byte.
    if let Some(&byte) = bytes.get(*pos)
        && byte < 0x80
    {
        *pos += 1;
        return Ok(u32::from(byte));
    }
    let mut v: u32 = 0;
    for shift in [0, 7, 14, 21, 28] {
        let byte = *bytes.get(*pos).ok_or("a varint runs past the end")?;
        *pos += 1;
        v |= u32::from(byte & 0x7f)
            .checked_shl(shift)
            .filter(|_| shift < 28 || byte & 0x70 == 0)
            .ok_or("a varint overflows 32 bits")?;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a varint longer than 5 bytes".into())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// A reader over one encoded posting list. Opening checks where the
/// areas lie; each block's entry is checked when it is read.
pub struct PostingList<'a> {
    bytes: &'a [u8],
    rows: u32,
    last_row: u32,
    /// The frequency of a list of one row (its impacts are its length
    /// code alone); 0 for other lists.
    single_freq: u32,
    /// The list's lead, for a list of full blocks (others have one block).
    lead: Option<(u32, u8)>,
    /// Whether blocks and lists have leads (not in version 3).
    has_leads: bool,
    /// Full blocks (with skip entries).
    full: usize,
    /// Where the areas start, and the impacts' length.
    data_at: usize,
    tail_at: usize,
    impacts_at: usize,
    impacts_len: usize,
    positions_at: usize,
}

impl<'a> PostingList<'a> {
    /// Opens the posting list `bytes` of `rows` rows; a malformed one is
    /// an error saying what is wrong (the caller names the part and
    /// component).
    pub fn open(bytes: &'a [u8], rows: u32) -> Result<Self, String> {
        Self::open_as(bytes, rows, true)
    }

    /// Opens a list as version 3 of the text index wrote it: without
    /// leads (its blocks' impacts in any order, no lead in its header).
    pub fn open_without_leads(bytes: &'a [u8], rows: u32) -> Result<Self, String> {
        Self::open_as(bytes, rows, false)
    }

    fn open_as(bytes: &'a [u8], rows: u32, has_leads: bool) -> Result<Self, String> {
        match rows as usize / BLOCK_LEN {
            _ if rows == 0 => Err("a posting list without rows".into()),
            0 => Self::open_tail(bytes, rows, has_leads),
            full => Self::open_blocks(bytes, rows, full, has_leads),
        }
    }

    /// Opens a list of a tail only, reading where its areas end.
    fn open_tail(bytes: &'a [u8], rows: u32, has_leads: bool) -> Result<Self, String> {
        let mut pos = 0;
        let mut last: Option<u32> = None;
        for _ in 0..rows {
            let delta = get_varint(bytes, &mut pos)?;
            let row = match last {
                None => Some(delta),
                Some(l) => l.checked_add(delta).and_then(|r| r.checked_add(1)),
            };
            last = Some(row.ok_or("a row past u32")?);
        }
        let single_freq = match rows {
            1 => get_varint(bytes, &mut pos)?
                .checked_add(1)
                .ok_or("a frequency past u32")?,
            _ => {
                pos = skip_varints(bytes, pos, u64::from(rows))?;
                0
            }
        };
        let impacts_at = pos;
        match rows {
            1 => pos += 1,
            _ => {
                for _ in 0..get_varint(bytes, &mut pos)? {
                    get_varint(bytes, &mut pos)?;
                    pos += 1;
                }
            }
        }
        if pos > bytes.len() {
            return Err("the impacts run past the end".into());
        }
        Ok(PostingList {
            bytes,
            rows,
            last_row: last.expect("a list has rows"),
            single_freq,
            lead: None,
            has_leads,
            full: 0,
            data_at: 0,
            tail_at: 0,
            impacts_at,
            impacts_len: pos - impacts_at,
            positions_at: pos,
        })
    }

    /// Opens a list of `full` blocks and a tail, by its header.
    fn open_blocks(
        bytes: &'a [u8],
        rows: u32,
        full: usize,
        has_leads: bool,
    ) -> Result<Self, String> {
        let last_row = match bytes {
            [l0, l1, l2, l3, ..] => u32::from_le_bytes([*l0, *l1, *l2, *l3]),
            _ => return Err("a posting list without its last row".into()),
        };
        let mut pos = full
            .checked_mul(SKIP_LEN)
            .map(|l| SKIPS_AT + l)
            .filter(|&at| at <= bytes.len())
            .ok_or("skip entries run past the end")?;
        let tail_bytes = get_varint(bytes, &mut pos)? as usize;
        let impacts_len = get_varint(bytes, &mut pos)? as usize;
        let lead = match has_leads {
            true => {
                let freq = get_varint(bytes, &mut pos)?;
                let code = *bytes.get(pos).ok_or("the list's lead runs past the end")?;
                pos += 1;
                Some((freq, code))
            }
            false => None,
        };
        let mut list = PostingList {
            bytes,
            rows,
            last_row,
            single_freq: 0,
            lead,
            has_leads,
            full,
            data_at: pos,
            tail_at: 0,
            impacts_at: 0,
            impacts_len,
            positions_at: 0,
        };
        let data_len = match full {
            0 => 0,
            _ => list.skip(full - 1, 4) as usize,
        };
        let ends = pos
            .checked_add(data_len)
            .and_then(|tail| Some((tail, tail.checked_add(tail_bytes)?)))
            .and_then(|(tail, impacts)| Some((tail, impacts, impacts.checked_add(impacts_len)?)));
        let Some((tail_at, impacts_at, positions_at)) = ends else {
            return Err("blocks, tail or impacts run past the end".into());
        };
        (list.tail_at, list.impacts_at, list.positions_at) = (tail_at, impacts_at, positions_at);
        if list.positions_at > bytes.len() {
            return Err("blocks, tail or impacts run past the end".into());
        }
        if full > 0 && list.skip(full - 1, 12) as usize > bytes.len() - list.positions_at {
            return Err("positions run past the end".into());
        }
        if full > 0 && list.tail_len() == 0 && list.skip(full - 1, 0) != last_row {
            return Err("the last block's last row is not the list's".into());
        }
        Ok(list)
    }

    /// Rows in the tail block (the last, without a skip entry).
    fn tail_len(&self) -> usize {
        self.rows as usize % BLOCK_LEN
    }

    /// Word `word` (a byte offset in the entry) of block `b`'s skip entry.
    fn skip(&self, b: usize, word: usize) -> u32 {
        u32_at(self.bytes, SKIPS_AT + b * SKIP_LEN + word)
    }

    /// Rows in the list (the term's document frequency in the part).
    pub fn len(&self) -> u32 {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Blocks, the tail counted as one when it has rows.
    pub fn blocks(&self) -> usize {
        self.full + usize::from(self.tail_len() > 0)
    }

    /// The last row of block `b` (the tail is the last block).
    pub fn last_row(&self, b: usize) -> u32 {
        match b < self.full {
            true => self.skip(b, 0),
            false => self.last_row,
        }
    }

    /// The largest `key` of block `b`'s impacts. For a key that grows with
    /// the frequency and falls with the length code (BM25's, or its
    /// normalised frequency, from which the score grows), the largest of
    /// any row of the block.
    pub fn block_max(&self, b: usize, key: impl Fn(u32, u8) -> f32) -> Result<f32, String> {
        let impacts = self.impacts(b)?;
        if self.rows == 1 {
            return Ok(key(self.single_freq, impacts[0]).max(0.0));
        }
        let mut pos = 0;
        let count = get_varint(impacts, &mut pos)?;
        if count == 0 {
            return Err(format!("block {b}: no impacts"));
        }
        let mut best = 0f32;
        for _ in 0..count {
            let freq = get_varint(impacts, &mut pos)?;
            let code = *impacts.get(pos).ok_or("an impact runs past its block")?;
            pos += 1;
            let k = key(freq, code);
            if k > best {
                best = k;
            }
        }
        Ok(best)
    }

    /// Block `b`'s lead: its impact that scores best under the part's
    /// reference scoring (see the module's documentation).
    #[inline]
    pub fn lead(&self, b: usize) -> Result<(u32, u8), String> {
        if !self.has_leads {
            return Err("a list without leads (text index version 3)".into());
        }
        let impacts = self.impacts(b)?;
        if self.rows == 1 {
            return Ok((self.single_freq, impacts[0]));
        }
        // Nearly always: a count and a frequency of one byte each.
        if let [1..0x80, freq @ 0..0x80, code, ..] = *impacts {
            return Ok((u32::from(freq), code));
        }
        let mut pos = 0;
        if get_varint(impacts, &mut pos)? == 0 {
            return Err(format!("block {b}: no impacts"));
        }
        let freq = get_varint(impacts, &mut pos)?;
        let code = *impacts.get(pos).ok_or("an impact runs past its block")?;
        Ok((freq, code))
    }

    /// The list's lead: the best of its blocks' leads.
    pub fn list_lead(&self) -> Result<(u32, u8), String> {
        match self.lead {
            Some(lead) => Ok(lead),
            None => self.lead(0),
        }
    }

    /// Block `b`'s impacts (not empty).
    #[inline]
    fn impacts(&self, b: usize) -> Result<&'a [u8], String> {
        let start = match b {
            0 => 0,
            b => self.skip(b - 1, 8) as usize,
        };
        let end = match b < self.full {
            true => self.skip(b, 8) as usize,
            false => self.impacts_len,
        };
        self.bytes
            .get(self.impacts_at + start..self.impacts_at + end)
            .filter(|_| start < end && end <= self.impacts_len)
            .ok_or_else(|| format!("block {b}: impacts outside their area"))
    }

    /// The block holding `row` if the list has it: the first block whose
    /// last row is at or after it; `None` past the list's last row.
    pub fn block_of(&self, row: u32) -> Option<usize> {
        self.block_of_from(0, row)
    }

    /// [`Self::block_of`] for a row known not to lie before block `from`
    /// (searched from there: near rows are found in a few steps).
    pub fn block_of_from(&self, from: usize, row: u32) -> Option<usize> {
        let b = self.first_block_from(from, row);
        (b < self.blocks() && self.last_row(b) >= row).then_some(b)
    }

    /// The first full block at or after `from` whose last row is at or
    /// after `row`, or the tail (`full`): galloping, then binary search
    /// (a seek usually lands near).
    fn first_block_from(&self, from: usize, row: u32) -> usize {
        let (mut low, mut step) = (from, 1);
        let mut high = self.full;
        while low < self.full {
            let probe = (low + step - 1).min(self.full - 1);
            if self.skip(probe, 0) >= row {
                high = probe;
                break;
            }
            low = probe + 1;
            step *= 2;
        }
        // The answer lies in low..=high.
        while low < high {
            let mid = low + (high - low) / 2;
            match self.skip(mid, 0) >= row {
                true => high = mid,
                false => low = mid + 1,
            }
        }
        low
    }

    /// A cursor on the first row.
    pub fn cursor(&self) -> Result<Cursor<'_, 'a>, String> {
        let mut cursor = Cursor {
            list: self,
            block: usize::MAX,
            rows: Box::new([0; BLOCK_LEN]),
            freqs: Box::new([0; BLOCK_LEN]),
            freqs_at: None,
            len: 0,
            i: 0,
            positions_row: 0,
            positions_at: 0,
        };
        cursor.load(0)?;
        Ok(cursor)
    }
}

/// A cursor over a posting list's rows in order, decoding one block at a
/// time, jumping over blocks by their skip entries.
pub struct Cursor<'l, 'a> {
    list: &'l PostingList<'a>,
    /// The decoded block (`usize::MAX` before the first).
    block: usize,
    /// Boxed: cursors are moved (sorted, collected) more than once.
    rows: Box<[u32; BLOCK_LEN]>,
    freqs: Box<[u32; BLOCK_LEN]>,
    /// Where the block's packed frequencies are, and their bit width,
    /// until they are decoded.
    freqs_at: Option<(usize, u8)>,
    len: usize,
    i: usize,
    /// The row of the block whose positions start at `positions_at`
    /// (relative to the list's positions).
    positions_row: usize,
    positions_at: usize,
}

/// The first place in a full block whose row is at or after `target`,
/// given its last row is: seven halvings, whose comparisons compile to
/// conditional moves, not branches.
fn first_at_least(rows: &[u32; BLOCK_LEN], target: u32) -> usize {
    debug_assert!(rows[BLOCK_LEN - 1] >= target);
    let mut at = 0;
    let mut step = BLOCK_LEN / 2;
    while step > 0 {
        if rows[at + step - 1] < target {
            at += step;
        }
        step /= 2;
    }
    at
}

/// The row after the last one: a cursor there is exhausted.
pub const END: u32 = u32::MAX;

impl Cursor<'_, '_> {
    fn load(&mut self, b: usize) -> Result<(), String> {
        counts::add(Counter::BlocksDecoded, 1);
        self.block = b;
        self.i = 0;
        self.positions_row = 0;
        self.positions_at = self.block_positions_start();
        let list = self.list;
        if b < list.full {
            let start = match b {
                0 => 0,
                b => list.skip(b - 1, 4) as usize,
            };
            let end = list.skip(b, 4) as usize;
            let data = list
                .bytes
                .get(list.data_at + start..list.data_at + end)
                .filter(|_| start <= end)
                .ok_or_else(|| format!("block {b} lies outside the data"))?;
            let (row_bits, freq_bits) = match data {
                [r, f, ..] if *r <= 32 && *f <= 32 => (*r, *f),
                _ => return Err(format!("block {b}: no bit widths, or over 32")),
            };
            let rows_len = BitPacker4x::compressed_block_size(row_bits);
            if data.len() != 2 + rows_len + BitPacker4x::compressed_block_size(freq_bits) {
                return Err(format!(
                    "block {b}: its length disagrees with its bit widths"
                ));
            }
            let previous = b.checked_sub(1).map(|p| list.skip(p, 0));
            BitPacker4x::new().decompress_strictly_sorted(
                previous,
                &data[2..],
                &mut self.rows[..],
                row_bits,
            );
            if self.rows[BLOCK_LEN - 1] != list.skip(b, 0) {
                return Err(format!("block {b}: rows disagree with its skip entry"));
            }
            // Rows must rise from the previous block's last (searches and
            // gathers rely on it). Each is the one before plus its delta
            // plus one, a delta under 2^row_bits: only damaged deltas
            // wide enough to carry a row past u32::MAX can break that,
            // so only blocks of such widths are checked.
            let reach = u64::from(previous.unwrap_or(0)) + ((BLOCK_LEN as u64) << row_bits);
            let may_wrap = reach > u64::from(u32::MAX);
            let after_previous = previous.is_none_or(|p| self.rows[0] > p);
            if may_wrap && (!after_previous || !strictly_rising(&self.rows)) {
                return Err(format!("block {b}: rows do not increase"));
            }
            self.freqs_at = Some((list.data_at + start + 2 + rows_len, freq_bits));
            self.len = BLOCK_LEN;
        } else {
            self.load_tail()?;
        }
        Ok(())
    }

    /// Decodes the tail block's rows and frequencies.
    fn load_tail(&mut self) -> Result<(), String> {
        let list = self.list;
        let n = list.tail_len();
        let tail = &list.bytes[list.tail_at..list.impacts_at];
        let mut pos = 0;
        let mut last = list.full.checked_sub(1).map(|b| list.skip(b, 0));
        for i in 0..n {
            let delta = get_varint(tail, &mut pos)?;
            let row = match last {
                None => Some(delta),
                Some(l) => l.checked_add(delta).and_then(|r| r.checked_add(1)),
            }
            .ok_or("a row past u32")?;
            self.rows[i] = row;
            last = Some(row);
        }
        for i in 0..n {
            let freq = get_varint(tail, &mut pos)?;
            self.freqs[i] = freq.checked_add(1).ok_or("a frequency past u32")?;
        }
        if n > 0 && last != Some(list.last_row) {
            return Err("the tail's last row is not the list's".into());
        }
        self.freqs_at = None;
        self.len = n;
        Ok(())
    }

    /// Decodes the block's frequencies if they are not yet.
    fn decode_freqs(&mut self) {
        if let Some((at, bits)) = self.freqs_at.take() {
            // `load` checked that the packed frequencies lie inside.
            BitPacker4x::new().decompress(&self.list.bytes[at..], &mut self.freqs[..], bits);
            for f in self.freqs.iter_mut() {
                // A damaged width may decode u32::MAX; it stays a bound.
                *f = f.saturating_add(1);
            }
        }
    }

    /// The current row, or [`END`].
    pub fn row(&self) -> u32 {
        match self.i < self.len {
            true => self.rows[self.i],
            false => END,
        }
    }

    /// How often the current row holds the term.
    pub fn freq(&mut self) -> u32 {
        self.decode_freqs();
        self.freqs[self.i.min(BLOCK_LEN - 1)]
    }

    /// The current block's rows and frequencies (all of them, whatever
    /// row the cursor is on).
    pub fn block_postings(&mut self) -> (&[u32], &[u32]) {
        self.decode_freqs();
        (&self.rows[..self.len], &self.freqs[..self.len])
    }

    /// The current block's rows (all of them), without its frequencies.
    pub fn block_rows(&self) -> &[u32] {
        &self.rows[..self.len]
    }

    /// The block the cursor is in.
    pub fn block(&self) -> usize {
        self.block
    }

    /// Moves to the next row; returns it or [`END`].
    pub fn advance(&mut self) -> Result<u32, String> {
        self.i += 1;
        if self.i >= self.len && self.block + 1 < self.list.blocks() {
            self.load(self.block + 1)?;
        }
        Ok(self.row())
    }

    /// Visits the rows from the cursor's up to `last` (inclusive) with
    /// their frequencies, a block at a time, and moves past them; returns
    /// the row the cursor is then on, or [`END`].
    pub fn take_until(
        &mut self,
        last: u32,
        mut visit: impl FnMut(u32, u32),
    ) -> Result<u32, String> {
        loop {
            if self.i >= self.len {
                return Ok(END);
            }
            if self.rows[self.i] > last {
                return Ok(self.rows[self.i]);
            }
            self.decode_freqs();
            let rows = &self.rows[self.i..self.len];
            let n = rows.partition_point(|&r| r <= last);
            for (&row, &freq) in rows[..n].iter().zip(&self.freqs[self.i..self.i + n]) {
                visit(row, freq);
            }
            self.i += n;
            if self.i < self.len {
                return Ok(self.rows[self.i]);
            }
            if self.block + 1 >= self.list.blocks() {
                return Ok(END);
            }
            self.load(self.block + 1)?;
        }
    }

    /// Moves to the first row at or after `target`, jumping over whole
    /// blocks whose last row is before it; returns that row or [`END`].
    pub fn seek(&mut self, target: u32) -> Result<u32, String> {
        if self.row() >= target {
            return Ok(self.row());
        }
        let list = self.list;
        if self.block < list.full && list.skip(self.block, 0) < target {
            let b = list.first_block_from(self.block + 1, target);
            counts::add(
                Counter::BlocksSkipped,
                b.min(list.blocks()) - self.block - 1,
            );
            if b >= list.blocks() {
                self.i = self.len;
                return Ok(END);
            }
            self.load(b)?;
        }
        // The block's rows from the cursor on are sorted, and a full
        // block's last is at or after `target` (its skip entry said so).
        // Stepping to a near target first mispredicted where the steps
        // would end (a quarter of the intersection queries' branch
        // misses), and so did a binary search over the rows from the
        // cursor on, whose length varies: a full block is halved seven
        // times whatever the cursor's place.
        self.i = match self.len {
            BLOCK_LEN => first_at_least(&self.rows, target),
            len => self.i + self.rows[self.i..len].partition_point(|&r| r < target),
        };
        if self.i >= self.len {
            // Past the tail's last row (a full block ends at or after it).
            return self.advance_block();
        }
        Ok(self.row())
    }

    /// Moves to the first row of block `b`, decoding it; the blocks
    /// passed are neither decoded nor counted (the caller counts them).
    pub fn enter_block(&mut self, b: usize) -> Result<u32, String> {
        if b >= self.list.blocks() {
            self.i = self.len;
            return Ok(END);
        }
        match b == self.block {
            true => self.i = 0,
            false => self.load(b)?,
        }
        Ok(self.row())
    }

    fn advance_block(&mut self) -> Result<u32, String> {
        match self.block + 1 < self.list.blocks() {
            true => {
                self.load(self.block + 1)?;
                Ok(self.row())
            }
            false => Ok(END),
        }
    }

    /// The current row's positions, into `out` (cleared first). Rows
    /// skipped since the last call are stepped over once: reading each
    /// row's positions in turn costs one pass over the block's positions.
    pub fn positions(&mut self, out: &mut Vec<u32>) -> Result<(), String> {
        out.clear();
        if self.i >= self.len {
            return Ok(());
        }
        self.decode_freqs();
        if self.positions_row > self.i {
            self.positions_row = 0;
            self.positions_at = self.block_positions_start();
        }
        let bytes = &self.list.bytes[self.list.positions_at..];
        // The rows stepped over: their positions counted, not decoded.
        let skipped: u64 = self.freqs[self.positions_row..self.i]
            .iter()
            .map(|&f| u64::from(f))
            .sum();
        let mut pos = skip_varints(bytes, self.positions_at, skipped)?;
        // Each position takes a byte at least: a damaged frequency
        // claiming more than the bytes hold is an error before anything
        // is allocated for it.
        let freq = self.freqs[self.i] as usize;
        if freq > bytes.len().saturating_sub(pos) {
            return Err("positions run past the end".into());
        }
        // Sized once and filled in place (a push per position checked
        // the capacity each time). `next` is the least the next position
        // may be; positions rise, so the last tells whether any passed
        // u32::MAX.
        out.resize(freq, 0);
        let mut next = 0u64;
        for slot in out.iter_mut() {
            let p = next + u64::from(get_varint(bytes, &mut pos)?);
            *slot = p as u32;
            next = p + 1;
        }
        if next > 1 << 32 {
            return Err("a position past u32".into());
        }
        self.positions_row = self.i + 1;
        self.positions_at = pos;
        Ok(())
    }

    /// Where the current block's positions start: where the previous
    /// block's end.
    fn block_positions_start(&self) -> usize {
        match self.block {
            0 => 0,
            b => self.list.skip(b - 1, 12) as usize,
        }
    }
}
