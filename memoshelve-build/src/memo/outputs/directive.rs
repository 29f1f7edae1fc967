//! Cargo's build-script protocol: the lines of a build script's stdout that cargo reads as
//! directives, parsed the way cargo parses them, stored with this build's directories turned into
//! placeholders, and replayed byte for byte (in the syntax they were printed in) with the
//! directories of the build that replays them.
//!
//! Cargo reads a build script's stdout line by line, trims each line, and takes
//! - `cargo::KEY=VALUE` (the syntax of Rust 1.77 on): `KEY` is the instruction, and metadata for
//!   dependents is spelled `cargo::metadata=NAME=VALUE`;
//! - `cargo:KEY=VALUE` (the old syntax): `KEY` is the instruction when it is one of cargo's own
//!   ([`INSTRUCTIONS`]), and any other `cargo:NAME=VALUE` is metadata (`DEP_<LINKS>_NAME`);
//! - every other line is not for cargo.
//!
//! The two spellings of metadata mean the same thing to cargo but are different bytes, and
//! `cargo::error=` is an error while `cargo:error=` is metadata: so a line is stored as printed and
//! replayed as stored, never re-spelled.

use std::path::Path;

/// The spelling of a directive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// `cargo:KEY=VALUE`.
    Single,
    /// `cargo::KEY=VALUE`.
    Double,
}

/// A directive as cargo reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Directive<'line> {
    pub(crate) syntax: Syntax,
    /// The instruction: `rustc-link-lib`, `rerun-if-changed`, `metadata`, ...
    pub(crate) key: &'line str,
    /// What follows the instruction's `=`: for old-syntax metadata, `NAME=VALUE`.
    pub(crate) value: &'line str,
}

/// The instructions cargo knows in the old `cargo:` syntax; any other key there is metadata.
pub(crate) const INSTRUCTIONS: [&str; 17] = [
    "rustc-flags",
    "rustc-link-lib",
    "rustc-link-search",
    "rustc-link-arg-cdylib",
    "rustc-cdylib-link-arg",
    "rustc-link-arg-bins",
    "rustc-link-arg-bin",
    "rustc-link-arg-tests",
    "rustc-link-arg-benches",
    "rustc-link-arg-examples",
    "rustc-link-arg",
    "rustc-cfg",
    "rustc-check-cfg",
    "rustc-env",
    "warning",
    "rerun-if-changed",
    "rerun-if-env-changed",
];

/// Parses one line of a build script's stdout (without its `\n`) as cargo does; `None` for a line
/// that is not for cargo. A directive without `=` is returned with an empty value (cargo rejects
/// it; it is recorded and replayed all the same, so the replay fails as the run did).
pub(crate) fn parse(line: &str) -> Option<Directive<'_>> {
    let line = line.trim();
    let (syntax, data) = match line.strip_prefix("cargo::") {
        Some(data) => (Syntax::Double, data),
        None => (Syntax::Single, line.strip_prefix("cargo:")?),
    };
    let (key, value) = data.split_once('=').unwrap_or((data, ""));
    if syntax == Syntax::Single && !INSTRUCTIONS.contains(&key) {
        return Some(Directive { syntax, key: "metadata", value: data });
    }
    Some(Directive { syntax, key, value: value.trim_end() })
}

/// The lines of a build script's stdout as printed, directives or not (cargo keeps them all in
/// its `output` file), without their `\n`; a line that is not UTF-8 is left out.
pub(crate) fn lines_of(stdout: &[u8]) -> impl Iterator<Item = &str> {
    let lines = if stdout.is_empty() { 0 } else { usize::MAX };
    stdout
        .strip_suffix(b"\n")
        .unwrap_or(stdout)
        .split(|&byte| byte == b'\n')
        .take(lines)
        .filter_map(|line| std::str::from_utf8(line).ok())
}

/// The placeholder that escapes a literal `{memoshelve:` in a stored line.
const LITERAL: &str = "lit";
const OPEN: &str = "{memoshelve:";

/// The absolute directories of one build that stored lines name by placeholder, so that a line
/// stored in one checkout or target directory is replayed with the directories of another.
///
/// Public (as `memoshelve_build::store::Roots`) for `cargo-memoshelve`'s build-script runner,
/// which names the same directories the same way.
#[derive(Clone, Debug, Default)]
#[cfg_attr(not(feature = "maintenance"), allow(unreachable_pub, reason = "public in `store`"))]
pub struct Roots {
    /// `(placeholder name, directory)`, the longest directory first.
    roots: Vec<(&'static str, String)>,
}

#[cfg_attr(not(feature = "maintenance"), allow(unreachable_pub, reason = "public in `store`"))]
impl Roots {
    /// The `(placeholder name, directory)` pairs, the longest directory first.
    #[cfg(feature = "maintenance")]
    pub fn dirs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.roots.iter().map(|(name, dir)| (*name, dir.as_str()))
    }

    /// Roots from `(placeholder name, directory)` pairs; directories that are not UTF-8 or are
    /// empty cannot appear in a line and are left out.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'static str, &'a Path)>) -> Roots {
        let mut roots: Vec<(&'static str, String)> = pairs
            .into_iter()
            .filter_map(|(name, dir)| {
                let dir = dir.to_str()?.trim_end_matches('/');
                (!dir.is_empty()).then(|| (name, dir.to_owned()))
            })
            .collect();
        roots.sort_by_key(|(_, dir)| std::cmp::Reverse(dir.len()));
        Roots { roots }
    }

