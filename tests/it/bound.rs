//! What a query matches, fixed once for the index and brute force: words
//! analysed like the column, phrases with Lucene's slop, prefixes, fuzzy
//! terms, boolean clauses, stop words dropped, columns checked.

use diagon::index::text::bound::{Bound, within_edits};
use diagon::index::text::{Analyzer, DefaultOperator, Query};
use proptest::prelude::*;

fn matches(analyzer: &str, query: &str, value: &str) -> bool {
    let analyzer = Analyzer::parse("analyzer.body", analyzer).unwrap();
    let query = Query::parse(query, DefaultOperator::Or).unwrap();
    Bound::bind(&query, "body", analyzer)
        .unwrap()
        .matches(analyzer, value)
}

#[test]
fn each_kind_of_clause_matches_as_documented() {
    let value = "Wireless noise cancelling headphones";
    for (query, expected) in [
        ("wireless", true),
        ("WIRELESS", true),
        ("wired", false),
        ("wire*", true),
        ("head*", true),
        ("x*", false),
        ("headphnes~1", true),
        ("hedphnes~1", false),
        ("hedphnes~2", true),
        ("\"noise cancelling\"", true),
        ("\"cancelling noise\"", false),
        ("\"cancelling noise\"~1", false),
        ("\"cancelling noise\"~2", true),
        ("\"wireless headphones\"~1", false),
        ("\"wireless headphones\"~2", true),
        ("noise-cancelling", true),
        ("cancelling-noise", false),
        ("+wireless -wired", true),
        ("+wireless -noise", false),
        ("wired OR noise", true),
        ("wired AND noise", false),
        ("-wired", true),
        ("-noise", false),
        ("(wired OR wireless) AND headphones^3", true),
        ("body:wireless", true),
    ] {
        assert_eq!(matches("standard", query, value), expected, "{query}");
    }
}

#[test]
fn analysis_applies_to_the_query() {
    let value = "The Headphones of Jürgen";
    assert!(matches("english", "headphone", value));
    assert!(matches("english", "jurgen", value), "folded");
    assert!(
        matches("english", "the headphones", value),
        "the stop word is dropped"
    );
    assert!(
        !matches("english", "the", value),
        "a query of stop words matches nothing"
    );
    assert!(
        matches("english", "HEADPH*", value),
        "prefixes are lowercased"
    );
    assert!(
        !matches("whitespace", "headphones", value),
        "whitespace keeps case"
    );
    assert!(matches("whitespace", "Headphones", value));
    // Prefixes and fuzzy words lowercase as the analyzer does (a final
    // capital sigma is σ, as Lucene lowercases it, not ς).
    assert!(matches("standard", "ΟΔΟΣ*", "ΟΔΟΣ"));
    assert!(matches("standard", "ΟΔΟΣ~0", "ΟΔΟΣ"));
}

#[test]
fn repeated_phrase_terms_need_positions_of_their_own() {
    assert!(!matches("standard", "\"a a\"", "a b a"));
    assert!(matches("standard", "\"a a\"~1", "a b a"));
    assert!(!matches("standard", "\"a a\"~5", "a"));
    assert!(matches("standard", "\"a b a\"", "x a b a"));
}

#[test]
fn another_column_is_an_error_naming_it() {
    let query = Query::parse("title:foo bar", DefaultOperator::Or).unwrap();
    let error = Bound::bind(&query, "body", Analyzer::Standard)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("'title'") && error.contains("'body'"),
        "{error}"
    );
}

#[test]
fn edit_distance() {
    for (a, b, d) in [
        ("kitten", "sitting", 3),
        ("", "abc", 3),
        ("abc", "abc", 0),
        ("flaw", "lawn", 2),
        ("café", "cafe", 1),
    ] {
        assert!(within_edits(a, b, d), "{a} {b}");
        assert!(d == 0 || !within_edits(a, b, d - 1), "{a} {b}");
    }
}

proptest! {
    /// Any parsed query binds (or names a column error) and evaluates on
    /// any value without panicking.
    #[test]
    fn any_query_on_any_value(
        query in "[a-c \"():^~*+\\-!0-9]{0,20}",
        value in "[a-c ]{0,30}|\\PC{0,20}",
    ) {
        if let Ok(query) = Query::parse(&query, DefaultOperator::Or) {
            for analyzer in [Analyzer::Standard, Analyzer::English] {
                if let Ok(bound) = Bound::bind(&query, "body", analyzer) {
                    let _ = bound.matches(analyzer, &value);
                }
            }
        }
    }
}

proptest! {
    /// An exact phrase's frequency is the number of starts at which every
    /// term sits at its offset, and it occurs iff there is one (the merge
    /// the index uses for exact phrases against counting every start).
    #[test]
    fn an_exact_phrase_counts_its_starts(
        words in proptest::collection::vec(0u8..4, 1..60),
        phrase in proptest::collection::vec(0u8..4, 2..4),
    ) {
        use diagon::index::text::bound::{phrase_freq, phrase_in};
        // Terms with their offsets, as a phrase binds them (a repeated
        // word is one term at two offsets).
        let terms: Vec<(String, u32)> =
            phrase.iter().enumerate().map(|(i, w)| (format!("w{w}"), i as u32)).collect();
        let positions: Vec<Vec<u32>> = phrase
            .iter()
            .map(|w| {
                (0..words.len() as u32).filter(|&p| words[p as usize] == *w).collect()
            })
            .collect();
        let lists: Vec<&[u32]> = positions.iter().map(Vec::as_slice).collect();
        let starts = (0..words.len())
            .filter(|&s| {
                phrase.iter().enumerate().all(|(i, w)| words.get(s + i) == Some(w))
            })
            .count();
        prop_assert_eq!(phrase_freq(&terms, &lists, 0), starts as f32);
        prop_assert_eq!(phrase_in(&terms, &lists, 0), starts > 0);
    }
}
