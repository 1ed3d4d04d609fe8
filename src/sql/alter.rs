//! `ALTER TABLE` on diagon tables. DataFusion 55 parses ALTER TABLE but
//! does not plan it, so diagon runs it itself: [`sql`] (what the CLI and
//! the sqllogictest runner call in place of `SessionContext::sql`) takes it
//! before DataFusion does, and the table function `diagon_alter('t', '...')`
//! does the same from any session. Supported, as PostgreSQL and ClickHouse
//! users write them, several per statement, committed as one version:
//!
//! - `ADD [COLUMN] [IF NOT EXISTS] c TYPE [NOT NULL] [DEFAULT expr]`
//! - `DROP [COLUMN] [IF EXISTS] c [, ...]`
//! - `RENAME COLUMN a TO b`
//! - `ALTER [COLUMN] c [SET DATA] TYPE t` (widening only)
//! - `ALTER [COLUMN] c SET DEFAULT expr`, `ALTER [COLUMN] c DROP DEFAULT`
//!
//! An added column's DEFAULT is what later inserts that omit it write, and
//! (evaluated once, now) its value in the rows already in the table.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, ScalarValue, TableReference, plan_err};
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{DdlStatement, Expr, LogicalPlan, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::planner::{IdentNormalizer, object_name_to_table_reference};
use datafusion::sql::sqlparser::ast::{
    AlterColumnOperation, AlterTable, AlterTableOperation, ColumnDef, DataType as SqlType, Ident,
};

use super::catalog::DiagonSchema;
use super::provider::DiagonTableProvider;
use crate::table::alter::SchemaChange;

/// Runs `sql` as `SessionContext::sql` does, and also an `ALTER TABLE`
/// of a diagon table, which DataFusion cannot plan (its result is empty).
pub async fn sql(ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
    match parse_alter(ctx, sql)? {
        Some(alter) => {
            alter_table(ctx, &alter).await?;
            ctx.read_empty()
        }
        None => ctx.sql(sql).await,
    }
}

/// The ALTER TABLE `sql` is, if it is one statement and that.
pub fn parse_alter(ctx: &SessionContext, sql: &str) -> Result<Option<AlterTable>> {
    let state = ctx.state();
    let dialect_name = &state.config().options().sql_parser.dialect;
    let Some(dialect) = datafusion::sql::sqlparser::dialect::dialect_from_str(dialect_name) else {
        return Ok(None);
    };
    // Statements DataFusion's parser rejects are left for it to report.
    let Ok(mut statements) = DFParser::parse_sql_with_dialect(sql, dialect.as_ref()) else {
        return Ok(None);
    };
    if statements.len() != 1 {
        return Ok(None);
    }
    match statements.pop_front() {
        Some(Statement::Statement(statement)) => match *statement {
            datafusion::sql::sqlparser::ast::Statement::AlterTable(alter) => Ok(Some(alter)),
            _ => Ok(None),
        },
        _ => Ok(None),
    }
}

/// Applies `alter` to the diagon table it names; returns the table's new
/// version (its current one when nothing changed, 0 when `IF EXISTS`
/// found no table).
pub async fn alter_table(ctx: &SessionContext, alter: &AlterTable) -> Result<u64> {
    let normalize = ctx
        .state()
        .config()
        .options()
        .sql_parser
        .enable_ident_normalization;
    let reference = object_name_to_table_reference(alter.name.clone(), normalize)?;
    let provider = match ctx.table_provider(reference.clone()).await {
        Ok(provider) => provider,
        Err(_) if alter.if_exists => return Ok(0),
        Err(e) => return Err(e),
    };
    let Some(diagon) =
        (provider.as_ref() as &dyn std::any::Any).downcast_ref::<DiagonTableProvider>()
    else {
        return plan_err!("ALTER TABLE works on diagon tables; '{reference}' is not one");
    };
    let table = diagon.table().clone();
    let names = IdentNormalizer::new(normalize);
    let schema = table.snapshot().await?.schema.clone();
    let mut changes = Vec::new();
    let mut columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    for operation in &alter.operations {
        for change in changes_of(ctx, operation, &names, &columns, &schema).await? {
            track(&mut columns, &change);
            changes.push(change);
        }
    }
    if changes.is_empty() {
        // IF [NOT] EXISTS left nothing to do: no new version.
        return Ok(table.cached_snapshot().version);
    }
    let version = table
        .alter_all(&changes)
        .await
        .map_err(|e| DataFusionError::Plan(e.to_string()))?;
    refresh(ctx, &reference, table)?;
    Ok(version)
}

/// Keeps `columns` (the names so far) current through `change`, so that
/// `IF [NOT] EXISTS` later in the statement sees earlier operations.
fn track(columns: &mut Vec<String>, change: &SchemaChange) {
    match change {
        SchemaChange::AddColumn { field, .. } => columns.push(field.name().clone()),
        SchemaChange::DropColumn { name } => columns.retain(|c| c != name),
        SchemaChange::RenameColumn { from, to } => {
            for c in columns.iter_mut().filter(|c| *c == from) {
                *c = to.clone();
            }
        }
        SchemaChange::SetType { .. } | SchemaChange::SetDefault { .. } => {}
    }
}

/// The changes one ALTER TABLE operation makes.
async fn changes_of(
    ctx: &SessionContext,
    operation: &AlterTableOperation,
    names: &IdentNormalizer,
    columns: &[String],
    schema: &Schema,
) -> Result<Vec<SchemaChange>> {
    let name = |ident: &Ident| names.normalize(ident.clone());
    let exists = |c: &str| columns.iter().any(|n| n == c);
    Ok(match operation {
        AlterTableOperation::AddColumn {
            if_not_exists,
            column_def,
            column_position,
            ..
        } => {
            if column_position.is_some() {
                return plan_err!("ADD COLUMN ... FIRST / AFTER: a new column comes last");
            }
            let (field, default) = column(ctx, column_def).await?;
            if *if_not_exists && exists(field.name()) {
                return Ok(Vec::new());
            }
            let (default, fill) = match default {
                Some((text, value)) => (Some(text), Some(value)),
                None => (None, None),
            };
            vec![SchemaChange::AddColumn {
                field,
                default,
                fill,
            }]
        }
        AlterTableOperation::DropColumn {
            column_names,
            if_exists,
            ..
        } => column_names
            .iter()
            .map(name)
            .filter(|c| !*if_exists || exists(c))
            .map(|name| SchemaChange::DropColumn { name })
            .collect(),
        AlterTableOperation::RenameColumn {
            old_column_name,
            new_column_name,
        } => vec![SchemaChange::RenameColumn {
            from: name(old_column_name),
            to: name(new_column_name),
        }],
        AlterTableOperation::AlterColumn { column_name, op } => {
            let column = name(column_name);
            match op {
                AlterColumnOperation::SetDataType {
                    data_type,
                    using: None,
                    ..
                } => vec![SchemaChange::SetType {
                    data_type: arrow_type(ctx, data_type).await?,
                    column,
                }],
                AlterColumnOperation::SetDefault { value } => {
                    let text = value.to_string();
                    // Checked to evaluate to a value of the column's type.
                    if let Ok(field) = schema.field_with_name(&column) {
                        evaluate(ctx, &text, field).await?;
                    }
                    vec![SchemaChange::SetDefault {
                        column,
                        default: Some(text),
                    }]
                }
                AlterColumnOperation::DropDefault => vec![SchemaChange::SetDefault {
                    column,
                    default: None,
                }],
                other => return plan_err!("ALTER COLUMN {other} is not supported by diagon"),
            }
        }
        other => return plan_err!("ALTER TABLE ... {other} is not supported by diagon"),
    })
}

/// A column definition as DataFusion plans it in a CREATE TABLE: its
/// field, and its DEFAULT as stored SQL text with its value now.
async fn column(
    ctx: &SessionContext,
    def: &ColumnDef,
) -> Result<(Field, Option<(String, ArrayRef)>)> {
    let create = plan_column(ctx, &def.to_string()).await?;
    let field = create.schema.field(0).as_ref().clone();
    let Some((_, expr)) = create.column_defaults.into_iter().next() else {
        return Ok((field, None));
    };
    let text = datafusion::sql::unparser::expr_to_sql(&expr)
        .map_err(|e| DataFusionError::Plan(format!("the default {expr} cannot be stored: {e}")))?
        .to_string();
    let value = evaluate(ctx, &text, &field).await?;
    Ok((field, Some((text, value))))
}

/// The value of a constant expression, as `field`'s type.
async fn evaluate(ctx: &SessionContext, sql: &str, field: &Field) -> Result<ArrayRef> {
    let batches = ctx
        .sql(&format!("SELECT {sql} AS v"))
        .await
        .map_err(|e| DataFusionError::Plan(format!("DEFAULT {sql}: {e}")))?
        .collect()
        .await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() == 1) else {
        return plan_err!("DEFAULT {sql} is not one value");
    };
    // A value that does not fit the column is an error, not a NULL.
    let options = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow::compute::cast_with_options(batch.column(0), field.data_type(), &options).map_err(|e| {
        DataFusionError::Plan(format!("DEFAULT {sql} for column '{}': {e}", field.name()))
    })
}

