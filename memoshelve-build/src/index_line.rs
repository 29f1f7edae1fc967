//! A strict reader of the one JSON shape of a memoshelve index line, tried before serde_json.
//!
//! cacache 13 writes each line as `{"key":…,"integrity":…,"time":…,"size":…,"metadata":…,
//! "raw_metadata":…}` with these fields in this order, and memoshelve's metadata is an
//! [`EntryRecord`]. serde_json reads such a line at opt-level 0 (where build scripts compile their
//! build-dependencies) through a visitor call per token and several function calls per byte:
//! most of a disk hit's instructions. This reader takes exactly that shape with plain loops and
//! indexing, and answers `None` for anything else (whitespace, another field, a duplicate, a
//! float, an overflow, a control character, trailing bytes): the caller then asks serde_json. It
//! never answers differently from `serde_json::from_str::<HitLine>`: every shape accepted here is
//! one serde_json accepts with the same meaning, and a string with a `\u` escape is decoded by
//! serde_json itself.
//!
//! [`line`] writes that shape, byte for byte what `cacache::index::insert` writes for the same
//! record (a test compares them on random records). cacache serializes the record into a
//! `serde_json::Value`, then the whole line, escaping every string a byte at a time through
//! serde_json's formatter: at opt-level 0 that was a third of a miss, which now costs little
//! more than cacache's own sha256 of the line.

use std::fmt::Write as _;

use crate::disk::{EntryRecord, HitLine};
use crate::key::KeyInput;

/// The index line of `record` under `index_key`, as cacache 13 writes it:
/// `\n<sha256 hex of the JSON>\t<JSON>`, the JSON being cacache's entry (`time` is the record's
/// creation time, `size` its size) with the record as metadata, its fields in the order a
/// `serde_json::Value` map gives them (sorted by name).
pub(crate) fn line(index_key: &str, integrity: &str, record: &EntryRecord) -> String {
    use sha2::Digest as _;
    let inline = record.inline.as_ref().map_or(0, String::len);
    let mut json = String::with_capacity(400 + inline + record.args.len());
    json.push_str("{\"key\":");
    string(&mut json, index_key);
    json.push_str(",\"integrity\":");
    string(&mut json, integrity);
    let _ = write!(json, ",\"time\":{},\"size\":{}", record.created_ms, record.size);
    json.push_str(",\"metadata\":{\"args\":");
    string(&mut json, &record.args);
    json.push_str(",\"blake3\":");
    string(&mut json, &record.blake3);
    let _ = write!(
        json,
        ",\"compute_us\":{},\"created_ms\":{},\"format\":{}",
        record.compute_us, record.created_ms, record.format
    );
    if let Some(inline) = &record.inline {
        json.push_str(",\"inline\":");
        string(&mut json, inline);
    }
    json.push_str(",\"inputs\":[");
    for (index, input) in record.inputs.iter().enumerate() {
        json.push_str(if index == 0 { "{\"kind\":" } else { ",{\"kind\":" });
        string(&mut json, &input.kind);
        json.push_str(",\"name\":");
        string(&mut json, &input.name);
        json.push_str(",\"value\":");
        string(&mut json, &input.value);
        json.push('}');
    }
    json.push_str("],\"key\":");
    string(&mut json, &record.key);
    json.push_str(",\"name\":");
    string(&mut json, &record.name);
    let _ = write!(json, ",\"size\":{}", record.size);
    json.push_str(",\"type_name\":");
    string(&mut json, &record.type_name);
    json.push_str(",\"version\":");
    string(&mut json, &record.version);
    json.push_str("},\"raw_metadata\":null}");
    let hash = crate::key::hex_lower(&sha2::Sha256::digest(json.as_bytes()));
    let mut line = String::with_capacity(json.len() + hash.len() + 2);
    line.push('\n');
    line.push_str(&hash);
    line.push('\t');
    line.push_str(&json);
    line
}

