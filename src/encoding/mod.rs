//! Byte-level formats: file envelopes (magic, version, checksum), compressed
//! blocks with their own checksums, the compression codecs and the
//! type-aware transforms that precede them.

pub mod block;
pub mod codec;
pub mod envelope;
pub mod layout;
pub mod transform;

pub use block::{BLOCK_HEADER_LEN, decode_block, encode_block};
pub use codec::{Codec, CodecChain};
pub use envelope::{ENVELOPE_FOOTER_LEN, ENVELOPE_HEADER_LEN, FileKind};
pub use layout::{Layout, layout_of, rows_bound, storage_type};
pub use transform::{Transform, ValueKind};
