//! Transparent mode (DESIGN.md section 9): `cargo-memoshelve` as `RUSTC_WRAPPER` memoizes the
//! execution of every build script in the graph, with no change to any crate.
//!
//! - [`compile`]: cargo runs `cargo-memoshelve <rustc> <args>` for every compile. A compile that is
//!   not a build script goes straight to rustc (or to `MEMOSHELVE_RUSTC_WRAPPER`, e.g. sccache);
//!   a build script's is compiled the same way, then the launcher is put where cargo runs it.
//! - The launcher (`src/bin/memoshelve-launcher.rs`) hands the run to the pinned tool, as
//!   `cargo-memoshelve __memoshelve-build-script <real binary> <args>`: [`run`].
//!
//! Both are chosen from the first argument, before anything else is parsed, so that a
//! pass-through compile costs one exec.

pub(crate) mod compile;
pub(crate) mod run;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

/// The argument the launcher passes first (see the launcher's `RUN_FLAG`).
pub(crate) const RUN_FLAG: &str = "__memoshelve-build-script";

/// The record beside a launcher (see the launcher's `RECORD`).
pub(crate) const RECORD: &str = ".memoshelve-launch";

/// The wrapper's or the runner's work, when this invocation is one of them (else `None`: a
/// `cargo memoshelve` command).
pub(crate) fn dispatch(args: &[OsString]) -> Option<ExitCode> {
    let first = args.get(1)?;
    if first == RUN_FLAG {
        return Some(run::main(&args[2..]));
    }
    let wrapped = first != "memoshelve"
        && !first.to_string_lossy().starts_with('-')
        // Cargo sets CARGO for its wrapper: the first argument is then rustc, or a workspace
        // wrapper of any name (`RUSTC_WORKSPACE_WRAPPER`) that runs it.
        && (is_rustc(Path::new(first)) || std::env::var_os("CARGO").is_some());
    wrapped.then(|| compile::main(&args[1..]))
}

/// Whether `program` is a rustc that cargo hands its wrapper (`rustc`, a path to one, or a
/// toolchain's `clippy-driver`), as sccache tells its wrapper mode.
fn is_rustc(program: &Path) -> bool {
    let Some(stem) = program.file_stem().and_then(|stem| stem.to_str()) else { return false };
    stem == "rustc" || stem.starts_with("rustc-") || stem == "clippy-driver"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_rustc_from_a_subcommand() {
        for rustc in
            ["rustc", "/home/u/.rustup/toolchains/stable/bin/rustc", "rustc.exe", "clippy-driver"]
        {
            assert!(is_rustc(Path::new(rustc)), "{rustc}");
        }
        for other in ["memoshelve", "list", "--help", "/usr/bin/sccache", "rustcx"] {
            assert!(!is_rustc(Path::new(other)), "{other}");
        }
    }
}
