//! Unit tests of the macro's parts: the source hash and the options.

use crate::options::Options;
use crate::source_hash::source_hash;

fn hash(source: &str) -> String {
    source_hash(source.parse().expect("valid tokens"))
}

fn options_error(attr: &str) -> String {
    match Options::parse(attr.parse().expect("valid tokens")) {
        Ok(_) => String::from("parsed"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn layout_and_comments_do_not_change_the_source_hash() {
    let plain = hash("fn f(n: u64) -> u64 { n * 2 }");
    let laid_out =
        hash("fn f(\n    n: u64 // the input\n) -> u64 {\n    /* doubled */\n    n    *    2\n}");
    assert_eq!(plain, laid_out);
    assert_eq!(plain.len(), 16);
}

#[test]
fn code_changes_change_the_source_hash() {
    let plain = hash("fn f(n: u64) -> u64 { n * 2 }");
    assert_ne!(plain, hash("fn f(n: u64) -> u64 { n * 3 }"));
    assert_ne!(plain, hash("fn f(m: u64) -> u64 { m * 2 }"));
    assert_ne!(plain, hash("fn f(n: u32) -> u64 { n * 2 }"));
    // Joined punctuation is not spaced punctuation: `a && b` is not `a & &b`.
    assert_ne!(hash("{ a && b }"), hash("{ a & &b }"));
    // Nor is one group the same tokens in another delimiter.
    assert_ne!(hash("{ (a) }"), hash("{ [a] }"));
}

#[test]
fn options_parse_and_reject_what_they_should() {
    assert_eq!(
        options_error(
            r#"name = "n", version = "2", ignore(a, b), dir = "d", disable, allow_race = false, log = "hits,misses""#
        ),
        "parsed"
    );
    assert_eq!(options_error("disable = false"), "parsed");
    assert!(options_error("colour = 1").contains("unknown option `colour`"));
    assert!(options_error(r#"name = "a", name = "b""#).contains("`name` is given twice"));
    assert!(options_error(r#"name = "a/b""#).contains("without '/'"));
    assert!(options_error(r#"log = "loud""#).contains("unknown log event `loud`"));
    assert!(options_error("allow_race = \"no\"").contains("expected boolean literal"));
}
