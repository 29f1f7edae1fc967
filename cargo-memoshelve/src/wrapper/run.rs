//! The runner: what the launcher hands a build script's run to.
//!
//! The key (DESIGN.md section 9, level 1) is the script's binary, cargo's environment for the
//! unit with this build's directories as placeholders, the contents behind `DEP_*` paths, the
//! host, and, for a package outside `CARGO_HOME` (a path or workspace package, whose files can
//! change), its files. The run itself is a file step of `memoshelve_build` over `OUT_DIR`: the
//! one tier path restores the directory and replays the directives on a hit, and records the
//! inputs the run declared (`rerun-if-changed` by content, `rerun-if-env-changed` by value) as
//! the entry's second level. A miss runs the real script with cargo's environment, arguments,
//! working directory and jobserver descriptors, `RUSTC_WRAPPER` set back to the user's own
//! wrapper, and streams its output to cargo as it comes.
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

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use memoshelve_build::config::Project;
use memoshelve_build::remote::{BUILD_SCRIPTS_REMOTE, Mode, Settings, build_scripts_opted_in};
use memoshelve_build::store::Roots;
use memoshelve_build::{Memo, Status};

use super::hermetic::{self, Sandbox};
use super::outputs::{Recorded, contains};
use super::statcache::StatCache;
use super::trace::{self, inputs::Traced};
use crate::protocol::{exit_code, inner_wrapper};

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

/// The size past which the runner's record starts again (`Unit::log`).
const RUNS_LOG_MAX: u64 = 1 << 20;

/// How much of a script's stderr an entry keeps, to replay on a hit.
const STDERR_KEPT: usize = 1 << 20;

