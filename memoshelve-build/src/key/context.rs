//! The build context of a build script, as key parts: what cargo passes that can change what
//! a build script produces (target, profile, features, cfgs) and the compiler's version, kept
//! under the cache root per toolchain so that a warm build does not run `rustc -vV`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::cargo::{in_build_script, warn_once};
use crate::key::{KeyInput, hex_lower};

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
/// `root`, the cache root if there is one, keeps the compiler's version between runs.
pub(crate) fn context(scope: ContextScope, root: Option<&Path>) -> Vec<KeyInput> {
    if !in_build_script() {
        return Vec::new();
    }
    let wanted = |group: Group| match group {
        Group::Always => true,
        Group::Target => scope.target,
        Group::Profile => scope.profile,
        Group::Features => scope.features,
    };
    let mut parts: Vec<KeyInput> = std::env::vars()
        .filter(|(name, _)| group(name).is_some_and(wanted))
        .map(|(name, value)| KeyInput { kind: "context".to_owned(), name, value })
        .collect();
    parts.push(KeyInput {
        kind: "context".to_owned(),
        name: "rustc -vV".to_owned(),
        value: rustc_version(root).to_owned(),
    });
    parts.sort();
    parts
}

/// `$RUSTC -vV`, once per process.
fn rustc_version(root: Option<&Path>) -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        rustc_version_of(Path::new(&rustc), root).unwrap_or_else(|| {
            warn_once(
                "rustc",
                "cannot run `$RUSTC -vV`: the compiler version is not part of the cache key",
            );
            "\u{0}unknown".to_owned()
        })
    })
}

/// `rustc -vV` of `rustc`, kept under `root` between runs when `rustc` is a toolchain's own
/// binary: running it takes ~11 ms, as long as a warm build script's whole run. The copy is
/// used while the binary and its toolchain's `lib/librustc_driver-*` files keep their path,
/// size and modification time (what cargo's own `.rustc_info.json` cache checks, and more:
/// rustup installs every release as new files). A proxy (rustup's `~/.cargo/bin/rustc`, a
/// wrapper script) has no such `lib/` beside it: it is run every time.
pub(crate) fn rustc_version_of(rustc: &Path, root: Option<&Path>) -> Option<String> {
    let kept = root
        .zip(toolchain_fingerprint(rustc))
        .map(|(root, fingerprint)| root.join(RUSTC_VERSIONS).join(hex_lower(&fingerprint[..16])));
    if let Some(text) = kept.as_ref().and_then(|path| std::fs::read_to_string(path).ok())
        && let Some(version) = text.strip_prefix(RUSTC_VERSION_HEADER)
    {
        return Some(version.to_owned());
    }
    let output = std::process::Command::new(rustc).arg("-vV").output().ok()?;
    if !output.status.success() {
        return None;
    }
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if let Some(path) = kept {
        // Best effort, atomically: a reader sees the whole file or none.
        let temp = path.with_extension(format!("{}.tmp", std::process::id()));
        let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
            std::fs::write(&temp, format!("{RUSTC_VERSION_HEADER}{version}"))
                .and_then(|()| std::fs::rename(&temp, &path))
        });
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
    }
    Some(version)
}

/// Where [`rustc_version_of`] keeps versions, under the cache root (beside the index and the blobs).
pub(crate) const RUSTC_VERSIONS: &str = "rustc-versions";
/// The first line of a kept version: a file without it (torn, foreign) is not used.
const RUSTC_VERSION_HEADER: &str = "memoshelve rustc -vV 1\n";

