//! What must hold across processes: disk hits, stable keys, one computation per key under a lock.

use crate::{cli_binary, counted, lines, probe, statuses};

#[test]
fn a_fresh_process_hits_the_disk_tier() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    for size in ["16", "200000"] {
        let first = lines(probe(&["call", "--dir", root, "--size", size, "--times", "2"]));
        assert_eq!(statuses(&first), ["miss", "cached (mem)"]);
        let second = lines(probe(&["call", "--dir", root, "--size", size]));
        assert_eq!(statuses(&second), ["cached (disk)"]);
        // Same checksum printed by both processes (the probe also asserts the exact value).
        assert_eq!(first[0], second[0].replace("cached (disk)", "miss"));
    }
}

#[test]
fn keys_are_the_same_in_every_process() {
    let key = |extra: &[&str]| {
        let mut args = vec!["key", "--arg", "42"];
        args.extend_from_slice(extra);
        lines(probe(&args)).remove(0)
    };
    let first = key(&[]);
    assert_eq!(first.len(), 64);
    assert_eq!(first, key(&[]));
    assert_ne!(first, key(&["--version", "2"]));
    assert_ne!(first, key(&["--name", "other"]));
}

#[test]
fn without_races_one_process_computes_and_the_others_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("computed");
    let root = dir.path().join("cache");
    let children: Vec<_> = (0..4)
        .map(|_| {
            probe(&["call", "--dir", root.to_str().unwrap(), "--no-race", "--size", "5000"])
                .env("PROBE_COUNTER", &counter)
                .env("PROBE_SLEEP_MS", "300")
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut seen = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        seen.extend(statuses(
            &String::from_utf8(output.stdout)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        ));
    }
    assert_eq!(counted(&counter), 1, "the key was computed more than once: {seen:?}");
    assert_eq!(seen.iter().filter(|status| *status == "miss").count(), 1);
    assert_eq!(seen.iter().filter(|status| *status == "cached (disk)").count(), 3);
}

#[test]
fn a_file_step_hit_in_a_fresh_process_replays_its_directives() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("computed");
    let out = dir.path().join("out");
    let root = dir.path().join("cache");
    let run = || {
        lines(
            probe(&["outputs", "--dir", root.to_str().unwrap(), "--out", out.to_str().unwrap()])
                .env("OUT_DIR", &out)
                .env("CARGO_MANIFEST_DIR", dir.path())
                .env("PROBE_COUNTER", &counter),
        )
    };
    std::fs::create_dir_all(&out).unwrap();
    let first = run();
    assert!(first.contains(&"cargo:rustc-link-lib=probe".to_owned()), "{first:?}");
    assert!(first.last().unwrap().ends_with("miss"), "{first:?}");
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let second = run();
    assert!(second.last().unwrap().ends_with("cached (disk)"), "{second:?}");
    assert!(
        second.contains(&"cargo:rustc-link-lib=probe".to_owned()),
        "the hit did not replay: {second:?}"
    );
    assert_eq!(counted(&counter), 1);
    assert_eq!(
        std::fs::read_to_string(out.join("generated.rs")).unwrap(),
        "pub const ARG: u64 = 7;\n"
    );
}

