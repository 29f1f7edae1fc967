//! Fixtures shared by the speed suite's benches (`benches/speed.rs`, `benches/scale.rs`): sizes
//! (full or quick), deterministic data, generated trees and the results file they append to.
//!
//! `cargo xtask bench` runs the benches twice (release and opt-level 0) and turns what they
//! write into `BENCHMARKS.md`; see `xtask/src/bench.rs`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion};

/// Whether to run the tiny CI variant (`MEMOSHELVE_BENCH_QUICK=1`): same code, small sizes.
pub fn quick() -> bool {
    std::env::var_os("MEMOSHELVE_BENCH_QUICK").is_some_and(|value| value != "0")
}

/// Criterion's settings for every bench of the suite: short samples in quick mode.
pub fn criterion() -> Criterion {
    let criterion = Criterion::default();
    if quick() {
        criterion
            .sample_size(10)
            .warm_up_time(Duration::from_millis(10))
            .measurement_time(Duration::from_millis(50))
            .nresamples(1000)
    } else {
        criterion.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
    }
}

/// Times `routine` like `Bencher::iter`, but writes every dirty page to disk (`sync`) before each
/// sample, outside the timed part. For benchmarks that create files: the kernel writes them
/// back while later samples run, so without it a sample (or the next function of the group,
/// in practice the floor) pays for the writeback of the files made before it, and the ratio
/// of two writers depends on which ran first.
pub fn iter_settled<O>(b: &mut Bencher<'_>, mut routine: impl FnMut() -> O) {
    b.iter_custom(|iters| {
        settle();
        let start = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(routine());
        }
        start.elapsed()
    });
}

/// Writes back every dirty page (`sync(1)`), for the untimed setup of a benchmark that writes
/// files.
pub fn settle() {
    let status = std::process::Command::new("sync").status().expect("run sync(1)");
    assert!(status.success(), "sync(1) failed: {status}");
}

/// `full` normally, `small` in quick mode.
pub fn size(full: u64, small: u64) -> u64 {
    if quick() { small } else { full }
}

/// Deterministic, incompressible-looking bytes (a xorshift stream), so that no layer can
/// shortcut runs of zeros.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `files` files of `total / files` bytes each under `dir` (in a few subfolders, like
/// generated code), returning their paths relative to `dir`.
pub fn write_tree(dir: &Path, files: u64, total: u64) -> Vec<PathBuf> {
    let each = usize::try_from(total / files).expect("file sizes fit in memory");
    (0..files)
        .map(|index| {
            let relative = PathBuf::from(format!("part{}/file{index:05}.rs", index % 8));
            let path = dir.join(&relative);
            fs::create_dir_all(path.parent().expect("tree files are in a folder"))
                .expect("create tree folder");
            fs::write(&path, bytes(each, index)).expect("write tree file");
            relative
        })
        .collect()
}

/// Copies a tree file by file with `std::fs::copy` (the restore floor).
pub fn copy_tree(from: &Path, to: &Path, files: &[PathBuf]) {
    place_tree(from, to, files, |from, to| fs::copy(from, to).map(drop));
}

/// Hard-links a tree file by file (what a link-based restore would cost).
pub fn link_tree(from: &Path, to: &Path, files: &[PathBuf]) {
    place_tree(from, to, files, |from, to| fs::hard_link(from, to));
}

fn place_tree(
    from: &Path,
    to: &Path,
    files: &[PathBuf],
    place: impl Fn(&Path, &Path) -> std::io::Result<()>,
) {
    for relative in files {
        let target = to.join(relative);
        fs::create_dir_all(target.parent().expect("tree files are in a folder"))
            .expect("create tree folder");
        place(&from.join(relative), &target).expect("place tree file");
    }
}

/// Where the benches write: `MEMOSHELVE_BENCH_OUT` (set by `cargo xtask bench`) or
/// `target/memoshelve-bench/manual`.
pub fn out_dir() -> PathBuf {
    let dir = std::env::var_os("MEMOSHELVE_BENCH_OUT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/memoshelve-bench/manual"),
        PathBuf::from,
    );
    fs::create_dir_all(&dir).expect("create the bench output dir");
    dir
}

/// A scratch directory for fixtures: on the same filesystem as the cache roots users have (the
/// target dir's), never tmpfs, so that disk figures are disk figures.
pub fn scratch(name: &str) -> tempfile::TempDir {
    let base = out_dir().join("scratch");
    fs::create_dir_all(&base).expect("create scratch base");
    tempfile::Builder::new().prefix(name).tempdir_in(base).expect("create scratch dir")
}

/// One measured figure that is not a criterion benchmark (wall times, sizes, counts): appended
/// as a JSON line to `<out>/extra.jsonl`.
pub fn record(workload: &str, what: &str, value: f64, unit: &str) {
    let line =
        serde_json::json!({ "workload": workload, "what": what, "value": value, "unit": unit });
    let path = out_dir().join("extra.jsonl");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open the extra results file");
    writeln!(file, "{line}").expect("write a result line");
}