    /// `text` with every occurrence of a root that ends at a whole path component replaced by
    /// its placeholder: `/w/p7/out` names `/w/p7` followed by `/out`, while `/w/p7-assets` is
    /// another directory and stays as it is. A literal `{memoshelve:` is escaped.
    pub fn name(&self, text: &str) -> String {
        let mut named = String::with_capacity(text.len());
        let mut rest = text;
        'scan: while let Some(ch) = rest.chars().next() {
            for (name, dir) in &self.roots {
                if let Some(after) = rest.strip_prefix(dir.as_str())
                    && ends_component(after)
                {
                    named.push_str(OPEN);
                    named.push_str(name);
                    named.push('}');
                    rest = after;
                    continue 'scan;
                }
            }
            if let Some(after) = rest.strip_prefix(OPEN) {
                named.push_str(OPEN);
                named.push_str(LITERAL);
                named.push('}');
                rest = after;
                continue;
            }
            named.push(ch);
            rest = &rest[ch.len_utf8()..];
        }
        named
    }

    /// The reverse of [`Roots::name`], with this build's directories. A placeholder this build
    /// has no directory for stays as it is.
    pub fn expand(&self, stored: &str) -> String {
        let mut expanded = String::with_capacity(stored.len());
        let mut rest = stored;
        while let Some(start) = rest.find(OPEN) {
            expanded.push_str(&rest[..start]);
            let token = &rest[start + OPEN.len()..];
            let Some(end) = token.find('}') else { break };
            let name = &token[..end];
            match self.roots.iter().find(|(root, _)| *root == name) {
                Some((_, dir)) => expanded.push_str(dir),
                None if name == LITERAL => expanded.push_str(OPEN),
                None => expanded.push_str(&rest[start..start + OPEN.len() + end + 1]),
            }
            rest = &token[end + 1..];
        }
        expanded.push_str(rest);
        expanded
    }
}

/// Whether a root followed by `after` ends at a whole path component: nothing follows, a path
/// separator, or a character that cannot continue a file name in a directive (space, `:`, `;`,
/// `=`, quotes, brackets...).
fn ends_component(after: &str) -> bool {
    match after.chars().next() {
        None => true,
        Some(ch) => {
            ch == '/'
                || ch == std::path::MAIN_SEPARATOR
                || !(ch.is_alphanumeric() || "-_.~+@#%!$&^".contains(ch))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{Directive, Roots, Syntax, lines_of, parse};

    #[test]
    fn lines_parse_as_cargo_reads_them() {
        let single = |key, value| Some(Directive { syntax: Syntax::Single, key, value });
        let double = |key, value| Some(Directive { syntax: Syntax::Double, key, value });
        assert_eq!(parse("cargo:rustc-link-lib=z"), single("rustc-link-lib", "z"));
        assert_eq!(parse("  cargo:rustc-cfg=foo  \r"), single("rustc-cfg", "foo"));
        assert_eq!(parse("cargo::rustc-link-lib=z"), double("rustc-link-lib", "z"));
        // Old-syntax metadata keeps `NAME=VALUE` whole; new-syntax metadata is an instruction.
        assert_eq!(parse("cargo:foo=bar"), single("metadata", "foo=bar"));
        assert_eq!(parse("cargo:error=boom"), single("metadata", "error=boom"));
        assert_eq!(parse("cargo::metadata=foo=bar"), double("metadata", "foo=bar"));
        assert_eq!(parse("cargo::error=boom"), double("error", "boom"));
        assert_eq!(parse("cargo:rerun-if-env-changed=CC"), single("rerun-if-env-changed", "CC"));
        assert_eq!(parse("cargo::warning"), double("warning", ""));
        assert_eq!(parse("hello cargo:rustc-cfg=x"), None);
        assert_eq!(parse("Cargo:rustc-cfg=x"), None);
    }

    #[test]
    fn stdout_lines_are_kept_as_printed() {
        let stdout = b"compiling\ncargo:rustc-cfg=a\r\n\xffcargo:x=1\n  cargo::metadata=k=v\ncargo:warning=w";
        let lines: Vec<&str> = lines_of(stdout).collect();
        assert_eq!(
            lines,
            ["compiling", "cargo:rustc-cfg=a\r", "  cargo::metadata=k=v", "cargo:warning=w"]
        );
        let lines: Vec<&str> = lines_of(b"a\n\nb\n").collect();
        assert_eq!(lines, ["a", "", "b"], "empty lines are kept, the last newline ends a line");
        assert_eq!(lines_of(b"").count(), 0);
        assert_eq!(lines_of(b"\n").collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn roots_are_replaced_only_at_whole_path_components() {
        let roots = Roots::new([
            ("manifest", Path::new("/w/p7")),
            ("out", Path::new("/w/p7/target/debug/build/p7-1/out")),
        ]);
        let line =
            "cargo:rustc-env=A=/w/p7-assets:/w/p7/src:/w/p7:/w/p7/target/debug/build/p7-1/out/x";
        let named = roots.name(line);
        assert_eq!(
            named,
            "cargo:rustc-env=A=/w/p7-assets:{memoshelve:manifest}/src:{memoshelve:manifest}:\
             {memoshelve:out}/x"
        );
        let copy = Roots::new([("manifest", Path::new("/c/p7-copy")), ("out", Path::new("/t/o"))]);
        assert_eq!(
            copy.expand(&named),
            "cargo:rustc-env=A=/w/p7-assets:/c/p7-copy/src:/c/p7-copy:/t/o/x"
        );
        assert_eq!(roots.expand(&named), line);
    }

    #[test]
    fn a_literal_placeholder_survives_the_round_trip() {
        let roots = Roots::new([("out", Path::new("/o"))]);
        for text in ["{memoshelve:out}", "a{memoshelve:lit}b /o/{memoshelve:", "{memoshelve:x} /o"]
        {
            assert_eq!(roots.expand(&roots.name(text)), text, "{text:?}");
        }
        assert_eq!(roots.name("{memoshelve:out}"), "{memoshelve:lit}out}");
    }
}
