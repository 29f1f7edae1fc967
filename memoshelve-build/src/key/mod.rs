//! Key derivation: every part that determines a cached result, hashed in one place with blake3.
//!
//! The recipe (also in the crate docs, and pinned by a test), in two steps:
//! 1. the *prefix*: the blake3 hash of the parts that are the same for every call of one `Memo`
//!    and value type, each written as its length (LEB128 varint) followed by its bytes, in this
//!    order: the format tag [`KEY_FORMAT_TAG`], the cache name, the version salt, the type name of
//!    the value, the number of declared inputs, then each input as a (kind, name, value) triple;
//! 2. the key: blake3 in keyed mode, keyed by the prefix, over the encoded arguments.
//!
//! A `Memo` computes the prefix once, so a call hashes only its arguments: one blake3 block for
//! arguments up to 64 bytes, however many inputs a build script declares.

pub(crate) mod context;
pub(crate) mod inputs;

use std::fmt;

/// Bumped whenever the recipe below changes, so old keys can never collide with new ones.
pub const KEY_FORMAT_TAG: &str = "memoshelve/key/v3";

/// A 32-byte blake3 cache key. `Display` gives the full hex; [`Key::short`] the 12-digit prefix.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key([u8; 32]);

/// A key is a blake3 hash: its first eight bytes, as one `u64`, are as good a hash as all 32.
/// (The derived impl went through the slice's length and a `write` of 32 bytes: a tenth of a
/// memory hit at opt-level 0, where build scripts run.)
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let bytes = &self.0;
        // Array indexing and `as` are built in even unoptimized; `from_le_bytes(..try_into())`
        // is calls.
        state.write_u64(
            bytes[0] as u64
                | (bytes[1] as u64) << 8
                | (bytes[2] as u64) << 16
                | (bytes[3] as u64) << 24
                | (bytes[4] as u64) << 32
                | (bytes[5] as u64) << 40
                | (bytes[6] as u64) << 48
                | (bytes[7] as u64) << 56,
        );
    }
}

impl Key {
    /// The raw bytes of the key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Full lowercase hex, 64 digits.
    pub fn to_hex(&self) -> String {
        hex_lower(&self.0)
    }

    /// The first 12 hex digits, as shown in tables.
    pub fn short(&self) -> String {
        let mut hex = self.to_hex();
        hex.truncate(12);
        hex
    }

    /// Parses 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Key> {
        blake3::Hash::from_hex(hex).ok().map(|hash| Key(*hash.as_bytes()))
    }
}

/// Lowercase hex of `bytes`. (blake3's `to_hex` goes through a char-by-char `ArrayString`: at
/// opt-level 0, where build scripts run, that was a tenth of a disk hit, which makes a key's hex
/// three times.)
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(2 * bytes.len());
    // Indexing arrays and slices is built in, even unoptimized; iterator adapters are calls.
    for chunk in bytes.chunks(32) {
        let mut digits = [0u8; 64];
        let mut index = 0;
        while index < chunk.len() {
            let byte = chunk[index];
            digits[2 * index] = DIGITS[usize::from(byte >> 4)];
            digits[2 * index + 1] = DIGITS[usize::from(byte & 0xf)];
            index += 1;
        }
        hex.push_str(
            std::str::from_utf8(&digits[..2 * chunk.len()]).expect("hex digits are ASCII"),
        );
    }
    hex
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.short())
    }
}

/// One declared input of a key: what it is, which one, and the value that was hashed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct KeyInput {
    /// The kind of input, e.g. `file`, `env`, `tool`, `context`.
    pub kind: String,
    /// Which one: a relative path, a variable name, a tool name.
    pub name: String,
    /// What was hashed for it: a content hash, a value, an "unset" marker.
    pub value: String,
}

/// The parts of a key that are the same for every call of one `Memo` and value type.
#[derive(Debug)]
pub(crate) struct KeyPrefix<'a> {
    pub(crate) name: &'a str,
    pub(crate) version: &'a str,
    pub(crate) type_name: &'a str,
    pub(crate) inputs: &'a [KeyInput],
}

impl KeyPrefix<'_> {
    /// The blake3 of the parts, each framed by its length.
    pub(crate) fn digest(&self) -> [u8; 32] {
        // The framed bytes are gathered first and hashed by one `update`: six `update` calls
        // per input cost ~6k instructions at opt-level 0, serially, after the inputs were hashed
        // in parallel (6 of the 75 million instructions of a key over 1,000 declared files).
        let mut bytes = Vec::with_capacity(256);
        for part in [KEY_FORMAT_TAG, self.name, self.version, self.type_name] {
            framed(&mut bytes, part);
        }
        write_varint(&mut bytes, self.inputs.len() as u64);
        for input in self.inputs {
            framed(&mut bytes, &input.kind);
            framed(&mut bytes, &input.name);
            framed(&mut bytes, &input.value);
        }
        *blake3::hash(&bytes).as_bytes()
    }
}

fn framed(bytes: &mut Vec<u8>, part: &str) {
    write_varint(bytes, part.len() as u64);
    bytes.extend_from_slice(part.as_bytes());
}

/// The key of one call: the encoded arguments hashed in blake3's keyed mode under the prefix.
pub(crate) fn key_from(prefix: &[u8; 32], args: &[u8]) -> Key {
    Key(*blake3::keyed_hash(prefix, args).as_bytes())
}

/// A key for unit tests: `n`'s bytes under a fixed prefix.
#[cfg(test)]
pub(crate) fn test_key(n: u32) -> Key {
    let prefix = KeyPrefix { name: "unit", version: "", type_name: "u32", inputs: &[] }.digest();
    key_from(&prefix, &n.to_le_bytes())
}

/// LEB128: seven bits per byte, low first, the high bit set on every byte but the last.
fn write_varint(bytes: &mut Vec<u8>, mut value: u64) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            bytes.push(low);
            return;
        }
        bytes.push(low | 0x80);
    }
}

#[cfg(test)]
mod tests {

    /// Equal keys hash equally, and keys differing anywhere in their first eight bytes hash apart
    /// (the memory tier's map uses those eight bytes).
    #[test]
    fn a_keys_hash_is_its_first_eight_bytes() {
        use std::hash::BuildHasher as _;
        let hasher = std::collections::hash_map::RandomState::new();
        let base = [0x5au8; 32];
        let key = super::Key::from_hex(&super::hex_lower(&base)).unwrap();
        let same = super::Key::from_hex(&super::hex_lower(&base)).unwrap();
        assert_eq!(hasher.hash_one(key), hasher.hash_one(same));
        for index in 0..8 {
            let mut bytes = base;
            bytes[index] ^= 1;
            let other = super::Key::from_hex(&super::hex_lower(&bytes)).unwrap();
            assert_ne!(hasher.hash_one(key), hasher.hash_one(other), "byte {index}");
        }
    }
}
