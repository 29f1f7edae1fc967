//! Key derivation: every part that determines a cached result, hashed in one place with blake3.
//!
//! The recipe (also in the crate docs, and pinned by a test): the blake3 hash of a sequence of
//! parts, each written as its length (u64, little endian) followed by its bytes, in this order:
//! the format tag [`KEY_FORMAT_TAG`], the cache name, the version salt, the type name of the value,
//! the encoded arguments, then each declared input as a (kind, name, value) triple.

use std::fmt;

/// Bumped whenever the recipe below changes, so old keys can never collide with new ones.
pub const KEY_FORMAT_TAG: &str = "memoshelve/key/v1";

/// A 32-byte blake3 cache key. `Display` gives the full hex; [`Key::short`] the 12-digit prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 32]);

impl Key {
    /// The raw bytes of the key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Full lowercase hex, 64 digits.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
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
pub struct KeyInput {
    /// The kind of input, e.g. `file`, `env`, `tool`, `context`.
    pub kind: String,
    /// Which one: a relative path, a variable name, a tool name.
    pub name: String,
    /// What was hashed for it: a content hash, a value, an "unset" marker.
    pub value: String,
}

/// Everything a key is derived from, borrowed from the caller.
#[derive(Debug)]
pub(crate) struct KeyParts<'a> {
    pub(crate) name: &'a str,
    pub(crate) version: &'a str,
    pub(crate) type_name: &'a str,
    pub(crate) args: &'a [u8],
    pub(crate) inputs: &'a [KeyInput],
}

impl KeyParts<'_> {
    pub(crate) fn key(&self) -> Key {
        // The parts are laid end to end and hashed in one call: the same bytes as one
        // `update` per part, without blake3's per-call cost (a memory hit is mostly this).
        let mut preimage = Vec::with_capacity(
            128 + self.name.len() + self.type_name.len() + self.args.len() + 64 * self.inputs.len(),
        );
        let mut part = |bytes: &[u8]| {
            preimage.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            preimage.extend_from_slice(bytes);
        };
        part(KEY_FORMAT_TAG.as_bytes());
        part(self.name.as_bytes());
        part(self.version.as_bytes());
        part(self.type_name.as_bytes());
        part(self.args);
        for input in self.inputs {
            part(input.kind.as_bytes());
            part(input.name.as_bytes());
            part(input.value.as_bytes());
        }
        Key(*blake3::hash(&preimage).as_bytes())
    }
}
