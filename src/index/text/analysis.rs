//! Analysis: how a text value becomes the terms the inverted index stores,
//! and how query text becomes the terms it looks up (the same analyzer on
//! both sides, as in Lucene).
//!
//! An analyzer cuts a value into tokens, each with its term, its position
//! among the value's tokens and the byte range of the value it came from
//! (for highlighting). Tokens an analyzer drops (stop words, terms longer
//! than [`MAX_TERM_BYTES`]) still take their position, so a phrase does not
//! match across the gap they leave, as in Lucene.
//!
//! | name | tokens | terms |
//! |---|---|---|
//! | `standard` (default) | Unicode word boundaries (UAX #29) | lowercase |
//! | `english` | as `standard`, possessive `'s` removed | lowercase, ASCII-folded, English stop words dropped, Snowball-stemmed |
//! | `<language>` | as `standard` | lowercase, Snowball-stemmed in that language |
//! | `simple` | runs of letters and digits | lowercase |
//! | `whitespace` | runs of non-whitespace | as written |
//! | `raw` | the whole value | as written |
//! | `ngram(m,n)` | each `standard` word's character n-grams, m to n long | lowercase |

use std::fmt;
use std::ops::Range;

use rust_stemmers::{Algorithm, Stemmer};
use unicode_segmentation::UnicodeSegmentation;

use crate::error::{Error, Result};

/// Terms longer than this (in bytes) are dropped, as Lucene's standard
/// tokenizer caps tokens at 255 characters: such "words" are identifiers
/// or encoded blobs, and would only grow the term dictionary.
pub const MAX_TERM_BYTES: usize = 255;

/// A `raw` value longer than this is not indexed (Lucene's limit on one
/// term, 32766 bytes).
pub const MAX_RAW_TERM_BYTES: usize = 32766;

/// The longest n-gram `ngram(m,n)` accepts.
pub const MAX_NGRAM: usize = 16;

/// Lucene's English stop words (`EnglishAnalyzer.ENGLISH_STOP_WORDS_SET`).
const ENGLISH_STOP_WORDS: [&str; 33] = [
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// The Snowball stemmers `rust-stemmers` ships, by the name an analyzer
/// option uses.
/// (English is the `english` analyzer, with its stop words and folding.)
const LANGUAGES: [(&str, Algorithm); 17] = [
    ("arabic", Algorithm::Arabic),
    ("danish", Algorithm::Danish),
    ("dutch", Algorithm::Dutch),
    ("finnish", Algorithm::Finnish),
    ("french", Algorithm::French),
    ("german", Algorithm::German),
    ("greek", Algorithm::Greek),
    ("hungarian", Algorithm::Hungarian),
    ("italian", Algorithm::Italian),
    ("norwegian", Algorithm::Norwegian),
    ("portuguese", Algorithm::Portuguese),
    ("romanian", Algorithm::Romanian),
    ("russian", Algorithm::Russian),
    ("spanish", Algorithm::Spanish),
    ("swedish", Algorithm::Swedish),
    ("tamil", Algorithm::Tamil),
    ("turkish", Algorithm::Turkish),
];

/// One token of an analysed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub term: &'a str,
    /// Its position among the value's tokens, from 0; dropped tokens leave
    /// gaps, n-grams of one start share one.
    pub position: u32,
    /// The bytes of the value it came from.
    pub start: usize,
    pub end: usize,
}

impl Token<'_> {
    pub fn offsets(&self) -> Range<usize> {
        self.start..self.end
    }
}

/// The analyzers a text index column can use (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Analyzer {
    #[default]
    Standard,
    English,
    /// Standard words, lowercase, stemmed by the Snowball stemmer at this
    /// index of [`LANGUAGES`].
    Snowball(usize),
    Simple,
    Whitespace,
    Raw,
    NGram {
        min: usize,
        max: usize,
    },
}

impl Analyzer {
    /// The analyzer `spec` names, for the table option `option` (which the
    /// error names).
    pub fn parse(option: &str, spec: &str) -> Result<Analyzer> {
        let name = spec.trim().to_ascii_lowercase();
        let analyzer = match name.as_str() {
            "standard" => Analyzer::Standard,
            "english" => Analyzer::English,
            "simple" => Analyzer::Simple,
            "whitespace" => Analyzer::Whitespace,
            "raw" => Analyzer::Raw,
            _ if name.starts_with("ngram") => parse_ngram(option, &name)?,
            _ => match LANGUAGES.iter().position(|(l, _)| *l == name) {
                Some(i) => Analyzer::Snowball(i),
                None => return Err(Error::option(option, unknown(spec))),
            },
        };
        Ok(analyzer)
    }

