//! Text analysis: each analyzer's tokens (terms, positions with gaps where
//! tokens were dropped, byte offsets into the value), its name read back,
//! clear errors for bad analyzer options, and no panic on any input.

use diagon::index::text::analysis::{MAX_TERM_BYTES, fold_to_ascii, lowercase};
use diagon::index::text::{Analyzer, Token};
use proptest::prelude::*;
use rust_stemmers::{Algorithm, Stemmer};
use unicode_segmentation::UnicodeSegmentation;

fn analyzer(spec: &str) -> Analyzer {
    Analyzer::parse("analyzer.body", spec).unwrap()
}

/// (term, position, the value's bytes it came from) of each token.
fn tokens(spec: &str, text: &str) -> Vec<(String, u32, String)> {
    let mut out = Vec::new();
    analyzer(spec).analyze(text, |t: Token<'_>| {
        out.push((
            t.term.to_string(),
            t.position,
            text[t.offsets()].to_string(),
        ))
    });
    out
}

fn terms(spec: &str, text: &str) -> Vec<String> {
    analyzer(spec).terms(text)
}

#[test]
fn standard_splits_on_word_boundaries_and_lowercases() {
    let text = "Wireless HEADPHONES, 3.5mm jack; Straße café — naïve's 東京";
    assert_eq!(
        tokens("standard", text),
        [
            ("wireless", 0, "Wireless"),
            ("headphones", 1, "HEADPHONES"),
            ("3.5mm", 2, "3.5mm"),
            ("jack", 3, "jack"),
            ("straße", 4, "Straße"),
            ("café", 5, "café"),
            ("naïve's", 6, "naïve's"),
            ("東", 7, "東"),
            ("京", 8, "京"),
        ]
        .map(|(t, p, s)| (t.to_string(), p, s.to_string()))
    );
    assert!(terms("standard", "  ,;  ").is_empty());
}

#[test]
fn english_folds_drops_stop_words_and_stems() {
    let text = "The quick foxes are JUMPING over John's café";
    assert_eq!(
        tokens("english", text),
        [
            ("quick", 1, "quick"),
            ("fox", 2, "foxes"),
            ("jump", 4, "JUMPING"),
            ("over", 5, "over"),
            ("john", 6, "John's"),
            ("cafe", 7, "café"),
        ]
        .map(|(t, p, s)| (t.to_string(), p, s.to_string()))
    );
}

/// A Snowball language: standard words, lowercase, that language's stemmer.
#[test]
fn snowball_languages_stem_standard_words() {
    let text = "Les chevaux mangeaient des pommes délicieuses";
    let stemmer = Stemmer::create(Algorithm::French);
    let expected: Vec<String> = text
        .unicode_words()
        .map(|w| stemmer.stem(&w.to_lowercase()).into_owned())
        .collect();
    assert_eq!(terms("french", text), expected);
    assert_ne!(expected, terms("standard", text), "nothing was stemmed");
    for language in [
        "arabic",
        "danish",
        "dutch",
        "finnish",
        "german",
        "greek",
        "hungarian",
        "italian",
        "norwegian",
        "portuguese",
        "romanian",
        "russian",
        "spanish",
        "swedish",
        "tamil",
        "turkish",
    ] {
        assert_eq!(analyzer(language).to_string(), language);
    }
}

#[test]
fn simple_whitespace_and_raw() {
    assert_eq!(terms("simple", "a1-B2_c3 x"), ["a1", "b2", "c3", "x"]);
    assert_eq!(
        tokens("whitespace", " Foo-Bar\tbaz\n"),
        [("Foo-Bar", 0, "Foo-Bar"), ("baz", 1, "baz")].map(|(t, p, s)| (
            t.to_string(),
            p,
            s.to_string()
        ))
    );
    assert_eq!(terms("raw", "  Keep It Whole "), ["  Keep It Whole "]);
    assert!(terms("raw", "").is_empty());
}

