//! Skip indexes (ClickHouse's data-skipping indexes): per block of
//! `granularity` granules, a summary of one column's values that can prove
//! a block holds no row matching `=`, `IN` or (token bloom filter) a
//! `LIKE` pattern's whole words.
//!
//! - `minmax`: accepted for ClickHouse users, but built in: every part keeps
//!   the min/max of every column for every granule (a finer granularity than
//!   any declared one), so it has no file of its own;
//! - `set(N)`: the hashes of the block's distinct values, or "too many"
//!   past N (then the block is always read);
//! - `bloom_filter(p)`: a Bloom filter of value hashes, false-positive rate p;
//! - `tokenbf(p)`: a Bloom filter of the words of string values (runs of
//!   letters and digits), for `LIKE '%... word ...%'`.
//!
//! Values hash with xxHash64 over a canonical byte form (strings: their
//! UTF-8 bytes; other types: their display text), so a literal hashes the
//! same once cast to the column's type. A part written before an index was
//! declared has no such file and is read in full; merges build it.
//!
//! ```text
//! envelope(SKIP) { blocks u32 | per block: len u32, bytes }
//!   set:   overflow u8 | count u32 | count × u64 sorted hashes
//!   bloom: hashes u32 | bits u32 | ceil(bits / 8) bytes
//! ```

use std::fmt;
use std::str::FromStr;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use xxhash_rust::xxh64::xxh64;

use crate::encoding::envelope::{self, FileKind};
use crate::error::{Error, Result};

/// What a skip index summarises.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SkipKind {
    /// Kept for every column in the part index; no file.
    MinMax,
    Set(usize),
    Bloom(f64),
    TokenBloom(f64),
}

/// A declared skip index: `'skip_index.<col>' 'bloom_filter(0.01) granularity 4'`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SkipSpec {
    pub kind: SkipKind,
    /// Granules per block.
    pub granularity: usize,
}

impl fmt::Display for SkipSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SkipKind::MinMax => write!(f, "minmax")?,
            SkipKind::Set(n) => write!(f, "set({n})")?,
            SkipKind::Bloom(p) => write!(f, "bloom_filter({p})")?,
            SkipKind::TokenBloom(p) => write!(f, "tokenbf({p})")?,
        }
        write!(f, " granularity {}", self.granularity)
    }
}

impl FromStr for SkipSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        let (kind, granularity) = match lower.split_once(" granularity ") {
            Some((k, g)) => (
                k.trim(),
                g.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|g| (1..=1 << 20).contains(g))
                    .ok_or_else(|| {
                        format!("granularity '{}' is not a count of granules", g.trim())
                    })?,
            ),
            None => (lower.as_str(), 1),
        };
        let arg = |name: &str| -> Option<&str> {
            kind.strip_prefix(name)
                .map(str::trim)
                .and_then(|r| r.strip_prefix('('))
                .and_then(|r| r.strip_suffix(')'))
                .map(str::trim)
        };
        let fpr = |text: &str| -> std::result::Result<f64, String> {
            text.parse::<f64>()
                .ok()
                .filter(|p| *p > 0.0 && *p < 1.0)
                .ok_or_else(|| format!("false-positive rate '{text}' is not between 0 and 1"))
        };
        let kind = if kind == "minmax" {
            SkipKind::MinMax
        } else if kind == "bloom_filter" {
            SkipKind::Bloom(0.025)
        } else if kind == "tokenbf" {
            SkipKind::TokenBloom(0.025)
        } else if let Some(a) = arg("bloom_filter") {
            SkipKind::Bloom(fpr(a)?)
        } else if let Some(a) = arg("tokenbf") {
            SkipKind::TokenBloom(fpr(a)?)
        } else if let Some(a) = arg("set") {
            let n = a
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1 << 20).contains(n))
                .ok_or_else(|| format!("set size '{a}' is not between 1 and 1048576"))?;
            SkipKind::Set(n)
        } else {
            return Err(format!(
                "unknown skip index '{kind}' (expected minmax, set(N), bloom_filter[(p)], tokenbf[(p)], \
                 optionally followed by 'granularity N')"
            ));
        };
        Ok(SkipSpec { kind, granularity })
    }
}

impl SkipSpec {
    /// Whether the index is a file of its own (`minmax` lives in the part
    /// index).
    pub fn has_file(&self) -> bool {
        self.kind != SkipKind::MinMax
    }

