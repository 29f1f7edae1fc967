//! The unit cache: every rustc compile cargo makes through the wrapper, memoized (issue 31).
//!
//! The front hands a compile here as `memoshelve __memoshelve-rustc <rustc> <args>`. The flow:
//! 1. `invocation`: what the unit is, read from its arguments without running rustc; what is
//!    not modelled passes through to rustc.
//! 2. The level-1 key: the arguments with this build's directories as placeholders (where
//!    incremental state is kept left out), the working directory, `rustc -vV`, the content of
//!    every `--extern` file and of every native library `-l` finds in the `-L` directories,
//!    `RUSTC_BOOTSTRAP`.
//! 3. The lookup, through the library: a file step over `--out-dir` that names its outputs
//!    (`Outputs::only`: other compiles write into the same directory at the same time). Its
//!    value, [`Compiled`], holds the second level, checked in `Memo::validate`: every file the
//!    recorded compile's dep-info listed, by content (through the stat cache), every variable
//!    `env!`/`option_env!` read, by value, and the directories the outputs spell (an entry
//!    restores only where they are the same).
//! 4. On a miss the compile runs as cargo asked (or through `MEMOSHELVE_RUSTC_WRAPPER`), its
//!    stderr streamed to cargo line by line as it comes (so dependents start on the `.rmeta` as
//!    early as without the cache) and kept. It is stored only if no input changed while it ran.
//!    A compile that runs other code, a linker (a program, a test, a proc macro, a shared or
//!    static library) or a proc macro (which may read any file or variable), is traced as a
//!    build script's run is (DESIGN.md section 10, `trace`): what it read beyond the dep-info
//!    (the C runtime's objects, the system libraries, the linker itself, what a proc macro
//!    opened or `getenv`ed) joins the second level. Where tracing cannot run, such a compile
//!    passes through.
//! 5. On a hit the outputs are restored, the dep-info is written with this build's paths, and
//!    the stored stderr (diagnostics, artifact notifications) is replayed with them.
//!
//! Nothing of the cache's own reaches cargo: what a wrapper prints, cargo stores with the unit
//! and replays on later fresh builds. What became of each compile goes to
//! `<profile>/.memoshelve/units.log`.

mod depinfo;
mod invocation;

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use memoshelve_build::store::Roots;
use memoshelve_build::{Memo, Status};
use serde::{Deserialize, Serialize};

use self::invocation::Invocation;
use super::outputs::{bound_holds, bound_in_words, contains, dirs_in_words};
use super::statcache::StatCache;
use super::trace::{self, inputs::Traced, inputs::what_is_at};
use crate::launching::BuildScript;
use crate::protocol::{self, code_of, inner_wrapper};

/// The step's argument, bumped when the key's meaning or `Compiled`'s layout changes (2: it
/// keeps traced inputs and why it missed; 3: the outputs' hashes; 4: the rustc binary's content).
const KEY_VERSION: u32 = 4;

/// The variables rustc itself reads that change what it writes (a target found by name in
/// `RUST_TARGET_PATH`).
const RUSTC_ENV: &[&str] = &["RUSTC_BOOTSTRAP", "RUST_TARGET_PATH", "RUSTC_FORCE_RUSTC_VERSION"];

/// What a unit entry stores beside its files.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Compiled {
    /// Every file the dep-info listed: (path, this build's directories as placeholders; what
    /// was there, as `trace::inputs::what_is_at` says).
    pub(crate) files: Vec<(String, String)>,
    /// Every variable the dep-info listed, with the value the compile read (`None`: unset).
    /// Kept as read: a path's value that the outputs use without spelling it
    /// (`env!("CARGO_MANIFEST_DIR").len()`) must not match another checkout's.
    pub(crate) env: Vec<(String, Option<String>)>,
    /// The dep-info, this build's directories as placeholders.
    pub(crate) dep_info: String,
    /// What rustc printed on stderr (diagnostics, artifact notifications), placeholders too.
    pub(crate) stderr: String,
    /// `(placeholder name, directory)`: the directories the outputs spell.
    pub(crate) bound: Vec<(String, String)>,
    /// `(file name, blake3)` of each output: vouched for after a restore (`statcache::vouch`),
    /// so that a dependent's key takes the hash of this `--extern` without reading it.
    pub(crate) outputs: Vec<(String, [u8; 32])>,
    /// What a compile that runs other code was seen to read (`None`: not traced).
    pub(crate) traced: Option<Traced>,
    /// Why the compile missed: the input that changed since the newest entry of its key, or
    /// the key part that differs from the nearest entry; `None` for the first. `explain`
    /// shows it.
    pub(crate) missed: Option<String>,
}

