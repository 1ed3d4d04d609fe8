//! A compressed block: a 16-byte header and a payload, checksummed together.
//!
//! ```text
//! codec u8 | level i8 | reserved u16 | uncompressed_len u32 | compressed_len u32 | crc32 u32
//! payload (compressed_len bytes)
//! ```
//! The CRC covers the first 12 header bytes and the payload, so a flipped bit
//! anywhere in the block is detected before decompression.

use arrow::buffer::{Buffer, MutableBuffer};

use super::codec::Codec;
use crate::error::{Error, Result};

pub const BLOCK_HEADER_LEN: usize = 16;

/// Appends `payload`, compressed with `codec`, as one framed block to `out`.
pub fn encode_block(codec: Codec, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    if codec == Codec::Auto {
        let mut lz4 = Vec::new();
        encode_block(Codec::Lz4, payload, &mut lz4)?;
        let mut zstd = Vec::new();
        encode_block(Codec::Zstd(1), payload, &mut zstd)?;
        let zstd_pays = zstd.len() as f64 <= lz4.len() as f64 * super::codec::AUTO_ZSTD_GAIN;
        out.extend_from_slice(if zstd_pays { &zstd } else { &lz4 });
        return Ok(());
    }
    // The frame records lengths in 32 bits.
    let Ok(payload_len) = u32::try_from(payload.len()) else {
        return Err(Error::Schema(format!(
            "a granule of one column takes {} bytes, more than a block holds (4 GiB); \
             lower 'granularity' or 'granularity_bytes'",
            payload.len()
        )));
    };
    let start = out.len();
    out.extend_from_slice(&[codec.id(), codec.level() as u8, 0, 0]);
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // compressed length and crc, filled below
    codec.compress(payload, out)?;
    let compressed_len = u32::try_from(out.len() - start - BLOCK_HEADER_LEN).map_err(|_| {
        Error::Schema("a compressed granule of one column passes 4 GiB; lower 'granularity'".into())
    })?;
    out[start + 8..start + 12].copy_from_slice(&compressed_len.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start..start + 12]);
    crc.update(&out[start + BLOCK_HEADER_LEN..]);
    let crc = crc.finalize();
    out[start + 12..start + 16].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Verifies and decompresses the block at the start of `bytes`.
///
/// Returns the payload in a 64-byte aligned buffer (so Arrow arrays can wrap
/// it without copying) and the number of bytes the block occupied.
pub fn decode_block(bytes: &[u8]) -> std::result::Result<(Buffer, usize), String> {
    if bytes.len() < BLOCK_HEADER_LEN {
        return Err(format!("block header truncated ({} bytes)", bytes.len()));
    }
    let uncompressed = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let compressed = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let stored_crc = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
    let end = BLOCK_HEADER_LEN + compressed;
    if bytes.len() < end {
        return Err(format!(
            "block truncated: needs {end} bytes, {} available",
            bytes.len()
        ));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[..12]);
    crc.update(&bytes[BLOCK_HEADER_LEN..end]);
    if crc.finalize() != stored_crc {
        return Err("block checksum mismatch".to_string());
    }
    let codec = Codec::from_id(bytes[0], bytes[1] as i8)
        .ok_or_else(|| format!("unknown codec id {}", bytes[0]))?;
    let payload = &bytes[BLOCK_HEADER_LEN..end];
    // The header's length is only believed as far as the codec allows, so a
    // damaged or crafted header cannot make the reader allocate gigabytes.
    codec.check_uncompressed_len(payload, uncompressed)?;
    let mut out = MutableBuffer::from_len_zeroed(uncompressed);
    codec.decompress(payload, out.as_slice_mut())?;
    Ok((out.into(), end))
}
