//! The rustc wrapper: every compile goes to the unit cache (the full tool); with that off, it
//! passes through, and a build script's compile gets a launcher.

use std::ffi::OsString;
use std::process::Command;

use crate::launching::{BuildScript, value_of};
use crate::protocol::{self, code_of, inner_wrapper};

/// `args` is rustc and its arguments, as cargo gives them to `RUSTC_WRAPPER`.
pub(crate) fn main(args: &[OsString]) -> u8 {
    if memoized(&args[1..])
        && let Ok(tool) = protocol::sibling(protocol::TOOL)
        && tool.is_file()
    {
        // The unit cache (the full tool's `wrapper::compile`), which also puts a build
        // script's launcher in place; if it cannot start, the compile goes on uncached.
        let mut memoizing = Command::new(tool);
        memoizing.arg(protocol::COMPILE_FLAG).args(args);
        let _ = protocol::exec(memoizing);
    }
    let mut command = match inner_wrapper() {
        Some(inner) => {
            let mut command = Command::new(inner);
            command.args(args);
            command
        }
        None => {
            let mut command = Command::new(&args[0]);
            command.args(&args[1..]);
            command
        }
    };
    let Some(script) = BuildScript::of(&args[1..]) else {
        return pass_through(command);
    };
    let status = match command.status() {
        Ok(status) => status,
        Err(err) => {
            eprintln!("error: memoshelve: cannot run {}: {err}", args[0].to_string_lossy());
            return 1;
        }
    };
    if !status.success() {
        return code_of(status);
    }
    script.put_launcher();
    0
}

/// Whether a compile goes to the unit cache: one that writes
/// into an `--out-dir` (not cargo's `--print` probes), unless `MEMOSHELVE_DISABLE=1` or
/// `MEMOSHELVE_UNITS=off` (read at each compile).
fn memoized(args: &[OsString]) -> bool {
    value_of(args, "--out-dir").is_some()
        && std::env::var_os("MEMOSHELVE_DISABLE").is_none_or(|value| value != "1")
        && std::env::var_os("MEMOSHELVE_UNITS").is_none_or(|value| value != "off")
}

/// Runs `command` in this process's place: a pass-through compile costs one exec.
fn pass_through(command: Command) -> u8 {
    let program = command.get_program().to_owned();
    let err = protocol::exec(command);
    eprintln!("error: memoshelve: cannot run {}: {err}", program.to_string_lossy());
    1
}
