//! The postings of one term in one part: the rows holding the term, how
//! often each holds it, and where (positions, for phrases), encoded as in
//! Lucene and tantivy: blocks of [`BLOCK_LEN`] rows with bit-packed
//! deltas, and a skip entry per block that lets a reader jump over blocks
//! and bound their scores without decoding them.
//!
//! ```text
//! rows: u32 LE                         number of rows (at least 1)
//! skip entry per full block (SKIP_LEN bytes):
//!     last_row: u32 LE                 the block's last row
//!     max_freq: u32 LE, min_len: u32 LE  the block's largest frequency and
//!                                       shortest field length (a BM25 bound)
//!     positions_end: u32 LE            end of its positions in `positions`
//!     row_bits: u8, freq_bits: u8      bit widths of the packed blocks
//! full blocks: row deltas (strictly increasing, from the previous block's
//!     last row), then frequency - 1, each BLOCK_LEN values bit-packed
//! tail (rows % BLOCK_LEN rows): varint row deltas, then varint frequency - 1
//! tail bound: max_freq, min_len as varints
//! positions: per row, its positions as varint deltas
//! ```
//!
//! Invariants the writer guarantees and the reader checks before it
//! relies on them: rows strictly increase; each frequency is at least 1
//! and equals the number of the row's positions; positions of a row
//! strictly increase; every length and bit width lies inside the bytes.

use bitpacking::{BitPacker, BitPacker4x};

/// Rows per packed block (the 4x packer's block: SIMD-friendly).
pub const BLOCK_LEN: usize = BitPacker4x::BLOCK_LEN;

/// Bytes of one skip entry.
const SKIP_LEN: usize = 18;

/// One term's postings in a part, as the index builder holds them:
/// parallel `rows` (strictly increasing) and `freqs` (each at least 1),
/// and every row's positions in row order, `freqs[i]` of them for row `i`,
/// strictly increasing within a row.
#[derive(Debug, Clone, Copy)]
pub struct TermPostings<'a> {
    pub rows: &'a [u32],
    pub freqs: &'a [u32],
    pub positions: &'a [u32],
}

/// Encodes `postings` into `out`; `len_of` gives a row's length in tokens
/// (for the blocks' score bounds).
pub fn encode(postings: TermPostings<'_>, len_of: impl Fn(u32) -> u32, out: &mut Vec<u8>) {
    let TermPostings {
        rows: all_rows,
        freqs: all_freqs,
        positions: all_positions,
    } = postings;
    debug_assert!(!all_rows.is_empty() && all_rows.len() == all_freqs.len());
    debug_assert!(all_rows.windows(2).all(|w| w[0] < w[1]));
    let packer = BitPacker4x::new();
    let full = all_rows.len() / BLOCK_LEN;
    out.extend_from_slice(&(all_rows.len() as u32).to_le_bytes());
    let skips_at = out.len();
    out.resize(skips_at + full * SKIP_LEN, 0);

    let mut positions = Vec::new();
    let mut next_position = 0;
    let mut put_row_positions = |freq: u32, positions: &mut Vec<u8>| {
        let end = next_position + freq as usize;
        put_positions(&all_positions[next_position..end], positions);
        next_position = end;
    };
    let mut rows = [0u32; BLOCK_LEN];
    let mut freqs = [0u32; BLOCK_LEN];
    let mut packed = [0u8; 4 * BLOCK_LEN];
    let mut previous: Option<u32> = None;
    for b in 0..full {
        let range = b * BLOCK_LEN..(b + 1) * BLOCK_LEN;
        rows.copy_from_slice(&all_rows[range.clone()]);
        for (i, &freq) in all_freqs[range.clone()].iter().enumerate() {
            freqs[i] = freq - 1;
            put_row_positions(freq, &mut positions);
        }
        let row_bits = packer.num_bits_strictly_sorted(previous, &rows);
        let freq_bits = packer.num_bits(&freqs);
        let n = packer.compress_strictly_sorted(previous, &rows, &mut packed, row_bits);
        out.extend_from_slice(&packed[..n]);
        let n = packer.compress(&freqs, &mut packed, freq_bits);
        out.extend_from_slice(&packed[..n]);

        let (max_freq, min_len) = bound(&all_rows[range.clone()], &all_freqs[range], &len_of);
        let last_row = rows[BLOCK_LEN - 1];
        let skip = &mut out[skips_at + b * SKIP_LEN..skips_at + (b + 1) * SKIP_LEN];
        skip[0..4].copy_from_slice(&last_row.to_le_bytes());
        skip[4..8].copy_from_slice(&max_freq.to_le_bytes());
        skip[8..12].copy_from_slice(&min_len.to_le_bytes());
        skip[12..16].copy_from_slice(&(positions.len() as u32).to_le_bytes());
        skip[16] = row_bits;
        skip[17] = freq_bits;
        previous = Some(last_row);
    }
    let tail = full * BLOCK_LEN..all_rows.len();
    let mut last = previous;
    for &row in &all_rows[tail.clone()] {
        put_varint(last.map_or(row, |l| row - l - 1), out);
        last = Some(row);
    }
    for &freq in &all_freqs[tail.clone()] {
        put_varint(freq - 1, out);
        put_row_positions(freq, &mut positions);
    }
    let (max_freq, min_len) = bound(&all_rows[tail.clone()], &all_freqs[tail], &len_of);
    put_varint(max_freq, out);
    put_varint(min_len, out);
    out.extend_from_slice(&positions);
}

