//! The build context and declared inputs in the key: what must miss, what may share.

use std::path::Path;
use std::process::Command;

use crate::{lines, probe};

/// The environment cargo gives a build script, for a debug build on x86_64 Linux.
fn build_script(mut command: Command, manifest_dir: &Path) -> Command {
    command
        .env("OUT_DIR", manifest_dir.join("target/debug/build/probe-1/out"))
        .env("CARGO_MANIFEST_DIR", manifest_dir)
        .env("TARGET", "x86_64-unknown-linux-gnu")
        .env("HOST", "x86_64-unknown-linux-gnu")
        .env("PROFILE", "debug")
        .env("OPT_LEVEL", "0")
        .env("DEBUG", "true")
        .env("CARGO_CFG_TARGET_ARCH", "x86_64")
        .env("CARGO_CFG_TARGET_OS", "linux")
        .env("CARGO_CFG_DEBUG_ASSERTIONS", "")
        .env("CARGO_FEATURE_DEFAULT", "1")
        .env("CARGO_CFG_FEATURE", "default");
    command
}

/// The key a `key` run printed (build scripts also print `cargo:` directives).
fn key(command: Command) -> String {
    lines(command).into_iter().find(|line| !line.starts_with("cargo:")).expect("a key line")
}

fn key_with(opt_outs: &[&str], dir: &Path, change: impl Fn(&mut Command)) -> (String, String) {
    let mut args = vec!["key"];
    args.extend_from_slice(opt_outs);
    let base = key(build_script(probe(&args), dir));
    let mut changed = build_script(probe(&args), dir);
    change(&mut changed);
    (base, key(changed))
}

#[test]
fn another_target_misses_unless_target_independent() {
    let dir = tempfile::tempdir().unwrap();
    let cross = |command: &mut Command| {
        command.env("TARGET", "aarch64-unknown-linux-gnu").env("CARGO_CFG_TARGET_ARCH", "aarch64");
    };
    let (native, aarch64) = key_with(&[], dir.path(), cross);
    assert_ne!(native, aarch64, "a hit could be restored for the wrong target");
    let only_cfg = |command: &mut Command| {
        command.env("CARGO_CFG_TARGET_ARCH", "aarch64");
    };
    let (native, cfg_changed) = key_with(&[], dir.path(), only_cfg);
    assert_ne!(native, cfg_changed, "target cfgs must be in the key");
    let (native, aarch64) = key_with(&["--target-independent"], dir.path(), cross);
    assert_eq!(native, aarch64);
}

#[test]
fn another_profile_misses_unless_profile_independent() {
    let dir = tempfile::tempdir().unwrap();
    let release = |command: &mut Command| {
        command
            .env("PROFILE", "release")
            .env("OPT_LEVEL", "3")
            .env("DEBUG", "false")
            .env_remove("CARGO_CFG_DEBUG_ASSERTIONS");
    };
    let (debug, release_key) = key_with(&[], dir.path(), release);
    assert_ne!(debug, release_key);
    let (debug, release_key) = key_with(&["--profile-independent"], dir.path(), release);
    assert_eq!(debug, release_key);
    // Profile independence does not make another target share.
    let (debug, cross) = key_with(&["--profile-independent"], dir.path(), |command| {
        command.env("TARGET", "wasm32-unknown-unknown");
    });
    assert_ne!(debug, cross);
}

#[test]
fn other_features_miss_unless_features_independent() {
    let dir = tempfile::tempdir().unwrap();
    let more_features = |command: &mut Command| {
        command.env("CARGO_FEATURE_SIMD", "1").env("CARGO_CFG_FEATURE", "default,simd");
    };
    let (default, simd) = key_with(&[], dir.path(), more_features);
    assert_ne!(default, simd);
    let (default, simd) = key_with(&["--features-independent"], dir.path(), more_features);
    assert_eq!(default, simd);
}

