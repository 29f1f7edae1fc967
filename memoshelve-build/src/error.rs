//! The library's error type: every variant names the file or entry it concerns and what to do.

use std::path::PathBuf;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong inside the cache.
///
/// The memoizing calls ([`crate::Memo::call`] and friends) never return these: a cache problem
/// becomes one warning and a recomputation. The explicit maintenance calls
/// ([`crate::Memo::put`], [`crate::Memo::uncache`], [`crate::Memo::disk_keys`]) do return them.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The cache root could not be created or is not a directory.
    Root {
        /// The root that was tried.
        path: PathBuf,
        /// The I/O error behind it.
        source: std::io::Error,
    },
    /// Reading or writing a file of the cache failed.
    Io {
        /// What was being done, e.g. "write blob".
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The I/O error behind it.
        source: std::io::Error,
    },
    /// A stored entry failed its integrity check or could not be decoded; it is treated as a miss.
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
    Uncacheable {
        /// The cache name.
        name: String,
        /// Why, with the file concerned.
        reason: String,
    },
    /// The arguments or the value could not be encoded with postcard.
    Encode {
        /// "arguments" or "value".
        what: &'static str,
        /// The cache name.
        name: String,
        /// What the encoder said.
        source: CodecError,
    },
    /// The remote tier is misconfigured, failed, or sent something that was rejected (see
    /// [`crate::remote`]). The message names the setting or the entry, without secrets.
    Remote {
        /// What went wrong, secrets removed.
        message: String,
    },
    /// The root holds entries of a newer format than this version's, whose blobs it cannot
    /// tell: deleting unreferenced content could delete theirs.
    NewerFormat {
        /// The cache root.
        root: std::path::PathBuf,
        /// The newest format found there.
        format: u32,
    },
    /// No cache root could be chosen (see [`crate::resolve_root`]).
    NoRoot {
        /// Why, with the fix.
        reason: String,
    },
}

// Written out rather than derived: a derive macro would be most of the compile of a
// build-dependency that users pay on every clean build (BENCHMARKS.md, workload 9).
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Root { path, source } => write!(
                f,
                "cannot use {} as the cache root: {source} (set MEMOSHELVE_DIR to a writable \
                 directory, or MEMOSHELVE_DISABLE=1)",
                path.display()
            ),
            Error::Io { action, path, source } => {
                write!(f, "cannot {action} {}: {source}", path.display())
            }
            Error::Corrupt { root, key, reason } => {
                write!(f, "corrupt entry {key} in {}: {reason}", root.display())
            }
            Error::Uncacheable { name, reason } => write!(f, "{name}: not cached: {reason}"),
            Error::Encode { what, name, source } => {
                write!(f, "cannot encode the {what} of cache {name:?}: {source}")
            }
            Error::Remote { message } => f.write_str(message),
            Error::NewerFormat { root, format } => write!(
                f,
                "{} holds entries of format {format}, newer than this version's {}: run this \
                 with a memoshelve that reads format {format}",
                root.display(),
                crate::FORMAT_VERSION
            ),
            Error::NoRoot { reason } => write!(f, "no cache root: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Root { source, .. } | Error::Io { source, .. } => Some(source),
            Error::Encode { source, .. } => Some(source),
            _ => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn messages_name_the_file_and_keep_the_source() {
        let io = || std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let root = Error::Root { path: "/r".into(), source: io() };
        assert_eq!(
            root.to_string(),
            "cannot use /r as the cache root: denied (set MEMOSHELVE_DIR to a writable \
             directory, or MEMOSHELVE_DISABLE=1)"
        );
        assert_eq!(root.source().unwrap().to_string(), "denied");
        let write = Error::Io { action: "write blob", path: "/r/b".into(), source: io() };
        assert_eq!(write.to_string(), "cannot write blob /r/b: denied");
        assert!(write.source().is_some());
        let corrupt = Error::Corrupt { root: "/r".into(), key: "k".into(), reason: "cut".into() };
        assert_eq!(corrupt.to_string(), "corrupt entry k in /r: cut");
        assert!(corrupt.source().is_none());
        let newer = Error::NewerFormat { root: "/r".into(), format: 99 };
        assert!(newer.to_string().starts_with("/r holds entries of format 99, newer than"));
        let encode = Error::Encode {
            what: "value",
            name: "n".into(),
            source: CodecError(postcard::Error::SerializeBufferFull),
        };
        assert!(encode.to_string().starts_with("cannot encode the value of cache \"n\": "));
        assert!(encode.source().is_some());
    }
}
