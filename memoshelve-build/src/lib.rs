//! Memoize expensive build-time computations in a two-tier cache that survives `cargo clean`.
//!
//! A build script (or any program) wraps a slow step in [`cache`] or a [`Memo`]. The result is
//! keyed by a blake3 hash of everything that determines it, kept in a process-wide memory tier
//! and in a disk tier that lives outside `target/`, so the next build (after `cargo clean`, in a
//! new worktree, on a CI runner whose cache was restored) gets it back instead of recomputing.
//!
//! # Example
//!
//! ```
//! use memoshelve_build::{Memo, Status};
//!
//! # let dir = tempfile::tempdir()?;
//! fn slow_square(n: u64) -> u64 {
//!     n * n // imagine seconds of work
//! }
//!
//! let memo = Memo::new("squares").dir(dir.path());
//! let (value, status) = memo.call_with_status(&7u64, || slow_square(7));
//! assert_eq!((value, status), (49, Status::Miss));
//! let (value, status) = memo.call_with_status(&7u64, || slow_square(7));
//! assert_eq!((value, status), (49, Status::Memory));
//!
//! // The one-liner form, with the default cache root (MEMOSHELVE_DIR, else ~/.cache/memoshelve):
//! # unsafe { std::env::set_var("MEMOSHELVE_DIR", dir.path()) };
//! let table: Vec<u32> = memoshelve_build::cache("table", &(16u32, "crc"), || (0..16).collect());
//! assert_eq!(table.len(), 16);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! In a `build.rs`, add `memoshelve-build` under `[build-dependencies]` and call it the same way.
//!
//! # The key
//!
//! A key is computed in two steps. First the *prefix*: the blake3 hash of the parts that stay
//! the same across calls of one [`Memo`], each written as its length (LEB128 varint) followed by
//! its bytes, in this order:
//!
//! 1. the format tag `memoshelve/key/v3` ([`KEY_FORMAT_TAG`]);
//! 2. the cache name;
//! 3. the version salt ([`Memo::version`], empty by default; [`#[memoize]`](#the-decorator-form-memoize)
//!    appends the hash of the function's tokens to it);
//! 4. [`std::any::type_name`] of the value type `T`;
//! 5. the number of key inputs (a varint), then each, as a (kind, name, value) triple, sorted
//!    ([`Memo::key_inputs`] lists them):
//!    - declared files (`input_file`, `input_files`, `input_glob`): the path, relative to
//!      `CARGO_MANIFEST_DIR` when inside it, and the blake3 of the contents;
//!    - declared environment variables (`env`): the name and the value, or an "unset" marker;
//!    - tools (`tool_version`): the command line and its standard output;
//!    - the build script's own binary (`invalidate_on_build_script_change`);
//!    - inside a build script, the build context: `TARGET`, `HOST`, `PROFILE`, `OPT_LEVEL`,
//!      `DEBUG`, every `CARGO_FEATURE_*` and `CARGO_CFG_*`, and `$RUSTC -vV`. Opt out of a group
//!      with [`Memo::target_independent`], [`Memo::profile_independent`] or
//!      [`Memo::features_independent`] when the step does not depend on it.
//!
//! Then the key: blake3 in keyed mode (`blake3::keyed_hash`), keyed by the prefix, over the
//! arguments encoded with [postcard] (or the bytes of [`Memo::hash_args_with`]). A `Memo` computes
//! its prefix once, so a call hashes only its arguments (one blake3 block up to 64 bytes), however
//! much build context the prefix holds.
//!
//! The same program on the same inputs gives the same key in every process and on every
//! machine. **Footgun:** postcard encodes a `HashMap` or `HashSet` in its random iteration order,
//! so such arguments give a different key in each process. Use `BTreeMap` and `BTreeSet`.
//!
//! # Storage
//!
//! - Memory tier: one per process, least recently used first out, bounded by bytes (256 MiB by
//!   default, [`Memo::mem_capacity`] per cache name, `MEMOSHELVE_MEM_CAPACITY` for the process). A
//!   hit returns a clone of the stored value without decoding.
//! - Disk tier: memoshelve's own content-addressed store under the cache root: one record file
//!   per entry (`index/aa/<hex key>`, replaced whole, checked by a blake3 checksum) holding the
//!   entry's metadata and, for values up to 1 KiB, the value itself; larger values and every file
//!   of a file step live once each in a blake3-addressed blob area beside it. Every read is
//!   checked with blake3; a damaged entry is a miss, is removed, and is recomputed. A record of
//!   another [`FORMAT_VERSION`] is a miss, never misread (`cargo memoshelve upgrade` drops them).
//!
//! # Never a broken build
//!
//! The memoizing calls ([`cache`], [`Memo::call`], [`Memo::call_with_status`], [`Memo::try_call`],
//! [`Memo::get`], [`Memo::call_async`] and its siblings) never fail because of the cache. An unreadable, read-only, missing or corrupt
//! cache means the value is computed and one warning is printed: a `cargo:warning=` line inside
//! a build script, a `log` warning elsewhere.
//!
//! # Environment
//!
//! | variable | effect |
//! | --- | --- |
//! | `MEMOSHELVE_DIR` | the cache root; `target` means `<cargo target dir>/memoshelve`; an absolute path (a relative one is ignored in build scripts, with a warning: each runs in its own package directory) |
//! | `MEMOSHELVE_DISABLE=1` | bypass both tiers everywhere (read once per process) |
//! | `MEMOSHELVE_LOG` | report events: `none`, `mem`, `disk`, `remote`, `hits`, `misses`, `all` (comma-separated) |
//! | `MEMOSHELVE_MEM_CAPACITY` | bytes the memory tier may hold in this process |
//! | `MEMOSHELVE_LOCK_TIMEOUT` | seconds to wait for another process computing the same key |
//! | `MEMOSHELVE_REMOTE` | the remote tier (features `remote-redis`, `remote-http`, `remote-s3`): `redis://host:port/db`, `http(s)://host/path`, `s3://bucket/prefix`; see [`remote::Settings`] |
//! | `MEMOSHELVE_REMOTE_MODE` | `read-write` (default), `read-only` (pull requests), `off` |
//! | `MEMOSHELVE_REMOTE_TOKEN` | HTTP remotes: a bearer token |
//! | `MEMOSHELVE_REMOTE_KEY` | a secret: entries are signed with it (a blake3 MAC), and only entries signed with it are used |
//! | `MEMOSHELVE_AUDIT` | share of hits (`0.1`, `1`) to recompute and compare with the cache: a mismatch warns, naming the entry, and the fresh result is kept |
//!
//! Without `MEMOSHELVE_DIR`, a project may choose its root in its manifest (see [`config`]):
//!
//! ```toml
//! [workspace.metadata.memoshelve]
//! dir = ".memoshelve"   # relative to this Cargo.toml; "target" means <target dir>/memoshelve
//! ```
//!
//! # In a build script
//!
//! ```no_run
//! // build.rs
//! let memo = memoshelve_build::Memo::new("grammar")
//!     .input_glob("grammar/**/*.y") // contents join the key; cargo reruns on changes
//!     .env("GRAMMAR_FLAVOUR")       // its value joins the key; cargo reruns on changes
//!     .profile_independent();       // debug, release and `cargo check` share the entry
//! let tables: Vec<u8> = memo.call(&(), || b"generated tables".to_vec());
//! # let _ = tables;
//! ```
//!
//! # The decorator form: `#[memoize]`
//!
//! With the `macros` feature (`memoshelve-build = { version = "0.1", features = ["macros"] }`;
//! off by default because it compiles syn), `#[memoize]` turns a function into its memoized self,
//! with the same signature, and generates a companion `<fn>_memo() -> &'static Memo` for
//! inspection. The key is the tuple of the parameters (minus `ignore(..)`d ones) and the value
//! type is the return type, so the companion answers for the function:
//!
//! ```
//! # #[cfg(feature = "macros")] {
//! use memoshelve_build::{Status, memoize};
//! # let dir = tempfile::tempdir().unwrap();
//! # unsafe { std::env::set_var("MEMOSHELVE_DIR", dir.path()) };
//!
//! #[memoize(ignore(verbose))]
//! fn digits_of_factorial(n: u32, verbose: bool) -> usize {
//!     let mut digits = vec![1u32]; // little-endian base 10
//!     for factor in 2..=n {
//!         let mut carry = 0;
//!         for digit in &mut digits {
//!             let product = *digit * factor + carry;
//!             (*digit, carry) = (product % 10, product / 10);
//!         }
//!         while carry > 0 {
//!             digits.push(carry % 10);
//!             carry /= 10;
//!         }
//!     }
//!     if verbose {
//!         eprintln!("{n}! has {} digits", digits.len());
//!     }
//!     digits.len()
//! }
//!
//! assert_eq!(digits_of_factorial(100, false), 158); // computed
//! assert_eq!(digits_of_factorial(100, true), 158); // `verbose` is not in the key: a hit
//! let memo = digits_of_factorial_memo();
//! assert_eq!(memo.get_with_status::<usize, _>(&(100u32,)), Some((158, Status::Memory)));
//! assert!(memo.uncache::<usize, _>(&(100u32,)).unwrap());
//! assert!(!memo.contains::<usize, _>(&(100u32,)));
//! # }
//! ```
//!
//! The function's own tokens (signature and body; not comments, not layout) are hashed when it
//! compiles and that hash is appended to the version salt, so editing the body makes its earlier
//! entries misses. Functions it calls are not hashed: bump `version = ".."` when they change. The
//! options and the rest are in the docs of `memoize`.
//!
//! # Async
//!
//! With the `async` feature (off by default, as a build script is sync; `macros` turns it on),
//! [`Memo::call_async`], [`Memo::call_async_with_status`] and [`Memo::try_call_async`] (and
//! `#[memoize]` on an `async fn`) run on any executor: they use only [`std::task`], no runtime.
//! Concurrent callers of one missing key in a process share one computation. Memory hits are
//! answered inline; reading, checking and writing the disk, waiting for another process's lock and
//! resolving declared inputs run on a helper thread started for the purpose, so a large value
//! does not stall a runtime's worker thread (a thread costs tens of microseconds, once per key and
//! process, next to reads that matter only when they are large).
//!
//! # Naming
//!
//! Blocking calls have no suffix (no `_sync`); their async counterparts end in `_async`. Methods
//! that read take `&self` and never fail; the two that change the cache on request
//! ([`Memo::put`], [`Memo::uncache`]) return a [`Result`].

