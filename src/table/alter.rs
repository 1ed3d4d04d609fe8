//! Schema evolution (ALTER TABLE): adding, dropping and renaming columns
//! and widening their types, as a new definition committed to the log. No
//! part is rewritten: columns carry stable ids, parts record the ids of
//! theirs, and a part is read through the current schema
//! (`part::conform`): an added column reads as the value it was added with
//! (or NULL), a dropped one is ignored until a merge leaves it out, a
//! renamed one answers to its new name, a widened one is cast.
//!
//! One commit holds the whole change, so a crash leaves either schema.
//! The first ALTER of a table gives every column its position as its id
//! (the ids older parts imply) and the definition a `next_column_id`.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};

use super::Table;
use super::options::TableOptions;
use super::schema::{Definition, check_supported};
use crate::error::{Error, Result};
use crate::part::conform::TableColumn;

/// One change to a table's columns.
#[derive(Debug, Clone)]
pub enum SchemaChange {
    /// A new last column. `default` (SQL text) is what inserts that omit
    /// it write; `fill` (one row) is its value in the rows already in the
    /// table, NULL when absent.
    AddColumn {
        field: Field,
        default: Option<String>,
        fill: Option<ArrayRef>,
    },
    DropColumn {
        name: String,
    },
    RenameColumn {
        from: String,
        to: String,
    },
    /// A widening type change: integers to wider integers, Float32 to
    /// Float64, among strings and among binaries.
    SetType {
        column: String,
        data_type: DataType,
    },
    /// What inserts that omit the column write (SQL text); rows already
    /// written keep their values.
    SetDefault {
        column: String,
        default: Option<String>,
    },
}

pub use crate::part::conform::widens;

impl Definition {
    /// The definition after `change`, checked: errors name the column
    /// and the reason.
    pub fn alter(&self, change: &SchemaChange) -> Result<Definition> {
        let mut next = self.clone();
        // Ids become explicit at the first change: positions, which is
        // what parts written so far imply.
        let ids = self.column_ids();
        for (field, id) in next.schema.iter_mut().zip(&ids) {
            field.id = Some(*id);
        }
        let next_id = self
            .next_column_id
            .unwrap_or(0)
            .max(ids.iter().max().map_or(0, |m| m + 1));
        next.next_column_id = Some(next_id);
        let schema = self.arrow_schema()?;
        let mut options = TableOptions::from_map(&self.options, &schema)?;
        let find = |name: &str| -> Result<usize> {
            self.schema
                .iter()
                .position(|f| f.name == name)
                .ok_or_else(|| Error::Schema(format!("the table has no column '{name}'")))
        };
        match change {
            SchemaChange::AddColumn {
                field,
                default,
                fill,
            } => {
                if self.schema.iter().any(|f| f.name == *field.name()) {
                    return Err(Error::Schema(format!(
                        "column '{}' already exists",
                        field.name()
                    )));
                }
                check_supported(&Schema::new(vec![field.clone()]))?;
                let fill = match fill {
                    Some(value) if value.is_valid(0) => Some(encode_fill(value, field)?),
                    _ if !field.is_nullable() => {
                        return Err(Error::Schema(format!(
                            "column '{}' is NOT NULL: it needs a DEFAULT for the rows already \
                             in the table",
                            field.name()
                        )));
                    }
                    _ => None,
                };
                let mut def = super::schema::to_defs(&Schema::new(vec![field.clone()])).remove(0);
                def.default = default.clone();
                def.id = Some(next_id);
                def.fill = fill;
                next.schema.push(def);
                next.next_column_id = Some(next_id + 1);
            }
            SchemaChange::DropColumn { name } => {
                let at = find(name)?;
                if options.order_by.contains(name) {
                    return Err(Error::Schema(format!(
                        "column '{name}' is in the sort key (order_by); it cannot be dropped"
                    )));
                }
                if let Some(c) = self.constraints.iter().find(|c| c.columns.contains(name)) {
                    return Err(Error::Schema(format!(
                        "column '{name}' is in a {} constraint; it cannot be dropped",
                        c.kind
                    )));
                }
                next.schema.remove(at);
                options.skip_indexes.remove(name);
                options.text.indexes.remove(name);
                options.codecs.remove(name);
            }
            SchemaChange::RenameColumn { from, to } => {
                let at = find(from)?;
                if to.is_empty() {
                    return Err(Error::Schema("a column needs a name".into()));
                }
                if from != to && self.schema.iter().any(|f| f.name == *to) {
                    return Err(Error::Schema(format!("column '{to}' already exists")));
                }
                next.schema[at].name = to.clone();
                let rename = |name: &mut String| {
                    if name == from {
                        *name = to.clone();
                    }
                };
                options.order_by.iter_mut().for_each(rename);
                for c in &mut next.constraints {
                    c.columns.iter_mut().for_each(rename);
                }
                rekey(&mut options.skip_indexes, from, to);
                rekey(&mut options.text.indexes, from, to);
                rekey(&mut options.codecs, from, to);
            }
            SchemaChange::SetDefault { column, default } => {
                let at = find(column)?;
                next.schema[at].default = default.clone();
            }
            SchemaChange::SetType { column, data_type } => {
                let at = find(column)?;
                let from = schema.field(at).data_type();
                if options.order_by.contains(column) && from != data_type {
                    return Err(Error::Schema(format!(
                        "column '{column}' is in the sort key (order_by); its type cannot change"
                    )));
                }
                if !widens(from, data_type) {
                    return Err(Error::Schema(format!(
                        "column '{column}' cannot change from {from} to {data_type}: only \
                         widening changes are allowed (to a wider integer, Float32 to Float64, \
                         among string types, among binary types)"
                    )));
                }
                let field = schema.field(at).clone().with_data_type(data_type.clone());
                check_supported(&Schema::new(vec![field.clone()]))?;
                next.schema[at].data_type = data_type.to_string();
                if let Some(fill) = &self.schema[at].fill {
                    let value = decode_fill(fill, schema.field(at).data_type())?;
                    let cast = arrow::compute::cast(&value, data_type)?;
                    next.schema[at].fill = Some(encode_fill(&cast, &field)?);
                }
                let stored =
                    crate::encoding::storage_type(data_type).unwrap_or_else(|| data_type.clone());
                if let Some(codec) = options.codecs.get(column)
                    && codec.check(&stored).is_err()
                {
                    // A transform for the old width: the new type's default.
                    options.codecs.remove(column);
                }
            }
        }
        let next_schema = next.arrow_schema()?;
        // The options still name columns of the table and suit their types.
        next.options = options.to_map();
        TableOptions::from_map(&next.options, &next_schema)?;
        next.check()?;
        Ok(next)
    }
}

