//! Pruning with skip indexes: whether a block of granules may hold rows a
//! query's filters accept, judged from one column's skip index. Only forms
//! the index can decide prune: `col = literal`, `col IN (literals)`, and for
//! token indexes `col = literal` and `col LIKE pattern` through the whole
//! words of the pattern; anything else counts as "may match".

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use crate::part::skip::{Block, SkipKind, hash_scalar, hash_token, tokens};

/// One column's skip index, as a filter evaluator sees it.
pub struct ColumnIndex<'a> {
    pub column: &'a str,
    pub data_type: &'a DataType,
    pub kind: SkipKind,
}

impl ColumnIndex<'_> {
    /// False only if no row of `block` can satisfy every filter.
    pub fn may_match(&self, filters: &[Expr], block: &Block) -> bool {
        filters.iter().all(|f| self.expr(f, block))
    }

    fn expr(&self, expr: &Expr, block: &Block) -> bool {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And => self.expr(left, block) && self.expr(right, block),
                Operator::Or => self.expr(left, block) || self.expr(right, block),
                Operator::Eq => match (self.column_of(left), literal(right)) {
                    (true, Some(v)) => self.equals(v, block),
                    _ => match (self.column_of(right), literal(left)) {
                        (true, Some(v)) => self.equals(v, block),
                        _ => true,
                    },
                },
                _ => true,
            },
            Expr::InList(list) if !list.negated && self.column_of(&list.expr) => {
                list.list.iter().any(|item| match literal(item) {
                    Some(v) => self.equals(v, block),
                    None => true,
                })
            }
            Expr::Like(like)
                if !like.negated
                    && !like.case_insensitive
                    && like.escape_char.is_none()
                    && self.column_of(&like.expr) =>
            {
                match (self.kind, literal(&like.pattern)) {
                    (SkipKind::TokenBloom(_), Some(pattern)) => match text(pattern) {
                        Some(p) => whole_words(p)
                            .iter()
                            .all(|w| block.may_contain(hash_token(w))),
                        None => true,
                    },
                    _ => true,
                }
            }
            _ => true,
        }
    }

    fn column_of(&self, expr: &Expr) -> bool {
        matches!(expr, Expr::Column(c) if c.name == self.column)
    }

    /// Whether a row equal to `value` may be in the block.
    fn equals(&self, value: &ScalarValue, block: &Block) -> bool {
        let Ok(value) = value.cast_to(self.data_type) else {
            return true;
        };
        if value.is_null() {
            return false; // `= NULL` matches no row
        }
        match self.kind {
            SkipKind::TokenBloom(_) => match text(&value) {
                // Every word of the value is a word of the row.
                Some(s) => tokens(s).all(|w| block.may_contain(hash_token(w))),
                None => true,
            },
            _ => hash_scalar(&value).is_none_or(|h| block.may_contain(h)),
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