#[test]
fn directives_a_step_prints_itself_are_forwarded_once_and_replayed_on_a_hit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let root = dir.path().join("cache");
    let run = || {
        std::fs::create_dir_all(&out).unwrap();
        let output = lines(
            probe(&[
                "outputs",
                "--print",
                "--dir",
                root.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .env("OUT_DIR", &out)
            .env("CARGO_MANIFEST_DIR", dir.path()),
        );
        std::fs::remove_dir_all(&out).unwrap();
        output
    };
    let count =
        |lines: &[String], wanted: &str| lines.iter().filter(|line| *line == wanted).count();
    let first = run();
    assert!(first.last().unwrap().ends_with("miss"), "{first:?}");
    assert_eq!(
        count(&first, "cargo:rustc-link-lib=printed"),
        1,
        "not forwarded exactly once: {first:?}"
    );
    assert_eq!(count(&first, "cargo:rustc-link-lib=probe"), 1, "{first:?}");
    assert_eq!(count(&first, "generator chatter"), 1, "{first:?}");
    let second = run();
    assert!(second.last().unwrap().ends_with("cached (disk)"), "{second:?}");
    assert_eq!(
        count(&second, "cargo:rustc-link-lib=printed"),
        1,
        "the printed directive was not replayed: {second:?}"
    );
    assert_eq!(count(&second, "cargo:rustc-link-lib=probe"), 1, "{second:?}");
    // Cargo keeps every line in its `output` file: a hit gives it the chatter too, once.
    assert_eq!(count(&second, "generator chatter"), 1, "every line is replayed: {second:?}");
}

#[test]
fn stats_counts_the_hits_of_concurrent_processes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let root_arg = root.to_str().unwrap();
    // Five entries, then eight processes that each hit all five from disk at the same time.
    lines(probe(&["call", "--dir", root_arg, "--arg", "1", "--count", "5", "--size", "3000"]));
    let children: Vec<_> = (0..8)
        .map(|_| {
            probe(&["call", "--dir", root_arg, "--arg", "1", "--count", "5", "--size", "3000"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        assert_eq!(
            text.lines().filter(|line| line.ends_with("cached (disk)")).count(),
            5,
            "{text}"
        );
    }
    let output = std::process::Command::new(cli_binary())
        .args(["memoshelve", "--dir", root_arg, "stats", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(stats["hits"], 40, "{stats}");
    assert_eq!(stats["names"]["probe"]["misses"], 5, "{stats}");
}

/// `compact` folds the event files of processes that have ended into `events.log` (same counts,
/// one line per entry and kind) and leaves a running process's file, which it still writes to.
#[test]
fn compaction_folds_the_events_of_ended_processes_and_not_of_a_running_one() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let root_arg = root.to_str().unwrap();
    let call = ["call", "--dir", root_arg, "--arg", "1", "--count", "5", "--size", "3000"];
    lines(probe(&call)); // 5 misses
    for _ in 0..3 {
        lines(probe(&call)); // 5 disk hits each
    }
    let mut running = probe(&[&call[..], &["--hold"]].concat())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(running.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "holding" {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the probe ended before holding");
    }
    let events = || std::fs::read_dir(root.join("events")).unwrap().count();
    assert_eq!(events(), 5, "one event file per process that had an event");
    let stats = |args: &[&str]| -> serde_json::Value {
        let output = std::process::Command::new(cli_binary())
            .args([&["memoshelve", "--dir", root_arg][..], args, &["--json"]].concat())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    assert_eq!(stats(&["stats"])["hits"], 20);
    let done = stats(&["compact"]);
    assert_eq!(done["events_before"], 20, "the ended processes' lines: {done}");
    assert_eq!(done["events_after"], 10, "5 entries, each with misses and disk hits: {done}");
    assert_eq!(events(), 1, "the running process keeps its file");
    let after = stats(&["stats"]);
    assert_eq!(
        (after["hits"].clone(), after["names"]["probe"]["misses"].clone()),
        (20.into(), 5.into()),
        "{after}"
    );
    drop(running.stdin.take());
    assert!(running.wait().unwrap().success());
    // Once it has ended, its events are folded too, and counted once.
    let done = stats(&["compact"]);
    assert_eq!(
        (done["events_before"].clone(), done["events_after"].clone()),
        (15.into(), 10.into())
    );
    assert_eq!(events(), 0);
    let after = stats(&["stats"]);
    assert_eq!(
        (after["hits"].clone(), after["names"]["probe"]["misses"].clone()),
        (20.into(), 5.into()),
        "{after}"
    );
    let log = std::fs::read_to_string(root.join("events.log")).unwrap();
    assert_eq!(log.lines().filter(|line| !line.starts_with('#')).count(), 10, "{log}");
}

#[test]
fn explain_names_the_env_var_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let root_arg = root.to_str().unwrap();
    lines(probe(&["call", "--dir", root_arg, "--env", "PROBE_FLAVOUR"]));
    std::thread::sleep(std::time::Duration::from_millis(5)); // distinct creation milliseconds
    lines(
        probe(&["call", "--dir", root_arg, "--env", "PROBE_FLAVOUR"]).env("PROBE_FLAVOUR", "spicy"),
    );
    let output = std::process::Command::new(cli_binary())
        .args(["memoshelve", "--dir", root_arg, "explain", "probe", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let changes = report["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{report}");
    assert_eq!(changes[0]["part"], "env PROBE_FLAVOUR");
    assert_eq!(changes[0]["after"], "spicy");
    assert!(changes[0]["before"].as_str().unwrap().contains("unset"), "{report}");
}

#[test]
fn compacting_while_other_processes_write_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let root_arg = root.to_str().unwrap().to_owned();
    // Three writers, 60 new entries each, slowed down so that compactions overlap their writes.
    let mut writers: Vec<_> = (0..3)
        .map(|writer| {
            let first = (1000 * (writer + 1)).to_string();
            probe(&["call", "--dir", &root_arg, "--arg", &first, "--count", "60", "--size", "3000"])
                .env("PROBE_SLEEP_MS", "3")
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let cli = cli_binary();
    // Compact over and over until every writer is done (at least three times).
    let mut compactions = 0;
    loop {
        let output = std::process::Command::new(&cli)
            .args(["memoshelve", "--dir", &root_arg, "compact", "--json"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        compactions += 1;
        let mut running = 0;
        for writer in &mut writers {
            running += usize::from(writer.try_wait().unwrap().is_none());
        }
        if running == 0 && compactions >= 3 {
            break;
        }
    }
    for mut writer in writers {
        assert!(writer.wait().unwrap().success());
    }
    // Every entry every writer stored is there and intact.
    let verify = std::process::Command::new(&cli)
        .args(["memoshelve", "--dir", &root_arg, "verify"])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    for writer in 0..3 {
        let first = (1000 * (writer + 1)).to_string();
        let output = lines(probe(&[
            "call", "--dir", &root_arg, "--arg", &first, "--count", "60", "--size", "3000",
        ]));
        assert_eq!(statuses(&output), ["cached (disk)"; 60], "writer {writer} lost entries");
    }
}
