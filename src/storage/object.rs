//! Any `object_store` store (S3, GCS, Azure, HTTP, the local file system
//! through object_store, memory): the backend the session's object-store
//! registry resolves a table URL to.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UploadPart,
};

use super::{Backend, DirListing, FileInfo, FileWriter, counts};
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
        let bytes = result.bytes().await.map_err(|e| self.error(name, e))?;
        counts::request(bytes.len() as u64);
        Ok(bytes)
    }

    async fn get_ranges(
        &self,
        name: &str,
        ranges: &[Range<u64>],
        _file_len: u64,
    ) -> Result<Vec<Bytes>> {
        // Ranges less than 1 MiB apart are one request; up to ten at once.
        object_store::coalesce_ranges(
            ranges,
            |range| self.get_range(name, range),
            object_store::OBJECT_STORE_COALESCE_DEFAULT,
        )
        .await
    }

    async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        let want = range.end - range.start;
        let fetched = self.store.get_range(&self.path(name), range.clone()).await;
        if let Ok(bytes) = &fetched {
            counts::request(bytes.len() as u64);
        }
        match fetched {
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
        Ok(Box::new(ObjectWriter::new(
            self.store.clone(),
            self.path(name),
            self.location(name),
        )))
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

/// Bytes a multipart upload sends per part (S3 needs at least 5 MiB for
/// every part but the last), and the size up to which a file goes up in
/// one PUT.
const PART_BYTES: usize = 10 << 20;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Buffers small files into one PUT and streams large ones as a multipart
/// upload of [`PART_BYTES`] parts, several in flight. An upload that fails
/// (a part, or its completion, after the client's retries) is aborted, as
/// is one whose writer is dropped unfinished, so the store keeps no parts.
struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    path: Path,
    location: String,
    /// Bytes not yet sent, at most a part's worth.
    buffer: Vec<Bytes>,
    buffered: usize,
    upload: Option<Box<dyn MultipartUpload>>,
    parts: FuturesUnordered<UploadPart>,
    written: u64,
    /// Set by the first failure: the file can no longer be completed.
    failed: bool,
}

impl ObjectWriter {
    fn new(store: Arc<dyn ObjectStore>, path: Path, location: String) -> Self {
        ObjectWriter {
            store,
            path,
            location,
            buffer: Vec::new(),
            buffered: 0,
            upload: None,
            parts: FuturesUnordered::new(),
            written: 0,
            failed: false,
        }
    }

    fn check(&self) -> Result<()> {
        match self.failed {
            true => Err(Error::store(
                self.location.clone(),
                "an earlier write of this file failed",
            )),
            false => Ok(()),
        }
    }

    fn error(&self, e: object_store::Error) -> Error {
        Error::store(self.location.clone(), e)
    }

    /// The buffered bytes as one payload.
    fn take_buffer(&mut self) -> PutPayload {
        self.buffered = 0;
        std::mem::take(&mut self.buffer).into_iter().collect()
    }

    /// Sends a part, waiting for room among the parts in flight.
    async fn send_part(&mut self, part: PutPayload) -> Result<()> {
        if self.upload.is_none() {
            // Failed until the upload starts (a cancelled start too).
            self.failed = true;
            let upload = self
                .store
                .put_multipart(&self.path)
                .await
                .map_err(|e| self.error(e))?;
            self.upload = Some(upload);
            self.failed = false;
        }
        let upload = self.upload.as_mut().expect("started above");
        self.parts.push(upload.put_part(part));
        while self.parts.len() >= PARTS_IN_FLIGHT {
            self.next_part().await?;
        }
        Ok(())
    }

    /// Waits for one part in flight; a failed part aborts the upload.
    async fn next_part(&mut self) -> Result<()> {
        match self.parts.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => {
                let error = self.error(e);
                self.abort().await;
                Err(error)
            }
        }
    }

    /// Abandons the upload: parts in flight are dropped, those sent removed.
    /// The upload stays in `self` until aborted, so a cancelled abort is
    /// completed by `Drop`.
    async fn abort(&mut self) {
        self.failed = true;
        self.parts = FuturesUnordered::new();
        if let Some(upload) = self.upload.as_mut() {
            if let Err(e) = upload.abort().await {
                log::warn!("aborting the upload of '{}': {e}", self.location);
            }
            self.upload = None;
        }
    }
}

#[async_trait]
impl FileWriter for ObjectWriter {
    async fn write(&mut self, mut bytes: Bytes) -> Result<()> {
        self.check()?;
        self.written += bytes.len() as u64;
        while self.buffered + bytes.len() >= PART_BYTES {
            let fill = bytes.split_to(PART_BYTES - self.buffered);
            self.buffer.push(fill);
            let part = self.take_buffer();
            self.send_part(part).await?;
        }
        if !bytes.is_empty() {
            self.buffered += bytes.len();
            self.buffer.push(bytes);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        self.check()?;
        if self.upload.is_none() {
            let payload = self.take_buffer();
            self.store
                .put(&self.path, payload)
                .await
                .map_err(|e| self.error(e))?;
            return Ok(self.written);
        }
        if self.buffered > 0 {
            let part = self.take_buffer();
            self.send_part(part).await?;
        }
        while !self.parts.is_empty() {
            self.next_part().await?;
        }
        // Kept in `self` while completing: cancelled here, `Drop` aborts.
        let completed = match self.upload.as_mut() {
            Some(upload) => upload.complete().await,
            None => {
                return Err(self.error(object_store::Error::Generic {
                    store: "diagon",
                    source: "the upload was lost".into(),
                }));
            }
        };
        if let Err(e) = completed {
            let error = self.error(e);
            self.abort().await;
            return Err(error);
        }
        self.upload = None;
        Ok(self.written)
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        self.parts = FuturesUnordered::new();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let location = self.location.clone();
            handle.spawn(async move {
                if let Err(e) = upload.abort().await {
                    log::warn!("aborting the upload of '{location}': {e}");
                }
            });
        }
    }
}
