//! Real cargo builds of the crates in `examples/`: cold, `cargo clean`, warm.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's target directory (the probe binary lives in `<target>/<profile>/`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_memoshelve-probe"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_owned()
}

fn examples_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/Cargo.toml")
}

/// `cargo <args>` on the examples workspace, with its own target dir (kept between runs so
/// dependencies compile once) and the given cache root.
fn cargo(args: &[&str], cache: &Path) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(args).arg("--manifest-path").arg(examples_manifest());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MEMOSHELVE_") {
            command.env_remove(name);
        }
    }
    let output = command
        .env("CARGO_TARGET_DIR", target_dir().join("e2e-examples"))
        .env("MEMOSHELVE_DIR", cache)
        .env("MEMOSHELVE_LOG", "all")
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "cargo {args:?} failed:\n{stderr}");
    stderr
}

fn generated_file(package: &str, file: &str) -> Vec<u8> {
    let build = target_dir().join("e2e-examples/debug/build");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&build)
        .unwrap()
        .flatten()
        .map(|entry| entry.path().join("out").join(file))
        .filter(|path| path.is_file() && path.to_string_lossy().contains(&format!("/{package}-")))
        .collect();
    assert_eq!(found.len(), 1, "expected one {file} under {}: {found:?}", build.display());
    std::fs::read(found.remove(0)).unwrap()
}

#[test]
fn lookup_table_is_served_from_the_cache_after_cargo_clean() {
    let cache = tempfile::tempdir().unwrap();
    cargo(&["clean", "-p", "lookup-table"], cache.path());
    let cold = cargo(&["build", "-p", "lookup-table"], cache.path());
    assert!(cold.contains("memoshelve: lookup-table-crc32") && cold.contains(": miss"), "{cold}");
    let generated = generated_file("lookup-table", "crc32_table.rs");

    cargo(&["clean", "-p", "lookup-table"], cache.path());
    let warm = cargo(&["build", "-p", "lookup-table"], cache.path());
    assert!(warm.contains(": cached (disk)"), "the warm build did not hit the cache:\n{warm}");
    assert!(!warm.contains(": miss"), "{warm}");
    assert_eq!(generated_file("lookup-table", "crc32_table.rs"), generated);

    // A release build is another profile: by default it must not reuse the debug entry.
    cargo(&["clean", "--release", "-p", "lookup-table"], cache.path());
    let release = cargo(&["build", "--release", "-p", "lookup-table"], cache.path());
    assert!(
        release.contains(": miss") && !release.contains(": cached"),
        "release reused the debug entry:\n{release}"
    );
    cargo(&["clean", "--release", "-p", "lookup-table"], cache.path());
    let release = cargo(&["build", "--release", "-p", "lookup-table"], cache.path());
    assert!(release.contains(": cached (disk)"), "the release entry was not stored:\n{release}");
}