/// Whether this build's remote takes and gives entries of cache `name`: only opted into and
/// signed (`Settings::carries`); an opt-in without a signing key is warned about.
fn remote_carries(name: &str) -> bool {
    // Without the opt-in (a variable only) nothing is read: the usual case costs nothing.
    if !build_scripts_opted_in() {
        return false;
    }
    let Ok(Some(settings)) = Settings::resolve(&Project::from_env()) else { return false };
    if settings.build_scripts && settings.signing_key.is_none() {
        println!(
            "cargo:warning=memoshelve: {BUILD_SCRIPTS_REMOTE} is set but MEMOSHELVE_REMOTE_KEY \
             is not: build-script entries travel only signed, so this one stays local"
        );
    }
    settings.mode != Mode::Off && settings.carries(name)
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
    if let Some(why) = untraced.as_deref().filter(|why| !why.starts_with(trace::TRACE_VAR)) {
        unit.tell_once(&format!(
            "build scripts are cached by what they declare, not traced: {why} (an input a \
             script reads without declaring it is not checked)"
        ));
    }
    let traced = untraced.is_none();
    let key = match std::panic::catch_unwind(|| ScriptKey::of(&unit, &real, traced)) {
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
    let name = format!("build-script.{}", unit.package);
    let remote = remote_carries(&name);
    // Why a stored run does not hold here (its files bind it elsewhere, a traced input
    // changed), for the record of the miss.
    let unbound = Arc::new(Mutex::new(None));
    // The stat cache the hit check and the record share (saved in the cache root below).
    let stats = Arc::new(Mutex::new(StatCache::default()));
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
            let (unbound, stats) = (unbound.clone(), stats.clone());
            move |recorded: &Recorded| {
                let why = if recorded.holds_in(&here) {
                    let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
                    recorded
                        .traced
                        .as_ref()
                        .and_then(|traced| traced.first_change(&here, &mut stats))
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
    let sandbox = match hermetic::wanted(&unit.package, unit.local).then(|| root.clone()).flatten()
    {
        Some(root) => match Sandbox::claim(&root, &key.id(), &unit.profile_dir(), &unit.package) {
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
        },
        None => None,
    };
    let started = Instant::now();
    let mut redone = None;
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
        recorded.traced = ran.traced;
        recorded.untraced = untraced.clone();
        Ok(recorded)
    });
    drop(sandbox);
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
            unit.log_miss(&word, took, recorded.missed.as_deref().filter(|_| !status.is_hit()));
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
}

/// What cargo says about the unit whose script runs.
struct Unit {
    package: String,
    out_dir: PathBuf,
    manifest_dir: PathBuf,
    /// `<target>/<profile>/build`: where the pinned tool and the log are.
    build_dir: PathBuf,
    /// The target directory, above the profile's.
    target_dir: Option<PathBuf>,
    /// This build's directories, named by placeholder as a file step names them.
    roots: Roots,
    /// Whether the package's sources can change under one version (not from `CARGO_HOME`).
    local: bool,
    cargo_home: Option<PathBuf>,
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
}

impl Unit {
    fn from_env() -> Result<Unit, String> {
        let var = |name: &str| {
            std::env::var_os(name).map(PathBuf::from).ok_or_else(|| format!("{name} is not set"))
        };
        let out_dir = std::path::absolute(var("OUT_DIR")?).map_err(|err| err.to_string())?;
        let manifest_dir = var("CARGO_MANIFEST_DIR")?;
        let package = std::env::var("CARGO_PKG_NAME").map_err(|_| "CARGO_PKG_NAME is not set")?;
        let build_dir = out_dir
            .ancestors()
            .find(|dir| dir.file_name().is_some_and(|name| name == "build"))
            .ok_or_else(|| format!("OUT_DIR {} is not in cargo's build layout", out_dir.display()))?
            .to_path_buf();
        // `<target>[/<triple>]/<profile>/build`: the target directory is above the profile's.
        let target_dir = build_dir.parent().and_then(Path::parent).map(Path::to_path_buf);
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
        let local = cargo_home.as_ref().is_none_or(|home| !manifest_dir.starts_with(home));
        // A local package's workspace: a traced read of a sibling names it by placeholder.
        let workspace = if local { workspace_of(&manifest_dir) } else { None };
        let roots = Roots::new(
            [
                ("out", Some(out_dir.as_path())),
                ("manifest", Some(manifest_dir.as_path())),
                ("workspace", workspace.as_deref()),
                ("target", target_dir.as_deref()),
                ("cargo-home", cargo_home.as_deref()),
            ]
            .into_iter()
            .filter_map(|(name, dir)| Some((name, dir?))),
        );
        Ok(Unit { package, out_dir, manifest_dir, build_dir, target_dir, roots, local, cargo_home })
    }

    /// Why an earlier run of this build found that tracing cannot run here (`ptrace` or
    /// seccomp refused), if one did.
    fn tracing_failed(&self) -> Option<String> {
        fs::read_to_string(self.build_dir.join(".memoshelve").join("tracing-failed")).ok()
    }

    /// Remembers for the rest of this build (its target dir) that tracing cannot run here.
    fn mark_tracing_failed(&self, why: &str) {
        let dir = self.build_dir.join(".memoshelve");
        let _ = fs::create_dir_all(&dir)
            .and_then(|()| fs::write(dir.join("tracing-failed"), format!("tracing failed: {why}")));
    }

    /// The profile's directory below the target dir (`debug`, `<triple>/release`).
    fn profile_dir(&self) -> PathBuf {
        let profile = self.build_dir.parent().unwrap_or(&self.build_dir);
        match &self.target_dir {
            Some(target) => profile.strip_prefix(target).unwrap_or(profile).to_path_buf(),
            None => PathBuf::from("debug"),
        }
    }

    /// `text` with this build's directories as placeholders, at whole path components.
    fn normalize(&self, text: &str) -> String {
        self.roots.name(text)
    }

    /// Now, as the file system stamps a file written now: a declared input written after this
    /// carries an mtime at or after it. The wall clock cannot say so: the kernel stamps files
    /// from a coarse clock (4 ms ticks here), so a file rewritten just after `SystemTime::now()`
    /// can carry an earlier time. Read from a file touched in the build dir; where that fails,
    /// the wall clock a second back (an input rewritten in that second is taken as changed
    /// while the script ran: the run is not recorded, never wrongly replayed).
    fn file_clock(&self) -> SystemTime {
        let path = self.build_dir.join(".memoshelve").join("clock");
        let stamped = fs::create_dir_all(path.parent().unwrap_or(&self.build_dir))
            .and_then(|()| fs::write(&path, b"t"))
            .and_then(|()| fs::metadata(&path)?.modified());
        stamped.unwrap_or_else(|_| SystemTime::now() - Duration::from_secs(1))
    }

    /// Tells the person at the build, once per cargo process, a cache problem they must see:
    /// a `cargo:warning` of a package from the registry shows only with `-vv`, and what a rustc
    /// wrapper prints is stored by cargo and replayed on later fresh builds (stale once mended).
    /// On Linux the line goes to cargo's own stderr (its terminal or CI log); elsewhere, or when
    /// that cannot be opened, it is a `cargo:warning`.
    fn tell_once(&self, message: &str) {
        #[cfg(target_os = "linux")]
        {
            let cargo = std::os::unix::process::parent_id();
            // Its start time tells this cargo from an earlier one with the same pid.
            let started = fs::read_to_string(format!("/proc/{cargo}/stat"))
                .ok()
                .and_then(|stat| stat.rsplit_once(") ")?.1.split(' ').nth(19).map(str::to_owned));
            let dir = self.build_dir.join(".memoshelve");
            let told = dir.join(format!("told-{cargo}-{}", started.unwrap_or_default()));
            if fs::create_dir_all(&dir).is_err() {
                println!("cargo:warning=memoshelve: {message}");
                return;
            }
            match fs::File::create_new(&told) {
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => return,
                Err(_) => {}
                Ok(_) => {
                    // The marks of earlier builds go.
                    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                        let name = entry.file_name();
                        if name.to_string_lossy().starts_with("told-") && entry.path() != told {
                            let _ = fs::remove_file(entry.path());
                        }
                    }
                }
            }
            let line = format!("warning: memoshelve: {message}\n");
            let written = fs::OpenOptions::new()
                .append(true)
                .open(format!("/proc/{cargo}/fd/2"))
                .and_then(|mut stderr| stderr.write_all(line.as_bytes()));
            if written.is_ok() {
                return;
            }
        }
        println!("cargo:warning=memoshelve: {message}");
    }

    /// One line in `<build dir>/.memoshelve/runs.log`: what became of this script's run (the
    /// record the tests and `cargo memoshelve` read; a failure to write it changes nothing).
    /// Past `RUNS_LOG_MAX` bytes the log becomes `runs.log.1` (the one before is dropped).
    fn log(&self, what: &str, took: Option<Duration>) {
        self.log_miss(what, took, None);
    }

    /// [`Unit::log`], with why the run missed (a field of its own: `missed: <key part>`).
    fn log_miss(&self, what: &str, took: Option<Duration>, missed: Option<&str>) {
        let dir = self.build_dir.join(".memoshelve");
        let path = dir.join("runs.log");
        if fs::metadata(&path).is_ok_and(|meta| meta.len() > RUNS_LOG_MAX) {
            let _ = fs::rename(&path, dir.join("runs.log.1"));
        }
        let took = took.map_or(String::new(), |took| format!("\t{} ms", took.as_millis()));
        let missed = missed.map_or(String::new(), |why| format!("\tmissed: {why}"));
        let line = format!("{}\t{what}{took}{missed}\n", self.package);
        let _ = fs::create_dir_all(&dir).and_then(|()| {
            fs::File::options().create(true).append(true).open(&path)?.write_all(line.as_bytes())
        });
    }
}

