//! Generates an LR(1) parser from `src/minilang.lalrpop` with LALRPOP, memoized with
//! `Memo::outputs`: seconds of table construction at opt-level 0 on a cold build, a restore of
//! one file on a warm one.

use std::path::PathBuf;

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let memo = memoshelve_build::Memo::new("grammar-lalrpop")
        .input_file("src/minilang.lalrpop") // the grammar: any edit is a miss
        .target_independent() // the generated parser is plain Rust source
        .profile_independent()
        .features_independent();
    memo.outputs(&out_dir).call(&"minilang", |step| {
        // Lets the end-to-end tests see whether the generator really ran.
        if let Some(marker) = std::env::var_os("MEMOSHELVE_EXAMPLE_MARKER") {
            let mut runs = std::fs::read_to_string(&marker).unwrap_or_default();
            runs.push_str("grammar\n");
            std::fs::write(&marker, runs).expect("write the marker file");
        }
        lalrpop::Configuration::new()
            .set_in_dir("src")
            .set_out_dir(step.dir())
            .emit_rerun_directives(false)
            .process()
            .unwrap_or_else(|err| panic!("lalrpop failed: {err}"));
    });
}
