//! `cargo xtask ci`: the one command CI runs, and the one to run before pushing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

/// The workspace root (xtask's manifest dir is `<root>/xtask`).
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

/// The target directory every step shares (`CARGO_TARGET_DIR`, else `<root>/target`).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
}

/// Where `main` keeps the caller's own `XDG_CACHE_HOME` (empty: unset) before pointing it
/// under the target dir.
pub(crate) const USER_CACHE_HOME: &str = "MEMOSHELVE_XTASK_USER_CACHE_HOME";

/// The user's own memoshelve cache and cargo configuration, as found: every file's path, size
/// and modification time. `ci` takes it first and checks it last: a test that wrote there
/// (the default cache root, `setup --global`) fails the run.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UserFiles(Vec<(PathBuf, u64, Option<std::time::SystemTime>)>);

impl UserFiles {
    pub(crate) fn take() -> UserFiles {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        let cache = std::env::var_os(USER_CACHE_HOME)
            .filter(|dir| !dir.is_empty())
            .map_or_else(|| home.join(".cache"), PathBuf::from);
        let cargo_home = cargo_home();
        UserFiles::under(vec![
            cache.join("memoshelve"),
            home.join("Library/Caches/memoshelve"),
            cargo_home.join("config.toml"),
            cargo_home.join("config"),
        ])
    }

    /// The files at and below `pending`.
    fn under(mut pending: Vec<PathBuf>) -> UserFiles {
        let mut files = Vec::new();
        while let Some(path) = pending.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                pending.extend(
                    std::fs::read_dir(&path).into_iter().flatten().flatten().map(|e| e.path()),
                );
            }
            files.push((path, meta.len(), meta.modified().ok()));
        }
        files.sort();
        UserFiles(files)
    }

    /// The first path that differs from `before` (made, removed or changed).
    pub(crate) fn changed_since(&self, before: &UserFiles) -> Option<PathBuf> {
        let (now, then) = (&self.0, &before.0);
        let differing = now.iter().find(|file| !then.contains(file));
        let gone = then.iter().find(|file| !now.contains(file));
        differing.or(gone).map(|(path, ..)| path.clone())
    }
}

pub(crate) fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(project_root());
    command
}

