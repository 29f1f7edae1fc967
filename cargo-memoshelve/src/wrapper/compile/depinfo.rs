//! rustc's dep-info (`--emit=dep-info`, a Makefile fragment): the source files a compile read
//! and the variables `env!`/`option_env!` read (`# env-dep:NAME=value` lines), as cargo reads
//! them (`fingerprint/dep_info.rs`: a space inside a path is `\ `; a value's `\\`, `\n` and `\r`
//! are escapes).

/// What a compile's dep-info lists.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct DepInfo {
    /// Every prerequisite of every rule, once, in the order first seen (as written: relative to
    /// rustc's working directory, or absolute).
    pub(crate) files: Vec<String>,
    /// `(name, value)`; `None` for a variable read while unset.
    pub(crate) env: Vec<(String, Option<String>)>,
}

/// Reads a dep-info file's text.
pub(crate) fn parse(text: &str) -> DepInfo {
    let mut info = DepInfo::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# env-dep:") {
            let (name, value) = match rest.split_once('=') {
                Some((name, value)) => (name, Some(unescape(value))),
                None => (rest, None),
            };
            info.env.push((name.to_owned(), value));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        // Each output's rule lists the sources; each source has an empty rule of its own.
        let Some(prerequisites) = split_rule(line) else { continue };
        for file in words(prerequisites) {
            if !info.files.contains(&file) {
                info.files.push(file);
            }
        }
    }
    info
}

/// A rule's prerequisites: what follows the first `:` that is not escaped and is followed by a
/// space or the end (a Windows drive letter's colon is neither).
fn split_rule(line: &str) -> Option<&str> {
    let bytes = line.as_bytes();
    let mut escaped = false;
    for (at, &byte) in bytes.iter().enumerate() {
        match byte {
            b'\\' if !escaped => escaped = true,
            b':' if !escaped && bytes.get(at + 1).is_none_or(|next| *next == b' ') => {
                return Some(&line[at + 1..]);
            }
            _ => escaped = false,
        }
    }
    None
}

/// The space-separated words of a rule's side, `\ ` kept as a space.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    let mut chars = text.chars().peekable();
    std::iter::from_fn(move || {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        chars.peek()?;
        let mut word = String::new();
        while let Some(ch) = chars.next() {
            match ch {
                ' ' => break,
                '\\' if chars.peek() == Some(&' ') => word.push(chars.next()?),
                _ => word.push(ch),
            }
        }
        Some(word)
    })
}

/// An `env-dep` value as the compiler read it.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sources_and_variables_as_cargo_does() {
        let text = "/t/deps/libp-1.rmeta: src/lib.rs src/my\\ mod.rs /t/build/p-2/out/gen.rs\n\n\
                    /t/deps/p-1.d: src/lib.rs src/my\\ mod.rs /t/build/p-2/out/gen.rs\n\n\
                    src/lib.rs:\nsrc/my\\ mod.rs:\n/t/build/p-2/out/gen.rs:\n\n\
                    # env-dep:CARGO_PKG_NAME=p\n# env-dep:MULTI=a\\nb\\\\c\n# env-dep:UNSET\n";
        let info = parse(text);
        assert_eq!(info.files, ["src/lib.rs", "src/my mod.rs", "/t/build/p-2/out/gen.rs"]);
        assert_eq!(
            info.env,
            [
                ("CARGO_PKG_NAME".to_owned(), Some("p".to_owned())),
                ("MULTI".to_owned(), Some("a\nb\\c".to_owned())),
                ("UNSET".to_owned(), None),
            ]
        );
    }

    #[test]
    fn a_windows_path_keeps_its_drive() {
        let info = parse("C:\\t\\p.rmeta: C:\\src\\lib.rs\n\nC:\\src\\lib.rs:\n");
        assert_eq!(info.files, ["C:\\src\\lib.rs"]);
    }
}
