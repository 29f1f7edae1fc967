//! A traced run's inputs (DESIGN.md section 10): what it [`Observed`] becomes the entry's
//! second level beside what the script declared, and a hit checks it all.
//!
//! - **Files**: each path looked at, by what is there: a file by its blake3 (through the stat
//!   cache), a directory as one, a symbolic link by its text and what it leads to, a special
//!   file as one, and nothing ("missing": a header found later on a search path is a miss).
//! - **Programs**: each image an `exec` loaded, by content.
//! - **Listings**: each directory read as a listing, by its sorted names.
//! - **Variables**: each read by name (`getenv`), by value; where a process could not be
//!   watched (the script is static, or the interposer is missing) every variable counts; where
//!   the script ran programs (a shell or perl reads its inherited environment without
//!   `getenv`), the variables build tools read ([`TOOL_ENV`]) count too. Never those that
//!   describe the machine rather than the run ([`MACHINE_ENV`]), nor those level 1 holds.
//! - **Writes** outside `OUT_DIR`: a file the run left under the target dir is kept with the
//!   entry and restored beside `OUT_DIR` ([`Beside`]); one left anywhere else makes the run
//!   unrecordable (a temporary file it removed, a pipe, a directory do not count).
//!
//! Left out by rule: `OUT_DIR` and the hermetic sandbox (the entry's own files), the target
//! dir (what cargo built: level 1 holds the script and the `DEP_*` directories), `/proc`,
//! `/dev`, `/sys`, `/run`, the cache root, the registry and git sources under `CARGO_HOME`
//! (cargo checks them; their paths name the version) and cargo's locks and last-use records
//! there (a cargo the script runs writes them), the Rust toolchains under
//! `RUSTUP_HOME` (level 1 holds `rustc -vV`), and paths the run itself wrote before reading.
//! Paths are stored with this build's directories as placeholders, so an entry restores at
//! another checkout path and target dir.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use memoshelve_build::store::Roots;
use serde::{Deserialize, Serialize};

use super::Observed;
use crate::wrapper::statcache::StatCache;

/// Variables that describe the machine or the session, not the run: never inputs.
const MACHINE_ENV: [&str; 30] = [
    "NUM_JOBS",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "CARGO_BUILD_JOBS",
    "TERM",
    "COLORTERM",
    "COLUMNS",
    "LINES",
    "SHLVL",
    "PWD",
    "OLDPWD",
    "_",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
    "XDG_SESSION_ID",
    "LS_COLORS",
    "SSH_AUTH_SOCK",
    "SSH_CONNECTION",
    "SSH_CLIENT",
    "SSH_TTY",
    "LD_PRELOAD",
    "MEMOSHELVE_ENV_LOG",
    "MEMOSHELVE_SEEN_TABLE",
    "MEMOSHELVE_LD_SUBDIRS",
    "MEMOSHELVE_LD_INTERP",
    "CARGO_TERM_COLOR",
];

/// Variables build tools read from their inherited environment (cc, make, cmake, perl,
/// pkg-config, autotools), as exact names or `*`-ended prefixes: tup, Bazel and sccache keep
/// such a list.
const TOOL_ENV: [&str; 37] = [
    "CC*",
    "CXX*",
    "CPP",
    "CPPFLAGS*",
    "CFLAGS*",
    "LDFLAGS*",
    "ASFLAGS*",
    "AR*",
    "AS",
    "LD",
    "NM",
    "RANLIB*",
    "STRIP",
    "OBJCOPY",
    "LIBS",
    "PKG_CONFIG*",
    "TARGET_*",
    "HOST_*",
    "CMAKE*",
    "MAKE",
    "MAKEFILES",
    "CONFIG_SHELL",
    "PERL*",
    "PYTHONPATH",
    "PYTHONHOME",
    "LANG",
    "LC_*",
    "TZ",
    "SOURCE_DATE_EPOCH",
    "GCC_EXEC_PREFIX",
    "COMPILER_PATH",
    "LIBRARY_PATH",
    "CPATH",
    "C_INCLUDE_PATH",
    "CPLUS_INCLUDE_PATH",
    "OBJC_INCLUDE_PATH",
    "DEPENDENCIES_OUTPUT",
];

