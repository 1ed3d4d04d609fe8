//! Highlighting: the parts of a value a query matched, marked, in
//! snippets.
//!
//! A value is analysed as the index analyses it, keeping each token's
//! bytes. Every positive clause of the query (its terms, prefixes, fuzzy
//! words and phrases; not what it excludes) marks what it matched: a
//! term, prefix or fuzzy word its tokens, a phrase each of its occurrences
//! as one span, from its first word to its last (so `"the who"` marks
//! "The Who", and neither word where it stands alone). Overlapping spans
//! merge.
//!
//! Snippets are cut as Lucene's highlighters cut them: windows of about
//! `fragment_size` characters around the marks, widened or narrowed to
//! whole words, ranked by how many different clauses they show (then by
//! how many marks, then by position); the best `fragments` that do not
//! overlap come back in the order of the text, joined by `separator`.
//! With `fragments = 0` the whole value comes back, marked.

use std::collections::HashMap;

use super::analysis::Analyzer;
use super::bound::{Bound, phrase_matches_at, within_edits};
use super::query::Occur;
use crate::error::{Error, Result};

/// How values are marked and cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HighlightOptions {
    /// What goes before and after each mark.
    pub pre_tag: String,
    pub post_tag: String,
    /// How many snippets at most; 0 for the whole value.
    pub fragments: usize,
    /// About how many characters a snippet has (more when a mark alone is
    /// longer).
    pub fragment_size: usize,
    /// What goes between snippets.
    pub separator: String,
}

impl Default for HighlightOptions {
    fn default() -> Self {
        HighlightOptions {
            pre_tag: "<b>".into(),
            post_tag: "</b>".into(),
            fragments: 3,
            fragment_size: 150,
            separator: " … ".into(),
        }
    }
}

impl HighlightOptions {
    /// Options from `key=value` pairs separated by commas, e.g.
    /// `pre_tag=<em>, post_tag=</em>, fragments=2`. A value may be put in
    /// double quotes to keep commas or spaces at its ends
    /// (`separator=" | "`); spaces around an unquoted value are dropped.
    pub fn parse(spec: &str) -> Result<HighlightOptions> {
        let mut options = HighlightOptions::default();
        let mut rest = spec.trim_start();
        while !rest.is_empty() {
            let Some(eq) = rest.find('=') else {
                return Err(Error::option(
                    rest.trim(),
                    "expected key=value (keys: pre_tag, post_tag, fragments, \
                     fragment_size, separator)",
                ));
            };
            let key = rest[..eq].trim();
            let (value, after) = value_of(key, &rest[eq + 1..])?;
            options.set(key, &value)?;
            rest = after.trim_start();
        }
        Ok(options)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let number = |value: &str| {
            value
                .parse::<usize>()
                .map_err(|_| Error::option(key, format!("expected a whole number, got '{value}'")))
        };
        match key {
            "pre_tag" => self.pre_tag = value.to_string(),
            "post_tag" => self.post_tag = value.to_string(),
            "separator" => self.separator = value.to_string(),
            "fragments" => self.fragments = number(value)?,
            "fragment_size" => match number(value)? {
                0 => return Err(Error::option(key, "must be at least 1")),
                n => self.fragment_size = n,
            },
            _ => {
                return Err(Error::option(
                    key,
                    "unknown (keys: pre_tag, post_tag, fragments, fragment_size, separator)",
                ));
            }
        }
        Ok(())
    }
}

/// The value after `key=` and what follows its comma.
fn value_of<'a>(key: &str, text: &'a str) -> Result<(String, &'a str)> {
    let trimmed = text.trim_start();
    if let Some(quoted) = trimmed.strip_prefix('"') {
        let Some(close) = quoted.find('"') else {
            return Err(Error::option(key, "a quoted value has no closing '\"'"));
        };
        let after = quoted[close + 1..].trim_start();
        let after = match after.strip_prefix(',') {
            Some(after) => after,
            None if after.is_empty() => after,
            None => {
                return Err(Error::option(key, "expected ',' after the quoted value"));
            }
        };
        return Ok((quoted[..close].to_string(), after));
    }
    match text.find(',') {
        Some(comma) => Ok((text[..comma].trim().to_string(), &text[comma + 1..])),
        None => Ok((text.trim().to_string(), "")),
    }
}