impl Compiled {
    /// The value of a unit entry, from its manifest's `result`.
    pub(crate) fn decode(result: &[u8]) -> Option<Compiled> {
        postcard::from_bytes(result).ok()
    }

    /// What the compile read and where it holds, in words (`cargo memoshelve show`).
    pub(crate) fn describe(&self) -> Vec<(&'static str, String)> {
        let mut rows = vec![
            ("sources", format!("{} files (its dep-info), checked by content", self.files.len())),
            ("variables", format!("{} read by env!/option_env!, checked by value", self.env.len())),
        ];
        rows.push((
            "traced",
            match &self.traced {
                Some(traced) => traced.counts(),
                None => "no (it runs no linker and no proc macro)".to_owned(),
            },
        ));
        rows.push(("bound to", bound_in_words(&self.bound)));
        if let Some(missed) = &self.missed {
            rows.push(("missed on", missed.clone()));
        }
        rows
    }

    /// The inputs of the second level that differ between two entries' compiles:
    /// `(part, before, after)`.
    pub(crate) fn differences(
        &self,
        after: &Compiled,
    ) -> Vec<(String, Option<String>, Option<String>)> {
        let mut changes = Vec::new();
        let mut compare = |kind: &str, before: &[(String, String)], after: &[(String, String)]| {
            let before: std::collections::BTreeMap<_, _> = before.iter().cloned().collect();
            let after: std::collections::BTreeMap<_, _> = after.iter().cloned().collect();
            let names: std::collections::BTreeSet<&String> =
                before.keys().chain(after.keys()).collect();
            for name in names {
                if before.get(name) != after.get(name) {
                    changes.push((
                        format!("{kind} {name}"),
                        before.get(name).cloned(),
                        after.get(name).cloned(),
                    ));
                }
            }
        };
        compare("file", &self.files, &after.files);
        let text = |env: &[(String, Option<String>)]| -> Vec<(String, String)> {
            env.iter()
                .map(|(name, value)| {
                    (name.clone(), value.clone().unwrap_or_else(|| "(unset)".to_owned()))
                })
                .collect()
        };
        compare("env", &text(&self.env), &text(&after.env));
        if let (Some(before), Some(after)) = (&self.traced, &after.traced) {
            changes.extend(before.differences(after));
        }
        changes
    }

    /// The first input that is not as recorded in this build, in words, or `None`.
    fn first_change(&self, roots: &Roots, stats: &mut StatCache) -> Option<String> {
        if !bound_holds(&self.bound, roots) {
            return Some(format!("bound to {}", dirs_in_words(&self.bound)));
        }
        for (name, value) in &self.env {
            if std::env::var(name).ok() != *value {
                return Some(format!("env {name}"));
            }
        }
        for (path, value) in &self.files {
            if what_is_at(Path::new(&roots.expand(path)), stats) != *value {
                return Some(format!("file {path}"));
            }
        }
        self.traced.as_ref().and_then(|traced| traced.first_change(roots, stats))
    }
}

/// Why a compile that went through the cache is not stored.
enum Unrecorded {
    /// rustc failed: its exit code (its stderr has reached cargo).
    Failed(ExitCode),
    /// It compiled, but the result must not be stored.
    Bypassed(String),
}

/// `args`: rustc, then its arguments, as cargo gave them to the wrapper. A build script's
/// compile, once compiled or restored, gets its launcher (`launching`).
pub(crate) fn main(args: &[OsString]) -> ExitCode {
    let script = args.get(1..).and_then(BuildScript::of);
    let (code, outputs) = memoized(args, script.is_some());
    if let Some(script) = &script
        && code == ExitCode::SUCCESS
    {
        let installed = script.put_launcher();
        // The runner keys the script by its binary: vouched for under its new name (the
        // rename moved its change time), it need not read it again.
        let name = script.binary.file_name().map(|name| name.to_string_lossy().into_owned());
        let hash = outputs.iter().find(|(file, _)| Some(file) == name.as_ref());
        let profile = Here::profile_of(&script.binary);
        if let (true, Some((_, hash)), Some(profile)) = (installed, hash, profile) {
            let real = script.real();
            if let Some(real_name) = real.file_name() {
                super::statcache::vouch(
                    &super::statcache::vouched_in(&profile).join(real_name),
                    &real,
                    *hash,
                );
            }
        }
    }
    code
}

