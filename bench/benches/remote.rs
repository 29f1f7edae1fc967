//! The remote tier's hit (issue 8's entry in the speed suite): a value fetched from the remote
//! into an empty local root, beside a hit of the local disk tier, for a small value and a
//! 64 MiB one. `cargo xtask bench` runs this once per server it finds (`MEMOSHELVE_TEST_REDIS`,
//! `MEMOSHELVE_TEST_HTTP`, as `.ci/run` starts them), with `MEMOSHELVE_REMOTE` set to it and
//! `MEMOSHELVE_BENCH_REMOTE` naming it; without them it measures nothing.

#![expect(clippy::print_stderr, reason = "a bench harness reports to the terminal")]

use criterion::{BatchSize, Criterion, Throughput};
use memoshelve_bench::{bytes, scratch, size};
use memoshelve_build::{Memo, Status};

fn remote_hits(c: &mut Criterion, backend: &str) {
    // A run id in the name: entries of an earlier run on the same server are not hits here.
    let run = std::process::id();
    let cases = [("small", 100), ("64MiB", size(64 << 20, 1 << 20) as usize)];
    for (label, len) in cases {
        let name = format!("w11-{label}-{run}");
        let value = bytes(len, 11);
        let origin = scratch("w11-origin");
        let origin_memo = Memo::new(&name).dir(origin.path()).mem_capacity(0);
        let stored = value.clone();
        assert_eq!(origin_memo.call_with_status(&label, move || stored).1, Status::Miss);
        assert_eq!(
            origin_memo.call_with_status::<_, Vec<u8>>(&label, || unreachable!()).1,
            Status::Disk
        );

        let mut group = c.benchmark_group(format!("w11_remote_hit_{label}_{backend}"));
        group.throughput(Throughput::Bytes(len as u64));
        if len > 4 << 20 {
            group.sample_size(10);
        }
        let mut checked = false;
        group.bench_function("memoshelve", |b| {
            b.iter_batched(
                || scratch("w11-fresh"),
                |fresh| {
                    let memo = Memo::new(&name).dir(fresh.path()).mem_capacity(0);
                    let (got, status) = memo
                        .call_with_status::<_, Vec<u8>>(&label, || unreachable!("a remote hit"));
                    if !checked {
                        assert_eq!(status, Status::Remote);
                        assert!(got == value, "the remote hit returns the stored bytes");
                        checked = true;
                    }
                    fresh
                },
                BatchSize::PerIteration,
            );
        });
        group.bench_function("floor_local_disk_hit", |b| {
            b.iter(|| origin_memo.call::<_, Vec<u8>>(&label, || unreachable!("a disk hit")));
        });
        group.finish();
    }
}

fn main() {
    let Some(backend) = std::env::var("MEMOSHELVE_BENCH_REMOTE").ok() else {
        eprintln!("w11: no remote (MEMOSHELVE_BENCH_REMOTE unset): nothing measured");
        return;
    };
    let mut criterion = memoshelve_bench::criterion().configure_from_args();
    remote_hits(&mut criterion, &backend);
    criterion.final_summary();
}
