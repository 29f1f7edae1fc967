//! Call arguments as compact JSON for people, written by a small `serde::Serializer` that gives
//! the text `serde_json::to_string` gives (its escapes, its float layout, its quoted integer and
//! bool map keys), but stops once the text reaches a byte limit, so large arguments are never
//! serialized whole just to be cut; it is what `cargo memoshelve` shows for an entry's arguments.

use std::fmt::{self, Display, LowerExp};
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::Serialize;
use serde::ser::{self, SerializeSeq as _};

/// `value` as compact JSON, at most about `limit` bytes (cut at a char boundary): what
/// `cargo memoshelve` shows for an entry's arguments.
pub(crate) fn json_text<T: Serialize + ?Sized>(value: &T, limit: usize) -> String {
    let mut json = Json { text: String::new(), limit };
    match value.serialize(&mut json) {
        Ok(()) | Err(Error::Full) => json.text,
        Err(Error::Unrenderable) => "<not renderable as JSON>".to_owned(),
    }
}

/// Why serialization stopped.
#[derive(Debug)]
enum Error {
    /// The text reached the limit: it is long enough, not wrong.
    Full,
    /// The value has no JSON form (a map key that is not a string, number or bool), or its
    /// `Serialize` impl failed.
    Unrenderable,
}

impl Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Full => "the rendering is long enough",
            Error::Unrenderable => "not renderable as JSON",
        })
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: Display>(_msg: T) -> Self {
        Error::Unrenderable
    }
}

/// The text written so far, and how long it may grow.
struct Json {
    text: String,
    limit: usize,
}

impl Json {
    /// Appends `piece`, or as much of it as fits and then [`Error::Full`].
    fn push(&mut self, piece: &str) -> Result<(), Error> {
        let room = self.limit - self.text.len();
        if piece.len() <= room {
            self.text.push_str(piece);
            return Ok(());
        }
        self.text.push_str(prefix(piece, room));
        Err(Error::Full)
    }

    /// `text` as a JSON string, escaped as serde_json escapes it.
    fn string(&mut self, text: &str) -> Result<(), Error> {
        // Escaping only lengthens, so no more of `text` than there is room for can show.
        let room = self.limit - self.text.len();
        let shown = prefix(text, room);
        self.push("\"")?;
        let mut start = 0;
        for (at, byte) in shown.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..0x20 => "",
                _ => continue,
            };
            self.push(&shown[start..at])?;
            if escape.is_empty() {
                self.push(&format!("\\u{byte:04x}"))?;
            } else {
                self.push(escape)?;
            }
            start = at + 1;
        }
        self.push(&shown[start..])?;
        if shown.len() < text.len() {
            return Err(Error::Full);
        }
        self.push("\"")
    }

    /// A finite float as serde_json writes it: plainly while its decimal exponent is in
    /// `plain` (`0.001`, `1.5`, `100.0`), else as `1.5e+20`, `1e-7`.
    fn float<F>(&mut self, value: F, plain: RangeInclusive<i32>) -> Result<(), Error>
    where
        F: Copy + PartialEq + Display + LowerExp + FromStr,
    {
        // `{:e}` writes the fewest digits that read back as `value`, the nearest such, but
        // breaks a tie upwards, where serde_json (zmij) breaks it to even; so does `{:.N$e}`
        // (the exact value rounded to N digits), which is the one to write when it reads back.
        let shortest = format!("{value:e}");
        let n_digits = shortest.bytes().take_while(|&byte| byte != b'e');
        let n_digits = n_digits.filter(u8::is_ascii_digit).count();
        let nearest = format!("{value:.*e}", n_digits - 1);
        let scientific = if nearest.parse().ok() == Some(value) { nearest } else { shortest };
        let (mantissa, exponent) = scientific.split_once('e').expect("`{:e}` writes an exponent");
        let exponent: i32 = exponent.parse().expect("`{:e}` writes an integer exponent");
        if !plain.contains(&exponent) {
            return self.push(&if exponent < 0 {
                scientific
            } else {
                scientific.replace('e', "e+")
            });
        }
        let (sign, mantissa) =
            mantissa.strip_prefix('-').map_or(("", mantissa), |rest| ("-", rest));
        let digits = mantissa.replace('.', "");
        let text = match usize::try_from(exponent) {
            Ok(point) if point + 1 >= digits.len() => {
                format!("{sign}{digits}{}.0", "0".repeat(point + 1 - digits.len()))
            }
            Ok(point) => format!("{sign}{}.{}", &digits[..=point], &digits[point + 1..]),
            Err(_) => {
                format!("{sign}0.{}{digits}", "0".repeat(exponent.unsigned_abs() as usize - 1))
            }
        };
        self.push(&text)
    }

    /// Opens an array or object; `close` ends it (and whatever encloses it).
    fn compound(&mut self, open: &str, close: &'static str) -> Result<Compound<'_>, Error> {
        self.push(open)?;
        Ok(Compound { json: self, first: true, close })
    }

    /// `{"variant":` for the externally tagged variants; the caller closes the brace.
    fn tag(&mut self, variant: &str) -> Result<(), Error> {
        self.push("{")?;
        self.string(variant)?;
        self.push(":")
    }
}