/// One token of the value: its term, position and bytes.
struct Token {
    term: String,
    position: u32,
    start: usize,
    end: usize,
}

/// Bytes of the value a clause matched.
#[derive(Debug, Clone)]
struct Mark {
    start: usize,
    end: usize,
    /// The positive clauses (by their order in the query) it shows.
    clauses: Vec<usize>,
}

/// `value` with what `bound` matched in it marked and cut as `options`
/// say, or None when the query matched nothing in it.
pub fn highlight(
    bound: &Bound,
    analyzer: Analyzer,
    value: &str,
    options: &HighlightOptions,
) -> Option<String> {
    let mut tokens = Vec::new();
    analyzer.analyze(value, |t| {
        tokens.push(Token {
            term: t.term.to_string(),
            position: t.position,
            start: t.start,
            end: t.end,
        })
    });
    let mut marks = Vec::new();
    let mut clause = 0;
    collect(bound, &tokens, &mut clause, &mut marks);
    let marks = merged(marks);
    if marks.is_empty() {
        return None;
    }
    if options.fragments == 0 {
        return Some(marked(value, 0..value.len(), &marks, options));
    }
    let chosen = fragments(value, &marks, options);
    let snippets: Vec<String> = chosen
        .into_iter()
        .map(|range| marked(value, range, &marks, options))
        .collect();
    Some(snippets.join(&options.separator))
}

/// The marks of every positive clause of `bound`, numbering the clauses
/// from `clause`.
fn collect(bound: &Bound, tokens: &[Token], clause: &mut usize, marks: &mut Vec<Mark>) {
    let id = *clause;
    match bound {
        Bound::Term { term, .. } => token_marks(tokens, id, marks, |t| t == term),
        Bound::Prefix { prefix, .. } => {
            token_marks(tokens, id, marks, |t| t.starts_with(prefix.as_str()))
        }
        Bound::Fuzzy { term, edits, .. } => token_marks(tokens, id, marks, |t| {
            within_edits(term, t, usize::from(*edits))
        }),
        Bound::Phrase { terms, slop, .. } => phrase_marks(terms, *slop, tokens, id, marks),
        Bound::Boolean(clauses) => {
            for (occur, c) in clauses {
                if *occur != Occur::MustNot {
                    collect(c, tokens, clause, marks);
                }
            }
            return;
        }
        Bound::Nothing => return,
    }
    *clause += 1;
}

/// A mark over each token whose term `matches`.
fn token_marks(
    tokens: &[Token],
    clause: usize,
    marks: &mut Vec<Mark>,
    matches: impl Fn(&str) -> bool,
) {
    for t in tokens.iter().filter(|t| matches(&t.term)) {
        marks.push(Mark {
            start: t.start,
            end: t.end,
            clauses: vec![clause],
        });
    }
}

/// A mark over each occurrence of a phrase, from its first token to its
/// last.
fn phrase_marks(
    terms: &[(String, u32)],
    slop: u32,
    tokens: &[Token],
    clause: usize,
    marks: &mut Vec<Mark>,
) {
    let mut positions: HashMap<&str, Vec<u32>> = HashMap::new();
    for t in tokens {
        positions.entry(&t.term).or_default().push(t.position);
    }
    let Some(lists) = terms
        .iter()
        .map(|(t, _)| positions.get(t.as_str()).map(Vec::as_slice))
        .collect::<Option<Vec<&[u32]>>>()
    else {
        return;
    };
    // Tokens by position (n-grams of one start share one).
    let mut at: HashMap<u32, Vec<&Token>> = HashMap::new();
    for t in tokens {
        at.entry(t.position).or_default().push(t);
    }
    for placed in phrase_matches_at(terms, &lists, slop) {
        // The tokens the match placed its terms on.
        let bytes = placed.iter().zip(terms).flat_map(|(p, (term, _))| {
            at.get(p)
                .into_iter()
                .flatten()
                .filter(move |t| t.term == *term)
        });
        let (start, end) = bytes.fold((usize::MAX, 0), |(s, e), t| (s.min(t.start), e.max(t.end)));
        if start < end {
            marks.push(Mark {
                start,
                end,
                clauses: vec![clause],
            });
        }
    }
}

