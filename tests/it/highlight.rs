//! `highlight` against brute force: whether anything is marked, what is
//! marked, that nothing a term matched goes unmarked, and that snippets are
//! pieces of the value in its order.

use diagon::index::text::bound::{Bound, phrase_in, within_edits};
use diagon::index::text::highlight::{HighlightOptions, highlight};
use diagon::index::text::{Analyzer, DefaultOperator, Occur, Query};
use proptest::prelude::*;

use crate::text_index::{corpus, query_text};

const PRE: &str = "\u{1}";
const POST: &str = "\u{2}";
const SEPARATOR: &str = "\u{3}";

/// The clauses of `bound` that mark: all but the excluded ones.
fn positive(bound: &Bound) -> Vec<&Bound> {
    match bound {
        Bound::Boolean(clauses) => clauses
            .iter()
            .filter(|(o, _)| *o != Occur::MustNot)
            .flat_map(|(_, c)| positive(c))
            .collect(),
        Bound::Nothing => Vec::new(),
        leaf => vec![leaf],
    }
}

/// Whether a word-level clause matches the term `term`.
fn takes(leaf: &Bound, term: &str) -> bool {
    match leaf {
        Bound::Term { term: t, .. } => t == term,
        Bound::Prefix { prefix, .. } => term.starts_with(prefix.as_str()),
        Bound::Fuzzy { term: t, edits, .. } => within_edits(t, term, usize::from(*edits)),
        _ => false,
    }
}

/// Whether `leaf` matches anything in `text`, by analysing it.
fn occurs(leaf: &Bound, analyzer: Analyzer, text: &str) -> bool {
    let mut tokens: Vec<(String, u32)> = Vec::new();
    analyzer.analyze(text, |t| tokens.push((t.term.to_string(), t.position)));
    match leaf {
        Bound::Phrase { terms, slop, .. } => {
            let lists: Vec<Vec<u32>> = terms
                .iter()
                .map(|(term, _)| {
                    tokens
                        .iter()
                        .filter(|(t, _)| t == term)
                        .map(|(_, p)| *p)
                        .collect()
                })
                .collect();
            let lists: Vec<&[u32]> = lists.iter().map(Vec::as_slice).collect();
            lists.iter().all(|l| !l.is_empty()) && phrase_in(terms, &lists, *slop)
        }
        leaf => tokens.iter().any(|(t, _)| takes(leaf, t)),
    }
}

/// The value without tags, and the byte ranges (in it) that were marked.
fn unmark(marked: &str) -> (String, Vec<std::ops::Range<usize>>) {
    let mut plain = String::new();
    let mut ranges = Vec::new();
    let mut open = None;
    for c in marked.chars() {
        match c {
            '\u{1}' => open = Some(plain.len()),
            '\u{2}' => {
                ranges.push(open.take().expect("a mark opens before it closes")..plain.len())
            }
            c => plain.push(c),
        }
    }
    assert!(open.is_none(), "a mark left open in {marked:?}");
    (plain, ranges)
}

