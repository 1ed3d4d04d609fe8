//! A query's filters as one column's [`SkipCondition`]. Only forms a skip
//! index can decide prune: `col = literal`, `col IN (literals)`, and for
//! token indexes `col = literal` and `col LIKE pattern` through the whole
//! words of the pattern, under AND and OR; anything else is "may match".

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use crate::index::skip::{SkipCondition, SkipSpec, hash_token, tokens, value_hashes};

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

    /// What `column = value` requires.
    fn equals(&self, value: &ScalarValue) -> SkipCondition {
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

fn text(value: &ScalarValue) -> Option<&str> {
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
