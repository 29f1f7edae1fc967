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

/// How many bytes to read apart from a stored value of `encoded_len` bytes so that the rest is
/// a `Vec<u8>`'s bytes: its length prefix (0 for any other `T`, or when no prefix fits).
pub(crate) fn prefix_len<T: 'static>(encoded_len: u64) -> usize {
    if TypeId::of::<T>() != TypeId::of::<Vec<u8>>() {
        return 0;
    }
    (1..=10u64)
        .find(|&prefix| encoded_len >= prefix && varint_len(encoded_len - prefix) == prefix)
        .map_or(0, |prefix| prefix as usize)
}

fn varint_len(mut value: u64) -> u64 {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

/// [`decode`] of a value read as `head` (its first [`prefix_len`] bytes) and `rest`: a
/// `Vec<u8>` whose prefix is exactly `head` is `rest` itself, not copied; anything else is
/// decoded from the bytes put back together.
pub(crate) fn decode_parts<T: DeserializeOwned + 'static>(
    mut head: Vec<u8>,
    mut rest: Vec<u8>,
) -> Result<T, postcard::Error> {
    if TypeId::of::<T>() == TypeId::of::<Vec<u8>>()
        && !head.is_empty()
        && let Ok((len, prefix)) = varint(&head)
        && prefix == head.len()
        && len <= rest.len()
    {
        rest.truncate(len);
        let boxed: Box<dyn Any> = Box::new(rest);
        return Ok(*boxed.downcast::<T>().expect("T is Vec<u8>"));
    }
    head.append(&mut rest);
    decode(head)
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

#[cfg(test)]
mod tests {

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// The `Vec<u8>` fast path writes postcard's bytes and reads postcard's bytes: the same
        /// value, or an error where postcard has one (a cut-off buffer), whatever follows.
        #[test]
        fn the_byte_vector_codec_is_postcard_byte_for_byte(
            value in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            big_len in 0usize..300_000,
            trailing in proptest::collection::vec(proptest::num::u8::ANY, 0..4),
            cut in 0usize..700,
        ) {
            let big = vec![7u8; big_len];
            for value in [&value, &big] {
                let ours = super::encode(value).unwrap();
                proptest::prop_assert_eq!(&ours, &postcard::to_allocvec(value).unwrap());
                let mut with_trailing = ours.clone();
                with_trailing.extend_from_slice(&trailing);
                let decoded: Vec<u8> = super::decode(with_trailing).unwrap();
                proptest::prop_assert_eq!(&decoded, value);
                // Read in two parts: the prefix apart, or cut anywhere, the same value.
                let skip = super::prefix_len::<Vec<u8>>(ours.len() as u64);
                proptest::prop_assert!(skip > 0);
                for at in [skip, cut.min(ours.len())] {
                    let parts: Vec<u8> =
                        super::decode_parts(ours[..at].to_vec(), ours[at..].to_vec()).unwrap();
                    proptest::prop_assert_eq!(&parts, value);
                }
                let cut = cut.min(ours.len());
                let theirs = postcard::from_bytes::<Vec<u8>>(&ours[..cut]);
                let mine = super::decode::<Vec<u8>>(ours[..cut].to_vec());
                proptest::prop_assert_eq!(mine.is_ok(), theirs.is_ok(), "cut at {}", cut);
            }
            // Any other type goes through postcard itself.
            let text = String::from_utf8_lossy(&value).into_owned();
            let encoded = super::encode(&text).unwrap();
            proptest::prop_assert_eq!(&encoded, &postcard::to_allocvec(&text).unwrap());
            proptest::prop_assert_eq!(super::decode::<String>(encoded).unwrap(), text);
        }

        /// Garbage never panics the fast path, and it agrees with postcard on what is readable.
        #[test]
        fn the_byte_vector_codec_reads_garbage_as_postcard_does(
            garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
        ) {
            let theirs = postcard::from_bytes::<Vec<u8>>(&garbage).ok();
            let mine = super::decode::<Vec<u8>>(garbage).ok();
            proptest::prop_assert_eq!(mine, theirs);
        }
    }
}