/// Why a run of `name` keyed by `parts` found nothing stored under its key: the first part (in
/// name order) in which the nearest of the name's stored runs differs, the nearest being the
/// one with the fewest differing parts (the newest among equals); `None` when there is none, or
/// the nearest differs in none of these parts.
fn nearest_difference(root: &Path, name: &str, parts: &[(String, String)]) -> Option<String> {
    let entries = memoshelve_build::store::Store::open(root).entries(Some(name)).ok()?;
    let ours: std::collections::BTreeMap<&str, &str> =
        parts.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    let differences = |entry: &memoshelve_build::store::Entry| {
        let theirs: std::collections::BTreeMap<&str, &str> = entry
            .record
            .inputs
            .iter()
            .filter(|input| input.kind == "value")
            .map(|input| (input.name.as_str(), input.value.as_str()))
            .collect();
        let names: std::collections::BTreeSet<&str> =
            ours.keys().chain(theirs.keys()).copied().collect();
        let differing: Vec<&str> =
            names.into_iter().filter(|name| ours.get(name) != theirs.get(name)).collect();
        let first = differing.first().map(|part| (*part).to_owned());
        (differing.len(), std::cmp::Reverse(entry.record.created_ms), first)
    };
    // No part differs: this very key (an audit's rerun), or a part the library adds (`rustc
    // -vV`): nothing to name.
    entries.iter().map(differences).min()?.2
}