    /// Checks the index can summarise `data_type`.
    pub fn check(&self, data_type: &DataType) -> std::result::Result<(), String> {
        let text = matches!(
            data_type,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        );
        let float = matches!(
            data_type,
            DataType::Float16 | DataType::Float32 | DataType::Float64
        );
        match self.kind {
            _ if crate::part::column::layout_of(data_type).is_none() => {
                Err(format!("no skip index for {data_type}"))
            }
            SkipKind::MinMax => Ok(()),
            SkipKind::TokenBloom(_) if !text => {
                Err(format!("tokenbf indexes words of strings, not {data_type}"))
            }
            // -0.0 and 0.0, or NaN payloads, would need a canonical form.
            _ if float => Err(format!(
                "no skip index for {data_type} but minmax (built in)"
            )),
            _ => Ok(()),
        }
    }
}

/// The canonical hash of one value, or `None` for NULL (never matched by
/// `=` or `IN`).
pub fn hash_scalar(value: &ScalarValue) -> Option<u64> {
    if value.is_null() {
        return None;
    }
    Some(match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => hash_str(s),
        other => xxh64(other.to_string().as_bytes(), 0),
    })
}

/// The values of a string array, whatever its representation.
fn strings(array: &ArrayRef) -> Option<Box<dyn Iterator<Item = Option<&str>> + '_>> {
    match array.data_type() {
        DataType::Utf8 => Some(Box::new(array.as_string::<i32>().iter())),
        DataType::LargeUtf8 => Some(Box::new(array.as_string::<i64>().iter())),
        DataType::Utf8View => Some(Box::new(array.as_string_view().iter())),
        _ => None,
    }
}

fn hash_str(s: &str) -> u64 {
    xxh64(s.as_bytes(), 0)
}

/// The hash of one word, as `tokenbf` indexes it.
pub fn hash_token(word: &str) -> u64 {
    hash_str(word)
}

/// Hashes of the non-null values of `array`.
fn value_hashes(array: &ArrayRef) -> Result<Vec<u64>> {
    if let Some(strings) = strings(array) {
        return Ok(strings.flatten().map(hash_str).collect());
    }
    let mut hashes = Vec::with_capacity(array.len());
    for i in 0..array.len() {
        if array.is_valid(i) {
            let value = ScalarValue::try_from_array(array, i)
                .map_err(|e| Error::Schema(format!("skip index: {e}")))?;
            hashes.extend(hash_scalar(&value));
        }
    }
    Ok(hashes)
}

/// Sorted, without repeats.
fn distinct(mut hashes: Vec<u64>) -> Vec<u64> {
    hashes.sort_unstable();
    hashes.dedup();
    hashes
}

/// Words of a string: maximal runs of letters and digits.
pub fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
}

fn token_hashes(array: &ArrayRef) -> Vec<u64> {
    strings(array)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(tokens)
        .map(hash_token)
        .collect()
}

/// The summary of one block.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Sorted distinct hashes; `None` when the block had too many.
    Set(Option<Vec<u64>>),
    Bloom {
        hashes: u32,
        bits: Vec<u8>,
    },
}

impl Block {
    /// Builds the summary of `values` (one block's rows of the column).
    pub fn build(spec: &SkipSpec, values: &ArrayRef) -> Result<Block> {
        Ok(match spec.kind {
            SkipKind::MinMax => {
                return Err(Error::Table(
                    "minmax is kept in the part index, not built as a block".into(),
                ));
            }
            SkipKind::Set(limit) => {
                let hashes = distinct(value_hashes(values)?);
                Block::Set((hashes.len() <= limit).then_some(hashes))
            }
            SkipKind::Bloom(p) => Block::bloom(distinct(value_hashes(values)?), p),
            SkipKind::TokenBloom(p) => Block::bloom(distinct(token_hashes(values)), p),
        })
    }

    /// A filter sized for `hashes`, which must be distinct: a value or
    /// word repeated in every row must not grow it.
    fn bloom(hashes: Vec<u64>, fpr: f64) -> Block {
        let n = hashes.len().max(1) as f64;
        let ln2 = std::f64::consts::LN_2;
        let bits = ((-n * fpr.ln()) / (ln2 * ln2)).ceil().max(64.0) as usize;
        let k = ((bits as f64 / n) * ln2).round().clamp(1.0, 16.0) as u32;
        let mut filter = vec![0u8; bits.div_ceil(8)];
        let m = (filter.len() * 8) as u64;
        for h in hashes {
            for i in 0..k {
                let bit = probe(h, i, m);
                filter[(bit / 8) as usize] |= 1 << (bit % 8);
            }
        }
        Block::Bloom {
            hashes: k,
            bits: filter,
        }
    }