fn check(value: &str, text: &str, analyzer: Analyzer, fragment_size: usize) {
    let Ok(query) = Query::parse(text, DefaultOperator::Or) else {
        return;
    };
    let bound = Bound::bind(&query, "body", analyzer).unwrap();
    let leaves = positive(&bound);
    let whole = HighlightOptions {
        pre_tag: PRE.into(),
        post_tag: POST.into(),
        fragments: 0,
        ..HighlightOptions::default()
    };
    let found = highlight(&bound, analyzer, value, &whole);
    let expected = leaves.iter().any(|l| occurs(l, analyzer, value));
    assert_eq!(
        found.is_some(),
        expected,
        "{text:?} in {value:?}: {found:?}"
    );
    let Some(found) = found else { return };
    let (plain, ranges) = unmark(&found);
    assert_eq!(plain, value, "the whole value comes back");
    for r in &ranges {
        let piece = &value[r.clone()];
        assert!(
            leaves.iter().any(|l| occurs(l, analyzer, piece)),
            "{text:?}: marked {piece:?} of {value:?}, which no clause matches"
        );
    }
    // Every token a word clause takes is marked.
    analyzer.analyze(value, |t| {
        if leaves.iter().any(|l| takes(l, t.term)) {
            assert!(
                ranges.iter().any(|r| r.start <= t.start && t.end <= r.end),
                "{text:?}: {:?} at {:?} of {value:?} unmarked in {found:?}",
                t.term,
                t.offsets()
            );
        }
    });
    // Snippets: at most `fragments` pieces of the value, in its order,
    // apart, each with a mark.
    let options = HighlightOptions {
        fragment_size,
        separator: SEPARATOR.into(),
        ..whole
    };
    let options = HighlightOptions {
        fragments: 2,
        ..options
    };
    let snippets = highlight(&bound, analyzer, value, &options).expect("marks found above");
    let pieces: Vec<&str> = snippets.split(SEPARATOR).collect();
    assert!(pieces.len() <= 2, "{snippets:?}");
    let mut from = 0;
    for piece in pieces {
        let (plain, ranges) = unmark(piece);
        assert!(!ranges.is_empty(), "a snippet without a mark: {piece:?}");
        let at = value[from..]
            .find(&plain)
            .unwrap_or_else(|| panic!("{plain:?} is not in {value:?} after byte {from}"));
        from += at + plain.len();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn highlights_equal_brute_force(
        values in corpus(),
        queries in proptest::collection::vec(query_text(), 1..4),
        analyzer in prop_oneof![
            Just("standard"), Just("english"), Just("simple"), Just("ngram(2,3)"),
            Just("whitespace"), Just("raw")
        ],
        fragment_size in 1usize..40,
    ) {
        let analyzer = Analyzer::parse("analyzer", analyzer).unwrap();
        for value in values.iter().flatten().take(40) {
            for text in &queries {
                check(value, text, analyzer, fragment_size);
            }
        }
    }
}

#[test]
fn phrases_are_marked_whole_and_only_where_they_occur() {
    let bound = |q: &str| {
        Bound::bind(
            &Query::parse(q, DefaultOperator::Or).unwrap(),
            "b",
            Analyzer::Standard,
        )
        .unwrap()
    };
    let whole = HighlightOptions {
        fragments: 0,
        ..HighlightOptions::default()
    };
    let text = "The Who played; who knew the band?";
    assert_eq!(
        highlight(&bound("\"the who\""), Analyzer::Standard, text, &whole).as_deref(),
        Some("<b>The Who</b> played; who knew the band?")
    );
    assert_eq!(
        highlight(&bound("\"who the\"~2"), Analyzer::Standard, text, &whole).as_deref(),
        Some("<b>The Who</b> played; <b>who knew the</b> band?")
    );
    assert_eq!(
        highlight(&bound("+band -who"), Analyzer::Standard, text, &whole).as_deref(),
        Some("The Who played; who knew the <b>band</b>?")
    );
}

#[test]
fn snippets_are_the_windows_with_most_clauses() {
    let bound = Bound::bind(
        &Query::parse("alpha beta", DefaultOperator::Or).unwrap(),
        "b",
        Analyzer::Standard,
    )
    .unwrap();
    let filler = "lorem ipsum dolor sit amet ".repeat(4);
    let text = format!("alpha {filler}beta {filler}alpha beta {filler}");
    let one = HighlightOptions {
        fragments: 1,
        fragment_size: 20,
        ..HighlightOptions::default()
    };
    let best = highlight(&bound, Analyzer::Standard, &text, &one).unwrap();
    assert!(best.contains("<b>alpha</b> <b>beta</b>"), "{best}");
    let three = HighlightOptions {
        fragments: 3,
        ..one
    };
    let all = highlight(&bound, Analyzer::Standard, &text, &three).unwrap();
    assert_eq!(all.matches(" … ").count(), 2, "{all}");
    assert!(all.starts_with("<b>alpha</b>"), "text order: {all}");
}

#[test]
fn options_parse_and_errors_name_the_option() {
    let o = HighlightOptions::parse("pre_tag=<em>, post_tag=</em>, fragments=0, separator=\" | \"")
        .unwrap();
    assert_eq!(
        (
            o.pre_tag.as_str(),
            o.post_tag.as_str(),
            o.fragments,
            o.separator.as_str()
        ),
        ("<em>", "</em>", 0, " | ")
    );
    assert_eq!(
        HighlightOptions::parse("").unwrap(),
        HighlightOptions::default()
    );
    for (spec, named) in [
        ("fragments=x", "'fragments'"),
        ("fragment_size=0", "'fragment_size'"),
        ("color=red", "'color'"),
        ("pre_tag", "'pre_tag'"),
        ("separator=\" |", "'separator'"),
        ("separator=\" | \" x", "'separator'"),
    ] {
        let e = HighlightOptions::parse(spec).unwrap_err().to_string();
        assert!(e.contains(named), "{spec}: {e}");
    }
}

proptest! {
    /// Any options string parses or is an error; never a panic.
    #[test]
    fn any_options_string_is_an_answer(spec in "\\PC{0,40}") {
        let _ = HighlightOptions::parse(&spec);
    }
}