/// The root of the workspace a local package at `manifest_dir` is in, by cargo's rule: the
/// nearest directory above whose `Cargo.toml` has a `[workspace]` table; `None` when none has.
fn workspace_of(manifest_dir: &Path) -> Option<PathBuf> {
    manifest_dir.ancestors().skip(1).find_map(|dir| {
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).ok()?;
        manifest
            .lines()
            .any(|line| line.trim_start().starts_with("[workspace"))
            .then(|| dir.to_path_buf())
    })
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

/// The level-1 key: everything known before the run that determines it, as named parts (the
/// `Memo`'s `input_value`s, which `cargo memoshelve explain` names when one changes):
/// - `script`: the blake3 of the script's binary (any change to its code or its dependencies');
/// - `env:<NAME>`: cargo's environment for the unit, this build's directories as placeholders;
/// - `contents:<DEP_NAME>`: what is behind a `DEP_*` value that is a path this build made (a
///   `links` provider hands down paths whose spelling stays when what is there changes);
/// - `package files`: for a package whose files can change under one version;
/// - `host`: the OS and architecture;
/// - `c compiler`: what the C compiler cc-rs would pick says of its version (a result built by
///   another compiler is not this build's, the more so from a remote).
#[derive(Debug)]
struct ScriptKey {
    parts: Vec<(String, String)>,
}

/// Cargo's unit environment that a script may read without declaring it (never `NUM_JOBS` or
/// the jobserver: they describe the machine, not the run).
fn in_key(name: &str) -> bool {
    const EXACT: [&str; 10] = [
        "TARGET",
        "HOST",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_MANIFEST_LINKS",
        "RUSTC",
        "RUSTC_LINKER",
        "RUSTDOC",
    ];
    const PREFIXES: [&str; 6] =
        ["CARGO_CFG_", "CARGO_FEATURE_", "CARGO_PKG_", "DEP_", "PKG_CONFIG_", "CARGO_TRIM_PATHS_"];
    EXACT.contains(&name)
        || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
        || name == EXTRA_ENV
}

impl ScriptKey {
    /// A short name of the key, for the hermetic sandbox.
    fn id(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        for (name, value) in &self.parts {
            for text in [name, value] {
                hasher.update(&(text.len() as u64).to_le_bytes());
                hasher.update(text.as_bytes());
            }
        }
        hasher.finalize().to_hex()[..16].to_owned()
    }

