//! The CLI as users run it: `cargo-memoshelve memoshelve ...` and `cargo memoshelve ...`.

use std::path::Path;
use std::process::{Command, Output};

/// The CLI with none of the caller's cache or target-dir settings.
fn bin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-memoshelve"));
    command
        .env_remove("MEMOSHELVE_DIR")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR");
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
    let note = String::from_utf8_lossy(&output.stderr);
    assert!(note.contains("default: $HOME/.cache"), "path says why on stderr: {note}");
    // -q (as the README's CI recipe uses it): the path alone.
    let quiet = bin()
        .args(["memoshelve", "path", "-q"])
        .env_remove("XDG_CACHE_HOME")
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(Path::new(stdout(&quiet).trim_end()), dir.path().join(".cache/memoshelve"));
    assert!(quiet.stderr.is_empty(), "{}", String::from_utf8_lossy(&quiet.stderr));
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
fn the_full_tool_runs_alone_and_the_front_says_when_it_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let alone = Command::new(env!("CARGO_BIN_EXE_memoshelve"))
        .args(["path", "--dir"])
        .arg(dir.path())
        .env_remove("MEMOSHELVE_DIR")
        .output()
        .unwrap();
    assert_eq!(stdout(&alone).trim_end(), dir.path().to_str().unwrap());

    // A front copied without the full tool beside it names what to reinstall.
    let front = dir.path().join("cargo-memoshelve");
    // Copied by another process: a copy written here could be held open for writing by a
    // child another test thread is forking at that moment, and exec'ing it would then fail
    // with "Text file busy" (ETXTBSY).
    let copied = Command::new("cp")
        .arg(env!("CARGO_BIN_EXE_cargo-memoshelve"))
        .arg(&front)
        .status()
        .unwrap();
    assert!(copied.success());
    let missing = Command::new(&front).args(["memoshelve", "list"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains(&dir.path().join("memoshelve").display().to_string())
            && stderr.contains("cargo install cargo-memoshelve"),
        "{stderr}"
    );
}

#[test]
fn help_explains_and_usage_errors_exit_2() {
    let help = stdout(&bin().args(["memoshelve", "--help"]).output().unwrap());
    assert!(help.contains("path") && help.contains("MEMOSHELVE_DIR"), "{help}");
    let wrong = bin().args(["memoshelve", "no-such-command"]).output().unwrap();
    assert_eq!(wrong.status.code(), Some(2));
}

/// A cache with two names: `alpha` (three values, one large) and `beta` (a file step, two files).
fn sample_cache(root: &Path) {
    let alpha = memoshelve_build::Memo::new("alpha").dir(root).mem_capacity(0);
    alpha.call(&1, || "one".to_owned());
    alpha.call(&2, || "two".to_owned());
    alpha.call(&3, || "x".repeat(50_000));
    let out = root.parent().unwrap().join("out");
    memoshelve_build::Memo::new("beta").dir(root).outputs(&out).call(&(), |step| {
        std::fs::write(step.dir().join("a.rs"), "pub const A: u8 = 1;").unwrap();
        std::fs::write(step.dir().join("b.bin"), vec![7u8; 20_000]).unwrap();
    });
}

fn cli(root: &Path, args: &[&str]) -> Output {
    bin().arg("memoshelve").arg("--dir").arg(root).args(args).output().unwrap()
}

fn json(root: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&stdout(&cli(root, &all))).unwrap()
}

#[test]
fn list_shows_every_entry_filters_and_sorts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    sample_cache(&root);
    let all = json(&root, &["list"]);
    let rows = all.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows.iter().filter(|row| row["name"] == "alpha").count(), 3);
    let beta = rows.iter().find(|row| row["name"] == "beta").unwrap();
    assert_eq!(beta["files"], 2);
    assert!(beta["bytes"].as_u64().unwrap() >= 20_000);
    assert_eq!(json(&root, &["list", "--name", "beta"]).as_array().unwrap().len(), 1);
    let by_size = json(&root, &["list", "--sort", "size"]);
    let sizes: Vec<u64> =
        by_size.as_array().unwrap().iter().map(|row| row["bytes"].as_u64().unwrap()).collect();
    assert!(sizes.windows(2).all(|pair| pair[0] >= pair[1]), "{sizes:?}");
    let human = stdout(&cli(&root, &["list"]));
    assert!(human.starts_with("NAME"), "{human}");
    assert_eq!(human.lines().count(), 5, "{human}");
    let empty = stdout(&cli(&dir.path().join("empty"), &["list"]));
    assert!(empty.starts_with("no entries"), "{empty}");
}

#[test]
fn show_finds_an_entry_by_key_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    sample_cache(&root);
    let rows = json(&root, &["list", "--name", "beta"]);
    let key = rows[0]["key"].as_str().unwrap().to_owned();
    let shown = json(&root, &["show", &key[..10]]);
    assert_eq!(shown["entry"]["record"]["key"], key.as_str());
    assert_eq!(shown["entry"]["files"].as_array().unwrap().len(), 2);
    let human = stdout(&cli(&root, &["show", &key[..10]]));
    assert!(human.contains("output files:") && human.contains("b.bin"), "{human}");
    let ambiguous = cli(&root, &["show", ""]);
    assert_eq!(ambiguous.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&ambiguous.stderr).contains("give more digits"));
    let unknown = cli(&root, &["show", "zzzz"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no entry"));
}

#[test]
fn stats_counts_disk_hits_and_time_saved() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    sample_cache(&root);
    let alpha = memoshelve_build::Memo::new("alpha").dir(&root).mem_capacity(0);
    for _ in 0..3 {
        assert_eq!(
            alpha.get_with_status::<String, _>(&1).unwrap().1,
            memoshelve_build::Status::Disk
        );
    }
    let stats = json(&root, &["stats"]);
    assert_eq!(stats["entries"], 4);
    assert_eq!(stats["hits"], 3);
    assert_eq!(stats["names"]["alpha"]["hits"], 3);
    assert_eq!(stats["names"]["alpha"]["misses"], 3);
    assert_eq!(stats["names"]["beta"]["entries"], 1);
    let compute_us = json(&root, &["list", "--name", "alpha"])
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["args"] == "1")
        .unwrap()["compute_us"]
        .as_u64()
        .unwrap();
    assert_eq!(stats["saved_us"].as_u64().unwrap(), 3 * compute_us);
    assert!(stats["blob_bytes"].as_u64().unwrap() >= 70_000);
    let human = stdout(&cli(&root, &["stats"]));
    assert!(human.contains("entries:     4") && human.contains("alpha"), "{human}");
}

