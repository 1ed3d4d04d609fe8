//! Deletion masks: which rows of an immutable part are deleted as of a
//! version. `DELETE` and `UPDATE` write a new mask per part they touch
//! (`parts/<part>/del_<id>.dgm`, one bit per row, set = deleted) and commit
//! it in the part's log entry; scans drop masked rows; merges purge them.
//!
//! ```text
//! envelope(DELM) { rows u64 | deleted u64 | bitmap (rows bits, LSB first) }
//! ```

use arrow::array::{BooleanArray, RecordBatch};
use arrow::buffer::{BooleanBuffer, MutableBuffer};
use arrow::compute::filter_record_batch;

use super::log::Deletes;
use crate::encoding::envelope::{self, FileKind};
use crate::error::{Error, Result};
use crate::part::part_dir;
use crate::storage::Storage;

/// Path of a part's mask file relative to the table root.
pub fn mask_path(part: &str, file: &str) -> String {
    format!("{}/{file}", part_dir(part))
}

/// A fresh mask file name: a committed mask is never overwritten.
pub fn new_mask_file() -> String {
    format!("del_{}.dgm", uuid::Uuid::new_v4().simple())
}

/// Writes `mask` (bit set = deleted) for `part` as `file`, durably, and
/// returns the entry naming it.
pub async fn write_mask(
    storage: &Storage,
    part: &str,
    file: &str,
    mask: &BooleanBuffer,
) -> Result<Deletes> {
    let file = file.to_string();
    let deleted = mask.count_set_bits() as u64;
    let mut body = Vec::with_capacity(16 + mask.len().div_ceil(8));
    body.extend_from_slice(&(mask.len() as u64).to_le_bytes());
    body.extend_from_slice(&deleted.to_le_bytes());
    body.extend_from_slice(mask.sliced().as_slice());
    let path = mask_path(part, &file);
    storage
        .put(&path, envelope::seal(FileKind::DeletionMask, &body))
        .await?;
    storage.sync(vec![path]).await?;
    Ok(Deletes {
        file,
        rows: deleted,
    })
}

/// Reads and checks a part's mask against the part's row count and the
/// deleted count its log entry records.
pub async fn read_mask(
    storage: &Storage,
    part: &str,
    deletes: &Deletes,
    rows: u64,
) -> Result<BooleanBuffer> {
    let path = mask_path(part, &deletes.file);
    let location = storage.location(&path);
    let bytes = storage.get(&path).await.map_err(|e| match e {
        Error::NotFound { .. } => Error::corrupt(&location, "deletion mask is missing"),
        other => other,
    })?;
    let body = envelope::open(&location, FileKind::DeletionMask, &bytes)?;
    if body.len() < 16 {
        return Err(Error::corrupt(&location, "deletion mask header truncated"));
    }
    let stored_rows = u64::from_le_bytes(body[..8].try_into().unwrap());
    let deleted = u64::from_le_bytes(body[8..16].try_into().unwrap());
    let bitmap = &body[16..];
    if stored_rows != rows || bitmap.len() as u64 != rows.div_ceil(8) {
        return Err(Error::corrupt(
            &location,
            format!("mask covers {stored_rows} rows, the part has {rows}"),
        ));
    }
    let mask = BooleanBuffer::new(bitmap.to_vec().into(), 0, rows as usize);
    if mask.count_set_bits() as u64 != deleted || deleted != deletes.rows {
        return Err(Error::corrupt(
            &location,
            format!(
                "mask deletes {} rows, its header says {deleted} and the log {}",
                mask.count_set_bits(),
                deletes.rows
            ),
        ));
    }
    Ok(mask)
}

/// Removes the masked rows from `batch`, whose first row is row `start` of
/// the part.
pub fn apply_mask(batch: RecordBatch, mask: &BooleanBuffer, start: usize) -> Result<RecordBatch> {
    let deleted = mask.slice(start, batch.num_rows());
    if deleted.count_set_bits() == 0 {
        return Ok(batch);
    }
    let keep = BooleanArray::new(!&deleted, None);
    Ok(filter_record_batch(&batch, &keep)?)
}

/// A mask of `rows` rows: `base` (if any) with the rows of `extra` added.
pub fn union(base: Option<&BooleanBuffer>, rows: usize, extra: &[usize]) -> BooleanBuffer {
    let mut bits = match base {
        Some(b) => MutableBuffer::from(b.sliced().as_slice().to_vec()),
        None => MutableBuffer::from_len_zeroed(rows.div_ceil(8)),
    };
    let slice = bits.as_slice_mut();
    for &row in extra {
        slice[row / 8] |= 1 << (row % 8);
    }
    BooleanBuffer::new(bits.into(), 0, rows)
}
