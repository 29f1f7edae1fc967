//! Reliability under the conditions of issue 5: concurrent processes, the determinism audit,
//! crashes, full and broken file systems. Figures from these tests go into RELIABILITY.md.

use std::path::Path;

use crate::{in_build_script, lines, probe, statuses, warnings};

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

/// A small deterministic generator for test orders and kill moments (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for index in (1..items.len()).rev() {
            items.swap(index, (self.next() % (index as u64 + 1)) as usize);
        }
    }
}

/// 8 processes x 200 keys (100 shared by all, 100 their own), each in its own random order, every
/// value checked by the probe against the pure function. Returns how often each shared key was
/// computed.
fn eight_processes(no_race: bool) -> std::collections::HashMap<u64, usize> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let counter = dir.path().join("counter");
    let mut rng = Rng(0x5EED ^ u64::from(no_race));
    let children: Vec<_> = (0..8u64)
        .map(|process| {
            let mut args: Vec<u64> =
                (0..100).chain((0..100).map(|n| 1000 * (process + 1) + n)).collect();
            rng.shuffle(&mut args);
            let list = args.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            let mut command = probe(&[
                "call",
                "--dir",
                root.to_str().unwrap(),
                "--args",
                &list,
                "--size",
                "3000",
            ]);
            if no_race {
                command.arg("--no-race");
            }
            command
                .env("PROBE_COUNTER", &counter)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            command.spawn().unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "a process failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        assert_eq!(text.lines().count(), 200, "every call answered");
    }
    let mut computed = std::collections::HashMap::new();
    for line in std::fs::read_to_string(&counter).unwrap().lines() {
        *computed.entry(line.parse::<u64>().unwrap()).or_insert(0) += 1;
    }
    for process in 0..8 {
        for n in 0..100 {
            assert_eq!(
                computed.get(&(1000 * (process + 1) + n)),
                Some(&1),
                "private keys compute once"
            );
        }
    }
    computed.retain(|arg, _| *arg < 100);
    computed
}

#[test]
fn eight_processes_sharing_keys_get_only_right_values_and_without_races_compute_each_once() {
    let racing = eight_processes(false);
    assert_eq!(racing.len(), 100, "every shared key was computed at least once");
    let locked = eight_processes(true);
    assert_eq!(locked.len(), 100);
    let twice: Vec<_> = locked.iter().filter(|(_, count)| **count != 1).collect();
    assert!(
        twice.is_empty(),
        "with allow_race(false) these were computed more than once: {twice:?}"
    );
}

#[test]
fn killing_writers_at_random_moments_never_leaves_a_wrong_value() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let root_arg = root.to_str().unwrap();
    let mut rng = Rng(0xC0FFEE);
    let runs = 100;
    let mut killed_mid_run = 0;
    // Kills are spread over the time an unkilled run takes on this machine (measured, not
    // assumed: faster writes must not make the kills land after the end).
    let calibration = dir.path().join("calibration");
    let started = std::time::Instant::now();
    let finished = probe(&[
        "call",
        "--dir",
        calibration.to_str().unwrap(),
        "--arg",
        "0",
        "--count",
        "3",
        "--size",
        "3145728",
    ])
    .stdout(std::process::Stdio::null())
    .status()
    .unwrap();
    assert!(finished.success());
    let window_ms = (started.elapsed().as_millis() as u64).max(10);
    for run in 0..runs {
        // Three 3 MiB values per run, keys reused across runs: kills hit fresh writes and
        // overwrites of existing entries alike.
        let first = (run % 10) * 3;
        let mut child = probe(&[
            "call",
            "--dir",
            root_arg,
            "--arg",
            &first.to_string(),
            "--count",
            "3",
            "--size",
            "3145728",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.next() % window_ms));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    // A run whose keys an earlier run completed is a few quick hits, which a kill rarely
    // catches: a quarter of the kills landing mid-run (CI has seen 39 and 46 of 100) is the floor
    // below which this test would no longer be testing kills.
    assert!(killed_mid_run >= runs / 4, "only {killed_mid_run} of {runs} kills landed mid-run");
    // Every key: a miss (recomputed) or exactly the right value (the probe checks each one).
    let output = lines(probe(&[
        "call", "--dir", root_arg, "--arg", "0", "--count", "30", "--size", "3145728",
    ]));
    assert_eq!(output.len(), 30);
    let verify = crate::run(std::process::Command::new(crate::cli_binary()).args([
        "memoshelve",
        "verify",
        "--json",
        "--dir",
        root_arg,
    ]));
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report["damaged"].as_array().map(Vec::len), Some(0), "{report}");
    assert_eq!(report["index_damage"].as_array().map(Vec::len), Some(0), "{report}");
    // Stray temporary files of killed writers are what compaction cleans.
    let compacted = crate::run(std::process::Command::new(crate::cli_binary()).args([
        "memoshelve",
        "compact",
        "--json",
        "--dir",
        root_arg,
    ]));
    let compacted: serde_json::Value = serde_json::from_slice(&compacted.stdout).unwrap();
    let leftovers = std::fs::read_dir(root.join("tmp-b3")).map_or(0, |dir| dir.count());
    assert_eq!(leftovers, 0, "temporary files left after compaction: {compacted}");
    let hits = statuses(&output).iter().filter(|status| status.starts_with("cached")).count();
    // The figure RELIABILITY.md reports (`--nocapture` shows it).
    #[allow(clippy::print_stdout)]
    let () = println!(
        "kill -9: {runs} runs, {killed_mid_run} killed mid-run; afterwards {hits} of 30 keys hit, \
         {} missed, 0 wrong values",
        30 - hits
    );
}

