//! Running the real script: plainly, or recorded (traced, its output passed on as it comes and
//! kept), and the rules for what a recorded run must not have done.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::PoisonError;
use std::time::{Duration, Instant, SystemTime};

use super::key::in_key;
use super::unit::Unit;
use super::{EXTRA_ENV, Ran, Tracing, Unrecorded, clear, listed};
use crate::protocol::{exit_code, inner_wrapper};
use crate::wrapper::hermetic::{self, Sandbox};
use crate::wrapper::trace;

/// How much of a script's stderr an entry keeps, to replay on a hit.
pub(super) const STDERR_KEPT: usize = 1 << 20;

/// The real script, with cargo's environment but `RUSTC_WRAPPER` set back to the user's own
/// (cc-rs wraps C compiles only when that names sccache or its kin).
pub(super) fn script_command(real: &Path, args: &[OsString]) -> Command {
    let mut command = Command::new(real);
    command.args(args);
    match inner_wrapper() {
        Some(inner) => command.env("RUSTC_WRAPPER", inner),
        None => command.env_remove("RUSTC_WRAPPER"),
    };
    dies_with_runner(&mut command);
    command
}

/// Makes the script die with the runner (Linux's `PR_SET_PDEATHSIG`): cargo runs the runner in
/// the script's place, so a runner killed with SIGKILL must leave no script running on after
/// cargo gave up on it. (Its own children are the script's to end, as without memoshelve.)
#[cfg(target_os = "linux")]
pub(super) fn dies_with_runner(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    unsafe extern "C" {
        fn prctl(option: std::ffi::c_int, ...) -> std::ffi::c_int;
        fn getppid() -> std::ffi::c_int;
    }
    const PR_SET_PDEATHSIG: std::ffi::c_int = 1;
    const SIGKILL: std::ffi::c_ulong = 9;
    let runner = std::process::id().cast_signed();
    // SAFETY: between fork and exec, two system calls that touch no memory of the parent's.
    unsafe {
        command.pre_exec(move || {
            if prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The runner ended before the call: nobody would wait for the script.
            if getppid() != runner {
                return Err(std::io::Error::other("the runner has ended"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn dies_with_runner(_command: &mut Command) {}

/// Runs the real script uncached, its output straight to cargo; `why` is a cache problem to
/// report first.
pub(super) fn run_plain(real: &Path, args: &[OsString], why: Option<&str>) -> ExitCode {
    if let Some(why) = why {
        println!("cargo:warning=memoshelve: {why}; running the build script uncached");
    }
    match script_command(real, args).status() {
        Ok(status) => exit_code(status),
        Err(err) => {
            eprintln!("error: memoshelve: cannot run the build script {}: {err}", real.display());
            ExitCode::from(101)
        }
    }
}

/// A miss: runs the real script (traced with `tracing`), its stdout passed on line by line as
/// it comes (through the file step's capture, to cargo), and says whether the run may be
/// recorded, with its traced inputs.
///
/// In a `sandbox` (a hermetic run) the script's `OUT_DIR` is the sandbox's, which its output
/// lines name as cargo's; its stdout and stderr are held until it is known to have succeeded
/// without reaching outside `OUT_DIR`, so that a run redone in place prints once.
pub(super) fn run_recorded(
    unit: &Unit,
    real: &Path,
    args: &[OsString],
    sandbox: Option<&Sandbox>,
    tracing: Option<&Tracing>,
) -> Result<Ran, Unrecorded> {
    let started = unit.file_clock();
    let clock = Instant::now();
    let mut command = script_command(real, args);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let renames = sandbox.map(|sandbox| {
        command.envs(sandbox.env());
        sandbox.renames(&unit.out_dir)
    });
    let unsandbox = move |text: String| match &renames {
        Some(renames) => hermetic::rename_all(text, renames),
        None => text,
    };
    let scratch = unit.build_dir.join(".memoshelve");
    let dirs = tracing.map(|tracing| trace::Dirs { tools: &tracing.tools, scratch: &scratch });
    let run = match trace::spawn(&mut command, dirs.as_ref()) {
        Ok(run) => run,
        Err(err) if tracing.is_some() => {
            // `ptrace` or seccomp refused (a container's policy): the script runs untraced,
            // and so do the rest of this build's, keyed by what they declare.
            let why = err.to_string();
            unit.mark_tracing_failed(&why);
            unit.tell_once(&format!(
                "build scripts are cached by what they declare, not traced: tracing failed \
                 ({why})"
            ));
            run_recorded(unit, real, args, sandbox, None)?;
            return Err(Unrecorded::Bypassed(format!("tracing failed: {why}")));
        }
        Err(err) => {
            eprintln!("error: memoshelve: cannot run the build script {}: {err}", real.display());
            return Err(Unrecorded::Failed(ExitCode::from(101)));
        }
    };
    let mut run = run;
    // Stderr goes to cargo as it comes (held back in a hermetic run) and is kept, its first
    // `STDERR_KEPT` bytes, to be replayed on a hit.
    let passed_on = sandbox.is_none();
    let stderr = run.child.stderr.take().map(|mut stderr| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut chunk = [0; 8192];
            let mut to = std::io::stderr();
            while let Ok(read) = std::io::Read::read(&mut stderr, &mut chunk) {
                if read == 0 {
                    break;
                }
                if passed_on {
                    let _ = to.write_all(&chunk[..read]);
                }
                if kept.len() < STDERR_KEPT || !passed_on {
                    kept.extend_from_slice(&chunk[..read]);
                }
            }
            kept
        })
    });
    // Stdout on a thread of its own too: a traced run is followed on this one.
    let stdout = run.child.stdout.take().map(|stdout| {
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut utf8 = true;
            let mut reader = BufReader::new(stdout);
            let mut out = std::io::stdout();
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|read| read > 0) {
                match String::from_utf8(std::mem::take(&mut line)) {
                    Ok(text) => {
                        if passed_on {
                            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                        }
                        lines.push(unsandbox(text));
                    }
                    Err(err) => {
                        if passed_on {
                            let _ = out.write_all(err.as_bytes()).and_then(|()| out.flush());
                        }
                        utf8 = false;
                    }
                }
            }
            (lines, utf8)
        })
    });
    let (status, observed) = match run.wait() {
        Ok(ended) => ended,
        Err(err) => {
            eprintln!("error: memoshelve: lost the build script {}: {err}", real.display());
            return Err(Unrecorded::Failed(ExitCode::from(101)));
        }
    };
    let took = clock.elapsed();
    let (lines, utf8) = stdout.and_then(|thread| thread.join().ok()).unwrap_or((Vec::new(), true));
    let kept = stderr.and_then(|thread| thread.join().ok()).unwrap_or_default();
    let mut stderr_text = String::from_utf8_lossy(&kept).into_owned();
    // What the run read and wrote, as inputs; why it cannot be recorded otherwise.
    let traced = match (&observed, tracing) {
        (Some(observed), Some(tracing)) if status.success() => {
            let keyed = |name: &str| in_key(name) || listed(EXTRA_ENV, name);
            let scope = trace::inputs::Scope {
                roots: &unit.roots,
                own: vec![unit.out_dir.clone(), scratch.clone()],
                target_dir: unit.target_dir.as_deref(),
                left_out: tracing.left_out.clone(),
                keyed_env: &keyed,
            };
            let mut stats = tracing.stats.lock().unwrap_or_else(PoisonError::into_inner);
            trace::inputs::record(observed, &scope, &mut stats).map(Some)
        }
        _ => Ok(None),
    };
    if let Some(sandbox) = sandbox {
        if !utf8 {
            // Its lines cannot be renamed to cargo's OUT_DIR.
            let why = "its output is not UTF-8".to_owned();
            return Err(Unrecorded::Redo { why, record: false });
        }
        if !status.success() {
            let why = format!("it failed in a hermetic run ({status}) but not in place");
            return Err(Unrecorded::Redo { why, record: false });
        }
        if let Some(stray) = sandbox.stray() {
            let why = format!("a hermetic run wrote {} outside OUT_DIR", stray.display());
            return Err(Unrecorded::Redo { why, record: false });
        }
        // A directive naming the sandbox in a way the rewrite missed would point cargo at a
        // directory that is about to go.
        if lines.iter().any(|line| sandbox.named_in(line)) {
            let why = "its output names the hermetic sandbox in another spelling".to_owned();
            return Err(Unrecorded::Redo { why, record: false });
        }
        if let Err(err) = sandbox.move_into(&unit.out_dir) {
            clear(&unit.out_dir);
            let why = format!("cannot move the hermetic run's files: {err}");
            return Err(Unrecorded::Redo { why, record: true });
        }
        if let Some(path) = sandbox.names_made_path(&unit.out_dir) {
            clear(&unit.out_dir);
            let why = format!("a binary names {path} through the sandbox, outside debug info");
            return Err(Unrecorded::Redo { why, record: true });
        }
        let mut out = std::io::stdout();
        for line in &lines {
            let _ = out.write_all(line.as_bytes());
        }
        let _ = out.flush();
        let _ = std::io::stderr().write_all(&kept);
        stderr_text = hermetic::rename_all(stderr_text, &sandbox.renames(&unit.out_dir));
    }
    if stderr_text.len() > STDERR_KEPT {
        let mut end = STDERR_KEPT;
        while !stderr_text.is_char_boundary(end) {
            end -= 1;
        }
        stderr_text.truncate(end);
        stderr_text
            .push_str("\n[memoshelve: the rest of this build script's stderr was not kept]\n");
    }
    if !status.success() {
        return Err(Unrecorded::Failed(exit_code(status)));
    }
    if !utf8 {
        return Err(Unrecorded::Bypassed("its output is not UTF-8".to_owned()));
    }
    if took < min_time() {
        return Err(Unrecorded::Fast);
    }
    for line in &lines {
        if let Some(path) = rerun_if_changed(line.trim()) {
            bypass_for_input(unit, path, started)?;
        }
    }
    let traced = traced.map_err(Unrecorded::Bypassed)?;
    let stops = observed.map(|observed| (observed.stops, observed.logged));
    Ok(Ran { stderr: stderr_text, traced, stops })
}

/// How long a run must take to be recorded: `MEMOSHELVE_BUILD_SCRIPTS_MIN_TIME` milliseconds,
/// 50 by default.
pub(super) fn min_time() -> Duration {
    std::env::var("MEMOSHELVE_BUILD_SCRIPTS_MIN_TIME")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_millis(50), Duration::from_millis)
}