#![warn(missing_docs)]

#[cfg(feature = "macros")]
#[doc(hidden)]
#[path = "macro_support.rs"]
pub mod __private;
mod cargo;
mod error;
mod hashing;
mod key;
mod memo;
mod parallel;
mod project;
#[cfg(feature = "maintenance")]
pub mod store;
mod tier;

pub use crate::project::config;
pub use crate::tier::remote;

pub use crate::error::{CodecError, Error, Result};
pub use crate::key::{KEY_FORMAT_TAG, Key, KeyInput};
pub use crate::memo::outputs::{OutputFile, OutputLink, OutputManifest, Outputs, Report, Step};
pub use crate::memo::status::{Log, Status};
pub use crate::memo::{ArgsEncoder, Cacheable, CustomArgs, Memo, PostcardArgs};
pub use crate::project::location::{CacheRoot, RootSource, resolve_root, resolve_root_in};
pub use crate::tier::disk::{EntryRecord, FORMAT_VERSION};
pub use crate::tier::memory::DEFAULT_MEM_CAPACITY;
#[cfg(feature = "macros")]
pub use memoshelve_macros::memoize;

/// Memoizes `compute` under `name` and `args` with the default options: the one-liner form of
/// [`Memo::call`]. Never fails because of the cache.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # unsafe { std::env::set_var("MEMOSHELVE_DIR", dir.path()) };
/// let primes: Vec<u32> = memoshelve_build::cache("primes", &100u32, || {
///     (2..100u32).filter(|n| (2..*n).all(|d| n % d != 0)).collect()
/// });
/// assert_eq!(primes.len(), 25);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Panics
/// As [`Memo::new`]: if `name` is empty or contains `/` or a control character (a fixed name in
/// the source, so a test run finds it; the cache itself never panics).
pub fn cache<A, T, F>(name: &str, args: &A, compute: F) -> T
where
    A: serde::Serialize + ?Sized,
    T: Cacheable,
    F: FnOnce() -> T,
{
    Memo::new(name).call(args, compute)
}
