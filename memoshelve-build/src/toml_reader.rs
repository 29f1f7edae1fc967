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
