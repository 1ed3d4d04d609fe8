//! Files in memory: for tests, and for tables that need not outlive the
//! process.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Backend, DirListing, FileInfo, FileWriter};
use crate::error::{Error, Result};
use crate::sync::lock;

/// Path → (contents, modification time in ms).
type Files = Arc<Mutex<BTreeMap<String, (Bytes, i64)>>>;

#[derive(Debug)]
pub struct MemoryBackend {
    files: Files,
    display: String,
}

impl MemoryBackend {
    pub fn new(display: impl Into<String>) -> Self {
        MemoryBackend {
            files: Default::default(),
            display: display.into(),
        }
    }

    fn location(&self, path: &str) -> String {
        format!("{}/{}", self.display.trim_end_matches('/'), path)
    }

    fn file(&self, path: &str) -> Result<Bytes> {
        lock(&self.files)
            .get(path)
            .map(|(bytes, _)| bytes.clone())
            .ok_or_else(|| Error::NotFound {
                path: self.location(path),
            })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `dir` as a prefix that only matches paths inside it.
fn dir_prefix(dir: &str) -> String {
    match dir.trim_end_matches('/') {
        "" => String::new(),
        dir => format!("{dir}/"),
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn describe(&self) -> &str {
        &self.display
    }

    async fn get(&self, path: &str) -> Result<Bytes> {
        self.file(path)
    }

    async fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        let bytes = self.file(path)?;
        if range.end > bytes.len() as u64 {
            return Err(Error::corrupt(
                self.location(path),
                format!(
                    "truncated: {} bytes, a read needs up to {}",
                    bytes.len(),
                    range.end
                ),
            ));
        }
        Ok(bytes.slice(range.start as usize..range.end as usize))
    }

    async fn size(&self, path: &str) -> Result<Option<u64>> {
        Ok(lock(&self.files).get(path).map(|(b, _)| b.len() as u64))
    }

    async fn put(&self, path: &str, bytes: Bytes) -> Result<()> {
        lock(&self.files).insert(path.to_string(), (bytes, now_ms()));
        Ok(())
    }

    async fn create(&self, path: &str) -> Result<Box<dyn FileWriter>> {
        Ok(Box::new(MemoryWriter {
            files: self.files.clone(),
            path: path.to_string(),
            buffer: Vec::new(),
        }))
    }

    async fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<bool> {
        let mut files = lock(&self.files);
        if files.contains_key(path) {
            return Ok(false);
        }
        files.insert(path.to_string(), (bytes, now_ms()));
        Ok(true)
    }

    async fn sync(&self, _paths: &[String]) -> Result<()> {
        Ok(())
    }

    async fn delete(&self, path: &str) -> Result<()> {
        lock(&self.files).remove(path);
        Ok(())
    }

    async fn list(&self, dir: &str) -> Result<Vec<FileInfo>> {
        let prefix = dir_prefix(dir);
        Ok(lock(&self.files)
            .range(prefix.clone()..)
            .take_while(|(path, _)| path.starts_with(&prefix))
            .map(|(path, (bytes, modified))| FileInfo {
                name: path.clone(),
                size: bytes.len() as u64,
                modified_ms: *modified,
            })
            .collect())
    }

    async fn list_dir(&self, dir: &str) -> Result<DirListing> {
        let prefix = dir_prefix(dir);
        let mut listing = DirListing::default();
        for path in lock(&self.files).keys() {
            let Some(rest) = path.strip_prefix(&prefix) else {
                continue;
            };
            match rest.split_once('/') {
                Some((sub, _)) => {
                    if listing.dirs.last().map(String::as_str) != Some(sub) {
                        listing.dirs.push(sub.to_string());
                    }
                }
                None => listing.files.push(rest.to_string()),
            }
        }
        listing.dirs.dedup();
        Ok(listing)
    }

    async fn remove_dir(&self, _dir: &str) -> Result<()> {
        Ok(())
    }
}

struct MemoryWriter {
    files: Files,
    path: String,
    buffer: Vec<u8>,
}

#[async_trait]
impl FileWriter for MemoryWriter {
    async fn write(&mut self, bytes: Bytes) -> Result<()> {
        self.buffer.extend_from_slice(&bytes);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<u64> {
        let len = self.buffer.len() as u64;
        lock(&self.files).insert(self.path, (Bytes::from(self.buffer), now_ms()));
        Ok(len)
    }
}
