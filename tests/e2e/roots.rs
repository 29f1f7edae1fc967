//! Where the cache lives, and what happens when it cannot be used.

use std::path::Path;
use std::process::Command;

use crate::{counted, in_build_script, lines, probe, statuses, warnings};

/// A directory that even root cannot write: a read-only bind mount when running as root (as CI
/// does), permission bits otherwise. Undone on drop.
struct ReadOnly<'a> {
    path: &'a Path,
    mounted: bool,
}

impl<'a> ReadOnly<'a> {
    fn make(path: &'a Path) -> ReadOnly<'a> {
        let uid = Command::new("id").arg("-u").output().expect("run id -u");
        if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
            let status =
                Command::new("mount").args(["--bind", "-o", "ro"]).arg(path).arg(path).status();
            assert!(
                status.is_ok_and(|status| status.success()),
                "running as root, and a read-only bind mount of {} failed: run as a non-root user or with CAP_SYS_ADMIN",
                path.display()
            );
            ReadOnly { path, mounted: true }
        } else {
            set_mode(path, 0o555);
            ReadOnly { path, mounted: false }
        }
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.path).status();
        } else {
            set_mode(self.path, 0o755);
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs the probe as if inside a build script, so warnings become `cargo:warning=` lines.
#[test]
fn a_root_that_is_a_file_warns_once_and_still_returns_values() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "not a directory").unwrap();
    let output = in_build_script(
        probe(&["call", "--dir", file.to_str().unwrap(), "--count", "5"]),
        dir.path(),
    );
    assert_eq!(statuses(&output), ["miss"; 5]);
    let warnings = warnings(&output);
    assert_eq!(warnings.len(), 1, "{output:?}");
    assert!(
        warnings[0].contains(file.to_str().unwrap()),
        "the warning names the root: {}",
        warnings[0]
    );
    assert!(warnings[0].contains("MEMOSHELVE_DIR"), "the warning names the fix: {}", warnings[0]);
}

#[test]
fn failed_writes_warn_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    // Make the blob area unusable: a file where its directory should be. Small values are
    // inlined in the index and still cached; large ones fail to write, once per value.
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("blobs-b3"), "in the way").unwrap();
    std::fs::write(root.join("tmp-b3"), "in the way").unwrap();
    let output = in_build_script(
        probe(&["call", "--dir", root.to_str().unwrap(), "--count", "4", "--size", "5000"]),
        dir.path(),
    );
    assert_eq!(statuses(&output), ["miss"; 4]);
    assert_eq!(warnings(&output).len(), 1, "{output:?}");
}

#[test]
fn disable_env_computes_every_time_and_touches_no_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let counter = dir.path().join("computed");
    let output = lines(
        probe(&["call", "--dir", root.to_str().unwrap(), "--times", "3"])
            .env("MEMOSHELVE_DISABLE", "1")
            .env("PROBE_COUNTER", &counter),
    );
    assert_eq!(statuses(&output), ["miss"; 3]);
    assert_eq!(counted(&counter), 3);
    assert!(!root.exists());
}

#[test]
fn memoshelve_dir_target_means_the_cargo_target_dir() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let out_dir = target.join("debug/build/demo-0123456789abcdef/out");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(target.join("CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc55")
        .unwrap();
    let output = lines(
        probe(&["call"])
            .env("MEMOSHELVE_DIR", "target")
            .env("OUT_DIR", &out_dir)
            .env("CARGO_MANIFEST_DIR", dir.path()),
    );
    assert_eq!(statuses(&output), ["miss"]);
    assert!(target.join("memoshelve/index").is_dir(), "the cache was not put in the target dir");
}

#[test]
fn default_root_follows_xdg_cache_home_then_home() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg");
    let home = dir.path().join("home");
    lines(probe(&["call"]).env("XDG_CACHE_HOME", &xdg).env("HOME", &home));
    assert!(xdg.join("memoshelve/index").is_dir());
    lines(probe(&["call"]).env_remove("XDG_CACHE_HOME").env("HOME", &home));
    assert!(home.join(".cache/memoshelve/index").is_dir());
    let output =
        lines(probe(&["call"]).env("MEMOSHELVE_DIR", dir.path().join("env")).env("HOME", &home));
    assert_eq!(statuses(&output), ["miss"]);
    assert!(dir.path().join("env/index").is_dir());
}

#[test]
fn a_read_only_root_serves_hits_computes_misses_and_warns_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let root_arg = root.to_str().unwrap();
    for size in ["16", "5000"] {
        // Populated in build-script mode too: the build context is part of the key.
        in_build_script(
            probe(&["call", "--dir", root_arg, "--arg", "1", "--count", "2", "--size", size]),
            dir.path(),
        );
    }
    let _read_only = ReadOnly::make(&root);
    for size in ["16", "5000"] {
        // Arguments 1 and 2 are cached; 3 and 4 are new and cannot be stored.
        let output = in_build_script(
            probe(&["call", "--dir", root_arg, "--arg", "1", "--count", "4", "--size", size]),
            dir.path(),
        );
        assert_eq!(
            statuses(&output),
            ["cached (disk)", "cached (disk)", "miss", "miss"],
            "{output:?}"
        );
        let warnings = warnings(&output);
        assert_eq!(warnings.len(), 1, "{output:?}");
        assert!(warnings[0].contains(root_arg), "the warning names the root: {}", warnings[0]);
        assert!(
            warnings[0].contains("MEMOSHELVE_DIR"),
            "the warning names the fix: {}",
            warnings[0]
        );
    }
}

