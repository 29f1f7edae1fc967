//! The interposer that `cargo-memoshelve`'s runner preloads into the processes of a traced
//! build script (`getenv`, and the fast path of file calls on x86_64: `shim/getenv.rs`, a
//! `no_std` cdylib that `build.rs` compiles for the target), embedded as bytes: `None` where it is not built (not Linux with glibc, or it did
//! not compile, which `build.rs` says as a warning).

/// The interposer's bytes (a shared library), where it was built.
#[cfg(not(memoshelve_no_env_shim))]
pub const SHIM: Option<&[u8]> =
    Some(include_bytes!(concat!(env!("OUT_DIR"), "/memoshelve-env-shim.so")));

/// The interposer's bytes (a shared library), where it was built.
#[cfg(memoshelve_no_env_shim)]
pub const SHIM: Option<&[u8]> = None;

/// The page the shim makes its logged file calls from (x86_64): the runner's seccomp filter
/// lets calls made from there run without stopping.
#[path = "../shim/page.rs"]
pub mod page;

/// Where an x86_64 program names its loader: the runner measures the loader its own binary
/// names, which the shim compares with the programs it starts.
#[path = "../shim/elf.rs"]
pub mod elf;
