//! Async calls on two executors (`futures::executor::block_on` and tokio): hits, one computation
//! per key for concurrent callers, cancellation, disk work off the caller's thread.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures::executor::block_on;
use futures::future::join_all;
use memoshelve_build::{Memo, Status, memoize};
use tokio::sync::oneshot;

use crate::disk_only;
use crate::memoize::root;

/// A computation that counts its runs and waits for `gate` before giving `value`.
async fn gated(runs: &AtomicUsize, gate: oneshot::Receiver<()>, value: u64) -> u64 {
    runs.fetch_add(1, Ordering::SeqCst);
    gate.await.expect("the gate is opened, not dropped");
    value
}

/// Polls a future once, without an executor.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn call_async_misses_then_hits_memory_then_disk_on_block_on() {
    let dir = tempfile::tempdir().unwrap();
    let runs = AtomicUsize::new(0);
    let compute = || async {
        runs.fetch_add(1, Ordering::SeqCst);
        vec![7u8; 5000]
    };
    let memo = Memo::new("it-async-tiers").dir(dir.path());
    block_on(async {
        let (value, status) = memo.call_async_with_status(&"a", compute()).await;
        assert_eq!((value.len(), status), (5000, Status::Miss));
        let (_, status) = memo.call_async_with_status(&"a", compute()).await;
        assert_eq!(status, Status::Memory);
        let cold = disk_only("it-async-tiers", dir.path());
        let (value, status) = cold.call_async_with_status(&"a", compute()).await;
        assert_eq!((value, status), (vec![7u8; 5000], Status::Disk));
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn errors_of_try_call_async_are_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("it-async-try").dir(dir.path());
    let runs = AtomicUsize::new(0);
    let attempt = |fail: bool| {
        let runs = &runs;
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            if fail { Err("offline") } else { Ok(3u32) }
        }
    };
    block_on(async {
        assert_eq!(memo.try_call_async(&1u8, attempt(true)).await, Err("offline"));
        assert_eq!(memo.try_call_async(&1u8, attempt(false)).await, Ok(3));
        assert_eq!(memo.try_call_async(&1u8, attempt(true)).await, Ok(3));
    });
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// Eight callers of one key, all polled before the computation may finish: the gate opens only
/// in the last future of the join, which is polled after every caller has started waiting.
async fn eight_callers_of_one_key(memo: &Memo) -> (usize, Vec<Status>) {
    // A first call resolves the memo's inputs (on a helper thread), so that each caller below
    // goes straight to the key on its first poll: the first one computes, the others wait.
    memo.call_async(&"warm-up", async { 0u64 }).await;
    let runs = AtomicUsize::new(0);
    let (open, gate) = oneshot::channel();
    let gate = Mutex::new(Some(gate));
    let callers = (0..8).map(|_| async {
        let gate = gate.lock().unwrap().take();
        let compute = async {
            match gate {
                Some(gate) => gated(&runs, gate, 42).await,
                // Only the first caller has the gate; a second computation would be a bug.
                None => {
                    runs.fetch_add(1, Ordering::SeqCst);
                    42
                }
            }
        };
        memo.call_async_with_status(&"shared", compute).await
    });
    let callers = join_all(callers);
    let opener = async { open.send(()).unwrap() };
    let (results, ()) = futures::join!(callers, opener);
    let statuses = results.iter().map(|(value, status)| {
        assert_eq!(*value, 42u64);
        *status
    });
    let statuses: Vec<Status> = statuses.collect();
    (runs.load(Ordering::SeqCst), statuses)
}

fn assert_one_computation(runs: usize, statuses: &[Status]) {
    assert_eq!(runs, 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|status| **status == Status::Miss).count(), 1);
    assert_eq!(statuses.iter().filter(|status| **status == Status::Memory).count(), 7);
}

#[test]
fn concurrent_callers_of_one_key_compute_once_on_block_on() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("it-async-flight-futures").dir(dir.path());
    let (runs, statuses) = block_on(eight_callers_of_one_key(&memo));
    assert_one_computation(runs, &statuses);
    // Without a memory tier the waiters still get the one computed value.
    let memo = disk_only("it-async-flight-no-memory", dir.path());
    let (runs, statuses) = block_on(eight_callers_of_one_key(&memo));
    assert_one_computation(runs, &statuses);
}