    /// Whether the block may hold a value hashing to `hash`.
    pub fn may_contain(&self, hash: u64) -> bool {
        match self {
            Block::Set(None) => true,
            Block::Set(Some(hashes)) => hashes.binary_search(&hash).is_ok(),
            Block::Bloom { hashes, bits } => {
                let m = (bits.len() * 8) as u64;
                m == 0
                    || (0..*hashes).all(|i| {
                        let bit = probe(hash, i, m);
                        bits[(bit / 8) as usize] & (1 << (bit % 8)) != 0
                    })
            }
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Block::Set(hashes) => {
                out.push(u8::from(hashes.is_none()));
                let hashes = hashes.as_deref().unwrap_or_default();
                out.extend_from_slice(&(hashes.len() as u32).to_le_bytes());
                for h in hashes {
                    out.extend_from_slice(&h.to_le_bytes());
                }
            }
            Block::Bloom { hashes, bits } => {
                out.extend_from_slice(&hashes.to_le_bytes());
                out.extend_from_slice(&((bits.len() * 8) as u32).to_le_bytes());
                out.extend_from_slice(bits);
            }
        }
    }

    fn decode(kind: SkipKind, bytes: &[u8]) -> std::result::Result<Block, String> {
        let word = |at: usize| -> std::result::Result<u32, String> {
            bytes
                .get(at..at + 4)
                .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
                .ok_or_else(|| "skip index block truncated".to_string())
        };
        match kind {
            SkipKind::MinMax => Err("minmax has no skip index file".into()),
            SkipKind::Set(_) => {
                let overflow = *bytes.first().ok_or("skip index block truncated")? == 1;
                let count = word(1)? as usize;
                let body = bytes.get(5..).unwrap_or_default();
                if body.len() != count.checked_mul(8).ok_or("set too large")? {
                    return Err("set length does not match its count".into());
                }
                let hashes = body
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                Ok(Block::Set((!overflow).then_some(hashes)))
            }
            SkipKind::Bloom(_) | SkipKind::TokenBloom(_) => {
                let (hashes, bits) = (word(0)?, word(4)? as usize);
                let filter = bytes.get(8..).unwrap_or_default();
                if filter.len() * 8 != bits || hashes == 0 || hashes > 64 {
                    return Err("bloom filter header does not match its bits".into());
                }
                Ok(Block::Bloom {
                    hashes,
                    bits: filter.to_vec(),
                })
            }
        }
    }
}

/// The `i`-th probe position of a hash in a filter of `m` bits (double hashing).
fn probe(hash: u64, i: u32, m: u64) -> u64 {
    let h1 = hash;
    let h2 = hash.rotate_left(32) | 1;
    h1.wrapping_add(u64::from(i).wrapping_mul(h2)) % m
}

/// A part's skip index for one column: one block per `granularity` granules.
#[derive(Debug, Clone, PartialEq)]
pub struct SkipIndex {
    pub spec: SkipSpec,
    pub blocks: Vec<Block>,
}

impl SkipIndex {
    pub fn encode(&self) -> Vec<u8> {
        let mut body = (self.blocks.len() as u32).to_le_bytes().to_vec();
        for block in &self.blocks {
            let mut bytes = Vec::new();
            block.encode(&mut bytes);
            body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            body.extend_from_slice(&bytes);
        }
        envelope::seal(FileKind::SkipIndex, &body)
    }

    pub fn decode(location: &str, spec: SkipSpec, file: &[u8]) -> Result<SkipIndex> {
        let body = envelope::open(location, FileKind::SkipIndex, file)?;
        let corrupt = |reason: String| Error::corrupt(location, reason);
        let count = body
            .get(..4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap()) as usize)
            .ok_or_else(|| corrupt("skip index truncated".into()))?;
        let mut pos = 4;
        let mut blocks = Vec::new();
        for _ in 0..count {
            let len = body
                .get(pos..pos + 4)
                .map(|w| u32::from_le_bytes(w.try_into().unwrap()) as usize)
                .ok_or_else(|| corrupt("skip index truncated".into()))?;
            let bytes = body
                .get(pos + 4..pos + 4 + len)
                .ok_or_else(|| corrupt("skip index block truncated".into()))?;
            blocks.push(Block::decode(spec.kind, bytes).map_err(corrupt)?);
            pos += 4 + len;
        }
        if pos != body.len() {
            return Err(corrupt("bytes after the last skip index block".into()));
        }
        Ok(SkipIndex { spec, blocks })
    }
}
