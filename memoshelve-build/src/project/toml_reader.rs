//! A small TOML reader: enough of TOML 1.0 to find the string settings of one table in a
//! `Cargo.toml` or `memoshelve.toml` without a TOML crate in every user's build-dependencies.
//!
//! It reads the whole grammar's structure (tables, arrays of tables, dotted and quoted keys, all
//! four kinds of strings, arrays and inline tables spanning lines, comments) so that nothing in
//! another table is mistaken for a setting, and returns every string leaf with its full key path.
//! Numbers, booleans and dates are kept as their raw text. A document it cannot read is an error
//! naming the line; it never panics.

/// One leaf of a document: its full key path and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Leaf {
    pub(crate) path: Vec<String>,
    pub(crate) value: Value,
}

/// A leaf value: a string, or the raw text of anything else that is not a table or an array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    String(String),
    /// A number, boolean or date, as written.
    Other(String),
    /// An array (its elements are leaves of their own, under the key path `[]`).
    Array,
    /// A table header (`[a.b]`): the table exists, even when empty.
    Table,
}

/// Reads `text` into its leaves, in document order.
pub(crate) fn parse(text: &str) -> Result<Vec<Leaf>, String> {
    let mut reader = Reader { text, pos: 0, leaves: Vec::new() };
    reader.document().map_err(|message| format!("line {}: {message}", reader.line()))?;
    Ok(reader.leaves)
}

struct Reader<'a> {
    text: &'a str,
    pos: usize,
    leaves: Vec<Leaf>,
}

type Parsed<T> = Result<T, String>;

