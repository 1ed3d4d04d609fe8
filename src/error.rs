//! One error type for the storage layers; the SQL glue converts it into
//! `DataFusionError` at the boundary (`sql::mod`).

use std::fmt;

/// What went wrong, with enough context (table, part, file, option, column)
/// for a user to act on it.
#[derive(Debug)]
pub enum Error {
    /// A file's bytes do not match its magic, version, length or checksum.
    Corrupt { file: String, reason: String },
    /// An option given at CREATE, or stored in a table, is unknown or malformed.
    InvalidOption { option: String, reason: String },
    /// A column type this format version does not store.
    UnsupportedType { column: String, data_type: String },
    /// A schema or value that does not fit the table.
    Schema(String),
    /// Another writer committed the version this writer meant to commit.
    CommitConflict { table: String, version: u64 },
    /// The table directory holds no diagon table (or one already exists).
    Table(String),
    /// A file that should exist does not.
    NotFound { path: String },
    /// A search query that does not parse, with the position where it fails.
    Query { at: usize, reason: String },
    /// The storage backend failed (I/O, network, the object store).
    Store {
        path: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An Arrow kernel failed.
    Arrow(arrow::error::ArrowError),
    /// A request or a value that is not valid (a series id 0, an empty
    /// tag name, a key range whose minimum exceeds its maximum).
    Invalid(String),
    /// Refused for now: memory is at its bound until a flush frees it.
    Overloaded(String),
    /// Adds context (table, part) to an inner error.
    Context { context: String, source: Box<Error> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the context of a commit whose outcome is unknown begins.
pub const UNKNOWN_OUTCOME: &str = "the outcome of commit";

impl Error {
    pub fn corrupt(file: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            file: file.into(),
            reason: reason.into(),
        }
    }

    pub fn option(option: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidOption {
            option: option.into(),
            reason: reason.into(),
        }
    }

    /// Wraps this error with a prefix such as `table 'docs'` or `part 'p_..'`.
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// True when the error, under any context, says data on disk is damaged.
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Corrupt { .. } => true,
            Error::Context { source, .. } => source.is_corruption(),
            _ => false,
        }
    }

    /// True when the error, under any context, says a file does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Context { source, .. } => source.is_not_found(),
            _ => false,
        }
    }

    /// A storage failure at `path`.
    pub fn store(
        path: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Store {
            path: path.into(),
            source: source.into(),
        }
    }

    /// True when a commit was written but whether it landed is unknown
    /// (its write failed and reading it back failed too).
    pub fn is_unknown_outcome(&self) -> bool {
        match self {
            Error::Context { context, source } => {
                context.starts_with(UNKNOWN_OUTCOME) || source.is_unknown_outcome()
            }
            _ => false,
        }
    }

    /// True when the error, under any context, is a lost commit race.
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::CommitConflict { .. } => true,
            Error::Context { source, .. } => source.is_conflict(),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Corrupt { file, reason } => write!(f, "corrupt file '{file}': {reason}"),
            Error::InvalidOption { option, reason } => write!(f, "option '{option}': {reason}"),
            Error::UnsupportedType { column, data_type } => write!(
                f,
                "column '{column}' has type {data_type}, which diagon does not support"
            ),
            Error::Schema(msg) => write!(f, "{msg}"),
            Error::CommitConflict { table, version } => write!(
                f,
                "commit conflict on table '{table}': version {version} was committed by another writer"
            ),
            Error::Table(msg) => write!(f, "{msg}"),
            Error::NotFound { path } => write!(f, "'{path}' does not exist"),
            Error::Query { at, reason } => write!(f, "search query, position {at}: {reason}"),
            Error::Store { path, source } => write!(f, "storage error at '{path}': {source}"),
            Error::Arrow(e) => write!(f, "{e}"),
            Error::Invalid(msg) => write!(f, "{msg}"),
            Error::Overloaded(msg) => write!(f, "{msg}"),
            Error::Context { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Store { source, .. } => Some(source.as_ref()),
            Error::Arrow(e) => Some(e),
            Error::Context { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Arrow(e)
    }
}