/// The longest start of `text` at most `len` bytes long that ends on a char boundary.
fn prefix(text: &str, len: usize) -> &str {
    let mut end = len.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl<'a> ser::Serializer for &'a mut Json {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, value: bool) -> Result<(), Error> {
        self.push(if value { "true" } else { "false" })
    }

    fn serialize_i8(self, value: i8) -> Result<(), Error> {
        self.push(&value.to_string())
    }

    fn serialize_i16(self, value: i16) -> Result<(), Error> {
        self.push(&value.to_string())
    }

    fn serialize_i32(self, value: i32) -> Result<(), Error> {
        self.push(&value.to_string())
    }

    fn serialize_i64(self, value: i64) -> Result<(), Error> {
        self.push(&value.to_string())
    }

    fn serialize_i128(self, value: i128) -> Result<(), Error> {
        self.push(&value.to_string())
    }

    fn serialize_u8(self, value: u8) -> Result<(), Error> {
        self.push(&value.to_string())
    }

    fn serialize_u16(self, value: u16) -> Result<(), Error> {
        self.push(&value.to_string())
    }

    fn serialize_u32(self, value: u32) -> Result<(), Error> {
        self.push(&value.to_string())
    }

    fn serialize_u64(self, value: u64) -> Result<(), Error> {
        self.push(&value.to_string())
    }

    fn serialize_u128(self, value: u128) -> Result<(), Error> {
        self.push(&value.to_string())
    }

    fn serialize_f32(self, value: f32) -> Result<(), Error> {
        if value.is_finite() { self.float(value, -6..=12) } else { self.push("null") }
    }

    fn serialize_f64(self, value: f64) -> Result<(), Error> {
        if value.is_finite() { self.float(value, -5..=15) } else { self.push("null") }
    }

    fn serialize_char(self, value: char) -> Result<(), Error> {
        self.string(value.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, value: &str) -> Result<(), Error> {
        self.string(value)
    }

    fn serialize_bytes(self, value: &[u8]) -> Result<(), Error> {
        let mut seq = self.serialize_seq(Some(value.len()))?;
        for byte in value {
            seq.serialize_element(byte)?;
        }
        seq.end()
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.push("null")
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.push("null")
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.push("null")
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.string(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.tag(variant)?;
        value.serialize(&mut *self)?;
        self.push("}")
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, Error> {
        self.compound("[", "]")
    }

    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a>, Error> {
        self.compound("[", "]")
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, Error> {
        self.compound("[", "]")
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, Error> {
        self.tag(variant)?;
        self.compound("[", "]}")
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>, Error> {
        self.compound("{", "}")
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Compound<'a>, Error> {
        self.compound("{", "}")
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, Error> {
        self.tag(variant)?;
        self.compound("{", "}}")
    }
}

/// An array or object being written: the `SerializeSeq`, `SerializeMap`, ... of [`Json`].
struct Compound<'a> {
    json: &'a mut Json,
    first: bool,
    close: &'static str,
}

impl Compound<'_> {
    fn comma(&mut self) -> Result<(), Error> {
        if std::mem::take(&mut self.first) { Ok(()) } else { self.json.push(",") }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.comma()?;
        value.serialize(&mut *self.json)
    }

    fn field<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<(), Error> {
        self.comma()?;
        self.json.string(name)?;
        self.json.push(":")?;
        value.serialize(&mut *self.json)
    }

    /// A map key: a string as it is, a number or bool quoted (as serde_json allows), anything
    /// else unrenderable. It is written aside first; the first byte of a JSON value tells
    /// which of those it is (`null` for None, unit and NaN starts with `n`).
    fn key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.comma()?;
        let mut aside = Json { text: String::new(), limit: self.json.limit - self.json.text.len() };
        let written = key.serialize(&mut aside);
        match aside.text.bytes().next() {
            Some(b'"') => self.json.push(&aside.text)?,
            Some(b'0'..=b'9' | b'-' | b't' | b'f') => {
                self.json.push("\"")?;
                self.json.push(&aside.text)?;
                self.json.push("\"")?;
            }
            // Nothing written: no room left, or a failure before the first byte.
            None => return written,
            Some(_) => return Err(Error::Unrenderable),
        }
        written
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.json.push(self.close)
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.json.push(self.close)
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.json.push(self.close)
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.json.push(self.close)
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.key(key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.json.push(":")?;
        value.serialize(&mut *self.json)
    }

    fn end(self) -> Result<(), Error> {
        self.json.push(self.close)
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(name, value)
    }

    fn end(self) -> Result<(), Error> {
        self.json.push(self.close)
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(name, value)
    }

    fn end(self) -> Result<(), Error> {
        self.json.push(self.close)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use proptest::prelude::*;
    use serde::{Serialize, Serializer};

    use super::json_text;

    const FALLBACK: &str = "<not renderable as JSON>";

    /// `value` renders, unbounded, exactly as serde_json writes it.
    #[track_caller]
    fn check<T: Serialize + ?Sized>(value: &T) {
        let expected = serde_json::to_string(value).expect("serde_json renders it");
        assert_eq!(json_text(value, usize::MAX), expected);
    }

    /// `value` has no JSON form for serde_json either, and renders as the fallback.
    #[track_caller]
    fn check_unrenderable<T: Serialize + ?Sized>(value: &T) {
        assert!(serde_json::to_string(value).is_err(), "serde_json renders it");
        assert_eq!(json_text(value, usize::MAX), FALLBACK);
    }

    #[derive(Serialize)]
    struct Unit;

    #[derive(Serialize)]
    struct Newtype(u8);

    #[derive(Serialize)]
    struct Pair(i32, String);

    #[derive(Serialize)]
    struct Empty {}

    #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
    struct Id(u16);

    #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
    enum Kind {
        Alpha,
        Beta,
    }

    #[derive(Serialize)]
    enum Shape {
        Unit,
        Newtype(Option<Box<Shape>>),
        Tuple(u8, String, Vec<Shape>),
        EmptyTuple(),
        Struct { name: String, children: Vec<Shape> },
        EmptyStruct {},
    }

    #[derive(Serialize)]
    struct Record {
        id: u64,
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        kept: Vec<u8>,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_skipped: Option<u8>,
        shapes: Vec<Shape>,
        unit: Unit,
        newtype: Newtype,
        pair: Pair,
        empty: Empty,
        nothing: (),
        path: PathBuf,
        #[serde(rename = "re\"named")]
        renamed: bool,
    }

    /// A byte string, through `serialize_bytes`.
    struct Bytes<'a>(&'a [u8]);

    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self.0)
        }
    }

    /// A map from any keys, in the given order.
    struct Pairs<K, V>(Vec<(K, V)>);

    impl<K: Serialize, V: Serialize> Serialize for Pairs<K, V> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_map(self.0.iter().map(|(key, value)| (key, value)))
        }
    }

    /// `count` numbers, counting in `visited` each one handed to the serializer.
    struct Counted<'a> {
        count: u32,
        visited: &'a Cell<u32>,
    }

    impl Serialize for Counted<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq as _;
            let mut seq = serializer.serialize_seq(Some(self.count as usize))?;
            for number in 0..self.count {
                self.visited.set(self.visited.get() + 1);
                seq.serialize_element(&number)?;
            }
            seq.end()
        }
    }

    /// A value whose `Serialize` impl fails.
    struct Failing;

    impl Serialize for Failing {
        fn serialize<S: Serializer>(&self, _serializer: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }

    fn every_char_kind() -> String {
        let mut text: String = (0u8..0x80).map(char::from).collect();
        text.push_str(
            "\"quoted\" back\\slash \\\" é ü ß 漢字 🦀 \u{2028}\u{2029}\u{feff}\u{ffff}\u{10ffff}",
        );
        text
    }

    #[test]
    fn structs_and_enums_of_every_kind_render_as_serde_json() {
        let leaf = Shape::Struct { name: "leaf".to_owned(), children: vec![] };
        let shapes = vec![
            Shape::Unit,
            Shape::Newtype(None),
            Shape::Newtype(Some(Box::new(Shape::Unit))),
            Shape::Tuple(7, "t\n".to_owned(), vec![Shape::EmptyTuple(), Shape::EmptyStruct {}]),
            Shape::Struct { name: "root".to_owned(), children: vec![leaf, Shape::Unit] },
        ];
        let record = Record {
            id: u64::MAX,
            name: every_char_kind(),
            skipped: None,
            kept: vec![1, 2],
            last_skipped: None,
            shapes,
            unit: Unit,
            newtype: Newtype(9),
            pair: Pair(-3, "p".to_owned()),
            empty: Empty {},
            nothing: (),
            path: PathBuf::from("dir/sub dir/file.rs"),
            renamed: true,
        };
        check(&record);
        check(&Record { skipped: Some(1), kept: vec![], last_skipped: Some(2), ..record });
        check(&[Shape::Unit, Shape::EmptyTuple(), Shape::EmptyStruct {}]);
        check(&Unit);
        check(&Newtype(0));
        check(&Pair(i32::MIN, String::new()));
        check(&Empty {});
    }

    #[test]
    fn std_types_render_as_serde_json() {
        check(&());
        check(&None::<u8>);
        check(&Some(Some(5u8)));
        check(&Some(None::<u8>));
        check(&Vec::<u8>::new());
        check(&vec![vec![1u8], vec![], vec![2, 3]]);
        check(&(1u8, "two", [3.5f64], (), (Some('4'),)));
        check(&[true, false]);
        check(&Bytes(&[]));
        check(&Bytes(&[0, 1, 255]));
        check(&PathBuf::from("/abs/päth\\with\"quotes"));
        check(&std::net::Ipv4Addr::new(127, 0, 0, 1));
        check(&std::time::Duration::from_millis(1500));
        check("");
        check(&every_char_kind());
        for c in every_char_kind().chars() {
            check(&c);
        }
    }

    #[test]
    fn integers_at_their_extremes_render_as_serde_json() {
        check(&(i8::MIN, i8::MAX, i16::MIN, i16::MAX, i32::MIN, i32::MAX, i64::MIN, i64::MAX));
        check(&(u8::MAX, u16::MAX, u32::MAX, u64::MAX, 0u64, -1i64));
        check(&(i128::MIN, i128::MAX, u128::MIN, u128::MAX));
    }

    #[test]
    fn floats_render_as_serde_json() {
        let doubles = [
            0.0,
            -0.0,
            1.0,
            -1.5,
            0.1,
            1.0 / 3.0,
            100.0,
            1e15,
            1e16,
            1.5e16,
            123456789012345680.0,
            1e-5,
            1e-6,
            1.5e-7,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            f64::EPSILON,
            5e-324,
            // A tie between two shortest forms: serde_json breaks it to even (`.62`).
            f64::from_bits(14044170033625038836),
            // A power of two, whose nearest 16 digits do not read back.
            f64::from_bits(27021597764222976),
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for double in doubles {
            check(&double);
        }
        let singles = [
            0.0,
            -0.0,
            0.1,
            1e12,
            1e13,
            1.5e13,
            1e-6,
            1e-7,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            // Ties (1722690.25, 62684.0625): serde_json breaks them to even.
            f32::from_bits(1238518290),
            f32::from_bits(1198840848),
            f32::from_bits(1820327936),
            f32::from_bits(260046848),
        ];
        for single in singles.into_iter().chain([f32::NAN, f32::INFINITY]) {
            check(&single);
        }
    }

    #[test]
    fn maps_render_as_serde_json_with_the_keys_it_accepts() {
        let by_name: BTreeMap<String, Vec<u8>> =
            [(String::new(), vec![]), ("a\"b".to_owned(), vec![1]), ("ü\n".to_owned(), vec![2])]
                .into();
        check(&by_name);
        check(&BTreeMap::<String, u8>::new());
        check(&BTreeMap::from([(0u32, "zero"), (u32::MAX, "max")]));
        check(&BTreeMap::from([(i128::MIN, 1u8), (-1, 2), (i128::MAX, 3)]));
        check(&BTreeMap::from([(false, 0u8), (true, 1)]));
        check(&BTreeMap::from([('"', 0u8), ('\u{1}', 1), ('🦀', 2)]));
        check(&BTreeMap::from([(Kind::Alpha, 0u8), (Kind::Beta, 1)]));
        check(&BTreeMap::from([(Id(7), BTreeMap::from([(Id(8), ())]))]));
        check(&BTreeMap::from([(Some(3u8), 0u8)]));
        check(&Pairs(vec![(1.5f64, 0u8), (-0.0, 1), (1e20, 2), (2.5e-9, 3)]));
        check(&Pairs(vec![(0.1f32, 0u8)]));
    }

    #[test]
    fn a_key_serde_json_refuses_renders_as_the_fallback() {
        check_unrenderable(&Pairs(vec![(Pair(1, "x".to_owned()), 0u8)]));
        check_unrenderable(&Pairs(vec![(Empty {}, 0u8)]));
        check_unrenderable(&Pairs(vec![(vec![1u8], 0u8)]));
        check_unrenderable(&Pairs(vec![((), 0u8)]));
        check_unrenderable(&Pairs(vec![(Unit, 0u8)]));
        check_unrenderable(&Pairs(vec![(None::<u8>, 0u8)]));
        check_unrenderable(&Pairs(vec![(f64::NAN, 0u8)]));
        check_unrenderable(&Pairs(vec![(Shape::Newtype(None), 0u8)]));
        check_unrenderable(&Pairs(vec![(Bytes(b"k"), 0u8)]));
        // Deep inside, after other output.
        check_unrenderable(&(vec!["x"; 10], Pairs(vec![("ok", 1u8)]), Pairs(vec![(Unit, 0u8)])));
        check_unrenderable(&[Failing]);
    }

    #[test]
    fn a_failure_past_the_limit_is_a_long_enough_rendering() {
        let value = (vec!["x"; 100], Pairs(vec![(Unit, 0u8)]));
        let text = json_text(&value, 50);
        assert_eq!(text, r#"[["x","x","x","x","x","x","x","x","x","x","x","x","#);
        assert_eq!(json_text(&value, usize::MAX), FALLBACK);
    }

    #[test]
    fn the_limit_stops_serialization_early() {
        let visited = Cell::new(0);
        let value = Counted { count: 1_000_000, visited: &visited };
        let text = json_text(&value, 204);
        assert!(visited.get() < 100, "{} numbers visited", visited.get());
        assert!(text.len() <= 204, "{} bytes", text.len());
        let unbounded = json_text(&Counted { count: 200, visited: &Cell::new(0) }, usize::MAX);
        assert!(unbounded.starts_with(&text) && text.len() >= 200, "{text}");
    }

    #[test]
    fn a_long_string_is_cut_at_a_char_boundary_near_the_limit() {
        let value = ("é".repeat(1000), "🦀\u{1}".repeat(1000));
        let full = serde_json::to_string(&value).unwrap();
        for limit in 0..8100 {
            let text = json_text(&value, limit);
            assert!(full.starts_with(&text), "{limit}: {text}");
            assert!(
                text.len() <= limit && text.len() + 4 > limit.min(full.len()),
                "{limit}: {text}"
            );
        }
    }

    proptest! {
        #[test]
        fn random_strings_render_as_serde_json(text in any::<String>(), ascii in "[\\x00-\\x7f]*") {
            check(&text);
            check(&ascii);
        }

        #[test]
        fn random_records_render_as_serde_json(
            records in proptest::collection::vec(
                (any::<u64>(), any::<String>(), any::<Option<bool>>()), 0..20),
        ) {
            check(&records);
        }

        #[test]
        fn random_floats_render_as_serde_json(double in any::<u64>(), single in any::<u32>()) {
            check(&f64::from_bits(double));
            check(&f32::from_bits(single));
        }

        #[test]
        fn a_rendering_is_a_prefix_of_serde_json_at_most_the_limit_long(
            value in proptest::collection::vec((any::<String>(), any::<i64>()), 0..8),
            limit in 0usize..400,
        ) {
            let full = serde_json::to_string(&value).unwrap();
            let text = json_text(&value, limit);
            prop_assert!(full.starts_with(&text), "{} / {}", text, full);
            if full.len() <= limit {
                prop_assert_eq!(text, full);
            } else {
                prop_assert!(text.len() <= limit && text.len() + 4 > limit, "{}: {}", limit, text);
            }
        }
    }
}