/// The compile `args`, through the cache, and the outputs' hashes where it knows them; `wait`:
/// it must have ended when this returns (a pass-through does not replace this process).
fn memoized(args: &[OsString], wait: bool) -> (ExitCode, Vec<(String, [u8; 32])>) {
    let Some((rustc, rustc_args)) = args.split_first() else {
        return (ExitCode::from(101), Vec::new());
    };
    let unit = match Invocation::parse(rustc_args) {
        Ok(unit) => unit,
        Err(why) => {
            log(None, "?", &format!("passed through ({why})"), None, None);
            return (pass_through(args, wait), Vec::new());
        }
    };
    let here = match Here::of(&unit) {
        Ok(here) => here,
        Err(why) => {
            log(None, &unit.crate_name, &format!("passed through ({why})"), None, None);
            return (pass_through(args, wait), Vec::new());
        }
    };
    // A compile that runs other code is cached only watched.
    if unit.runs_other_code()
        && let Some(why) = trace::unavailable().or_else(|| here.tracing_failed())
    {
        here.log(&unit, &format!("passed through (links or runs a proc macro; {why})"), None, None);
        return (pass_through(args, wait), Vec::new());
    }
    let name = cache_name(&unit);
    // The remote as for build scripts' entries: opted into and signed only.
    let (remote, unsigned) = super::run::remote_carries(&name);
    if let Some(warning) = unsigned {
        here.log(&unit, &format!("note: {warning}"), None, None);
    }
    let memo = if remote { Memo::new(&name) } else { Memo::new(&name).local_only() };
    let Some(root) = memo.root() else {
        here.log(&unit, "passed through (no usable cache root)", None, None);
        return (pass_through(args, wait), Vec::new());
    };
    let stats = Arc::new(Mutex::new(
        StatCache::open(root.join("tracing").join("stat").join(&name))
            .with_vouched_in(here.vouched_in()),
    ));
    let parts = {
        let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
        match key_parts(Path::new(rustc), &unit, &here, &root, &mut stats) {
            Ok(parts) => parts,
            Err(why) => {
                here.log(&unit, &format!("passed through ({why})"), None, None);
                return (pass_through(args, wait), Vec::new());
            }
        }
    };
    let missed_why = Arc::new(Mutex::new(None));
    let memo =
        parts.iter().fold(memo, |memo, (part, value)| memo.input_value(part, value)).validate({
            let (roots, stats, missed_why) =
                (here.roots.clone(), stats.clone(), missed_why.clone());
            move |compiled: &Compiled| {
                let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
                let changed = compiled.first_change(&roots, &mut stats);
                if let Some(why) = &changed
                    && let Ok(mut missed) = missed_why.lock()
                {
                    missed.get_or_insert(why.clone());
                }
                changed.is_none()
            }
        });
    let mut outputs = unit.outputs();
    // The dep-info is written from the value, with this build's paths.
    outputs.pop();
    let started = Instant::now();
    let outcome =
        memo.outputs(&unit.out_dir).only(&outputs).try_call_with_report(&KEY_VERSION, |step| {
            // Why no stored compile served: the input that changed since the newest under this
            // key, else (none there) the nearest entry's key part that differs.
            let missed = match step.missed() {
                Some(why) if why.contains("Memo::validate") => missed_why
                    .lock()
                    .ok()
                    .and_then(|mut input| input.take())
                    .or(Some(why.to_owned())),
                Some(why) => Some(why.to_owned()),
                None => super::run::nearest_difference(&root, &name, &parts),
            };
            let mut compiled = compile(args, &unit, &here, &root, &outputs, &stats)?;
            compiled.missed = missed;
            Ok(compiled)
        });
    stats.lock().unwrap_or_else(PoisonError::into_inner).save();
    let took = Some(started.elapsed());
    match outcome {
        Ok((compiled, report)) => {
            if report.status.is_hit()
                && let Err(err) = replay(&unit, &here, &compiled)
            {
                // Cargo would find no dep-info: the compile runs as cargo asked.
                here.log(&unit, &format!("failed to restore ({err})"), took, None);
                return (pass_through(args, wait), Vec::new());
            }
            here.vouch(&unit, &compiled);
            let word = match (report.status, &report.not_stored) {
                (Status::Miss, Some(why)) => format!("compiled (not stored: {why})"),
                (Status::Miss, None) => "recorded".to_owned(),
                _ => "restored".to_owned(),
            };
            let missed = match report.status {
                Status::Miss => compiled.missed.as_ref().map(|why| format!("missed: {why}")),
                _ => None,
            };
            here.log(&unit, &word, took, missed.as_deref());
            (ExitCode::SUCCESS, compiled.outputs)
        }
        Err(Unrecorded::Failed(code)) => {
            here.log(&unit, "failed", took, None);
            (code, Vec::new())
        }
        Err(Unrecorded::Bypassed(why)) => {
            here.log(&unit, &format!("compiled ({why})"), took, None);
            (ExitCode::SUCCESS, Vec::new())
        }
    }
}

