//! Misuses of `#[memoize]` fail to compile with a message at the offending tokens.
//! The expected messages are in `ui/*.stderr`; `TRYBUILD=overwrite` rewrites them.

#[test]
fn misuses_are_compile_errors_at_the_right_span() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
