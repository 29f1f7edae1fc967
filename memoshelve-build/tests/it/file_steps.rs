//! File steps at the library level: what an entry holds (symbolic links, names that are not
//! UTF-8 or are long), which files of the output directory are the step's, a disabled cache,
//! and (in child processes of this test binary, as inside a build script) which directives
//! each entry replays.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use memoshelve_build::{Memo, Status, Step};

/// As after `cargo clean`: the output directory is gone, and cargo makes it again, empty.
fn empty(dir: &Path) {
    fs::remove_dir_all(dir).unwrap();
    fs::create_dir_all(dir).unwrap();
}

/// The names in `dir` (memoshelve's `.memoshelve` left out), as bytes, sorted.
fn names(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().as_bytes().to_owned())
        .filter(|name| name != b".memoshelve")
        .collect();
    names.sort();
    names
}

// `Memo::validate` covers a file step's own value: an entry whose value fails the check is a
// miss, its files are not restored, and the fresh run replaces it.
#[test]
fn a_file_step_whose_value_fails_validation_runs_again() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let runs = AtomicUsize::new(0);
    let step = |step: &mut Step| {
        let run = runs.fetch_add(1, Ordering::SeqCst) as u32 + 1;
        fs::write(step.dir().join("out.txt"), format!("run {run}")).unwrap();
        run
    };
    let memo = Memo::new("it-fs-validate").dir(cache.path()).mem_capacity(0);
    assert_eq!(memo.outputs(out.path()).call_with_status(&(), step), (1, Status::Miss));
    empty(out.path());
    let accepting =
        Memo::new("it-fs-validate").dir(cache.path()).mem_capacity(0).validate(|_: &u32| true);
    assert_eq!(accepting.outputs(out.path()).call_with_status(&(), step), (1, Status::Disk));
    empty(out.path());
    let rejecting = Memo::new("it-fs-validate")
        .dir(cache.path())
        .mem_capacity(0)
        .validate(|run: &u32| *run != 1);
    assert_eq!(rejecting.outputs(out.path()).call_with_status(&(), step), (2, Status::Miss));
    assert_eq!(fs::read_to_string(out.path().join("out.txt")).unwrap(), "run 2");
    empty(out.path());
    assert_eq!(rejecting.outputs(out.path()).call_with_status(&(), step), (2, Status::Disk));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

// 9. A relative symbolic link inside the output directory is restored as a link.
#[test]
fn an_in_tree_symlink_comes_back_as_a_symlink() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let runs = AtomicUsize::new(0);
    let memo = Memo::new("it-fs-link").dir(cache.path()).mem_capacity(0);
    let step = |step: &mut Step| {
        runs.fetch_add(1, Ordering::SeqCst);
        fs::write(step.dir().join("real.txt"), "real\n").unwrap();
        std::os::unix::fs::symlink("real.txt", step.dir().join("link")).unwrap();
    };
    assert_eq!(memo.outputs(out.path()).call_with_status(&(), step).1, Status::Miss);
    empty(out.path());
    assert_eq!(memo.outputs(out.path()).call_with_status(&(), step).1, Status::Disk);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let link = out.path().join("link");
    let meta = fs::symlink_metadata(&link).expect("the link was not restored");
    assert!(meta.file_type().is_symlink(), "restored as a {:?}, not a link", meta.file_type());
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("real.txt"));
    assert_eq!(fs::read_to_string(&link).unwrap(), "real\n");
}

// 9. A symbolic link leaving the output directory is never restored, and nothing is written
// outside it.
#[test]
fn a_symlink_leaving_the_directory_is_not_restored_and_nothing_is_written_outside() {
    let cache = tempfile::tempdir().unwrap();
    let parent = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let runs = AtomicUsize::new(0);
    let memo = Memo::new("it-fs-link-out").dir(cache.path()).mem_capacity(0);
    let absolute = elsewhere.path().join("absolute-target");
    let step = |step: &mut Step| {
        runs.fetch_add(1, Ordering::SeqCst);
        let dir = step.dir();
        fs::write(dir.join("inside.txt"), "inside\n").unwrap();
        std::os::unix::fs::symlink("../x", dir.join("up")).unwrap();
        std::os::unix::fs::symlink(&absolute, dir.join("absolute")).unwrap();
    };
    memo.outputs(&out).call(&(), step);
    empty(&out);
    let ((), status) = memo.outputs(&out).call_with_status(&(), step);
    if status == Status::Disk {
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        for link in ["up", "absolute"] {
            assert!(fs::symlink_metadata(out.join(link)).is_err(), "{link} was restored");
        }
    } else {
        // Not cached at all is fine too: then the step ran again and made its links itself.
        assert_eq!((status, runs.load(Ordering::SeqCst)), (Status::Miss, 2));
    }
    assert_eq!(names(parent.path()), [b"out".to_vec()], "something was written beside out/");
    assert!(names(elsewhere.path()).is_empty(), "something was written where a link points");
    assert_eq!(fs::read_to_string(out.join("inside.txt")).unwrap(), "inside\n");
}