impl Reader<'_> {
    fn line(&self) -> usize {
        self.text[..self.pos.min(self.text.len())].matches('\n').count() + 1
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn eat(&mut self, prefix: &str) -> bool {
        if self.rest().starts_with(prefix) {
            self.pos += prefix.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, prefix: &str) -> Parsed<()> {
        if self.eat(prefix) { Ok(()) } else { Err(format!("expected `{prefix}`")) }
    }

    /// Spaces and tabs.
    fn blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    /// Blanks, newlines and comments.
    fn gaps(&mut self) {
        loop {
            self.blanks();
            if self.peek() == Some('#') {
                self.comment();
            } else if !(self.eat("\n") || self.eat("\r\n")) {
                return;
            }
        }
    }

    fn comment(&mut self) {
        let end = self.rest().find('\n').map_or(self.text.len(), |at| self.pos + at);
        self.pos = end;
    }

    /// After a header or a key/value pair: blanks, an optional comment, then a newline or the end.
    fn end_of_line(&mut self) -> Parsed<()> {
        self.blanks();
        if self.peek() == Some('#') {
            self.comment();
        }
        if self.pos == self.text.len() || self.eat("\n") || self.eat("\r\n") {
            Ok(())
        } else {
            Err("expected the end of the line".to_owned())
        }
    }

    fn document(&mut self) -> Parsed<()> {
        let mut table: Vec<String> = Vec::new();
        // Paths of arrays of tables: their tables (and sub-tables) are elements, under `[]`.
        let mut arrays: Vec<Vec<String>> = Vec::new();
        let element_path = |arrays: &[Vec<String>], mut path: Vec<String>| {
            if let Some(array) = arrays
                .iter()
                .filter(|array| path.len() > array.len() && path.starts_with(array))
                .max_by_key(|array| array.len())
            {
                path.insert(array.len(), "[]".to_owned());
            }
            path
        };
        loop {
            self.gaps();
            if self.pos == self.text.len() {
                return Ok(());
            }
            if self.eat("[[") {
                let path = element_path(&arrays, self.key_path("]]")?);
                self.expect("]]")?;
                arrays.push(path.clone());
                table = path;
                table.push("[]".to_owned());
            } else if self.eat("[") {
                table = element_path(&arrays, self.key_path("]")?);
                self.expect("]")?;
                self.leaves.push(Leaf { path: table.clone(), value: Value::Table });
            } else {
                let mut path = table.clone();
                path.extend(self.key_path("=")?);
                self.expect("=")?;
                self.blanks();
                self.value(path)?;
            }
            self.end_of_line()?;
        }
    }

    /// A dotted key (`a."b c".'d'`), up to (not including) `end`.
    fn key_path(&mut self, end: &str) -> Parsed<Vec<String>> {
        let mut path = Vec::new();
        loop {
            self.blanks();
            let part = match self.peek() {
                Some('"') => {
                    self.pos += 1;
                    self.basic_string()?
                }
                Some('\'') => {
                    self.pos += 1;
                    self.literal_string()?
                }
                _ => {
                    let len = self
                        .rest()
                        .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'))
                        .unwrap_or(self.rest().len());
                    if len == 0 {
                        return Err("expected a key".to_owned());
                    }
                    let part = self.rest()[..len].to_owned();
                    self.pos += len;
                    part
                }
            };
            path.push(part);
            self.blanks();
            if !self.eat(".") {
                break;
            }
        }
        if self.rest().starts_with(end) { Ok(path) } else { Err(format!("expected `{end}`")) }
    }

    fn value(&mut self, path: Vec<String>) -> Parsed<()> {
        let value = if self.eat("\"\"\"") {
            Value::String(self.multiline_basic_string()?)
        } else if self.eat("\"") {
            Value::String(self.basic_string()?)
        } else if self.eat("'''") {
            Value::String(self.multiline_literal_string()?)
        } else if self.eat("'") {
            Value::String(self.literal_string()?)
        } else if self.eat("[") {
            self.array(&path)?;
            Value::Array
        } else if self.eat("{") {
            return self.inline_table(path);
        } else {
            Value::Other(self.bare_value()?)
        };
        self.leaves.push(Leaf { path, value });
        Ok(())
    }

    /// Numbers, booleans, dates and times (a date and a time may be separated by one space).
    fn bare_value(&mut self) -> Parsed<String> {
        let is_part = |ch: char| ch.is_ascii_alphanumeric() || "+-_.:".contains(ch);
        let mut len = self.rest().find(|ch: char| !is_part(ch)).unwrap_or(self.rest().len());
        let rest = self.rest();
        let is_date = len == 10 && rest.as_bytes().get(4) == Some(&b'-');
        if is_date && rest[len..].starts_with(' ') && rest[len + 1..].starts_with(char::is_numeric)
        {
            len +=
                1 + rest[len + 1..].find(|ch: char| !is_part(ch)).unwrap_or(rest.len() - len - 1);
        }
        if len == 0 {
            return Err("expected a value".to_owned());
        }
        let raw = rest[..len].to_owned();
        self.pos += len;
        Ok(raw)
    }

    fn array(&mut self, path: &[String]) -> Parsed<()> {
        let mut element = path.to_vec();
        element.push("[]".to_owned());
        loop {
            self.gaps();
            if self.eat("]") {
                return Ok(());
            }
            self.value(element.clone())?;
            self.gaps();
            if !self.eat(",") {
                self.gaps();
                return self.expect("]");
            }
        }
    }

    fn inline_table(&mut self, path: Vec<String>) -> Parsed<()> {
        self.blanks();
        if self.eat("}") {
            return Ok(());
        }
        loop {
            let mut key = path.clone();
            key.extend(self.key_path("=")?);
            self.expect("=")?;
            self.blanks();
            self.value(key)?;
            self.blanks();
            if self.eat("}") {
                return Ok(());
            }
            self.expect(",")?;
            self.blanks();
        }
    }

    /// After the opening `"`: up to and including the closing one, escapes resolved.
    fn basic_string(&mut self) -> Parsed<String> {
        let mut out = String::new();
        loop {
            match self.peek() {
                None | Some('\n') => return Err("unterminated string".to_owned()),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    self.pos += 1;
                    out.push(self.escape()?);
                }
                Some(ch) => {
                    self.pos += ch.len_utf8();
                    out.push(ch);
                }
            }
        }
    }

    /// After the opening `"""`: a newline right after it is dropped, a backslash at the end of a
    /// line joins it with the next non-blank text.
    fn multiline_basic_string(&mut self) -> Parsed<String> {
        let _ = self.eat("\n") || self.eat("\r\n");
        let mut out = String::new();
        loop {
            if self.rest().starts_with("\"\"\"") {
                // Up to two quotes may end the content, right before the closing three.
                let quotes = self.rest().chars().take_while(|&ch| ch == '"').count().min(5);
                out.extend(std::iter::repeat_n('"', quotes - 3));
                self.pos += quotes;
                return Ok(out);
            }
            match self.peek() {
                None => return Err("unterminated multi-line string".to_owned()),
                Some('\\') => {
                    self.pos += 1;
                    let after = self.rest().trim_start_matches([' ', '\t']);
                    if after.starts_with('\n') || after.starts_with("\r\n") {
                        let trimmed = self.rest().len()
                            - self.rest().trim_start_matches([' ', '\t', '\r', '\n']).len();
                        self.pos += trimmed;
                    } else {
                        out.push(self.escape()?);
                    }
                }
                Some(ch) => {
                    self.pos += ch.len_utf8();
                    out.push(ch);
                }
            }
        }
    }

    /// After the opening `'`: up to and including the closing one, no escapes.
    fn literal_string(&mut self) -> Parsed<String> {
        let end = self
            .rest()
            .find(['\'', '\n'])
            .filter(|&at| self.rest()[at..].starts_with('\''))
            .ok_or("unterminated string")?;
        let out = self.rest()[..end].to_owned();
        self.pos += end + 1;
        Ok(out)
    }

    fn multiline_literal_string(&mut self) -> Parsed<String> {
        let _ = self.eat("\n") || self.eat("\r\n");
        let end = self.rest().find("'''").ok_or("unterminated multi-line string")?;
        let quotes = self.rest()[end..].chars().take_while(|&ch| ch == '\'').count().min(5);
        let out = self.rest()[..end + quotes - 3].to_owned();
        self.pos += end + quotes;
        Ok(out)
    }

    /// After a backslash: one escape sequence.
    fn escape(&mut self) -> Parsed<char> {
        let ch = self.peek().ok_or("unterminated escape")?;
        self.pos += ch.len_utf8();
        let hex = |reader: &mut Self, digits: usize| -> Parsed<char> {
            let code = reader
                .rest()
                .get(..digits)
                .and_then(|text| u32::from_str_radix(text, 16).ok())
                .and_then(char::from_u32)
                .ok_or("invalid unicode escape")?;
            reader.pos += digits;
            Ok(code)
        };
        Ok(match ch {
            'b' => '\u{8}',
            't' => '\t',
            'n' => '\n',
            'f' => '\u{c}',
            'r' => '\r',
            '"' => '"',
            '\\' => '\\',
            'u' => hex(self, 4)?,
            'U' => hex(self, 8)?,
            other => return Err(format!("invalid escape `\\{other}`")),
        })
    }
}

