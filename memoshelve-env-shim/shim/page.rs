//! Where the shim's system call entry lives: one constant, a module of both the shim and the
//! `memoshelve-env-shim` crate (`#[path]`), so the runner's filter and the shim agree.

/// The page where the shim puts its system call entry (x86_64): the watched run's seccomp filter
/// lets the calls made from it run unstopped, since the shim has logged their paths already.
/// Far below where Linux maps libraries and stacks (near 128 TiB) and above where it loads
/// programs (near 85 TiB); a process that has something there keeps its calls stopped.
/// Shared, by `include!`, between the shim (`shim/files.rs`) and the runner's filter.
pub const FAST_PAGE: u64 = 0x6d65_6d6f_0000;
