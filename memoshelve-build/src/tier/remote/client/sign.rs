//! Signatures: remote entries are signed (`MEMOSHELVE_REMOTE_KEY`) with blake3 in keyed mode,
//! a MAC by design; AWS Signature V4 needs HMAC-SHA256 (RFC 2104), which only the S3 backend
//! compiles in (with `sha2`).

#[cfg(feature = "remote-s3")]
use sha2::{Digest, Sha256};

/// The MAC of a remote entry: blake3 keyed by a key derived from `secret`, over the entry's
/// key and payload (framed: the key is 32 bytes).
pub(crate) fn entry_mac(secret: &str, key: &[u8; 32], payload: &[u8]) -> [u8; 32] {
    let mac_key = blake3::derive_key("memoshelve remote entry signature v2", secret.as_bytes());
    let mut hasher = blake3::Hasher::new_keyed(&mac_key);
    hasher.update(key);
    hasher.update(payload);
    *hasher.finalize().as_bytes()
}

#[cfg(feature = "remote-s3")]
const BLOCK: usize = 64;

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
#[cfg(feature = "remote-s3")]
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|byte| byte ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|byte| byte ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 15)] as char);
    }
    text
}

/// Compares two strings in time independent of where they differ.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// SHA-256, hex.
#[cfg(feature = "remote-s3")]
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}