/// The most a run may leave beside `OUT_DIR` (under the target dir) to be recorded.
const BESIDE_MAX: u64 = 16 << 20;

/// A file a run left under the target dir, outside `OUT_DIR`, restored with the entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Beside {
    /// Its path, this build's directories as placeholders.
    pub(crate) path: String,
    /// Its bytes; text that spells this build's directories holds placeholders instead.
    pub(crate) bytes: Vec<u8>,
    /// Whether `bytes` are text with placeholders.
    pub(crate) named: bool,
    /// Its permission bits.
    pub(crate) mode: u32,
}

/// A traced run's inputs, and what it left beside `OUT_DIR` (see the module).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Traced {
    /// `(path, what was there)` for each path looked at.
    pub(crate) files: Vec<(String, String)>,
    /// `(path, what was there)` for each program that ran.
    pub(crate) programs: Vec<(String, String)>,
    /// `(directory, hash of its sorted names)` for each directory listed.
    pub(crate) listings: Vec<(String, String)>,
    /// `(name, value)` for each variable that counts (`None`: not set).
    pub(crate) env: Vec<(String, Option<String>)>,
    /// Files left under the target dir, outside `OUT_DIR`.
    pub(crate) beside: Vec<Beside>,
}

/// What a run's paths are judged against.
pub(crate) struct Scope<'a> {
    /// This build's directories (placeholders in what is stored).
    pub(crate) roots: &'a Roots,
    /// `OUT_DIR` and the sandbox: the entry's own files.
    pub(crate) own: Vec<PathBuf>,
    /// The target dir.
    pub(crate) target_dir: Option<&'a Path>,
    /// Directories whose contents are no input (see the module).
    pub(crate) left_out: Vec<PathBuf>,
    /// Whether level 1 holds a variable already.
    pub(crate) keyed_env: &'a dyn Fn(&str) -> bool,
}

impl Scope<'_> {
    fn left_out(&self, path: &Path) -> bool {
        const SYSTEM: [&str; 4] = ["/proc", "/dev", "/sys", "/run"];
        SYSTEM.iter().any(|dir| path.starts_with(dir))
            || self.own.iter().any(|dir| path.starts_with(dir))
            || self.target_dir.is_some_and(|target| path.starts_with(target))
            || self.left_out.iter().any(|dir| path.starts_with(dir))
    }
}

/// Paths (files or directories, `:`-separated as `PATH`) whose reads and writes are neither
/// inputs nor outputs: a log every run appends to, a lock file.
pub(crate) const IGNORE_VAR: &str = "MEMOSHELVE_BUILD_SCRIPTS_IGNORE";

/// The directories left out for this machine: the cache root, the registry's and git's
/// sources and cargo's own records under `CARGO_HOME`, the toolchains under `RUSTUP_HOME`, and
/// [`IGNORE_VAR`]'s.
pub(crate) fn machine_left_out(
    cache_root: Option<&Path>,
    cargo_home: Option<&Path>,
) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = cache_root.into_iter().map(Path::to_path_buf).collect();
    if let Some(ignored) = std::env::var_os(IGNORE_VAR) {
        dirs.extend(std::env::split_paths(&ignored).filter(|path| path.is_absolute()));
    }
    if let Some(home) = cargo_home {
        // Sources, downloads and the index (cargo checks what it takes by checksum), and the
        // locks and last-use records a cargo the script runs writes.
        dirs.extend(
            ["registry", "git", ".package-cache", ".package-cache-mutate", ".global-cache"]
                .map(|name| home.join(name)),
        );
    }
    let rustup = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".rustup")));
    dirs.extend(rustup.map(|rustup| rustup.join("toolchains")));
    // Each also as the file system spells it (a CARGO_HOME reached through a link).
    let canonical: Vec<PathBuf> =
        dirs.iter().filter_map(|dir| fs::canonicalize(dir).ok()).collect();
    dirs.extend(canonical);
    dirs
}

