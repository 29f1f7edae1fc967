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
fn directive(line: &str) {
    // A directive is one line: a newline inside would start an unrelated directive.
    let line = line.replace(['\n', '\r'], " ");
    println!("cargo:{line}");
}

/// Reports an event the user asked to see (see `Memo::log`).
pub(crate) fn report(message: &str) {
    if in_build_script() {
        directive(&format!("warning=memoshelve: {message}"));
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
        directive(&format!("warning=memoshelve: {message}"));
    } else {
        log::warn!("memoshelve: {message}");
    }
}
