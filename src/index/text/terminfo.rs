//! Term infos: for each term of a part's dictionary, by ordinal, its
//! document frequency and where its posting list lies, a few bits each.
//!
//! Posting lists are laid end to end in term order (cut into postings
//! blocks between lists), so a list is known by where it ends: it starts
//! where the previous term's ends. Terms are grouped by [`GROUP`] with the
//! group's first start and, per term, its document frequency and its end
//! less that start, each bit-packed at the group's widest value's bits:
//! one term's info is read without decoding the others, and a run of rare
//! terms costs about two bytes a term (Lucene's and tantivy's term info
//! stores pack theirs the same way).
//!
//! ```text
//! term info block (TERMS_PER_BLOCK terms, the last one the rest):
//!     group offsets       u32 LE per group, from the block's start
//!     per group (GROUP terms, the block's last group the rest):
//!         base            u64 LE: where its first term's list starts
//!         freq_bits u8, end_bits u8
//!         doc frequencies bit-packed, least significant bit first
//!         ends less base  bit-packed, least significant bit first
//! ```

/// Terms per term info block.
pub const TERMS_PER_BLOCK: usize = 4096;
/// Terms per group (one base and two bit widths).
pub const GROUP: usize = 128;

const GROUP_HEADER_LEN: usize = 10;
/// A value is read as eight bytes from the byte its first bit is in.
const MAX_BITS: u8 = 56;

/// One term's info: its rows and its list's span in the postings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub doc_freq: u32,
    pub start: u64,
    pub end: u64,
}

/// Encodes the term info blocks of terms whose document frequencies are
/// `doc_freqs` and whose lists end at `ends` (ascending; the first
/// starts at 0). Fails if a group's lists span more than 2^56 bytes.
pub fn encode(doc_freqs: &[u32], ends: &[u64]) -> Result<Vec<Vec<u8>>, String> {
    debug_assert_eq!(doc_freqs.len(), ends.len());
    let mut blocks = Vec::new();
    for (b, freqs) in doc_freqs.chunks(TERMS_PER_BLOCK).enumerate() {
        let first = b * TERMS_PER_BLOCK;
        let groups = freqs.len().div_ceil(GROUP);
        let mut block = vec![0u8; 4 * groups];
        for (g, freqs) in freqs.chunks(GROUP).enumerate() {
            let at = block.len() as u32;
            block[4 * g..4 * g + 4].copy_from_slice(&at.to_le_bytes());
            let i = first + g * GROUP;
            let base = match i {
                0 => 0,
                i => ends[i - 1],
            };
            let ends = ends[i..i + freqs.len()].iter().map(|&e| e - base);
            let freq_bits = bits(freqs.iter().map(|&f| u64::from(f)).max().unwrap_or(0));
            let end_bits = bits(ends.clone().max().unwrap_or(0));
            if end_bits > MAX_BITS {
                return Err(format!("terms {i}.. span over 2^{MAX_BITS} postings bytes"));
            }
            block.extend_from_slice(&base.to_le_bytes());
            block.extend_from_slice(&[freq_bits, end_bits]);
            pack(freqs.iter().map(|&f| u64::from(f)), freq_bits, &mut block);
            pack(ends, end_bits, &mut block);
        }
        blocks.push(block);
    }
    Ok(blocks)
}

/// Term `i`'s entry in a term info block `block` of `terms` terms.
pub fn entry(block: &[u8], terms: usize, i: usize) -> Result<Entry, String> {
    if i >= terms {
        return Err(format!("term {i} of a block of {terms}"));
    }
    let (g, k) = (i / GROUP, i % GROUP);
    let n = (terms - g * GROUP).min(GROUP);
    let at = block
        .get(4 * g..4 * g + 4)
        .map(|w| u32::from_le_bytes(w.try_into().expect("four bytes")) as usize)
        .ok_or("a group offset past the block")?;
    let header = block
        .get(at..at.saturating_add(GROUP_HEADER_LEN))
        .ok_or("a group past the block")?;
    let base = u64::from_le_bytes(header[..8].try_into().expect("eight bytes"));
    let (freq_bits, end_bits) = (header[8], header[9]);
    if freq_bits > 32 || end_bits > MAX_BITS {
        return Err(format!("bit widths {freq_bits} and {end_bits}"));
    }
    let freqs_at = at + GROUP_HEADER_LEN;
    let ends_at = freqs_at + packed_len(n, freq_bits);
    let group_end = ends_at + packed_len(n, end_bits);
    let packed = block
        .get(freqs_at..group_end)
        .ok_or("a group past the block")?;
    let ends = &packed[ends_at - freqs_at..];
    let doc_freq = unpack(packed, k, freq_bits) as u32;
    let start = match k {
        0 => base,
        k => base.saturating_add(unpack(ends, k - 1, end_bits)),
    };
    let end = base.saturating_add(unpack(ends, k, end_bits));
    if doc_freq == 0 || start >= end {
        return Err(format!(
            "term {i}: {doc_freq} rows, postings {start}..{end}"
        ));
    }
    Ok(Entry {
        doc_freq,
        start,
        end,
    })
}

/// Bits to hold `v`.
fn bits(v: u64) -> u8 {
    (64 - v.leading_zeros()) as u8
}

fn packed_len(n: usize, bits: u8) -> usize {
    (n * bits as usize).div_ceil(8)
}

/// Appends `values`, `bits` each, least significant bit first.
fn pack(values: impl Iterator<Item = u64>, bits: u8, out: &mut Vec<u8>) {
    let (mut acc, mut held) = (0u128, 0u32);
    for v in values {
        acc |= u128::from(v) << held;
        held += u32::from(bits);
        while held >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            held -= 8;
        }
    }
    if held > 0 {
        out.push(acc as u8);
    }
}

/// Value `i` of values packed `bits` each in `packed` (which holds every
/// one of them: the caller checked its length).
fn unpack(packed: &[u8], i: usize, bits: u8) -> u64 {
    if bits == 0 {
        return 0;
    }
    let bit = i * bits as usize;
    let mut word = [0u8; 8];
    let from = &packed[bit / 8..packed.len().min(bit / 8 + 8)];
    word[..from.len()].copy_from_slice(from);
    (u64::from_le_bytes(word) >> (bit % 8)) & ((1u64 << bits) - 1)
}
