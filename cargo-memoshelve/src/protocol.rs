//! What the three binaries of this package agree on, in one place (std only: each includes it).
//!
//! - `cargo-memoshelve`, the front: cargo's `RUSTC_WRAPPER` and the `cargo memoshelve`
//!   subcommand. It passes every compile straight to rustc and hands everything else on.
//! - `memoshelve-launcher`: what cargo runs where a build script was.
//! - `memoshelve`, the full tool: the commands, and the runner a launcher hands a script to.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The first argument a launcher gives the full tool: run this build script.
pub(crate) const RUN_FLAG: &str = "__memoshelve-build-script";

/// The first argument the front gives the full tool: memoize this rustc compile (the rest is
/// rustc and its arguments).
pub(crate) const COMPILE_FLAG: &str = "__memoshelve-rustc";

/// The record beside a launcher: `tool=<full tool>` and `real=<the real script's file name>`.
pub(crate) const RECORD: &str = ".memoshelve-launch";

/// The variable that names the user's own wrapper, to which every compile goes (sccache, say).
pub(crate) const INNER_WRAPPER: &str = "MEMOSHELVE_RUSTC_WRAPPER";

/// The front's file name (the one to set as `RUSTC_WRAPPER`).
pub(crate) const FRONT: &str = "cargo-memoshelve";

/// The full tool's file name.
pub(crate) const TOOL: &str = "memoshelve";

/// The user's own wrapper, if one is set.
pub(crate) fn inner_wrapper() -> Option<OsString> {
    std::env::var_os(INNER_WRAPPER).filter(|inner| !inner.is_empty())
}

/// Whether `wrapper` (a `RUSTC_WRAPPER` value) is this package's front.
pub(crate) fn is_front(wrapper: &OsStr) -> bool {
    Path::new(wrapper).file_stem().is_some_and(|stem| stem == FRONT)
}

/// `name` (one of the binaries) beside the running one: `cargo install` puts them together.
pub(crate) fn sibling(name: &str) -> std::io::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
}

/// The exit code cargo would have seen from the command itself.
pub(crate) fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    ExitCode::from(code_of(status))
}

/// [`exit_code`]'s number: the command's own, or 101 (a panic's) when a signal ended it.
pub(crate) fn code_of(status: std::process::ExitStatus) -> u8 {
    status.code().map_or(101, |code| u8::try_from(code).unwrap_or(1))
}

/// Replaces this process by `command` (its file descriptors, the jobserver's among them, pass
/// on as they are); returns only when that fails.
#[cfg(unix)]
pub(crate) fn exec(mut command: Command) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    command.exec()
}

/// Windows has no exec: runs `command` and exits with its code.
#[cfg(not(unix))]
pub(crate) fn exec(mut command: Command) -> std::io::Error {
    match command.status() {
        Ok(status) => std::process::exit(status.code().unwrap_or(101)),
        Err(err) => err,
    }
}