    /// Calls `emit` with each token of `text`, in order.
    pub fn analyze(&self, text: &str, mut emit: impl FnMut(Token<'_>)) {
        match self {
            Analyzer::Standard => words(
                text,
                |word, out| {
                    out.push_str(word);
                    true
                },
                &mut emit,
            ),
            Analyzer::English => {
                let stemmer = Stemmer::create(Algorithm::English);
                let mut folded = String::new();
                words(
                    text,
                    |word, out| {
                        fold_to_ascii(strip_possessive(word), &mut folded);
                        if ENGLISH_STOP_WORDS.contains(&folded.as_str()) {
                            return false;
                        }
                        out.push_str(&stemmer.stem(&folded));
                        true
                    },
                    &mut emit,
                )
            }
            Analyzer::Snowball(i) => {
                let stemmer = Stemmer::create(LANGUAGES[*i].1);
                words(
                    text,
                    |word, out| {
                        out.push_str(&stemmer.stem(word));
                        true
                    },
                    &mut emit,
                )
            }
            Analyzer::Simple => split(text, |c| !c.is_alphanumeric(), true, emit),
            Analyzer::Whitespace => split(text, char::is_whitespace, false, emit),
            Analyzer::Raw => {
                if !text.is_empty() && text.len() <= MAX_RAW_TERM_BYTES {
                    emit(Token {
                        term: text,
                        position: 0,
                        start: 0,
                        end: text.len(),
                    });
                }
            }
            Analyzer::NGram { min, max } => ngrams(text, *min, *max, emit),
        }
    }

    /// The terms of `text`, in order (a convenience over [`Self::analyze`]).
    pub fn terms(&self, text: &str) -> Vec<String> {
        let mut terms = Vec::new();
        self.analyze(text, |t| terms.push(t.term.to_string()));
        terms
    }
}

impl fmt::Display for Analyzer {
    /// The name [`Analyzer::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Analyzer::Standard => f.write_str("standard"),
            Analyzer::English => f.write_str("english"),
            Analyzer::Snowball(i) => f.write_str(LANGUAGES[*i].0),
            Analyzer::Simple => f.write_str("simple"),
            Analyzer::Whitespace => f.write_str("whitespace"),
            Analyzer::Raw => f.write_str("raw"),
            Analyzer::NGram { min, max } => write!(f, "ngram({min},{max})"),
        }
    }
}

fn unknown(spec: &str) -> String {
    let languages: Vec<&str> = LANGUAGES.iter().map(|(l, _)| *l).collect();
    format!(
        "unknown analyzer '{spec}': expected standard, english, simple, whitespace, raw, \
         ngram(m,n) or a Snowball language ({})",
        languages.join(", ")
    )
}

/// `ngram(m,n)` with 1 <= m <= n <= [`MAX_NGRAM`].
fn parse_ngram(option: &str, name: &str) -> Result<Analyzer> {
    let bad = |reason: String| Error::option(option, format!("'{name}': {reason}"));
    let args = name
        .strip_prefix("ngram")
        .map(str::trim)
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad("expected ngram(m,n), for example ngram(2,3)".into()))?;
    let numbers: Vec<&str> = args.split(',').map(str::trim).collect();
    let [min, max] = numbers[..] else {
        return Err(bad("expected two lengths, ngram(m,n)".into()));
    };
    let parse = |s: &str| {
        s.parse::<usize>()
            .map_err(|_| bad(format!("'{s}' is not a length")))
    };
    let (min, max) = (parse(min)?, parse(max)?);
    if min == 0 || min > max || max > MAX_NGRAM {
        return Err(bad(format!(
            "lengths must satisfy 1 <= m <= n <= {MAX_NGRAM}"
        )));
    }
    Ok(Analyzer::NGram { min, max })
}

