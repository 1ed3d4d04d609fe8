//! A query's filters as one column's [`SkipCondition`]. Only forms a skip
//! index can decide prune: `col = literal`, `col IN (literals)`, for
//! token indexes `col = literal` and `col LIKE pattern` through the whole
//! words of the pattern, and for list columns (whose index holds their
//! elements) `array_has`, `array_has_any`, `array_has_all` and `col =
//! list`, under AND and OR; anything else is "may match".

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use crate::index::skip::{SkipCondition, SkipSpec, hash_token, list_element, tokens, value_hashes};

/// What `filters` (a conjunction) require of `column`, for its skip index `spec`.
pub fn condition(
    filters: &[Expr],
    column: &str,
    data_type: &DataType,
    spec: &SkipSpec,
) -> SkipCondition {
    let translator = Translator {
        column,
        data_type,
        token: spec.is_token(),
    };
    SkipCondition::And(filters.iter().map(|f| translator.expr(f)).collect())
}

struct Translator<'a> {
    column: &'a str,
    data_type: &'a DataType,
    /// The index holds words, not whole values.
    token: bool,
}

impl Translator<'_> {
    fn expr(&self, expr: &Expr) -> SkipCondition {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And => SkipCondition::And(vec![self.expr(left), self.expr(right)]),
                Operator::Or => SkipCondition::Or(vec![self.expr(left), self.expr(right)]),
                Operator::Eq => match (self.column_of(left), literal(right)) {
                    (true, Some(v)) => self.equals(v),
                    _ => match (self.column_of(right), literal(left)) {
                        (true, Some(v)) => self.equals(v),
                        _ => SkipCondition::Any,
                    },
                },
                _ => SkipCondition::Any,
            },
            Expr::ScalarFunction(call) if list_element(self.data_type).is_some() => {
                self.list_function(call.name(), &call.args)
            }
            Expr::InList(list) if !list.negated && self.column_of(&list.expr) => SkipCondition::Or(
                list.list
                    .iter()
                    .map(|item| match literal(item) {
                        Some(v) => self.equals(v),
                        None => SkipCondition::Any,
                    })
                    .collect(),
            ),
            Expr::Like(like)
                if self.token
                    && !like.negated
                    && !like.case_insensitive
                    && like.escape_char.is_none()
                    && self.column_of(&like.expr) =>
            {
                match literal(&like.pattern).and_then(text) {
                    Some(pattern) => SkipCondition::AllWords(
                        whole_words(pattern).into_iter().map(hash_token).collect(),
                    ),
                    None => SkipCondition::Any,
                }
            }
            _ => SkipCondition::Any,
        }
    }

    fn column_of(&self, expr: &Expr) -> bool {
        matches!(expr, Expr::Column(c) if c.name == self.column)
    }

    /// Whether `expr` is the list column cast to a list whose elements
    /// hold the same values (the coercion `array_has_any(int_list, [..])`
    /// gets): then a needle equals a cast element only if, cast back to
    /// the element type, it equals the element.
    fn column_widened(&self, expr: &Expr) -> bool {
        let Expr::Cast(cast) = expr else {
            return false;
        };
        let (Some(from), Some(to)) = (
            list_element(self.data_type),
            list_element(cast.field.data_type()),
        ) else {
            return false;
        };
        self.column_of(&cast.expr) && same_values(from, to)
    }

    /// What `array_has(column, v)` and its kin require of a list column's
    /// elements.
    fn list_function(&self, name: &str, args: &[Expr]) -> SkipCondition {
        let [list, needle] = args else {
            return SkipCondition::Any;
        };
        if !self.column_of(list) && !self.column_widened(list) {
            return SkipCondition::Any;
        }
        let Some(needle) = literal(needle) else {
            return SkipCondition::Any;
        };
        match name {
            "array_has" => self
                .element_hashes(std::slice::from_ref(needle))
                .map_or(SkipCondition::Any, SkipCondition::AnyValue),
            "array_has_any" | "array_has_all" => {
                let Some(hashes) = list_values(needle).and_then(|v| self.element_hashes(&v)) else {
                    return SkipCondition::Any;
                };
                match name {
                    "array_has_any" => SkipCondition::AnyValue(hashes),
                    _ => SkipCondition::AllWords(hashes),
                }
            }
            _ => SkipCondition::Any,
        }
    }

    /// The hashes of `values` as elements of the list column; `None` when
    /// one is NULL (which the list functions may match to a NULL element,
    /// and the index does not hold) or does not cast to the element type.
    fn element_hashes(&self, values: &[ScalarValue]) -> Option<Vec<u64>> {
        let element = list_element(self.data_type)?;
        let mut hashes = Vec::new();
        for value in values {
            if value.is_null() {
                return None;
            }
            let array = value.cast_to(element).ok()?.to_array().ok()?;
            hashes.extend(value_hashes(array.as_ref()).ok()?.into_iter().flatten());
        }
        Some(hashes)
    }

    /// What `column = value` requires.
    fn equals(&self, value: &ScalarValue) -> SkipCondition {
        if list_element(self.data_type).is_some() {
            // Every non-NULL element of the value is an element of the row.
            return match list_values(value).and_then(|v| self.element_hashes(&v)) {
                Some(hashes) => SkipCondition::AllWords(hashes),
                None => SkipCondition::Any,
            };
        }
        let Ok(value) = value.cast_to(self.data_type) else {
            return SkipCondition::Any;
        };
        if value.is_null() {
            return SkipCondition::Never; // `= NULL` matches no row
        }
        if self.token {
            // Every word of the value is a word of the row.
            return match text(&value) {
                Some(s) => SkipCondition::AllWords(tokens(s).map(hash_token).collect()),
                None => SkipCondition::Any,
            };
        }
        let hash = value
            .to_array()
            .ok()
            .and_then(|array| value_hashes(array.as_ref()).ok())
            .and_then(|hashes| hashes.into_iter().next().flatten());
        match hash {
            Some(h) => SkipCondition::AnyValue(vec![h]),
            None => SkipCondition::Any,
        }
    }
}

