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
use std::time::{Duration, Instant, SystemTime};

use memoshelve_build::store::Roots;
use memoshelve_build::{Memo, Status};
use serde::{Deserialize, Serialize};

use crate::protocol::{exit_code, inner_wrapper};

/// Bumped when the key's meaning changes.
const KEY_VERSION: u32 = 1;

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
    if let Some(entry) = first_entry(&unit.out_dir) {
        // A rerun over what an earlier run left would record the leftovers as if this run made
        // them, or miss the ones it did not rewrite.
        unit.log(&format!("ran (OUT_DIR not empty: {entry})"), None);
        return run_plain(&real, script_args, None);
    }
    let key = match std::panic::catch_unwind(|| ScriptKey::of(&unit, &real)) {
        Ok(Ok(key)) => key,
        Ok(Err(why)) => return run_plain(&real, script_args, Some(&why)),
        Err(_) => return run_plain(&real, script_args, Some("the key's computation panicked")),
    };
    // Named `build-script.<package>`, not DESIGN's `build-script/<package>`: a cache name has no
    // `/` (entries are addressed as `<name>/<key>`, and the name names the step's marker file);
    // a package name has no `.`, so no other cache takes the name.
    // Local only: DESIGN lets build-script entries reach a remote only signed and opted into,
    // which this version does not do yet.
    // An entry whose files spell one of its build's directories restores only where that
    // directory is the same (see `Bound`).
    let here = unit.roots.clone();
    let memo = Memo::new(format!("build-script.{}", unit.package))
        .local_only()
        .validate(move |bound: &Bound| bound.holds_in(&here));
    let started = Instant::now();
    let outcome = memo.outputs(&unit.out_dir).try_call_with_status(&key, |_step| {
        run_recorded(&unit, &real, script_args)?;
        Ok(Bound::of(&unit))
    });
    match outcome {
        Ok((_, status)) => {
            let word = match status {
                Status::Miss => "recorded",
                Status::Memory | Status::Disk => "restored",
                _ => "restored (remote)",
            };
            unit.log(word, Some(started.elapsed()));
            ExitCode::SUCCESS
        }
        Err(Unrecorded::Failed(code)) => {
            unit.log("failed", Some(started.elapsed()));
            code
        }
        Err(Unrecorded::Bypassed(why)) => {
            unit.log(&format!("ran ({why})"), Some(started.elapsed()));
            ExitCode::SUCCESS
        }
    }
}

/// The directories of the build a run was recorded in that its files spell (a configure
/// prefix compiled into a library, a pkg-config file): such an entry is kept byte for byte and
/// restores only where each of them is the same, so no restored file names a path that is
/// wrong for the build (DESIGN.md section 9, relocation). Empty for a portable result.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Bound {
    roots: Vec<(String, String)>,
}

impl Bound {
    /// Which of this build's directories the files in OUT_DIR spell.
    fn of(unit: &Unit) -> Bound {
        let mut spelled: Vec<(String, String)> = Vec::new();
        let mut files = Vec::new();
        list_files(&unit.out_dir, &mut files);
        for file in files {
            let Ok(bytes) = fs::read(&file) else { continue };
            for (name, dir) in unit.roots.dirs() {
                let known = spelled.iter().any(|(known, _)| known == name);
                if !known && contains(&bytes, dir.as_bytes()) {
                    spelled.push((name.to_owned(), dir.to_owned()));
                }
            }
        }
        spelled.sort();
        Bound { roots: spelled }
    }

    /// Whether every directory the entry's files spell is the same in this build.
    fn holds_in(&self, here: &Roots) -> bool {
        self.roots.iter().all(|(name, dir)| {
            here.dirs().any(|(here_name, here_dir)| here_name == name && here_dir == dir)
        })
    }
}