/// Moves the entry of `from` to `to`.
fn rekey<V>(map: &mut std::collections::BTreeMap<String, V>, from: &str, to: &str) {
    if let Some(value) = map.remove(from) {
        map.insert(to.to_string(), value);
    }
}

/// A column's fill value as stored: one row in Arrow IPC, in hex.
fn encode_fill(value: &ArrayRef, field: &Field) -> Result<String> {
    let value = arrow::compute::cast(value, field.data_type())?;
    let schema = Arc::new(Schema::new(vec![Field::new(
        "fill",
        field.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![value.slice(0, 1)])?;
    let mut bytes = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &schema)?;
    writer.write(&batch)?;
    writer.finish()?;
    drop(writer);
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The one-row value [`encode_fill`] stored, as `data_type`.
fn decode_fill(hex: &str, data_type: &DataType) -> Result<ArrayRef> {
    let bad =
        |why: String| Error::Schema(format!("a column's stored fill value is damaged: {why}"));
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return Err(bad("not hex".into()));
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<std::result::Result<Vec<u8>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let mut reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| bad(e.to_string()))?;
    let batch = reader
        .next()
        .ok_or_else(|| bad("no value".into()))?
        .map_err(|e| bad(e.to_string()))?;
    if batch.num_columns() != 1 || batch.num_rows() != 1 {
        return Err(bad("not one value".into()));
    }
    Ok(arrow::compute::cast(batch.column(0), data_type)?)
}

/// The columns of `definition` (whose Arrow schema is `schema`) with ids
/// and fills, as parts are conformed to them.
pub fn table_columns(definition: &Definition, schema: &Schema) -> Result<Vec<TableColumn>> {
    definition
        .schema
        .iter()
        .zip(definition.column_ids())
        .zip(schema.fields())
        .map(|((def, id), field)| {
            Ok(TableColumn {
                id,
                name: def.name.clone(),
                data_type: field.data_type().clone(),
                nullable: field.is_nullable(),
                fill: def
                    .fill
                    .as_deref()
                    .map(|hex| decode_fill(hex, field.data_type()))
                    .transpose()?,
            })
        })
        .collect()
}

/// A hash of `columns` (ids, names, types, fills): conformed part indexes
/// are cached under it.
pub fn fingerprint(columns: &[TableColumn]) -> u64 {
    let mut text = String::new();
    for c in columns {
        let fill = c
            .fill
            .as_ref()
            .and_then(|f| arrow::util::display::array_value_to_string(f, 0).ok());
        text.push_str(&format!("{}|{}|{}|{:?};", c.id, c.name, c.data_type, fill));
    }
    xxhash_rust::xxh64::xxh64(text.as_bytes(), 0)
}

impl Table {
    /// Applies `change` to the table's schema as one commit (operation
    /// `ALTER`), on the newest version; parts are left as they are.
    pub async fn alter(&self, change: &SchemaChange) -> Result<u64> {
        self.alter_all(std::slice::from_ref(change)).await
    }

    /// Applies `changes` in order, all in one commit: a failing one
    /// commits none.
    pub async fn alter_all(&self, changes: &[SchemaChange]) -> Result<u64> {
        let define = |base: &super::Snapshot| {
            let mut definition = base.definition.as_ref().clone();
            for change in changes {
                definition = definition.alter(change)?;
            }
            Ok(definition)
        };
        let version = self
            .commit_definition("ALTER", &mut |base| Some(base.parts.clone()), &define)
            .await?;
        Ok(version.expect("an unconditional commit is never refused"))
    }
}