    /// `traced`: the run's traced inputs stand for the package's files and the C compiler.
    fn of(unit: &Unit, real: &Path, traced: bool) -> Result<ScriptKey, String> {
        let hex = |hash: [u8; 32]| blake3::Hash::from(hash).to_hex().to_string();
        let mut parts = vec![("script".to_owned(), hex(hash_file(real)?))];
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if !in_key(name) && !listed(EXTRA_ENV, name) {
                continue;
            }
            let value_text = value.to_string_lossy();
            parts.push((format!("env:{name}"), unit.normalize(&value_text)));
            // Only what this build made: a provider's OUT_DIR keeps its spelling when what is
            // there changes. A path outside the target dir (`DEP_Z_INCLUDE=/usr/include` from a
            // system zlib) is the system's, as any library a script finds: its spelling is in
            // the key, its contents are not (hashing /usr/include took 2 s).
            if name.starts_with("DEP_")
                && unit
                    .target_dir
                    .as_ref()
                    .is_some_and(|target| Path::new(&value).starts_with(target))
                && let Some(hash) = contents_hash(unit, Path::new(&value))
            {
                parts.push((format!("contents:{name}"), hex(hash)));
            }
        }
        if traced {
            parts.push(("inputs".to_owned(), "traced".to_owned()));
        } else {
            parts.push(("inputs".to_owned(), "declared".to_owned()));
            if unit.local {
                parts.push(("package files".to_owned(), hex(package_files(unit)?)));
            }
            parts.push(("c compiler".to_owned(), c_compiler()));
        }
        let host = format!("{} {}", std::env::consts::OS, std::env::consts::ARCH);
        parts.push(("host".to_owned(), host));
        parts.sort();
        Ok(ScriptKey { parts })
    }
}

/// The first line `--version` prints for the C compiler cc-rs would use for `TARGET`: the first
/// of `CC_<target>`, `CC_<target_with_underscores>`, `TARGET_CC`, `CC` that is set, else `cc`
/// (a wrapper such as `sccache cc` runs as it is given); `none` when it does not run.
fn c_compiler() -> String {
    let target = std::env::var("TARGET").unwrap_or_default();
    let names = [
        format!("CC_{target}"),
        format!("CC_{}", target.replace('-', "_")),
        "TARGET_CC".to_owned(),
        "CC".to_owned(),
    ];
    let configured = names
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.trim().is_empty()));
    let command = configured.unwrap_or_else(|| "cc".to_owned());
    let mut words = command.split_whitespace();
    let Some(program) = words.next() else { return "none".to_owned() };
    let output = Command::new(program)
        .args(words)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            format!("{command}: {}", text.lines().next().unwrap_or_default().trim())
        }
        _ => format!("{command}: none"),
    }
}

fn hash_file(path: &Path) -> Result<[u8; 32], String> {
    let bytes = fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    Ok(*blake3::hash(&bytes).as_bytes())
}

/// The contents behind a path (a file, or a directory's whole tree), text with this build's
/// directories normalized; `None` when nothing is there (the value itself is in the key).
fn contents_hash(unit: &Unit, path: &Path) -> Option<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let meta = fs::metadata(path).ok()?;
    if meta.is_dir() {
        tree_into(unit, path, &mut hasher, &[], &mut Walked::new(path)).ok()?;
    } else {
        file_into(unit, path, &mut hasher).ok()?;
    }
    Some(*hasher.finalize().as_bytes())
}

/// A file's bytes, or, when it is text that spells one of this build's directories, its text
/// with them as placeholders (the check first: most files spell none, and naming is slow).
fn file_into(unit: &Unit, path: &Path, hasher: &mut blake3::Hasher) -> std::io::Result<()> {
    let bytes = fs::read(path)?;
    let spells = unit.roots.dirs().any(|(_, dir)| contains(&bytes, dir.as_bytes()));
    match std::str::from_utf8(&bytes) {
        Ok(text) if spells => hasher.update(unit.normalize(text).as_bytes()),
        _ => hasher.update(&bytes),
    };
    Ok(())
}

