//! Compression codecs selectable per column (`'codec.<col>' 'zstd(3)'`), and
//! codec chains: type-aware transforms followed by a compressor
//! (`'codec.ts' 'doubledelta,lz4'`).

use std::fmt;
use std::str::FromStr;

use arrow::datatypes::DataType;

use super::layout::{Layout, layout_of};
use super::transform::{Transform, ValueKind};
use crate::error::{Error, Result};

thread_local! {
    static ZSTD_CONTEXT: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

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
    /// Per block, `zstd(1)` where it is at least [`AUTO_ZSTD_GAIN`] smaller
    /// than `lz4`, else `lz4`: zstd's entropy coding pays on narrow values
    /// (flags, small counts), lz4 decodes dense bit-packed values faster at
    /// the same size. Each block records the codec it got, so this never
    /// reaches the file.
    Auto,
}

/// `auto` picks zstd(1) when its block is at most this fraction of lz4's.
pub const AUTO_ZSTD_GAIN: f64 = 0.85;

impl Codec {
    pub(crate) fn id(self) -> u8 {
        match self {
            // `Auto` is resolved per block before anything is written.
            Codec::Lz4 | Codec::Auto => 1,
            Codec::Zstd(_) => 2,
            Codec::None => 3,
        }
    }

    pub(crate) fn level(self) -> i8 {
        match self {
            Codec::Lz4 | Codec::None | Codec::Auto => 0,
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
            Codec::Lz4 | Codec::Auto => {
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

    /// Checks that `input`, compressed with this codec, can decompress to
    /// `len` bytes: what `none` stores is the data; LZ4 expands at most 255
    /// times; a zstd frame records its content size.
    pub fn check_uncompressed_len(
        self,
        input: &[u8],
        len: usize,
    ) -> std::result::Result<(), String> {
        let fits = match self {
            Codec::None => input.len() == len,
            Codec::Lz4 | Codec::Auto => len <= input.len().saturating_mul(255).saturating_add(16),
            Codec::Zstd(_) => {
                zstd::zstd_safe::get_frame_content_size(input)
                    .ok()
                    .flatten()
                    == Some(len as u64)
            }
        };
        match fits {
            true => Ok(()),
            false => Err(format!(
                "block claims {len} bytes uncompressed, which its {} compressed bytes cannot hold",
                input.len()
            )),
        }
    }

    /// Decompresses `input` into `out`, which has exactly the uncompressed length.
    /// Returns a description of the failure; the caller names the file.
    pub fn decompress(self, input: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
        let written = match self {
            Codec::Lz4 | Codec::Auto => {
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
            // A decompression context per thread: creating one per block
            // showed in profiles.
            Codec::Zstd(_) => ZSTD_CONTEXT.with(|context| {
                let mut context = context.borrow_mut();
                let decompressor = match context.as_mut() {
                    Some(d) => d,
                    None => {
                        context.insert(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?)
                    }
                };
                decompressor
                    .decompress_to_buffer(input, out)
                    .map_err(|e| e.to_string())
            })?,
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
            Codec::Auto => write!(f, "auto"),
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
        if s == "auto" {
            return Ok(Codec::Auto);
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
            "unknown codec '{s}' (transforms: delta, doubledelta, gorilla, t64; \
             compressors: lz4, none, zstd, zstd(level), auto)"
        ))
    }
}

/// At most this many transforms precede the compressor (the granule header
/// has room for three ids).
pub const MAX_TRANSFORMS: usize = 3;

/// A column's codec: transforms applied in order to the fixed-width values of
/// each granule, then a compressor over the whole granule block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CodecChain {
    pub transforms: Vec<Transform>,
    pub compressor: Codec,
}

impl CodecChain {
    pub fn new(transforms: Vec<Transform>, compressor: Codec) -> Self {
        CodecChain {
            transforms,
            compressor,
        }
    }

    /// The default for a column of `data_type`, chosen by measurement on
    /// TPC-H columns (`cargo bench --bench codecs`, BENCHMARKS.md "Codecs"):
    ///
    /// - integers, decimals, dates and times: `t64,auto`: bit packing, then
    ///   lz4 (fastest to decode) unless zstd(1) is clearly smaller, as on
    ///   narrow skewed columns (flags, small counts);
    ///   the leading sort-key column (`leading_key`) adds `delta` first,
    ///   since sorted keys differ by small steps (l_orderkey 11× → 18×);
    /// - floats: `lz4`. Gorilla loses on TPC-H's money columns read as
    ///   Float64 (1.24× against lz4's 1.41×) and decodes 5× slower; it pays
    ///   off on slowly changing series, where users can ask for it;
    /// - strings and binary: `zstd(3)`, about 1.6× smaller than lz4 at the
    ///   same decode speed;
    /// - booleans: `lz4`.
    pub fn default_for(data_type: &DataType, leading_key: bool) -> CodecChain {
        use Transform::*;
        match value_kind(data_type) {
            Some(ValueKind::Float) => CodecChain::new(vec![], Codec::Lz4),
            Some(_) if leading_key => CodecChain::new(vec![Delta, T64], Codec::Lz4),
            Some(_) => CodecChain::new(vec![T64], Codec::Auto),
            None if *data_type == DataType::Boolean => CodecChain::new(vec![], Codec::Lz4),
            None => CodecChain::new(vec![], Codec::Zstd(3)),
        }
    }

    /// Checks that every transform can encode `data_type`; the message names
    /// the transform and the type.
    pub fn check(&self, data_type: &DataType) -> std::result::Result<(), String> {
        let Some(first) = self.transforms.first() else {
            return Ok(());
        };
        let Some(mut kind) = value_kind(data_type) else {
            return Err(format!(
                "'{first}' needs fixed-width numeric values; {data_type} has none \
                 (use a compressor alone: lz4, zstd or none)"
            ));
        };
        for (i, t) in self.transforms.iter().enumerate() {
            if !t.accepts(kind) {
                let wants = if *t == Transform::Gorilla {
                    "floating-point"
                } else {
                    "integer, decimal, date or time"
                };
                return Err(format!("'{t}' encodes {wants} values, not {data_type}"));
            }
            if i + 1 < self.transforms.len() && !t.keeps_width() {
                return Err(format!(
                    "'{t}' must be the last transform (only delta can be followed by another)"
                ));
            }
            kind = t.output_kind();
        }
        Ok(())
    }
}

/// How the values of a fixed-width type are interpreted by transforms;
/// `None` for types without fixed-width values (strings, binary, booleans).
pub fn value_kind(data_type: &DataType) -> Option<ValueKind> {
    use DataType::*;
    if !matches!(layout_of(data_type), Some(Layout::Fixed(_))) {
        return None;
    }
    Some(match data_type {
        // Not numbers of a width the transforms know (32-byte decimals,
        // opaque bytes), or several numbers in one value (intervals).
        Decimal256(_, _) | FixedSizeBinary(_) | Interval(_) => return None,
        UInt8 | UInt16 | UInt32 | UInt64 => ValueKind::Unsigned,
        Float16 | Float32 | Float64 => ValueKind::Float,
        _ => ValueKind::Signed,
    })
}

impl fmt::Display for CodecChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in &self.transforms {
            write!(f, "{t},")?;
        }
        write!(f, "{}", self.compressor)
    }
}

impl FromStr for CodecChain {
    type Err = String;

    /// Parses `[transform,]... [compressor]`, for example `delta,t64,zstd(1)`.
    /// Without a compressor the chain ends in `none`, as in ClickHouse.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut transforms = Vec::new();
        let mut compressor = None;
        for item in s.split(',').map(|i| i.trim().to_ascii_lowercase()) {
            if compressor.is_some() {
                return Err(format!(
                    "'{item}' follows the compressor; a compressor ends the chain"
                ));
            }
            if let Some(t) = Transform::from_name(&item) {
                transforms.push(t);
                continue;
            }
            compressor = Some(item.parse::<Codec>()?);
        }
        if transforms.len() > MAX_TRANSFORMS {
            return Err(format!("at most {MAX_TRANSFORMS} transforms in a chain"));
        }
        Ok(CodecChain::new(
            transforms,
            compressor.unwrap_or(Codec::None),
        ))
    }
}
