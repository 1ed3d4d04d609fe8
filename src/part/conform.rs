//! A part seen through a later schema of its table (ALTER TABLE): its
//! columns found by stable id rather than by name, so a part written before
//! a change keeps its files and reads as the current schema.
//!
//! - a renamed column answers to its new name (the sort key, components
//!   and legacy skip index files too);
//! - a dropped column is hidden under a name no column can have;
//! - a column the part lacks (added later) becomes a virtual column that
//!   reads as the value it was added with (its `fill`, or NULL), with
//!   statistics to match, so pruning and `IS NULL` treat it rightly;
//! - a widened column keeps its stored type for decoding (the reader
//!   casts), while its min/max statistics are cast to the new type for
//!   pruning; a skip index hashed in the old type's bytes is hidden (its
//!   granules are read) unless the bytes stay the same (strings, binaries).
//!
//! A conformed index's columns are the part's own, in order, followed by
//! the virtual ones; the granule table grows with them, keeping the layout
//! [`super::index::granule_schema`] fixes.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array, UInt64Array, new_null_array};
use arrow::datatypes::{DataType, Field, Schema};

use super::index::{ColumnMeta, PartIndex};
use crate::error::{Error, Result};

/// One column of the table's current schema.
#[derive(Debug, Clone)]
pub struct TableColumn {
    pub id: u32,
    pub name: String,
    pub data_type: DataType,
    pub nullable: bool,
    /// The value of rows written before the column existed (one row).
    pub fill: Option<ArrayRef>,
}

/// The name a dropped column hides under: no table column can have it.
fn hidden_name(id: u32) -> String {
    format!("\u{0}dropped.{id}")
}

/// Whether values of `from` convert to `to` without loss, each to a
/// distinct value: the type changes ALTER TABLE allows, and the only ones
/// a part may be read through.
pub fn widens(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let signed = |t: &DataType| match t {
        Int8 => Some(1),
        Int16 => Some(2),
        Int32 => Some(4),
        Int64 => Some(8),
        _ => None,
    };
    let unsigned = |t: &DataType| match t {
        UInt8 => Some(1),
        UInt16 => Some(2),
        UInt32 => Some(4),
        UInt64 => Some(8),
        _ => None,
    };
    let text = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    let binary = |t: &DataType| matches!(t, Binary | LargeBinary | BinaryView);
    match (from, to) {
        _ if from == to => true,
        // Dictionary and run-end encoded columns are stored as their values.
        (_, Dictionary(_, value)) => widens(from, value),
        (_, RunEndEncoded(_, value)) => widens(from, value.data_type()),
        (Float16, Float32 | Float64) | (Float32, Float64) => true,
        _ if text(from) => text(to),
        _ if binary(from) => binary(to),
        _ => match (signed(from), unsigned(from), signed(to), unsigned(to)) {
            (Some(f), _, Some(t), _) | (_, Some(f), _, Some(t)) => f <= t,
            (_, Some(f), Some(t), _) => f < t,
            _ => false,
        },
    }
}

/// Whether a value hashes the same in `from`'s and `to`'s stored bytes.
fn same_bytes(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let text = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    let binary = |t: &DataType| matches!(t, Binary | LargeBinary | BinaryView);
    let to = match to {
        Dictionary(_, value) => value.as_ref(),
        RunEndEncoded(_, value) => value.data_type(),
        other => other,
    };
    from == to || (text(from) && text(to)) || (binary(from) && binary(to))
}

impl PartIndex {
    /// Each column's stable id: recorded by parts written since ids
    /// existed, the position in older parts (written before any ALTER,
    /// with the table's columns in order).
    pub fn column_id(&self, column: usize) -> u32 {
        self.meta.columns[column].id.unwrap_or(column as u32)
    }

    /// Whether the part holds exactly `columns` (ids, names and types):
    /// then it needs no conforming.
    pub fn holds(&self, columns: &[TableColumn]) -> bool {
        self.holds_as(columns, |t| t.clone())
    }

    /// Whether the part stores exactly `columns` as a new part would (a
    /// dictionary column as its values): a merge has nothing to change.
    pub fn stores(&self, columns: &[TableColumn]) -> bool {
        self.holds_as(columns, |t| {
            crate::encoding::storage_type(t).unwrap_or_else(|| t.clone())
        })
    }

    fn holds_as(&self, columns: &[TableColumn], stored: impl Fn(&DataType) -> DataType) -> bool {
        self.meta.columns.len() == columns.len()
            && self
                .meta
                .columns
                .iter()
                .zip(columns)
                .enumerate()
                .all(|(i, (c, t))| {
                    self.column_id(i) == t.id
                        && c.name == t.name
                        && *self.data_type(i) == stored(&t.data_type)
                })
    }

