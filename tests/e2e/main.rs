//! End-to-end tests: the library in real, separate processes on real cache directories.
//!
//! The probe binary (`src/bin/memoshelve-probe.rs`) memoizes a known pure function; each test
//! runs it as fresh processes and reads what it printed.

mod context;
mod examples;
#[cfg(unix)]
mod file_steps;
mod memoize;
mod processes;
mod reliability;
mod remote;
mod roots;
#[cfg(target_os = "linux")]
mod traced;
#[cfg(unix)]
mod units;
#[cfg(unix)]
mod wrapper;

use std::borrow::BorrowMut;
use std::path::Path;
use std::process::{Command, Output};

/// A probe command with a clean environment: no inherited MEMOSHELVE_* or build-script variables,
/// and none of the caller's cargo settings.
pub(crate) fn probe(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_memoshelve-probe"));
    command.args(args);
    without_callers_cargo_env(&mut command);
    // Cargo sets `HOST` for build scripts only: with `OUT_DIR` and `CARGO_MANIFEST_DIR` (which
    // a test sets to run the probe as a build script) it is one.
    command.env("HOST", "x86_64-unknown-linux-gnu");
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("MEMOSHELVE_") || name.starts_with("PROBE_") || name == "OUT_DIR" {
            command.env_remove(name);
        }
    }
    command
}

/// Removes the variables of the caller's cargo setup that change where a project's target
/// directory is (`CARGO_TARGET_DIR` is common in CI and for a shared target dir): a test of a
/// project it made must see that project as a user's cargo would.
pub(crate) fn without_callers_cargo_env(command: &mut Command) -> &mut Command {
    command.env_remove("CARGO_TARGET_DIR").env_remove("CARGO_BUILD_TARGET_DIR")
}

/// Runs a command, asserts success, and returns its stdout lines.
pub(crate) fn lines(mut command: impl BorrowMut<Command>) -> Vec<String> {
    let output = run(command.borrow_mut());
    String::from_utf8(output.stdout).expect("utf-8 stdout").lines().map(str::to_owned).collect()
}

pub(crate) fn run(command: &mut Command) -> Output {
    let output = command.output().expect("spawn the probe");
    assert!(
        output.status.success(),
        "{command:?} failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The status words of probe output lines (`<arg> <checksum> <status>`).
pub(crate) fn statuses(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|line| !line.starts_with("cargo:"))
        .map(|line| line.splitn(3, ' ').nth(2).unwrap_or("").to_owned())
        .collect()
}

pub(crate) fn counted(counter: &Path) -> usize {
    std::fs::read_to_string(counter).map_or(0, |text| text.lines().count())
}

/// The `cargo-memoshelve` binary of this workspace, built if needed.
pub(crate) fn cli_binary() -> std::path::PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--package", "cargo-memoshelve"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(built.success());
    std::path::Path::new(env!("CARGO_BIN_EXE_memoshelve-probe")).with_file_name("cargo-memoshelve")
}

/// Runs a probe as inside a build script (`OUT_DIR` and `CARGO_MANIFEST_DIR` set to `dir`, and
/// `HOST`, so
/// warnings are `cargo:warning=` lines) and returns its stdout lines.
pub(crate) fn in_build_script(mut command: impl BorrowMut<Command>, dir: &Path) -> Vec<String> {
    lines(
        command
            .borrow_mut()
            .env("OUT_DIR", dir)
            .env("CARGO_MANIFEST_DIR", dir)
            .env("HOST", "x86_64-unknown-linux-gnu"),
    )
}

/// The memoshelve warnings among a probe's output lines.
pub(crate) fn warnings(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|line| line.starts_with("cargo:warning=memoshelve:")).collect()
}
