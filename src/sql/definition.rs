//! Column defaults and constraints between DataFusion and the table's
//! stored definition: defaults are kept as SQL text (DataFusion's own
//! unparser writes it, its parser reads it back), constraints by column
//! name.

use std::collections::{BTreeMap, HashMap};

use arrow::datatypes::Schema;
use datafusion::common::{Constraint, Constraints, DFSchema};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;
use datafusion::sql::unparser::expr_to_sql;

use crate::table::{ConstraintDef, Extras};

const PRIMARY_KEY: &str = "primary_key";
const UNIQUE: &str = "unique";

/// What a table is created with besides its columns and options.
pub fn extras(
    schema: &Schema,
    defaults: impl IntoIterator<Item = (String, Expr)>,
    constraints: Option<&Constraints>,
) -> Result<Extras> {
    let mut sql = BTreeMap::new();
    for (column, expr) in defaults {
        let text = expr_to_sql(&expr).map_err(|e| {
            DataFusionError::Plan(format!(
                "column '{column}': the default {expr} cannot be stored: {e}"
            ))
        })?;
        sql.insert(column, text.to_string());
    }
    let name = |i: &usize| schema.field(*i).name().clone();
    let constraints = constraints
        .map(|c| {
            c.iter()
                .map(|c| match c {
                    Constraint::PrimaryKey(columns) => ConstraintDef {
                        kind: PRIMARY_KEY.into(),
                        columns: columns.iter().map(name).collect(),
                    },
                    Constraint::Unique(columns) => ConstraintDef {
                        kind: UNIQUE.into(),
                        columns: columns.iter().map(name).collect(),
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Extras {
        defaults: sql,
        constraints,
    })
}

/// Stored constraints as DataFusion's; `None` when there are none.
pub fn constraints(defs: &[ConstraintDef], schema: &Schema) -> Result<Option<Constraints>> {
    if defs.is_empty() {
        return Ok(None);
    }
    let mut constraints = Vec::with_capacity(defs.len());
    for def in defs {
        let columns = def
            .columns
            .iter()
            .map(|c| Ok(schema.index_of(c)?))
            .collect::<Result<Vec<_>>>()?;
        constraints.push(match def.kind.as_str() {
            PRIMARY_KEY => Constraint::PrimaryKey(columns),
            UNIQUE => Constraint::Unique(columns),
            other => {
                return Err(DataFusionError::Plan(format!(
                    "unknown stored constraint '{other}'"
                )));
            }
        });
    }
    Ok(Some(Constraints::new_unverified(constraints)))
}

/// Stored defaults parsed back into expressions over `schema`.
pub fn defaults(sql: &BTreeMap<String, String>, schema: &Schema) -> Result<HashMap<String, Expr>> {
    if sql.is_empty() {
        return Ok(HashMap::new());
    }
    let ctx = SessionContext::new();
    let df_schema = DFSchema::try_from(schema.clone())?;
    sql.iter()
        .map(|(column, text)| {
            let expr = ctx.parse_sql_expr(text, &df_schema).map_err(|e| {
                DataFusionError::Plan(format!(
                    "column '{column}': the stored default '{text}' does not parse: {e}"
                ))
            })?;
            Ok((column.clone(), expr))
        })
        .collect()
}