pub(crate) fn step(name: &str, command: &mut Command) -> anyhow::Result<()> {
    eprintln!("\n==> {name}: {command:?}");
    let started = Instant::now();
    let status = command.status().with_context(|| format!("cannot start {name}"))?;
    eprintln!("<== {name}: {status} in {:.1}s", started.elapsed().as_secs_f64());
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

pub(crate) fn run() -> anyhow::Result<()> {
    let user_files = UserFiles::take();
    let examples = project_root().join("examples/Cargo.toml");
    step("tidy", cargo().args(["run", "--quiet", "--package", "xtask", "--", "tidy"]))?;
    workflows()?;
    step("fmt", cargo().args(["fmt", "--all", "--", "--check"]))?;
    step(
        "fmt examples",
        cargo().args(["fmt", "--all", "--check", "--manifest-path"]).arg(&examples),
    )?;
    step(
        "clippy",
        cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
    )?;
    // The workspace build turns the `macros` feature on; check the library as users get it.
    step(
        "clippy default features",
        cargo().args(["clippy", "--package", "memoshelve-build", "--lib", "--", "-D", "warnings"]),
    )?;
    // Each remote backend alone, and the maintenance API alone (the workspace build has them
    // all, through cargo-memoshelve).
    for feature in ["async", "remote-redis", "remote-http", "remote-s3", "maintenance"] {
        step(
            &format!("clippy {feature}"),
            cargo()
                .args(["clippy", "--package", "memoshelve-build", "--lib", "--features", feature])
                .args(["--", "-D", "warnings"]),
        )?;
    }
    step(
        "clippy examples",
        cargo()
            .args(["clippy", "--all-targets", "--manifest-path"])
            .arg(&examples)
            .args(["--", "-D", "warnings"]),
    )?;
    // Each publishable crate packaged as crates.io would get it and built from that package,
    // together, so that their path dependencies resolve to one another (cargo 1.90+). About 45 s
    // on 2 cores from nothing; --allow-dirty so that it can run before a commit.
    let packaged = target_dir().join("publish-dry-run");
    forget_packaged(&packaged)?;
    step(
        "publish dry run",
        cargo()
            .args(["publish", "--dry-run", "--workspace", "--locked", "--allow-dirty"])
            .arg("--target-dir")
            .arg(&packaged),
    )?;
    // Unit, integration, end-to-end (real processes, real cargo builds of examples/) and doc tests.
    // The remote tier's tests (tests/e2e/remote.rs) need the servers .ci/run starts: under CI
    // they fail without them, elsewhere they skip with a message.
    step("test", cargo().args(["test", "--workspace", "--no-fail-fast"]))?;
    step("test examples", cargo().args(["test", "--manifest-path"]).arg(&examples))?;
    // Users run the tests with CARGO_TARGET_DIR set (CI, a shared target dir): the tests that
    // ask cargo where a project's target dir is must not see the caller's. The same target dir,
    // named explicitly: nothing is rebuilt.
    let target = target_dir();
    step(
        "test with CARGO_TARGET_DIR set",
        cargo()
            .args(["test", "--package", "memoshelve-tests", "--test", "e2e", "roots::"])
            .env("CARGO_TARGET_DIR", std::path::absolute(&target)?),
    )?;
    // The README's first command, so that it never rots.
    step("demo", cargo().args(["run", "--quiet", "--package", "xtask", "--", "demo"]))?;
    // The speed suite in its quick variant, so that it cannot rot; it asserts nothing about time.
    step(
        "bench quick",
        cargo().args(["run", "--quiet", "--package", "xtask", "--", "bench", "--quick"]),
    )?;
    step(
        "doc",
        cargo()
            .args(["doc", "--no-deps", "--package", "memoshelve-build"])
            .args(["--features", "macros,maintenance"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    // Nothing above may write into the user's own cache or cargo configuration.
    if let Some(path) = UserFiles::take().changed_since(&user_files) {
        bail!(
            "a step wrote {} (the user's own cache or cargo configuration): tests and example \
             builds must use a cache root of their own",
            path.display()
        );
    }
    eprintln!("\nci: all steps passed");
    Ok(())
}

/// Under CI (`CI` set, not `false`), as tests/e2e/remote.rs decides it.
/// Removes what earlier dry runs left of this workspace's packages: their unpacked sources and
/// what was built from them in `target` (the dry run's own target dir).
///
/// The dry run verifies each package against a registry of the packages it just made
/// (`<target>/package/tmp-registry`), which cargo unpacks under `$CARGO_HOME/registry/src/-<hash
/// of that registry's path>/<name>-<version>` and never unpacks again while that directory
/// exists; and it takes a registry package's version for its fingerprint, so what it built from
/// it is never rebuilt either. The version does not change between commits: a checkout at a
/// path an earlier run used (a CI machine's) would be verified against the sources of that
/// earlier run, and a module added since is "not found". crates.io's sources (`index.crates.io-*`)
/// and builds of other packages are kept.
fn forget_packaged(target: &Path) -> anyhow::Result<()> {
    let packages = workspace_packages()?;
    let mut stale = Vec::new();
    // Local registries are named `-<hash>`; remote ones `<host>-<hash>`.
    for registry in read_dir(&cargo_home().join("registry/src")) {
        if registry.file_name().is_some_and(|name| name.to_string_lossy().starts_with('-')) {
            stale.extend(
                packages.iter().map(|(name, version)| registry.join(format!("{name}-{version}"))),
            );
        }
    }
    // `.fingerprint/<name>-<hash>`, `build/<name>-<hash>`, `deps/lib<crate_name>-<hash>.rlib`...
    for dir in ["debug/.fingerprint", "debug/build", "debug/deps"] {
        for built in read_dir(&target.join(dir)) {
            let name = built.file_name().unwrap_or_default().to_string_lossy().replace('_', "-");
            if packages.iter().any(|(package, _)| {
                let package = package.replace('_', "-");
                name.strip_prefix("lib").unwrap_or(&name).starts_with(&format!("{package}-"))
            }) {
                stale.push(built);
            }
        }
    }
    for path in stale {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", path.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `CARGO_HOME`, else `~/.cargo`.
fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME").map_or_else(
        || std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".cargo"),
        PathBuf::from,
    )
}

/// The entries of `dir` (none if it cannot be read).
fn read_dir(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).into_iter().flatten().flatten().map(|entry| entry.path()).collect()
}

/// The name and version of every package in the workspace.
fn workspace_packages() -> anyhow::Result<Vec<(String, String)>> {
    let output = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    Ok(metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|package| {
            Some((package["name"].as_str()?.to_owned(), package["version"].as_str()?.to_owned()))
        })
        .collect())
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "false")
}

/// The workflow files against GitHub's schema with action-validator (which .ci/run installs);
/// `cargo xtask tidy` checks what it can without it. Missing, it is skipped, except under CI.
fn workflows() -> anyhow::Result<()> {
    let dir = project_root().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml" || ext == "yaml"))
        .collect();
    files.sort();
    if Command::new("action-validator").arg("--version").output().is_err() {
        let install = "cargo install action-validator --version 0.9.0 --locked";
        if under_ci() {
            bail!("action-validator is not installed: .ci/run installs it (`{install}`)");
        }
        eprintln!("\n==> workflows: skipped, action-validator is not installed (`{install}`)");
        return Ok(());
    }
    step("workflows", Command::new("action-validator").current_dir(project_root()).args(&files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_made_changed_or_removed_under_the_users_cache_is_seen() {
        let home = tempfile::tempdir().unwrap();
        let root = home.path().join("cache/memoshelve");
        let take = || UserFiles::under(vec![root.clone(), home.path().join("config.toml")]);
        let before = take();
        assert_eq!(take().changed_since(&before), None, "nothing there, nothing changed");
        std::fs::create_dir_all(root.join("index")).unwrap();
        let made = take();
        assert_eq!(made.changed_since(&before), Some(root.clone()));
        std::fs::write(root.join("index/entry"), "x").unwrap();
        // The new file, or the directory it changed.
        let changed = take().changed_since(&made);
        assert!(changed.as_ref().is_some_and(|path| path.starts_with(root.join("index"))));
        let with_entry = take();
        std::fs::write(home.path().join("config.toml"), "[build]").unwrap();
        assert_eq!(take().changed_since(&with_entry), Some(home.path().join("config.toml")));
    }
}
