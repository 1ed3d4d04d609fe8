//! Compression codecs selectable per column (`'codec.<col>' 'zstd(3)'`).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A general-purpose compression codec applied to a whole block.
///
/// The numeric ids are part of the on-disk format: never renumber them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    /// LZ4 block format: fast to decode, the default.
    #[default]
    Lz4,
    /// Zstandard at a level in 1..=22.
    Zstd(i8),
    /// Stored as is: for data that does not compress, or is compressed already.
    None,
}

impl Codec {
    pub(crate) fn id(self) -> u8 {
        match self {
            Codec::Lz4 => 1,
            Codec::Zstd(_) => 2,
            Codec::None => 3,
        }
    }

    pub(crate) fn level(self) -> i8 {
        match self {
            Codec::Lz4 | Codec::None => 0,
            Codec::Zstd(level) => level,
        }
    }

    pub(crate) fn from_id(id: u8, level: i8) -> Option<Codec> {
        match id {
            1 => Some(Codec::Lz4),
            2 => Some(Codec::Zstd(level)),
            3 => Some(Codec::None),
            _ => None,
        }
    }

    /// Appends the compressed form of `input` to `out`.
    pub fn compress(self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        match self {
            Codec::Lz4 => {
                let start = out.len();
                out.resize(
                    start + lz4_flex::block::get_maximum_output_size(input.len()),
                    0,
                );
                let written = lz4_flex::block::compress_into(input, &mut out[start..])
                    .map_err(|e| Error::Schema(format!("lz4 compression failed: {e}")))?;
                out.truncate(start + written);
            }
            Codec::None => out.extend_from_slice(input),
            Codec::Zstd(level) => {
                let compressed = zstd::bulk::compress(input, i32::from(level))
                    .map_err(|e| Error::Schema(format!("zstd compression failed: {e}")))?;
                out.extend_from_slice(&compressed);
            }
        }
        Ok(())
    }

    /// Decompresses `input` into `out`, which has exactly the uncompressed length.
    /// Returns a description of the failure; the caller names the file.
    pub fn decompress(self, input: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
        let written = match self {
            Codec::Lz4 => {
                lz4_flex::block::decompress_into(input, out).map_err(|e| e.to_string())?
            }
            Codec::None => {
                if input.len() != out.len() {
                    return Err(format!(
                        "stored block has {} bytes, expected {}",
                        input.len(),
                        out.len()
                    ));
                }
                out.copy_from_slice(input);
                input.len()
            }
            Codec::Zstd(_) => zstd::bulk::Decompressor::new()
                .and_then(|mut d| d.decompress_to_buffer(input, out))
                .map_err(|e| e.to_string())?,
        };
        if written != out.len() {
            return Err(format!(
                "decompressed {written} bytes, expected {}",
                out.len()
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Codec::Lz4 => write!(f, "lz4"),
            Codec::Zstd(level) => write!(f, "zstd({level})"),
            Codec::None => write!(f, "none"),
        }
    }
}

impl FromStr for Codec {
    type Err = String;

    /// Parses `lz4`, `none`, `zstd` (level 3) or `zstd(N)` with N in 1..=22.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        if s == "lz4" {
            return Ok(Codec::Lz4);
        }
        if s == "none" {
            return Ok(Codec::None);
        }
        if s == "zstd" {
            return Ok(Codec::Zstd(3));
        }
        if let Some(arg) = s.strip_prefix("zstd(").and_then(|r| r.strip_suffix(')')) {
            let level: i8 = arg
                .trim()
                .parse()
                .map_err(|_| format!("zstd level '{arg}' is not an integer"))?;
            if !(1..=22).contains(&level) {
                return Err(format!("zstd level {level} is outside 1..=22"));
            }
            return Ok(Codec::Zstd(level));
        }
        Err(format!(
            "unknown codec '{s}' (expected lz4, none, zstd or zstd(level))"
        ))
    }
}
