//! Text search in SQL: `match(col, 'query')`, a predicate, and
//! `bm25(col, 'query')`, a score.
//!
//! Both mean what the column's table says: its analyzer and default
//! operator. The analyzer rule [`TextSearchRule`] finds, for each call,
//! the diagon table column its first argument comes from (through
//! projections, aliases, filters, sorts and joins) and
//!
//! - gives `match` that column's analysis ([`TextTarget`]), so the
//!   predicate answers the same wherever it is evaluated: pushed into the
//!   scan (the text index selects rows; see `plan::text`), or row by row
//!   (analysing each value) anywhere else. On a column of another kind of
//!   table it analyses with `standard` and the OR operator;
//! - turns `bm25` into a column the table's scan computes (a score needs
//!   the snapshot's statistics and the part's index, which only the scan
//!   has): the scan's table gains a column `__diagon_bm25_<n>`, which the
//!   nodes between it and the call pass up. Its value is the row's BM25
//!   score, 0 for a row the query does not match.

use std::any::Any;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::catalog::TableProvider;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue, plan_err};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, Projection, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, SubqueryAlias, TableScan, TableScanBuilder, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

use super::highlight::HighlightFunction;
use super::provider::{DiagonTableProvider, ScoreColumn};
use crate::index::text::{Analyzer, DefaultOperator};
use crate::plan::text::strings;
use crate::table::Table;
use crate::table::search::TextTarget;

/// What the names of score columns start with.
const SCORE_PREFIX: &str = "__diagon_bm25_";

/// The name of the `n`th score column of a query.
pub fn score_column_name(n: usize) -> String {
    format!("{SCORE_PREFIX}{n}")
}

/// `match(col, 'query')`: whether the value matches the query (NULL for
/// NULL).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MatchFunction {
    signature: Signature,
    /// Set by [`TextSearchRule`]; until then the column is analysed with
    /// `standard` and the OR operator.
    pub target: Option<TextTarget>,
}

impl Default for MatchFunction {
    fn default() -> Self {
        MatchFunction {
            signature: Signature::user_defined(Volatility::Immutable),
            target: None,
        }
    }
}

impl MatchFunction {
    pub fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(MatchFunction::default()))
    }

    fn targeted(target: TextTarget) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(MatchFunction {
            target: Some(target),
            ..MatchFunction::default()
        }))
    }
}

/// The string types a text argument may have, or an error naming `function`.
pub(crate) fn coerce_text_args(function: &str, arg_types: &[DataType]) -> Result<Vec<DataType>> {
    let text = |t: &DataType| {
        matches!(
            t,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
        )
    };
    match arg_types {
        [column, query] if text(column) && text(query) => {
            let column = match column {
                DataType::Null => DataType::Utf8,
                other => other.clone(),
            };
            Ok(vec![column, DataType::Utf8])
        }
        [column, query] => plan_err!(
            "{function}(column, 'query') takes a text column and a query string, \
             not {column} and {query}"
        ),
        _ => plan_err!(
            "{function}(column, 'query') takes 2 arguments, not {}",
            arg_types.len()
        ),
    }
}

/// The text of a string scalar.
pub fn scalar_text(value: &ScalarValue) -> Option<&str> {
    match value {
        ScalarValue::Utf8(Some(q))
        | ScalarValue::LargeUtf8(Some(q))
        | ScalarValue::Utf8View(Some(q)) => Some(q),
        _ => None,
    }
}

/// The text of a string literal.
pub fn literal_text(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Literal(value, _) => scalar_text(value),
        _ => None,
    }
}

/// The query argument: a constant string.
pub(crate) fn query_arg<'a>(function: &str, value: &'a ColumnarValue) -> Result<&'a str> {
    match value {
        ColumnarValue::Scalar(value) => scalar_text(value),
        ColumnarValue::Array(_) => None,
    }
    .map_or_else(
        || plan_err!("the query of {function}() must be a constant string"),
        Ok,
    )
}

impl ScalarUDFImpl for MatchFunction {
    fn name(&self) -> &str {
        "match"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_text_args("match", arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ([values, query], [field, _]) = (args.args.as_slice(), args.arg_fields.as_slice())
        else {
            return plan_err!("match(column, 'query') takes 2 arguments");
        };
        let query = query_arg("match", query)?;
        let target = self.target.clone().unwrap_or_else(|| TextTarget {
            column: field.name().clone(),
            analyzer: Analyzer::Standard,
            operator: DefaultOperator::Or,
        });
        let bound = target.bind(query).map_err(|e| {
            DataFusionError::Plan(format!("match({}, '{query}'): {e}", target.column))
        })?;
        let values = values.to_array(args.number_rows)?;
        let Some(strings) = strings(values.as_ref()) else {
            return plan_err!("match() needs a text column, not {}", values.data_type());
        };
        let result: BooleanArray = strings
            .map(|v| v.map(|v| bound.matches(target.analyzer, v)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(result) as ArrayRef))
    }
}

/// `bm25(col, 'query')`: the row's score. Computed by the scan; this
/// function is only reached where [`TextSearchRule`] could not trace the
/// column to a diagon table, and says so.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Bm25Function {
    signature: Signature,
}