// 9. A file name that is not UTF-8 comes back with exactly its bytes.
#[test]
fn a_file_name_that_is_not_utf8_comes_back_with_exactly_its_bytes() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let name: &[u8] = b"caf\xe9.txt";
    let memo = Memo::new("it-fs-latin1").dir(cache.path()).mem_capacity(0);
    let step = |step: &mut Step| {
        fs::write(step.dir().join(OsStr::from_bytes(name)), "latin-1\n").unwrap();
    };
    memo.outputs(out.path()).call(&(), step);
    assert_eq!(names(out.path()), [name.to_vec()]);
    empty(out.path());
    let ((), status) = memo.outputs(out.path()).call_with_status(&(), step);
    assert_eq!(status, Status::Disk);
    let restored = names(out.path());
    assert_eq!(
        restored,
        [name.to_vec()],
        "restored as {:?}",
        restored.iter().map(|name| String::from_utf8_lossy(name).into_owned()).collect::<Vec<_>>()
    );
    let path = out.path().join(OsStr::from_bytes(name));
    assert_eq!(fs::read_to_string(path).unwrap(), "latin-1\n");
}

// 9. A file name of 250 bytes (the limit is 255) is restored.
#[test]
fn a_file_name_of_250_bytes_is_restored() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let name = format!("{}.txt", "n".repeat(246));
    assert_eq!(name.len(), 250);
    let runs = AtomicUsize::new(0);
    let memo = Memo::new("it-fs-long-name").dir(cache.path()).mem_capacity(0);
    let step = |step: &mut Step| {
        runs.fetch_add(1, Ordering::SeqCst);
        fs::write(step.dir().join(&name), "long\n").unwrap();
    };
    memo.outputs(out.path()).call(&(), step);
    empty(out.path());
    let ((), status) = memo.outputs(out.path()).call_with_status(&(), step);
    assert_eq!((status, runs.load(Ordering::SeqCst)), (Status::Disk, 1), "not restored");
    assert_eq!(fs::read_to_string(out.path().join(&name)).unwrap(), "long\n");
}

// 10. A file of the user's that the step rewrote with the same bytes is not the step's to delete.
#[test]
fn a_user_file_the_step_rewrote_identically_survives_another_key() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let user = out.path().join("user.txt");
    fs::write(&user, "the user's own\n").unwrap();
    let memo = Memo::new("it-fs-user-file").dir(cache.path()).mem_capacity(0);
    let step = |step: &mut Step, key: u32| {
        if key == 1 {
            // A generator that rewrites what it finds, unchanged.
            let text = fs::read(step.dir().join("user.txt")).unwrap();
            fs::write(step.dir().join("user.txt"), text).unwrap();
        }
        fs::write(step.dir().join("generated.txt"), format!("key {key}\n")).unwrap();
    };
    memo.outputs(out.path()).call(&1u32, |state| step(state, 1));
    let ((), status) = memo.outputs(out.path()).call_with_status(&2u32, |state| step(state, 2));
    assert_eq!(status, Status::Miss);
    assert_eq!(
        fs::read_to_string(&user).ok().as_deref(),
        Some("the user's own\n"),
        "the user's file was deleted"
    );
    assert_eq!(fs::read_to_string(out.path().join("generated.txt")).unwrap(), "key 2\n");
}

// 13. With the cache disabled, the step's directory is made as with the cache on.
#[test]
fn a_disabled_cache_creates_the_step_directory_as_an_enabled_one_does() {
    let parent = tempfile::tempdir().unwrap();
    let write = |step: &mut Step| {
        fs::write(step.dir().join("a"), "a\n")
            .map_err(|err| format!("{}: {err}", step.dir().display()))
    };
    for disabled in [false, true] {
        let root = parent.path().join(format!("cache-{disabled}"));
        let gen_dir = parent.path().join(format!("out-{disabled}/gen"));
        let memo = Memo::new("it-fs-disabled").dir(&root).disable(disabled);
        let written: Result<(), String> = memo.outputs(&gen_dir).call(&(), write);
        assert_eq!(written, Ok(()), "disabled: {disabled}");
        assert_eq!(fs::read_to_string(gen_dir.join("a")).unwrap(), "a\n");
        assert_eq!(root.exists(), !disabled, "disabled: {disabled}");
    }
}

