//! Workloads 1–6 of the speed suite (see BENCHMARKS.md): each memoshelve figure beside its floor
//! (the least work that gives the same answer) and, for 1–4, the `cached` crate's redb store.
//!
//! Group `wN_<what>`, functions `memoshelve`, `floor*` and `peer_*`: `cargo xtask bench` reads
//! criterion's estimates by these names and reports every figure as a ratio to its floor from
//! the same run.

use std::collections::HashMap;
use std::fs;
use std::hint::black_box;
use std::path::PathBuf;

use cached::ConcurrentCached;
use cached::stores::{RedbCache, RedbCacheBuilder};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use memoshelve_bench::{
    bytes, copy_tree, iter_settled, link_tree, record, scratch, settle, size, write_tree,
};
use memoshelve_build::{Memo, Status};

/// The small value of workloads 1–3: about 100 bytes.
fn small_value() -> String {
    "x".repeat(100)
}

/// Two ints and a short string, as the workloads describe the arguments.
fn small_args(index: u32) -> (u32, u32, &'static str) {
    (index, index.wrapping_mul(7), "short")
}

fn redb<V: serde::Serialize + serde::de::DeserializeOwned>(
    dir: &std::path::Path,
) -> RedbCache<String, V> {
    RedbCacheBuilder::new().name("bench").disk_dir(dir).build().expect("build the redb store")
}

fn memory_hit(c: &mut Criterion) {
    let root = scratch("w1");
    let memo = Memo::new("w1").dir(root.path());
    let args = small_args(1);
    let value = memo.call(&args, small_value);
    assert_eq!(memo.call_with_status::<_, String>(&args, || unreachable!()).1, Status::Memory);

    // The floor: a HashMap keyed by the blake3 hash of the encoded arguments, cloned out.
    let mut map: HashMap<[u8; 32], String> = HashMap::new();
    let floor_key = |args: &(u32, u32, &str)| {
        *blake3::hash(&postcard::to_allocvec(args).expect("encode")).as_bytes()
    };
    map.insert(floor_key(&args), value);

    let peer_dir = scratch("w1-redb");
    let peer = redb::<String>(peer_dir.path());
    peer.cache_set("1,7,short".to_owned(), small_value()).expect("redb set");

    let mut group = c.benchmark_group("w1_memory_hit");
    group.bench_function("memoshelve", |b| {
        b.iter(|| memo.call::<_, String>(black_box(&args), || unreachable!("a memory hit")));
    });
    group.bench_function("floor", |b| {
        b.iter(|| map.get(&floor_key(black_box(&args))).cloned().expect("present"));
    });
    group.bench_function("peer_cached_redb", |b| {
        b.iter(|| peer.cache_get(&"1,7,short".to_owned()).expect("redb get").expect("present"));
    });
    group.finish();
}

fn disk_hit_small(c: &mut Criterion) {
    let count = size(10_000, 200) as u32;
    let root = scratch("w2");
    // No memory tier: every call below is a disk hit.
    let memo = Memo::new("w2").dir(root.path()).mem_capacity(0);
    let raw = scratch("w2-cacache");
    let peer_dir = scratch("w2-redb");
    let peer = redb::<String>(peer_dir.path());
    for index in 0..count {
        memo.call(&small_args(index), small_value);
        cacache::write_sync(raw.path(), format!("key{index}"), small_value()).expect("cacache");
        peer.cache_set(format!("key{index}"), small_value()).expect("redb set");
    }
    assert_eq!(
        memo.call_with_status::<_, String>(&small_args(0), || unreachable!()).1,
        Status::Disk
    );

    let mut group = c.benchmark_group("w2_disk_hit_small");
    let mut index = 0;
    let mut next = move || {
        index = (index + 1) % count;
        index
    };
    group.bench_function("memoshelve", |b| {
        b.iter(|| memo.call::<_, String>(&small_args(next()), || unreachable!("a disk hit")));
    });
    group.bench_function("floor_cacache_read", |b| {
        b.iter(|| cacache::read_sync(raw.path(), format!("key{}", next())).expect("cacache read"));
    });
    group.bench_function("peer_cached_redb", |b| {
        b.iter(|| peer.cache_get(&format!("key{}", next())).expect("redb").expect("present"));
    });
    group.finish();
}