#[test]
fn verify_finds_injected_damage_and_repair_removes_only_that() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    sample_cache(&root);
    assert_eq!(cli(&root, &["verify"]).status.code(), Some(0));
    // Damage the large alpha value's blob and delete beta's b.bin blob.
    let blobs: Vec<std::path::PathBuf> = walk(&root.join("blobs-b3"));
    let big = blobs.iter().find(|blob| std::fs::metadata(blob).unwrap().len() > 40_000).unwrap();
    std::fs::set_permissions(big, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(big).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(big, bytes).unwrap();
    let b_bin = blobs.iter().find(|blob| std::fs::metadata(blob).unwrap().len() == 20_000).unwrap();
    std::fs::remove_file(b_bin).unwrap();

    let report = cli(&root, &["verify", "--json"]);
    assert_eq!(report.status.code(), Some(1), "damage must make verify fail");
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["checked"], 4);
    let damaged: Vec<&str> = report["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["name"].as_str().unwrap())
        .collect();
    assert_eq!(damaged, ["alpha", "beta"]);
    assert_eq!(cli(&root, &["verify", "--repair"]).status.code(), Some(1));
    assert_eq!(
        cli(&root, &["verify"]).status.code(),
        Some(0),
        "after --repair the cache verifies clean"
    );
    // The good entries are still served.
    let alpha = memoshelve_build::Memo::new("alpha").dir(&root).mem_capacity(0);
    assert_eq!(alpha.get::<String, _>(&1).as_deref(), Some("one"));
    assert_eq!(alpha.get::<String, _>(&3), None);
    assert_eq!(json(&root, &["list"]).as_array().unwrap().len(), 2);
}

/// The record file of an entry, as the format documents it: `index/aa/<hex key>`.
fn record_path(root: &Path, key_hex: &str) -> std::path::PathBuf {
    root.join("index").join(&key_hex[..2]).join(key_hex)
}

/// A record file's bytes with its body replaced and its checksum recomputed: well-formed, so
/// only decoding can find what is wrong.
fn reframed(record: &[u8], body: &[u8]) -> Vec<u8> {
    let mut bytes = record[..12].to_vec();
    bytes.extend_from_slice(body);
    let checksum = blake3::hash(&bytes);
    bytes.extend_from_slice(checksum.as_bytes());
    bytes
}