/// The directories a tree walk entered through a symbolic link (and its root): each once, so
/// that a link back up ends the walk.
struct Walked(std::collections::HashSet<PathBuf>);

impl Walked {
    fn new(root: &Path) -> Walked {
        Walked(fs::canonicalize(root).into_iter().collect())
    }
}

/// Names, kinds and contents of the tree under `dir`, sorted, leaving out `skip`. A symbolic
/// link counts by its text and by what it points to: a file's contents, a directory's tree
/// (once: see `Walked`), or nothing there.
fn tree_into(
    unit: &Unit,
    dir: &Path,
    hasher: &mut blake3::Hasher,
    skip: &[&Path],
    walked: &mut Walked,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        if skip.iter().any(|skipped| path == *skipped) {
            continue;
        }
        let kind = entry.file_type()?;
        let name = entry.file_name();
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_encoded_bytes());
        if kind.is_symlink() {
            hasher.update(b"l");
            let text = fs::read_link(&path)?;
            hasher.update(&(text.as_os_str().len() as u64).to_le_bytes());
            hasher.update(text.as_os_str().as_encoded_bytes());
            match fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => {
                    if walked.0.insert(fs::canonicalize(&path)?) {
                        hasher.update(b"d");
                        tree_into(unit, &path, hasher, skip, walked)?;
                        hasher.update(b"e");
                    } else {
                        hasher.update(b"c");
                    }
                }
                Ok(_) => {
                    hasher.update(b"f");
                    file_into(unit, &path, hasher)?;
                }
                Err(_) => {
                    hasher.update(b"m");
                }
            }
        } else if kind.is_dir() {
            hasher.update(b"d");
            tree_into(unit, &path, hasher, skip, walked)?;
            hasher.update(b"e");
        } else {
            hasher.update(b"f");
            file_into(unit, &path, hasher)?;
        }
    }
    Ok(())
}

/// A local package's files (cargo's own rule for a script that declares no inputs: the package
/// directory without `target/` and `.git`).
fn package_files(unit: &Unit) -> Result<[u8; 32], String> {
    let root = &unit.manifest_dir;
    let target = root.join("target");
    let git = root.join(".git");
    let mut skip = vec![target.as_path(), git.as_path(), unit.out_dir.as_path()];
    skip.extend(unit.target_dir.as_deref());
    let mut hasher = blake3::Hasher::new();
    tree_into(unit, root, &mut hasher, &skip, &mut Walked::new(root))
        .map_err(|err| format!("cannot hash the package {}: {err}", root.display()))?;
    Ok(*hasher.finalize().as_bytes())
}