/// The blake3 of the compiler binary's path, size and mtime and of every
/// `<toolchain>/lib/librustc_driver-*` file's name, size and mtime; `None` if `rustc` is not a
/// toolchain's `bin/rustc`.
fn toolchain_fingerprint(rustc: &Path) -> Option<[u8; 32]> {
    let rustc = std::fs::canonicalize(rustc).ok()?;
    let lib = rustc.parent().filter(|bin| bin.ends_with("bin"))?.parent()?.join("lib");
    let mut hasher = blake3::Hasher::new();
    let mut stamp = |path: &Path| -> Option<()> {
        let meta = std::fs::metadata(path).ok()?;
        let mtime = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
        let path = path.to_string_lossy();
        hasher.update(&(path.len() as u64).to_le_bytes());
        hasher.update(path.as_bytes());
        hasher.update(&meta.len().to_le_bytes());
        hasher.update(&mtime.as_nanos().to_le_bytes());
        Some(())
    };
    stamp(&rustc)?;
    let mut drivers: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .filter(|item| item.file_name().to_string_lossy().starts_with("librustc_driver-"))
        .map(|item| item.path())
        .collect();
    if drivers.is_empty() {
        return None;
    }
    drivers.sort();
    for driver in &drivers {
        stamp(driver)?;
    }
    Some(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {

    /// A toolchain's `rustc -vV` is run once and then read from the cache root, until the binary
    /// or its driver library changes; a compiler without a toolchain's `lib/` is run every time.
    #[cfg(unix)]
    #[test]
    fn the_compiler_version_is_kept_until_its_toolchain_changes() {
        use std::os::unix::fs::PermissionsExt as _;

        use super::rustc_version_of;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let toolchain = dir.path().join("toolchain");
        std::fs::create_dir_all(toolchain.join("bin")).unwrap();
        std::fs::create_dir_all(toolchain.join("lib")).unwrap();
        let runs = dir.path().join("runs");
        let rustc = toolchain.join("bin/rustc");
        let script = |release: &str| {
            format!("#!/bin/sh\necho run >> '{}'\necho 'rustc {release}'\n", runs.display())
        };
        std::fs::write(&rustc, script("1.0.0")).unwrap();
        std::fs::set_permissions(&rustc, std::fs::Permissions::from_mode(0o755)).unwrap();
        let driver = toolchain.join("lib/librustc_driver-0123.so");
        std::fs::write(&driver, "driver").unwrap();
        let count = || std::fs::read_to_string(&runs).unwrap_or_default().lines().count();

        assert_eq!(rustc_version_of(&rustc, Some(&root)).as_deref(), Some("rustc 1.0.0"));
        assert_eq!(rustc_version_of(&rustc, Some(&root)).as_deref(), Some("rustc 1.0.0"));
        assert_eq!(count(), 1, "the second call reads the kept version");

        // A new driver library (a toolchain updated in place): run again.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options().write(true).open(&driver).unwrap().set_modified(later).unwrap();
        assert_eq!(rustc_version_of(&rustc, Some(&root)).as_deref(), Some("rustc 1.0.0"));
        assert_eq!(count(), 2);

        // A new binary of another size: run again, and its version is the new one.
        std::fs::write(&rustc, script("1.10.0")).unwrap();
        assert_eq!(rustc_version_of(&rustc, Some(&root)).as_deref(), Some("rustc 1.10.0"));
        assert_eq!(count(), 3);

        // A kept file that is torn or foreign is not used.
        for kept in std::fs::read_dir(root.join(super::RUSTC_VERSIONS)).unwrap() {
            std::fs::write(kept.unwrap().path(), "rustc 9.9.9").unwrap();
        }
        assert_eq!(rustc_version_of(&rustc, Some(&root)).as_deref(), Some("rustc 1.10.0"));
        assert_eq!(count(), 4);

        // No cache root, or no toolchain `lib/` beside the binary: run every time.
        assert_eq!(rustc_version_of(&rustc, None).as_deref(), Some("rustc 1.10.0"));
        std::fs::remove_file(&driver).unwrap();
        assert_eq!(rustc_version_of(&rustc, Some(&root)).as_deref(), Some("rustc 1.10.0"));
        assert_eq!(rustc_version_of(&rustc, Some(&root)).as_deref(), Some("rustc 1.10.0"));
        assert_eq!(count(), 7);
    }
}