impl Default for Bm25Function {
    fn default() -> Self {
        Bm25Function {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Bm25Function {
    pub fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Bm25Function::default()))
    }
}

impl ScalarUDFImpl for Bm25Function {
    fn name(&self) -> &str {
        "bm25"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_text_args("bm25", arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float32)
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(self.name(), DataType::Float32, false)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let column = args.arg_fields.first().map_or("?", |f| f.name().as_str());
        plan_err!("bm25({column}, ...) needs a column of a diagon table with a text index on it")
    }
}

/// Gives `match` calls their column's analysis and turns `bm25` calls into
/// scan columns (see the module's documentation).
#[derive(Debug, Default)]
pub struct TextSearchRule;

impl AnalyzerRule for TextSearchRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        // Names continue after any score a scan already computes (a plan
        // analysed again).
        let mut next = 0;
        plan.apply(|node| {
            for field in node.schema().fields() {
                if let Some(n) = field.name().strip_prefix(SCORE_PREFIX) {
                    next = next.max(n.parse::<usize>().map_or(0, |n| n + 1));
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        rewrite(plan, Vec::new(), &mut next)
    }

    fn name(&self) -> &str {
        "diagon_text_search"
    }
}

/// A score a node's parent needs from it: the score of `column` (in the
/// node's output) for `query`, as the output column (`column`'s
/// qualifier, `name`).
#[derive(Debug, Clone)]
struct Want {
    column: Column,
    query: String,
    name: String,
}

impl Want {
    fn output(&self) -> Column {
        Column::new(self.column.relation.clone(), &self.name)
    }
}

/// Rewrites `plan` so that it outputs its columns and every score in
/// `wants`, and nothing else: score columns its own calls read pass
/// through it (a sort by a score) but stop there.
fn rewrite(plan: LogicalPlan, wants: Vec<Want>, next: &mut usize) -> Result<LogicalPlan> {
    let mut expected = plan.schema().columns();
    expected.extend(wants.iter().map(Want::output));
    let rewritten = rewrite_node(plan, wants, next)?;
    if rewritten.schema().fields().len() == expected.len() {
        return Ok(rewritten);
    }
    let exprs = expected.into_iter().map(Expr::Column).collect();
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs,
        Arc::new(rewritten),
    )?))
}

/// [`rewrite`] of one node, which may output more than asked.
fn rewrite_node(plan: LogicalPlan, wants: Vec<Want>, next: &mut usize) -> Result<LogicalPlan> {
    if let LogicalPlan::Dml(dml) = &plan
        && calls_bm25(&plan)?
    {
        return plan_err!(
            "bm25() cannot be used in {} on '{}'; match() can",
            dml.op,
            dml.table_name
        );
    }
    let plan = plan
        .map_subqueries(|sub| rewrite(sub, Vec::new(), next).map(Transformed::yes))?
        .data;
    // This node's own calls, as wants on its inputs.
    let inputs: Vec<LogicalPlan> = plan.inputs().into_iter().cloned().collect();
    let preserver = NamePreserver::new(&plan);
    let mut own: Vec<Want> = Vec::new();
    let mut exprs = Vec::new();
    for expr in plan.expressions() {
        let saved = preserver.save(&expr);
        let rewritten = expr
            .transform_up(|e| call(e, &inputs, &mut own, next))?
            .data;
        exprs.push(saved.restore(rewritten));
    }
    if let LogicalPlan::TableScan(scan) = plan {
        return scan_with_scores(scan, wants);
    }
    // The parent's wants, passed through this node.
    let (mut input_wants, extra) = through(&plan, &inputs, wants)?;
    for want in own {
        let i = input_of(&inputs, &want.column).ok_or_else(|| {
            DataFusionError::Plan(format!("bm25(): no column {} below", want.column))
        })?;
        input_wants[i].push(want);
    }
    let new_inputs = inputs
        .into_iter()
        .zip(input_wants)
        .map(|(input, wants)| rewrite(input, wants, next))
        .collect::<Result<Vec<_>>>()?;
    match plan {
        LogicalPlan::SubqueryAlias(SubqueryAlias { alias, .. }) => {
            let input = new_inputs.into_iter().next().expect("one input");
            Ok(LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(
                Arc::new(input),
                alias,
            )?))
        }
        LogicalPlan::Projection(_) => {
            exprs.extend(extra);
            let input = new_inputs.into_iter().next().expect("one input");
            Ok(LogicalPlan::Projection(Projection::try_new(
                exprs,
                Arc::new(input),
            )?))
        }
        _ => plan.with_new_exprs(exprs, new_inputs),
    }
}