/// Whether variable `name` matches a [`TOOL_ENV`] pattern.
fn tool_env(name: &str) -> bool {
    TOOL_ENV.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *pattern,
    })
}

/// The current value of variable `name`, this build's directories as placeholders.
fn env_value(name: &str, roots: &Roots) -> Option<String> {
    std::env::var_os(name).map(|value| roots.name(&value.to_string_lossy()))
}

/// `path` as stored.
fn named(path: &Path, roots: &Roots) -> String {
    roots.name(&path.to_string_lossy())
}

/// What is at `path` now: `file <blake3>`, `dir`, `special`, `missing`, or `link <text> to `
/// what the link leads to.
pub(crate) fn what_is_at(path: &Path, cache: &mut StatCache) -> String {
    let Ok(meta) = fs::symlink_metadata(path) else { return "missing".to_owned() };
    if meta.is_symlink() {
        let text = fs::read_link(path).map(|text| text.to_string_lossy().into_owned());
        let target = match fs::metadata(path) {
            Ok(meta) => kind_of(path, &meta, cache),
            Err(_) => "missing".to_owned(),
        };
        return format!("link {} to {target}", text.unwrap_or_default());
    }
    kind_of(path, &meta, cache)
}

fn kind_of(path: &Path, meta: &fs::Metadata, cache: &mut StatCache) -> String {
    if meta.is_dir() {
        "dir".to_owned()
    } else if meta.is_file() {
        match cache.hash(path, meta) {
            Ok(hash) => format!("file {}", blake3::Hash::from(hash).to_hex()),
            Err(err) => format!("unreadable ({})", err.kind()),
        }
    } else {
        "special".to_owned()
    }
}

/// A directory's sorted names, hashed; `missing` when it cannot be listed.
pub(crate) fn listing(dir: &Path) -> String {
    let Ok(entries) = fs::read_dir(dir) else { return "missing".to_owned() };
    let mut names: Vec<_> = entries.filter_map(|entry| Some(entry.ok()?.file_name())).collect();
    names.sort();
    let mut hasher = blake3::Hasher::new();
    for name in names {
        hasher.update(name.as_encoded_bytes());
        hasher.update(b"\0");
    }
    hasher.finalize().to_hex().to_string()
}

/// `path` without `.` and `..` components, naming what the kernel resolves it to: a `..`
/// after a symbolic link leaves the link's target, not the link's directory, so there the path
/// so far is resolved first (`a/link/../b` is `<link's target's parent>/b`).
fn tidy(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut tidied = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if fs::symlink_metadata(&tidied).is_ok_and(|meta| meta.is_symlink())
                    && let Ok(resolved) = fs::canonicalize(&tidied)
                {
                    tidied = resolved;
                }
                tidied.pop();
            }
            other => tidied.push(other),
        }
    }
    tidied
}