#[test]
fn the_recorded_inputs_name_what_differed() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = |target: &str| {
        let mut command = build_script(probe(&["inputs"]), dir.path());
        command.env("TARGET", target);
        lines(command)
    };
    let native = inputs("x86_64-unknown-linux-gnu");
    let cross = inputs("aarch64-apple-darwin");
    let differing: Vec<&String> = native.iter().filter(|line| !cross.contains(line)).collect();
    assert_eq!(differing, ["context\tTARGET\tx86_64-unknown-linux-gnu"]);
    assert!(native.iter().any(|line| line.starts_with("context\trustc -vV\trustc ")), "{native:?}");
    // Paths, job counts and the like do not join the key.
    assert!(!native.iter().any(|line| line.contains("OUT_DIR")), "{native:?}");
}

#[test]
fn declared_inputs_change_the_key_and_tell_cargo() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("proto")).unwrap();
    std::fs::write(dir.path().join("proto/a.proto"), "message A {}").unwrap();
    std::fs::write(dir.path().join("header.h"), "int a;").unwrap();
    let args = [
        "key",
        "--input-file",
        "header.h",
        "--input-glob",
        "proto/**/*.proto",
        "--env",
        "PROBE_FLAVOUR",
    ];
    let run = || lines(build_script(probe(&args), dir.path()));
    let first = run();
    let base_key = key(build_script(probe(&args), dir.path()));
    assert!(
        first
            .contains(&format!("cargo:rerun-if-changed={}", dir.path().join("header.h").display())),
        "{first:?}"
    );
    assert!(
        first.contains(&format!("cargo:rerun-if-changed={}", dir.path().join("proto").display())),
        "{first:?}"
    );
    assert!(first.contains(&"cargo:rerun-if-env-changed=PROBE_FLAVOUR".to_owned()), "{first:?}");
    let key_now = || key(build_script(probe(&args), dir.path()));
    assert_eq!(key_now(), base_key, "nothing changed, the key must not");
    // An undeclared file does not change the key.
    std::fs::write(dir.path().join("notes.txt"), "undeclared").unwrap();
    assert_eq!(key_now(), base_key);
    std::fs::write(dir.path().join("header.h"), "int b;").unwrap();
    let after_header = key_now();
    assert_ne!(after_header, base_key, "an edited declared file must change the key");
    std::fs::create_dir(dir.path().join("proto/deep")).unwrap();
    std::fs::write(dir.path().join("proto/deep/b.proto"), "message B {}").unwrap();
    let after_new_file = key_now();
    assert_ne!(after_new_file, after_header, "a new file matching the glob must change the key");
    let mut with_env = build_script(probe(&args), dir.path());
    with_env.env("PROBE_FLAVOUR", "spicy");
    assert_ne!(key(with_env), after_new_file);
}

#[test]
fn a_copy_of_the_project_at_another_path_shares_entries() {
    let parent = tempfile::tempdir().unwrap();
    let cache = parent.path().join("cache");
    let mut keys = Vec::new();
    let mut statuses = Vec::new();
    for checkout in ["checkout-a", "elsewhere/checkout-b"] {
        let project = parent.path().join(checkout);
        std::fs::create_dir_all(project.join("src")).unwrap();
        std::fs::write(project.join("src/grammar.y"), "expr: term '+' term;").unwrap();
        let args = ["call", "--dir", cache.to_str().unwrap(), "--input-file", "src/grammar.y"];
        let output = lines(build_script(probe(&args), &project));
        statuses.push(output.into_iter().find(|line| !line.starts_with("cargo:")).unwrap());
        keys.push(key(build_script(probe(&["key", "--input-file", "src/grammar.y"]), &project)));
    }
    assert_eq!(keys[0], keys[1]);
    assert!(
        statuses[0].ends_with("miss") && statuses[1].ends_with("cached (disk)"),
        "{statuses:?}"
    );
}
