//! Reliability under the conditions of issue 5: concurrent processes, the determinism audit,
//! crashes, full and broken file systems. Figures from these tests go into RELIABILITY.md.

use std::path::Path;

use crate::{lines, probe, statuses};

fn warnings(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|line| line.starts_with("cargo:warning=memoshelve:")).collect()
}

/// A probe run as inside a build script (warnings as `cargo:warning=` lines).
fn in_build_script(command: &mut std::process::Command, dir: &Path) -> Vec<String> {
    lines(command.env("OUT_DIR", dir).env("CARGO_MANIFEST_DIR", dir))
}

#[test]
fn the_audit_finds_an_undeclared_input_of_a_file_step_and_keeps_the_fresh_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let out = dir.path().join("out");
    let undeclared = dir.path().join("undeclared.txt");
    std::fs::write(&undeclared, "// first\n").unwrap();
    let run = |audit: Option<&str>| {
        let mut command = probe(&[
            "outputs",
            "--dir",
            root.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--undeclared",
            undeclared.to_str().unwrap(),
        ]);
        if let Some(fraction) = audit {
            command.env("MEMOSHELVE_AUDIT", fraction);
        }
        in_build_script(&mut command, dir.path())
    };
    let generated = || std::fs::read_to_string(out.join("generated.rs")).unwrap();
    assert_eq!(statuses(&run(None)), ["miss"]);
    // The file changes, the key does not: a plain hit restores the stale file.
    std::fs::write(&undeclared, "// second\n").unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    assert_eq!(statuses(&run(None)), ["cached (disk)"]);
    assert!(generated().contains("first"));
    // Auditing every hit: one warning naming the entry, and the fresh files are kept.
    let audited = run(Some("1"));
    let warned = warnings(&audited);
    assert_eq!(warned.len(), 1, "{audited:?}");
    assert!(warned[0].contains("audit: probe") && warned[0].contains("declare the input"));
    assert!(generated().contains("second"), "the fresh result was not kept");
    // Now cache and inputs agree: an audited hit finds nothing.
    let again = run(Some("1"));
    assert!(warnings(&again).is_empty(), "{again:?}");
    assert!(generated().contains("second"));
    assert_eq!(statuses(&run(None)), ["cached (disk)"]);
}

#[test]
fn the_audit_finds_an_undeclared_input_of_a_value_and_samples_by_fraction() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let undeclared = dir.path().join("undeclared.bin");
    std::fs::write(&undeclared, [1u8]).unwrap();
    let counter = dir.path().join("counter");
    let call = |audit: &str| {
        in_build_script(
            probe(&[
                "call",
                "--dir",
                root.to_str().unwrap(),
                "--count",
                "40",
                "--undeclared",
                undeclared.to_str().unwrap(),
            ])
            .env("MEMOSHELVE_AUDIT", audit)
            .env("PROBE_COUNTER", &counter),
            dir.path(),
        )
    };
    call("0");
    assert_eq!(crate::counted(&counter), 40);
    // Deterministic values: auditing recomputes, compares and warns about nothing.
    let audited = call("1");
    assert!(warnings(&audited).is_empty(), "{audited:?}");
    assert_eq!(crate::counted(&counter), 80, "every hit was recomputed");
    // A fraction audits a share of hits (40 draws at 0.5: none or all is a 1-in-10^12 event).
    call("0.5");
    let audited = crate::counted(&counter) - 80;
    assert!(audited > 0 && audited < 40, "{audited} of 40 audited at 0.5");
    // The undeclared input changes: every audited entry warns once and takes the fresh value.
    std::fs::write(&undeclared, [2u8]).unwrap();
    let output = call("1");
    assert_eq!(warnings(&output).len(), 40, "{output:?}");
    let first_bytes_fresh = call("0");
    assert!(warnings(&first_bytes_fresh).is_empty());
    let checksums_before: Vec<&str> = output
        .iter()
        .filter(|l| !l.starts_with("cargo:"))
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    let checksums_after: Vec<&str> = first_bytes_fresh
        .iter()
        .filter(|l| !l.starts_with("cargo:"))
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(checksums_before, checksums_after, "the fresh values were stored");
}