/// Runs `shell` in a private mount namespace where `dir` is a tmpfs of `size` (as root or not).
fn with_small_tmpfs(dir: &Path, size: &str, shell: &str) -> std::process::Output {
    std::fs::create_dir_all(dir).unwrap();
    let script = format!("mount -t tmpfs -o size={size} tmpfs '{}' && {shell}", dir.display());
    std::process::Command::new("unshare")
        .args(["--mount", "--map-root-user", "sh", "-c", &script])
        .output()
        .unwrap()
}

#[test]
fn a_full_file_system_still_returns_every_value_with_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("small");
    let probe_bin = env!("CARGO_BIN_EXE_memoshelve-probe");
    // 1 MiB of room: small values fit, 400 KiB values fill it after two.
    let shell = format!(
        "cd '{}' && OUT_DIR=. CARGO_MANIFEST_DIR=. HOST=x86_64-unknown-linux-gnu {probe_bin} call --dir '{}/cache' --count 6 --size 409600 && \
         OUT_DIR=. CARGO_MANIFEST_DIR=. HOST=x86_64-unknown-linux-gnu {probe_bin} call --dir '{}/cache' --count 6 --size 409600 && \
         OUT_DIR=. CARGO_MANIFEST_DIR=. HOST=x86_64-unknown-linux-gnu {probe_bin} call --dir '{}/cache' --arg 100 --count 3",
        dir.path().display(),
        root.display(),
        root.display(),
        root.display()
    );
    let output = with_small_tmpfs(&root, "1m", &shell);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    let values: Vec<&String> = lines.iter().filter(|line| !line.starts_with("cargo:")).collect();
    assert_eq!(values.len(), 15, "every call returned its (checked) value: {stdout}");
    let warned = warnings(&lines);
    assert!(
        !warned.is_empty() && warned.len() <= 2,
        "one warning per process that could not write: {warned:?}"
    );
    assert!(
        warned.iter().all(|warning| warning.contains("No space left") || warning.contains("space")),
        "{warned:?}"
    );
    // Once the big values are out of the way, small values are cached again: the cache keeps working.
    assert!(
        statuses(&lines).iter().filter(|status| status.as_str() == "cached (disk)").count() >= 2,
        "{stdout}"
    );
}