/// A workspace `ws/` with one package `ws/pkg/`, given manifests.
fn project(dir: &Path, workspace_extra: &str, package_extra: &str) -> std::path::PathBuf {
    let ws = dir.join("ws");
    std::fs::create_dir_all(ws.join("pkg/src")).unwrap();
    std::fs::write(
        ws.join("Cargo.toml"),
        format!("[workspace]\nmembers = [\"pkg\"]\nresolver = \"3\"\n{workspace_extra}"),
    )
    .unwrap();
    std::fs::write(
        ws.join("pkg/Cargo.toml"),
        format!(
            "[package]\nname = \"pkg\"\nversion = \"0.1.0\"\nedition = \"2021\"\n{package_extra}"
        ),
    )
    .unwrap();
    std::fs::write(ws.join("pkg/src/lib.rs"), "").unwrap();
    ws
}

/// What `cargo memoshelve path --json` says for a manifest.
fn cli_path(manifest: &Path) -> serde_json::Value {
    let output = crate::run(
        crate::without_callers_cargo_env(&mut Command::new(crate::cli_binary()))
            .args(["memoshelve", "path", "--json", "--manifest-path"])
            .arg(manifest)
            .env_remove("MEMOSHELVE_DIR"),
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn builds_and_the_cli_use_the_dir_configured_in_the_workspace_or_package_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let ws = project(dir.path(), "[workspace.metadata.memoshelve]\ndir = \"shelf\"\n", "");
    let pkg = ws.join("pkg");
    let build = |pkg: &Path| in_build_script(probe(&["call"]), pkg);
    assert_eq!(statuses(&build(&pkg)), ["miss"]);
    assert!(ws.join("shelf/index").is_dir(), "the workspace setting was not used");
    assert_eq!(statuses(&build(&pkg)), ["cached (disk)"]);
    let path = cli_path(&pkg.join("Cargo.toml"));
    assert_eq!(path["path"], ws.join("shelf").to_str().unwrap());
    assert_eq!(path["config"]["table"], "workspace.metadata.memoshelve");

    // The package's own setting wins, written as an inline table; relative to its manifest.
    let ws = project(
        dir.path(),
        "[workspace.metadata.memoshelve]\ndir = \"shelf\"\n",
        "[package.metadata]\nmemoshelve = { dir = \"../pkg-shelf\" }\n",
    );
    assert_eq!(statuses(&build(&pkg)), ["miss"]);
    assert!(ws.join("pkg-shelf/index").is_dir(), "the package setting was not used");
    assert_eq!(cli_path(&pkg.join("Cargo.toml"))["path"], ws.join("pkg-shelf").to_str().unwrap());
    // MEMOSHELVE_DIR still beats the configuration.
    let env_root = dir.path().join("env");
    lines(
        probe(&["call"])
            .env("OUT_DIR", &pkg)
            .env("CARGO_MANIFEST_DIR", &pkg)
            .env("MEMOSHELVE_DIR", &env_root),
    );
    assert!(env_root.join("index").is_dir());
}

#[test]
fn memoshelve_toml_and_dir_target_and_bad_settings_warn_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ws = project(dir.path(), "", "[package.metadata.memoshelve]\ndir = 3\ncolour = \"blue\"\n");
    let pkg = ws.join("pkg");
    std::fs::write(ws.join("memoshelve.toml"), "dir = \"target\"\n").unwrap();
    let target = ws.join("target");
    let out_dir = target.join("debug/build/pkg-0123456789abcdef/out");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(target.join("CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc55")
        .unwrap();
    let output = lines(probe(&["call"]).env("OUT_DIR", &out_dir).env("CARGO_MANIFEST_DIR", &pkg));
    assert_eq!(statuses(&output), ["miss"]);
    assert!(target.join("memoshelve/index").is_dir(), "memoshelve.toml's `target` was not used");
    let manifest = pkg.join("Cargo.toml");
    let warnings = warnings(&output);
    assert_eq!(warnings.len(), 2, "{output:?}");
    assert!(
        warnings.iter().all(|warning| warning.contains(manifest.to_str().unwrap())),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|warning| warning.contains("`dir`") && warning.contains("must be a string"))
    );
    assert!(warnings.iter().any(|warning| warning.contains("`colour`")));
    let path = cli_path(&manifest);
    assert_eq!(path["path"], target.join("memoshelve").to_str().unwrap());
    assert_eq!(path["warnings"].as_array().map(Vec::len), Some(2), "{path}");
}