/// Whether `plan` or anything below it calls `bm25`.
fn calls_bm25(plan: &LogicalPlan) -> Result<bool> {
    plan.exists(|node| {
        Ok(node.expressions().iter().any(|e| {
            e.exists(|e| {
                Ok(matches!(e, Expr::ScalarFunction(f)
                    if f.func.inner().downcast_ref::<Bm25Function>().is_some()))
            })
            .unwrap_or(false)
        }))
    })
}

/// Which of `inputs` has `column`.
fn input_of(inputs: &[LogicalPlan], column: &Column) -> Option<usize> {
    inputs.iter().position(|i| i.schema().has_column(column))
}

/// The parent's `wants` of `plan` as wants of each of its inputs, and the
/// expressions a projection must add to output them.
fn through(
    plan: &LogicalPlan,
    inputs: &[LogicalPlan],
    wants: Vec<Want>,
) -> Result<(Vec<Vec<Want>>, Vec<Expr>)> {
    let mut per_input = vec![Vec::new(); inputs.len()];
    let mut extra = Vec::new();
    if wants.is_empty() {
        return Ok((per_input, extra));
    }
    match plan {
        LogicalPlan::Projection(Projection { expr, schema, .. }) => {
            for want in wants {
                let i = schema.index_of_column(&want.column)?;
                let Expr::Column(source) = expr[i].clone().unalias_nested().data else {
                    return plan_err!(
                        "bm25(): {} is computed here, not a column of a diagon table",
                        want.column
                    );
                };
                let input_want = Want {
                    column: source,
                    query: want.query.clone(),
                    name: want.name.clone(),
                };
                extra.push(
                    Expr::Column(input_want.output())
                        .alias_qualified(want.column.relation.clone(), &want.name),
                );
                per_input[0].push(input_want);
            }
        }
        LogicalPlan::SubqueryAlias(_) => {
            let input = inputs[0].schema();
            for want in wants {
                let (qualifier, _) =
                    input.qualified_field_with_unqualified_name(&want.column.name)?;
                per_input[0].push(Want {
                    column: Column::new(qualifier.cloned(), &want.column.name),
                    ..want
                });
            }
        }
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::Window(_)
        | LogicalPlan::Join(_) => {
            for want in wants {
                let Some(i) = input_of(inputs, &want.column) else {
                    return plan_err!("bm25(): no column {} below", want.column);
                };
                per_input[i].push(want);
            }
        }
        other => {
            return plan_err!(
                "bm25() over {} cannot be computed through a {} node; compute it \
                 in the query that scans the table",
                wants[0].column,
                other.display()
            );
        }
    }
    Ok((per_input, extra))
}

/// Rewrites one expression node: a `match` call gets its target, a `bm25`
/// call becomes its score column (recorded in `wants`).
fn call(
    expr: Expr,
    inputs: &[LogicalPlan],
    wants: &mut Vec<Want>,
    next: &mut usize,
) -> Result<Transformed<Expr>> {
    let Expr::ScalarFunction(ScalarFunction { func, args }) = &expr else {
        return Ok(Transformed::no(expr));
    };
    let Some(column_arg_expr) = args.first() else {
        return Ok(Transformed::no(expr));
    };
    // match and highlight analyse as the column's table says.
    let targeted = match func.inner() {
        f if f
            .downcast_ref::<MatchFunction>()
            .is_some_and(|m| m.target.is_none()) =>
        {
            Some(MatchFunction::targeted as fn(TextTarget) -> Arc<ScalarUDF>)
        }
        f if f
            .downcast_ref::<HighlightFunction>()
            .is_some_and(|h| h.target.is_none()) =>
        {
            Some(HighlightFunction::targeted as fn(TextTarget) -> Arc<ScalarUDF>)
        }
        _ => None,
    };
    if let Some(targeted) = targeted {
        let Some(target) = column_arg(column_arg_expr).and_then(|c| match_target(inputs, c)) else {
            return Ok(Transformed::no(expr));
        };
        let args = args.clone();
        return Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction {
            func: targeted(target),
            args,
        })));
    }
    let ([_, query], Some(_)) = (args.as_slice(), func.inner().downcast_ref::<Bm25Function>())
    else {
        return Ok(Transformed::no(expr));
    };
    let Some(column) = column_arg(column_arg_expr) else {
        return plan_err!(
            "bm25(): the first argument must be a column of a diagon table with a text \
             index, not {column_arg_expr}"
        );
    };
    let Some(query) = literal_text(query).map(str::to_string) else {
        return plan_err!("the query of bm25() must be a constant string, not {query}");
    };
    // The same score asked for twice is computed once.
    if let Some(known) = wants
        .iter()
        .find(|w| w.column == *column && w.query == query)
    {
        return Ok(Transformed::yes(Expr::Column(known.output())));
    }
    if input_of(inputs, column).is_none() {
        return plan_err!("bm25(): no column {column} below");
    }
    let want = Want {
        column: column.clone(),
        query,
        name: score_column_name(*next),
    };
    *next += 1;
    let output = Expr::Column(want.output());
    wants.push(want);
    Ok(Transformed::yes(output))
}