/// The inputs of a run that succeeded, or why it must not be recorded.
pub(crate) fn record(
    observed: &Observed,
    scope: &Scope<'_>,
    cache: &mut StatCache,
) -> Result<Traced, String> {
    if let Some(why) = &observed.unrecordable {
        return Err(why.clone());
    }
    let tidied = |paths: &BTreeSet<PathBuf>| -> BTreeSet<PathBuf> {
        paths.iter().map(|path| tidy(path)).collect()
    };
    let observed = &Observed {
        looked: tidied(&observed.looked),
        listed: tidied(&observed.listed),
        written: tidied(&observed.written),
        ran: tidied(&observed.ran),
        env: observed.env.clone(),
        script_env_watched: observed.script_env_watched,
        started_programs: observed.started_programs,
        unrecordable: None,
        stops: observed.stops,
        logged: observed.logged,
    };
    let mut traced = Traced::default();
    let mut beside_bytes = 0;
    for path in &observed.written {
        if scope.left_out(path) && !scope.target_dir.is_some_and(|target| path.starts_with(target))
            || scope.own.iter().any(|dir| path.starts_with(dir))
        {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(path) else { continue }; // a temporary file, gone
        if !(meta.is_file() || meta.is_symlink()) {
            continue; // a directory, a pipe (the jobserver's), a device
        }
        if !scope.target_dir.is_some_and(|target| path.starts_with(target)) {
            return Err(format!("it wrote {}, outside OUT_DIR and the target dir", path.display()));
        }
        if meta.is_symlink() {
            return Err(format!("it made the symbolic link {} outside OUT_DIR", path.display()));
        }
        beside_bytes += meta.len();
        if beside_bytes > BESIDE_MAX {
            return Err(format!(
                "it wrote more than {} MiB beside OUT_DIR (last: {})",
                BESIDE_MAX >> 20,
                path.display()
            ));
        }
        let bytes =
            fs::read(path).map_err(|err| format!("cannot read back {}: {err}", path.display()))?;
        let text = crate::wrapper::outputs::text_of(&bytes);
        let spells = scope
            .roots
            .dirs()
            .any(|(_, dir)| crate::wrapper::outputs::contains(&bytes, dir.as_bytes()));
        let (bytes, named_text) = match text {
            Some(text) if spells => (scope.roots.name(text).into_bytes(), true),
            _ => (bytes, false),
        };
        traced.beside.push(Beside {
            path: named(path, scope.roots),
            bytes,
            named: named_text,
            mode: mode_of(&meta),
        });
    }
    let counts = |path: &Path| !scope.left_out(path) && !observed.written.contains(path);
    let mut files = BTreeMap::new();
    for path in observed.looked.iter().filter(|path| counts(path)) {
        files.insert(named(path, scope.roots), what_is_at(path, cache));
    }
    let mut programs = BTreeMap::new();
    for path in observed.ran.iter().filter(|path| counts(path)) {
        programs.insert(named(path, scope.roots), what_is_at(path, cache));
    }
    let mut listings = BTreeMap::new();
    for dir in observed.listed.iter().filter(|path| counts(path)) {
        listings.insert(named(dir, scope.roots), listing(dir));
    }
    traced.files = files.into_iter().collect();
    traced.programs = programs.into_iter().collect();
    traced.listings = listings.into_iter().collect();
    traced.env = env_inputs(observed, scope);
    Ok(traced)
}

/// The variables that count (see the module), with their values.
fn env_inputs(observed: &Observed, scope: &Scope<'_>) -> Vec<(String, Option<String>)> {
    let mut names: BTreeSet<String> = match &observed.env {
        Ok(names) if observed.script_env_watched => names.clone(),
        // Unwatched: every variable may have been read.
        _ => std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()).collect(),
    };
    if observed.started_programs {
        // Those set, and each exact name unset too: setting `CC` later is a change.
        names.extend(
            std::env::vars_os()
                .filter_map(|(name, _)| name.into_string().ok())
                .filter(|name| tool_env(name)),
        );
        names.extend(
            TOOL_ENV
                .iter()
                .map(|pattern| pattern.trim_end_matches('*'))
                .filter(|name| !name.ends_with('_'))
                .map(str::to_owned),
        );
    }
    names
        .into_iter()
        .filter(|name| !MACHINE_ENV.contains(&name.as_str()) && !(scope.keyed_env)(name))
        .map(|name| {
            let value = env_value(&name, scope.roots);
            (name, value)
        })
        .collect()
}

