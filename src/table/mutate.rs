//! DELETE and UPDATE: find the rows a predicate matches, part by part, mark
//! them in new deletion masks and (for UPDATE) write their new versions as
//! new parts; then commit all of it as one version.
//!
//! Parts are immutable, so a mutation never rewrites data in place (Delta
//! Lake's deletion vectors, ClickHouse's lightweight deletes). The rows are
//! found through the same scan plan as a query's: the matcher's pruners
//! skip granules, deleted rows are never read. A concurrent commit that
//! changed a touched part (another DELETE, a merge) makes the mutation
//! start over on the newer version; untouched parts never conflict.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;

use super::Table;
use super::deletes::{self, union};
use super::log::Deletes;
use crate::error::{Error, Result};
use crate::part::ReadStats;
use crate::plan::{Pruner, projection, read_granules};

/// What a mutation matches and how it changes matched rows. Implemented by
/// the SQL layer over DataFusion expressions.
pub trait RowMatcher: Send + Sync {
    /// Pruners that skip granules holding no matching row.
    fn pruners(&self) -> Vec<Arc<dyn Pruner>>;
    /// Which rows of `batch` (the full table schema) match; NULL is no match.
    fn matches(&self, batch: &RecordBatch) -> Result<BooleanArray>;
    /// Whether this is an UPDATE (matched rows get new versions).
    fn is_update(&self) -> bool;
    /// For UPDATE, the new version of the matched rows.
    fn update(&self, matched: &RecordBatch) -> Result<RecordBatch>;
    /// The columns the matcher was made for, if it depends on them: a
    /// table altered since then refuses it.
    fn schema(&self) -> Option<&arrow::datatypes::SchemaRef> {
        None
    }
}

/// One part's change: its new mask.
struct Touched {
    name: String,
    before: Option<Deletes>,
    after: Deletes,
    /// The tier and directory the part was in, where its new mask was
    /// written.
    location: Option<String>,
    dir: Option<String>,
    storage: crate::storage::Storage,
}

const MAX_ATTEMPTS: usize = 8;

impl Table {
    /// Deletes (or, with [`RowMatcher::update`], updates) the matching rows
    /// and commits. Returns the number of rows matched.
    pub async fn mutate(
        self: &Arc<Self>,
        operation: &str,
        matcher: &dyn RowMatcher,
    ) -> Result<u64> {
        for _ in 0..MAX_ATTEMPTS {
            if let Some(count) = self.try_mutate(operation, matcher).await? {
                return Ok(count);
            }
        }
        Err(Error::CommitConflict {
            table: self.name().to_string(),
            version: self.cached_snapshot().version + 1,
        })
    }

    /// One attempt; `None` when a concurrent commit changed a touched part.
    async fn try_mutate(
        self: &Arc<Self>,
        operation: &str,
        matcher: &dyn RowMatcher,
    ) -> Result<Option<u64>> {
        let (_pin, base) = self.pinned_snapshot().await?;
        if matcher
            .schema()
            .is_some_and(|s| s.fields() != base.schema.fields())
        {
            return Err(Error::Table(format!(
                "table '{}' was altered (ALTER TABLE) after the statement was planned; \
                 run it again",
                self.name()
            )));
        }
        let plan = self.plan(&base, &base.parts, &matcher.pruners()).await?;
        let schema = base.schema.clone();
        let mut touched = Vec::new();
        let mut updated = Vec::new();
        let mut matched_total = 0u64;
        let mut in_flight = super::gc::InFlight::new(self);
        let ctx = |e: Error| e.context(format!("table '{}'", self.name()));
        for (entry, part) in base.parts.iter().zip(&plan.parts) {
            let columns = projection(part, &schema)?;
            let mut matched_rows = Vec::new();
            for range in part.read_ranges() {
                let mut stats = ReadStats::default();
                let granules = read_granules(part, &columns, &schema, range, &mut stats)
                    .await
                    .map_err(ctx)?;
                for granule in granules {
                    let hits = matcher.matches(&granule.batch)?;
                    let hit: Vec<bool> = (0..hits.len())
                        .map(|i| hits.is_valid(i) && hits.value(i))
                        .collect();
                    let rows = granule.row_numbers();
                    let before = matched_rows.len();
                    matched_rows.extend(
                        rows.iter()
                            .zip(&hit)
                            .filter(|(_, h)| **h)
                            .map(|(r, _)| *r as usize),
                    );
                    if matcher.is_update() && matched_rows.len() > before {
                        let matched =
                            filter_record_batch(&granule.batch, &BooleanArray::from(hit))?;
                        updated.push(matcher.update(&matched)?);
                    }
                }
            }
            if matched_rows.is_empty() {
                continue;
            }
            matched_total += matched_rows.len() as u64;
            let new_mask = union(part.mask.as_deref(), entry.rows as usize, &matched_rows);
            let file = deletes::new_mask_file();
            // Registered by its path from the tier's root, as cleanup lists it.
            in_flight.begin(format!("{}/{file}", entry.dir_path()));
            let after = deletes::write_mask(&part.storage, &entry.name, &file, &new_mask).await?;
            touched.push(Touched {
                name: entry.name.clone(),
                before: entry.deletes.clone(),
                after,
                location: entry.location.clone(),
                dir: entry.dir.clone(),
                storage: part.storage.clone(),
            });
        }
        drop(plan);
        if touched.is_empty() {
            return Ok(Some(0));
        }
        let new_parts = match updated.is_empty() {
            true => Vec::new(),
            false => {
                let mut writer = self.insert_on(base.clone());
                for batch in updated {
                    writer.write(batch).await?;
                }
                writer.finish_parts().await?
            }
        };
        in_flight.adopt(new_parts.iter().map(|p| p.name.clone()));
        let committed = self
            .commit_checked(operation, |current| {
                let mut parts = current.parts.clone();
                for t in &touched {
                    let p = parts.iter_mut().find(|p| p.name == t.name)?;
                    // A part moved meanwhile lacks the new mask where it is now.
                    if p.deletes != t.before || p.location != t.location || p.dir != t.dir {
                        return None;
                    }
                    p.deletes = Some(t.after.clone());
                }
                parts.extend(new_parts.iter().cloned());
                Some(parts)
            })
            .await?;
        if committed.is_none() {
            // Lost to a concurrent change of a touched part: what this attempt
            // wrote is garbage now.
            for t in &touched {
                let path = deletes::mask_path(&t.name, &t.after.file);
                let _ = t.storage.delete(&path).await;
            }
            self.delete_parts(&new_parts).await;
            return Ok(None);
        }
        Ok(Some(matched_total))
    }
}