fn miss_and_store(c: &mut Criterion) {
    let root = scratch("w3");
    let memo = Memo::new("w3").dir(root.path()).mem_capacity(0);
    let raw = scratch("w3-cacache");
    let peer_dir = scratch("w3-redb");
    let peer = redb::<String>(peer_dir.path());
    let value = small_value();

    let mut group = c.benchmark_group("w3_miss_store");
    let mut fresh = 0u64;
    // Each sample starts with the files of the ones before written back (see `iter_settled`):
    // the floor runs second, and could pay for memoshelve's writeback. Two full runs without
    // it put memoshelve at 1.25x and at 0.58x of the floor at opt-level 0.
    group.bench_function("memoshelve", |b| {
        iter_settled(b, || {
            fresh += 1;
            memo.call(&(fresh, "miss"), || value.clone())
        });
    });
    group.bench_function("floor_cacache_write", |b| {
        iter_settled(b, || {
            fresh += 1;
            cacache::write_sync(raw.path(), format!("key{fresh}"), &value).expect("cacache write")
        });
    });
    group.bench_function("peer_cached_redb", |b| {
        iter_settled(b, || {
            fresh += 1;
            peer.cache_set(format!("key{fresh}"), value.clone()).expect("redb set")
        });
    });
    group.finish();
}

fn disk_hit_large(c: &mut Criterion) {
    for (label, len) in [("1MiB", 1 << 20), ("64MiB", size(64 << 20, 2 << 20) as usize)] {
        let root = scratch("w4");
        let memo = Memo::new("w4").dir(root.path()).mem_capacity(0);
        let value = bytes(len, 4);
        let stored = value.clone();
        memo.call(&label, move || stored);
        assert_eq!(memo.call_with_status::<_, Vec<u8>>(&label, || unreachable!()).1, Status::Disk);
        let file = root.path().join("floor.bin");
        fs::write(&file, &value).expect("write the floor file");
        let peer_dir = scratch("w4-redb");
        let peer = redb::<Vec<u8>>(peer_dir.path());
        peer.cache_set(label.to_owned(), value).expect("redb set");

        let mut group = c.benchmark_group(format!("w4_disk_hit_{label}"));
        group.throughput(Throughput::Bytes(len as u64));
        if len > 4 << 20 {
            group.sample_size(10);
        }
        group.bench_function("memoshelve", |b| {
            b.iter(|| memo.call::<_, Vec<u8>>(&label, || unreachable!("a disk hit")));
        });
        group.bench_function("floor_read_file", |b| {
            b.iter(|| fs::read(&file).expect("read the floor file"));
        });
        group.bench_function("peer_cached_redb", |b| {
            b.iter(|| peer.cache_get(&label.to_owned()).expect("redb").expect("present"));
        });
        group.finish();
    }
}