#[cfg(test)]
mod tests {

    /// Every string leaf of a document as the `toml` crate reads it, with the reader's path scheme
    /// (array elements, also the tables of an array of tables, under `[]`).
    fn toml_crate_strings(text: &str) -> Option<Vec<(Vec<String>, String)>> {
        fn walk(path: &mut Vec<String>, value: &toml::Value, out: &mut Vec<(Vec<String>, String)>) {
            match value {
                toml::Value::String(text) => out.push((path.clone(), text.clone())),
                toml::Value::Table(table) => {
                    for (key, value) in table {
                        path.push(key.clone());
                        walk(path, value, out);
                        path.pop();
                    }
                }
                toml::Value::Array(items) => {
                    path.push("[]".to_owned());
                    for item in items {
                        walk(path, item, out);
                    }
                    path.pop();
                }
                _ => {}
            }
        }
        let table: toml::Table = text.parse().ok()?;
        let mut out = Vec::new();
        walk(&mut Vec::new(), &toml::Value::Table(table), &mut out);
        out.sort();
        Some(out)
    }

    fn reader_strings(text: &str) -> Vec<(Vec<String>, String)> {
        let mut out: Vec<_> = super::parse(text)
            .unwrap_or_else(|err| panic!("the reader rejects a valid document: {err}\n{text}"))
            .into_iter()
            .filter_map(|leaf| match leaf.value {
                super::Value::String(text) => Some((leaf.path, text)),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    const TRICKY_TOML: &str = r#"
# A header inside strings and comments must not start a table.
[package]
name = "tricky"   # [workspace.metadata.memoshelve]
description = """
[workspace.metadata.memoshelve]
dir = "not this one" \
  continued ""quoted"" """
notes = '''
[package.metadata.memoshelve]
dir = 'nor this' '''
"quoted key" = 'C:\path\no\escapes'
escapes = "tab\there \"q\" \u00e9 \U0001F600 back\\slash"
keywords = ["a", "b,c", 'd]', """e
f""", [ "nested" ], { inner = "x" }]
dates = [1979-05-27 07:32:00Z, 1979-05-27, 07:32:00]
numbers = [1_000, +3.5e2, 0xff, inf, -nan, true]
empty-inline = {}

[[bin]]
name = "a"
path = "dir"

[workspace]
members = [
  "one", # comment, with a ] bracket
  "two",
]

[workspace.metadata]
memoshelve = { dir = "inline wins" }

[package.metadata.'memoshelve']
"dir" = "quoted table and key"

[target.'cfg(unix)'.dependencies]
libc = { version = "0.2", default-features = false }
dotted.key.here = "deep"
"#;

    #[test]
    fn the_toml_reader_agrees_with_the_toml_crate_on_every_string() {
        let mut corpus = vec![TRICKY_TOML.to_owned()];
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        for manifest in [
            "Cargo.toml",
            "memoshelve-build/Cargo.toml",
            "cargo-memoshelve/Cargo.toml",
            "examples/Cargo.toml",
        ] {
            corpus.push(std::fs::read_to_string(repo.join(manifest)).unwrap());
        }
        // Real-world manifests of every crate this build downloaded.
        let registry = std::env::var_os("CARGO_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cargo"))
            })
            .map(|home| home.join("registry/src"));
        for index in
            registry.iter().flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten()).flatten()
        {
            for krate in std::fs::read_dir(index.path()).into_iter().flatten().flatten().take(400) {
                if let Ok(text) = std::fs::read_to_string(krate.path().join("Cargo.toml.orig")) {
                    corpus.push(text);
                }
            }
        }
        let mut compared = 0;
        for text in &corpus {
            let Some(expected) = toml_crate_strings(text) else { continue };
            assert_eq!(reader_strings(text), expected, "in document:\n{text}");
            compared += 1;
        }
        assert!(compared > 5, "only {compared} documents compared");
        let tricky = reader_strings(TRICKY_TOML);
        let get = |path: &str| {
            let path: Vec<String> = path.split('.').map(str::to_owned).collect();
            tricky.iter().find(|(at, _)| *at == path).map(|(_, value)| value.as_str())
        };
        assert_eq!(get("workspace.metadata.memoshelve.dir"), Some("inline wins"));
        assert_eq!(get("package.metadata.memoshelve.dir"), Some("quoted table and key"));
        assert_eq!(get("package.escapes"), Some("tab\there \"q\" \u{e9} \u{1F600} back\\slash"));
    }

    #[test]
    fn the_toml_reader_reports_bad_documents_by_line_and_never_panics() {
        for (text, line) in [
            ("a = \"unterminated\n", 1),
            ("[ok]\nb = 1\nc = \"\\q\"\n", 3),
            ("x = 1 2\n", 1),
            ("[t\n", 1),
            ("k = '''never closed", 1),
            ("\n\n= 3", 3),
        ] {
            let err = super::parse(text).unwrap_err();
            assert!(err.starts_with(&format!("line {line}:")), "{text:?} gave {err:?}");
        }
        // Mutations of a real document: any outcome but a panic.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let bytes = TRICKY_TOML.as_bytes();
        for _ in 0..3000 {
            let mut doc = bytes.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() % doc.len() as u64) as usize;
                match next() % 3 {
                    0 => {
                        let alphabet = b"\"'[]{}=,.\\\n#x1 ";
                        doc[at] = alphabet[(next() % alphabet.len() as u64) as usize];
                    }
                    1 => {
                        doc.remove(at);
                    }
                    _ => doc.truncate(at),
                }
                if doc.is_empty() {
                    break;
                }
            }
            if let Ok(text) = std::str::from_utf8(&doc) {
                let _ = super::parse(text);
            }
        }
    }
}