/// The largest frequency and the shortest length among `rows`.
fn bound(rows: &[u32], freqs: &[u32], len_of: &impl Fn(u32) -> u32) -> (u32, u32) {
    let max_freq = freqs.iter().copied().max().unwrap_or(0);
    let min_len = rows.iter().map(|&r| len_of(r)).min().unwrap_or(u32::MAX);
    (max_freq, min_len)
}

fn put_positions(positions: &[u32], out: &mut Vec<u8>) {
    let mut last = None;
    for &p in positions {
        put_varint(last.map_or(p, |l: u32| p - l - 1), out);
        last = Some(p);
    }
}

fn put_varint(mut v: u32, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> Result<u32, String> {
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

/// What bounds the scores of a block's rows: its largest frequency and
/// shortest length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockBound {
    /// The block's last row.
    pub last_row: u32,
    pub max_freq: u32,
    pub min_len: u32,
}

struct Skip {
    bound: BlockBound,
    /// Byte range of the block's packed rows and frequencies.
    start: usize,
    row_bits: u8,
    freq_bits: u8,
    positions_end: usize,
}

/// A reader over one encoded posting list, checked on open: every skip
/// entry and block lies inside the bytes.
pub struct PostingList<'a> {
    bytes: &'a [u8],
    rows: u32,
    skips: Vec<Skip>,
    tail_bound: BlockBound,
    /// Where the positions start.
    positions_at: usize,
    /// Tail rows and frequencies, decoded on open (at most BLOCK_LEN - 1).
    tail_rows: Vec<u32>,
    tail_freqs: Vec<u32>,
}

impl<'a> PostingList<'a> {
    /// Opens the posting list `bytes`; a malformed one is an error saying
    /// what is wrong (the caller names the part and component).
    pub fn open(bytes: &'a [u8]) -> Result<Self, String> {
        let rows = bytes
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .filter(|&r| r > 0)
            .ok_or("a posting list without rows")?;
        let full = rows as usize / BLOCK_LEN;
        let skips_len = full
            .checked_mul(SKIP_LEN)
            .filter(|&l| 4 + l <= bytes.len())
            .ok_or("skip entries run past the end")?;
        let mut skips = Vec::with_capacity(full);
        let mut at = 4 + skips_len;
        let mut previous_row = None;
        let mut previous_positions = 0;
        for b in 0..full {
            let s = &bytes[4 + b * SKIP_LEN..4 + (b + 1) * SKIP_LEN];
            let word = |i: usize| u32::from_le_bytes(s[i..i + 4].try_into().expect("4 bytes"));
            let (row_bits, freq_bits) = (s[16], s[17]);
            if row_bits > 32 || freq_bits > 32 {
                return Err(format!("block {b}: bit width over 32"));
            }
            let last_row = word(0);
            if previous_row.is_some_and(|p| last_row <= p) {
                return Err(format!("block {b}: rows do not increase"));
            }
            let positions_end = word(12) as usize;
            if positions_end < previous_positions {
                return Err(format!("block {b}: positions go back"));
            }
            let len = BitPacker4x::compressed_block_size(row_bits)
                + BitPacker4x::compressed_block_size(freq_bits);
            if at + len > bytes.len() {
                return Err(format!("block {b} runs past the end"));
            }
            skips.push(Skip {
                bound: BlockBound {
                    last_row,
                    max_freq: word(4),
                    min_len: word(8),
                },
                start: at,
                row_bits,
                freq_bits,
                positions_end,
            });
            at += len;
            previous_row = Some(last_row);
            previous_positions = positions_end;
        }
        let tail = rows as usize % BLOCK_LEN;
        let mut pos = at;
        let (mut tail_rows, mut tail_freqs) = (Vec::with_capacity(tail), Vec::with_capacity(tail));
        let mut last = previous_row;
        for _ in 0..tail {
            let delta = get_varint(bytes, &mut pos)?;
            let row = match last {
                None => Some(delta),
                Some(l) => l.checked_add(delta).and_then(|r| r.checked_add(1)),
            }
            .ok_or("a row past u32")?;
            tail_rows.push(row);
            last = Some(row);
        }
        for _ in 0..tail {
            let freq = get_varint(bytes, &mut pos)?;
            tail_freqs.push(freq.checked_add(1).ok_or("a frequency past u32")?);
        }
        let tail_bound = BlockBound {
            last_row: last.unwrap_or(0),
            max_freq: get_varint(bytes, &mut pos)?,
            min_len: get_varint(bytes, &mut pos)?,
        };
        if previous_positions > bytes.len() - pos {
            return Err("positions run past the end".into());
        }
        Ok(PostingList {
            bytes,
            rows,
            skips,
            tail_bound,
            positions_at: pos,
            tail_rows,
            tail_freqs,
        })
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
        self.skips.len() + usize::from(!self.tail_rows.is_empty())
    }

