//! One object-store-shaped interface for everything diagon reads and writes.
//!
//! A table lives under a root path of an [`ObjectStore`]: the local file
//! system, memory (tests), or any store registered with the session (S3, GCS,
//! Azure). Paths inside the table are relative names such as
//! `parts/p_…/index.dgi`; every error names the full location.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

/// A table's directory in an object store.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// How the root is shown in messages, e.g. `file:///data/docs`.
    display: String,
}

/// A file found by [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Path relative to the table root.
    pub name: String,
    pub size: u64,
}

impl Storage {
    pub fn new(store: Arc<dyn ObjectStore>, root: Path, display: impl Into<String>) -> Self {
        Storage {
            store,
            root,
            display: display.into(),
        }
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn path(&self, name: &str) -> Path {
        let mut path = self.root.clone();
        for segment in name.split('/') {
            path = path.clone().join(segment);
        }
        path
    }

    /// The location of `name` as shown to users.
    pub fn location(&self, name: &str) -> String {
        format!("{}/{}", self.display.trim_end_matches('/'), name)
    }

    fn store_error(&self, name: &str, source: object_store::Error) -> Error {
        Error::Store {
            path: self.location(name),
            source,
        }
    }

    /// Reads a whole file.
    pub async fn get(&self, name: &str) -> Result<Bytes> {
        let result = self
            .store
            .get(&self.path(name))
            .await
            .map_err(|e| self.store_error(name, e))?;
        result.bytes().await.map_err(|e| self.store_error(name, e))
    }

    /// Reads `range` of a file whose expected length is `file_len`; a file that
    /// is shorter than recorded is reported as truncated, not as an I/O error.
    pub async fn get_range(&self, name: &str, range: Range<u64>, file_len: u64) -> Result<Bytes> {
        if range.end > file_len {
            return Err(Error::corrupt(
                self.location(name),
                format!("read of {range:?} beyond recorded length {file_len}"),
            ));
        }
        match self.store.get_range(&self.path(name), range.clone()).await {
            Ok(bytes) if bytes.len() as u64 == range.end - range.start => Ok(bytes),
            Ok(bytes) => Err(Error::corrupt(
                self.location(name),
                format!(
                    "truncated: read {} of {} bytes at offset {}",
                    bytes.len(),
                    range.end - range.start,
                    range.start
                ),
            )),
            Err(object_store::Error::NotFound { .. }) => {
                Err(Error::corrupt(self.location(name), "file is missing"))
            }
            Err(e) => {
                // Ranges past the end of a shorter file come back as errors whose
                // kind differs between stores; the recorded length decides.
                match self.store.head(&self.path(name)).await {
                    Ok(meta) if meta.size < file_len => Err(Error::corrupt(
                        self.location(name),
                        format!("truncated: {} bytes, expected {file_len}", meta.size),
                    )),
                    _ => Err(self.store_error(name, e)),
                }
            }
        }
    }

    /// Writes a whole file, replacing any file of that name. Used only for
    /// files with fresh unique names (part files), never to modify data.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(&self.path(name), PutPayload::from(bytes))
            .await
            .map_err(|e| self.store_error(name, e))?;
        Ok(())
    }

    /// Writes a file only if no file of that name exists. Returns `false` when
    /// another writer got there first. This is the commit point of the log.
    pub async fn put_if_absent(&self, name: &str, bytes: Vec<u8>) -> Result<bool> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.path(name), PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.store_error(name, e)),
        }
    }

    /// Lists the files under directory `dir` (recursively), relative to the root.
    pub async fn list(&self, dir: &str) -> Result<Vec<FileInfo>> {
        let prefix = self.path(dir);
        let root_parts = self.root.parts().count();
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.store_error(dir, e))?;
        Ok(metas
            .into_iter()
            .map(|meta| FileInfo {
                name: meta
                    .location
                    .parts()
                    .skip(root_parts)
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/"),
                size: meta.size,
            })
            .collect())
    }
}
