//! The index record of one entry, and the file that holds it.
//!
//! A record file is, in this order:
//!
//! ```text
//! MAGIC             8 bytes, "memoshv\n"
//! format            4 bytes, little-endian: FORMAT_VERSION of the writer
//! record            the EntryRecord, postcard (an inline value is its bytes, length first)
//! checksum          32 bytes: blake3 of everything before it
//! ```
//!
//! The format comes before the record so that a record of another version is recognised
//! without decoding it (a miss, never a misread), and the checksum comes last so that a torn or
//! overwritten file is recognised before anything in it is trusted. Files are replaced whole
//! (written beside, then renamed), so a reader sees one complete record or none; the checksum
//! is for everything else (a disk that lies, a hand edit, a copy cut short). This is the hot
//! path of a disk hit: one `read`, one blake3 over about a kilobyte, one postcard decode.

use serde::{Deserialize, Serialize};

use crate::key::KeyInput;

/// The on-disk format version written into every record; records of another version are misses.
pub const FORMAT_VERSION: u32 = 4;
/// The first bytes of every record file.
const MAGIC: &[u8; 8] = b"memoshv\n";
/// Magic and format.
const HEADER: usize = MAGIC.len() + 4;
const CHECKSUM: usize = 32;

/// What the index records about one entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EntryRecord {
    /// [`FORMAT_VERSION`] at the time of writing.
    pub format: u32,
    /// The cache name.
    pub name: String,
    /// The version salt.
    pub version: String,
    /// The full hex key.
    pub key: String,
    /// `std::any::type_name` of the value.
    pub type_name: String,
    /// When it was written, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// How long the computation took, in microseconds.
    pub compute_us: u64,
    /// Encoded size of the value in bytes.
    pub size: u64,
    /// blake3 of the encoded value, hex: the name of its blob when it is not inline.
    pub blake3: String,
    /// A short rendering of the arguments, for people.
    pub args: String,
    /// The declared inputs that joined the key, by name.
    pub inputs: Vec<KeyInput>,
    /// The encoded value itself, when it is at most 1 KiB.
    #[serde(with = "bytes")]
    pub inline: Option<Vec<u8>>,
}

/// What a record file holds.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A record of this format, its checksum right.
    Record(EntryRecord),
    /// A record of another format version: not this version's to read (`upgrade` drops it).
    OtherFormat(u32),
    /// Not a record, or a damaged one: what is wrong.
    Damaged(String),
}

/// The bytes of the file holding `record`.
pub(crate) fn encode(record: &EntryRecord) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(
        HEADER + CHECKSUM + 300 + record.args.len() + record.inline.as_ref().map_or(0, Vec::len),
    );
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let mut bytes = postcard::to_extend(record, bytes).expect("a record always encodes");
    let checksum = blake3::hash(&bytes);
    bytes.extend_from_slice(checksum.as_bytes());
    bytes
}

/// Reads a record file's bytes (see the module docs).
pub(crate) fn decode(bytes: &[u8]) -> Decoded {
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return Decoded::Damaged("not a memoshelve record".to_owned());
    }
    let format = u32::from_le_bytes(bytes[MAGIC.len()..HEADER].try_into().expect("four bytes"));
    if format != FORMAT_VERSION {
        return Decoded::OtherFormat(format);
    }
    let Some(body_end) = bytes.len().checked_sub(CHECKSUM).filter(|&end| end >= HEADER) else {
        return Decoded::Damaged("a record cut short".to_owned());
    };
    if blake3::hash(&bytes[..body_end]).as_bytes() != &bytes[body_end..] {
        return Decoded::Damaged(
            "a torn or garbage record (its checksum does not match)".to_owned(),
        );
    }
    match postcard::from_bytes::<EntryRecord>(&bytes[HEADER..body_end]) {
        Ok(record) if record.format == FORMAT_VERSION => Decoded::Record(record),
        Ok(record) => Decoded::Damaged(format!(
            "a record of format {} in a file of format {FORMAT_VERSION}",
            record.format
        )),
        Err(err) => Decoded::Damaged(format!("an unreadable record: {err}")),
    }
}

/// An optional byte string as one length and its bytes (postcard), not a sequence of numbers
/// decoded one at a time (a kilobyte of those was a visitor call per byte at opt-level 0). Text
/// formats (`cargo memoshelve show --json`, a backup's JSON lines) see lowercase hex.
mod bytes {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::ser::Serializer;