    /// The bound of block `b` (the tail is the last block).
    pub fn bound(&self, b: usize) -> BlockBound {
        match self.skips.get(b) {
            Some(skip) => skip.bound,
            None => self.tail_bound,
        }
    }

    /// The block holding `row` if the list has it: the first block whose
    /// last row is at or after it; `None` past the list's last row.
    pub fn block_of(&self, row: u32) -> Option<usize> {
        let b = self.skips.partition_point(|s| s.bound.last_row < row);
        match b < self.skips.len() {
            true => Some(b),
            false => (!self.tail_rows.is_empty() && self.tail_bound.last_row >= row).then_some(b),
        }
    }

    /// A cursor on the first row.
    pub fn cursor(&self) -> Result<Cursor<'_, 'a>, String> {
        let mut cursor = Cursor {
            list: self,
            block: usize::MAX,
            rows: [0; BLOCK_LEN],
            freqs: [0; BLOCK_LEN],
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
    rows: [u32; BLOCK_LEN],
    freqs: [u32; BLOCK_LEN],
    len: usize,
    i: usize,
    /// The row of the block whose positions start at `positions_at`
    /// (relative to the list's positions).
    positions_row: usize,
    positions_at: usize,
}

/// The row after the last one: a cursor there is exhausted.
pub const END: u32 = u32::MAX;

impl Cursor<'_, '_> {
    fn load(&mut self, b: usize) -> Result<(), String> {
        self.block = b;
        self.i = 0;
        self.positions_row = 0;
        self.positions_at = self.block_positions_start();
        let list = self.list;
        if let Some(skip) = list.skips.get(b) {
            let packer = BitPacker4x::new();
            let previous = b.checked_sub(1).map(|p| list.skips[p].bound.last_row);
            let rows_len = BitPacker4x::compressed_block_size(skip.row_bits);
            let bytes = &list.bytes[skip.start..];
            packer.decompress_strictly_sorted(previous, bytes, &mut self.rows, skip.row_bits);
            packer.decompress(&bytes[rows_len..], &mut self.freqs, skip.freq_bits);
            if self.rows[BLOCK_LEN - 1] != skip.bound.last_row {
                return Err(format!("block {b}: rows disagree with its skip entry"));
            }
            for f in &mut self.freqs {
                *f = f.checked_add(1).ok_or("a frequency past u32")?;
            }
            self.len = BLOCK_LEN;
        } else {
            let n = list.tail_rows.len();
            self.rows[..n].copy_from_slice(&list.tail_rows);
            self.freqs[..n].copy_from_slice(&list.tail_freqs);
            self.len = n;
        }
        Ok(())
    }

    /// The current row, or [`END`].
    pub fn row(&self) -> u32 {
        match self.i < self.len {
            true => self.rows[self.i],
            false => END,
        }
    }

    /// How often the current row holds the term.
    pub fn freq(&self) -> u32 {
        self.freqs[self.i.min(BLOCK_LEN - 1)]
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

    /// Moves to the first row at or after `target`, jumping over whole
    /// blocks whose last row is before it; returns that row or [`END`].
    pub fn seek(&mut self, target: u32) -> Result<u32, String> {
        if self.row() >= target {
            return Ok(self.row());
        }
        let list = self.list;
        let mut b = self.block;
        while b < list.skips.len() && list.skips[b].bound.last_row < target {
            b += 1;
        }
        if b != self.block {
            if b >= list.blocks() {
                self.i = self.len;
                return Ok(END);
            }
            self.load(b)?;
        }
        while self.i < self.len && self.rows[self.i] < target {
            self.i += 1;
        }
        if self.i >= self.len {
            // Past the block's last row (the tail has no skip entry).
            return self.advance_block();
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
        if self.positions_row > self.i {
            self.positions_row = 0;
            self.positions_at = self.block_positions_start();
        }
        let bytes = &self.list.bytes[self.list.positions_at..];
        let mut pos = self.positions_at;
        for row in self.positions_row..=self.i {
            let mut last: Option<u32> = None;
            for _ in 0..self.freqs[row] {
                let delta = get_varint(bytes, &mut pos)?;
                if row < self.i {
                    continue;
                }
                let p = match last {
                    None => Some(delta),
                    Some(l) => l.checked_add(delta).and_then(|p| p.checked_add(1)),
                }
                .ok_or("a position past u32")?;
                last = Some(p);
                out.push(p);
            }
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
            b => self.list.skips[b - 1].positions_end,
        }
    }
}