/// The cache name of a unit's entries: `rustc.<package>`, or `rustc.<package>.<crate>` where
/// the crate's name is not the package's (a build script, another binary or test).
fn cache_name(unit: &Invocation) -> String {
    match std::env::var("CARGO_PKG_NAME") {
        Ok(package) if package.replace('-', "_") == unit.crate_name => format!("rustc.{package}"),
        Ok(package) => format!("rustc.{package}.{}", unit.crate_name),
        Err(_) => format!("rustc.{}", unit.crate_name),
    }
}

/// Where this build is: its directories, named in the key and the stored text by placeholder.
struct Here {
    roots: Roots,
    /// rustc's working directory, which relative paths of the arguments and dep-info are in.
    cwd: PathBuf,
    /// `<target>[/<triple>]/<profile>`: where the log is.
    profile: PathBuf,
    /// `<target>[/<triple>]`.
    target: Option<PathBuf>,
    cargo_home: Option<PathBuf>,
}

impl Here {
    fn of(unit: &Invocation) -> Result<Here, String> {
        let cwd = std::env::current_dir().map_err(|err| format!("no working directory: {err}"))?;
        let out_dir = cwd.join(&unit.out_dir);
        let profile = Here::profile_of(&out_dir.join("file"))
            .ok_or_else(|| format!("--out-dir {} is not in cargo's layout", out_dir.display()))?;
        let target = profile.parent().map(Path::to_path_buf);
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
        let local = match (&manifest, &cargo_home) {
            (Some(manifest), Some(home)) => !manifest.starts_with(home),
            _ => true,
        };
        let workspace = manifest.as_deref().filter(|_| local).and_then(super::run::workspace_of);
        let out = std::env::var_os("OUT_DIR").map(PathBuf::from);
        let roots = Roots::new(
            [
                ("out", out.as_deref()),
                ("manifest", manifest.as_deref()),
                ("workspace", workspace.as_deref()),
                ("target", target.as_deref()),
                ("cargo-home", cargo_home.as_deref()),
            ]
            .into_iter()
            .filter_map(|(name, dir)| Some((name, dir?))),
        );
        Ok(Here { roots, cwd, profile, target, cargo_home })
    }

    fn log(
        &self,
        unit: &Invocation,
        what: &str,
        took: Option<std::time::Duration>,
        field: Option<&str>,
    ) {
        // The entries' name without `rustc.`: `libc`, `libc.build_script_build`.
        let name = cache_name(unit);
        let name = name.strip_prefix("rustc.").unwrap_or(&name);
        log(Some(&self.profile), name, what, took, field);
    }
}

impl Here {
    /// Why an earlier compile or build-script run of this build found that tracing cannot
    /// run here (the runner's mark, `build/.memoshelve/tracing-failed`), if one did.
    fn tracing_failed(&self) -> Option<String> {
        fs::read_to_string(self.tracing_failed_mark()).ok()
    }

    fn tracing_failed_mark(&self) -> PathBuf {
        self.profile.join("build").join(".memoshelve").join("tracing-failed")
    }

    /// Remembers for the rest of this build (its target dir) that tracing cannot run here.
    fn mark_tracing_failed(&self, why: &str) {
        let mark = self.tracing_failed_mark();
        if let Some(dir) = mark.parent() {
            let _ = fs::create_dir_all(dir)
                .and_then(|()| fs::write(&mark, format!("tracing failed: {why}")));
        }
    }

