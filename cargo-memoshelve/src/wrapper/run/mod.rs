//! The runner: what the launcher hands a build script's run to.
//!
//! The flow of one run (`main`), each concern in a module of its own:
//! 1. `unit`: what cargo says of the unit (its directories, as placeholders: `Roots`), and
//!    whether the run is traced (DESIGN.md section 10) or keyed by what it declares.
//! 2. `key`: the level-1 key (DESIGN.md section 9): the script's binary, cargo's environment for
//!    the unit with this build's directories as placeholders, the contents behind `DEP_*`
//!    paths, the host; untraced also a local package's files and the C compiler's version.
//! 3. The lookup, through the library: the run is a file step of `memoshelve_build` over
//!    `OUT_DIR`, whose one tier path checks the second level (the inputs the run declared, and
//!    in `Memo::validate` the directories its files are bound to and its traced inputs), then
//!    restores the directory and replays the output.
//! 4. On a miss, `script`: the real script runs (traced, in the hermetic sandbox or in place)
//!    with cargo's environment, arguments, working directory and jobserver descriptors,
//!    `RUSTC_WRAPPER` set back to the user's own wrapper, its output streamed to cargo as it
//!    comes; what it used becomes the entry's traced inputs (`trace::inputs`).
//! 5. The record: what the run left (`outputs::Recorded`) is stored; `unit` writes what became of
//!    the run into `runs.log`.
//!
//! Recorded is only a run that exited 0, started with an empty `OUT_DIR`, took at least
//! `MEMOSHELVE_BUILD_SCRIPTS_MIN_TIME` milliseconds (50 by default), printed UTF-8, and declared
//! no `rerun-if-changed` that is empty, inside `OUT_DIR`, or changed while it ran. Any problem of
//! the cache's runs the real script with one `cargo:warning`; a failing script's status and
//! output reach cargo as they would without memoshelve.
//!
//! Settings are variables, which cargo hands every build script (set them for a project in
//! `.cargo/config.toml`'s `[env]`, where `cargo memoshelve setup` writes): a dependency's script
//! is told nothing of the workspace it is built for, so it cannot read the workspace's
//! `Cargo.toml`. `MEMOSHELVE_BUILD_SCRIPTS_SKIP` (packages that always run),
//! `MEMOSHELVE_BUILD_SCRIPTS_ENV` (variables scripts read undeclared, added to the key),
//! `MEMOSHELVE_BUILD_SCRIPTS_MIN_TIME`, `MEMOSHELVE_BUILD_SCRIPTS_HERMETIC` (see `hermetic`).

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "stdout is cargo's channel for a build script (a `cargo:warning`), stderr its log"
)]

mod key;
mod script;
mod unit;

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use memoshelve_build::config::Project;
use memoshelve_build::remote::{BUILD_SCRIPTS_REMOTE, Mode, Settings, build_scripts_opted_in};
use memoshelve_build::{Memo, Status};

use self::key::ScriptKey;
pub(crate) use self::key::nearest_difference;
use self::script::{run_plain, run_recorded};
use self::unit::Unit;
pub(crate) use self::unit::workspace_of;
use super::hermetic::{self, Sandbox};
use super::outputs::Recorded;
use super::statcache::StatCache;
use super::trace::{self, inputs::Traced};

/// Packages whose scripts always run, never recorded (comma-separated names).
const SKIP: &str = "MEMOSHELVE_BUILD_SCRIPTS_SKIP";

/// More variables the key holds, for scripts that read some without declaring them.
const EXTRA_ENV: &str = "MEMOSHELVE_BUILD_SCRIPTS_ENV";

/// Whether the comma-separated list in the variable `list` names `name`.
fn listed(list: &str, name: &str) -> bool {
    std::env::var(list).is_ok_and(|names| names.split(',').any(|listed| listed.trim() == name))
}

/// The step's argument, bumped when the key's meaning changes (2: the stored value became
/// `Recorded`; 3: the key's parts became named `input_value`s; 4: `Recorded` keeps stderr; 5:
/// the C compiler's version joined the key, the library's context parts left it; 6: `Recorded`
/// keeps why the run missed; 7: traced inputs replace the package's files and the C compiler's
/// version, `Recorded` keeps them).
const KEY_VERSION: u32 = 7;