/// `marks` in order, overlapping ones merged.
fn merged(mut marks: Vec<Mark>) -> Vec<Mark> {
    marks.sort_by_key(|m| (m.start, m.end));
    let mut out: Vec<Mark> = Vec::with_capacity(marks.len());
    for mark in marks {
        match out.last_mut() {
            Some(last) if mark.start < last.end => {
                last.end = last.end.max(mark.end);
                for c in mark.clauses {
                    if !last.clauses.contains(&c) {
                        last.clauses.push(c);
                    }
                }
            }
            _ => out.push(mark),
        }
    }
    out
}

/// `value[range]` with the marks inside it tagged.
fn marked(
    value: &str,
    range: std::ops::Range<usize>,
    marks: &[Mark],
    options: &HighlightOptions,
) -> String {
    let mut out = String::with_capacity(range.len() + 16);
    let mut at = range.start;
    for m in marks
        .iter()
        .filter(|m| m.start >= range.start && m.end <= range.end)
    {
        out.push_str(&value[at..m.start]);
        out.push_str(&options.pre_tag);
        out.push_str(&value[m.start..m.end]);
        out.push_str(&options.post_tag);
        at = m.end;
    }
    out.push_str(&value[at..range.end]);
    out
}

/// The byte ranges of the best snippets, in the order of the text.
fn fragments(
    value: &str,
    marks: &[Mark],
    options: &HighlightOptions,
) -> Vec<std::ops::Range<usize>> {
    // Byte offsets of each character, and of the end.
    let chars: Vec<usize> = value
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(value.len()))
        .collect();
    let char_at = |byte: usize| chars.partition_point(|&b| b < byte);
    let space_before = |c: usize| {
        c == 0
            || value[chars[c - 1]..chars[c]]
                .chars()
                .all(char::is_whitespace)
    };
    let space_at = |c: usize| {
        c + 1 >= chars.len()
            || value[chars[c]..chars[c + 1]]
                .chars()
                .all(char::is_whitespace)
    };
    let mut candidates: Vec<(std::ops::Range<usize>, usize, usize)> = Vec::new();
    for mark in marks {
        let (first, last) = (char_at(mark.start), char_at(mark.end));
        let spare = options.fragment_size.saturating_sub(last - first);
        let mut from = first.saturating_sub(spare / 2);
        let mut to = from
            .saturating_add(options.fragment_size)
            .max(last)
            .min(chars.len() - 1);
        if to - from < options.fragment_size {
            from = to.saturating_sub(options.fragment_size).min(first);
        }
        // Whole words: start after a space, end at one.
        while from < first && !space_before(from) {
            from += 1;
        }
        while to > last && !space_at(to) {
            to -= 1;
        }
        let (start, end) = (chars[from], chars[to]);
        // Trimmed of spaces, but never inside its own mark (a `raw` token
        // may hold them).
        let (start, end) = trim(value, start, end);
        let (start, end) = (start.min(mark.start), end.max(mark.end));
        // Marks are sorted and apart: those inside are one run.
        let first_inside = marks.partition_point(|m| m.start < start);
        let inside: Vec<&Mark> = marks[first_inside..]
            .iter()
            .take_while(|m| m.end <= end)
            .collect();
        let mut clauses: Vec<usize> = inside.iter().flat_map(|m| m.clauses.clone()).collect();
        clauses.sort_unstable();
        clauses.dedup();
        candidates.push((start..end, clauses.len(), inside.len()));
    }
    // Best first: most clauses, then most marks, then earliest.
    candidates.sort_by(|a, b| (b.1, b.2).cmp(&(a.1, a.2)).then(a.0.start.cmp(&b.0.start)));
    let mut chosen: Vec<std::ops::Range<usize>> = Vec::new();
    for (range, _, _) in candidates {
        if chosen.len() == options.fragments {
            break;
        }
        if chosen
            .iter()
            .all(|c| range.end <= c.start || range.start >= c.end)
        {
            chosen.push(range);
        }
    }
    chosen.sort_by_key(|r| r.start);
    chosen
}

/// `start..end` without whitespace at its ends.
fn trim(value: &str, start: usize, end: usize) -> (usize, usize) {
    let slice = &value[start..end];
    let lead = slice.len() - slice.trim_start().len();
    let trail = slice.len() - slice.trim_end().len();
    (start + lead, (end - trail).max(start + lead))
}
