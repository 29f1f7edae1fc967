//! How values become bytes: postcard, with a fast path for `Vec<u8>` that writes and reads the
//! very bytes postcard would (a varint length, then the bytes), without serde's per-element
//! calls, which at opt-level 0 (where build scripts run) cost ~25 ns a byte.

use std::any::{Any, TypeId};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// `postcard::to_allocvec(value)`, byte for byte.
pub(crate) fn encode<T: Serialize + 'static>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    if let Some(bytes) = (value as &dyn Any).downcast_ref::<Vec<u8>>() {
        let mut out = Vec::with_capacity(bytes.len() + 10);
        let mut len = bytes.len() as u64;
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(bytes);
        return Ok(out);
    }
    postcard::to_allocvec(value)
}

/// `postcard::from_bytes(bytes)`, for the same results and errors; takes the buffer so the
/// `Vec<u8>` path can keep it (dropping only the length prefix).
pub(crate) fn decode<T: DeserializeOwned + 'static>(
    mut bytes: Vec<u8>,
) -> Result<T, postcard::Error> {
    if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        let (len, prefix) = varint(&bytes)?;
        if bytes.len() - prefix < len {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        // postcard ignores what follows the value; so does this.
        bytes.truncate(prefix + len);
        bytes.drain(..prefix);
        let boxed: Box<dyn Any> = Box::new(bytes);
        return Ok(*boxed.downcast::<T>().expect("T is Vec<u8>"));
    }
    postcard::from_bytes(&bytes)
}

/// A postcard `usize` varint at the start of `bytes`: (value, bytes it took).
fn varint(bytes: &[u8]) -> Result<(usize, usize), postcard::Error> {
    let mut value: u64 = 0;
    for (index, &byte) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if index == 9 && byte > 1 {
            return Err(postcard::Error::DeserializeBadVarint);
        }
        value |= bits << (7 * index);
        if byte & 0x80 == 0 {
            let value =
                usize::try_from(value).map_err(|_| postcard::Error::DeserializeBadVarint)?;
            return Ok((value, index + 1));
        }
    }
    if bytes.len() < 10 {
        Err(postcard::Error::DeserializeUnexpectedEnd)
    } else {
        Err(postcard::Error::DeserializeBadVarint)
    }
}
