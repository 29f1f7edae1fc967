//! The launcher: what cargo runs where a build script was (DESIGN.md section 9).
//!
//! `cargo-memoshelve`, as `RUSTC_WRAPPER`, compiles a build script, moves the real binary aside
//! and puts a copy of this small program at the path cargo runs, with the real binary's mtime.
//! Beside it, `.memoshelve-launch` names the real binary and the pinned `cargo-memoshelve` of
//! this profile directory. This program only chooses: with `MEMOSHELVE_DISABLE=1` or
//! `MEMOSHELVE_BUILD_SCRIPTS=off` (read now, not when the script was compiled), when cargo no
//! longer runs `cargo-memoshelve` as its wrapper, or when the tool is gone, it runs the real
//! script itself; otherwise it hands over to the tool, which
//! restores the script's result or runs and records it.
//!
//! Without a record beside it, it is cargo's `host.runner` (nightly, cargo#16591): its first
//! argument is then the build script, and the tool is the `memoshelve` beside the launcher.
//!
//! It is a native program, not a shell script, because a shell drops environment variables whose
//! names are not identifiers, and cargo's `DEP_*` variables can be named so. It has no
//! dependencies, so one copy per build script costs a few hundred kilobytes, not a full tool.

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "stdout is cargo's channel for a build script (a `cargo:warning`), stderr its log"
)]

#[path = "../protocol.rs"]
#[allow(dead_code, reason = "the launcher uses part of what the binaries share")]
mod protocol;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use protocol::{RECORD, RUN_FLAG, exec};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(dir) =
        std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf))
    else {
        eprintln!("memoshelve launcher: cannot tell where this build script is");
        return ExitCode::from(101);
    };
    let (tool, real, args, wrapped) = match std::fs::read(dir.join(RECORD)) {
        Ok(record) => {
            let Some((tool, real)) = parse(&record) else {
                eprintln!(
                    "memoshelve launcher: {} is not a launcher record; run `cargo clean`",
                    dir.join(RECORD).display()
                );
                return ExitCode::from(101);
            };
            // Cargo hands a build script its `RUSTC_WRAPPER`: a launcher left from a build that
            // had the wrapper (after `setup --undo`, say) runs the real script once the wrapper
            // is gone.
            let wrapped = std::env::var_os("RUSTC_WRAPPER")
                .is_some_and(|wrapper| protocol::is_front(&wrapper));
            (tool, dir.join(real), args, wrapped)
        }
        // No record: run as cargo's `host.runner` (`memoshelve-launcher <build script> <args>`),
        // the tool beside this launcher.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && is_program(args.first()) => {
            let Ok(tool) = protocol::sibling(protocol::TOOL) else {
                eprintln!("memoshelve launcher: cannot tell where the tool is");
                return ExitCode::from(101);
            };
            (tool, PathBuf::from(&args[0]), args[1..].to_vec(), true)
        }
        Err(err) => {
            eprintln!(
                "memoshelve launcher: cannot read {}: {err}; run `cargo clean` to rebuild this \
                 build script",
                dir.join(RECORD).display()
            );
            return ExitCode::from(101);
        }
    };
    let off = !wrapped
        || std::env::var_os("MEMOSHELVE_DISABLE").is_some_and(|value| value == "1")
        || std::env::var_os("MEMOSHELVE_BUILD_SCRIPTS").is_some_and(|value| value == "off");
    if !off {
        if tool.is_file() {
            let mut command = Command::new(&tool);
            command.arg(RUN_FLAG).arg(&real).args(&args);
            let err = exec(command);
            // The tool could not be started: the script still runs.
            println!("cargo:warning=memoshelve: cannot start {}: {err}", tool.display());
        } else {
            println!(
                "cargo:warning=memoshelve: {} is gone; running the build script uncached",
                tool.display()
            );
        }
    }
    let mut command = Command::new(&real);
    command.args(&args);
    let err = exec(command);
    eprintln!("memoshelve launcher: cannot run the build script {}: {err}", real.display());
    ExitCode::from(101)
}

/// Whether `arg` names a file to run (as `host.runner`'s first argument does).
fn is_program(arg: Option<&OsString>) -> bool {
    arg.is_some_and(|arg| Path::new(arg).is_file())
}

/// `tool=<path>` and `real=<file name>` lines.
fn parse(record: &[u8]) -> Option<(PathBuf, PathBuf)> {
    let mut tool = None;
    let mut real = None;
    for line in record.split(|&byte| byte == b'\n') {
        if let Some(path) = line.strip_prefix(b"tool=") {
            tool = Some(path_of(path));
        } else if let Some(name) = line.strip_prefix(b"real=") {
            real = Some(path_of(name));
        }
    }
    Some((tool?, real?))
}

#[cfg(unix)]
fn path_of(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(not(unix))]
fn path_of(bytes: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
}
