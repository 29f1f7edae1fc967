//! Talks to cargo: detects a build script, prints `cargo:` directives; the only module that prints.
//!
//! Directives use the single-colon `cargo:` form on purpose: the `cargo::` form is an error in
//! packages whose `rust-version` is older than 1.77, and this crate must not break such a build.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// Whether this process is a build script run by cargo (cargo sets both for build scripts only).
pub(crate) fn in_build_script() -> bool {
    std::env::var_os("OUT_DIR").is_some() && std::env::var_os("CARGO_MANIFEST_DIR").is_some()
}

/// Prints one `cargo:` directive line. Inside a build script only.
#[expect(clippy::print_stdout, reason = "stdout is cargo's control channel in a build script")]
pub(crate) fn emit(line: &str) {
    // A directive is one line: a newline inside would start an unrelated directive.
    let line = line.replace(['\n', '\r'], " ");
    println!("cargo:{line}");
}

/// Reports an event the user asked to see (see `Memo::log`).
pub(crate) fn report(message: &str) {
    if in_build_script() {
        emit(&format!("warning=memoshelve: {message}"));
    } else {
        log::info!("memoshelve: {message}");
    }
}

/// Warns once per process and `topic`: a broken cache gives one line, not one per call.
pub(crate) fn warn_once(topic: &str, message: &str) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let first = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(topic.to_owned());
    if !first {
        return;
    }
    if in_build_script() {
        emit(&format!("warning=memoshelve: {message}"));
    } else {
        log::warn!("memoshelve: {message}");
    }
}

/// Tells cargo to rerun the build script when this file or directory changes.
pub(crate) fn rerun_if_changed(path: &std::path::Path) {
    emit(&format!("rerun-if-changed={}", path.display()));
}

/// Tells cargo to rerun the build script when this variable changes.
pub(crate) fn rerun_if_env_changed(name: &str) {
    emit(&format!("rerun-if-env-changed={name}"));
}

/// Which groups of the build context join the key (all of them unless a `*_independent()`
/// opt-out says the step does not depend on them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ContextScope {
    pub(crate) target: bool,
    pub(crate) profile: bool,
    pub(crate) features: bool,
}

impl Default for ContextScope {
    fn default() -> ContextScope {
        ContextScope { target: true, profile: true, features: true }
    }
}

/// The group a cargo build-script variable belongs to, or `None` when it does not change what a
/// build script produces (paths, job counts, the package's own metadata).
fn group(name: &str) -> Option<Group> {
    const PROFILE_CFGS: [&str; 3] =
        ["CARGO_CFG_DEBUG_ASSERTIONS", "CARGO_CFG_OVERFLOW_CHECKS", "CARGO_CFG_PANIC"];
    match name {
        "TARGET" => Some(Group::Target),
        "HOST" => Some(Group::Always),
        "PROFILE" | "OPT_LEVEL" | "DEBUG" => Some(Group::Profile),
        "CARGO_CFG_FEATURE" => Some(Group::Features),
        _ if PROFILE_CFGS.contains(&name) => Some(Group::Profile),
        _ if name.starts_with("CARGO_FEATURE_") => Some(Group::Features),
        _ if name.starts_with("CARGO_CFG_") => Some(Group::Target),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    Always,
    Target,
    Profile,
    Features,
}

/// What can change a build script's output, as key parts: the target, profile, features and
/// target cfgs cargo passes in, and the compiler's version. Empty outside a build script.
pub(crate) fn context(scope: ContextScope) -> Vec<crate::key::KeyInput> {
    if !in_build_script() {
        return Vec::new();
    }
    let wanted = |group: Group| match group {
        Group::Always => true,
        Group::Target => scope.target,
        Group::Profile => scope.profile,
        Group::Features => scope.features,
    };
    let mut parts: Vec<crate::key::KeyInput> = std::env::vars()
        .filter(|(name, _)| group(name).is_some_and(wanted))
        .map(|(name, value)| crate::key::KeyInput { kind: "context".to_owned(), name, value })
        .collect();
    parts.push(crate::key::KeyInput {
        kind: "context".to_owned(),
        name: "rustc -vV".to_owned(),
        value: rustc_version().to_owned(),
    });
    parts.sort();
    parts
}

/// `$RUSTC -vV`, once per process.
fn rustc_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        match std::process::Command::new(&rustc).arg("-vV").output() {
            Ok(output) if output.status.success() => {
                String::from_utf8_lossy(&output.stdout).trim().to_owned()
            }
            _ => {
                warn_once(
                    "rustc",
                    "cannot run `$RUSTC -vV`: the compiler version is not part of the cache key",
                );
                "\u{0}unknown".to_owned()
            }
        }
    })
}

/// Runs parallel work on a pool of cargo's `NUM_JOBS` threads inside a build script (its `-j`,
/// so memoshelve does not oversubscribe a parallel build), on rayon's global pool elsewhere.
pub(crate) fn in_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let jobs: usize = std::env::var("NUM_JOBS").ok()?.trim().parse().ok()?;
        rayon::ThreadPoolBuilder::new().num_threads(jobs.max(1)).build().ok()
    });
    match pool {
        Some(pool) => pool.install(work),
        None => work(),
    }
}