    /// Where the hashes of the profile's outputs are vouched for, by file name.
    fn vouched_in(&self) -> PathBuf {
        super::statcache::vouched_in(&self.profile)
    }

    /// The profile directory of an output at `path`: `<target>[/<triple>]/<profile>` above
    /// `deps/<file>`, or above a build script's `build/<package>-<hash>/<file>`
    /// (`build/<package>/<hash>/<file>` in cargo's new layout).
    fn profile_of(path: &Path) -> Option<PathBuf> {
        let dir = path.parent()?;
        let named =
            |dir: Option<&Path>, name: &str| dir.and_then(Path::file_name) == Some(name.as_ref());
        let profile = if named(Some(dir), "deps") || named(Some(dir), "examples") {
            dir.parent()
        } else if named(dir.parent(), "build") {
            dir.parent()?.parent()
        } else if named(dir.parent().and_then(Path::parent), "build") {
            dir.parent()?.parent()?.parent()
        } else {
            None
        };
        profile.map(Path::to_path_buf)
    }

    /// Vouches for the hashes of the outputs a compile left (restored, or read back).
    fn vouch(&self, unit: &Invocation, compiled: &Compiled) {
        for (file, hash) in &compiled.outputs {
            let path = self.cwd.join(&unit.out_dir).join(file);
            super::statcache::vouch(&self.vouched_in().join(file), &path, *hash);
        }
    }
}

/// One line in `<profile>/.memoshelve/units.log` (without a profile dir known, nowhere).
fn log(
    profile: Option<&Path>,
    crate_name: &str,
    what: &str,
    took: Option<std::time::Duration>,
    field: Option<&str>,
) {
    let Some(profile) = profile else { return };
    let dir = profile.join(".memoshelve");
    let path = dir.join("units.log");
    if fs::metadata(&path).is_ok_and(|meta| meta.len() > 1 << 20) {
        let _ = fs::rename(&path, dir.join("units.log.1"));
    }
    let took = took.map_or(String::new(), |took| format!("\t{:.1} ms", took.as_secs_f64() * 1e3));
    let field = field.map_or(String::new(), |field| format!("\t{field}"));
    let line = format!("{crate_name}\t{what}{took}{field}\n");
    let _ = fs::create_dir_all(&dir).and_then(|()| {
        fs::File::options().create(true).append(true).open(&path)?.write_all(line.as_bytes())
    });
}

/// The level-1 key's named parts, or why the unit cannot be keyed.
fn key_parts(
    rustc: &Path,
    unit: &Invocation,
    here: &Here,
    root: &Path,
    stats: &mut StatCache,
) -> Result<Vec<(String, String)>, String> {
    let roots = &here.roots;
    let version = memoshelve_build::store::rustc_version(rustc, Some(root))
        .ok_or_else(|| format!("`{} -vV` failed", rustc.display()))?;
    // The binary too, by content: a `RUSTC` that is a script around the toolchain's (adding
    // flags, say) answers `-vV` as the toolchain does.
    let binary = program_path(rustc).ok_or_else(|| format!("{} is not found", rustc.display()))?;
    let mut parts = vec![
        ("args".to_owned(), unit.keyed_args(|text| roots.name(text))),
        ("cwd".to_owned(), roots.name(&here.cwd.to_string_lossy())),
        ("rustc".to_owned(), version),
        ("rustc binary".to_owned(), what_is_at(&binary, stats)),
    ];
    for (name, path) in &unit.externs {
        let Some(path) = path else { continue };
        let what = what_is_at(&here.cwd.join(path), stats);
        if !what.starts_with("file ") {
            return Err(format!("extern {name}: {} is {what}", path.display()));
        }
        parts.push((format!("extern:{name}"), what));
    }
    for lib in &unit.libs {
        parts.push((format!("native:{lib}"), native_library(unit, here, lib, stats)?));
    }
    // The user's own wrapper runs the misses (sccache): its content too.
    if let Some(inner) = inner_wrapper() {
        let inner = program_path(Path::new(&inner)).ok_or_else(|| {
            format!("MEMOSHELVE_RUSTC_WRAPPER {} is not found", inner.to_string_lossy())
        })?;
        parts.push(("inner wrapper".to_owned(), what_is_at(&inner, stats)));
    }
    // Incremental compiles split their code otherwise: their outputs are not a plain compile's.
    let incremental = if unit.incremental.is_some() { "yes" } else { "no" };
    parts.push(("incremental".to_owned(), incremental.to_owned()));
    if let Some(spec) = &unit.target_spec {
        parts.push(("target spec".to_owned(), what_is_at(&here.cwd.join(spec), stats)));
    }
    for name in RUSTC_ENV {
        let value = std::env::var(name).unwrap_or_else(|_| "\0unset".to_owned());
        parts.push((format!("env:{name}"), value));
    }
    // `-C target-cpu=native` compiles for this machine's processor: an entry that travels (a
    // signed remote) must not serve another's.
    if compiles_for_this_cpu(unit) {
        parts.push(("host cpu".to_owned(), host_cpu()));
    }
    Ok(parts)
}

