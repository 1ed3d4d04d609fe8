//! Byte-level formats: file envelopes (magic, version, checksum), compressed
//! blocks with their own checksums, and the compression codecs.

pub mod block;
pub mod codec;
pub mod envelope;

pub use block::{decode_block, encode_block, BLOCK_HEADER_LEN};
pub use codec::Codec;
pub use envelope::{FileKind, ENVELOPE_FOOTER_LEN, ENVELOPE_HEADER_LEN};
