//! Single flight inside a process: concurrent callers of one missing key compute it once,
//! whatever `allow_race` says.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use memoshelve_build::Memo;

#[test]
fn threads_asking_for_one_missing_key_compute_it_once() {
    for mem_capacity in [1 << 20, 0] {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("flight-threads-{mem_capacity}");
        let memo = Arc::new(Memo::new(name).dir(dir.path()).mem_capacity(mem_capacity));
        let computed = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (memo, computed, barrier) = (memo.clone(), computed.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    memo.call(&"shared", || {
                        computed.fetch_add(1, Ordering::SeqCst);
                        // Long enough that the other seven arrive while it runs.
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        vec![42u8; 10]
                    })
                })
            })
            .collect();
        for thread in threads {
            assert_eq!(thread.join().unwrap(), vec![42u8; 10]);
        }
        assert_eq!(computed.load(Ordering::SeqCst), 1, "mem_capacity {mem_capacity}");
    }
}

#[test]
fn par_map_computes_each_distinct_item_once_and_a_failed_leader_lets_the_next_compute() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("flight-par-map").dir(dir.path());
    let computed = AtomicUsize::new(0);
    let items: Vec<u32> = (0..64).map(|n| n % 4).collect();
    let values: Vec<u32> = memo.par_map(&items, |n| {
        computed.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(20));
        *n * 10
    });
    assert_eq!(values, items.iter().map(|n| n * 10).collect::<Vec<_>>());
    assert_eq!(computed.load(Ordering::SeqCst), 4, "four distinct items");
    // Errors are not cached: a caller after a failed computation computes again.
    let failing = Memo::new("flight-fail").dir(dir.path());
    assert_eq!(failing.try_call(&1, || Err::<u8, _>("boom")), Err("boom"));
    assert_eq!(failing.try_call(&1, || Ok::<u8, &str>(5)), Ok(5));
    // A computation that asks for its own key does not wait for itself.
    let nested = Memo::new("flight-nested").dir(dir.path());
    let value = nested.call(&1, || nested.call(&1, || 7u8) + 1);
    assert_eq!(value, 8);
}