/// `text` as a JSON string, escaped as serde_json escapes it: `"` and `\\`, the control
/// characters (`\b \t \n \f \r` by name, the others as `\u00xx`); everything else as is.
/// Runs without escapes are copied whole; the scan is plain indexing.
fn string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.push('"');
    let (mut start, mut at) = (0, 0);
    while at < bytes.len() {
        let byte = bytes[at];
        let named = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => {
                at += 1;
                continue;
            }
        };
        out.push_str(&text[start..at]);
        if named.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(named);
        }
        at += 1;
        start = at;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// The line `json` (without its hash and tab) when it has exactly the shape cacache and
/// memoshelve write; `None` means "not sure": read it with serde_json.
pub(crate) fn parse(json: &str) -> Option<HitLine> {
    let bytes = json.as_bytes();
    let mut reader = Reader { text: json, bytes, words: bytes.as_chunks::<8>().0, at: 0 };
    reader.literal(b"{\"key\":")?;
    let key = reader.string()?;
    reader.literal(b",\"integrity\":")?;
    let integrity = if reader.null() { None } else { Some(reader.string()?) };
    // `time` and `size` are cacache's; a hit reads neither, serde_json only checks they are JSON.
    reader.literal(b",\"time\":")?;
    reader.integer()?;
    reader.literal(b",\"size\":")?;
    reader.integer()?;
    reader.literal(b",\"metadata\":")?;
    let metadata = if reader.null() { None } else { Some(reader.record()?) };
    reader.literal(b",\"raw_metadata\":null}")?;
    if reader.at != reader.bytes.len() {
        return None;
    }
    Some(HitLine { key, integrity, metadata })
}

/// A position in the line. `text`, `bytes` and `words` are the same line: text to slice, bytes
/// to scan, and its whole eight-byte words (split once per line: at opt-level 0 `as_chunks`
/// costs some hundreds of instructions).
struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    words: &'a [[u8; 8]],
    at: usize,
}

/// Fills a field once: a second value for it is a duplicate, which serde rejects.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// Eight copies of a byte in a word. (Used for constants only: a `const fn` called at run time
/// is a call at opt-level 0.)
const fn splat(byte: u8) -> u64 {
    0x0101_0101_0101_0101 * byte as u64
}

const QUOTES: u64 = splat(b'"');
const BACKSLASHES: u64 = splat(b'\\');
const ONES: u64 = splat(1);
const SPACES: u64 = splat(b' ');
const HIGH_BITS: u64 = splat(0x80);
/// Eight bytes that are plain in a string, to mask the bytes of a word before a string starts.
const PLAIN: u64 = splat(b'a');

/// Whether one of a word's eight bytes ends a plain run of a JSON string: a quote, a backslash
/// or a control character. (The classic "has a zero byte" and "has a byte below n" bit tricks:
/// exact as yes-or-no answers, and this is only a filter before the byte-by-byte look.)
fn ends_plain_run(word: u64) -> bool {
    let quote = word ^ QUOTES;
    let backslash = word ^ BACKSLASHES;
    let zero_quote = quote.wrapping_sub(ONES) & !quote;
    let zero_backslash = backslash.wrapping_sub(ONES) & !backslash;
    let control = word.wrapping_sub(SPACES) & !word;
    (zero_quote | zero_backslash | control) & HIGH_BITS != 0
}