#[cfg(unix)]
fn mode_of(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_of(_meta: &fs::Metadata) -> u32 {
    0o644
}

impl Traced {
    /// The first input that is not as recorded in this build (`roots`), in words
    /// (`file /usr/include/zlib.h`, `program /usr/bin/cc`, `env CFLAGS`), or `None`.
    pub(crate) fn first_change(&self, roots: &Roots, cache: &mut StatCache) -> Option<String> {
        for (name, value) in &self.env {
            if env_value(name, roots) != *value {
                return Some(format!("env {name}"));
            }
        }
        for (kind, list) in [("program", &self.programs), ("file", &self.files)] {
            for (path, value) in list {
                if what_is_at(Path::new(&roots.expand(path)), cache) != *value {
                    return Some(format!("{kind} {path}"));
                }
            }
        }
        for (dir, value) in &self.listings {
            if listing(Path::new(&roots.expand(dir))) != *value {
                return Some(format!("listing {dir}"));
            }
        }
        None
    }

    /// Puts the files kept beside `OUT_DIR` back, with this build's directories; a file
    /// already as recorded is left alone (its time too).
    pub(crate) fn place_beside(&self, roots: &Roots) -> std::io::Result<()> {
        for beside in &self.beside {
            let path = PathBuf::from(roots.expand(&beside.path));
            let bytes = if beside.named {
                let text = std::str::from_utf8(&beside.bytes).map_err(std::io::Error::other)?;
                roots.expand(text).into_bytes()
            } else {
                beside.bytes.clone()
            };
            if fs::read(&path).is_ok_and(|there| there == bytes) {
                continue;
            }
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            let temp = path.with_extension(format!("memoshelve-{}.tmp", std::process::id()));
            fs::write(&temp, &bytes)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                fs::set_permissions(&temp, fs::Permissions::from_mode(beside.mode))?;
            }
            fs::rename(&temp, &path)?;
        }
        Ok(())
    }

    /// The inputs that differ between this run and `newer`, as `(part, before, after)`
    /// (`file <path>`, `program <path>`, `listing <dir>`, `env <NAME>`; `None`: not an input
    /// of that run, or a variable not set), for `cargo memoshelve explain`.
    pub(crate) fn differences(
        &self,
        newer: &Traced,
    ) -> Vec<(String, Option<String>, Option<String>)> {
        let mut changes = Vec::new();
        let lists = [
            ("program", &self.programs, &newer.programs),
            ("file", &self.files, &newer.files),
            ("listing", &self.listings, &newer.listings),
        ];
        for (kind, before, after) in lists {
            let before: BTreeMap<&String, &String> = before.iter().map(|(k, v)| (k, v)).collect();
            let after: BTreeMap<&String, &String> = after.iter().map(|(k, v)| (k, v)).collect();
            let names: BTreeSet<&&String> = before.keys().chain(after.keys()).collect();
            for name in names {
                let (was, is) = (before.get(*name), after.get(*name));
                if was != is {
                    changes.push((
                        format!("{kind} {name}"),
                        was.map(|value| (*value).clone()),
                        is.map(|value| (*value).clone()),
                    ));
                }
            }
        }
        let before: BTreeMap<&String, &Option<String>> =
            self.env.iter().map(|(k, v)| (k, v)).collect();
        let after: BTreeMap<&String, &Option<String>> =
            newer.env.iter().map(|(k, v)| (k, v)).collect();
        let names: BTreeSet<&&String> = before.keys().chain(after.keys()).collect();
        for name in names {
            let (was, is) = (
                before.get(*name).copied().cloned().flatten(),
                after.get(*name).copied().cloned().flatten(),
            );
            if was != is {
                changes.push((format!("env {name}"), was, is));
            }
        }
        changes
    }

    /// How many inputs it holds.
    pub(crate) fn len(&self) -> usize {
        self.files.len() + self.programs.len() + self.listings.len() + self.env.len()
    }

    /// How many inputs of each kind, in words (`cargo memoshelve show`).
    pub(crate) fn counts(&self) -> String {
        format!(
            "{} files, {} programs, {} listings, {} variables; {} files beside OUT_DIR",
            self.files.len(),
            self.programs.len(),
            self.listings.len(),
            self.env.len(),
            self.beside.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope<'a>(roots: &'a Roots, dir: &Path, keyed: &'a dyn Fn(&str) -> bool) -> Scope<'a> {
        Scope {
            roots,
            own: vec![dir.join("target/debug/build/p-1/out")],
            target_dir: None,
            left_out: vec![dir.join("cache")],
            keyed_env: keyed,
        }
    }

    #[test]
    fn files_count_by_what_is_there_and_missing_ones_count_too() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        fs::write(dir.join("a.h"), "a").unwrap();
        fs::create_dir(dir.join("inc")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("a.h", dir.join("link.h")).unwrap();
        let roots = Roots::new([("manifest", dir)]);
        let keyed = |_: &str| false;
        let observed = Observed {
            looked: [dir.join("a.h"), dir.join("gone.h"), dir.join("inc"), dir.join("link.h")]
                .into(),
            listed: [dir.join("inc")].into(),
            env: Ok(BTreeSet::new()),
            script_env_watched: true,
            ..Observed::default()
        };
        let mut cache = StatCache::default();
        let traced = record(&observed, &scope(&roots, dir, &keyed), &mut cache).unwrap();
        let files: BTreeMap<_, _> = traced.files.iter().cloned().collect();
        assert_eq!(files["{memoshelve:manifest}/gone.h"], "missing");
        assert_eq!(files["{memoshelve:manifest}/inc"], "dir");
        assert!(files["{memoshelve:manifest}/a.h"].starts_with("file "));
        #[cfg(unix)]
        assert_eq!(
            files["{memoshelve:manifest}/link.h"],
            format!("link a.h to {}", files["{memoshelve:manifest}/a.h"])
        );
        assert_eq!(traced.first_change(&roots, &mut cache), None);
        // Each change is found and named.
        fs::write(dir.join("gone.h"), "now here").unwrap();
        assert_eq!(
            traced.first_change(&roots, &mut cache).as_deref(),
            Some("file {memoshelve:manifest}/gone.h")
        );
        fs::remove_file(dir.join("gone.h")).unwrap();
        fs::write(dir.join("inc/new.h"), "").unwrap();
        assert_eq!(
            traced.first_change(&roots, &mut cache).as_deref(),
            Some("listing {memoshelve:manifest}/inc")
        );
        fs::remove_file(dir.join("inc/new.h")).unwrap();
        fs::write(dir.join("a.h"), "b").unwrap();
        assert_eq!(
            traced.first_change(&roots, &mut cache).as_deref(),
            Some("file {memoshelve:manifest}/a.h")
        );
        // At another checkout path, the same files are the same inputs.
        fs::write(dir.join("a.h"), "a").unwrap();
        let moved = tempfile::tempdir().unwrap();
        fs::copy(dir.join("a.h"), moved.path().join("a.h")).unwrap();
        fs::create_dir(moved.path().join("inc")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("a.h", moved.path().join("link.h")).unwrap();
        let there = Roots::new([("manifest", moved.path())]);
        assert_eq!(traced.first_change(&there, &mut cache), None);
    }

    #[test]
    fn paths_are_tidied_as_the_kernel_resolves_them() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::create_dir_all(dir.join("elsewhere/deep")).unwrap();
        assert_eq!(tidy(&dir.join("a/./b/../c")), dir.join("a/c"));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.join("elsewhere/deep"), dir.join("a/link")).unwrap();
            let real = fs::canonicalize(dir.join("elsewhere")).unwrap();
            assert_eq!(tidy(&dir.join("a/link/../x.h")), real.join("x.h"));
        }
    }

    #[test]
    fn left_out_paths_and_the_runs_own_writes_are_no_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let roots = Roots::new([("manifest", dir)]);
        let keyed = |_: &str| false;
        let observed = Observed {
            looked: [
                PathBuf::from("/proc/self/status"),
                PathBuf::from("/dev/null"),
                dir.join("cache/x"),
                dir.join("target/debug/build/p-1/out/gen.rs"),
                dir.join("tmp-made"),
            ]
            .into(),
            written: [dir.join("tmp-made")].into(),
            env: Ok(BTreeSet::new()),
            script_env_watched: true,
            ..Observed::default()
        };
        let traced =
            record(&observed, &scope(&roots, dir, &keyed), &mut StatCache::default()).unwrap();
        assert_eq!(traced.files, Vec::new());
    }

    #[test]
    fn a_write_outside_out_dir_and_the_target_dir_is_unrecordable() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        fs::write(dir.join("stamp"), "x").unwrap();
        let roots = Roots::new([("manifest", dir)]);
        let keyed = |_: &str| false;
        let observed = Observed {
            written: [dir.join("stamp"), dir.join("removed-temp")].into(),
            env: Ok(BTreeSet::new()),
            script_env_watched: true,
            ..Observed::default()
        };
        let why =
            record(&observed, &scope(&roots, dir, &keyed), &mut StatCache::default()).unwrap_err();
        assert!(why.contains("stamp"), "{why}");
    }

    #[test]
    fn a_file_left_under_the_target_dir_is_kept_and_placed_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let target = dir.join("target");
        fs::create_dir_all(target.join("debug")).unwrap();
        let conf = target.join("debug/app.conf");
        fs::write(&conf, format!("data={}/debug/data\n", target.display())).unwrap();
        let roots = Roots::new([("target", target.as_path())]);
        let keyed = |_: &str| false;
        let observed = Observed {
            written: [conf.clone()].into(),
            env: Ok(BTreeSet::new()),
            script_env_watched: true,
            ..Observed::default()
        };
        let scope = Scope { target_dir: Some(&target), ..scope(&roots, dir, &keyed) };
        let traced = record(&observed, &scope, &mut StatCache::default()).unwrap();
        assert_eq!(traced.beside.len(), 1);
        assert_eq!(traced.beside[0].path, "{memoshelve:target}/debug/app.conf");
        let other = dir.join("other-target");
        traced.place_beside(&Roots::new([("target", other.as_path())])).unwrap();
        assert_eq!(
            fs::read_to_string(other.join("debug/app.conf")).unwrap(),
            format!("data={}/debug/data\n", other.display())
        );
    }

    #[test]
    fn variables_read_count_and_machine_ones_never() {
        let roots = Roots::default();
        let keyed = |name: &str| name == "TARGET";
        let dir = tempfile::tempdir().unwrap();
        let observed = Observed {
            env: Ok(["PATH", "NUM_JOBS", "TARGET", "MEMOSHELVE_TEST_SURELY_UNSET"]
                .map(str::to_owned)
                .into()),
            script_env_watched: true,
            ..Observed::default()
        };
        let traced =
            record(&observed, &scope(&roots, dir.path(), &keyed), &mut StatCache::default())
                .unwrap();
        let names: Vec<&str> = traced.env.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["MEMOSHELVE_TEST_SURELY_UNSET", "PATH"]);
        assert_eq!(traced.env[0].1, None);
        // Unwatched: every variable but the machine's counts.
        let unwatched = Observed { script_env_watched: false, ..observed };
        let traced =
            record(&unwatched, &scope(&roots, dir.path(), &keyed), &mut StatCache::default())
                .unwrap();
        assert!(traced.env.iter().any(|(name, _)| name == "PATH"));
        assert!(traced.env.iter().all(|(name, _)| name != "NUM_JOBS" && name != "TARGET"));
        // A run that started programs: what build tools read counts, set or not.
        let started = Observed {
            env: Ok(BTreeSet::new()),
            script_env_watched: true,
            started_programs: true,
            ..Observed::default()
        };
        let traced =
            record(&started, &scope(&roots, dir.path(), &keyed), &mut StatCache::default())
                .unwrap();
        for name in ["CC", "CFLAGS", "LANG"] {
            assert!(traced.env.iter().any(|(listed, _)| listed == name), "{name}: {traced:?}");
        }
    }
}
