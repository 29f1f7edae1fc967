//! Transparent mode (DESIGN.md section 9): `cargo-memoshelve` as `RUSTC_WRAPPER` memoizes the
//! execution of every build script in the graph, with no change to any crate.
//!
//! - The front (`src/bin/cargo-memoshelve/`) is cargo's wrapper: a compile that is not a build
//!   script goes straight to rustc (or to `MEMOSHELVE_RUSTC_WRAPPER`, e.g. sccache); a build
//!   script's is compiled the same way, then the launcher is put where cargo runs it.
//! - The launcher (`src/bin/memoshelve-launcher.rs`) hands the run to the pinned full tool, as
//!   `memoshelve __memoshelve-build-script <real binary> <args>`: [`run`].

pub(crate) mod compile;
pub(crate) mod hermetic;
pub(crate) mod outputs;
pub(crate) mod run;
pub(crate) mod spelled;
pub(crate) mod statcache;
pub(crate) mod trace;
