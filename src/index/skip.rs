//! Skip indexes (ClickHouse's data-skipping indexes): per block of
//! `granularity` granules, a summary of one column's values that can prove
//! a block holds no row matching `=`, `IN` or (token bloom filter) a
//! `LIKE` pattern's whole words.
//!
//! - `minmax`: accepted for ClickHouse users, but built in: every part keeps
//!   the min/max of every column for every granule (a finer granularity than
//!   any declared one), so it has no component of its own;
//! - `set(N)`: the hashes of the block's distinct values, or "too many"
//!   past N (then the block is always read);
//! - `bloom_filter(p)`: a Bloom filter of value hashes, false-positive rate p;
//! - `tokenbf(p)`: a Bloom filter of the words of string values (runs of
//!   letters and digits), for `LIKE '%... word ...%'`.
//!
//! A value hashes with xxHash64 over diagon's own byte form of it, the one
//! the column format stores: little-endian fixed-width values, the bytes of
//! strings and binaries, one byte for a boolean. A literal cast to the
//! column's type hashes the same, whatever DataFusion prints it as.
//!
//! Each index is a part component (`skip_index`, format 2), one block per
//! index block:
//! ```text
//!   set:   overflow u8 | count u32 | count × u64 sorted hashes
//!   bloom: hashes u32 | bits u32 | ceil(bits / 8) bytes
//! ```
//! Parts written before components hold format-1 files (`k<i>.skp`, read
//! whole, same blocks). Format 1 hashed non-string values through their
//! display text, so only its string indexes are used; the others read as
//! absent (the granules are read) until a merge rebuilds them.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use xxhash_rust::xxh64::xxh64;

use crate::encoding::envelope::{self, FileKind};
use crate::encoding::{Codec, Layout, layout_of};
use crate::error::{Error, Result};
use crate::part::component::{BuiltComponent, Component, ComponentBuilder};
use crate::part::{PartIndex, column, part_dir};
use crate::storage::Storage;

/// The component kind of skip indexes.
pub const KIND: &str = "skip_index";
/// The format of skip index component blocks.
pub const VERSION: u16 = 2;

/// What a skip index summarises.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SkipKind {
    /// Kept for every column in the part index; no component.
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

fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

impl SkipSpec {
    /// Whether the index is a component of its own (`minmax` lives in the
    /// part index).
    pub fn has_component(&self) -> bool {
        self.kind != SkipKind::MinMax
    }

    /// Whether the index summarises words rather than whole values.
    pub fn is_token(&self) -> bool {
        matches!(self.kind, SkipKind::TokenBloom(_))
    }