impl Reader<'_> {
    /// The index of the first byte at or after `from` that is a quote, a backslash or a control
    /// character (`bytes.len()` if none): a word of eight bytes a step while none of them is,
    /// because a byte-by-byte loop at opt-level 0 costs some thirty instructions a byte, and most
    /// of a line is the long plain strings of its hashes and inline value.
    fn plain_run_end(&self, from: usize) -> usize {
        let (bytes, words) = (self.bytes, self.words);
        let mut at = from;
        let mut word = from / 8;
        if word < words.len() {
            // The word holding `from`, its bytes before `from` (the first in memory order, the
            // low ones read little-endian) replaced by plain ones.
            let before = (1u64 << (from % 8 * 8)) - 1;
            let first = u64::from_le_bytes(words[word]) & !before | PLAIN & before;
            if !ends_plain_run(first) {
                word += 1;
                while word < words.len() && !ends_plain_run(u64::from_le_bytes(words[word])) {
                    word += 1;
                }
                at = word * 8;
            }
        }
        while at < bytes.len() {
            let byte = bytes[at];
            if byte == b'"' || byte == b'\\' || byte < 0x20 {
                break;
            }
            at += 1;
        }
        at
    }

    /// The next byte, consumed.
    fn next(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    /// Consumes `literal`, which must come next.
    fn literal(&mut self, literal: &[u8]) -> Option<()> {
        let end = self.at + literal.len();
        if end > self.bytes.len() || &self.bytes[self.at..end] != literal {
            return None;
        }
        self.at = end;
        Some(())
    }

    /// Consumes a `null` if one comes next.
    fn null(&mut self) -> bool {
        self.literal(b"null").is_some()
    }

    /// A JSON integer that fits a u64: digits without a leading zero. Anything else (a sign, a
    /// fraction, an exponent, more than `u64::MAX`) is `None` here or a byte the caller does not
    /// expect next, so the line goes to serde_json; neither cacache nor memoshelve writes one.
    fn integer(&mut self) -> Option<u64> {
        let bytes = self.bytes;
        let mut at = self.at;
        let first = *bytes.get(at)?;
        if first == b'0' {
            self.at = at + 1;
            return Some(0);
        }
        if !matches!(first, b'1'..=b'9') {
            return None;
        }
        // Nineteen digits always fit; the twentieth may not, a twenty-first never does.
        let always_fits = at + 19;
        let mut value: u64 = 0;
        while at < bytes.len() {
            // Not `is_ascii_digit`: no call per byte at opt-level 0 (`wrapping_sub` is inlined).
            let digit = bytes[at].wrapping_sub(b'0');
            if digit > 9 {
                break;
            }
            let digit = digit as u64;
            value = if at < always_fits {
                value * 10 + digit
            } else if at == always_fits {
                value.checked_mul(10)?.checked_add(digit)?
            } else {
                return None;
            };
            at += 1;
        }
        self.at = at;
        Some(value)
    }

    /// A JSON string. Its plain runs are found by [`Reader::plain_run_end`] and copied as they
    /// are; the simple escapes (`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`) are decoded here
    /// as serde_json decodes them; a string with a `\u` escape is decoded by serde_json itself,
    /// so that surrogate pairs and lone surrogates mean exactly what they mean to serde_json. A
    /// control character (JSON forbids them in strings) or any other escape: `None`.
    fn string(&mut self) -> Option<String> {
        let bytes = self.bytes;
        if self.at >= bytes.len() || bytes[self.at] != b'"' {
            return None;
        }
        let start = self.at + 1;
        let mut at = self.plain_run_end(start);
        if at < bytes.len() && bytes[at] == b'"' {
            self.at = at + 1;
            return Some(self.text[start..at].to_owned());
        }
        let mut decoded = String::new();
        let mut run = start;
        loop {
            if at >= bytes.len() {
                return None;
            }
            if bytes[at] == b'"' {
                decoded.push_str(&self.text[run..at]);
                self.at = at + 1;
                return Some(decoded);
            }
            if bytes[at] != b'\\' || at + 1 >= bytes.len() {
                return None;
            }
            decoded.push_str(&self.text[run..at]);
            decoded.push(match bytes[at + 1] {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => return self.serde_string(start - 1),
                _ => return None,
            });
            run = at + 2;
            at = self.plain_run_end(run);
        }
    }

    /// The string whose opening quote is at `quote`, decoded by serde_json. It ends at the first
    /// quote that no backslash escapes (no escape's second byte is a closing quote); if that is
    /// not where serde_json ends it, serde_json finds the slice malformed.
    fn serde_string(&mut self, quote: usize) -> Option<String> {
        let bytes = self.bytes;
        let mut at = quote + 1;
        while at < bytes.len() {
            match bytes[at] {
                b'"' => {
                    self.at = at + 1;
                    return serde_json::from_str(&self.text[quote..at + 1]).ok();
                }
                b'\\' => at += 2,
                _ => at += 1,
            }
        }
        None
    }

    /// An object field's name and colon, when it is `"name":` exactly (serde matches names after
    /// unescaping them; no name here needs an escape, so one is refused).
    fn name(&mut self, name: &[u8]) -> bool {
        let end = self.at + name.len() + 3;
        if end > self.bytes.len()
            || self.bytes[self.at] != b'"'
            || &self.bytes[self.at + 1..end - 2] != name
            || self.bytes[end - 2] != b'"'
            || self.bytes[end - 1] != b':'
        {
            return false;
        }
        self.at = end;
        true
    }

    /// The first byte of the next field's name, which picks the field to try.
    fn name_initial(&self) -> Option<u8> {
        self.bytes.get(self.at + 1).copied()
    }

    /// An [`EntryRecord`] object, its fields in any order (serde_json's `preserve_order` feature,
    /// if anything in a build turns it on, writes them in declaration order, not sorted), each
    /// at most once, none unknown. `inputs` and `inline` may be missing, as their serde defaults
    /// allow.
    fn record(&mut self) -> Option<EntryRecord> {
        let (mut format, mut name, mut version, mut key, mut type_name) =
            (None, None, None, None, None);
        let (mut created_ms, mut compute_us, mut size) = (None, None, None);
        let (mut blake3, mut args, mut inputs, mut inline) = (None, None, None, None);
        if self.next()? != b'{' {
            return None;
        }
        loop {
            // The initial picks the one name to compare (two for `c` and `i`): no scan for the
            // closing quote and no comparison with every name.
            match self.name_initial()? {
                b'a' if self.name(b"args") => once(&mut args, self.string()?)?,
                b'b' if self.name(b"blake3") => once(&mut blake3, self.string()?)?,
                b'c' if self.name(b"compute_us") => once(&mut compute_us, self.integer()?)?,
                b'c' if self.name(b"created_ms") => once(&mut created_ms, self.integer()?)?,
                b'f' if self.name(b"format") => {
                    once(&mut format, u32::try_from(self.integer()?).ok()?)?;
                }
                b'i' if self.name(b"inline") => {
                    let value = if self.null() { None } else { Some(self.string()?) };
                    once(&mut inline, value)?;
                }
                b'i' if self.name(b"inputs") => once(&mut inputs, self.inputs()?)?,
                b'k' if self.name(b"key") => once(&mut key, self.string()?)?,
                b'n' if self.name(b"name") => once(&mut name, self.string()?)?,
                b's' if self.name(b"size") => once(&mut size, self.integer()?)?,
                b't' if self.name(b"type_name") => once(&mut type_name, self.string()?)?,
                b'v' if self.name(b"version") => once(&mut version, self.string()?)?,
                _ => return None,
            }
            match self.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
        Some(EntryRecord {
            format: format?,
            name: name?,
            version: version?,
            key: key?,
            type_name: type_name?,
            created_ms: created_ms?,
            compute_us: compute_us?,
            size: size?,
            blake3: blake3?,
            args: args?,
            inputs: inputs.unwrap_or_default(),
            inline: inline.unwrap_or_default(),
        })
    }

    /// The `inputs` array: [`KeyInput`] objects, possibly none.
    fn inputs(&mut self) -> Option<Vec<KeyInput>> {
        let mut inputs = Vec::new();
        if self.next()? != b'[' {
            return None;
        }
        if self.bytes.get(self.at) == Some(&b']') {
            self.at += 1;
            return Some(inputs);
        }
        loop {
            inputs.push(self.input()?);
            match self.next()? {
                b',' => {}
                b']' => return Some(inputs),
                _ => return None,
            }
        }
    }

    /// One [`KeyInput`] object: `kind`, `name` and `value`, in any order, each once.
    fn input(&mut self) -> Option<KeyInput> {
        let (mut kind, mut name, mut value) = (None, None, None);
        if self.next()? != b'{' {
            return None;
        }
        loop {
            match self.name_initial()? {
                b'k' if self.name(b"kind") => once(&mut kind, self.string()?)?,
                b'n' if self.name(b"name") => once(&mut name, self.string()?)?,
                b'v' if self.name(b"value") => once(&mut value, self.string()?)?,
                _ => return None,
            }
            match self.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
        Some(KeyInput { kind: kind?, name: name?, value: value? })
    }
}
