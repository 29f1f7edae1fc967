//! What `#[memoize]` expands to calls (feature `macros`). Not public API: it may change in any release.

use std::convert::Infallible;

use serde::Serialize;

use crate::key::Key;
use crate::memo::{Cacheable, Memo};

/// What can join the key: every `Serialize` type. The message below is what a user sees for a
/// parameter that is not.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not `serde::Serialize`, so it cannot be part of the cache key",
    label = "the parameters of a `#[memoize]` function are its cache key",
    note = "derive or implement `Serialize` for it, or leave the parameter out of the key with `#[memoize(ignore(..))]`"
)]
pub trait KeyArg: Serialize {}
impl<T: Serialize + ?Sized> KeyArg for T {}

/// Fails to compile, at the span the macro gives it, for a parameter that is not `Serialize`.
pub fn assert_key_arg<T: KeyArg + ?Sized>(_: &T) {}

/// The default cache name: `site` is the type name of a marker struct declared in the body of
/// the memoized function or of its `<fn>_memo()`, such as `crate::module::square_memo::Site`
/// (in an `async fn`, `crate::module::fetch::{{closure}}::Site`); the name is the path of the
/// item holding that function with `fn_name` appended: `crate::module::square`, or in an
/// `impl Grid` block `crate::module::Grid::square`.
pub fn default_name(site: &str, fn_name: &str) -> String {
    let mut function = site.rsplit_once("::").map_or("", |(function, _marker)| function);
    while let Some((parent, last)) = function.rsplit_once("::")
        && last.starts_with('{')
    {
        function = parent;
    }
    match function.rsplit_once("::") {
        Some((holder, _)) => format!("{holder}::{fn_name}"),
        None => fn_name.to_owned(),
    }
}

/// `#[memoize]` on a plain function: `key` joins the key, `rest` (the ignored parameters) does
/// not; both are moved into `compute` on a miss.
pub fn call<K: KeyArg, R, T: Cacheable>(
    memo: &Memo,
    key: K,
    rest: R,
    compute: impl FnOnce(K, R) -> T,
) -> T {
    match try_call(memo, key, rest, |key, rest| Ok::<T, Infallible>(compute(key, rest))) {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// `#[memoize]` on a function returning `Result`: `Err` is returned and not cached.
///
/// # Errors
/// Those of `compute`.
pub fn try_call<K: KeyArg, R, T: Cacheable, E>(
    memo: &Memo,
    key: K,
    rest: R,
    compute: impl FnOnce(K, R) -> Result<T, E>,
) -> Result<T, E> {
    let found = if memo.disabled() { None } else { memo.key_of::<K, T>(&key) };
    let Some(found) = found else {
        memo.key_inputs();
        return compute(key, rest);
    };
    // The rendering kept in the entry is taken before `compute` consumes the arguments.
    let rendering = std::cell::Cell::new(String::new());
    memo.memoize(
        found,
        |disk_only| memo.lookup_from::<T>(&found, disk_only),
        || {
            rendering.set(memo.render_args(&key));
            compute(key, rest)
        },
        |value, took| memo.store_or_warn(found, value, rendering.take(), took),
    )
    .map(|(value, _)| value)
}

/// `#[memoize]` on an `async fn`.
pub async fn call_async<K: KeyArg, R, T: Cacheable>(
    memo: &Memo,
    key: K,
    rest: R,
    compute: impl AsyncFnOnce(K, R) -> T,
) -> T {
    let compute = async |key, rest| Ok::<T, Infallible>(compute(key, rest).await);
    match try_call_async(memo, key, rest, compute).await {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// `#[memoize]` on an `async fn` returning `Result`: `Err` is returned and not cached.
///
/// # Errors
/// Those of `compute`.
pub async fn try_call_async<K: KeyArg, R, T: Cacheable, E>(
    memo: &Memo,
    key: K,
    rest: R,
    compute: impl AsyncFnOnce(K, R) -> Result<T, E>,
) -> Result<T, E> {
    memo.resolve_inputs().await;
    let found = if memo.disabled() { None } else { memo.key_of::<K, T>(&key) };
    let Some(found) = found else {
        return compute(key, rest).await;
    };
    let start = || (memo.render_args(&key), compute(key, rest));
    memo.memoize_async(found, start).await.map(|(value, _)| value)
}

/// How many callers (async or sync) wait for another caller's computation of `key` in this
/// process: for tests that need callers to overlap without sleeping.
pub fn waiting_on(key: &Key) -> usize {
    crate::memo::flight::waiting_on(key)
}

#[cfg(test)]
mod tests {

    #[cfg(feature = "macros")]
    #[test]
    fn the_default_memoize_name_is_the_same_from_the_function_and_its_companion() {
        use super::default_name;
        let cases = [
            (
                "square",
                "app::grid::square::MemoshelveSite",
                "app::grid::square_memo::MemoshelveSite",
            ),
            ("fetch", "app::fetch::{{closure}}::MemoshelveSite", "app::fetch_memo::MemoshelveSite"),
            (
                "cells",
                "app::Grid<_>::cells::MemoshelveSite",
                "app::Grid<_>::cells_memo::MemoshelveSite",
            ),
        ];
        for (fn_name, in_function, in_companion) in cases {
            assert_eq!(default_name(in_function, fn_name), default_name(in_companion, fn_name));
        }
        assert_eq!(default_name("app::fetch::{{closure}}::MemoshelveSite", "fetch"), "app::fetch");
        assert_eq!(
            default_name("<app::Grid as app::Shape>::cells_memo::MemoshelveSite", "cells"),
            "<app::Grid as app::Shape>::cells"
        );
        assert_eq!(default_name("main_memo::MemoshelveSite", "main"), "main");
    }
}
