//! Parallel work on scoped std threads: as many as cargo gives the build (`NUM_JOBS`, its
//! `-j`) inside a build script, one per core elsewhere. No thread pool crate: a
//! build-dependency's every dependency is compiled on every clean build of its users.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

thread_local! {
    /// Set on the threads of a [`map`]: work started there runs on that thread, so nested
    /// parallel work (a `par_map` whose items hash many files) never multiplies the threads.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// How many threads parallel work may use here (1 inside parallel work already).
pub(crate) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    if INSIDE.with(Cell::get) {
        return 1;
    }
    *THREADS.get_or_init(|| {
        std::env::var("NUM_JOBS")
            .ok()
            .and_then(|jobs| jobs.trim().parse::<usize>().ok())
            .or_else(|| std::thread::available_parallelism().ok().map(std::num::NonZero::get))
            .unwrap_or(1)
            .max(1)
    })
}

/// `items.iter().map(work)`, on up to [`threads`] threads (this one included), in order. Each
/// thread takes the next item when it is done with one, so one slow item holds up no other. A
/// panic in `work` is raised here once every thread has stopped.
pub(crate) fn map<A: Sync, T: Send>(items: &[A], work: impl Fn(&A) -> T + Sync) -> Vec<T> {
    let helpers = threads().min(items.len()).saturating_sub(1);
    if helpers == 0 {
        return items.iter().map(work).collect();
    }
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, T)>> = Mutex::new(Vec::with_capacity(items.len()));
    let worker = || {
        let was_inside = INSIDE.with(|inside| inside.replace(true));
        let mut mine = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(index) else { break };
            mine.push((index, work(item)));
        }
        INSIDE.with(|inside| inside.set(was_inside));
        done.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(mine);
    };
    std::thread::scope(|scope| {
        for _ in 0..helpers {
            // A thread that cannot start leaves its share to the others.
            let _ = std::thread::Builder::new().spawn_scoped(scope, worker);
        }
        worker();
    });
    let mut done = done.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    done.sort_unstable_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, value)| value).collect()
}

/// Runs `left` on a new thread and `right` on this one, when there are threads to spare (else,
/// or if no thread can start, both here).
pub(crate) fn join<L: Send, R>(
    left: impl FnOnce() -> L + Send,
    right: impl FnOnce() -> R,
) -> (L, R) {
    if threads() < 2 {
        return (left(), right());
    }
    let left = Mutex::new(Some(left));
    let run_left = || {
        let work = left.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        work.expect("the left half runs once")()
    };
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new().spawn_scoped(scope, || {
            INSIDE.with(|inside| inside.set(true));
            run_left()
        });
        match spawned {
            Ok(handle) => {
                let right = right();
                let left = handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (left, right)
            }
            Err(_) => (run_left(), right()),
        }
    })
}