#[test]
fn a_blob_that_cannot_be_read_is_a_miss_with_one_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let root_arg = root.to_str().unwrap();
    // The same compiler identity for root and nobody (rustup's rustc is not nobody's to run).
    let same_rustc = |command: &mut std::process::Command| {
        command.env("RUSTC", "/bin/echo");
    };
    let mut first = probe(&["call", "--dir", root_arg, "--count", "3", "--size", "5000"]);
    same_rustc(&mut first);
    in_build_script(&mut first, dir.path());
    // Everyone may use the cache, except that one blob is readable by nobody but its owner.
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    mode(dir.path(), 0o777);
    for entry in walk(&root) {
        mode(&entry, if entry.is_dir() { 0o777 } else { 0o666 });
    }
    mode(&root, 0o777);
    let blobs: Vec<_> =
        walk(&root.join("blobs-b3")).into_iter().filter(|path| path.is_file()).collect();
    assert_eq!(blobs.len(), 3);
    mode(&blobs[0], 0o000);
    // Root reads everything, so the reader runs as `nobody` when the tests run as root.
    let as_root = std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
        .unwrap_or(false);
    let mut command = probe(&["call", "--dir", root_arg, "--count", "3", "--size", "5000"]);
    if as_root {
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
        command = std::process::Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program)
            .args(args);
    }
    same_rustc(&mut command);
    let output = in_build_script(&mut command, dir.path());
    let mut statuses = statuses(&output);
    statuses.sort();
    assert_eq!(statuses, ["cached (disk)", "cached (disk)", "miss"], "{output:?}");
    let warned = warnings(&output);
    assert_eq!(warned.len(), 1, "{output:?}");
    assert!(warned[0].contains("denied") || warned[0].contains("ermission"), "{warned:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

#[test]
fn a_lock_whose_holder_was_killed_blocks_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let root_arg = root.to_str().unwrap();
    // All three processes run as build scripts (the build context is part of the key).
    let key = in_build_script(&mut probe(&["key", "--dir", root_arg]), dir.path())[0].clone();
    let lock_file = root.join("locks").join(format!("{key}.lock"));
    // The holder computes for a minute while holding the key's lock.
    let mut holder = probe(&["call", "--dir", root_arg, "--no-race"])
        .env("PROBE_SLEEP_MS", "60000")
        .env("OUT_DIR", dir.path())
        .env("CARGO_MANIFEST_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let held = || {
        std::fs::File::open(&lock_file)
            .is_ok_and(|file| matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !held() {
        assert!(std::time::Instant::now() < deadline, "the holder never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(!held(), "the kernel releases a dead holder's lock");
    // The next process takes the lock at once: no wait, no warning, the value computed.
    let output = in_build_script(
        probe(&["call", "--dir", root_arg, "--no-race"]).env("MEMOSHELVE_LOCK_TIMEOUT", "30"),
        dir.path(),
    );
    assert_eq!(statuses(&output), ["miss"]);
    assert!(warnings(&output).is_empty(), "{output:?}");
}

/// A writer killed (SIGKILL) while it stores a value leaves its temporary file in `tmp-b3/`; the
/// next process's first store deletes it once it has been left alone for a minute (aged here by
/// hand), and not before.
#[cfg(target_os = "linux")]
#[test]
fn a_killed_writers_temporary_file_goes_with_the_next_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let root_arg = root.to_str().unwrap();
    let temporary = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(root.join("tmp-b3"))
            .map(|listing| listing.flatten().map(|item| item.path()).collect())
            .unwrap_or_default()
    };
    let store = |arg: &str| lines(probe(&["call", "--dir", root_arg, "--arg", arg]));
    let mut left = Vec::new();
    for attempt in 0..10 {
        // 64 MiB: its blob takes long enough to write that the kill lands while it does.
        let mut writer = probe(&["call", "--dir", root_arg, "--arg", &attempt.to_string()])
            .args(["--size", "67108864"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while temporary().is_empty() && writer.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        writer.kill().unwrap();
        writer.wait().unwrap();
        left = temporary();
        if !left.is_empty() {
            break;
        }
    }
    assert!(!left.is_empty(), "no kill landed during a store");
    // A young file stays: its writer may be alive in another PID namespace.
    assert_eq!(statuses(&store("1000")), ["miss"]);
    assert_eq!(temporary(), left, "a file younger than a minute was swept");
    let two_minutes_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    for path in &left {
        std::fs::File::open(path).unwrap().set_modified(two_minutes_ago).unwrap();
    }
    assert_eq!(statuses(&store("1001")), ["miss"]);
    assert_eq!(temporary(), Vec::<std::path::PathBuf>::new(), "the killed writer's file stayed");
}
