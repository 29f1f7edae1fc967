//! `#[memoize]`: the decorator form of memoshelve-build. Use it as `memoshelve_build::memoize`
//! (feature `macros` of `memoshelve-build`); this crate only generates code that calls it.

mod expand;
mod options;
mod source_hash;

use proc_macro::TokenStream;

/// Memoizes a function: its value for given arguments is computed once, then served from the
/// process-wide memory tier and from the disk cache (in this and later processes), exactly like
/// [`Memo::call`]. Needs the `macros` feature: `memoshelve-build = { version = "0.1", features =
/// ["macros"] }`.
///
/// ```
/// use memoshelve_build::{Status, memoize};
/// # let dir = tempfile::tempdir()?;
/// # unsafe { std::env::set_var("MEMOSHELVE_DIR", dir.path()) };
///
/// #[memoize]
/// fn collatz_steps(start: u64, verbose: bool) -> u32 {
///     let (mut n, mut steps) = (start, 0);
///     while n != 1 {
///         n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
///         steps += 1;
///     }
///     if verbose {
///         eprintln!("{start}: {steps} steps");
///     }
///     steps
/// }
///
/// assert_eq!(collatz_steps(27, false), 111); // computed
/// assert_eq!(collatz_steps(27, false), 111); // from memory
///
/// // The companion `<fn>_memo()` is the `Memo` behind it. Its arguments are the parameters in
/// // a tuple, and the value type is the return type:
/// let memo = collatz_steps_memo();
/// assert!(memo.contains::<u32, _>(&(27u64, false)));
/// let (steps, status): (u32, _) = memo.call_with_status(&(27u64, false), || unreachable!());
/// assert_eq!((steps, status), (111, Status::Memory));
/// assert!(memo.uncache::<u32, _>(&(27u64, false))?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # What it generates
///
/// - The function itself, same signature and visibility, whose body looks the arguments up and
///   runs the original body only on a miss. `return` and `?` in the body behave as before.
/// - A companion `fn <name>_memo() -> &'static Memo` (same visibility, in the same module or
///   `impl` block) for inspection: [`Memo::contains`], [`Memo::get`], [`Memo::call_with_status`],
///   [`Memo::uncache`], [`Memo::keys`]... The key arguments are the tuple of the parameters
///   that are not ignored, in order (`&(27u64, false)` above; `&(x,)` for a single parameter),
///   and the value type is the return type (for a `Result<T, E>`, `T`).
///
/// Functions whose return type is spelled `Result<T, E>` (any path ending in `Result`, such as
/// `io::Result<T>`) are memoized like [`Memo::try_call`]: an `Err` is returned and not cached,
/// so `E` need not be serializable. `async fn`s are memoized with [`Memo::call_async`]: any
/// executor, disk I/O on a helper thread, and concurrent callers of one key share one
/// computation. Generic functions work when their bounds make the parameters `Serialize` and the
/// value [`Cacheable`](trait.Cacheable.html).
///
/// # Options
///
/// `#[memoize(name = "..", version = "..", ignore(a, b), dir = "..", disable, allow_race = false,
/// log = "misses")]`, all optional:
///
/// | option | effect |
/// | --- | --- |
/// | `name = "grid"` | the cache name (default: the function's path, `crate::module::fn`, or `crate::module::Type::fn` in an `impl`) |
/// | `version = "2"` | a salt ([`Memo::version`]): bump it when something the body calls changes |
/// | `ignore(verbose, pool)` | these parameters do not join the key (they need not be `Serialize`) |
/// | `dir = "path"` | the cache root ([`Memo::dir`]; default: `MEMOSHELVE_DIR`, then the user cache dir); any expression of a type that is `AsRef<Path>`, such as `concat!(env!("OUT_DIR"), "/cache")`, evaluated once |
/// | `disable` | bypass both tiers ([`Memo::disable`]) |
/// | `allow_race = false` | one process computes a key, the others wait ([`Memo::allow_race`]) |
/// | `log = "misses"` | which events to report ([`Memo::log`]; `none`, `mem`, `disk`, `hits`, `misses`, `all`) |
///
/// # Source changes
///
/// The macro hashes the function's own tokens (its signature and body, as tokens: comments,
/// blank lines and formatting do not count) when it compiles, and that hash is added to the
/// version salt: the companion's [`Memo::version`] reads `src.<16 hex digits>`, or
/// `<version>+src.<16 hex digits>` with a `version` option. Editing the body therefore turns
/// every earlier entry into a miss, and reformatting it or editing a comment does not.
///
/// Only this function's tokens are hashed: a change in a function it calls, a constant it reads,
/// or a dependency is not seen. Bump `version = ".."` when such a change alters results.
///
/// # Not supported
///
/// Methods with a `self` receiver (the receiver would have to be part of the key: pass the
/// value as an ordinary parameter of an associated function), `impl Trait` in parameters or the
/// return type, `const fn` and C-variadic functions are compile errors that say so. In a trait
/// `impl` block the companion would not be a member of the trait: memoize a free function (or an
/// inherent associated function) that the trait method calls.
///
// These links are relative to `memoshelve_build`'s docs, where this macro is re-exported.
/// [`Memo::call`]: struct.Memo.html#method.call
/// [`Memo::call_async`]: struct.Memo.html#method.call_async
/// [`Memo::try_call`]: struct.Memo.html#method.try_call
/// [`Memo::contains`]: struct.Memo.html#method.contains
/// [`Memo::get`]: struct.Memo.html#method.get
/// [`Memo::call_with_status`]: struct.Memo.html#method.call_with_status
/// [`Memo::uncache`]: struct.Memo.html#method.uncache
/// [`Memo::keys`]: struct.Memo.html#method.keys
/// [`Memo::version`]: struct.Memo.html#method.version
/// [`Memo::dir`]: struct.Memo.html#method.dir
/// [`Memo::disable`]: struct.Memo.html#method.disable
/// [`Memo::allow_race`]: struct.Memo.html#method.allow_race
/// [`Memo::log`]: struct.Memo.html#method.log
#[proc_macro_attribute]
pub fn memoize(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand::memoize(attr.into(), item.clone().into()) {
        Ok(tokens) => tokens.into(),
        Err(err) => {
            // The function as written stays, so its callers do not add errors of their own.
            let mut tokens: TokenStream = err.into_compile_error().into();
            tokens.extend(item);
            tokens
        }
    }
}

#[cfg(test)]
mod tests;
