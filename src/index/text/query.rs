//! The search query language, Lucene's classic syntax:
//!
//! | syntax | meaning |
//! |---|---|
//! | `wireless headphones` | either term (the default operator; AND by option) |
//! | `a AND b`, `a OR b`, `NOT a`, `a AND NOT b` | boolean operators (upper case); `&&`, `\|\|`, `!` too |
//! | `+a -b c` | `a` required, `b` excluded, `c` optional (it only scores) |
//! | `(a OR b) AND c` | grouping |
//! | `"noise cancelling"`, `"noise cancelling"~2` | a phrase; with slop, words up to 2 moves apart |
//! | `wire*` | terms starting with `wire` |
//! | `headphnes~1`, `headphnes~` | terms within edit distance 1 (`~` alone: 2) |
//! | `title:foo`, `title:"a b"`, `title:(a b)` | a column (when several are indexed) |
//! | `foo^2`, `(a b)^0.5` | a boost of a clause's score |
//! | `\:`, `\"`, ... | a special character taken literally |
//!
//! Precedence: `NOT` binds tighter than `AND`, `AND` tighter than `OR`;
//! clauses written side by side join with the default operator, and `+`/`-`
//! mark a clause required or excluded within its group. The parser keeps
//! the text of terms as written: analysis happens per column when the
//! query is bound to the index. Errors name the character position (from
//! 0) where the query went wrong.

use std::fmt;

use crate::error::{Error, Result};

/// How deep groups and `NOT`s may nest: deeper input is an error, not a
/// stack overflow.
pub const MAX_DEPTH: usize = 64;

/// The largest edit distance a fuzzy term may ask for (as in Lucene).
pub const MAX_EDITS: u8 = 2;

/// How clauses written side by side combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DefaultOperator {
    #[default]
    Or,
    And,
}

impl DefaultOperator {
    /// `or` or `and` (any case), the value of the option `option`.
    pub fn parse(option: &str, value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "or" => Ok(DefaultOperator::Or),
            "and" => Ok(DefaultOperator::And),
            _ => Err(Error::option(
                option,
                format!("'{value}' is neither OR nor AND"),
            )),
        }
    }
}

impl fmt::Display for DefaultOperator {
    /// The value [`DefaultOperator::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DefaultOperator::Or => "or",
            DefaultOperator::And => "and",
        })
    }
}

/// What a clause of a boolean query requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occur {
    /// Must match; scores.
    Must,
    /// May match; scores. A boolean query of only `Should` clauses needs
    /// one of them to match.
    Should,
    /// Must not match.
    MustNot,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// One word as written (analysis may make it several terms).
    Term {
        column: Option<String>,
        text: String,
    },
    /// Words that must appear in order, at most `slop` moves apart.
    Phrase {
        column: Option<String>,
        text: String,
        slop: u32,
    },
    /// Terms starting with `prefix` (as written, before analysis).
    Prefix {
        column: Option<String>,
        prefix: String,
    },
    /// Terms within `edits` edits of `text`.
    Fuzzy {
        column: Option<String>,
        text: String,
        edits: u8,
    },
    Boolean(Vec<(Occur, Query)>),
    /// `query`'s score multiplied by `boost`.
    Boost {
        query: Box<Query>,
        boost: f32,
    },
}

impl Query {
    /// Parses `text` (see the module comment), joining clauses side by side
    /// with `default`.
    pub fn parse(text: &str, default: DefaultOperator) -> Result<Query> {
        let tokens = lex(text)?;
        let mut parser = Parser {
            tokens,
            next: 0,
            default,
            depth: 0,
            end: text.chars().count(),
        };
        if parser.tokens.is_empty() {
            return Err(error(0, "the query is empty"));
        }
        let query = parser.or_expr(None)?;
        match parser.peek() {
            None => Ok(query),
            Some((at, Lexeme::Close)) => Err(error(*at, "')' without a matching '('")),
            Some((at, lexeme)) => Err(error(*at, format!("unexpected {lexeme}"))),
        }
    }
}