    /// Checks the index can summarise `data_type` (a dictionary's or run-end
    /// type's values, as parts store them).
    pub fn check(&self, data_type: &DataType) -> std::result::Result<(), String> {
        if let Some(stored) = crate::encoding::storage_type(data_type)
            && stored != *data_type
        {
            return self.check(&stored);
        }
        let float = matches!(
            data_type,
            DataType::Float16 | DataType::Float32 | DataType::Float64
        );
        if let Some(element) = list_element(data_type) {
            return match self.kind {
                SkipKind::Set(_) | SkipKind::Bloom(_) => match self.check(element) {
                    Ok(()) if layout_of(element) != Some(Layout::Nested) => Ok(()),
                    _ => Err(format!(
                        "a skip index on a list indexes its elements; {element} elements cannot be"
                    )),
                },
                _ => Err(format!(
                    "{data_type} takes set or bloom_filter (which index its elements)"
                )),
            };
        }
        match self.kind {
            _ if layout_of(data_type).is_none() => Err(format!("no skip index for {data_type}")),
            _ if layout_of(data_type) == Some(Layout::Nested) => Err(format!(
                "no skip index for {data_type} (a list's set or bloom_filter indexes its elements)"
            )),
            SkipKind::MinMax => Ok(()),
            SkipKind::TokenBloom(_) if !is_text(data_type) => {
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

fn hash_bytes(bytes: &[u8]) -> u64 {
    xxh64(bytes, 0)
}

/// The hash of each value of `array` from its stored byte form; `None` for
/// NULL (never matched by `=` or `IN`).
pub fn value_hashes(array: &dyn Array) -> Result<Vec<Option<u64>>> {
    let valid = |i: usize| array.is_valid(i);
    Ok(match layout_of(array.data_type()) {
        Some(Layout::Fixed(width)) => {
            let data = array.to_data();
            let values = &data.buffers()[0].as_slice()[data.offset() * width..];
            (0..array.len())
                .map(|i| valid(i).then(|| hash_bytes(&values[i * width..(i + 1) * width])))
                .collect()
        }
        Some(Layout::Boolean) => {
            let values = array.as_boolean();
            (0..array.len())
                .map(|i| valid(i).then(|| hash_bytes(&[u8::from(values.value(i))])))
                .collect()
        }
        Some(Layout::VarLen) => column::varlen_values(array)?
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| valid(i).then(|| hash_bytes(bytes)))
            .collect(),
        Some(Layout::Nested) | None => {
            return Err(Error::Schema(format!(
                "no skip index hashes {}",
                array.data_type()
            )));
        }
    })
}

/// The element type of a list column, whose skip index holds the
/// hashes of the elements rather than of whole rows.
pub fn list_element(data_type: &DataType) -> Option<&DataType> {
    match data_type {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            Some(f.data_type())
        }
        _ => None,
    }
}

/// The hashes a set or bloom index of `array`'s column holds: of each
/// non-NULL value, or of a list's non-NULL elements (so `array_has`
/// can prune).
pub fn indexed_hashes(array: &dyn Array) -> Result<Vec<u64>> {
    let elements = match array.data_type() {
        DataType::List(_) => Some(list_elements(array.as_list::<i32>())),
        DataType::LargeList(_) => Some(list_elements(array.as_list::<i64>())),
        DataType::FixedSizeList(_, size) => {
            let list = array.as_fixed_size_list();
            Some(list.values().slice(0, list.len() * (*size).max(0) as usize))
        }
        _ => None,
    };
    let hashes = match elements {
        Some(elements) => value_hashes(elements.as_ref())?,
        None => value_hashes(array)?,
    };
    Ok(hashes.into_iter().flatten().collect())
}

/// The elements a list array's rows address.
fn list_elements<O: arrow::array::OffsetSizeTrait>(
    list: &arrow::array::GenericListArray<O>,
) -> arrow::array::ArrayRef {
    let offsets = list.value_offsets();
    let (start, end) = (offsets[0].as_usize(), offsets[offsets.len() - 1].as_usize());
    list.values().slice(start, end - start)
}

/// Words of a string: maximal runs of letters and digits.
pub fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
}

/// The hash of one word, as `tokenbf` indexes it.
pub fn hash_token(word: &str) -> u64 {
    hash_bytes(word.as_bytes())
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
    /// The summary of `values` (one block's rows of the column).
    pub fn build(spec: &SkipSpec, values: &dyn Array) -> Result<Block> {
        let hashes = match spec.is_token() {
            true => column::varlen_values(values)?
                .into_iter()
                .flat_map(|text| tokens(std::str::from_utf8(text).unwrap_or_default()))
                .map(hash_token)
                .collect(),
            false => indexed_hashes(values)?,
        };
        Block::from_hashes(spec, hashes)
    }

    /// A summary of `hashes` (distinct, from one block's rows) for `spec`.
    pub fn from_hashes(spec: &SkipSpec, mut hashes: Vec<u64>) -> Result<Block> {
        hashes.sort_unstable();
        hashes.dedup();
        Ok(match spec.kind {
            SkipKind::MinMax => {
                return Err(Error::Table(
                    "minmax is kept in the part index, not built as a block".into(),
                ));
            }
            SkipKind::Set(limit) => Block::Set((hashes.len() <= limit).then_some(hashes)),
            SkipKind::Bloom(p) | SkipKind::TokenBloom(p) => Block::bloom(&hashes, p),
        })
    }

    /// A filter sized for `hashes`, which must be distinct: a value or
    /// word repeated in every row must not grow it.
    fn bloom(hashes: &[u64], fpr: f64) -> Block {
        let n = hashes.len().max(1) as f64;
        let ln2 = std::f64::consts::LN_2;
        let bits = ((-n * fpr.ln()) / (ln2 * ln2)).ceil().max(64.0) as usize;
        let k = ((bits as f64 / n) * ln2).round().clamp(1.0, 16.0) as u32;
        let mut filter = vec![0u8; bits.div_ceil(8)];
        let m = (filter.len() * 8) as u64;
        for &h in hashes {
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

    /// Bytes the block takes in memory.
    pub fn weight(&self) -> u64 {
        match self {
            Block::Set(hashes) => hashes.as_ref().map_or(0, |h| h.len() * 8) as u64 + 32,
            Block::Bloom { bits, .. } => bits.len() as u64 + 32,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
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

    pub fn decode(kind: SkipKind, bytes: &[u8]) -> std::result::Result<Block, String> {
        let word = |at: usize| -> std::result::Result<u32, String> {
            bytes
                .get(at..at + 4)
                .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
                .ok_or_else(|| "skip index block truncated".to_string())
        };
        match kind {
            SkipKind::MinMax => Err("minmax has no skip index blocks".into()),
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

/// Builds a skip index component granule by granule.
pub struct SkipIndexBuilder {
    /// Position of the column in the part's rows, and its name.
    column: usize,
    name: String,
    spec: SkipSpec,
    /// Hashes of the block being built (distinct once a block is done).
    hashes: HashSet<u64>,
    granules_in_block: usize,
    blocks: Vec<Vec<u8>>,
}

impl SkipIndexBuilder {
    pub fn new(column: usize, name: &str, spec: SkipSpec) -> Self {
        SkipIndexBuilder {
            column,
            name: name.to_string(),
            spec,
            hashes: HashSet::new(),
            granules_in_block: 0,
            blocks: Vec::new(),
        }
    }

    fn close_block(&mut self) -> Result<()> {
        let hashes: Vec<u64> = self.hashes.drain().collect();
        let mut payload = Vec::new();
        Block::from_hashes(&self.spec, hashes)?.encode(&mut payload);
        self.blocks.push(payload);
        self.granules_in_block = 0;
        Ok(())
    }

    /// Whether a set already knows it overflows (more hashes are useless).
    fn overflowed(&self) -> bool {
        matches!(self.spec.kind, SkipKind::Set(limit) if self.hashes.len() > limit)
    }
}

impl ComponentBuilder for SkipIndexBuilder {
    fn add_granule(&mut self, _first_row: u64, granule: &RecordBatch) -> Result<()> {
        let values = granule.column(self.column);
        if self.spec.is_token() {
            for text in column::varlen_values(values.as_ref())? {
                let text = std::str::from_utf8(text).unwrap_or_default();
                self.hashes.extend(tokens(text).map(hash_token));
            }
        } else if !self.overflowed() {
            self.hashes.extend(indexed_hashes(values.as_ref())?);
        }
        self.granules_in_block += 1;
        if self.granules_in_block == self.spec.granularity.max(1) {
            self.close_block()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<BuiltComponent> {
        if self.granules_in_block > 0 {
            self.close_block()?;
        }
        Ok(BuiltComponent {
            kind: KIND.to_string(),
            columns: vec![self.name.clone()],
            version: VERSION,
            params: self.spec.to_string(),
            blocks: std::mem::take(&mut self.blocks),
            codec: Codec::None,
        })
    }
}

/// A part's skip index on one column, for pruning.
#[derive(Debug, Clone)]
pub struct SkipIndexReader {
    pub spec: SkipSpec,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Component(Box<Component>),
    /// A format-1 file, read whole.
    Legacy(Arc<Vec<Block>>),
}

impl SkipIndexReader {
    /// The skip index `part` has on `column` (of type `data_type`), if it
    /// has a usable one.
    pub async fn open(
        storage: &Storage,
        part: &PartIndex,
        column: &str,
        data_type: &DataType,
    ) -> Result<Option<Self>> {
        let dir = part_dir(&part.meta.name);
        let found = part
            .meta
            .components
            .iter()
            .find(|c| c.kind == KIND && c.columns.len() == 1 && c.columns[0] == column);
        if let Some(meta) = found {
            let Ok(spec) = meta.params.parse::<SkipSpec>() else {
                return Ok(None);
            };
            if meta.version != VERSION {
                return Ok(None);
            }
            let component = Component::open(storage, &dir, meta)?;
            return Ok(Some(SkipIndexReader {
                spec,
                source: Source::Component(Box::new(component)),
            }));
        }
        let Some(legacy) = part.meta.skip_indexes.iter().find(|s| s.column == column) else {
            return Ok(None);
        };
        let Ok(spec) = legacy.spec.parse::<SkipSpec>() else {
            return Ok(None);
        };
        // Format 1 hashed other types through their display text.
        if !is_text(data_type) {
            return Ok(None);
        }
        if !crate::storage::is_plain_name(&legacy.file) {
            return Err(Error::corrupt(
                storage.location(&dir),
                format!("invalid skip index file name '{}'", legacy.file),
            ));
        }
        let path = format!("{dir}/{}", legacy.file);
        let key = format!("{}#legacy", storage.cache_key(&path));
        let cache = storage.cache();
        let blocks = match cache.get::<Vec<Block>>(&key) {
            Some(blocks) => blocks,
            None => {
                let bytes = storage.get(&path).await?;
                let blocks = Arc::new(decode_legacy(&storage.location(&path), spec, &bytes)?);
                let weight = blocks.iter().map(Block::weight).sum();
                cache.insert(key, blocks.clone(), weight);
                blocks
            }
        };
        Ok(Some(SkipIndexReader {
            spec,
            source: Source::Legacy(blocks),
        }))
    }

    /// Block `b`, covering granules `b * granularity ..`; `None` past the end.
    pub async fn block(&self, b: usize) -> Result<Option<Arc<Block>>> {
        match &self.source {
            Source::Legacy(blocks) => Ok(blocks.get(b).cloned().map(Arc::new)),
            Source::Component(component) => {
                if b >= component.block_count().await? {
                    return Ok(None);
                }
                let kind = self.spec.kind;
                component
                    .block(b, |bytes| Block::decode(kind, bytes), Block::weight)
                    .await
                    .map(Some)
            }
        }
    }
}

/// Encodes blocks as a format-1 file (parts written before components).
pub fn encode_legacy(blocks: &[Block]) -> Vec<u8> {
    let mut body = (blocks.len() as u32).to_le_bytes().to_vec();
    for block in blocks {
        let mut bytes = Vec::new();
        block.encode(&mut bytes);
        body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        body.extend_from_slice(&bytes);
    }
    envelope::seal(FileKind::SkipIndex, &body)
}

/// Decodes a format-1 file, checked whole.
pub fn decode_legacy(location: &str, spec: SkipSpec, file: &[u8]) -> Result<Vec<Block>> {
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
    Ok(blocks)
}

/// What a query's filters say about one column, as a skip index can judge
/// it: built by the SQL layer from the filters, evaluated per block.
#[derive(Debug, Clone, PartialEq)]
pub enum SkipCondition {
    /// The index cannot decide: the block may match.
    Any,
    /// No row can match (`col = NULL`).
    Never,
    /// The block may match if it may hold any of these value hashes.
    AnyValue(Vec<u64>),
    /// The block may match only if it may hold every one of these word hashes.
    AllWords(Vec<u64>),
    And(Vec<SkipCondition>),
    Or(Vec<SkipCondition>),
}

impl SkipCondition {
    /// False only if no row of `block` can satisfy the condition.
    pub fn may_match(&self, block: &Block) -> bool {
        match self {
            SkipCondition::Any => true,
            SkipCondition::Never => false,
            SkipCondition::AnyValue(hashes) => hashes.iter().any(|h| block.may_contain(*h)),
            SkipCondition::AllWords(hashes) => hashes.iter().all(|h| block.may_contain(*h)),
            SkipCondition::And(all) => all.iter().all(|c| c.may_match(block)),
            SkipCondition::Or(any) => any.iter().any(|c| c.may_match(block)),
        }
    }

    /// Whether the condition can ever prune a block.
    pub fn can_prune(&self) -> bool {
        match self {
            SkipCondition::Any => false,
            SkipCondition::Never | SkipCondition::AnyValue(_) | SkipCondition::AllWords(_) => true,
            SkipCondition::And(all) => all.iter().any(SkipCondition::can_prune),
            SkipCondition::Or(any) => any.iter().all(SkipCondition::can_prune),
        }
    }
}
