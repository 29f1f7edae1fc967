//! `cargo xtask ci`: the one command CI runs, and the one to run before pushing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

/// The workspace root (xtask's manifest dir is `<root>/xtask`).
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
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
    let examples = project_root().join("examples/Cargo.toml");
    step("tidy", cargo().args(["run", "--quiet", "--package", "xtask", "--", "tidy"]))?;
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
    // Unit, integration, end-to-end (real processes, real cargo builds of examples/) and doc tests.
    // The remote tier's tests (tests/e2e/remote.rs) need the servers .ci/run starts: under CI
    // they fail without them, elsewhere they skip with a message.
    step("test", cargo().args(["test", "--workspace", "--no-fail-fast"]))?;
    step("test examples", cargo().args(["test", "--manifest-path"]).arg(&examples))?;
    // Users run the tests with CARGO_TARGET_DIR set (CI, a shared target dir): the tests that
    // ask cargo where a project's target dir is must not see the caller's. The same target dir,
    // named explicitly: nothing is rebuilt.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"));
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
    eprintln!("\nci: all steps passed");
    Ok(())
}
