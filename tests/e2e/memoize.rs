//! `#[memoize]` across processes and across real `cargo build`s: a fresh process hits the disk,
//! editing the function's body invalidates its entries, editing a comment or the layout does not.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{counted, lines, run};

fn memoized(n: &str, cache: &Path, counter: &Path) -> Vec<String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_memoshelve-memoized"));
    command.arg(n).env("MEMOSHELVE_DIR", cache).env("PROBE_COUNTER", counter);
    command.env_remove("MEMOSHELVE_DISABLE").env_remove("MEMOSHELVE_LOG");
    lines(command)
}

#[test]
fn a_memoized_function_hits_the_disk_in_a_fresh_process() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, counter) = (dir.path().join("cache"), dir.path().join("computed"));
    // First process: nothing on disk; each function computes once for its two calls.
    assert_eq!(memoized("12", &cache, &counter), ["square 144 none", "cube 1728 none"]);
    assert_eq!(counted(&counter), 2);
    // Second process: both values are on disk, and nothing is computed again.
    assert_eq!(memoized("12", &cache, &counter), ["square 144 disk", "cube 1728 disk"]);
    assert_eq!(counted(&counter), 2);
    // Another argument is another key.
    assert_eq!(memoized("3", &cache, &counter), ["square 9 none", "cube 27 none"]);
    assert_eq!(counted(&counter), 4);
}

/// A tiny crate with one `#[memoize]` function, built with real cargo. Its `main` prints `hit`
/// or `miss` (whether the companion `Memo` already held the value) and the value.
struct Fixture {
    dir: PathBuf,
    target: PathBuf,
    cache: PathBuf,
}

const MAIN: &str = r#"//! A fixture of the end-to-end tests.

use memoshelve_build::memoize;

fn helper(n: u64) -> u64 {
    HELPER
}

#[memoize(OPTIONS)]
fn double(n: u64) -> u64 {
    // COMMENT
    BODY
}

fn main() {
    let cached = double_memo().contains::<u64, _>(&(21u64,));
    let value = double(21);
    println!("{} {value}", if cached { "hit" } else { "miss" });
}
"#;

impl Fixture {
    fn new(dir: &Path) -> Fixture {
        let crate_dir = dir.join("memoize-fixture");
        std::fs::create_dir_all(crate_dir.join("src")).unwrap();
        let library = Path::new(env!("CARGO_MANIFEST_DIR")).join("../memoshelve-build");
        let library = library.canonicalize().unwrap();
        let manifest = format!(
            "[package]\nname = \"memoize-fixture\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
             publish = false\n\n[dependencies]\nmemoshelve-build = {{ path = {:?}, features = \
             [\"macros\"] }}\n\n[workspace]\n",
            library.display().to_string()
        );
        std::fs::write(crate_dir.join("Cargo.toml"), manifest).unwrap();
        // The workspace's lock file: the same dependency versions, and no registry lookups.
        let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
        std::fs::copy(lock, crate_dir.join("Cargo.lock")).unwrap();
        // Kept between test runs, so the dependencies compile once.
        let target = Path::new(env!("CARGO_BIN_EXE_memoshelve-probe"))
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("e2e-memoize");
        Fixture { dir: crate_dir, target, cache: dir.join("cache") }
    }

    /// Writes `src/main.rs` from its parts, builds it, runs it; returns its output line.
    fn build_and_run(&self, options: &str, comment: &str, body: &str, helper: &str) -> String {
        let main = MAIN
            .replace("OPTIONS", options)
            .replace("COMMENT", comment)
            .replace("BODY", body)
            .replace("HELPER", helper);
        std::fs::write(self.dir.join("src/main.rs"), main).unwrap();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        run(Command::new(cargo)
            .args(["build", "--quiet", "--offline", "--manifest-path"])
            .arg(self.dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &self.target));
        let mut binary = Command::new(self.target.join("debug/memoize-fixture"));
        binary.env("MEMOSHELVE_DIR", &self.cache);
        binary.env_remove("MEMOSHELVE_DISABLE");
        lines(binary).join("\n")
    }
}

#[test]
fn editing_the_body_invalidates_and_editing_a_comment_or_the_layout_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::new(dir.path());
    let build =
        |options, comment, body, helper| fixture.build_and_run(options, comment, body, helper);

    assert_eq!(build("", "doubles n", "helper(n) * 2", "n"), "miss 42");
    assert_eq!(build("", "doubles n", "helper(n) * 2", "n"), "hit 42");
    // Another comment, another layout: the same tokens, so the same entries.
    assert_eq!(build("", "twice n, rewritten", "helper(n)\n        *    2 // x2", "n"), "hit 42");
    // Another body with the same result: the old entry is not used.
    assert_eq!(build("", "doubles n", "helper(n) + helper(n)", "n"), "miss 42");
    assert_eq!(build("", "doubles n", "helper(n) + helper(n)", "n"), "hit 42");
    // A callee is not part of the function's tokens: its edit is not seen (documented)...
    assert_eq!(build("", "doubles n", "helper(n) + helper(n)", "n + 1"), "hit 42");
    // ...and `version` is how its user says so.
    assert_eq!(build("version = \"2\"", "doubles n", "helper(n) + helper(n)", "n + 1"), "miss 44");
}
