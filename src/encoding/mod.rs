//! Byte-level formats: file envelopes (magic, version, checksum), compressed
//! blocks with their own checksums, and the compression codecs.

pub mod block;
pub mod codec;
pub mod envelope;

pub use block::{BLOCK_HEADER_LEN, decode_block, encode_block};
pub use codec::Codec;
pub use envelope::{ENVELOPE_FOOTER_LEN, ENVELOPE_HEADER_LEN, FileKind};