    /// This part as the table with `columns` sees it (see the module).
    pub fn conform(&self, columns: &[TableColumn]) -> Result<Option<PartIndex>> {
        if self.holds(columns) {
            return Ok(None);
        }
        let by_id: HashMap<u32, &TableColumn> = columns.iter().map(|c| (c.id, c)).collect();
        let by_name: std::collections::HashSet<&str> =
            columns.iter().map(|c| c.name.as_str()).collect();
        let mut meta = self.meta.clone();
        let mut renamed: HashMap<String, String> = HashMap::new();
        let mut retyped: HashMap<String, (DataType, DataType)> = HashMap::new();
        for (i, column) in meta.columns.iter_mut().enumerate() {
            let id = self.column_id(i);
            let name = match by_id.get(&id) {
                Some(table) => {
                    if *self.data_type(i) != table.data_type {
                        if !widens(self.data_type(i), &table.data_type) {
                            return Err(Error::corrupt(
                                &self.meta.name,
                                format!(
                                    "column '{}' (id {id}) is stored as {}, which does not \
                                     widen to the table's {}",
                                    table.name,
                                    self.data_type(i),
                                    table.data_type
                                ),
                            ));
                        }
                        retyped.insert(
                            table.name.clone(),
                            (self.data_type(i).clone(), table.data_type.clone()),
                        );
                    }
                    table.name.clone()
                }
                None => hidden_name(id),
            };
            renamed.insert(column.name.clone(), name.clone());
            column.name = name;
        }
        let rename = |name: &mut String| {
            if let Some(new) = renamed.get(name.as_str()) {
                *name = new.clone();
            }
        };
        meta.order_by.iter_mut().for_each(rename);
        for component in &mut meta.components {
            component.columns.iter_mut().for_each(rename);
        }
        // Components of dropped columns are hidden; skip indexes hashed
        // in bytes a widened column no longer has are too.
        let live = |name: &String| by_name.contains(name.as_str());
        meta.components.retain(|c| {
            c.columns.iter().all(live)
                && (c.kind != crate::index::skip::KIND
                    || c.columns
                        .first()
                        .and_then(|name| retyped.get(name))
                        .is_none_or(|(from, to)| same_bytes(from, to)))
        });
        for legacy in &mut meta.skip_indexes {
            rename(&mut legacy.column);
        }
        meta.skip_indexes.retain(|s| {
            live(&s.column)
                && retyped
                    .get(&s.column)
                    .is_none_or(|(from, to)| same_bytes(from, to))
        });

        let present: Vec<u32> = (0..self.meta.columns.len())
            .map(|i| self.column_id(i))
            .collect();
        let added: Vec<&TableColumn> = columns
            .iter()
            .filter(|c| !present.contains(&c.id))
            .collect();
        let granules = self.conformed_granules(&meta, &retyped, &added)?;
        let mut fills: Vec<Option<ArrayRef>> = vec![None; meta.columns.len()];
        for column in &added {
            meta.columns.push(ColumnMeta::virtual_column(column));
            let fill = match &column.fill {
                Some(fill) => fill.clone(),
                None => new_null_array(&column.data_type, 1),
            };
            fills.push(Some(fill));
        }
        let mut types = self.types().to_vec();
        types.extend(added.iter().map(|c| c.data_type.clone()));
        Ok(Some(PartIndex::conformed(meta, granules, types, fills)?))
    }

    /// The granule table with retyped min/max cast and the statistics of
    /// the virtual columns appended.
    fn conformed_granules(
        &self,
        meta: &super::index::PartMeta,
        retyped: &HashMap<String, (DataType, DataType)>,
        added: &[&TableColumn],
    ) -> Result<RecordBatch> {
        let schema = self.granules.schema();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut arrays: Vec<ArrayRef> = self.granules.columns().to_vec();
        for (i, column) in meta.columns.iter().enumerate() {
            let Some((_, to)) = retyped.get(&column.name) else {
                continue;
            };
            for at in [self.stat_position(i, 0), self.stat_position(i, 1)] {
                // The granule statistics of a whole part as one dictionary
                // (or run-end) array could overflow narrow keys: those
                // columns' statistics become unknown.
                arrays[at] = match crate::encoding::rows_bound(to) {
                    Some(_) => new_null_array(to, arrays[at].len()),
                    None => arrow::compute::cast(&arrays[at], to)?,
                };
                fields[at] = Field::new(fields[at].name(), to.clone(), true);
            }
        }
        let granules = self.num_granules();
        let rows: Vec<u32> = (0..granules).map(|g| self.granule_rows(g) as u32).collect();
        for (k, column) in added.iter().enumerate() {
            let i = self.meta.columns.len() + k;
            let fill = column.fill.clone();
            let value = match &fill {
                Some(fill) if fill.is_valid(0) => fill.clone(),
                _ => new_null_array(&column.data_type, 1),
            };
            let repeated = arrow::compute::take(
                value.as_ref(),
                &UInt32Array::from(vec![0u32; granules]),
                None,
            )?;
            let nulls: Vec<u32> = match value.is_valid(0) {
                true => vec![0; granules],
                false => rows.clone(),
            };
            fields.push(Field::new(
                format!("min.{i}"),
                column.data_type.clone(),
                true,
            ));
            arrays.push(repeated.clone());
            fields.push(Field::new(
                format!("max.{i}"),
                column.data_type.clone(),
                true,
            ));
            arrays.push(repeated);
            fields.push(Field::new(format!("nulls.{i}"), DataType::UInt32, false));
            arrays.push(Arc::new(UInt32Array::from(nulls)));
            fields.push(Field::new(format!("mark.{i}"), DataType::UInt64, false));
            arrays.push(Arc::new(UInt64Array::from(vec![0u64; granules])));
        }
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
    }
}

impl ColumnMeta {
    /// The metadata of a column a part lacks: no file, no bytes.
    fn virtual_column(column: &TableColumn) -> ColumnMeta {
        ColumnMeta {
            name: column.name.clone(),
            data_type: column.data_type.to_string(),
            nullable: column.nullable,
            codec: String::new(),
            file: String::new(),
            file_len: 0,
            data_start: 0,
            data_end: 0,
            compressed_bytes: 0,
            uncompressed_bytes: 0,
            id: Some(column.id),
        }
    }
}