#[test]
fn concurrent_callers_of_one_key_compute_once_on_tokio() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("it-async-flight-tokio").dir(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (runs, statuses) = runtime.block_on(eight_callers_of_one_key(&memo));
    assert_one_computation(runs, &statuses);
}

#[test]
fn spawned_tasks_on_a_multi_thread_runtime_compute_once() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Arc::new(Memo::new("it-async-flight-spawned").dir(dir.path()));
    let key = memo.key_for::<u64, _>(&"spawned").unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let statuses = runtime.block_on(async {
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let (memo, runs) = (memo.clone(), runs.clone());
                tokio::spawn(async move {
                    let compute = async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        // Finish only once the five other tasks wait for this computation.
                        while memoshelve_build::__private::waiting_on(&key) < 5 {
                            tokio::task::yield_now().await;
                        }
                        9u64
                    };
                    memo.call_async_with_status(&"spawned", compute).await
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for task in tasks {
            let (value, status) = task.await.unwrap();
            assert_eq!(value, 9);
            statuses.push(status);
        }
        statuses
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|status| **status == Status::Miss).count(), 1);
}

#[test]
fn a_cancelled_computation_hands_over_to_a_waiting_caller() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("it-async-cancel").dir(dir.path());
    let (_open, gate) = oneshot::channel::<()>();
    let runs = AtomicUsize::new(0);
    let mut first = Box::pin(memo.call_async(&1u8, gated(&runs, gate, 1)));
    let mut second = pin!(memo.call_async_with_status(&1u8, async { 2u64 }));
    // The first caller starts computing (its disk lookup runs on a helper thread first), then
    // waits for its gate, which never opens.
    block_on(std::future::poll_fn(|cx| match first.as_mut().poll(cx) {
        Poll::Pending if runs.load(Ordering::SeqCst) == 1 => Poll::Ready(()),
        Poll::Pending => Poll::Pending,
        Poll::Ready(_) => unreachable!("the gate never opens"),
    }));
    assert!(poll_once(second.as_mut()).is_pending(), "the second caller waits for the first");
    drop(first);
    assert_eq!(block_on(second), (2, Status::Miss));
}

#[test]
fn disk_work_runs_off_the_callers_thread() {
    let dir = tempfile::tempdir().unwrap();
    let memo = disk_only("it-async-offload", dir.path());
    block_on(memo.call_async(&0u8, async { vec![1u8; 100_000] }));
    let checked_on = Arc::new(Mutex::new(None));
    let seen = checked_on.clone();
    let memo = memo.validate(move |_: &Vec<u8>| {
        *seen.lock().unwrap() = std::thread::current().name().map(str::to_owned);
        true
    });
    let (value, status) = block_on(memo.call_async_with_status(&0u8, async { Vec::<u8>::new() }));
    assert_eq!((value.len(), status), (100_000, Status::Disk));
    let caller = std::thread::current().name().map(str::to_owned);
    let checked_on = checked_on.lock().unwrap().clone();
    assert_ne!(checked_on, caller);
    assert_eq!(checked_on.as_deref(), Some("memoshelve-io"));
}

static FETCHES: AtomicUsize = AtomicUsize::new(0);

#[memoize(dir = root())]
async fn fetch(id: u32, attempt: u8) -> String {
    FETCHES.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    format!("page {id} ({attempt})")
}

static LOOKUPS: AtomicUsize = AtomicUsize::new(0);

#[memoize(dir = root(), ignore(verbose))]
async fn lookup(name: String, verbose: bool) -> Result<u32, String> {
    let _ = verbose;
    LOOKUPS.fetch_add(1, Ordering::SeqCst);
    if name.is_empty() {
        return Err("empty name".to_owned());
    }
    Ok(name.len() as u32)
}

