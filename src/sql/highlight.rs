//! `highlight(col, 'query' [, 'options'])`: the value with what the query
//! matched in it marked, in snippets (see `index::text::highlight`).
//!
//! Like `match`, it analyses the value as the column's table says (the
//! analyzer rule gives it its column's [`TextTarget`]); it reads the value,
//! not the index, so it works on any string column and in any place.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::plan_err;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::text::{coerce_text_args, query_arg};
use crate::index::text::highlight::{HighlightOptions, highlight};
use crate::index::text::{Analyzer, DefaultOperator};
use crate::plan::text::strings;
use crate::table::search::TextTarget;

/// `highlight(col, 'query' [, 'options'])`: snippets of the value with its
/// matches marked, NULL for NULL or when nothing matched.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HighlightFunction {
    signature: Signature,
    /// Set by the analyzer rule; until then the column is analysed with
    /// `standard` and the OR operator.
    pub target: Option<TextTarget>,
}

impl Default for HighlightFunction {
    fn default() -> Self {
        HighlightFunction {
            signature: Signature::user_defined(Volatility::Immutable),
            target: None,
        }
    }
}

impl HighlightFunction {
    pub fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(HighlightFunction::default()))
    }

    pub fn targeted(target: TextTarget) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(HighlightFunction {
            target: Some(target),
            ..HighlightFunction::default()
        }))
    }
}

impl ScalarUDFImpl for HighlightFunction {
    fn name(&self) -> &str {
        "highlight"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [column, query] => coerce_text_args("highlight", &[column.clone(), query.clone()]),
            [column, query, options] => {
                let mut types = coerce_text_args("highlight", &[column.clone(), query.clone()])?;
                match options {
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                        types.push(DataType::Utf8);
                        Ok(types)
                    }
                    other => plan_err!(
                        "highlight(column, 'query', 'options') takes options as a string, \
                         not {other}"
                    ),
                }
            }
            _ => plan_err!(
                "highlight(column, 'query' [, 'options']) takes 2 or 3 arguments, not {}",
                arg_types.len()
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (values, query, options) = match args.args.as_slice() {
            [values, query] => (values, query, None),
            [values, query, options] => (values, query, Some(options)),
            _ => {
                return plan_err!(
                    "highlight(column, 'query' [, 'options']) takes 2 or 3 arguments"
                );
            }
        };
        let query = query_arg("highlight", query)?;
        let options = match options {
            None => HighlightOptions::default(),
            Some(options) => {
                let spec = query_arg("highlight", options).map_err(|_| {
                    DataFusionError::Plan(
                        "the options of highlight() must be a constant string".into(),
                    )
                })?;
                HighlightOptions::parse(spec)
                    .map_err(|e| DataFusionError::Plan(format!("highlight(): {e}")))?
            }
        };
        let column = args.arg_fields.first().map_or("?", |f| f.name().as_str());
        let target = self.target.clone().unwrap_or_else(|| TextTarget {
            column: column.to_string(),
            analyzer: Analyzer::Standard,
            operator: DefaultOperator::Or,
        });
        let bound = target.bind(query).map_err(|e| {
            DataFusionError::Plan(format!("highlight({}, '{query}'): {e}", target.column))
        })?;
        let values = values.to_array(args.number_rows)?;
        let Some(strings) = strings(values.as_ref()) else {
            return plan_err!(
                "highlight() needs a text column, not {}",
                values.data_type()
            );
        };
        let result: StringArray = strings
            .map(|v| v.and_then(|v| highlight(&bound, target.analyzer, v, &options)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(result) as ArrayRef))
    }
}