/// The Arrow type DataFusion gives the SQL type `data_type`.
async fn arrow_type(
    ctx: &SessionContext,
    data_type: &SqlType,
) -> Result<arrow::datatypes::DataType> {
    let create = plan_column(ctx, &format!("c {data_type}")).await?;
    Ok(create.schema.field(0).data_type().clone())
}

/// The one-column CREATE EXTERNAL TABLE DataFusion plans for the column
/// definition `def` (planned only, nothing is created).
async fn plan_column(
    ctx: &SessionContext,
    def: &str,
) -> Result<datafusion::logical_expr::CreateExternalTable> {
    let plan = ctx
        .state()
        .create_logical_plan(&format!(
            "CREATE EXTERNAL TABLE diagon_alter_column ({def}) STORED AS {} LOCATION 'unused'",
            super::FORMAT_NAME
        ))
        .await?;
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)) => Ok(*create),
        _ => plan_err!("column definition {def} did not plan"),
    }
}

/// Gives the session's catalog a provider with the table's new schema.
fn refresh(
    ctx: &SessionContext,
    reference: &TableReference,
    table: Arc<crate::table::Table>,
) -> Result<()> {
    let resolved = reference.clone().resolve(
        &ctx.state().config().options().catalog.default_catalog,
        &ctx.state().config().options().catalog.default_schema,
    );
    let schema = ctx
        .catalog(&resolved.catalog)
        .and_then(|c| c.schema(&resolved.schema))
        .ok_or_else(|| DataFusionError::Plan(format!("no schema for table '{reference}'")))?;
    let provider: Arc<dyn TableProvider> = Arc::new(DiagonTableProvider::new(table));
    if let Some(diagon) = (schema.as_ref() as &dyn std::any::Any).downcast_ref::<DiagonSchema>() {
        diagon.replace(&resolved.table, provider);
        return Ok(());
    }
    schema.deregister_table(&resolved.table)?;
    schema.register_table(resolved.table.to_string(), provider)?;
    Ok(())
}