/// Whether the compile asks for `-C target-cpu=native` (in any spelling of the option).
fn compiles_for_this_cpu(unit: &Invocation) -> bool {
    unit.args.iter().any(|arg| arg.ends_with("target-cpu=native"))
}

/// What `-C target-cpu=native` compiles for: the processor's model and feature flags
/// (`/proc/cpuinfo`'s first processor), hashed; elsewhere, what the OS says it is.
fn host_cpu() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let first: Vec<&str> = cpuinfo
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| {
            ["vendor_id", "model name", "flags", "Features", "CPU part"]
                .iter()
                .any(|key| line.starts_with(key))
        })
        .collect();
    let text = format!("{} {}\n{}", std::env::consts::OS, std::env::consts::ARCH, first.join("\n"));
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// Where `program` is: itself when it names a directory, else the first in `PATH` (as the
/// compile's `exec` finds it).
fn program_path(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return Some(program.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// What `-l <lib>` finds in the `-L` directories, the way the linker looks (`lib<name>.a`, then
/// the shared library; the name itself with `+verbatim`), by content: a static library is
/// bundled into an rlib, and dep-info does not list it (rust-lang/rust#58393). A shared one the
/// directories do not hold is the system's, named only; a static one they do not hold is an
/// error (the compile passes through).
fn native_library(
    unit: &Invocation,
    here: &Here,
    lib: &str,
    stats: &mut StatCache,
) -> Result<String, String> {
    let (kind, name) = lib.split_once('=').unwrap_or(("", lib));
    let name = name.split(':').next().unwrap_or(name);
    let (kind, modifiers) = kind.split_once(':').unwrap_or((kind, ""));
    let verbatim = modifiers.split(',').any(|modifier| modifier == "+verbatim");
    let files: Vec<String> = match kind {
        _ if verbatim => vec![name.to_owned()],
        "static" => vec![format!("lib{name}.a"), format!("{name}.lib")],
        "framework" => Vec::new(),
        _ => vec![format!("lib{name}.so"), format!("lib{name}.a"), format!("lib{name}.dylib")],
    };
    for dir in &unit.search {
        for file in &files {
            let path = here.cwd.join(dir).join(file);
            if path.exists() {
                let named = here.roots.name(&path.to_string_lossy());
                return Ok(format!("{named} {}", what_is_at(&path, stats)));
            }
        }
    }
    if kind == "static" {
        return Err(format!("-l {lib} is not found in the -L directories"));
    }
    Ok("not in the -L directories".to_owned())
}

/// A miss: the compile as cargo asked, its stderr streamed to cargo and kept; then what it read.
fn compile(
    args: &[OsString],
    unit: &Invocation,
    here: &Here,
    root: &Path,
    outputs: &[String],
    stats: &Mutex<StatCache>,
) -> Result<Compiled, Unrecorded> {
    let started = file_clock(&here.profile);
    let scratch = here.profile.join(".memoshelve");
    let tools = root.join("tracing");
    let dirs = unit.runs_other_code().then(|| trace::Dirs { tools: &tools, scratch: &scratch });
    let (stderr, observed) = run(args, dirs.as_ref(), here)?;
    if dirs.is_some() && observed.is_none() {
        // What it read beyond its dep-info is not known: not stored.
        return Err(Unrecorded::Bypassed("it could not be traced".to_owned()));
    }
    let traced = match &observed {
        Some(observed) => {
            // The target dir is not left out: a link reads every rlib of the dependency graph
            // (not only the `--extern`s the key holds by content) and the native libraries
            // build scripts made, and those count by content. The compile's own files are left
            // out, and so is its writing anywhere but its outputs (which is then unrecordable).
            let out_dir = here.cwd.join(&unit.out_dir);
            let own = unit.outputs().into_iter().map(|file| out_dir.join(file));
            let own = own
                .chain(unit.incremental.as_ref().map(|dir| here.cwd.join(dir)))
                .chain([scratch.clone()])
                .collect();
            let keyed = |name: &str| RUSTC_ENV.contains(&name);
            let scope = trace::inputs::Scope {
                roots: &here.roots,
                own,
                target_dir: None,
                left_out: trace::inputs::machine_left_out(Some(root), here.cargo_home.as_deref()),
                keyed_env: &keyed,
            };
            let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
            let mut traced = trace::inputs::record(observed, &scope, &mut stats)
                .map_err(|why| Unrecorded::Bypassed(format!("not recordable: {why}")))?;
            // rustc lists each `-L` directory to find crates by name; the one it takes is read,
            // and counts. The listing of the target dir's changes with every other compile.
            if let Some(target) = &here.target {
                let target = here.roots.name(&target.to_string_lossy());
                traced.listings.retain(|(dir, _)| !dir.starts_with(&target));
            }
            Some(traced)
        }
        None => None,
    };
    let text = fs::read_to_string(unit.dep_info())
        .map_err(|err| Unrecorded::Bypassed(format!("no dep-info: {err}")))?;
    let info = depinfo::parse(&text);
    let roots = &here.roots;
    let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
    let mut files = Vec::with_capacity(info.files.len());
    for file in &info.files {
        let path = here.cwd.join(file);
        // The change time too: a copy that keeps the old modification time (`cp -p`,
        // `rsync -t`) cannot set it back.
        if let Ok(meta) = fs::metadata(&path)
            && (meta.modified().is_ok_and(|modified| modified >= started)
                || changed_at(&meta).is_some_and(|changed| changed >= started))
        {
            return Err(Unrecorded::Bypassed(format!(
                "{} changed while it compiled",
                path.display()
            )));
        }
        files.push((roots.name(&path.to_string_lossy()), what_is_at(&path, &mut stats)));
    }
    let mut bound: Vec<(String, String)> = Vec::new();
    let mut hashes = Vec::with_capacity(outputs.len());
    for output in outputs {
        let path = unit.out_dir.join(output);
        let bytes = fs::read(&path).map_err(|err| {
            Unrecorded::Bypassed(format!("cannot read {}: {err}", path.display()))
        })?;
        hashes.push((output.clone(), *blake3::hash(&bytes).as_bytes()));
        for (name, dir) in roots.dirs() {
            if !bound.iter().any(|(known, _)| known == name) && contains(&bytes, dir.as_bytes()) {
                bound.push((name.to_owned(), dir.to_owned()));
            }
        }
    }
    bound.sort();
    Ok(Compiled {
        files,
        env: info.env,
        dep_info: roots.name(&text),
        stderr: roots.name(&stderr),
        bound,
        outputs: hashes,
        traced,
        missed: None,
    })
}

/// Runs the compile (through the user's own wrapper, if one is set), watched when `dirs` is
/// given, its stderr passed on line by line as it comes and returned; its stdout is cargo's.
fn run(
    args: &[OsString],
    dirs: Option<&trace::Dirs<'_>>,
    here: &Here,
) -> Result<(String, Option<trace::Observed>), Unrecorded> {
    let mut command = command(args);
    command.stderr(Stdio::piped());
    let mut started = match trace::spawn(&mut command, dirs) {
        Ok(started) => started,
        Err(err) if dirs.is_some() => {
            // `ptrace` or seccomp refused (a container's policy): this compile runs untraced
            // (and is not stored), and so do the rest of this build's that would be traced.
            here.mark_tracing_failed(&err.to_string());
            let mut command = self::command(args);
            command.stderr(Stdio::piped());
            match trace::spawn(&mut command, None) {
                Ok(started) => started,
                Err(err) => {
                    cannot_run(args, &err);
                    return Err(Unrecorded::Failed(ExitCode::from(101)));
                }
            }
        }
        Err(err) => {
            cannot_run(args, &err);
            return Err(Unrecorded::Failed(ExitCode::from(101)));
        }
    };
    let stderr = started.child.stderr.take().expect("piped");
    // On a thread of its own: a watched compile is followed on this one.
    let passed_on = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        let mut cargo = std::io::stderr();
        while reader.read_until(b'\n', &mut line).is_ok_and(|read| read > 0) {
            let _ = cargo.write_all(&line);
            kept.append(&mut line);
        }
        kept
    });
    let (status, observed) = match started.wait() {
        Ok(ended) => ended,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: memoshelve: lost the compile: {err}");
            return Err(Unrecorded::Failed(ExitCode::from(101)));
        }
    };
    let kept = passed_on.join().unwrap_or_default();
    if !status.success() {
        return Err(Unrecorded::Failed(ExitCode::from(code_of(status))));
    }
    let text = String::from_utf8(kept)
        .map_err(|_| Unrecorded::Bypassed("stderr is not UTF-8".to_owned()))?;
    Ok((text, observed))
}

