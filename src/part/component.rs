//! A part's components: files built beside its columns from the same rows
//! (skip indexes today, the text index next), listed in the part's
//! metadata and opened lazily.
//!
//! The part writer feeds each [`ComponentBuilder`] granule by granule and
//! writes what it builds as a component file of independently checksummed
//! blocks, so a reader fetches and verifies only the blocks it needs:
//!
//! ```text
//! envelope header (COMP)
//! block 0 | block 1 | ...            each an encoding::block (own CRC)
//! directory block                    count u32 | (count + 1) × u64 offsets
//! envelope footer (CRC of the file)
//! ```
//! The part metadata records where the directory lies, so opening a
//! component costs one small read and each block one more. Blocks, like
//! parts, are never rewritten.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use serde::{Deserialize, Serialize};

use crate::encoding::envelope::{self, ENVELOPE_HEADER_LEN, FileKind};
use crate::encoding::{Codec, decode_block, encode_block};
use crate::error::{Error, Result};
use crate::storage::{Storage, is_plain_name};

/// One component of a part, as its metadata lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ComponentMeta {
    /// What the component is, e.g. `skip_index`; its builder and reader
    /// know the format of its blocks.
    pub kind: String,
    /// The columns it was built from.
    pub columns: Vec<String>,
    /// File name inside the part directory.
    pub file: String,
    /// The format version of the kind's blocks.
    pub version: u16,
    /// Length of the file.
    pub length: u64,
    /// The kind's parameters as declared (e.g. `bloom_filter(0.01) granularity 1`).
    #[serde(default)]
    pub params: String,
    /// Offset and length of the directory block.
    pub directory: [u64; 2],
}

impl ComponentMeta {
    /// How errors and EXPLAIN name the component: `skip_index(user_id)`.
    pub fn describe(&self) -> String {
        format!("{}({})", self.kind, self.columns.join(","))
    }
}

/// Builds one component from a part's rows, granule by granule, in row order.
pub trait ComponentBuilder: Send {
    /// Adds granule rows (every column of the part); `first_row` is the
    /// part row number of the first.
    fn add_granule(&mut self, first_row: u64, granule: &RecordBatch) -> Result<()>;

    /// The memory the builder holds, which an insert bounds by cutting
    /// the part (0 for builders whose memory does not grow with the rows).
    fn memory_bytes(&self) -> usize {
        0
    }

    /// The finished component.
    fn finish(self: Box<Self>) -> Result<BuiltComponent>;
}

/// A component ready to be written.
#[derive(Debug, Clone)]
pub struct BuiltComponent {
    pub kind: String,
    pub columns: Vec<String>,
    pub version: u16,
    pub params: String,
    /// Block payloads, in order.
    pub blocks: Vec<Vec<u8>>,
    /// How each block is compressed.
    pub codec: Codec,
}

impl BuiltComponent {
    /// The component file, and the metadata listing it as `file`.
    pub fn encode(&self, file: &str) -> Result<(Vec<u8>, ComponentMeta)> {
        let mut bytes = envelope::header(FileKind::Component).to_vec();
        let mut offsets = Vec::with_capacity(self.blocks.len() + 1);
        for block in &self.blocks {
            offsets.push(bytes.len() as u64);
            encode_block(self.codec, block, &mut bytes)?;
        }
        offsets.push(bytes.len() as u64);
        let mut directory = Vec::with_capacity(4 + 8 * offsets.len());
        directory.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        for offset in &offsets {
            directory.extend_from_slice(&offset.to_le_bytes());
        }
        let directory_at = bytes.len() as u64;
        encode_block(Codec::None, &directory, &mut bytes)?;
        let directory_len = bytes.len() as u64 - directory_at;
        envelope::append_footer(&mut bytes);
        let meta = ComponentMeta {
            kind: self.kind.clone(),
            columns: self.columns.clone(),
            file: file.to_string(),
            version: self.version,
            length: bytes.len() as u64,
            params: self.params.clone(),
            directory: [directory_at, directory_len],
        };
        Ok((bytes, meta))
    }
}

/// Block offsets of a component file: block `i` is `offsets[i]..offsets[i + 1]`.
#[derive(Debug)]
struct Directory {
    offsets: Vec<u64>,
}

/// A component of a part, opened lazily: its directory is read on first use
/// and each block by its own range, through the process's cache.
#[derive(Debug, Clone)]
pub struct Component {
    storage: Storage,
    /// Path of the file relative to the table.
    path: String,
    /// What its cache keys start with (made once: a lookup is a hot path).
    key: String,
    meta: ComponentMeta,
}