/// Whether this build's remote takes and gives entries of cache `name`: only opted into and
/// signed (`Settings::carries`); and what to warn of when the opt-in has no signing key.
pub(crate) fn remote_carries(name: &str) -> (bool, Option<String>) {
    // Without the opt-in (a variable only) nothing is read: the usual case costs nothing.
    if !build_scripts_opted_in() {
        return (false, None);
    }
    let Ok(Some(settings)) = Settings::resolve(&Project::from_env()) else { return (false, None) };
    let unsigned = (settings.build_scripts && settings.signing_key.is_none()).then(|| {
        format!(
            "{BUILD_SCRIPTS_REMOTE} is set but MEMOSHELVE_REMOTE_KEY is not: transparent mode's \
             entries travel only signed, so this one stays local"
        )
    });
    (settings.mode != Mode::Off && settings.carries(name), unsigned)
}

/// `args`: the real binary, then cargo's arguments for the script.
pub(crate) fn main(args: &[OsString]) -> ExitCode {
    let Some((real, script_args)) = args.split_first() else {
        eprintln!("error: memoshelve: the launcher gave no build script to run");
        return ExitCode::from(101);
    };
    let real = PathBuf::from(real);
    let unit = match Unit::from_env() {
        Ok(unit) => unit,
        Err(why) => return run_plain(&real, script_args, Some(&why)),
    };
    if listed(SKIP, &unit.package) {
        unit.log(&format!("ran (in {SKIP})"), None);
        return run_plain(&real, script_args, None);
    }
    if let Some(entry) = first_entry(&unit.out_dir) {
        // A rerun over what an earlier run left would record the leftovers as if this run made
        // them, or miss the ones it did not rewrite.
        unit.log(&format!("ran (OUT_DIR not empty: {entry})"), None);
        return run_plain(&real, script_args, None);
    }
    // Whether the run is traced (DESIGN.md section 10), or keyed by what it declares.
    let untraced = trace::unavailable().or_else(|| unit.tracing_failed());
    // Said once per build on Linux, where tracing is the rule (elsewhere the README says so).
    if let Some(why) = untraced
        .as_deref()
        .filter(|why| cfg!(target_os = "linux") && !why.starts_with(trace::TRACE_VAR))
    {
        unit.tell_once(&format!(
            "build scripts are cached by what they declare, not traced: {why} (an input a \
             script reads without declaring it is not checked)"
        ));
    }
    let traced = untraced.is_none();
    let name = format!("build-script.{}", unit.package);
    let script = match key::script_hash(&unit, &real) {
        Ok(script) => script,
        Err(why) => return run_plain(&real, script_args, Some(&why)),
    };
    let root = Memo::new(&name).root();
    let fast = root.as_ref().map(|root| {
        let hex = blake3::Hash::from(script).to_hex();
        FastMark(root.join("fast-scripts").join(hex.as_str()))
    });
    if let Some(mark) = fast.as_ref().filter(|mark| mark.known()) {
        // Known to run under the floor: no key, no trace; timed, to lose the mark if it no
        // longer does.
        let started = Instant::now();
        let code = run_plain(&real, script_args, None);
        let took = started.elapsed();
        if took >= script::min_time() {
            mark.forget();
        }
        let floor = script::min_time().as_millis();
        unit.log(&format!("ran (faster than {floor} ms, known)"), Some(took));
        return code;
    }
    let key =
        match std::panic::catch_unwind(|| ScriptKey::of(&unit, script, traced, root.as_deref())) {
            Ok(Ok(key)) => key,
            Ok(Err(why)) => return run_plain(&real, script_args, Some(&why)),
            Err(_) => return run_plain(&real, script_args, Some("the key's computation panicked")),
        };
    // Named `build-script.<package>`, not DESIGN's `build-script/<package>`: a cache name has no
    // `/` (entries are addressed as `<name>/<key>`, and the name names the step's marker file);
    // a package name has no `.`, so no other cache takes the name.
    // An entry whose byte-exact files spell one of its build's directories restores only where
    // that directory is the same (see `outputs`).
    let here = unit.roots.clone();
    let (remote, unsigned) = remote_carries(&name);
    if let Some(warning) = unsigned {
        println!("cargo:warning=memoshelve: {warning}");
    }
    // Why a stored run does not hold here (its files bind it elsewhere, a traced input
    // changed), for the record of the miss.
    let unbound = Arc::new(Mutex::new(None));
    // The stat cache the hit check and the record share (saved in the cache root below).
    let stats = Arc::new(Mutex::new(StatCache::default()));
    // How the last hit check went (for `runs.log`, and the bench).
    let checked = Arc::new(Mutex::new(None));
    let memo = key
        .parts
        .iter()
        .fold(Memo::new(&name), |memo, (name, value)| memo.input_value(name, value))
        // The `env:` parts hold what the library's own context would add a second time (so
        // `show` and `explain` listed each twice); it keeps `HOST` and `rustc -vV`.
        .target_independent()
        .profile_independent()
        .features_independent()
        .validate({
            let (unbound, stats, checked) = (unbound.clone(), stats.clone(), checked.clone());
            move |recorded: &Recorded| {
                let why = if recorded.holds_in(&here) {
                    let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
                    let (reused, started) = (stats.reused, Instant::now());
                    let changed = recorded
                        .traced
                        .as_ref()
                        .and_then(|traced| traced.first_change(&here, &mut stats));
                    if let Some(traced) = &recorded.traced
                        && let Ok(mut checked) = checked.lock()
                    {
                        *checked = Some(format!(
                            "checked: {} inputs in {:.1} ms ({} files from the stat cache)",
                            traced.len(),
                            started.elapsed().as_secs_f64() * 1000.0,
                            stats.reused - reused
                        ));
                    }
                    changed
                } else {
                    Some(recorded.describe_bound())
                };
                let holds = why.is_none();
                // The newest run's reason (checked first), as the library's own word is.
                if let Some(why) = why
                    && let Ok(mut unbound) = unbound.lock()
                {
                    unbound.get_or_insert(why);
                }
                holds
            }
        });
    let memo = if remote { memo } else { memo.local_only() };
    let root = memo.root();
    if let Some(root) = &root {
        *stats.lock().unwrap_or_else(PoisonError::into_inner) =
            StatCache::open(root.join("tracing").join("stat").join(&name));
    }
    let tracing = match &root {
        Some(root) if traced => Some(Tracing {
            tools: root.join("tracing"),
            left_out: trace::inputs::machine_left_out(Some(root), unit.cargo_home.as_deref()),
            stats: stats.clone(),
        }),
        _ => None,
    };
    let started = Instant::now();
    let mut redone = None;
    // What tracing the run found and cost, for `runs.log`.
    let mut cost = None;
    let outcome = memo.outputs(&unit.out_dir).try_call_with_report(&KEY_VERSION, |step| {
        // Why no stored run served: the library's word for the newest under this key, else
        // (none there) the nearest run of the package's other keys.
        let missed = match step.missed() {
            Some(why) if why.contains("Memo::validate") => {
                unbound.lock().ok().and_then(|mut unbound| unbound.take()).or(Some(why.to_owned()))
            }
            Some(why) => Some(why.to_owned()),
            None => memo.root().and_then(|root| nearest_difference(&root, &name, &key.parts)),
        };
        // Claimed only when the script runs: a hit needs no sandbox.
        let sandbox = root.as_deref().and_then(|root| sandbox(&unit, root, &key.id()));
        let tracing = tracing.as_ref();
        let (stable, ran) = match &sandbox {
            Some(sandbox) => {
                match run_recorded(&unit, &real, script_args, Some(sandbox), tracing) {
                    Err(Unrecorded::Redo { why, record }) => {
                        // Whatever the script needs that a hermetic run does not give it, it gets
                        // in place: the build is never the worse for trying. A script that failed
                        // or reached outside OUT_DIR there depends on more than its key says.
                        let ran = run_recorded(&unit, &real, script_args, None, tracing)?;
                        if !record {
                            return Err(Unrecorded::Bypassed(why));
                        }
                        redone = Some(why);
                        (None, ran)
                    }
                    other => (Some(sandbox.renames(&unit.out_dir)), other?),
                }
            }
            None => (None, run_recorded(&unit, &real, script_args, None, tracing)?),
        };
        let mut recorded = Recorded::settle(&unit.out_dir, &unit.roots, stable.as_deref())
            .map_err(Unrecorded::Bypassed)?;
        recorded.stderr = unit.normalize(&ran.stderr);
        recorded.missed = missed;
        if let (Some(traced), Some((stops, logged))) = (&ran.traced, ran.stops) {
            cost = Some(format!(
                "traced: {} inputs, {stops} calls stopped, {logged} logged",
                traced.len()
            ));
        }
        recorded.traced = ran.traced;
        recorded.untraced = untraced.clone();
        Ok(recorded)
    });
    stats.lock().unwrap_or_else(PoisonError::into_inner).save();
    let took = Some(started.elapsed());
    match outcome {
        Ok((recorded, report)) => {
            let status = report.status;
            if let Err(err) = recorded.place(&unit.out_dir, &unit.roots) {
                // A relocated file still holds placeholders: the script runs again in place.
                clear(&unit.out_dir);
                unit.log("failed to relocate", took);
                let why = format!("cannot relocate the restored files: {err}");
                return run_plain(&real, script_args, Some(&why));
            }
            if status != Status::Miss {
                // What the script printed to stderr when it ran (cargo shows it with `-vv`).
                let _ = std::io::stderr().write_all(unit.roots.expand(&recorded.stderr).as_bytes());
            }
            let word = match (status, &report.not_stored) {
                (Status::Miss, Some(why)) => format!("ran (not stored: {why})"),
                (Status::Miss, None) if recorded.hermetic => "recorded (hermetic)".to_owned(),
                (Status::Miss, None) => "recorded".to_owned(),
                (Status::Memory | Status::Disk, _) => "restored".to_owned(),
                _ => "restored (remote)".to_owned(),
            };
            let word = match redone {
                Some(why) => format!("{word} (in place: {why})"),
                None => word,
            };
            let field = if status.is_hit() {
                checked.lock().ok().and_then(|mut checked| checked.take())
            } else {
                let missed = recorded.missed.as_ref().map(|why| format!("missed: {why}"));
                let fields: Vec<String> = cost.into_iter().chain(missed).collect();
                (!fields.is_empty()).then(|| fields.join("\t"))
            };
            unit.log_with(&word, took, field.as_deref());
            if let Some(why) = &report.not_stored {
                unit.tell_once(&format!(
                    "build scripts run but are not cached: {why} (what each did: {})",
                    unit.build_dir.join(".memoshelve/runs.log").display()
                ));
            }
            ExitCode::SUCCESS
        }
        Err(Unrecorded::Failed(code)) => {
            unit.log("failed", took);
            code
        }
        Err(Unrecorded::Bypassed(why) | Unrecorded::Redo { why, .. }) => {
            unit.log(&format!("ran ({why})"), took);
            ExitCode::SUCCESS
        }
        Err(Unrecorded::Fast) => {
            if let Some(mark) = &fast {
                mark.remember();
            }
            unit.log(&format!("ran (faster than {} ms)", script::min_time().as_millis()), took);
            ExitCode::SUCCESS
        }
    }
}