fn literal(expr: &Expr) -> Option<&ScalarValue> {
    match expr {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

/// Whether casting `from` to `to` keeps every value distinct and each
/// value of `to` that comes from `from` casts back to where it came from:
/// integer widening, and between string (or binary) representations.
fn same_values(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let signed = |t: &DataType| match t {
        Int8 => Some(8),
        Int16 => Some(16),
        Int32 => Some(32),
        Int64 => Some(64),
        _ => None,
    };
    let unsigned = |t: &DataType| match t {
        UInt8 => Some(8),
        UInt16 => Some(16),
        UInt32 => Some(32),
        UInt64 => Some(64),
        _ => None,
    };
    let string = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    let binary = |t: &DataType| matches!(t, Binary | LargeBinary | BinaryView);
    from == to
        || (string(from) && string(to))
        || (binary(from) && binary(to))
        || match (signed(from), unsigned(from), signed(to), unsigned(to)) {
            (Some(f), _, Some(t), _) => f <= t,
            (_, Some(f), _, Some(t)) => f <= t,
            (_, Some(f), Some(t), _) => f < t,
            _ => false,
        }
}

/// The elements of a list literal.
fn list_values(value: &ScalarValue) -> Option<Vec<ScalarValue>> {
    if value.is_null() {
        return None;
    }
    let array = match value {
        ScalarValue::List(a) => a.value(0),
        ScalarValue::LargeList(a) => a.value(0),
        ScalarValue::FixedSizeList(a) => a.value(0),
        _ => return None,
    };
    (0..array.len())
        .map(|i| ScalarValue::try_from_array(array.as_ref(), i).ok())
        .collect()
}

/// The text of a string literal.
pub(crate) fn text(value: &ScalarValue) -> Option<&str> {
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s),
        _ => None,
    }
}

/// Words of a LIKE pattern that any matching value must contain whole: runs
/// of letters and digits with a separator (not a wildcard, not the pattern's
/// edge) on both sides. In `'%disk error%'` no word qualifies (either could
/// be part of a longer word); in `'% disk error %'` both do.
pub fn whole_words(pattern: &str) -> Vec<&str> {
    let mut words = Vec::new();
    for segment in pattern.split(['%', '_']) {
        let mut parts: Vec<&str> = segment.split(|c: char| !c.is_alphanumeric()).collect();
        // The first and last pieces touch a wildcard or the pattern's edge.
        if parts.len() < 3 {
            continue;
        }
        parts.remove(0);
        parts.pop();
        words.extend(parts.into_iter().filter(|w| !w.is_empty()));
    }
    words
}
