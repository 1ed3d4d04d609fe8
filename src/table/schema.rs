//! The table schema as stored in the commit log, and the types a table accepts.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::encoding::layout_of;
use crate::error::{Error, Result};
use crate::part::index::parse_type;

/// One stored column definition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FieldDef {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
}

/// Rejects columns whose type this format version cannot store.
pub fn check_supported(schema: &Schema) -> Result<()> {
    if schema.fields().is_empty() {
        return Err(Error::Schema(
            "a diagon table needs at least one column".into(),
        ));
    }
    for field in schema.fields() {
        if layout_of(field.data_type()).is_none() {
            return Err(Error::UnsupportedType {
                column: field.name().clone(),
                data_type: field.data_type().to_string(),
            });
        }
    }
    Ok(())
}

pub fn to_defs(schema: &Schema) -> Vec<FieldDef> {
    schema
        .fields()
        .iter()
        .map(|f| FieldDef {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

pub fn from_defs(defs: &[FieldDef]) -> Result<SchemaRef> {
    let fields = defs
        .iter()
        .map(|d| Ok(Field::new(&d.name, parse_type(&d.data_type)?, d.nullable)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}