impl fmt::Display for Query {
    /// The query in the syntax [`Query::parse`] reads back (with the OR
    /// default): groups in parentheses with `+`/`-` marks, specials escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let column = |f: &mut fmt::Formatter<'_>, column: &Option<String>| match column {
            Some(c) => write!(f, "{}:", escape_word(c)),
            None => Ok(()),
        };
        match self {
            Query::Term { column: c, text } => {
                column(f, c)?;
                f.write_str(&escape_word(text))
            }
            Query::Phrase {
                column: c,
                text,
                slop,
            } => {
                column(f, c)?;
                let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
                write!(f, "\"{escaped}\"")?;
                match slop {
                    0 => Ok(()),
                    n => write!(f, "~{n}"),
                }
            }
            Query::Prefix { column: c, prefix } => {
                column(f, c)?;
                write!(f, "{}*", escape_word(prefix))
            }
            Query::Fuzzy {
                column: c,
                text,
                edits,
            } => {
                column(f, c)?;
                write!(f, "{}~{edits}", escape_word(text))
            }
            Query::Boolean(clauses) => {
                f.write_str("(")?;
                for (i, (occur, query)) in clauses.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    match occur {
                        Occur::Must => f.write_str("+")?,
                        Occur::MustNot => f.write_str("-")?,
                        Occur::Should => {}
                    }
                    write!(f, "{query}")?;
                }
                f.write_str(")")
            }
            Query::Boost { query, boost } => match query.as_ref() {
                Query::Boost { .. } => write!(f, "({query})^{boost}"),
                _ => write!(f, "{query}^{boost}"),
            },
        }
    }
}

/// `word` with what the lexer would read as syntax escaped.
fn escape_word(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    let last = word.chars().count().saturating_sub(1);
    for (i, c) in word.chars().enumerate() {
        let special = is_special(c)
            || (i == 0 && matches!(c, '+' | '-' | '!' | '&' | '|'))
            || (i == last && c == '*')
            || (i == 0 && matches!(word, "AND" | "OR" | "NOT"));
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn error(at: usize, message: impl fmt::Display) -> Error {
    Error::Query {
        at,
        reason: message.to_string(),
    }
}

/// The pieces of a query's text, each with the position it starts at.
#[derive(Debug, Clone, PartialEq)]
enum Lexeme {
    /// A word, unescaped; `star` when it ended in an unescaped `*`.
    Word {
        text: String,
        star: bool,
    },
    Quoted(String),
    Open,
    Close,
    Plus,
    Minus,
    Colon,
    /// `^` and the number after it.
    Caret(String),
    /// `~` and the number after it, if any.
    Tilde(Option<String>),
    And,
    Or,
    Not,
}

impl fmt::Display for Lexeme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lexeme::Word { text, .. } => write!(f, "'{text}'"),
            Lexeme::Quoted(_) => f.write_str("a phrase"),
            Lexeme::Open => f.write_str("'('"),
            Lexeme::Close => f.write_str("')'"),
            Lexeme::Plus => f.write_str("'+'"),
            Lexeme::Minus => f.write_str("'-'"),
            Lexeme::Colon => f.write_str("':'"),
            Lexeme::Caret(_) => f.write_str("'^'"),
            Lexeme::Tilde(_) => f.write_str("'~'"),
            Lexeme::And => f.write_str("AND"),
            Lexeme::Or => f.write_str("OR"),
            Lexeme::Not => f.write_str("NOT"),
        }
    }
}

/// Characters that end a word unless escaped.
fn is_special(c: char) -> bool {
    matches!(c, '(' | ')' | '"' | ':' | '^' | '~' | '\\') || c.is_whitespace()
}

fn lex(text: &str) -> Result<Vec<(usize, Lexeme)>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let (lexeme, next) = match operator(&chars, i) {
            Some(found) => found,
            None => match chars[i] {
                '^' | '~' => suffix(&chars, i),
                '"' => quoted(&chars, i)?,
                _ => word(&chars, i)?,
            },
        };
        out.push((i, lexeme));
        i = next;
    }
    Ok(out)
}

/// A one- or two-character operator at `i`, and where the text goes on.
fn operator(chars: &[char], i: usize) -> Option<(Lexeme, usize)> {
    let lexeme = match chars[i] {
        '(' => Lexeme::Open,
        ')' => Lexeme::Close,
        ':' => Lexeme::Colon,
        '+' => Lexeme::Plus,
        '-' => Lexeme::Minus,
        '!' => Lexeme::Not,
        '&' if chars.get(i + 1) == Some(&'&') => return Some((Lexeme::And, i + 2)),
        '|' if chars.get(i + 1) == Some(&'|') => return Some((Lexeme::Or, i + 2)),
        _ => return None,
    };
    Some((lexeme, i + 1))
}

/// `^` or `~` at `i` with the number that follows (digits and dots).
fn suffix(chars: &[char], i: usize) -> (Lexeme, usize) {
    let end = (i + 1..chars.len())
        .find(|&j| !(chars[j].is_ascii_digit() || chars[j] == '.'))
        .unwrap_or(chars.len());
    let number: String = chars[i + 1..end].iter().collect();
    let lexeme = match chars[i] {
        '^' => Lexeme::Caret(number),
        _ => Lexeme::Tilde((!number.is_empty()).then_some(number)),
    };
    (lexeme, end)
}