/// The real script, with cargo's environment but `RUSTC_WRAPPER` set back to the user's own
/// (cc-rs wraps C compiles only when that names sccache or its kin).
fn script_command(real: &Path, args: &[OsString]) -> Command {
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
fn dies_with_runner(command: &mut Command) {
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
fn dies_with_runner(_command: &mut Command) {}

/// Runs the real script uncached, its output straight to cargo; `why` is a cache problem to
/// report first.
fn run_plain(real: &Path, args: &[OsString], why: Option<&str>) -> ExitCode {
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
fn run_recorded(
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
    let min_time = std::env::var("MEMOSHELVE_BUILD_SCRIPTS_MIN_TIME")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_millis(50), Duration::from_millis);
    if took < min_time {
        return Err(Unrecorded::Bypassed(format!("faster than {} ms", min_time.as_millis())));
    }
    for line in &lines {
        if let Some(path) = rerun_if_changed(line.trim()) {
            bypass_for_input(unit, path, started)?;
        }
    }
    let traced = traced.map_err(Unrecorded::Bypassed)?;
    Ok(Ran { stderr: stderr_text, traced })
}

/// The path of a `rerun-if-changed` directive, in either syntax.
fn rerun_if_changed(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("cargo::").or_else(|| line.strip_prefix("cargo:"))?;
    rest.strip_prefix("rerun-if-changed=")
}

/// Whether a declared input forbids recording: empty (always rerun), inside `OUT_DIR` (the run
/// made its own input), or changed while the script ran.
fn bypass_for_input(unit: &Unit, path: &str, started: SystemTime) -> Result<(), Unrecorded> {
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

    fn unit() -> Unit {
        Unit {
            package: "p".to_owned(),
            out_dir: "/t/debug/build/p-1/out".into(),
            manifest_dir: "/src/p".into(),
            build_dir: "/t/debug/build".into(),
            target_dir: Some("/t".into()),
            roots: Roots::new([
                ("out", Path::new("/t/debug/build/p-1/out")),
                ("manifest", Path::new("/src/p")),
                ("target", Path::new("/t")),
            ]),
            local: true,
            cargo_home: None,
        }
    }

    #[test]
    fn normalizes_whole_components_only() {
        let unit = unit();
        assert_eq!(unit.normalize("/t/debug/build/p-1/out/lib"), "{memoshelve:out}/lib");
        assert_eq!(
            unit.normalize("-L /t/debug/deps:/src/p"),
            "-L {memoshelve:target}/debug/deps:{memoshelve:manifest}"
        );
        assert_eq!(unit.normalize("/tx/y /src/pq"), "/tx/y /src/pq");
    }

    #[test]
    fn the_runs_log_starts_again_past_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let unit = Unit { build_dir: dir.path().to_owned(), ..unit() };
        let log = dir.path().join(".memoshelve/runs.log");
        unit.log("recorded", None);
        assert_eq!(fs::read_to_string(&log).unwrap(), "p\trecorded\n");
        fs::write(&log, vec![b'x'; usize::try_from(RUNS_LOG_MAX).unwrap() + 1]).unwrap();
        unit.log("restored", Some(Duration::from_millis(7)));
        assert_eq!(fs::read_to_string(&log).unwrap(), "p\trestored\t7 ms\n");
        let before = fs::metadata(dir.path().join(".memoshelve/runs.log.1")).unwrap().len();
        assert_eq!(before, RUNS_LOG_MAX + 1, "the full log is kept once");
    }

    #[test]
    fn a_file_written_after_the_file_clock_is_never_older_than_it() {
        // The property the "changed while it ran" rule needs, on a coarse clock too: 300 tries
        // (with the wall clock, 218 of 300 failed on a kernel with 4 ms ticks).
        let dir = tempfile::tempdir().unwrap();
        let unit = Unit { build_dir: dir.path().join("build"), ..unit() };
        for round in 0..300 {
            let started = unit.file_clock();
            let input = dir.path().join(format!("input-{round}"));
            fs::write(&input, b"x").unwrap();
            let modified = fs::metadata(&input).unwrap().modified().unwrap();
            assert!(modified >= started, "round {round}: {modified:?} < {started:?}");
        }
    }

    #[test]
    fn keys_on_the_unit_not_the_machine() {
        for name in ["TARGET", "CARGO_FEATURE_STD", "DEP_Z_INCLUDE", "CARGO_CFG_UNIX", "RUSTC"] {
            assert!(in_key(name), "{name}");
        }
        for name in ["NUM_JOBS", "CARGO_MAKEFLAGS", "MAKEFLAGS", "PATH", "OUT_DIR", "HOME"] {
            assert!(!in_key(name), "{name}");
        }
    }

    #[test]
    fn reads_both_directive_syntaxes() {
        assert_eq!(rerun_if_changed("cargo:rerun-if-changed=a.h"), Some("a.h"));
        assert_eq!(rerun_if_changed("cargo::rerun-if-changed="), Some(""));
        assert_eq!(rerun_if_changed("cargo:rustc-cfg=x"), None);
    }
}