thread_local! {
    /// A buffer for cache keys, so a cache hit allocates nothing.
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Appends `n` in decimal (a block lookup is a hot path; `write!` goes
/// through the formatting machinery).
fn push_decimal(mut n: usize, out: &mut String) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

impl Component {
    /// The component `meta` of the part in `part_dir`.
    pub fn open(storage: &Storage, part_dir: &str, meta: &ComponentMeta) -> Result<Self> {
        let path = format!("{part_dir}/{}", meta.file);
        if !is_plain_name(&meta.file) {
            return Err(Error::corrupt(
                storage.location(part_dir),
                format!("invalid component file name '{}'", meta.file),
            ));
        }
        Ok(Component {
            storage: storage.clone(),
            key: storage.cache_key(&path),
            path,
            meta: meta.clone(),
        })
    }

    pub fn meta(&self) -> &ComponentMeta {
        &self.meta
    }

    fn corrupt(&self, what: impl std::fmt::Display, reason: impl std::fmt::Display) -> Error {
        Error::corrupt(
            self.storage.location(&self.path),
            format!("component {}, {what}: {reason}", self.meta.describe()),
        )
    }

    async fn directory(&self) -> Result<Arc<Directory>> {
        let key = format!("{}#directory", self.key);
        let cache = self.storage.cache();
        if let Some(directory) = cache.get::<Directory>(&key) {
            return Ok(directory);
        }
        let [at, len] = self.meta.directory;
        let end = at
            .checked_add(len)
            .filter(|end| *end <= self.meta.length)
            .ok_or_else(|| self.corrupt("directory", "lies outside the file"))?;
        let bytes = self
            .storage
            .get_range(&self.path, at..end, self.meta.length)
            .await?;
        let (payload, _) = decode_block(&bytes).map_err(|e| self.corrupt("directory", e))?;
        let directory = self
            .parse_directory(payload.as_slice(), at)
            .map_err(|e| self.corrupt("directory", e))?;
        let directory = Arc::new(directory);
        cache.insert(key, directory.clone(), len);
        Ok(directory)
    }

    /// Offsets must run from just after the header up to the directory
    /// itself, in order, so every block read stays inside the file.
    fn parse_directory(
        &self,
        payload: &[u8],
        directory_at: u64,
    ) -> std::result::Result<Directory, String> {
        let count = payload
            .get(..4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap()) as usize)
            .ok_or("truncated")?;
        let rest = &payload[4..];
        if rest.len() / 8 != count + 1 || !rest.len().is_multiple_of(8) {
            return Err(format!(
                "{count} blocks do not match {} bytes of offsets",
                rest.len()
            ));
        }
        let offsets: Vec<u64> = rest
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let ordered = offsets.windows(2).all(|w| w[0] <= w[1]);
        if offsets[0] != ENVELOPE_HEADER_LEN as u64 || offsets[count] != directory_at || !ordered {
            return Err("block offsets out of order".into());
        }
        Ok(Directory { offsets })
    }

    /// How many blocks the component has.
    pub async fn block_count(&self) -> Result<usize> {
        Ok(self.directory().await?.offsets.len() - 1)
    }

    /// Reads and verifies block `i`.
    pub async fn read_block(&self, i: usize) -> Result<Buffer> {
        let directory = self.directory().await?;
        let (Some(&start), Some(&end)) = (directory.offsets.get(i), directory.offsets.get(i + 1))
        else {
            return Err(self.corrupt(
                format!("block {i}"),
                format!("no such block (it has {})", directory.offsets.len() - 1),
            ));
        };
        let bytes = self
            .storage
            .get_range(&self.path, start..end, self.meta.length)
            .await?;
        let (payload, used) =
            decode_block(&bytes).map_err(|e| self.corrupt(format!("block {i}"), e))?;
        if used as u64 != end - start {
            return Err(self.corrupt(format!("block {i}"), "length disagrees with the directory"));
        }
        Ok(payload)
    }

    /// Block `i` decoded by `decode` (which names what is wrong with a
    /// block it rejects), cached with `weight` bytes.
    pub async fn block<T: Send + Sync + 'static>(
        &self,
        i: usize,
        decode: impl FnOnce(&[u8]) -> std::result::Result<T, String>,
        weight: impl FnOnce(&T) -> u64,
    ) -> Result<Arc<T>> {
        let cache = self.storage.cache();
        let key = KEY.with_borrow_mut(|key| {
            key.clear();
            key.push_str(&self.key);
            key.push_str("#block");
            push_decimal(i, key);
            cache.get::<T>(key).ok_or_else(|| key.clone())
        });
        let key = match key {
            Ok(block) => return Ok(block),
            Err(key) => key,
        };
        let payload = self.read_block(i).await?;
        let value =
            decode(payload.as_slice()).map_err(|e| self.corrupt(format!("block {i}"), e))?;
        let value = Arc::new(value);
        cache.insert(key, value.clone(), weight(&value));
        Ok(value)
    }
}
