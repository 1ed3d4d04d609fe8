//! The search query language: what each syntax parses to (shown in the
//! canonical form `Display` prints), errors that name the position, and
//! no panic on any input.

use diagon::index::text::query::MAX_DEPTH;
use diagon::index::text::{DefaultOperator, Occur, Query};
use proptest::prelude::*;

fn parsed(text: &str, default: DefaultOperator) -> String {
    match Query::parse(text, default) {
        Ok(query) => query.to_string(),
        Err(e) => panic!("{text}: {e}"),
    }
}

#[test]
fn each_syntax_parses() {
    use DefaultOperator::{And, Or};
    for (text, default, expected) in [
        ("wireless", Or, "wireless"),
        ("wireless headphones", Or, "(wireless headphones)"),
        ("wireless headphones", And, "(+wireless +headphones)"),
        ("a AND b OR c", Or, "((+a +b) c)"),
        ("a OR b AND c", Or, "(a (+b +c))"),
        ("a b AND c", Or, "(a (+b +c))"),
        ("a b OR c", And, "((+a +b) c)"),
        ("+a b -c", Or, "(+a b -c)"),
        ("a AND NOT b", Or, "(+a -b)"),
        ("a && b || !c", Or, "((+a +b) -c)"),
        ("NOT a", Or, "(-a)"),
        ("-a", And, "(-a)"),
        ("NOT NOT a", Or, "(-(-a))"),
        ("(a OR b) AND c", Or, "(+(a b) +c)"),
        ("title:foo bar", Or, "(title:foo bar)"),
        ("title:(a b) c", Or, "((title:a title:b) c)"),
        ("title:\"a b\"~2", Or, "title:\"a b\"~2"),
        ("\"noise cancelling\"", Or, "\"noise cancelling\""),
        ("\"noise cancelling\"~2", Or, "\"noise cancelling\"~2"),
        ("wire*", Or, "wire*"),
        ("title:wire*", Or, "title:wire*"),
        ("headphnes~1", Or, "headphnes~1"),
        ("headphnes~", Or, "headphnes~2"),
        ("foo^2 (a b)^0.5", Or, "(foo^2 (a b)^0.5)"),
        ("wi-fi c++ a+b", Or, "(wi-fi c++ a+b)"),
        ("title\\:x \\(y\\) \\AND", Or, "(title\\:x \\(y\\) \\AND)"),
        ("\"say \\\"hi\\\"\"", Or, "\"say \\\"hi\\\"\""),
        ("  spaced\t\nout  ", Or, "(spaced out)"),
        ("café 東京", Or, "(café 東京)"),
    ] {
        assert_eq!(parsed(text, default), expected, "{text}");
    }
}

#[test]
fn the_tree_holds_what_was_written() {
    let query = Query::parse("+title:\"a b\"~3 -c*^2", DefaultOperator::Or).unwrap();
    let Query::Boolean(clauses) = query else {
        panic!("not a boolean query");
    };
    assert_eq!(
        clauses[0],
        (
            Occur::Must,
            Query::Phrase {
                column: Some("title".into()),
                text: "a b".into(),
                slop: 3
            }
        )
    );
    assert_eq!(
        clauses[1],
        (
            Occur::MustNot,
            Query::Boost {
                query: Box::new(Query::Prefix {
                    column: None,
                    prefix: "c".into()
                }),
                boost: 2.0
            }
        )
    );
}

#[test]
fn errors_name_the_position() {
    let deep = format!(
        "{}a{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    for (text, at, says) in [
        ("", 0, "the query is empty"),
        ("   ", 0, "the query is empty"),
        ("(a b", 0, "'(' without its closing ')'"),
        ("a b)", 3, "')' without a matching '('"),
        ("x \"abc", 2, "a phrase without its closing '\"'"),
        ("a AND", 5, "the query ends where a term was expected"),
        ("a OR OR b", 5, "expected a term, found OR"),
        ("foo^", 3, "'^' needs a boost"),
        ("foo^-1", 3, "'^' needs a boost"),
        ("foo~3", 3, "a fuzzy term allows 0 to 2 edits, not '3'"),
        ("\"a b\"~x", 5, "a phrase's '~' needs a slop"),
        (":foo", 0, "':' without a column name"),
        ("*", 0, "'*' needs a prefix before it"),
        ("()", 0, "an empty group '()'"),
        ("a\\", 1, "'\\' at the end of the query"),
        ("~2 foo", 0, "expected a term, found '~'"),
        (&deep, MAX_DEPTH, "nested deeper than 64"),
    ] {
        let error = Query::parse(text, DefaultOperator::Or).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&format!("position {at}:")) && message.contains(says),
            "{text:?}: {message}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any text: a query or an error, never a panic; a query prints as text
    /// that parses back to it.
    #[test]
    fn any_text_parses_or_errs(
        text in "[a-c \"():^~*+\\-!&|\\\\0-9.]{0,24}|(AND |OR |NOT |[ab(:)\"~^*+\\-] ?){0,12}|\\PC{0,16}",
        and in any::<bool>(),
    ) {
        let default = if and { DefaultOperator::And } else { DefaultOperator::Or };
        if let Ok(query) = Query::parse(&text, default) {
            let printed = query.to_string();
            let reparsed = Query::parse(&printed, DefaultOperator::Or);
            prop_assert_eq!(reparsed.ok(), Some(query), "{} printed as {}", text, printed);
        }
    }
}
