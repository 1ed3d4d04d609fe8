//! Any `object_store` store (S3, GCS, Azure, HTTP, the local file system
//! through object_store, memory): the backend the session's object-store
//! registry resolves a table URL to.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::io::AsyncWriteExt;

use super::{Backend, DirListing, FileInfo, FileWriter};
use crate::error::{Error, Result};

#[derive(Debug)]
pub struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    root: Path,
    display: String,
}

impl ObjectBackend {
    pub fn new(store: Arc<dyn ObjectStore>, root: Path, display: impl Into<String>) -> Self {
        ObjectBackend {
            store,
            root,
            display: display.into(),
        }
    }

    fn path(&self, name: &str) -> Path {
        let mut path = self.root.clone();
        for segment in name.split('/').filter(|s| !s.is_empty()) {
            path = path.clone().join(segment);
        }
        path
    }

    fn location(&self, name: &str) -> String {
        format!("{}/{}", self.display.trim_end_matches('/'), name)
    }

    fn error(&self, name: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound {
                path: self.location(name),
            },
            e => Error::store(self.location(name), e),
        }
    }

    /// `path` relative to the root.
    fn name_of(&self, path: &Path) -> String {
        path.parts()
            .skip(self.root.parts().count())
            .map(|p| p.as_ref().to_string())
            .collect::<Vec<_>>()
            .join("/")
    }
}

#[async_trait]
impl Backend for ObjectBackend {
    fn describe(&self) -> &str {
        &self.display
    }

    async fn get(&self, name: &str) -> Result<Bytes> {
        let result = self
            .store
            .get(&self.path(name))
            .await
            .map_err(|e| self.error(name, e))?;
        result.bytes().await.map_err(|e| self.error(name, e))
    }

    async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        let want = range.end - range.start;
        match self.store.get_range(&self.path(name), range.clone()).await {
            Ok(bytes) if bytes.len() as u64 == want => Ok(bytes),
            Ok(bytes) => Err(Error::corrupt(
                self.location(name),
                format!(
                    "truncated: read {} of {want} bytes at offset {}",
                    bytes.len(),
                    range.start
                ),
            )),
            Err(e @ object_store::Error::NotFound { .. }) => Err(self.error(name, e)),
            Err(e) => {
                // Ranges past the end of a shorter file come back as errors
                // whose kind differs between stores; the real length decides.
                match self.store.head(&self.path(name)).await {
                    Ok(meta) if meta.size < range.end => Err(Error::corrupt(
                        self.location(name),
                        format!(
                            "truncated: {} bytes, a read needs up to {}",
                            meta.size, range.end
                        ),
                    )),
                    _ => Err(self.error(name, e)),
                }
            }
        }
    }

    async fn size(&self, name: &str) -> Result<Option<u64>> {
        match self.store.head(&self.path(name)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(name, e)),
        }
    }

    async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        self.store
            .put(&self.path(name), PutPayload::from(bytes))
            .await
            .map_err(|e| self.error(name, e))?;
        Ok(())
    }

    async fn create(&self, name: &str) -> Result<Box<dyn FileWriter>> {
        Ok(Box::new(ObjectWriter {
            writer: Some(BufWriter::new(self.store.clone(), self.path(name))),
            location: self.location(name),
            written: 0,
        }))
    }

    async fn put_if_absent(&self, name: &str, bytes: Bytes) -> Result<bool> {
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
            Err(e) => Err(self.error(name, e)),
        }
    }

    async fn sync(&self, _paths: &[String]) -> Result<()> {
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(name, e)),
        }
    }

    async fn list(&self, dir: &str) -> Result<Vec<FileInfo>> {
        let metas: Vec<_> = self
            .store
            .list(Some(&self.path(dir)))
            .try_collect()
            .await
            .map_err(|e| self.error(dir, e))?;
        Ok(metas
            .into_iter()
            .map(|meta| FileInfo {
                name: self.name_of(&meta.location),
                size: meta.size,
                modified_ms: meta.last_modified.timestamp_millis(),
            })
            .collect())
    }

    async fn list_dir(&self, dir: &str) -> Result<DirListing> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.path(dir)))
            .await
            .map_err(|e| self.error(dir, e))?;
        let last = |p: &Path| p.filename().map(str::to_string);
        let mut out = DirListing {
            dirs: listing.common_prefixes.iter().filter_map(last).collect(),
            files: listing
                .objects
                .iter()
                .filter_map(|o| last(&o.location))
                .collect(),
        };
        out.dirs.sort();
        out.files.sort();
        Ok(out)
    }

    async fn remove_dir(&self, _dir: &str) -> Result<()> {
        Ok(())
    }
}

/// Buffers small files into one PUT and streams large ones as a multipart
/// upload, which is aborted if the writer is dropped unfinished.
struct ObjectWriter {
    writer: Option<BufWriter>,
    location: String,
    written: u64,
}

#[async_trait]
impl FileWriter for ObjectWriter {
    async fn write(&mut self, bytes: Bytes) -> Result<()> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::store(self.location.clone(), "file writer already failed"))?;
        self.written += bytes.len() as u64;
        writer
            .put(bytes)
            .await
            .map_err(|e| Error::store(self.location.clone(), e))
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        let mut writer = self
            .writer
            .take()
            .ok_or_else(|| Error::store(self.location.clone(), "file writer already failed"))?;
        if let Err(e) = writer.shutdown().await {
            let _ = writer.abort().await;
            return Err(Error::store(self.location.clone(), e));
        }
        Ok(self.written)
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        let Some(mut writer) = self.writer.take() else {
            return;
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = writer.abort().await;
            });
        }
    }
}