/// A hit: the dep-info and the stderr, with this build's directories.
fn replay(unit: &Invocation, here: &Here, compiled: &Compiled) -> std::io::Result<()> {
    let path = unit.dep_info();
    let staged = path.with_extension("d.memoshelve-tmp");
    fs::write(&staged, here.roots.expand(&compiled.dep_info))?;
    fs::rename(&staged, &path)?;
    std::io::stderr().write_all(here.roots.expand(&compiled.stderr).as_bytes())
}

/// When the file's status last changed (its change time), where the platform says.
fn changed_at(meta: &fs::Metadata) -> Option<SystemTime> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let seconds = u64::try_from(meta.ctime()).ok()?;
        let nanos = u32::try_from(meta.ctime_nsec()).ok()?;
        Some(SystemTime::UNIX_EPOCH + std::time::Duration::new(seconds, nanos))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Now, as the file system stamps a file written now (see `run::unit::Unit::file_clock`); a
/// file of this process's own, since compiles run side by side.
fn file_clock(profile: &Path) -> SystemTime {
    let path = profile.join(".memoshelve").join(format!("clock-{}", std::process::id()));
    let stamped = fs::create_dir_all(profile.join(".memoshelve"))
        .and_then(|()| fs::write(&path, b"t"))
        .and_then(|()| fs::metadata(&path)?.modified());
    let _ = fs::remove_file(&path);
    stamped.unwrap_or_else(|_| SystemTime::now() - std::time::Duration::from_secs(1))
}