fn column_arg(expr: &Expr) -> Option<&Column> {
    match expr {
        Expr::Column(c) => Some(c),
        Expr::Cast(cast) => column_arg(&cast.expr),
        _ => None,
    }
}

/// The analysis of the diagon table column `column` comes from, found
/// through `inputs`.
fn match_target(inputs: &[LogicalPlan], column: &Column) -> Option<TextTarget> {
    let input = &inputs[input_of(inputs, column)?];
    let (table, name) = origin(input, column)?;
    let options = table.cached_snapshot().options.clone();
    let text = &options.text;
    Some(TextTarget {
        analyzer: text
            .indexes
            .get(&name)
            .copied()
            .unwrap_or(Analyzer::Standard),
        column: name,
        operator: text.default_operator,
    })
}

/// The diagon table and column that `column` of `plan`'s output is.
fn origin(plan: &LogicalPlan, column: &Column) -> Option<(Arc<Table>, String)> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            scan.projected_schema.index_of_column(column).ok()?;
            let provider = source_as_provider(&scan.source).ok()?;
            let diagon = (provider.as_ref() as &dyn Any).downcast_ref::<DiagonTableProvider>()?;
            Some((diagon.table().clone(), column.name.clone()))
        }
        LogicalPlan::SubqueryAlias(alias) => {
            let (qualifier, _) = alias
                .input
                .schema()
                .qualified_field_with_unqualified_name(&column.name)
                .ok()?;
            origin(&alias.input, &Column::new(qualifier.cloned(), &column.name))
        }
        LogicalPlan::Projection(projection) => {
            let i = projection.schema.index_of_column(column).ok()?;
            match projection.expr[i].clone().unalias_nested().data {
                Expr::Column(source) => origin(&projection.input, &source),
                _ => None,
            }
        }
        // The first input that is a diagon table's column decides.
        LogicalPlan::Union(union) => {
            let i = union.schema.index_of_column(column).ok()?;
            union.inputs.iter().find_map(|input| {
                let (qualifier, field) = input.schema().qualified_field(i);
                origin(input, &Column::new(qualifier.cloned(), field.name()))
            })
        }
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::Window(_)
        | LogicalPlan::Distinct(_)
        | LogicalPlan::Join(_)
        | LogicalPlan::Aggregate(_) => {
            let inputs: Vec<LogicalPlan> = plan.inputs().into_iter().cloned().collect();
            let i = input_of(&inputs, column)?;
            origin(&inputs[i], column)
        }
        _ => None,
    }
}

/// `scan` computing the scores `wants` asks of it: its table gains a score
/// column for each, after its columns and any scores it computed before.
fn scan_with_scores(scan: TableScan, wants: Vec<Want>) -> Result<LogicalPlan> {
    if wants.is_empty() {
        return Ok(LogicalPlan::TableScan(scan));
    }
    let provider = source_as_provider(&scan.source)?;
    let Some(diagon) = (provider.as_ref() as &dyn Any).downcast_ref::<DiagonTableProvider>() else {
        return plan_err!(
            "bm25({}, ...) needs a column of a diagon table; '{}' is not one",
            wants[0].column,
            scan.table_name
        );
    };
    let width = diagon.schema().fields().len();
    let mut scores = diagon.score_columns().to_vec();
    let mut projection = scan
        .projection
        .clone()
        .unwrap_or_else(|| (0..width).collect());
    for (k, want) in wants.into_iter().enumerate() {
        projection.push(width + k);
        scores.push(ScoreColumn {
            name: want.name,
            column: want.column.name,
            query: want.query,
        });
    }
    let scored = diagon.with_scores(scores)?;
    let scan = TableScanBuilder::new(scan.table_name, provider_as_source(Arc::new(scored)))
        .with_projection(Some(projection))
        .with_filters(scan.filters)
        .with_fetch(scan.fetch)
        .build()?;
    Ok(LogicalPlan::TableScan(scan))
}