/// The path of a `rerun-if-changed` directive, in either syntax.
pub(super) fn rerun_if_changed(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("cargo::").or_else(|| line.strip_prefix("cargo:"))?;
    rest.strip_prefix("rerun-if-changed=")
}

/// Whether a declared input forbids recording: empty (always rerun), inside `OUT_DIR` (the run
/// made its own input), or changed while the script ran.
pub(super) fn bypass_for_input(
    unit: &Unit,
    path: &str,
    started: SystemTime,
) -> Result<(), Unrecorded> {
    if path.is_empty() {
        return Err(Unrecorded::Bypassed("it declared an empty rerun-if-changed".to_owned()));
    }
    let path = unit.manifest_dir.join(path);
    if path.starts_with(&unit.out_dir) {
        return Err(Unrecorded::Bypassed(format!(
            "it declared rerun-if-changed={} inside OUT_DIR",
            path.display()
        )));
    }
    if fs::metadata(&path)
        .and_then(|meta| meta.modified())
        .is_ok_and(|modified| modified >= started)
    {
        return Err(Unrecorded::Bypassed(format!("{} changed while it ran", path.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_directive_syntaxes() {
        assert_eq!(rerun_if_changed("cargo:rerun-if-changed=a.h"), Some("a.h"));
        assert_eq!(rerun_if_changed("cargo::rerun-if-changed="), Some(""));
        assert_eq!(rerun_if_changed("cargo:rustc-cfg=x"), None);
    }
}
