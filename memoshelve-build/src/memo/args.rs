//! How call arguments become the bytes of a key ([`ArgsEncoder`]: postcard by default, or a
//! closure of the caller's), and the short text an entry keeps of them.

use super::*;
use crate::CodecError;

/// Turns call arguments into the bytes that join the key.
///
/// The default, [`PostcardArgs`], encodes any `Serialize` value with postcard. Replace it with
/// [`Memo::hash_args_with`] (Python memoshelve's `get_hash`).
pub trait ArgsEncoder<A: ?Sized> {
    /// The bytes that stand for `args` in the key.
    ///
    /// # Errors
    /// When the arguments cannot be encoded.
    fn encode(&self, args: &A) -> Result<Vec<u8>, CodecError>;
    /// A short text for people (kept in the entry's metadata, truncated).
    fn render(&self, args: &A) -> String;
}

/// The default [`ArgsEncoder`]: postcard bytes of any `Serialize` value.
///
/// Postcard writes fields in order, so the encoding is canonical for structs, tuples, `Vec` and
/// `BTreeMap`, but not for `HashMap`/`HashSet`, which iterate in random order: the same map then
/// gives different keys in different processes. Use `BTreeMap`/`BTreeSet` in arguments.
#[derive(Clone, Copy, Debug, Default)]
pub struct PostcardArgs;

impl<A: Serialize + ?Sized> ArgsEncoder<A> for PostcardArgs {
    fn encode(&self, args: &A) -> Result<Vec<u8>, CodecError> {
        // Room for typical arguments up front: `to_allocvec` grows from empty, and the regrowth
        // was a tenth of a memory hit. (Not `to_io`: at opt-level 0 its per-byte `write_all`
        // cost more than the growth it saves.)
        postcard::serialize_with_flavor(args, ArgsBytes(Vec::with_capacity(64)))
            .map_err(CodecError::from)
    }

    fn render(&self, args: &A) -> String {
        // Stop writing once the rendering is long enough: large arguments are not serialized
        // whole just to be cut (at opt-level 0 that could cost a second per miss). A little past
        // the limit, so that `record_for` sees the rendering was cut and marks it.
        crate::memo::render::json_text(args, ARGS_RENDERING_MAX + 4)
    }
}

/// postcard's `AllocVec` flavor with room up front.
struct ArgsBytes(Vec<u8>);

impl postcard::ser_flavors::Flavor for ArgsBytes {
    type Output = Vec<u8>;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // At opt-level 0 `extend_from_slice` is a dozen calls deep, about 400 instructions even
        // for the one byte of a small integer's varint, which is most of what arguments are;
        // a few bytes pushed by index cost a tenth of that.
        if data.len() <= 16 {
            let mut index = 0;
            while index < data.len() {
                self.0.push(data[index]);
                index += 1;
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// An [`ArgsEncoder`] made from a closure; see [`Memo::hash_args_with`].
#[derive(Clone)]
pub struct CustomArgs<F>(pub(super) F);

impl<F> fmt::Debug for CustomArgs<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomArgs(..)")
    }
}

impl<A: ?Sized, F: Fn(&A) -> Vec<u8>> ArgsEncoder<A> for CustomArgs<F> {
    fn encode(&self, args: &A) -> Result<Vec<u8>, CodecError> {
        Ok((self.0)(args))
    }

    fn render(&self, args: &A) -> String {
        format!("custom hash {}", blake3::hash(&(self.0)(args)).to_hex())
    }
}