#[test]
fn verify_finds_truncated_blobs_and_damaged_index_records_and_repair_keeps_the_good_entries() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    sample_cache(&root);
    let gamma = memoshelve_build::Memo::new("gamma").dir(&root).mem_capacity(0);
    gamma.call(&1, || vec![1u8; 30_000]);
    gamma.call(&2, || vec![2u8; 30_000]);
    let store = memoshelve_build::store::Store::open(&root);
    let key_of = |name: &str, args: &str| {
        store.entries(Some(name)).unwrap().into_iter().find(|e| e.record.args == args).unwrap()
    };
    // A truncated blob.
    let blob = store.blob_path(&key_of("gamma", "1").record.blake3).unwrap();
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bytes = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, &bytes[..bytes.len() / 2]).unwrap();
    // alpha 1's record cut short (a disk that lost its tail looks the same).
    let alpha_1 = record_path(&root, &key_of("alpha", "1").record.key);
    let bytes = std::fs::read(&alpha_1).unwrap();
    std::fs::write(&alpha_1, &bytes[..bytes.len() - 5]).unwrap();
    // alpha 2's record well-formed, its content garbage.
    let alpha_2 = record_path(&root, &key_of("alpha", "2").record.key);
    let bytes = std::fs::read(&alpha_2).unwrap();
    std::fs::write(&alpha_2, reframed(&bytes, b"\xff\xff\xff garbage")).unwrap();
    // A file that is no record at all, and a good record filed under another key.
    std::fs::create_dir_all(root.join("index/00")).unwrap();
    std::fs::write(root.join("index/00/stray"), "left by something else").unwrap();
    let alpha_3 = record_path(&root, &key_of("alpha", "3").record.key);
    let elsewhere = record_path(&root, &"ee".repeat(32));
    std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    std::fs::copy(&alpha_3, &elsewhere).unwrap();

    let report = cli(&root, &["verify", "--json"]);
    assert_eq!(report.status.code(), Some(1), "damage must make verify fail");
    let report: serde_json::Value = serde_json::from_slice(&report.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&report.stderr)));
    let problems: Vec<&str> = report["index_damage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["problem"].as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(problems.iter().any(|problem| problem.contains("torn or garbage")), "{problems:?}");
    assert!(problems.iter().any(|problem| problem.contains("unreadable record")), "{problems:?}");
    assert!(
        problems.iter().any(|problem| problem.contains("not a memoshelve record")),
        "{problems:?}"
    );
    assert!(problems.iter().any(|problem| problem.contains("under another name")), "{problems:?}");
    let damaged: Vec<&str> = report["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["name"].as_str().unwrap())
        .collect();
    assert_eq!(damaged, ["gamma"]);
    let human = String::from_utf8(cli(&root, &["verify"]).stdout).unwrap();
    assert!(human.contains("damaged index:") && human.contains("stray"), "{human}");

    assert_eq!(cli(&root, &["verify", "--repair"]).status.code(), Some(1));
    assert_eq!(cli(&root, &["verify"]).status.code(), Some(0), "after --repair it verifies clean");
    assert!(!elsewhere.exists() && alpha_3.exists());
    let alpha = memoshelve_build::Memo::new("alpha").dir(&root).mem_capacity(0);
    assert_eq!(alpha.get::<String, _>(&1), None, "its record was torn");
    assert_eq!(alpha.get::<String, _>(&2), None, "its record was garbage");
    assert_eq!(alpha.get::<String, _>(&3).map(|value| value.len()), Some(50_000));
    assert_eq!(gamma.get::<Vec<u8>, _>(&1), None);
    assert_eq!(gamma.get::<Vec<u8>, _>(&2), Some(vec![2u8; 30_000]));
    assert_eq!(json(&root, &["list"]).as_array().unwrap().len(), 3);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().is_dir() {
            files.extend(walk(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files
}

#[test]
fn clear_needs_yes_off_a_terminal_and_can_target_one_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    sample_cache(&root);
    let refused = bin()
        .arg("memoshelve")
        .arg("--dir")
        .arg(&root)
        .arg("clear")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    assert_eq!(
        json(&root, &["list"]).as_array().unwrap().len(),
        4,
        "a refused clear deleted something"
    );
    let cleared = json(&root, &["clear", "--name", "alpha", "--yes"]);
    assert_eq!(cleared["removed"], 3);
    let left = json(&root, &["list"]);
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["name"], "beta");
    stdout(&cli(&root, &["clear", "--yes"]));
    assert_eq!(json(&root, &["list"]).as_array().unwrap().len(), 0);
    assert!(root.is_dir(), "clear keeps the root itself");
}

#[test]
fn prune_removes_least_recently_used_first_spares_recent_entries_and_frees_space() {
    use std::time::{Duration, SystemTime};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    sample_cache(&root);
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let store = memoshelve_build::store::Store::open(&root);
    for entry in store.entries(None).unwrap() {
        // beta 4 days, alpha "x..." (50 KB) 2 days, alpha "two" 1 day, alpha "one" now.
        let age = match (entry.record.name.as_str(), entry.record.args.as_str()) {
            ("beta", _) => 4 * day,
            (_, "3") => 2 * day,
            (_, "2") => day,
            _ => Duration::ZERO,
        };
        store.set_last_used(&entry, now - age).unwrap();
    }
    // Content is only freed once older than the grace period that protects running builds.
    for blob in walk(&root.join("blobs-b3")) {
        std::fs::File::open(blob).unwrap().set_modified(now - 5 * day).unwrap();
    }
    let args_of = |report: &serde_json::Value| -> Vec<String> {
        report["removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["name"].as_str().unwrap().to_owned())
            .collect()
    };

    let dry = json(&root, &["prune", "--max-size", "0", "--dry-run"]);
    assert_eq!(
        args_of(&dry),
        ["beta", "alpha", "alpha"],
        "least recently used first, the fresh one spared"
    );
    assert_eq!(json(&root, &["list"]).as_array().unwrap().len(), 4, "--dry-run deleted something");

    let by_age = json(&root, &["prune", "--max-age", "3d"]);
    assert_eq!(args_of(&by_age), ["beta"]);
    assert!(by_age["freed_bytes"].as_u64().unwrap() >= 20_000, "{by_age}");

    let by_size = json(&root, &["prune", "--max-size", "10KiB"]);
    assert_eq!(
        by_size["removed"].as_array().unwrap().len(),
        1,
        "it must stop once the cache fits: {by_size}"
    );
    assert!(by_size["freed_bytes"].as_u64().unwrap() >= 50_000, "{by_size}");
    assert_eq!(by_size["kept"], 2);
    assert_eq!(cli(&root, &["verify"]).status.code(), Some(0));
    let alpha = memoshelve_build::Memo::new("alpha").dir(&root).mem_capacity(0);
    assert_eq!(alpha.get::<String, _>(&1).as_deref(), Some("one"));
    assert_eq!(alpha.get::<String, _>(&2).as_deref(), Some("two"));
}

#[test]
fn explain_names_the_input_file_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let grammar = dir.path().join("grammar.y");
    std::fs::write(&grammar, "expr: term;").unwrap();
    let memo = || {
        memoshelve_build::Memo::new("gen")
            .dir(&root)
            .input_file(&grammar)
            .env("MEMOSHELVE_TEST_UNSET_VAR")
    };
    memo().call(&(), || 1u8);
    // Creation times are in milliseconds: make sure the second entry is the newer one.
    std::thread::sleep(std::time::Duration::from_millis(5));
    std::fs::write(&grammar, "expr: term '+' term;").unwrap();
    memo().call(&(), || 2u8);
    let report = json(&root, &["explain", "gen"]);
    let changes = report["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{report}");
    assert!(
        changes[0]["part"].as_str().unwrap().starts_with("file ")
            && changes[0]["part"].as_str().unwrap().ends_with("grammar.y")
    );
    assert_eq!(changes[0]["before"], blake3::hash(b"expr: term;").to_hex().as_str());
    assert_eq!(changes[0]["after"], blake3::hash(b"expr: term '+' term;").to_hex().as_str());
    assert_eq!(report["unchanged"], 3, "env var, version and value type: {report}");
    let human = stdout(&cli(&root, &["explain", "gen"]));
    assert!(human.contains("changed") && human.contains("grammar.y"), "{human}");
    let single = cli(&root, &["explain", "nothing-here"]);
    assert_eq!(single.status.code(), Some(1));
}

#[test]
fn compact_drops_unreferenced_content_and_keeps_live_entries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    sample_cache(&root);
    let gamma = memoshelve_build::Memo::new("gamma").dir(&root).mem_capacity(0);
    // 40 overwrites of one key (each a 5 KB blob) and a removed entry leave unreferenced blobs.
    for round in 0..40u8 {
        gamma.put(&"k", &vec![round; 5000]).unwrap();
    }
    // (Bytes no overwrite had: equal bytes would share one blob, content-addressed.)
    gamma.put(&"gone", &vec![200u8; 5000]).unwrap();
    assert!(gamma.uncache::<Vec<u8>, _>(&"gone").unwrap());
    let alpha = memoshelve_build::Memo::new("alpha").dir(&root).mem_capacity(0);
    for _ in 0..5 {
        assert!(alpha.get::<String, _>(&1).is_some());
    }
    let before = json(&root, &["list"]);
    let stats_before = json(&root, &["stats"]);
    let done = json(&root, &["compact"]);
    // This process is still running and writing its event file: compaction leaves it alone
    // (tests/e2e/processes.rs folds the files of ended processes), and the counts stay.
    assert_eq!((done["events_before"].as_u64(), done["events_after"].as_u64()), (Some(0), Some(0)));
    assert_eq!(std::fs::read_dir(root.join("events")).unwrap().count(), 1);
    let stats_after = json(&root, &["stats"]);
    assert_eq!(stats_after["names"]["alpha"]["hits"], 5);
    assert_eq!(stats_after["names"]["alpha"], stats_before["names"]["alpha"]);
    assert_eq!(stats_after["names"]["gamma"]["misses"], 0, "puts are not misses");
    // Records are replaced whole: the index has no history, nothing of it to drop.
    assert_eq!(done["index_after"], done["index_before"], "{done}");
    assert_eq!(done["freed_files"], 40, "39 overwritten values and the removed one: {done}");
    assert!(done["freed_bytes"].as_u64().unwrap() >= 40 * 5000);
    assert_eq!(cli(&root, &["verify"]).status.code(), Some(0));
    assert_eq!(gamma.get::<Vec<u8>, _>(&"k"), Some(vec![39u8; 5000]));
    assert_eq!(alpha.get::<String, _>(&3).map(|text| text.len()), Some(50_000));
    // Same entries, same last-use times.
    let after = json(&root, &["list"]);
    let last_used = |rows: &serde_json::Value| -> Vec<(String, u64)> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|row| (row["key"].to_string(), row["last_used_ms"].as_u64().unwrap()))
            .collect()
    };
    assert_eq!(last_used(&after).len(), 5);
    assert_eq!(
        last_used(&before).into_iter().filter(|(key, _)| !key.is_empty()).count(),
        5,
        "the uncached entry was already gone from listings"
    );
    for (key, used) in last_used(&after) {
        let old = last_used(&before).into_iter().find(|(old_key, _)| *old_key == key).unwrap().1;
        // `get` above refreshed two entries; the others keep their time exactly.
        assert!(used >= old, "{key}: {used} < {old}");
    }
    // A second compaction has nothing left to do.
    let again = json(&root, &["compact"]);
    assert_eq!(again["freed_files"], 0);
    assert_eq!(again["index_before"], again["index_after"]);
}