// 14 (d). A rewrite that a coarse clock would hide (same size, mtime set back) is the step's.
#[test]
fn a_rewrite_with_the_old_size_and_mtime_is_still_part_of_the_entry() {
    let cache = tempfile::tempdir().unwrap();
    // The file was last written an hour ago, or just now (within a coarse clock's tick).
    for (case, age) in [("old", Duration::from_secs(3600)), ("recent", Duration::ZERO)] {
        let out = tempfile::tempdir().unwrap();
        let table = out.path().join("table.bin");
        fs::write(&table, "old old old old!").unwrap();
        let before = SystemTime::now() - age;
        fs::File::options().append(true).open(&table).unwrap().set_modified(before).unwrap();
        let memo = Memo::new(format!("it-fs-coarse-{case}")).dir(cache.path()).mem_capacity(0);
        let step = |step: &mut Step| {
            let table = step.dir().join("table.bin");
            fs::write(&table, "new new new new!").unwrap();
            fs::File::options().append(true).open(&table).unwrap().set_modified(before).unwrap();
        };
        memo.outputs(out.path()).call(&(), step);
        empty(out.path());
        let ((), status) = memo.outputs(out.path()).call_with_status(&(), step);
        assert_eq!(status, Status::Disk, "{case}");
        assert_eq!(
            fs::read_to_string(&table).ok().as_deref(),
            Some("new new new new!"),
            "{case}: the step's version of table.bin was not restored"
        );
    }
}

/// The child processes' scenarios: `both` runs the two steps on two threads at once, `a` and
/// `b` one of them.
const SCENARIO: &str = "MEMOSHELVE_IT_FILE_STEPS_SCENARIO";

/// One of two steps, each printing its own directive; appends its name to `runs` when it runs.
fn thread_step(name: &str, out: &Path, cache: &Path, runs: &Path, met: Option<&Meeting>) {
    let (var, value) = if name == "it-fs-thread-a" { ("A", "alpha") } else { ("B", "beta") };
    Memo::new(name).dir(cache).outputs(out).call(&(), |step: &mut Step| {
        let mut file = fs::OpenOptions::new().create(true).append(true).open(runs).unwrap();
        std::io::Write::write_all(&mut file, format!("{name}\n").as_bytes()).unwrap();
        if let Some(met) = met {
            met.arrive();
        }
        // Reported through `Step`: with another thread running, a step's own lines are told
        // from the other thread's that way.
        step.directive(&format!("rustc-env={var}={value}"));
        fs::write(step.dir().join(format!("{var}.txt")), value).unwrap();
    });
}

/// Two steps that meet are running at the same time. A library that runs them one after the
/// other makes the first wait (at most 5 s) and go on; nothing is asserted about the waiting.
#[derive(Default)]
struct Meeting {
    arrived: std::sync::Mutex<usize>,
    changed: std::sync::Condvar,
}

impl Meeting {
    fn arrive(&self) {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.changed.notify_all();
        let five = Duration::from_secs(5);
        let _ = self.changed.wait_timeout_while(arrived, five, |arrived| *arrived < 2).unwrap();
    }
}

/// Not a test of its own: the body of the child processes of
/// [`each_entry_replays_only_the_directives_of_its_own_step`] (it does nothing without
/// [`SCENARIO`]).
#[test]
fn child_process() {
    let Ok(scenario) = std::env::var(SCENARIO) else { return };
    let var = |name: &str| PathBuf::from(std::env::var_os(name).unwrap());
    let (out, cache, runs) = (var("OUT_DIR"), var("FILE_STEPS_CACHE"), var("FILE_STEPS_RUNS"));
    // Ends the line libtest began (`test file_steps::child_process ... `): directives start one.
    std::io::Write::write_all(&mut std::io::stdout(), b"\n").unwrap();
    match scenario.as_str() {
        "both" => {
            let met = Meeting::default();
            std::thread::scope(|scope| {
                for name in ["it-fs-thread-a", "it-fs-thread-b"] {
                    let (out, cache, runs, met) = (&out, &cache, &runs, &met);
                    scope.spawn(move || thread_step(name, out, cache, runs, Some(met)));
                }
            });
        }
        "a" => thread_step("it-fs-thread-a", &out, &cache, &runs, None),
        "b" => thread_step("it-fs-thread-b", &out, &cache, &runs, None),
        other => panic!("unknown scenario {other}"),
    }
}

