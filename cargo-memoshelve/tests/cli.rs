//! The CLI as users run it: `cargo-memoshelve memoshelve ...` and `cargo memoshelve ...`.

use std::path::Path;
use std::process::{Command, Output};

fn bin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-memoshelve"));
    command.env_remove("MEMOSHELVE_DIR");
    command
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn path_prints_the_explicit_dir() {
    let dir = tempfile::tempdir().unwrap();
    let output = bin().args(["memoshelve", "path", "--dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(stdout(&output).trim_end(), dir.path().to_str().unwrap());
}

#[test]
fn path_json_says_where_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("from-env");
    let output =
        bin().args(["memoshelve", "path", "--json"]).env("MEMOSHELVE_DIR", &root).output().unwrap();
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["path"], root.to_str().unwrap());
    assert_eq!(json["source"], "from MEMOSHELVE_DIR");
    assert_eq!(json["exists"], false);
}

#[test]
fn path_follows_the_home_default() {
    let dir = tempfile::tempdir().unwrap();
    let output = bin()
        .args(["memoshelve", "path"])
        .env_remove("XDG_CACHE_HOME")
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(Path::new(stdout(&output).trim_end()), dir.path().join(".cache/memoshelve"));
}

#[test]
fn runs_as_a_cargo_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_cargo-memoshelve")).parent().unwrap();
    let path = std::env::join_paths(
        std::iter::once(bin_dir.to_owned())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["memoshelve", "path", "--dir"])
        .arg(dir.path())
        .env("PATH", path)
        .env_remove("MEMOSHELVE_DIR")
        .output()
        .unwrap();
    assert_eq!(stdout(&output).trim_end(), dir.path().to_str().unwrap());
}

#[test]
fn help_explains_and_usage_errors_exit_2() {
    let help = stdout(&bin().args(["memoshelve", "--help"]).output().unwrap());
    assert!(help.contains("path") && help.contains("MEMOSHELVE_DIR"), "{help}");
    let wrong = bin().args(["memoshelve", "no-such-command"]).output().unwrap();
    assert_eq!(wrong.status.code(), Some(2));
}
