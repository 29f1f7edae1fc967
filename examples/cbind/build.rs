//! Compiles `c/mathlib.c` into a static library with `cc`, memoized with `Memo::outputs`.
//!
//! On a hit the library is restored into `OUT_DIR` and the link directives `cc` printed
//! (`rustc-link-lib`, `rustc-link-search=native=<OUT_DIR>`) are replayed, so the crate still links.
//! Headers reached through `#include` are reported as discovered inputs: editing one is a miss.

use std::path::{Path, PathBuf};

/// The local headers `file` includes, transitively (`#include "..."` only).
fn local_includes(file: &Path, found: &mut Vec<PathBuf>) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    for line in text.lines() {
        let Some(name) =
            line.trim().strip_prefix("#include \"").and_then(|rest| rest.strip_suffix('"'))
        else {
            continue;
        };
        let header = file.parent().unwrap_or(Path::new(".")).join(name);
        if !found.contains(&header) {
            found.push(header.clone());
            local_includes(&header, found);
        }
    }
}

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let memo = memoshelve_build::Memo::new("cbind-cc")
        .input_file("c/mathlib.c")
        .input_file("c/api.h")
        .env("CC")
        .env("CFLAGS");
    memo.outputs(&out_dir).call(&"mathlib", |step| {
        // Lets the end-to-end tests see whether the compiler really ran.
        if let Some(marker) = std::env::var_os("MEMOSHELVE_EXAMPLE_MARKER") {
            let mut runs = std::fs::read_to_string(&marker).unwrap_or_default();
            runs.push_str("cbind\n");
            std::fs::write(&marker, runs).expect("write the marker file");
        }
        let mut headers = Vec::new();
        local_includes(Path::new("c/mathlib.c"), &mut headers);
        step.input_files(&headers);
        // cc prints its own cargo:rustc-link-* lines: memoshelve captures and replays them.
        cc::Build::new().file("c/mathlib.c").include("c").compile("mathlib");
    });
}
