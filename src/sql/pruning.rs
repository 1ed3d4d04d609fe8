//! A query's filters as the planner's pruner inputs. This is the only
//! place that reads DataFusion expressions for pruning:
//!
//! - conjuncts over sort-key columns only become a `PruningPredicate`
//!   over the sparse primary index;
//! - all conjuncts become a `PruningPredicate` over per-granule min/max;
//! - for each column with a skip index that the filters mention, the
//!   filters become a [`SkipCondition`] (see [`super::skipping`]).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};

use super::skipping;
use crate::plan::prune::{LEAF_SEPARATOR, Stats};
use crate::plan::{Pruner, SkipIndexPruner, StatsPruner};
use crate::table::TableOptions;

/// The pruners for `filters` over a table of `schema` with `options`, in
/// the order they run: primary key, min/max, then each skip index.
pub fn pruners(
    state: &dyn Session,
    schema: &SchemaRef,
    options: &TableOptions,
    filters: &[Expr],
) -> Result<Vec<Arc<dyn Pruner>>> {
    let mut pruners: Vec<Arc<dyn Pruner>> = Vec::new();
    let key = &options.order_by;
    let on_key: Vec<Expr> = filters
        .iter()
        .filter(|f| {
            let columns = f.column_refs();
            !columns.is_empty() && columns.iter().all(|c| key.contains(&c.name))
        })
        .cloned()
        .collect();
    if let Some(predicate) = predicate(state, schema, on_key)? {
        pruners.push(Arc::new(StatsPruner::new(predicate, Stats::PrimaryKey)));
    }
    if let Some(predicate) = predicate(state, schema, filters.to_vec())? {
        pruners.push(Arc::new(StatsPruner::new(predicate, Stats::MinMax)));
    }
    let mentioned: Vec<String> = filters
        .iter()
        .flat_map(|f| f.column_refs().into_iter().map(|c| c.name.clone()))
        .collect();
    for (column, spec) in &options.skip_indexes {
        if !spec.has_component() || !mentioned.contains(column) {
            continue;
        }
        let Ok(field) = schema.field_with_name(column) else {
            continue;
        };
        // Kept even when it cannot prune, so EXPLAIN shows the index was
        // considered.
        // The index hashed the stored values (a dictionary's values).
        let stored = crate::encoding::storage_type(field.data_type())
            .unwrap_or_else(|| field.data_type().clone());
        let condition = skipping::condition(filters, column, &stored, spec);
        pruners.push(Arc::new(SkipIndexPruner {
            column: column.clone(),
            data_type: field.data_type().clone(),
            spec: *spec,
            condition,
        }));
    }
    Ok(pruners)
}

/// A pruning predicate for the conjunction of `exprs`; `None` when there is
/// nothing to prune with.
fn predicate(
    state: &dyn Session,
    schema: &SchemaRef,
    exprs: Vec<Expr>,
) -> Result<Option<Arc<PruningPredicate>>> {
    let Some(expr) = conjunction(exprs) else {
        return Ok(None);
    };
    let mut leaves = Vec::new();
    let expr = struct_leaves(expr, schema, &mut leaves)?;
    let schema = match leaves.is_empty() {
        true => schema.clone(),
        false => {
            let mut fields: Vec<Field> =
                schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.extend(leaves);
            Arc::new(Schema::new(fields))
        }
    };
    let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
    let physical = state.create_physical_expr(expr, &df_schema)?;
    Ok(PruningPredicateBuilder::new()
        .with_file_schema(schema)
        .build(physical))
}

/// `expr` with each access to a struct's field (`s.a`, `s['a']['b']`,
/// `get_field(s, 'a')`) replaced by a column of its own, named by the path
/// (see [`LEAF_SEPARATOR`]) and added to `leaves`, whose min/max the
/// granule statistics give (see `plan::prune::GranuleStats`).
fn struct_leaves(expr: Expr, schema: &Schema, leaves: &mut Vec<Field>) -> Result<Expr> {
    let transformed = expr.transform_up(|e| {
        let Expr::ScalarFunction(call) = &e else {
            return Ok(Transformed::no(e));
        };
        let (Some(Expr::Column(column)), Some(Expr::Literal(name, _))) =
            (call.args.first(), call.args.get(1))
        else {
            return Ok(Transformed::no(e));
        };
        let (Some(name), 2, "get_field") = (skipping::text(name), call.args.len(), call.name())
        else {
            return Ok(Transformed::no(e));
        };
        let parent = schema
            .field_with_name(&column.name)
            .ok()
            .or_else(|| leaves.iter().find(|f| f.name() == &column.name));
        let Some(DataType::Struct(fields)) = parent.map(|f| f.data_type()) else {
            return Ok(Transformed::no(e));
        };
        let Some(field) = fields.iter().find(|f| f.name() == name) else {
            return Ok(Transformed::no(e));
        };
        let leaf = format!("{}{LEAF_SEPARATOR}{name}", column.name);
        // A name holding the separator would make the path ambiguous.
        if name.contains(LEAF_SEPARATOR) || schema.field_with_name(&leaf).is_ok() {
            return Ok(Transformed::no(e));
        }
        if !leaves.iter().any(|f| f.name() == &leaf) {
            leaves.push(Field::new(&leaf, field.data_type().clone(), true));
        }
        Ok(Transformed::yes(Expr::Column(Column::new(
            column.relation.clone(),
            leaf,
        ))))
    })?;
    Ok(transformed.data)
}