/// Runs `scenario` in a child process of this test binary, as inside a build script
/// (`OUT_DIR`, `CARGO_MANIFEST_DIR` and `HOST` set), and returns the `cargo:` lines it printed.
fn in_child(scenario: &str, dir: &Path) -> Vec<String> {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--exact", "file_steps::child_process", "--nocapture", "--test-threads=1"]);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MEMOSHELVE_") {
            command.env_remove(name);
        }
    }
    let output = command
        .env(SCENARIO, scenario)
        .env("OUT_DIR", dir.join("out"))
        .env("CARGO_MANIFEST_DIR", dir)
        .env("HOST", "x86_64-unknown-linux-gnu")
        .env("FILE_STEPS_CACHE", dir.join("cache"))
        .env("FILE_STEPS_RUNS", dir.join("runs"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "scenario {scenario}: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().filter(|line| line.starts_with("cargo:")).map(str::to_owned).collect()
}

// 6. Two steps that ran on two threads at once: each entry replays its own directive only.
#[test]
fn each_entry_replays_only_the_directives_of_its_own_step() {
    let dir = tempfile::tempdir().unwrap();
    let runs = || fs::read_to_string(dir.path().join("runs")).unwrap_or_default().lines().count();
    let env_lines = |lines: &[String]| -> Vec<String> {
        lines.iter().filter(|line| line.starts_with("cargo:rustc-env=")).cloned().collect()
    };
    let both = in_child("both", dir.path());
    let mut printed = env_lines(&both);
    printed.sort();
    assert_eq!(printed, ["cargo:rustc-env=A=alpha", "cargo:rustc-env=B=beta"], "{both:?}");
    assert_eq!(runs(), 2);
    for (scenario, line) in [("a", "cargo:rustc-env=A=alpha"), ("b", "cargo:rustc-env=B=beta")] {
        let replayed = in_child(scenario, dir.path());
        assert_eq!(runs(), 2, "scenario {scenario} should have been a hit");
        assert_eq!(env_lines(&replayed), [line], "scenario {scenario} replayed {replayed:?}");
    }
}

// An empty directory the step made is part of its result: back after `cargo clean`.
#[test]
fn an_empty_directory_the_step_made_is_restored() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let memo = Memo::new("it-fs-empty-dir").dir(cache.path()).mem_capacity(0);
    let step = |step: &mut Step| {
        fs::create_dir_all(step.dir().join("include/sub")).unwrap();
        fs::write(step.dir().join("lib.rs"), "").unwrap();
    };
    assert_eq!(memo.outputs(out.path()).call_with_status(&(), step).1, Status::Miss);
    empty(out.path());
    assert_eq!(memo.outputs(out.path()).call_with_status(&(), step).1, Status::Disk);
    assert!(out.path().join("include/sub").is_dir());
    assert_eq!(fs::read_dir(out.path().join("include/sub")).unwrap().count(), 0);
}

// A key keeps its last runs whose declared inputs differ: an input that goes A, B, A hits on
// the way back; the report says why a miss missed; the least recently used run goes first.
#[test]
fn a_key_keeps_its_last_runs_and_a_miss_says_why() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let input = cache.path().join("input.txt");
    let memo = Memo::new("it-fs-runs").dir(cache.path()).mem_capacity(0);
    let call = |content: &str| {
        fs::write(&input, content).unwrap();
        empty(out.path());
        let (value, report) = memo
            .outputs(out.path())
            .try_call_with_report(&(), |step: &mut Step| {
                step.input_file(&input);
                let text = fs::read_to_string(&input).unwrap();
                fs::write(step.dir().join("out.txt"), &text).unwrap();
                Ok::<_, std::convert::Infallible>(text)
            })
            .unwrap();
        assert_eq!(value, content);
        assert_eq!(fs::read_to_string(out.path().join("out.txt")).unwrap(), content);
        assert_eq!(report.not_stored, None);
        (report.status, report.missed)
    };
    assert_eq!(call("a"), (Status::Miss, None), "nothing stored yet");
    let changed = Some(format!("file {}", input.display()));
    assert_eq!(call("b"), (Status::Miss, changed.clone()));
    assert_eq!(call("a"), (Status::Disk, None), "A after B");
    assert_eq!(call("b"), (Status::Disk, None), "B after A");
    for content in ["c", "d", "e"] {
        assert_eq!(call(content).0, Status::Miss);
    }
    // Four runs kept: e, d, c and the least recently used of a and b (b was used last) is out.
    assert_eq!(call("b").0, Status::Disk);
    assert_eq!(call("a"), (Status::Miss, changed));
}
