//! Workload 7 of the speed suite: a cache of 100,000 entries (2,000 in quick mode). Wall times of
//! one run each, not criterion samples: inserting them, then `list`, `stats`, `verify`, `prune`
//! and `compact`, in process through `Store` and, when `MEMOSHELVE_BENCH_CLI` names the
//! `cargo-memoshelve` binary, through the CLI on a second root; bytes on disk per entry; the
//! index after 100,000 overwrites of 1,000 keys, before and after `compact`.

#![expect(clippy::print_stderr, reason = "a bench harness reports to the terminal")]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use memoshelve_bench::{quick, record, scratch, size};
use memoshelve_build::Memo;
use memoshelve_build::store::Store;

fn timed<R>(what: &str, work: impl FnOnce() -> R) -> R {
    let started = Instant::now();
    let result = work();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("w7 {what}: {seconds:.3} s");
    record("w7", what, seconds, "s");
    result
}

/// Fills `root` with `count` entries of ~100 bytes, last used a day ago (so that `prune`'s
/// in-use window spares none of them).
fn fill(root: &Path, count: u64) {
    let memo = Memo::new("w7").dir(root).mem_capacity(0);
    for index in 0..count {
        memo.call(&(index, "entry"), || format!("{index:>100}"));
    }
    let store = Store::open(root);
    let day_ago = SystemTime::now() - Duration::from_secs(24 * 3600);
    for entry in store.entries(None).expect("list") {
        store.set_last_used(&entry, day_ago).expect("age an entry");
    }
}

/// Allocated bytes of every file under `dir` (what `du` counts).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let meta = entry.metadata().expect("stat");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

fn in_process(count: u64) {
    let root = scratch("w7-store");
    timed("insert", || fill(root.path(), count));
    record("w7", "bytes_per_entry", disk_usage(root.path()) as f64 / count as f64, "B");
    let store = Store::open(root.path());
    let entries = timed("list", || store.entries(None).expect("list"));
    assert_eq!(entries.len() as u64, count, "every inserted entry is listed");
    timed("stats", || (store.usage(), store.footprint()));
    timed("verify", || {
        let bad = entries.iter().filter(|entry| store.verify(entry).is_err()).count();
        assert_eq!(bad, 0, "a fresh cache verifies clean");
        assert!(store.check_index().unwrap().is_empty(), "a fresh index is clean");
    });
    timed("prune", || {
        let mut entries = store.entries(None).expect("list");
        entries.sort_by_key(|entry| entry.last_used_ms);
        for entry in &entries[..entries.len() / 2] {
            store.remove(entry).expect("remove");
        }
        store.collect_garbage(Duration::ZERO).expect("collect garbage")
    });
    timed("compact", || store.compact().expect("compact"));
}

fn through_cli(cli: &Path, count: u64) {
    let root = scratch("w7-cli");
    fill(root.path(), count);
    let run = |what: &str, args: &[&str]| {
        timed(&format!("cli_{what}"), || {
            let status = Command::new(cli)
                .args(["memoshelve", "--dir"])
                .arg(root.path())
                .args(args)
                .stdout(Stdio::null())
                .status()
                .expect("run cargo-memoshelve");
            assert!(status.success(), "cargo memoshelve {args:?} failed");
        });
    };
    run("list", &["list"]);
    run("stats", &["stats"]);
    run("verify", &["verify"]);
    let half = (count * 50).to_string();
    run("prune", &["prune", "--max-size", &half]);
    run("compact", &["compact"]);
}

fn overwrites(count: u64, keys: u64) {
    let root = scratch("w7-overwrites");
    let memo = Memo::new("w7o").dir(root.path()).mem_capacity(0);
    for round in 0..count {
        memo.put(&(round % keys), &format!("{round:>100}")).expect("put");
    }
    let store = Store::open(root.path());
    let before = store.footprint().index_bytes;
    let compaction = store.compact().expect("compact");
    let after = store.footprint().index_bytes;
    assert_eq!(compaction.index_after, after);
    assert_eq!(store.entries(None).expect("list").len() as u64, keys);
    record("w7", "index_bytes_before_compact", before as f64, "B");
    record("w7", "index_bytes_after_compact", after as f64, "B");
    eprintln!("w7 overwrites: index {before} B before compact, {after} B after");
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing of ours: both run it.
    let count = size(100_000, 2_000);
    eprintln!("w7: {count} entries{}", if quick() { " (quick)" } else { "" });
    in_process(count);
    if let Some(cli) = std::env::var_os("MEMOSHELVE_BENCH_CLI") {
        through_cli(Path::new(&cli), count);
    }
    overwrites(count, size(1000, 100));
}