/// The mark, under the cache root, of a script binary whose run took less than the floor
/// (`fast-scripts/<its blake3>`): it is never stored, so its next run skips the key and the
/// trace (whose work for native-deps' own script, the contents behind its `DEP_*` paths, was
/// 48 ms before a 7 ms run). A marked script that then takes longer loses its mark.
struct FastMark(PathBuf);

impl FastMark {
    fn known(&self) -> bool {
        self.0.exists()
    }

    fn remember(&self) {
        if let Some(dir) = self.0.parent() {
            let _ = fs::create_dir_all(dir).and_then(|()| fs::write(&self.0, b""));
        }
    }

    fn forget(&self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The hermetic sandbox for a run of `unit`'s script under the key `id` (see `hermetic`), if
/// the package runs hermetically and no other build holds it.
fn sandbox(unit: &Unit, root: &Path, id: &str) -> Option<Sandbox> {
    if !hermetic::wanted(&unit.package, unit.local) {
        return None;
    }
    match Sandbox::claim(root, id, &unit.profile_dir(), &unit.package) {
        Ok(mut sandbox) => {
            if let (Some(sandbox), Some(target)) = (&mut sandbox, &unit.target_dir) {
                sandbox.link_providers(target, std::env::vars_os());
            }
            sandbox
        }
        Err(err) => {
            unit.log(&format!("in place (no sandbox: {err})"), None);
            None
        }
    }
}

/// Empties `dir` but for the file step's marker directory.
fn clear(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name() == ".memoshelve" {
            continue;
        }
        let path = entry.path();
        let _ = if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
    }
}

/// Why a run that went through the cache is not stored.
enum Unrecorded {
    /// The script failed: its exit code.
    Failed(ExitCode),
    /// It ran well, but its result must not be replayed (see the module's rules).
    Bypassed(String),
    /// A hermetic run that must be done again in place: why, and whether the run in place may
    /// be recorded.
    Redo { why: String, record: bool },
    /// It ran in less than the floor (`script::min_time`): not stored, and remembered so.
    Fast,
}

/// How a traced run is watched and recorded.
struct Tracing {
    /// Where the `getenv` interposer is installed (in the cache root).
    tools: PathBuf,
    /// The machine's directories whose contents are no input (see `trace::inputs`).
    left_out: Vec<PathBuf>,
    stats: Arc<Mutex<StatCache>>,
}

/// What a run that may be recorded gave.
struct Ran {
    stderr: String,
    /// Its traced inputs (`None`: untraced).
    traced: Option<Traced>,
    /// How many of its system calls stopped for the tracer, and how many the preloaded shim
    /// logged instead.
    stops: Option<(u64, u64)>,
}

/// The first entry of `dir` (cargo makes it empty; a rerun finds the last run's files), leaving
/// out the marker a file step keeps there.
fn first_entry(dir: &Path) -> Option<String> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name != ".memoshelve")
}