/// The files under `dir` (not the file step's own marker directory), recursively.
fn list_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() && entry.file_name() != ".memoshelve" => {
                list_files(&path, files);
            }
            Ok(kind) if kind.is_file() => files.push(path),
            _ => {}
        }
    }
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else { return true };
    let mut at = 0;
    while let Some(offset) = haystack[at..].iter().position(|&byte| byte == first) {
        let start = at + offset + 1;
        if haystack[start..].starts_with(rest) {
            return true;
        }
        at = start;
    }
    false
}

/// Why a run that went through the cache is not stored.
enum Unrecorded {
    /// The script failed: its exit code.
    Failed(ExitCode),
    /// It ran well, but its result must not be replayed (see the module's rules).
    Bypassed(String),
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
        let roots = Roots::new(
            [
                ("out", Some(out_dir.as_path())),
                ("manifest", Some(manifest_dir.as_path())),
                ("target", target_dir.as_deref()),
                ("cargo-home", cargo_home.as_deref()),
            ]
            .into_iter()
            .filter_map(|(name, dir)| Some((name, dir?))),
        );
        Ok(Unit { package, out_dir, manifest_dir, build_dir, target_dir, roots, local })
    }

    /// `text` with this build's directories as placeholders, at whole path components.
    fn normalize(&self, text: &str) -> String {
        self.roots.name(text)
    }

    /// One line in `<build dir>/.memoshelve/runs.log`: what became of this script's run (the
    /// record the tests and `cargo memoshelve` read; a failure to write it changes nothing).
    fn log(&self, what: &str, took: Option<Duration>) {
        let dir = self.build_dir.join(".memoshelve");
        let took = took.map_or(String::new(), |took| format!("\t{} ms", took.as_millis()));
        let line = format!("{}\t{what}{took}\n", self.package);
        let _ = fs::create_dir_all(&dir).and_then(|()| {
            fs::File::options()
                .create(true)
                .append(true)
                .open(dir.join("runs.log"))?
                .write_all(line.as_bytes())
        });
    }
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

/// The level-1 key: everything known before the run that determines it.
#[derive(Serialize)]
struct ScriptKey {
    version: u32,
    /// The blake3 of the script's binary: any change to its code or its dependencies' code.
    script: [u8; 32],
    /// Cargo's environment for the unit, normalized, sorted.
    env: Vec<(String, String)>,
    /// What is behind each `DEP_*` value that is a path (a `links` provider hands down paths
    /// whose spelling stays when what is there changes).
    dep_contents: Vec<(String, [u8; 32])>,
    /// The package's files, for a package whose files can change under one version.
    package_files: Option<[u8; 32]>,
    os: &'static str,
    arch: &'static str,
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
    EXACT.contains(&name) || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

impl ScriptKey {
    fn of(unit: &Unit, real: &Path) -> Result<ScriptKey, String> {
        let script = hash_file(real)?;
        let mut env = Vec::new();
        let mut dep_contents = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if !in_key(name) {
                continue;
            }
            let value_text = value.to_string_lossy();
            env.push((name.to_owned(), unit.normalize(&value_text)));
            if name.starts_with("DEP_")
                && Path::new(&value).is_absolute()
                && let Some(hash) = contents_hash(unit, Path::new(&value))
            {
                dep_contents.push((name.to_owned(), hash));
            }
        }
        env.sort();
        dep_contents.sort();
        let package_files = unit.local.then(|| package_files(unit)).transpose()?;
        Ok(ScriptKey {
            version: KEY_VERSION,
            script,
            env,
            dep_contents,
            package_files,
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        })
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
        tree_into(unit, path, &mut hasher, &[]).ok()?;
    } else {
        file_into(unit, path, &mut hasher).ok()?;
    }
    Some(*hasher.finalize().as_bytes())
}

fn file_into(unit: &Unit, path: &Path, hasher: &mut blake3::Hasher) -> std::io::Result<()> {
    let bytes = fs::read(path)?;
    match std::str::from_utf8(&bytes) {
        Ok(text) => hasher.update(unit.normalize(text).as_bytes()),
        Err(_) => hasher.update(&bytes),
    };
    Ok(())
}