/// The compile as cargo asked for it, in this process's place (`wait`: as a child, waited for).
fn pass_through(args: &[OsString], wait: bool) -> ExitCode {
    if wait {
        return match command(args).status() {
            Ok(status) => ExitCode::from(code_of(status)),
            Err(err) => {
                cannot_run(args, &err);
                ExitCode::from(101)
            }
        };
    }
    let err = protocol::exec(command(args));
    cannot_run(args, &err);
    ExitCode::from(101)
}

/// The compile as cargo asked for it: rustc, or the user's own wrapper running it.
fn command(args: &[OsString]) -> Command {
    let (program, rest) = match inner_wrapper() {
        Some(inner) => (inner, args),
        None => (args[0].clone(), &args[1..]),
    };
    let mut command = Command::new(program);
    command.args(rest);
    command
}

/// Says, as rustc would have, that the compiler could not be started.
fn cannot_run(args: &[OsString], err: &std::io::Error) {
    let _ = writeln!(
        std::io::stderr(),
        "error: memoshelve: cannot run {}: {err}",
        args[0].to_string_lossy()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compile_for_this_cpu_is_keyed_by_it() {
        let args = |line: &str| -> Vec<OsString> { line.split(' ').map(OsString::from).collect() };
        let base =
            "--crate-name x --crate-type lib --emit=dep-info,link --out-dir /t/debug/deps x.rs";
        let plain = Invocation::parse(&args(base)).unwrap();
        assert!(!compiles_for_this_cpu(&plain));
        for native in ["-C target-cpu=native", "-Ctarget-cpu=native"] {
            let unit = Invocation::parse(&args(&format!("{base} {native}"))).unwrap();
            assert!(compiles_for_this_cpu(&unit), "{native}");
        }
        assert_eq!(host_cpu(), host_cpu());
        assert_eq!(host_cpu().len(), 64);
    }
}