fn outputs_restore(c: &mut Criterion) {
    let trees = [
        ("100files_10MiB", 100, size(10 << 20, 1 << 20)),
        ("4files_1GiB", 4, size(1 << 30, 4 << 20)),
    ];
    for (label, files, total) in trees {
        let root = scratch("w5");
        let memo = Memo::new("w5").dir(root.path()).mem_capacity(0);
        let source = root.path().join("generated");
        memo.outputs(&source).call::<_, ()>(&label, |step| {
            write_tree(step.dir(), files, total);
        });
        let paths: Vec<PathBuf> = write_tree(&root.path().join("floor-source"), files, total);
        let fresh = root.path().join("fresh");
        // Before each restore: no tree left, and the last one's files written back (see
        // `iter_settled`), so that the floor, which runs second, does not pay for them.
        let clear = || {
            let _ = fs::remove_dir_all(&fresh);
            settle();
        };
        clear();
        let ((), status) =
            memo.outputs(&fresh).call_with_status::<_, ()>(&label, |_| unreachable!());
        assert_eq!(status, Status::Disk, "the tree restores from disk");

        let mut group = c.benchmark_group(format!("w5_restore_{label}"));
        group.throughput(Throughput::Bytes(total));
        if total > 64 << 20 {
            group.sample_size(10);
        }
        group.bench_function("memoshelve", |b| {
            b.iter_batched(
                clear,
                |()| memo.outputs(&fresh).call::<_, ()>(&label, |_| unreachable!("a restore")),
                BatchSize::PerIteration,
            );
        });
        let floor_source = root.path().join("floor-source");
        // A restore checks every byte it writes: its floor is one read of them all (through one
        // reused 1 MiB buffer, as a stream reads; `fs::read` would time page faults instead).
        group.bench_function("floor_read", |b| {
            let mut buffer = vec![0u8; 1 << 20];
            b.iter(|| {
                for path in &paths {
                    let mut file = fs::File::open(floor_source.join(path)).expect("open");
                    while std::io::Read::read(&mut file, &mut buffer).expect("read") > 0 {}
                    std::hint::black_box(&buffer);
                }
            });
        });
        group.bench_function("floor_fs_copy", |b| {
            b.iter_batched(
                clear,
                |()| copy_tree(&floor_source, &fresh, &paths),
                BatchSize::PerIteration,
            );
        });
        group.bench_function("info_hard_link", |b| {
            b.iter_batched(
                clear,
                |()| link_tree(&floor_source, &fresh, &paths),
                BatchSize::PerIteration,
            );
        });
        group.finish();
        clear();
        let probe = root.path().join("reflink-probe");
        let reflinks = reflink_copy::reflink(floor_source.join(&paths[0]), &probe).is_ok();
        record("w5", "reflink_supported", f64::from(u8::from(reflinks)), "bool");
    }
}

fn key_derivation(c: &mut Criterion) {
    let root = scratch("w6");
    let many = root.path().join("many");
    let count = size(1000, 100);
    let paths: Vec<PathBuf> =
        write_tree(&many, count, size(10 << 20, 1 << 20)).iter().map(|p| many.join(p)).collect();
    let big = root.path().join("big.bin");
    let big_len = size(1 << 30, 8 << 20);
    {
        let mut file = fs::File::create(&big).expect("create the big input");
        let chunk = bytes(16 << 20, 6);
        let mut left = big_len;
        while left > 0 {
            let take = left.min(chunk.len() as u64) as usize;
            std::io::Write::write_all(&mut file, &chunk[..take]).expect("write the big input");
            left -= take as u64;
        }
    }
    let cases: [(&str, Vec<PathBuf>, u64); 2] =
        [("1000files_10MiB", paths, size(10 << 20, 1 << 20)), ("1file_1GiB", vec![big], big_len)];
    for (label, inputs, total) in cases {
        let mut group = c.benchmark_group(format!("w6_key_{label}"));
        group.throughput(Throughput::Bytes(total));
        if total > 64 << 20 {
            group.sample_size(10);
        }
        group.bench_function("memoshelve", |b| {
            b.iter(|| {
                // A fresh Memo each time: declared inputs are hashed once per Memo.
                let memo = Memo::new("w6").dir(root.path()).input_files(&inputs);
                memo.key_for::<(), _>(&()).expect("a key")
            });
        });
        group.bench_function("floor_blake3_1thread", |b| {
            b.iter(|| {
                inputs
                    .iter()
                    .map(|path| {
                        let mut hasher = blake3::Hasher::new();
                        hasher.update_reader(fs::File::open(path).expect("open")).expect("read");
                        hasher.finalize()
                    })
                    .collect::<Vec<_>>()
            });
        });
        group.bench_function("floor_blake3_rayon", |b| {
            use rayon::prelude::*;
            b.iter(|| {
                if inputs.len() == 1 {
                    let mut hasher = blake3::Hasher::new();
                    hasher.update_mmap_rayon(&inputs[0]).expect("hash");
                    vec![hasher.finalize()]
                } else {
                    inputs
                        .par_iter()
                        .map(|path| {
                            let mut hasher = blake3::Hasher::new();
                            hasher.update_mmap(path).expect("hash");
                            hasher.finalize()
                        })
                        .collect::<Vec<_>>()
                }
            });
        });
        group.finish();
    }
}

criterion_group! {
    name = speed;
    config = memoshelve_bench::criterion();
    targets = memory_hit, disk_hit_small, miss_and_store, disk_hit_large, outputs_restore,
        key_derivation
}
criterion_main!(speed);