#[test]
fn compact_backup_first_writes_every_entry_to_an_archive_restore_reads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    sample_cache(&root);
    let archive = dir.path().join("before-compact.tar.zst");
    let done = json(&root, &["compact", "--backup", archive.to_str().unwrap()]);
    assert_eq!(done["backup"]["entries"], 4, "{done}");
    assert!(done["index_after"].is_u64(), "{done}");
    let fresh = dir.path().join("fresh");
    let restored = json(&fresh, &["restore", archive.to_str().unwrap()]);
    assert_eq!(restored["entries"], 4);
    let alpha = memoshelve_build::Memo::new("alpha").dir(&fresh).mem_capacity(0);
    assert_eq!(alpha.get::<String, _>(&3).map(|text| text.len()), Some(50_000));
    // An archive that cannot be written stops the compaction before it starts.
    let unwritable = dir.path().join("no-such-dir/x.tar.zst");
    let failed = cli(&root, &["compact", "--backup", unwritable.to_str().unwrap()]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("no-such-dir"));
}

#[test]
fn upgrade_drops_entries_of_other_formats_and_they_are_never_misread() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let memo = memoshelve_build::Memo::new("old").dir(&root).mem_capacity(0);
    // Two entries, then marked as if another memoshelve version had written them (format 2).
    for args in ["read", "upgraded"] {
        memo.put(&args, &"current".to_owned()).unwrap();
        let path = record_path(&root, &memo.key_for::<String, _>(&args).unwrap().to_hex());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
    }
    // And cacache's index, where formats 1 and 2 kept their records (a bucket line as cacache
    // 13 wrote it; nothing reads it any more, so its hash does not matter).
    let bucket = root.join("index-v5/3a/5f/0c1d");
    std::fs::create_dir_all(bucket.parent().unwrap()).unwrap();
    let line = r#"{"key":"memoshelve/v1/legacy/abc","integrity":"sha1-bWVtb3NoZWx2ZS1uby1jb250ZW50","time":1,"size":3,"metadata":{"format":2},"raw_metadata":null}"#;
    std::fs::write(&bucket, format!("\n{}\t{line}", "0".repeat(64))).unwrap();

    // The library never reads another format as the current one: a miss, which leaves the
    // entry for `upgrade` to drop.
    assert_eq!(memo.get::<String, _>(&"read"), None);
    let report = json(&root, &["upgrade"]);
    let dropped: Vec<&str> =
        report["dropped"].as_array().unwrap().iter().map(|key| key.as_str().unwrap()).collect();
    assert_eq!(dropped.len(), 3, "{report}");
    assert_eq!(dropped.iter().filter(|line| line.contains("(format 2)")).count(), 2, "{report}");
    assert!(dropped.iter().any(|line| line.starts_with("legacy/abc")), "{report}");
    assert!(!root.join("index-v5").exists(), "cacache's index was kept");
    assert_eq!(report["format"], memoshelve_build::FORMAT_VERSION);
    assert_eq!(
        json(&root, &["upgrade"])["dropped"].as_array().unwrap().len(),
        0,
        "a second upgrade finds nothing"
    );
    assert_eq!(memo.get::<String, _>(&"upgraded"), None);
    assert_eq!(memo.call(&"upgraded", || "recomputed".to_owned()), "recomputed");
    assert_eq!(memo.get::<String, _>(&"upgraded").as_deref(), Some("recomputed"));

    // A record of a newer format belongs to a newer memoshelve sharing the root: `upgrade`
    // keeps it, and `compact`, which cannot tell its blobs, refuses rather than delete them.
    memo.put(&"newer", &"x".repeat(5000)).unwrap();
    let path = record_path(&root, &memo.key_for::<String, _>(&"newer").unwrap().to_hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&(memoshelve_build::FORMAT_VERSION + 1).to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(json(&root, &["upgrade"])["dropped"].as_array().unwrap().len(), 0);
    assert!(path.is_file(), "upgrade dropped a newer format's record");
    let blobs = walk(&root.join("blobs-b3")).len();
    let refused = cli(&root, &["compact"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("newer"), "{refused:?}");
    assert_eq!(walk(&root.join("blobs-b3")).len(), blobs, "compact deleted a newer entry's blob");
}

#[test]
fn backup_clear_restore_round_trips_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    sample_cache(&root);
    let archive = dir.path().join("cache.tar.zst");
    let listed_before = json(&root, &["list"]);
    let written = json(&root, &["backup", archive.to_str().unwrap()]);
    assert_eq!(written["entries"], 4);
    stdout(&cli(&root, &["clear", "--yes"]));
    assert_eq!(json(&root, &["list"]).as_array().unwrap().len(), 0);

    let restored = json(&root, &["restore", archive.to_str().unwrap()]);
    assert_eq!(restored["entries"], 4);
    let listed_after = json(&root, &["list"]);
    let keys_and_use = |rows: &serde_json::Value| -> Vec<(String, u64, u64)> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|row| {
                (
                    row["key"].to_string(),
                    row["bytes"].as_u64().unwrap(),
                    row["last_used_ms"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        keys_and_use(&listed_after),
        keys_and_use(&listed_before),
        "entries, sizes and last use survive"
    );
    assert_eq!(cli(&root, &["verify"]).status.code(), Some(0));
    let alpha = memoshelve_build::Memo::new("alpha").dir(&root).mem_capacity(0);
    assert_eq!(alpha.get::<String, _>(&3), Some("x".repeat(50_000)));
    // The file step restores its files byte-identically from the restored cache.
    let out = dir.path().join("out-again");
    let (_, status) = memoshelve_build::Memo::new("beta")
        .dir(&root)
        .outputs(&out)
        .call_with_status(&(), |_| -> () { unreachable!("a restored file step must not run") });
    assert_eq!(status, memoshelve_build::Status::Disk);
    assert_eq!(std::fs::read(out.join("b.bin")).unwrap(), vec![7u8; 20_000]);

    // Restoring into a cache that has entries needs --merge.
    let refused = cli(&root, &["restore", archive.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--merge"));
    assert_eq!(json(&root, &["restore", "--merge", archive.to_str().unwrap()])["entries"], 4);
}

#[test]
fn backup_used_since_exports_only_recently_used_entries() {
    use std::time::{Duration, SystemTime};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    sample_cache(&root);
    let store = memoshelve_build::store::Store::open(&root);
    for entry in store.entries(Some("alpha")).unwrap() {
        store.set_last_used(&entry, SystemTime::now() - Duration::from_secs(10 * 86_400)).unwrap();
    }
    let archive = dir.path().join("recent.tar.zst");
    let written = json(&root, &["backup", "--used-since", "1d", archive.to_str().unwrap()]);
    assert_eq!(written["entries"], 1, "only beta was used in the last day: {written}");
    let other = dir.path().join("other");
    let restored = json(&other, &["restore", archive.to_str().unwrap()]);
    assert_eq!(restored["entries"], 1);
    assert_eq!(json(&other, &["list"])[0]["name"], "beta");
}

/// A tar.zst with one member, written with raw header bytes (tar's own builder refuses `..`).
fn crafted_archive(
    path: &Path,
    member: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut header = tar::Header::new_gnu();
    let name = &mut header.as_old_mut().name;
    name[..member.len()].copy_from_slice(member.as_bytes());
    header.set_entry_type(kind);
    if let Some(link) = link {
        let link_name = &mut header.as_old_mut().linkname;
        link_name[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let encoder = zstd::Encoder::new(std::fs::File::create(path).unwrap(), 3).unwrap();
    let mut builder = tar::Builder::new(encoder);
    builder.append(&header, data).unwrap();
    builder.into_inner().unwrap().finish().unwrap();
}

#[test]
fn restore_refuses_archives_that_escape_the_root_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let hex = blake3::hash(b"payload").to_hex().to_string();
    let cases: [(&str, tar::EntryType, Option<&str>, &[u8]); 5] = [
        ("../escaped", tar::EntryType::Regular, None, b"payload"),
        ("memoshelve-backup/../../escaped", tar::EntryType::Regular, None, b"payload"),
        ("/tmp/memoshelve-escaped-absolute", tar::EntryType::Regular, None, b"payload"),
        ("memoshelve-backup/blobs/link", tar::EntryType::Symlink, Some("/etc/passwd"), b""),
        // A blob whose bytes are not what its name says.
        (&format!("memoshelve-backup/blobs/{hex}"), tar::EntryType::Regular, None, b"tampered"),
    ];
    for (index, (member, kind, link, data)) in cases.iter().enumerate() {
        let archive = dir.path().join(format!("crafted-{index}.tar.zst"));
        crafted_archive(&archive, member, *kind, *link, data);
        let output = cli(&root, &["restore", archive.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{member}: {stderr}");
        assert!(stderr.contains("nothing was added"), "{member}: {stderr}");
    }
    assert!(!dir.path().join("escaped").exists());
    assert!(!Path::new("/tmp/memoshelve-escaped-absolute").exists());
    assert_eq!(json(&root, &["list"]).as_array().unwrap().len(), 0);
    assert!(
        !root.join("blobs-b3").exists() || walk(&root.join("blobs-b3")).is_empty(),
        "a refused archive left blobs"
    );
}

#[test]
fn progress_stays_off_pipes_and_commands_work_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    sample_cache(&root);
    // Piped (as in scripts and CI): no progress output at all.
    let piped = cli(&root, &["verify"]);
    assert_eq!(piped.status.code(), Some(0));
    assert!(
        piped.stderr.is_empty(),
        "progress leaked into a pipe: {}",
        String::from_utf8_lossy(&piped.stderr)
    );
    // On a terminal (a pty made by `script`): the command works and reports as usual.
    let command = format!(
        "{} memoshelve --dir {} verify",
        env!("CARGO_BIN_EXE_cargo-memoshelve"),
        root.display()
    );
    let terminal = Command::new("script").args(["-qec", &command, "/dev/null"]).output().unwrap();
    let shown = String::from_utf8_lossy(&terminal.stdout);
    assert_eq!(terminal.status.code(), Some(0), "{shown}");
    assert!(shown.contains("checked 4 entries: 0 damaged"), "{shown}");
    // Backup and restore, the other long operations: quiet on pipes, working on a terminal.
    let archive = dir.path().join("b.tar.zst");
    let piped = cli(&root, &["backup", archive.to_str().unwrap()]);
    assert!(piped.status.success() && piped.stderr.is_empty(), "{piped:?}");
    let fresh = dir.path().join("fresh");
    let command = format!(
        "{} memoshelve --dir {} restore {}",
        env!("CARGO_BIN_EXE_cargo-memoshelve"),
        fresh.display(),
        archive.display()
    );
    let terminal = Command::new("script").args(["-qec", &command, "/dev/null"]).output().unwrap();
    let shown = String::from_utf8_lossy(&terminal.stdout);
    assert_eq!(terminal.status.code(), Some(0), "{shown}");
    assert!(shown.contains("restored 4 entries"), "{shown}");
}

/// insta settings for human output: temporary paths, times, ages and measured durations become
/// placeholders, and runs of spaces one column gap (alignment itself is tested on
/// `output::table`, and widths follow the redacted values).
fn human_settings(dir: &Path) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(dir.to_str().unwrap()), "[TMP]");
    settings.add_filter(r"\b\d+[smhd] ago\b", "[AGE]");
    settings.add_filter(r"\b\d+(\.\d+)?(µs|ms|s)\b|\b\d+m\d\ds\b", "[TIME]");
    settings.add_filter(r"\d+(\.\d+)? (B|KiB|MiB) on disk", "[SIZE] on disk");
    settings.add_filter(r" {2,}", "  ");
    settings
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '/' { ch.to_string() } else { format!("\\{ch}") }
        })
        .collect()
}

/// JSON with the numbers that vary from run to run and the temporary dir redacted.
fn redact_json(value: &mut serde_json::Value, dir: &Path) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                // Times, durations, and index sizes (records hold those numbers as text).
                let varies = key.ends_with("_ms")
                    || key.ends_with("_us")
                    || key == "index_bytes"
                    || key == "disk_bytes";
                if varies && value.is_number() {
                    *value = serde_json::Value::String("[redacted]".to_owned());
                } else {
                    redact_json(value, dir);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|item| redact_json(item, dir)),
        serde_json::Value::String(text) => {
            *text = text.replace(dir.to_str().unwrap(), "[TMP]");
        }
        _ => {}
    }
}