/// `diagon_alter('t', 'ADD COLUMN c INT, DROP COLUMN d')`: an ALTER TABLE
/// from any session (an embedder's own `SessionContext::sql` cannot plan
/// one), run when the plan executes; it returns the table and its new
/// version.
#[derive(Debug)]
pub struct DiagonAlterFunction;

impl TableFunctionImpl for DiagonAlterFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let text = |e: &Expr| match e {
            Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _) => {
                Some(s.clone())
            }
            _ => None,
        };
        match args.exprs() {
            [table, operations] if text(table).is_some() && text(operations).is_some() => {
                Ok(Arc::new(AlterFunctionTable {
                    table: text(table).unwrap_or_default(),
                    operations: text(operations).unwrap_or_default(),
                }))
            }
            _ => plan_err!(
                "diagon_alter() takes a table name and ALTER TABLE operations as strings, \
                 e.g. diagon_alter('docs', 'ADD COLUMN lang VARCHAR DEFAULT ''en''')"
            ),
        }
    }
}

fn alter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table", ArrowType::Utf8, false),
        Field::new("version", ArrowType::UInt64, false),
    ]))
}

#[derive(Debug)]
struct AlterFunctionTable {
    table: String,
    operations: String,
}

#[async_trait]
impl TableProvider for AlterFunctionTable {
    fn schema(&self) -> SchemaRef {
        alter_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return plan_err!("diagon_alter() needs a DataFusion SessionState");
        };
        let reference = TableReference::from(self.table.as_str());
        let sql = format!(
            "ALTER TABLE {} {}",
            reference.to_quoted_string(),
            self.operations
        );
        let ctx = SessionContext::new_with_state(state.clone());
        let Some(alter) = parse_alter(&ctx, &sql)? else {
            return plan_err!(
                "diagon_alter('{}', '{}'): not ALTER TABLE operations diagon can parse",
                self.table,
                self.operations
            );
        };
        let table = self.table.clone();
        let what = format!("diagon_alter({table}, {alter})");
        super::functions::deferred(alter_schema(), projection, what, move || {
            let (ctx, alter, table) = (ctx.clone(), alter.clone(), table.clone());
            Box::pin(async move {
                let version = alter_table(&ctx, &alter).await?;
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(StringArray::from(vec![table])),
                    Arc::new(UInt64Array::from(vec![version])),
                ];
                Ok(RecordBatch::try_new(alter_schema(), columns)?)
            })
        })
    }
}
