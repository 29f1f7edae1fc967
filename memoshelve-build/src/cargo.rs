//! Talks to cargo: detects a build script, prints `cargo:` directives; the only module that prints.
//!
//! Directives use the single-colon `cargo:` form on purpose: the `cargo::` form is an error in
//! packages whose `rust-version` is older than 1.77, and this crate must not break such a build.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
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
/// `root`, the cache root if there is one, keeps the compiler's version between runs.
pub(crate) fn context(scope: ContextScope, root: Option<&Path>) -> Vec<crate::key::KeyInput> {
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
    let kept = root.zip(toolchain_fingerprint(rustc)).map(|(root, fingerprint)| {
        root.join(RUSTC_VERSIONS).join(crate::key::hex_lower(&fingerprint[..16]))
    });
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

/// Where [`rustc_version_of`] keeps versions, under the cache root (outside cacache's dirs).
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

/// Runs `work` with this process's standard output redirected into a temporary file, then puts
/// stdout back and forwards what was written (so cargo still sees it, once). Returns the text, or
/// `None` where capturing is not possible (not Unix, or a descriptor call failed): then `work`
/// simply runs. A panic inside `work` restores stdout and forwards the text on the way out.
pub(crate) fn capture_stdout<R>(work: impl FnOnce() -> R) -> (R, Option<String>) {
    #[cfg(unix)]
    if let Some(capture) = unix::Capture::start() {
        let value = work();
        return (value, Some(capture.finish()));
    }
    (work(), None)
}

#[cfg(unix)]
mod unix {
    //! The descriptor juggling behind [`super::capture_stdout`].

    use std::fs::File;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;

    const STDOUT: i32 = 1;

    // std links the C library on every Unix; these three calls are all that is needed.
    unsafe extern "C" {
        fn dup(fd: i32) -> i32;
        fn dup2(old: i32, new: i32) -> i32;
        fn close(fd: i32) -> i32;
    }

    /// Stdout is redirected into `file` while this lives; `saved` is the original stdout.
    pub(super) struct Capture {
        file: File,
        saved: i32,
        done: bool,
    }

    impl Capture {
        pub(super) fn start() -> Option<Capture> {
            let path = std::env::temp_dir().join(format!(
                "memoshelve-stdout-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .ok()?;
            let _ = std::fs::remove_file(&path); // anonymous from here on: nothing to clean up
            let _ = std::io::stdout().flush();
            // SAFETY: plain descriptor calls on descriptors this process owns; failures are checked.
            let saved = unsafe { dup(STDOUT) };
            if saved < 0 {
                return None;
            }
            // SAFETY: as above; `file` stays open for as long as the redirection lasts.
            if unsafe { dup2(file.as_raw_fd(), STDOUT) } < 0 {
                // SAFETY: `saved` came from `dup` above and is closed once.
                unsafe { close(saved) };
                return None;
            }
            Some(Capture { file, saved, done: false })
        }

        /// Puts stdout back and returns (and forwards) what was captured.
        pub(super) fn finish(mut self) -> String {
            self.restore()
        }

        fn restore(&mut self) -> String {
            self.done = true;
            let _ = std::io::stdout().flush();
            // SAFETY: `saved` is the original stdout, duplicated in `start`; closed exactly once.
            unsafe {
                dup2(self.saved, STDOUT);
                close(self.saved);
            }
            let mut bytes = Vec::new();
            let _ = self.file.rewind().and_then(|()| self.file.read_to_end(&mut bytes));
            let _ = std::io::stdout().write_all(&bytes).and_then(|()| std::io::stdout().flush());
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    impl Drop for Capture {
        fn drop(&mut self) {
            if !self.done {
                self.restore();
            }
        }
    }
}
