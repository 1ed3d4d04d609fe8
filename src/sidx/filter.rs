//! Tag filters: equality, membership and int64 ranges over tags, combined
//! with AND and OR, as DataFusion expressions. The same expressions prune
//! granules (min/max of int tags, the bloom or set index of the others,
//! list elements) and filter rows.
//!
//! On a list tag, `Eq` and `In` match a row whose list holds the value
//! (any of the values): `array_has` and `array_has_any`. A row lacking the
//! tag (NULL) matches no condition on it, nor does a tag never written.

use arrow::datatypes::{DataType, Schema};
use datafusion::common::{Column, ScalarValue};
use datafusion::functions_nested::expr_fn::{array_has, array_has_any, make_array};
use datafusion::logical_expr::{Expr, lit};

use super::element::{TagType, TagValue};
use crate::error::{Error, Result};

/// A condition on tags.
#[derive(Debug, Clone, PartialEq)]
pub enum TagFilter {
    /// The tag equals the value (a list tag holds it).
    Eq(String, TagValue),
    /// The tag equals one of the values (a list tag holds one of them).
    In(String, Vec<TagValue>),
    /// An int64 tag within an inclusive range; either bound optional.
    Range {
        tag: String,
        min: Option<i64>,
        max: Option<i64>,
    },
    And(Vec<TagFilter>),
    Or(Vec<TagFilter>),
}

impl TagFilter {
    pub fn eq(tag: impl Into<String>, value: impl Into<TagValue>) -> Self {
        TagFilter::Eq(tag.into(), value.into())
    }

    pub fn is_in(tag: impl Into<String>, values: Vec<TagValue>) -> Self {
        TagFilter::In(tag.into(), values)
    }

    pub fn range(tag: impl Into<String>, min: Option<i64>, max: Option<i64>) -> Self {
        TagFilter::Range {
            tag: tag.into(),
            min,
            max,
        }
    }

    pub fn and(self, other: TagFilter) -> Self {
        TagFilter::And(vec![self, other])
    }

    pub fn or(self, other: TagFilter) -> Self {
        TagFilter::Or(vec![self, other])
    }

    /// The tags the filter names.
    pub fn tags(&self) -> Vec<&str> {
        match self {
            TagFilter::Eq(tag, _) | TagFilter::In(tag, _) | TagFilter::Range { tag, .. } => {
                vec![tag.as_str()]
            }
            TagFilter::And(all) | TagFilter::Or(all) => {
                all.iter().flat_map(TagFilter::tags).collect()
            }
        }
    }

    /// The filter as an expression over the table's columns (`schema`).
    /// Values of the wrong type for their tag are refused, naming both.
    pub fn to_expr(&self, schema: &Schema) -> Result<Expr> {
        match self {
            TagFilter::Eq(tag, value) => {
                let Some((column, t)) = tag_column(schema, tag) else {
                    return Ok(lit(false));
                };
                match list_item(t) {
                    Some(item) => Ok(array_has(column, scalar(tag, item, value)?)),
                    None => Ok(column.eq(scalar(tag, t, value)?)),
                }
            }
            TagFilter::In(tag, values) => {
                let Some((column, t)) = tag_column(schema, tag) else {
                    return Ok(lit(false));
                };
                if values.is_empty() {
                    return Ok(lit(false));
                }
                match list_item(t) {
                    Some(item) => {
                        let items = values
                            .iter()
                            .map(|v| scalar(tag, item, v))
                            .collect::<Result<Vec<_>>>()?;
                        Ok(array_has_any(column, make_array(items)))
                    }
                    None => {
                        let items = values
                            .iter()
                            .map(|v| scalar(tag, t, v))
                            .collect::<Result<Vec<_>>>()?;
                        Ok(column.in_list(items, false))
                    }
                }
            }
            TagFilter::Range { tag, min, max } => {
                if let (Some(min), Some(max)) = (min, max)
                    && min > max
                {
                    return Err(Error::Invalid(format!(
                        "tag '{tag}': range minimum {min} is greater than its maximum {max}"
                    )));
                }
                let Some((column, t)) = tag_column(schema, tag) else {
                    return Ok(lit(false));
                };
                if t != TagType::Int {
                    return Err(Error::Invalid(format!(
                        "tag '{tag}' is {t:?}; a range filter takes an int64 tag"
                    )));
                }
                let mut conditions = vec![column.clone().is_not_null()];
                conditions.extend(min.map(|m| column.clone().gt_eq(lit(m))));
                conditions.extend(max.map(|m| column.clone().lt_eq(lit(m))));
                Ok(conjunction(conditions))
            }
            TagFilter::And(all) => {
                let exprs = all
                    .iter()
                    .map(|f| f.to_expr(schema))
                    .collect::<Result<Vec<_>>>()?;
                Ok(conjunction(exprs))
            }
            TagFilter::Or(any) => {
                let exprs = any
                    .iter()
                    .map(|f| f.to_expr(schema))
                    .collect::<Result<Vec<_>>>()?;
                Ok(exprs.into_iter().reduce(Expr::or).unwrap_or(lit(false)))
            }
        }
    }
}

fn conjunction(exprs: Vec<Expr>) -> Expr {
    exprs.into_iter().reduce(Expr::and).unwrap_or(lit(true))
}

/// The column of tag `tag` and its type, if the table has it.
fn tag_column(schema: &Schema, tag: &str) -> Option<(Expr, TagType)> {
    if super::element::is_reserved(tag) {
        return None;
    }
    let field = schema.field_with_name(tag).ok()?;
    let t = TagType::of(field.data_type())?;
    Some((Expr::Column(Column::new_unqualified(tag)), t))
}

/// The element type of a list tag type.
fn list_item(t: TagType) -> Option<TagType> {
    match t {
        TagType::StrList => Some(TagType::Str),
        TagType::IntList => Some(TagType::Int),
        TagType::BytesList => Some(TagType::Bytes),
        _ => None,
    }
}

/// `value` as a literal of tag type `t` (a list tag's element type).
fn scalar(tag: &str, t: TagType, value: &TagValue) -> Result<Expr> {
    let v = match (t, value) {
        (TagType::Str, TagValue::Str(s)) => ScalarValue::Utf8(Some(s.clone())),
        (TagType::Int, TagValue::Int(n)) => ScalarValue::Int64(Some(*n)),
        (TagType::Bytes, TagValue::Bytes(b)) => ScalarValue::Binary(Some(b.clone())),
        _ => {
            return Err(Error::Invalid(format!(
                "tag '{tag}' holds {} values; the filter compares it with a {:?}",
                type_name(t),
                value.tag_type()
            )));
        }
    };
    Ok(lit(v))
}

fn type_name(t: TagType) -> &'static str {
    match t.data_type() {
        DataType::Utf8 => "string",
        DataType::Int64 => "int64",
        _ => "bytes",
    }
}