/// The phrase whose `"` is at `i`, unescaped.
fn quoted(chars: &[char], i: usize) -> Result<(Lexeme, usize)> {
    let mut phrase = String::new();
    let mut j = i + 1;
    loop {
        match chars.get(j) {
            None => return Err(error(i, "a phrase without its closing '\"'")),
            Some('"') => return Ok((Lexeme::Quoted(phrase), j + 1)),
            Some('\\') => {
                phrase.push(escaped(chars, j)?);
                j += 2;
            }
            Some(&other) => {
                phrase.push(other);
                j += 1;
            }
        }
    }
}

/// The character a `\` at `i` escapes.
fn escaped(chars: &[char], i: usize) -> Result<char> {
    chars
        .get(i + 1)
        .copied()
        .ok_or_else(|| error(i, "'\\' at the end of the query"))
}

/// The word starting at `i`: an operator keyword (unless escaped), or a
/// term, a trailing unescaped `*` making it a prefix.
fn word(chars: &[char], i: usize) -> Result<(Lexeme, usize)> {
    let mut word = String::new();
    let (mut star, mut any_escape) = (false, false);
    let mut j = i;
    while j < chars.len() && (!is_special(chars[j]) || chars[j] == '\\') {
        if chars[j] == '\\' {
            word.push(escaped(chars, j)?);
            (star, any_escape) = (false, true);
            j += 2;
        } else {
            star = chars[j] == '*';
            word.push(chars[j]);
            j += 1;
        }
    }
    let lexeme = match word.as_str() {
        "AND" if !any_escape => Lexeme::And,
        "OR" if !any_escape => Lexeme::Or,
        "NOT" if !any_escape => Lexeme::Not,
        _ => {
            if star {
                word.pop();
            }
            Lexeme::Word { text: word, star }
        }
    };
    Ok((lexeme, j))
}

struct Parser {
    tokens: Vec<(usize, Lexeme)>,
    next: usize,
    default: DefaultOperator,
    depth: usize,
    /// The query's length in characters: where "the end" is.
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&(usize, Lexeme)> {
        self.tokens.get(self.next)
    }

    fn position(&self) -> usize {
        self.peek().map_or(self.end, |(at, _)| *at)
    }

    fn take(&mut self) -> Option<(usize, Lexeme)> {
        let token = self.tokens.get(self.next).cloned();
        self.next += 1;
        token
    }

    fn eat(&mut self, lexeme: &Lexeme) -> bool {
        let matches = self.peek().is_some_and(|(_, l)| l == lexeme);
        if matches {
            self.next += 1;
        }
        matches
    }

    /// Whether the next token can start a clause.
    fn at_clause(&self) -> bool {
        matches!(
            self.peek(),
            Some((
                _,
                Lexeme::Word { .. }
                    | Lexeme::Quoted(_)
                    | Lexeme::Open
                    | Lexeme::Plus
                    | Lexeme::Minus
                    | Lexeme::Not
            ))
        )
    }

    /// `and_expr (OR and_expr)*`; clauses side by side join here when the
    /// default operator is OR.
    fn or_expr(&mut self, column: Option<&str>) -> Result<Query> {
        let mut clauses = vec![self.and_expr(column)?];
        loop {
            let joined = self.default == DefaultOperator::Or && self.at_clause();
            if !(self.eat(&Lexeme::Or) || joined) {
                break;
            }
            clauses.push(self.and_expr(column)?);
        }
        Ok(resolve(combine(clauses, Occur::Should)))
    }

    /// `unary (AND unary)*`; clauses side by side join here when the
    /// default operator is AND.
    fn and_expr(&mut self, column: Option<&str>) -> Result<(Occur, Query)> {
        let mut clauses = vec![self.unary(column)?];
        loop {
            let joined = self.default == DefaultOperator::And && self.at_clause();
            if !(self.eat(&Lexeme::And) || joined) {
                break;
            }
            clauses.push(self.unary(column)?);
        }
        Ok(combine(clauses, Occur::Must))
    }

    /// `NOT unary | + clause | - clause | clause`, as (occur, query).
    fn unary(&mut self, column: Option<&str>) -> Result<(Occur, Query)> {
        let at = self.position();
        let occur = match self.peek() {
            Some((_, Lexeme::Not)) => Some(Occur::MustNot),
            Some((_, Lexeme::Minus)) => Some(Occur::MustNot),
            Some((_, Lexeme::Plus)) => Some(Occur::Must),
            _ => None,
        };
        let Some(occur) = occur else {
            return Ok((Occur::Should, self.clause(column)?));
        };
        self.next += 1;
        self.enter(at)?;
        let inner = match self.peek() {
            Some((_, Lexeme::Not | Lexeme::Minus | Lexeme::Plus)) => resolve(self.unary(column)?),
            _ => self.clause(column)?,
        };
        self.depth -= 1;
        Ok((occur, inner))
    }

    fn enter(&mut self, at: usize) -> Result<()> {
        self.depth += 1;
        match self.depth > MAX_DEPTH {
            true => Err(error(at, format!("nested deeper than {MAX_DEPTH}"))),
            false => Ok(()),
        }
    }