#[test]
fn memoized_async_fns_work_on_both_executors() {
    // `tokio::task::yield_now` only needs a waker: it runs under block_on too.
    assert_eq!(block_on(fetch(1, 0)), "page 1 (0)");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    assert_eq!(runtime.block_on(fetch(1, 0)), "page 1 (0)");
    // Spawned: the memoized future is `Send`.
    let spawned = runtime.block_on(async { tokio::spawn(fetch(2, 0)).await.unwrap() });
    assert_eq!(spawned, "page 2 (0)");
    assert_eq!(block_on(fetch(2, 0)), "page 2 (0)");
    assert_eq!(FETCHES.load(Ordering::SeqCst), 2);
    let (value, status): (String, _) =
        block_on(fetch_memo().call_async_with_status(&(1u32, 0u8), async { unreachable!() }));
    assert_eq!((value.as_str(), status), ("page 1 (0)", Status::Memory));

    assert_eq!(block_on(lookup(String::new(), false)), Err("empty name".to_owned()));
    assert_eq!(runtime.block_on(lookup(String::new(), true)), Err("empty name".to_owned()));
    assert_eq!(block_on(lookup("abc".to_owned(), false)), Ok(3));
    assert_eq!(runtime.block_on(lookup("abc".to_owned(), true)), Ok(3));
    assert_eq!(LOOKUPS.load(Ordering::SeqCst), 3);
}

/// Yields this thread until `count` callers wait on `key`, for at most 30 s: where they never
/// would (a caller that does not wait computes instead), the test's assertions fail rather than
/// the test hanging.
fn until_waiting(key: &memoshelve_build::Key, count: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while memoshelve_build::__private::waiting_on(key) < count
        && std::time::Instant::now() < deadline
    {
        std::thread::yield_now();
    }
}

/// Yields this thread until `runs` reaches `count` (at most 30 s).
fn until_ran(runs: &AtomicUsize, count: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while runs.load(Ordering::SeqCst) < count && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
}

#[test]
fn an_async_caller_waits_for_a_sync_caller_computing_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("it-flight-sync-then-async").dir(dir.path());
    let key = memo.key_for::<u64, _>(&"mixed").unwrap();
    let runs = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let sync = scope.spawn(|| {
            memo.call(&"mixed", || {
                runs.fetch_add(1, Ordering::SeqCst);
                until_waiting(&key, 1);
                7u64
            })
        });
        until_ran(&runs, 1);
        let (value, status) = block_on(memo.call_async_with_status(&"mixed", async {
            runs.fetch_add(1, Ordering::SeqCst);
            8u64
        }));
        assert_eq!((value, sync.join().unwrap()), (7, 7), "the async caller computed too");
        assert_ne!(status, Status::Miss);
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn a_sync_caller_waits_for_an_async_caller_computing_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("it-flight-async-then-sync").dir(dir.path());
    let key = memo.key_for::<u64, _>(&"mixed").unwrap();
    let runs = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let asynchronous = scope.spawn(|| {
            block_on(memo.call_async(&"mixed", async {
                runs.fetch_add(1, Ordering::SeqCst);
                until_waiting(&key, 1);
                5u64
            }))
        });
        until_ran(&runs, 1);
        let (value, status) = memo.call_with_status(&"mixed", || {
            runs.fetch_add(1, Ordering::SeqCst);
            6u64
        });
        assert_eq!((value, asynchronous.join().unwrap()), (5, 5), "the sync caller computed too");
        assert_ne!(status, Status::Miss);
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn a_sync_call_inside_an_async_computation_of_its_key_does_not_wait_for_itself() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Arc::new(Memo::new("it-flight-nested").dir(dir.path()));
    let (done, finished) = std::sync::mpsc::channel();
    let inner = memo.clone();
    std::thread::spawn(move || {
        // One thread drives the async computation, which calls the sync form of its own key.
        let value =
            block_on(memo.call_async(&"nested", async move { inner.call(&"nested", || 3u64) + 1 }));
        let _ = done.send(value);
    });
    let value = finished.recv_timeout(std::time::Duration::from_secs(60));
    assert!(value.is_ok(), "the sync call waited for the computation it is part of");
}