/// The documented output of every listing command on a cache made by the library, human and
/// JSON: a change to either shows up as a snapshot diff (`cargo insta review`).
#[test]
fn listing_output_matches_the_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    sample_cache(&root);
    let alpha = memoshelve_build::Memo::new("alpha").dir(&root).mem_capacity(0);
    assert!(alpha.get::<String, _>(&1).is_some(), "one disk hit for the stats");
    // Two entries of one name, created in distinct milliseconds (the clock is polled until it
    // moves), so `explain` has a definite newest one.
    let delta = memoshelve_build::Memo::new("delta").dir(&root);
    let now_ms = || std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_millis();
    delta.call(&("v1", 10), || 1u8);
    let written = now_ms();
    while now_ms() <= written {
        std::thread::yield_now();
    }
    delta.call(&("v1", 11), || 1u8);
    let beta_key = json(&root, &["list", "--name", "beta"])[0]["key"].as_str().unwrap().to_owned();
    let commands: [(&str, Vec<&str>); 6] = [
        ("list", vec!["list", "--sort", "size"]),
        ("show", vec!["show", &beta_key[..12]]),
        ("stats", vec!["stats"]),
        ("verify", vec!["verify"]),
        ("explain", vec!["explain", "delta"]),
        ("path", vec!["path"]),
    ];
    for (name, args) in &commands {
        let human = stdout(&cli(&root, args));
        human_settings(dir.path()).bind(|| insta::assert_snapshot!(format!("{name}-human"), human));
        let mut with_json = args.clone();
        with_json.push("--json");
        let mut value: serde_json::Value =
            serde_json::from_str(&stdout(&cli(&root, &with_json))).unwrap();
        redact_json(&mut value, dir.path());
        insta::assert_json_snapshot!(format!("{name}-json"), value);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 40,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Damaged archives (the committed corpus archive, edited inside its compression): restore
    /// fails cleanly or restores entries that verify; it never panics and never writes outside
    /// the root.
    #[test]
    fn restore_of_a_damaged_archive_never_panics_or_escapes(
        edits in proptest::collection::vec((proptest::prelude::any::<u16>(), proptest::prelude::any::<u8>(), 0u8..3), 1..6),
    ) {
        let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/archive-1.tar.zst");
        let mut tar = zstd::decode_all(std::fs::File::open(seed).unwrap()).unwrap();
        for &(position, byte, kind) in &edits {
            let at = usize::from(position) % (tar.len() + 1);
            match kind {
                0 if at < tar.len() => tar[at] = byte,
                1 => tar.truncate(at),
                _ => tar.insert(at, byte),
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("damaged.tar.zst");
        std::fs::write(&archive, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
        let root = dir.path().join("cache");
        let output = cli(&root, &["restore", archive.to_str().unwrap()]);
        let code = output.status.code();
        proptest::prop_assert!(code == Some(0) || code == Some(1), "{:?}: {}", code, String::from_utf8_lossy(&output.stderr));
        let mut beside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        beside.sort();
        proptest::prop_assert!(beside.iter().all(|name| name == "cache" || name == "damaged.tar.zst"), "{:?}", beside);
        if code == Some(0) {
            proptest::prop_assert_eq!(cli(&root, &["verify"]).status.code(), Some(0));
        }
    }
}

#[test]
fn setup_keeps_the_users_wrapper_and_file_and_undo_gives_them_back() {
    let dir = tempfile::tempdir().unwrap();
    // No cargo-memoshelve on PATH: the wrapper is written as this one's absolute path.
    let empty_path = tempfile::tempdir().unwrap();
    let config = dir.path().join(".cargo/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let original = "# my settings\n[build]\nrustc-wrapper = \"sccache\"\njobs = 2\n";
    std::fs::write(&config, original).unwrap();
    let setup = |extra: &[&str]| {
        let output = bin()
            .args(["memoshelve", "setup", "--json"])
            .args(extra)
            .current_dir(dir.path())
            .env("PATH", empty_path.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let done = setup(&[]);
    assert_eq!(done["changed"], true);
    assert_eq!(done["inner"], "sccache");
    let me = std::path::Path::new(env!("CARGO_BIN_EXE_cargo-memoshelve"));
    assert_eq!(done["wrapper"], me.to_str().unwrap());
    let text = std::fs::read_to_string(&config).unwrap();
    let parsed: toml::Table = text.parse().unwrap();
    assert_eq!(parsed["build"]["rustc-wrapper"].as_str(), me.to_str());
    assert_eq!(parsed["build"]["jobs"].as_integer(), Some(2));
    assert_eq!(parsed["env"]["MEMOSHELVE_RUSTC_WRAPPER"].as_str(), Some("sccache"));
    assert!(text.starts_with("# my settings\n"), "{text}");
    assert_eq!(setup(&[])["changed"], false, "a second setup changes nothing");

    assert_eq!(setup(&["--undo"])["changed"], true);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);

    // Not TOML: an error naming the file, and the file as it was.
    std::fs::write(&config, "[build\n").unwrap();
    let output = bin().args(["memoshelve", "setup"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("config.toml is not valid TOML"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "[build\n");
}

/// The launcher without a record beside it is cargo's `host.runner` (nightly): its first
/// argument is the build script. Switched off it runs the script itself; on, it hands it to the
/// tool beside it, whose runner, outside a build (no `OUT_DIR`), runs it uncached with a warning.
#[test]
#[cfg(unix)]
fn the_launcher_serves_as_a_host_runner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("build-script-build");
    std::fs::write(&script, "#!/bin/sh\necho \"script ran with $*\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let launcher = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_memoshelve-launcher"));
        command.arg(&script).args(["a", "b"]).env_remove("OUT_DIR");
        command
    };
    let off = stdout(&launcher().env("MEMOSHELVE_DISABLE", "1").output().unwrap());
    assert_eq!(off, "script ran with a b\n");
    let on = stdout(&launcher().env_remove("MEMOSHELVE_DISABLE").output().unwrap());
    let lines: Vec<&str> = on.lines().collect();
    assert_eq!(lines.len(), 2, "{on}");
    assert!(lines[0].starts_with("cargo:warning=memoshelve: OUT_DIR is not set"), "{on}");
    assert_eq!(lines[1], "script ran with a b");
}

/// `setup` run in `project`, with HOME and CARGO_HOME (`home/.cargo`) in `home` and PATH as
/// given.
fn setup_in(project: &Path, home: &Path, path: &std::ffi::OsStr, extra: &[&str]) -> Output {
    bin()
        .args(["memoshelve", "setup"])
        .args(extra)
        .current_dir(project)
        .env("HOME", home)
        .env("CARGO_HOME", home.join(".cargo"))
        .env("PATH", path)
        .output()
        .unwrap()
}

fn setup_json(
    project: &Path,
    home: &Path,
    path: &std::ffi::OsStr,
    extra: &[&str],
) -> serde_json::Value {
    let mut with_json = extra.to_vec();
    with_json.push("--json");
    let output = setup_in(project, home, path, &with_json);
    serde_json::from_str(&stdout(&output)).unwrap()
}

fn wrapper_in(config: &Path) -> String {
    let parsed: toml::Table = std::fs::read_to_string(config).unwrap().parse().unwrap();
    parsed["build"]["rustc-wrapper"].as_str().unwrap().to_owned()
}

/// A project's `.cargo/config.toml` is committed: `setup` writes the bare name when the
/// `cargo-memoshelve` first on PATH is the one running, else its absolute path and why.
#[test]
fn setup_writes_the_bare_name_when_this_binary_is_first_on_path_and_says_why() {
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let config = project.path().join(".cargo/config.toml");
    let me = Path::new(env!("CARGO_BIN_EXE_cargo-memoshelve"));
    let bin_dir = me.parent().unwrap().as_os_str();

    // Not on PATH: the absolute path, and a note saying why and how to get the bare name.
    let nothing = tempfile::tempdir().unwrap();
    let done = setup_json(project.path(), home.path(), nothing.path().as_os_str(), &[]);
    assert_eq!(done["wrapper"], me.to_str().unwrap(), "{done}");
    assert_eq!(done["by_name"], false);
    assert_eq!(done["scope"], "project");
    assert!(done["reason"].as_str().unwrap().contains("no cargo-memoshelve is on PATH"), "{done}");
    assert_eq!(wrapper_in(&config), me.to_str().unwrap());

    // On PATH: the bare name replaces the path, and the output says where and why.
    let human = setup_in(project.path(), home.path(), bin_dir, &[]);
    assert!(human.status.success());
    let said = String::from_utf8_lossy(&human.stderr);
    assert!(
        said.contains(&config.display().to_string())
            && said.contains("rustc-wrapper = \"cargo-memoshelve\"")
            && said.contains("by name"),
        "{said}"
    );
    assert!(said.lines().count() <= 2, "one or two lines: {said}");
    assert_eq!(wrapper_in(&config), "cargo-memoshelve");
    let again = setup_json(project.path(), home.path(), bin_dir, &[]);
    assert_eq!((again["changed"].as_bool(), again["by_name"].as_bool()), (Some(false), Some(true)));
    assert_eq!(again["wrapper"], "cargo-memoshelve");

    // Another cargo-memoshelve first on PATH: the bare name would run that one.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(me, other.path().join("cargo-memoshelve")).unwrap();
    let path = std::env::join_paths([other.path().as_os_str(), bin_dir]).unwrap();
    let human = setup_in(project.path(), home.path(), &path, &[]);
    let said = String::from_utf8_lossy(&human.stderr);
    assert!(human.status.success(), "{said}");
    assert!(
        said.contains("note: by absolute path")
            && said.contains(&other.path().join("cargo-memoshelve").display().to_string()),
        "{said}"
    );
    assert_eq!(wrapper_in(&config), me.to_str().unwrap());
}

/// `setup --undo` leaves no trace of a setup in a project that had no cargo config: not an
/// empty file, not an empty `.cargo`; it keeps a `.cargo` holding something else, and
/// `$CARGO_HOME` itself.
#[test]
fn setup_undo_removes_the_file_and_the_dot_cargo_directory_it_created() {
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_cargo-memoshelve")).parent().unwrap().as_os_str();
    let dot_cargo = project.path().join(".cargo");
    let config = dot_cargo.join("config.toml");

    assert_eq!(setup_json(project.path(), home.path(), bin_dir, &[])["changed"], true);
    assert!(config.is_file());
    let undone = setup_json(project.path(), home.path(), bin_dir, &["--undo"]);
    assert_eq!(undone["changed"], true);
    assert!(!config.exists(), "undo left {}", config.display());
    assert!(!dot_cargo.exists(), "undo left an empty {}", dot_cargo.display());
    assert_eq!(undone["removed"].as_array().unwrap().len(), 2, "{undone}");
    let human = setup_in(project.path(), home.path(), bin_dir, &["--undo"]);
    assert!(String::from_utf8_lossy(&human.stderr).contains("nothing to undo"), "{human:?}");

    // A `.cargo` holding something else stays.
    std::fs::create_dir_all(&dot_cargo).unwrap();
    std::fs::write(dot_cargo.join("audit.toml"), "").unwrap();
    setup_json(project.path(), home.path(), bin_dir, &[]);
    setup_json(project.path(), home.path(), bin_dir, &["--undo"]);
    assert!(!config.exists() && dot_cargo.join("audit.toml").is_file());

    // --global: `$CARGO_HOME/config.toml`; undo removes the file, never `$CARGO_HOME`.
    let cargo_home = home.path().join(".cargo");
    std::fs::create_dir_all(&cargo_home).unwrap();
    let global = setup_json(project.path(), home.path(), bin_dir, &["--global"]);
    assert_eq!(global["scope"], "global");
    assert_eq!(wrapper_in(&cargo_home.join("config.toml")), "cargo-memoshelve");
    setup_json(project.path(), home.path(), bin_dir, &["--global", "--undo"]);
    assert!(!cargo_home.join("config.toml").exists());
    assert!(cargo_home.is_dir(), "undo removed CARGO_HOME");
}

/// `prune --max-size` on a cache whose entries were all just used keeps them: it says how many
/// it protected and the option that sets the window.
#[test]
fn prune_says_how_many_recently_used_entries_it_protected_and_how_to_change_that() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    sample_cache(&root);
    let human = stdout(&cli(&root, &["prune", "--max-size", "1KiB", "--dry-run"]));
    assert!(human.contains("0 entries (0 B) would be removed, 4 kept"), "{human}");
    assert!(
        human.contains("4 entries kept though over the limits: used in the last 10m")
            && human.contains("--keep-recent"),
        "{human}"
    );
    let report = json(&root, &["prune", "--max-size", "1KiB", "--dry-run"]);
    assert_eq!(
        (report["protected"].as_u64(), report["keep_recent_s"].as_u64()),
        (Some(4), Some(600))
    );
    let unprotected =
        json(&root, &["prune", "--max-size", "1KiB", "--dry-run", "--keep-recent", "0s"]);
    assert_eq!(unprotected["protected"], 0, "{unprotected}");
    assert!(unprotected["kept_bytes"].as_u64().unwrap() <= 1024, "{unprotected}");
    assert!(!unprotected["removed"].as_array().unwrap().is_empty());
}

/// Transparent mode names a build script's entries `build-script.<package>`: the package name
/// alone finds them, with a note saying so.
#[test]
fn a_package_name_stands_for_its_build_script_entries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let memo = memoshelve_build::Memo::new("build-script.zstd-sys").dir(&root);
    let now_ms = || std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_millis();
    memo.call(&1, || 1u8);
    let written = now_ms();
    while now_ms() <= written {
        std::thread::yield_now();
    }
    memo.call(&2, || 2u8);

    let explained = cli(&root, &["explain", "zstd-sys", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&explained)).unwrap();
    assert_eq!(report["name"], "build-script.zstd-sys");
    let note = String::from_utf8_lossy(&explained.stderr);
    assert!(note.contains("\"build-script.zstd-sys\""), "{note}");
    let human = stdout(&cli(&root, &["explain", "zstd-sys"]));
    assert!(human.starts_with("build-script.zstd-sys: newest"), "{human}");

    assert_eq!(json(&root, &["list", "--name", "zstd-sys"]).as_array().unwrap().len(), 2);
    assert_eq!(json(&root, &["list", "--name", "zstd_sys"]).as_array().unwrap().len(), 2);
    let none = stdout(&cli(&root, &["list", "--name", "zlib-sys"]));
    assert!(none.starts_with("no entries named \"zlib-sys\""), "{none}");
    let cleared = json(&root, &["clear", "--name", "zstd-sys", "--yes"]);
    assert_eq!(
        (cleared["removed"].as_u64(), cleared["name"].as_str()),
        (Some(2), Some("build-script.zstd-sys"))
    );
    assert_eq!(json(&root, &["list"]).as_array().unwrap().len(), 0);
}

/// A count of one reads "1 entry", not "1 entries".
#[test]
fn counts_of_one_are_singular() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    memoshelve_build::Memo::new("solo").dir(&root).call(&1, || "x".repeat(50_000));
    let verified = stdout(&cli(&root, &["verify"]));
    assert_eq!(verified, "checked 1 entry: 0 damaged; 0 damaged index records\n");
    let archive = dir.path().join("one.tar.zst");
    let written = stdout(&cli(&root, &["backup", archive.to_str().unwrap()]));
    assert!(written.starts_with("wrote 1 entry and 1 blob ("), "{written}");
    let restored = stdout(&cli(&dir.path().join("other"), &["restore", archive.to_str().unwrap()]));
    assert!(restored.starts_with("restored 1 entry (1 blob) into"), "{restored}");
    let pruned =
        stdout(&cli(&root, &["prune", "--max-size", "0", "--keep-recent", "0s", "--dry-run"]));
    assert!(pruned.contains("1 entry ("), "{pruned}");
    let cleared = stdout(&cli(&root, &["clear", "--yes"]));
    assert!(cleared.starts_with("deleted the only entry ("), "{cleared}");
}

/// A cache root that is not a directory: the commands say what is there, and an error's cause
/// is printed once.
#[test]
#[cfg(unix)]
fn a_root_that_is_not_a_directory_is_named_and_each_cause_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a cache").unwrap();
    let with_root = |root: &Path, args: &[&str]| {
        bin().arg("memoshelve").args(args).env("MEMOSHELVE_DIR", root).output().unwrap()
    };
    for command in ["list", "stats"] {
        let output = with_root(&file, &[command]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!("{} (from MEMOSHELVE_DIR) is a file", file.display())),
            "{command}: {stderr}"
        );
        assert_eq!(stderr.matches("os error").count(), 0, "{command}: {stderr}");
    }
    let path = with_root(&file, &["path"]);
    let said = String::from_utf8_lossy(&path.stderr);
    assert!(
        said.contains("is a file, not a directory") && !said.contains("does not exist"),
        "{said}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&stdout(&with_root(&file, &["path", "--json"]))).unwrap();
    assert_eq!((report["exists"].as_bool(), report["kind"].as_str()), (Some(true), Some("file")));

    // A dangling symbolic link: named by its target.
    let link = dir.path().join("a-link");
    std::os::unix::fs::symlink(dir.path().join("gone"), &link).unwrap();
    let said = String::from_utf8_lossy(&with_root(&link, &["path"]).stderr).into_owned();
    assert!(
        said.contains(&format!("is a symbolic link to {}", dir.path().join("gone").display())),
        "{said}"
    );
    let listed = with_root(&link, &["list"]);
    assert_eq!(listed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&listed.stderr).contains("symbolic link"), "{listed:?}");

    // A directory that cannot be read (where permissions bind: not as root).
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read_dir(&locked).is_err() {
        let said = String::from_utf8_lossy(&with_root(&locked, &["path"]).stderr).into_owned();
        assert!(said.contains("is a directory that cannot be read"), "{said}");
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Damage inside a root (its index a file): the library's error holds its cause, which
    // comes once.
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("index"), "").unwrap();
    for command in ["list", "stats"] {
        let output = with_root(&root, &[command]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{command}: {stderr}");
        assert_eq!(stderr.matches("Not a directory").count(), 1, "{command}: {stderr}");
    }
}
