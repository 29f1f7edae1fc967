//! The library's error type: every variant names the file or entry it concerns and what to do.

use std::path::PathBuf;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong inside the cache.
///
/// The memoizing calls ([`crate::Memo::call`] and friends) never return these: a cache problem
/// becomes one warning and a recomputation. The explicit maintenance calls
/// ([`crate::Memo::put`], [`crate::Memo::uncache`], [`crate::Memo::disk_keys`]) do return them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cache root could not be created or is not a directory.
    #[error(
        "cannot use {path} as the cache root: {source} (set MEMOSHELVE_DIR to a writable directory, or MEMOSHELVE_DISABLE=1)"
    )]
    Root {
        /// The root that was tried.
        path: PathBuf,
        /// The I/O error behind it.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a file of the cache failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "write blob".
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The I/O error behind it.
        #[source]
        source: std::io::Error,
    },
    /// A stored entry failed its integrity check or could not be decoded; it is treated as a miss.
    #[error("corrupt entry {key} in {root}: {reason}")]
    Corrupt {
        /// The cache root.
        root: PathBuf,
        /// The entry's index key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// A file step ran well but what it did cannot be replayed from a cache entry (a symbolic
    /// link leaving its directory, a file name that cannot be stored, output that could not be
    /// captured): it is not cached, and runs again next time.
    #[error("{name}: not cached: {reason}")]
    Uncacheable {
        /// The cache name.
        name: String,
        /// Why, with the file concerned.
        reason: String,
    },
    /// The arguments or the value could not be encoded with postcard.
    #[error("cannot encode the {what} of cache {name:?}: {source}")]
    Encode {
        /// "arguments" or "value".
        what: &'static str,
        /// The cache name.
        name: String,
        /// What the encoder said.
        #[source]
        source: CodecError,
    },
    /// The remote tier is misconfigured, failed, or sent something that was rejected (see
    /// [`crate::remote`]). The message names the setting or the entry, without secrets.
    #[error("{message}")]
    Remote {
        /// What went wrong, secrets removed.
        message: String,
    },
    /// The root holds entries of a newer format than this version's, whose blobs it cannot
    /// tell: deleting unreferenced content could delete theirs.
    #[error(
        "{root} holds entries of format {format}, newer than this version's {}: run this with a memoshelve that reads format {format}",
        crate::FORMAT_VERSION
    )]
    NewerFormat {
        /// The cache root.
        root: std::path::PathBuf,
        /// The newest format found there.
        format: u32,
    },
    /// No cache root could be chosen (see [`crate::resolve_root`]).
    #[error("no cache root: {reason}")]
    NoRoot {
        /// Why, with the fix.
        reason: String,
    },
}

/// Why a value or its arguments could not be encoded or decoded (the codec's own message; its
/// type is not part of this crate's API).
#[derive(Debug)]
pub struct CodecError(postcard::Error);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for CodecError {}

impl From<postcard::Error> for CodecError {
    fn from(error: postcard::Error) -> CodecError {
        CodecError(error)
    }
}
