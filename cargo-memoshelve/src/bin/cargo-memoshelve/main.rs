//! `cargo-memoshelve`, the front: what cargo runs as `RUSTC_WRAPPER` for every compile, and as
//! the `cargo memoshelve` subcommand (DESIGN.md section 9).
//!
//! It is std only and decides from its first argument, so that a compile that is not a build
//! script costs one small exec before rustc:
//! - a compile that is not a build script: exec rustc (or `MEMOSHELVE_RUSTC_WRAPPER`, e.g.
//!   sccache) at once, no cache work, no config read;
//! - a build script's compile: compile it the same way, then put the launcher where cargo runs
//!   it ([`compile`]);
//! - anything else is a command: exec the full tool, `memoshelve`, beside this binary.

//!
//! It has its own C `main`: std's runtime start (the stack guard read from `/proc/self/maps`,
//! signal handlers) is work a process that execs at once does not need, about 0.2 ms of the 1 ms
//! this front costs (`cargo xtask bench`, workload 10).

#![expect(clippy::print_stderr, reason = "a compile reports to cargo on stderr, as rustc does")]
#![cfg_attr(not(test), no_main)]

mod compile;
#[path = "../../launching.rs"]
mod launching;
#[path = "../../protocol.rs"]
#[allow(dead_code, reason = "the front uses part of what the binaries share")]
mod protocol;

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

/// Called by the C runtime; std still provides the arguments and the environment.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    std::ffi::c_int::from(front())
}

/// The exit code.
#[cfg_attr(test, expect(dead_code, reason = "the test harness has its own main"))]
fn front() -> u8 {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(first) = args.get(1)
        && wraps(first)
    {
        return compile::main(&args[1..]);
    }
    let tool = match protocol::sibling(protocol::TOOL) {
        Ok(tool) => tool,
        Err(err) => {
            eprintln!("error: cannot tell where cargo-memoshelve is: {err}");
            return 1;
        }
    };
    let mut command = Command::new(&tool);
    command.args(&args[1..]);
    let err = protocol::exec(command);
    eprintln!(
        "error: cannot run {}: {err}\n(`cargo install cargo-memoshelve` installs it beside \
         cargo-memoshelve)",
        tool.display()
    );
    1
}

/// Whether this is cargo running its wrapper: the first argument is rustc, or (cargo sets
/// `CARGO` for its wrapper) a workspace wrapper of any name that runs it.
fn wraps(first: &OsString) -> bool {
    first != "memoshelve"
        && !first.to_string_lossy().starts_with('-')
        && (is_rustc(Path::new(first)) || std::env::var_os("CARGO").is_some())
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
