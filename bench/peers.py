"""Workload 10's Python peers: memoshelve (Python), joblib.Memory and diskcache on workloads 1-4.

Run by `cargo xtask bench --peers` in a venv it makes; prints one JSON object,
{peer: {workload: seconds per call}}. Each figure is the median of five timed rounds.
Usage: python peers.py SCRATCH_DIR
"""

import json
import os
import statistics
import sys
import time

import diskcache
import joblib
from memoshelve import memoshelve

SCRATCH = sys.argv[1]
SMALL = "x" * 100
KEYS = 1000  # Python is slower per call than Rust: fewer keys than the Rust suite's 10k.


def per_call(run, calls, rounds=5):
    """Median seconds per call of `run(i)` over `calls` calls, in `rounds` rounds."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(calls):
            run(i)
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def forget(memory):
    """Empties memoshelve's memory tier (one dict per shelve file), so the next call reads disk."""
    for tier in memory.values():
        tier.clear()


def small(a, b, s):
    return SMALL


def large(label, size):
    return os.urandom(size)


def bench_memoshelve():
    results = {}
    memory = {}
    with memoshelve(small, os.path.join(SCRATCH, "ms-small"), cache=memory,
                    print_disk_cache_miss=False)() as cached:
        for i in range(KEYS):
            cached(i, i * 7, "short")
        results["w1_memory_hit"] = per_call(lambda i: cached(1, 7, "short"), 2000)

        def disk_hit(i):
            forget(memory)
            cached(i % KEYS, (i % KEYS) * 7, "short")

        results["w2_disk_hit_small"] = per_call(disk_hit, 500)
        fresh = iter(range(10**9, 2 * 10**9))
        results["w3_miss_store"] = per_call(lambda i: cached(next(fresh), 0, "miss"), 200)
    for label, size in [("1MiB", 1 << 20), ("64MiB", 64 << 20)]:
        memory = {}
        with memoshelve(large, os.path.join(SCRATCH, f"ms-{label}"), cache=memory,
                        print_disk_cache_miss=False)() as cached:
            cached(label, size)

            def hit(i):
                forget(memory)
                cached(label, size)

            results[f"w4_disk_hit_{label}"] = per_call(hit, 5 if size > 1 << 20 else 50)
    return results


def bench_decorator(memoize, hits, misses):
    """Workloads 1-4 for a peer whose only tier is the disk: `memoize(f)` is its decorator;
    `hits` and `misses` are the calls timed per round (fewer for slower peers)."""
    cached = memoize(small)
    for i in range(KEYS):
        cached(i, i * 7, "short")
    results = {
        "w1_memory_hit": per_call(lambda i: cached(1, 7, "short"), hits),
        "w2_disk_hit_small": per_call(lambda i: cached(i % KEYS, (i % KEYS) * 7, "short"), hits),
    }
    fresh = iter(range(10**9, 2 * 10**9))
    results["w3_miss_store"] = per_call(lambda i: cached(next(fresh), 0, "miss"), misses)
    cached_large = memoize(large)
    for label, size in [("1MiB", 1 << 20), ("64MiB", 64 << 20)]:
        cached_large(label, size)
        results[f"w4_disk_hit_{label}"] = per_call(
            lambda i: cached_large(label, size), 5 if size > 1 << 20 else 50)
    return results


def bench_joblib():
    # joblib.Memory has no memory tier: every hit reads the disk.
    memory = joblib.Memory(os.path.join(SCRATCH, "joblib"), verbose=0)
    return bench_decorator(memory.cache, hits=200, misses=50)


def bench_diskcache():
    cache = diskcache.Cache(os.path.join(SCRATCH, "diskcache"))
    return bench_decorator(cache.memoize(), hits=2000, misses=200)


if __name__ == "__main__":
    print(json.dumps({
        "memoshelve (Python)": bench_memoshelve(),
        "joblib.Memory": bench_joblib(),
        "diskcache": bench_diskcache(),
    }))