    /// `[column:] atom [^boost]`.
    fn clause(&mut self, column: Option<&str>) -> Result<Query> {
        let column_here = match (self.peek(), self.tokens.get(self.next + 1)) {
            (Some((at, Lexeme::Word { text, star: false })), Some((_, Lexeme::Colon))) => {
                if text.is_empty() {
                    return Err(error(*at, "an empty column name"));
                }
                let name = text.clone();
                self.next += 2;
                Some(name)
            }
            (Some((at, Lexeme::Colon)), _) => return Err(error(*at, "':' without a column name")),
            _ => None,
        };
        let column = column_here.as_deref().or(column);
        let query = self.atom(column)?;
        self.boost(query)
    }

    fn atom(&mut self, column: Option<&str>) -> Result<Query> {
        let at = self.position();
        let column_owned = column.map(str::to_string);
        match self.take() {
            Some((_, Lexeme::Word { text, star })) => {
                if text.is_empty() {
                    return match star {
                        true => Err(error(at, "'*' needs a prefix before it")),
                        false => Err(error(at, "an empty term")),
                    };
                }
                if star {
                    return Ok(Query::Prefix {
                        column: column_owned,
                        prefix: text,
                    });
                }
                match self.peek() {
                    Some((tilde_at, Lexeme::Tilde(number))) => {
                        let edits = fuzzy_edits(*tilde_at, number.as_deref())?;
                        self.next += 1;
                        Ok(Query::Fuzzy {
                            column: column_owned,
                            text,
                            edits,
                        })
                    }
                    _ => Ok(Query::Term {
                        column: column_owned,
                        text,
                    }),
                }
            }
            Some((_, Lexeme::Quoted(text))) => {
                let slop = match self.peek() {
                    Some((tilde_at, Lexeme::Tilde(number))) => {
                        let slop = phrase_slop(*tilde_at, number.as_deref())?;
                        self.next += 1;
                        slop
                    }
                    _ => 0,
                };
                Ok(Query::Phrase {
                    column: column_owned,
                    text,
                    slop,
                })
            }
            Some((_, Lexeme::Open)) => {
                self.enter(at)?;
                if self.peek().is_some_and(|(_, l)| *l == Lexeme::Close) {
                    return Err(error(at, "an empty group '()'"));
                }
                let inner = self.or_expr(column)?;
                if !self.eat(&Lexeme::Close) {
                    return Err(error(at, "'(' without its closing ')'"));
                }
                self.depth -= 1;
                Ok(inner)
            }
            Some((_, lexeme)) => Err(error(at, format!("expected a term, found {lexeme}"))),
            None => Err(error(at, "the query ends where a term was expected")),
        }
    }

    fn boost(&mut self, query: Query) -> Result<Query> {
        let Some((at, Lexeme::Caret(number))) = self.peek().cloned() else {
            return Ok(query);
        };
        self.next += 1;
        let boost: f32 = number
            .parse()
            .ok()
            .filter(|b: &f32| b.is_finite() && *b >= 0.0)
            .ok_or_else(|| error(at, "'^' needs a boost, a number such as 2 or 0.5"))?;
        Ok(Query::Boost {
            query: Box::new(query),
            boost,
        })
    }
}

fn fuzzy_edits(at: usize, number: Option<&str>) -> Result<u8> {
    let Some(number) = number else {
        return Ok(MAX_EDITS);
    };
    match number.parse::<u8>() {
        Ok(edits) if edits <= MAX_EDITS => Ok(edits),
        _ => Err(error(
            at,
            format!("a fuzzy term allows 0 to {MAX_EDITS} edits, not '{number}'"),
        )),
    }
}

fn phrase_slop(at: usize, number: Option<&str>) -> Result<u32> {
    number
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| error(at, "a phrase's '~' needs a slop, a whole number such as 2"))
}

/// One clause alone is itself (unless it carries an occur that matters);
/// several form a boolean query, each plain clause taking `plain`.
fn combine(clauses: Vec<(Occur, Query)>, plain: Occur) -> (Occur, Query) {
    let mut clauses = clauses;
    if clauses.len() == 1 {
        return clauses.pop().expect("one clause");
    }
    let mut out = Vec::with_capacity(clauses.len());
    for (occur, query) in clauses {
        let occur = match occur {
            Occur::Should => plain,
            other => other,
        };
        out.push((occur, query));
    }
    (Occur::Should, Query::Boolean(out))
}

/// A clause as a query of its own: an excluded one becomes a boolean
/// query of that one clause (which matches what does not match it).
fn resolve((occur, query): (Occur, Query)) -> Query {
    match occur {
        Occur::Should | Occur::Must => query,
        Occur::MustNot => Query::Boolean(vec![(Occur::MustNot, query)]),
    }
}