    // serde's `with` passes the field by reference.
    #[allow(clippy::ref_option)]
    pub(super) fn serialize<S: Serializer>(
        value: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) if serializer.is_human_readable() => {
                serializer.serialize_some(&crate::key::hex_lower(bytes))
            }
            Some(bytes) => serializer.serialize_some(&Bytes(bytes)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        deserializer.deserialize_option(OptionalBytes)
    }

    struct Bytes<'a>(&'a [u8]);

    impl serde::Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self.0)
        }
    }

    struct OptionalBytes;

    impl<'de> Visitor<'de> for OptionalBytes {
        type Value = Option<Vec<u8>>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("an optional byte string")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            if deserializer.is_human_readable() {
                deserializer.deserialize_str(ByteString).map(Some)
            } else {
                deserializer.deserialize_byte_buf(ByteString).map(Some)
            }
        }
    }

    struct ByteString;

    impl<'de> Visitor<'de> for ByteString {
        type Value = Vec<u8>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a byte string, or its hex")
        }

        fn visit_str<E: serde::de::Error>(self, hex: &str) -> Result<Vec<u8>, E> {
            let digit = |byte: u8| char::from(byte).to_digit(16);
            if !hex.len().is_multiple_of(2) {
                return Err(E::custom("hex of odd length"));
            }
            hex.as_bytes()
                .chunks(2)
                .map(|pair| Some((digit(pair[0])? << 4 | digit(pair[1])?) as u8))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| E::custom("not hex"))
        }

        fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(byte) = seq.next_element()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(inline: Option<Vec<u8>>) -> EntryRecord {
        EntryRecord {
            format: FORMAT_VERSION,
            name: "unit".to_owned(),
            version: "1".to_owned(),
            key: "ab".repeat(32),
            type_name: "alloc::vec::Vec<u8>".to_owned(),
            created_ms: 1_700_000_000_000,
            compute_us: 1234,
            size: inline.as_ref().map_or(5000, |bytes| bytes.len() as u64),
            blake3: "cd".repeat(32),
            args: "[1,\"two\"]".to_owned(),
            inputs: vec![KeyInput {
                kind: "env".to_owned(),
                name: "TARGET".to_owned(),
                value: "x86_64-unknown-linux-gnu".to_owned(),
            }],
            inline,
        }
    }

    fn decoded(bytes: &[u8]) -> Option<EntryRecord> {
        match decode(bytes) {
            Decoded::Record(record) => Some(record),
            _ => None,
        }
    }

    #[test]
    fn records_round_trip_with_and_without_inline_values() {
        for inline in [None, Some(Vec::new()), Some((0..=255).collect())] {
            let record = record(inline);
            assert_eq!(decoded(&encode(&record)), Some(record));
        }
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_damage() {
        let bytes = encode(&record(Some(b"value".to_vec())));
        for len in 0..bytes.len() {
            assert!(decoded(&bytes[..len]).is_none(), "a record cut at {len} was read");
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x20;
            let result = decode(&flipped);
            let format_byte = (MAGIC.len()..HEADER).contains(&at);
            assert!(
                matches!(result, Decoded::Damaged(_)) || format_byte,
                "byte {at} flipped: {result:?}"
            );
            if format_byte {
                assert!(matches!(result, Decoded::OtherFormat(_)), "byte {at}: {result:?}");
            }
        }
    }

    #[test]
    fn another_format_is_recognised_before_decoding() {
        let mut bytes = encode(&record(None));
        bytes[MAGIC.len()..HEADER].copy_from_slice(&2u32.to_le_bytes());
        bytes.truncate(HEADER + 3);
        assert!(matches!(decode(&bytes), Decoded::OtherFormat(2)));
    }

    #[test]
    fn inline_values_read_back_from_json_as_well() {
        let record = record(Some(vec![0, 1, 0xab, 255]));
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains(r#""inline":"0001abff""#), "{json}");
        let odd = json.replace("0001abff", "0001abf");
        assert!(serde_json::from_str::<EntryRecord>(&odd).is_err());
        assert!(
            serde_json::from_str::<EntryRecord>(&json.replace("0001abff", "0001abzz")).is_err()
        );
        assert_eq!(serde_json::from_str::<EntryRecord>(&json).unwrap(), record);
        let none = self::record(None);
        let json = serde_json::to_string(&none).unwrap();
        assert_eq!(serde_json::from_str::<EntryRecord>(&json).unwrap(), none);
    }
}