#[test]
fn ngrams_cover_each_word_with_gaps_between_words() {
    assert_eq!(
        tokens("ngram(2,3)", "Abcd ÉF"),
        [
            ("ab", 0, "Abcd"),
            ("abc", 0, "Abcd"),
            ("bc", 1, "Abcd"),
            ("bcd", 1, "Abcd"),
            ("cd", 2, "Abcd"),
            ("éf", 5, "ÉF"),
        ]
        .map(|(t, p, s)| (t.to_string(), p, s.to_string()))
    );
    // Shorter than the smallest gram: nothing, as in Lucene.
    assert!(terms("ngram(3,4)", "ab").is_empty());
    assert_eq!(analyzer(" NGram( 1 , 2 ) ").to_string(), "ngram(1,2)");
}

#[test]
fn dropped_tokens_keep_their_position() {
    let long = "x".repeat(MAX_TERM_BYTES + 1);
    let text = format!("before {long} after");
    let positions: Vec<(String, u32)> = tokens("standard", &text)
        .into_iter()
        .map(|(t, p, _)| (t, p))
        .collect();
    assert_eq!(
        positions,
        [("before".to_string(), 0), ("after".to_string(), 2)]
    );
    let exact = "y".repeat(MAX_TERM_BYTES);
    assert_eq!(terms("standard", &exact), [exact]);
}

#[test]
fn ascii_folding() {
    let mut out = String::new();
    for (from, to) in [
        ("crème brûlée", "creme brulee"),
        ("straße", "strasse"),
        ("æsir œuvre øre łódź", "aesir oeuvre ore lodz"),
        ("ﬁne", "fine"),
        ("東京 ελλάδα", "東京 ελλάδα"),
    ] {
        fold_to_ascii(from, &mut out);
        assert_eq!(out, to);
    }
}

#[test]
fn every_analyzer_reads_back_its_name() {
    for spec in [
        "standard",
        "english",
        "french",
        "simple",
        "whitespace",
        "raw",
        "ngram(2,5)",
    ] {
        let parsed = analyzer(spec);
        assert_eq!(analyzer(&parsed.to_string()), parsed, "{spec}");
    }
    assert_eq!(Analyzer::default(), analyzer("standard"));
}

#[test]
fn bad_analyzers_are_errors_naming_the_option() {
    for (spec, says) in [
        ("klingon", "unknown analyzer 'klingon'"),
        ("ngram", "expected ngram(m,n)"),
        ("ngram(2)", "expected two lengths"),
        ("ngram(a,3)", "'a' is not a length"),
        ("ngram(0,3)", "1 <= m <= n <= 16"),
        ("ngram(4,3)", "1 <= m <= n <= 16"),
        ("ngram(1,17)", "1 <= m <= n <= 16"),
    ] {
        let error = Analyzer::parse("analyzer.body", spec)
            .unwrap_err()
            .to_string();
        assert!(error.contains("analyzer.body"), "{error}");
        assert!(error.contains(says), "{spec}: {error}");
    }
}

fn check_tokens(spec: &str, text: &str) {
    let mut last = 0u32;
    analyzer(spec).analyze(text, |t| {
        assert!(t.position >= last, "{spec}: positions go back");
        last = t.position;
        assert!(
            t.start < t.end && t.end <= text.len(),
            "{spec}: {:?}",
            t.offsets()
        );
        assert!(text.is_char_boundary(t.start) && text.is_char_boundary(t.end));
        assert!(!t.term.is_empty());
        if spec != "raw" {
            assert!(t.term.len() <= MAX_TERM_BYTES, "{spec}");
        }
        if spec == "standard" {
            let mut lower = String::new();
            lowercase(&text[t.offsets()], &mut lower);
            assert_eq!(t.term, lower);
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any text, under every analyzer: tokens in position order, offsets on
    /// character boundaries inside the value, no empty term, no panic.
    #[test]
    fn any_text_analyses_cleanly(text in "\\PC{0,60}|[a-zA-Z' .,-]{0,60}") {
        for spec in ["standard", "english", "german", "simple", "whitespace", "raw", "ngram(1,3)"] {
            check_tokens(spec, &text);
        }
    }

    /// Any analyzer option: a value or an error, never a panic.
    #[test]
    fn any_analyzer_option_parses_or_errs(spec in "\\PC{0,20}|ngram\\([0-9a-z, ]{0,8}\\)") {
        let _ = Analyzer::parse("analyzer.body", &spec);
    }
}