/// Names, kinds and contents of the tree under `dir`, sorted, leaving out `skip`.
fn tree_into(
    unit: &Unit,
    dir: &Path,
    hasher: &mut blake3::Hasher,
    skip: &[&Path],
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
            hasher.update(fs::read_link(&path)?.as_os_str().as_encoded_bytes());
        } else if kind.is_dir() {
            hasher.update(b"d");
            tree_into(unit, &path, hasher, skip)?;
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
    tree_into(unit, root, &mut hasher, &skip)
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
    command
}

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

/// A miss: runs the real script, its stdout passed on line by line as it comes (through the
/// file step's capture, to cargo), and says whether the run may be recorded.
fn run_recorded(unit: &Unit, real: &Path, args: &[OsString]) -> Result<(), Unrecorded> {
    let started = SystemTime::now();
    let clock = Instant::now();
    let mut child = match script_command(real, args).stdout(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(err) => {
            eprintln!("error: memoshelve: cannot run the build script {}: {err}", real.display());
            return Err(Unrecorded::Failed(ExitCode::from(101)));
        }
    };
    let mut lines = Vec::new();
    let mut utf8 = true;
    if let Some(stdout) = child.stdout.take() {
        let mut reader = BufReader::new(stdout);
        let mut out = std::io::stdout();
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|read| read > 0) {
            let _ = out.write_all(&line).and_then(|()| out.flush());
            match String::from_utf8(std::mem::take(&mut line)) {
                Ok(text) => lines.push(text),
                Err(_) => utf8 = false,
            }
        }
    }
    let status = match child.wait() {
        Ok(status) => status,
        Err(err) => {
            eprintln!("error: memoshelve: lost the build script {}: {err}", real.display());
            return Err(Unrecorded::Failed(ExitCode::from(101)));
        }
    };
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
    if clock.elapsed() < min_time {
        return Err(Unrecorded::Bypassed(format!("faster than {} ms", min_time.as_millis())));
    }
    for line in &lines {
        if let Some(path) = rerun_if_changed(line.trim()) {
            bypass_for_input(unit, path, started)?;
        }
    }
    Ok(())
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
    fn keys_on_the_unit_not_the_machine() {
        for name in ["TARGET", "CARGO_FEATURE_STD", "DEP_Z_INCLUDE", "CARGO_CFG_UNIX", "RUSTC"] {
            assert!(in_key(name), "{name}");
        }
        for name in ["NUM_JOBS", "CARGO_MAKEFLAGS", "MAKEFLAGS", "PATH", "OUT_DIR", "HOME"] {
            assert!(!in_key(name), "{name}");
        }
    }

    #[test]
    fn a_bound_entry_holds_only_where_its_directories_are_the_same() {
        let here = unit().roots;
        let portable = Bound { roots: vec![] };
        assert!(portable.holds_in(&here));
        let same = Bound { roots: vec![("out".into(), "/t/debug/build/p-1/out".into())] };
        assert!(same.holds_in(&here));
        let elsewhere = Bound { roots: vec![("out".into(), "/u/debug/build/p-1/out".into())] };
        assert!(!elsewhere.holds_in(&here));
        assert!(contains(b"prefix=/t/debug/build/p-1/out\n", b"/t/debug/build/p-1/out"));
        assert!(!contains(b"/t/debug/build/p-2/out", b"/t/debug/build/p-1/out"));
    }

    #[test]
    fn reads_both_directive_syntaxes() {
        assert_eq!(rerun_if_changed("cargo:rerun-if-changed=a.h"), Some("a.h"));
        assert_eq!(rerun_if_changed("cargo::rerun-if-changed="), Some(""));
        assert_eq!(rerun_if_changed("cargo:rustc-cfg=x"), None);
    }
}