/// Unicode words of `text`, lowercased, then written by `term` as the
/// term to index (or dropped when it returns false), emitted with their
/// positions.
fn words(
    text: &str,
    mut term: impl FnMut(&str, &mut String) -> bool,
    emit: &mut impl FnMut(Token<'_>),
) {
    let (mut lower, mut out) = (String::new(), String::new());
    let mut position = 0u32;
    for (start, word) in text.unicode_word_indices() {
        lowercase(word, &mut lower);
        out.clear();
        if lower.len() <= MAX_TERM_BYTES && term(&lower, &mut out) && !out.is_empty() {
            emit(Token {
                term: &out,
                position,
                start,
                end: start + word.len(),
            });
        }
        position = position.saturating_add(1);
    }
}

/// Runs of characters that are not `separator`, optionally lowercased.
fn split(
    text: &str,
    separator: impl Fn(char) -> bool,
    lower: bool,
    mut emit: impl FnMut(Token<'_>),
) {
    let mut buffer = String::new();
    let mut position = 0u32;
    let mut start = None;
    let mut flush = |from: usize, to: usize, position: &mut u32| {
        let piece = &text[from..to];
        let term = if lower {
            lowercase(piece, &mut buffer);
            buffer.as_str()
        } else {
            piece
        };
        if term.len() <= MAX_TERM_BYTES {
            emit(Token {
                term,
                position: *position,
                start: from,
                end: to,
            });
        }
        *position = position.saturating_add(1);
    };
    for (i, c) in text.char_indices() {
        match (separator(c), start) {
            (true, Some(from)) => {
                flush(from, i, &mut position);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(from) = start {
        flush(from, text.len(), &mut position);
    }
}

/// Character n-grams of each lowercased standard word. A word's grams
/// starting at its k-th character share position `base + k`, and the next
/// word's base leaves a gap, so a phrase of grams matches within a word
/// only. Words shorter than `min` characters give no gram, as in Lucene.
fn ngrams(text: &str, min: usize, max: usize, mut emit: impl FnMut(Token<'_>)) {
    let mut buffer = String::new();
    let mut base = 0u32;
    let mut bounds: Vec<usize> = Vec::new();
    for (start, word) in text.unicode_word_indices() {
        lowercase(word, &mut buffer);
        bounds.clear();
        bounds.extend(buffer.char_indices().map(|(i, _)| i));
        let chars = bounds.len();
        bounds.push(buffer.len());
        for k in 0..chars {
            for n in min..=max.min(chars - k) {
                emit(Token {
                    term: &buffer[bounds[k]..bounds[k + n]],
                    position: base.saturating_add(k as u32),
                    // The word's bytes: lowercasing may change lengths, so
                    // a gram's own bytes are not known in the value.
                    start,
                    end: start + word.len(),
                });
            }
        }
        base = base.saturating_add(chars as u32 + 1);
    }
}

/// `word` in lowercase, character by character as Lucene's
/// LowerCaseFilter (so a final `Σ` is `σ`, not the `ς` of
/// `str::to_lowercase`), into `out`; ASCII without a round through
/// Unicode's tables.
pub fn lowercase(word: &str, out: &mut String) {
    out.clear();
    if word.is_ascii() {
        out.push_str(word);
        out.make_ascii_lowercase();
    } else {
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
}

/// `john's` → `john` (Lucene's EnglishPossessiveFilter), with either
/// apostrophe.
fn strip_possessive(term: &str) -> &str {
    ["'s", "\u{2019}s"]
        .iter()
        .find_map(|suffix| term.strip_suffix(suffix))
        .unwrap_or(term)
}

/// `term` with Latin letters folded to ASCII where a plain equivalent
/// exists (`é` → `e`, `ß` → `ss`, `æ` → `ae`, ligatures split), into `out`.
/// Letters of other scripts stay as they are.
pub fn fold_to_ascii(term: &str, out: &mut String) {
    out.clear();
    if term.is_ascii() {
        out.push_str(term);
        return;
    }
    for c in term.chars() {
        if c.is_ascii() {
            out.push(c);
            continue;
        }
        let special = match c {
            'ß' => "ss",
            'æ' => "ae",
            'Æ' => "AE",
            'œ' => "oe",
            'Œ' => "OE",
            'ø' => "o",
            'Ø' => "O",
            'ł' => "l",
            'Ł' => "L",
            'đ' | 'ð' => "d",
            'Đ' | 'Ð' => "D",
            'þ' => "th",
            'Þ' => "TH",
            'ı' => "i",
            '\u{2018}' | '\u{2019}' => "'",
            _ => "",
        };
        if !special.is_empty() {
            out.push_str(special);
            continue;
        }
        let before = out.len();
        unicode_normalization::char::decompose_compatible(c, |d| {
            if !unicode_normalization::char::is_combining_mark(d) {
                out.push(d);
            }
        });
        // Only fold to ASCII: a letter whose decomposition is not plain
        // ASCII (a CJK compatibility form, a Greek letter) stays as it was.
        if !out[before..].is_ascii() || out.len() == before {
            out.truncate(before);
            out.push(c);
        }
    }
}
