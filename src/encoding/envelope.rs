//! The envelope every diagon file has: a header naming the file kind and
//! format version, and a footer with a CRC32 of everything before it.
//!
//! ```text
//! "DIAG" | kind [u8; 4] | version u16 | reserved u16      (12 bytes)
//! body ...
//! crc32 u32 (of header and body) | "GAID"                  (8 bytes)
//! ```
//! A reader rejects a file whose version is newer than it understands, so a
//! later format adds a version rather than silently misreading old readers.

use crate::error::{Error, Result};

pub const ENVELOPE_HEADER_LEN: usize = 12;
pub const ENVELOPE_FOOTER_LEN: usize = 8;
const MAGIC: &[u8; 4] = b"DIAG";
const END_MAGIC: &[u8; 4] = b"GAID";

/// What a file holds; stored in its header so a misplaced file is detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// One entry of a table's commit log.
    Commit,
    /// A part's metadata: schema, granules, marks, primary index, column stats.
    PartIndex,
    /// A column's compressed blocks, one per granule.
    ColumnData,
    /// Which rows of a part are deleted, as of some version.
    DeletionMask,
    /// A skip index of one column of a part, read whole (format 1, before
    /// components).
    SkipIndex,
    /// A part component: independently checksummed blocks and a directory.
    Component,
    /// The whole state of a table at one version.
    Checkpoint,
    /// Names the newest checkpoint.
    CheckpointPointer,
}

impl FileKind {
    fn tag(self) -> &'static [u8; 4] {
        match self {
            FileKind::Commit => b"CMIT",
            FileKind::PartIndex => b"PIDX",
            FileKind::ColumnData => b"COLD",
            FileKind::DeletionMask => b"DELM",
            FileKind::SkipIndex => b"SKIP",
            FileKind::Component => b"COMP",
            FileKind::Checkpoint => b"CKPT",
            FileKind::CheckpointPointer => b"LAST",
        }
    }

    /// The newest format version of this kind that this build reads and writes.
    pub fn current_version(self) -> u16 {
        match self {
            // 2: the log of a table whose schema was altered (stable column
            // ids, fills); builds that know only 1 refuse such a table
            // rather than read parts by position or drop the ids.
            FileKind::Commit | FileKind::Checkpoint => ALTERED_LOG_VERSION,
            _ => 1,
        }
    }
}

/// The header bytes of a new file of `kind`.
pub fn header(kind: FileKind) -> [u8; ENVELOPE_HEADER_LEN] {
    let mut h = [0u8; ENVELOPE_HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4..8].copy_from_slice(kind.tag());
    h[8..10].copy_from_slice(&kind.current_version().to_le_bytes());
    h
}

/// Appends the footer to a file whose header and body are in `file`.
pub fn append_footer(file: &mut Vec<u8>) {
    let crc = crc32fast::hash(file);
    file.extend_from_slice(&crc.to_le_bytes());
    file.extend_from_slice(END_MAGIC);
}

/// The footer of a file whose header and body hashed to `crc` (a
/// `crc32fast::Hasher` fed every byte before the footer): for files
/// written in pieces.
pub fn footer(crc: crc32fast::Hasher) -> [u8; ENVELOPE_FOOTER_LEN] {
    let mut f = [0u8; ENVELOPE_FOOTER_LEN];
    f[..4].copy_from_slice(&crc.finalize().to_le_bytes());
    f[4..].copy_from_slice(END_MAGIC);
    f
}

/// The log format version of a table whose schema was altered.
pub const ALTERED_LOG_VERSION: u16 = 2;

/// Wraps `body` in a header and footer.
pub fn seal(kind: FileKind, body: &[u8]) -> Vec<u8> {
    seal_version(kind, kind.current_version(), body)
}

/// Wraps `body` in a header of format `version` (at most the kind's
/// current one) and a footer.
pub fn seal_version(kind: FileKind, version: u16, body: &[u8]) -> Vec<u8> {
    let mut file = Vec::with_capacity(ENVELOPE_HEADER_LEN + body.len() + ENVELOPE_FOOTER_LEN);
    let mut header = header(kind);
    header[8..10].copy_from_slice(&version.min(kind.current_version()).to_le_bytes());
    file.extend_from_slice(&header);
    file.extend_from_slice(body);
    append_footer(&mut file);
    file
}

/// Checks a file's header, version and footer checksum, returning its body.
pub fn open<'a>(name: &str, kind: FileKind, file: &'a [u8]) -> Result<&'a [u8]> {
    check_header(name, kind, file)?;
    if file.len() < ENVELOPE_HEADER_LEN + ENVELOPE_FOOTER_LEN {
        return Err(Error::corrupt(name, "truncated: no footer"));
    }
    let body_end = file.len() - ENVELOPE_FOOTER_LEN;
    if &file[body_end + 4..] != END_MAGIC {
        return Err(Error::corrupt(name, "truncated or damaged footer"));
    }
    let stored = u32::from_le_bytes(file[body_end..body_end + 4].try_into().unwrap());
    if crc32fast::hash(&file[..body_end]) != stored {
        return Err(Error::corrupt(name, "checksum mismatch"));
    }
    Ok(&file[ENVELOPE_HEADER_LEN..body_end])
}

/// True if `tail` (the last 4 bytes of a file) is the end magic.
pub fn is_end_magic(tail: &[u8]) -> bool {
    tail == END_MAGIC
}

/// Checks only the header: magic, kind and a version this build can read.
pub fn check_header(name: &str, kind: FileKind, file: &[u8]) -> Result<u16> {
    if file.len() < ENVELOPE_HEADER_LEN {
        return Err(Error::corrupt(name, "truncated: no header"));
    }
    if &file[..4] != MAGIC {
        return Err(Error::corrupt(name, "not a diagon file (bad magic)"));
    }
    if &file[4..8] != kind.tag() {
        return Err(Error::corrupt(
            name,
            format!(
                "expected a {:?} file, found kind '{}'",
                kind,
                String::from_utf8_lossy(&file[4..8])
            ),
        ));
    }
    let version = u16::from_le_bytes(file[8..10].try_into().unwrap());
    if version == 0 || version > kind.current_version() {
        return Err(Error::corrupt(
            name,
            format!(
                "format version {version} is not supported (this build reads up to {})",
                kind.current_version()
            ),
        ));
    }
    Ok(version)
}
