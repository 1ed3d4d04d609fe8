//! The table's definition as stored in the log: columns (with their Arrow
//! metadata and SQL defaults), the schema's metadata, declared constraints
//! and options; and the types a table accepts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::encoding::storage_type;
use crate::error::{Error, Result};
use crate::part::index::parse_type;

/// One stored column definition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FieldDef {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
    /// The field's Arrow metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The column's default, as SQL text (`DEFAULT 100 * 2 + 300`); the
    /// SQL layer parses it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The column's stable id: parts name their columns by it (see
    /// `alter`), so a renamed column keeps its files. `None` in tables
    /// never altered, where a column's id is its position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// For a column added by ALTER TABLE: its value in the rows of parts
    /// written before (one value, Arrow IPC in hex); NULL when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill: Option<String>,
}

/// A declared constraint. diagon keeps and reports them (DataFusion uses
/// them to reason about plans) but, like DataFusion's own tables, does not
/// enforce uniqueness.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConstraintDef {
    /// `primary_key` or `unique`.
    pub kind: String,
    pub columns: Vec<String>,
}

/// Everything about a table but its parts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Definition {
    pub schema: Vec<FieldDef>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub schema_metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<ConstraintDef>,
    pub options: BTreeMap<String, String>,
    /// The id the next added column gets; `None` until the first ALTER
    /// TABLE (ids are positions until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_column_id: Option<u32>,
}

/// What a table is created with besides its schema and options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extras {
    /// Column → default as SQL text.
    pub defaults: BTreeMap<String, String>,
    pub constraints: Vec<ConstraintDef>,
}

impl Definition {
    /// The definition of a new table.
    pub fn new(schema: &Schema, options: BTreeMap<String, String>, extras: &Extras) -> Self {
        let mut fields = to_defs(schema);
        for field in &mut fields {
            field.default = extras.defaults.get(&field.name).cloned();
        }
        Definition {
            schema: fields,
            schema_metadata: schema.metadata().clone().into_iter().collect(),
            constraints: extras.constraints.clone(),
            options,
            next_column_id: None,
        }
    }

    /// Each column's stable id, in column order.
    pub fn column_ids(&self) -> Vec<u32> {
        self.schema
            .iter()
            .enumerate()
            .map(|(i, d)| d.id.unwrap_or(i as u32))
            .collect()
    }

    /// Whether the schema was ever altered: parts may then hold columns
    /// under other names or types, or lack some (see `alter`).
    pub fn altered(&self) -> bool {
        self.next_column_id.is_some()
    }

    /// The Arrow schema, with field and schema metadata.
    pub fn arrow_schema(&self) -> Result<SchemaRef> {
        let fields = self
            .schema
            .iter()
            .map(|d| {
                let metadata: HashMap<String, String> = d.metadata.clone().into_iter().collect();
                Ok(Field::new(&d.name, parse_type(&d.data_type)?, d.nullable)
                    .with_metadata(metadata))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata: HashMap<String, String> = self.schema_metadata.clone().into_iter().collect();
        Ok(Arc::new(Schema::new(fields).with_metadata(metadata)))
    }

    /// Column → default as SQL text.
    pub fn defaults(&self) -> BTreeMap<String, String> {
        self.schema
            .iter()
            .filter_map(|d| Some((d.name.clone(), d.default.clone()?)))
            .collect()
    }

    /// Checks that constraints and defaults name columns of the table.
    pub fn check(&self) -> Result<()> {
        let known = |c: &String| self.schema.iter().any(|d| &d.name == c);
        for constraint in &self.constraints {
            if let Some(bad) = constraint.columns.iter().find(|c| !known(c)) {
                return Err(Error::Schema(format!(
                    "constraint {} names column '{bad}', which the table lacks",
                    constraint.kind
                )));
            }
        }
        Ok(())
    }
}

/// Rejects columns whose type this format version cannot store.
pub fn check_supported(schema: &Schema) -> Result<()> {
    for field in schema.fields() {
        let unsupported = || Error::UnsupportedType {
            column: field.name().clone(),
            data_type: field.data_type().to_string(),
        };
        let stored = storage_type(field.data_type()).ok_or_else(unsupported)?;
        if stored != *field.data_type() && !reads_back(&stored, field.data_type()) {
            return Err(unsupported());
        }
    }
    Ok(())
}

/// Whether values stored as `stored` cast back to exactly `declared`
/// (Arrow packs dictionaries of scalar values only, and builds run-end
/// types with fixed field flags).
fn reads_back(stored: &arrow::datatypes::DataType, declared: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType::*;
    let scalar = !matches!(
        stored,
        Boolean | Duration(_) | Interval(_) | Decimal256(_, _)
    ) && crate::encoding::layout_of(stored) != Some(crate::encoding::Layout::Nested);
    scalar
        && arrow::compute::cast(&arrow::array::new_null_array(stored, 1), declared)
            .is_ok_and(|a| a.data_type() == declared)
}

/// `schema` with each column's type as stored (see
/// [`crate::encoding::storage_type`]); the same schema when no column is
/// stored as another type.
pub fn storage_schema(schema: &SchemaRef) -> SchemaRef {
    let stored = |f: &Field| storage_type(f.data_type()).filter(|t| t != f.data_type());
    if !schema.fields().iter().any(|f| stored(f).is_some()) {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match stored(f) {
            Some(t) => f.as_ref().clone().with_data_type(t),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

pub fn to_defs(schema: &Schema) -> Vec<FieldDef> {
    schema
        .fields()
        .iter()
        .map(|f| FieldDef {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
            metadata: f.metadata().clone().into_iter().collect(),
            default: None,
            id: None,
            fill: None,
        })
        .collect()
}

/// `batch` with the column types of `schema` (same columns in the same
/// order), casting those that differ.
pub fn cast_batch(
    batch: &arrow::array::RecordBatch,
    schema: &arrow::datatypes::SchemaRef,
) -> crate::error::Result<arrow::array::RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| match c.data_type() == f.data_type() {
            true => Ok(c.clone()),
            false => arrow::compute::cast(c, f.data_type()),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let rows = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(arrow::array::RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &rows,
    )?)
}
