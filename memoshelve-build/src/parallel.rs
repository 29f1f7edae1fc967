//! Parallel work on scoped std threads: as many as cargo gives the build (`NUM_JOBS`, its
//! `-j`) inside a build script, one per core elsewhere. No thread pool crate: a
//! build-dependency's every dependency is compiled on every clean build of its users.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

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
        let mut mine = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(index) else { break };
            mine.push((index, work(item)));
        }
        done.lock().unwrap_or_else(PoisonError::into_inner).extend(mine);
    };
    // A thread that cannot start leaves its share to the others.
    run_threads(helpers, &worker, &mut |_| {
        let was_inside = INSIDE.with(|inside| inside.replace(true));
        worker();
        INSIDE.with(|inside| inside.set(was_inside));
    });
    // Back in order by index, without a sort (each element type would be a copy of one).
    let mut slots: Vec<Option<T>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    for (index, value) in done.into_inner().unwrap_or_else(PoisonError::into_inner) {
        slots[index] = Some(value);
    }
    slots.into_iter().map(|value| value.expect("every item was done")).collect()
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
    let left = Mutex::new((Some(left), None));
    let run_left = || {
        let work = left.lock().unwrap_or_else(PoisonError::into_inner).0.take();
        if let Some(work) = work {
            let value = work();
            left.lock().unwrap_or_else(PoisonError::into_inner).1 = Some(value);
        }
    };
    let mut right = Some(right);
    let mut right_value = None;
    run_threads(1, &run_left, &mut |started| {
        if started == 0 {
            run_left();
        }
        right_value = right.take().map(|right| right());
    });
    let left = left.into_inner().unwrap_or_else(PoisonError::into_inner).1;
    (left.expect("the left half ran"), right_value.expect("the right half ran"))
}

/// Starts `count` scoped threads that each run `helper` (inside parallel work: see [`threads`]),
/// runs `here` on this thread with the number that started, and returns once all have stopped;
/// a panic on any of them is raised here then. Not generic, so that the code of threads and
/// scopes is compiled once, not once per caller.
pub(crate) fn run_threads(count: usize, helper: &(dyn Fn() + Sync), here: &mut dyn FnMut(usize)) {
    std::thread::scope(|scope| {
        let started = (0..count)
            .filter(|_| {
                // Named, so that a file step can tell memoshelve's threads from the program's
                // (`cargo::other_threads_running`), even while one is still exiting.
                std::thread::Builder::new()
                    .name("memoshelve-work".to_owned())
                    .spawn_scoped(scope, || {
                        INSIDE.with(|inside| inside.set(true));
                        helper();
                    })
                    .is_ok()
            })
            .count();
        here(started);
    });
}

/// An unbounded queue between threads, closed by either side (std's channels were a tenth of
/// this library's compile: their code is compiled again for each element type).
pub(crate) struct Queue<T> {
    state: Mutex<(VecDeque<T>, bool)>,
    changed: Condvar,
}

impl<T> Queue<T> {
    pub(crate) fn new() -> Queue<T> {
        Queue { state: Mutex::new((VecDeque::new(), false)), changed: Condvar::new() }
    }

    /// Appends `item`; `false` (and `item` dropped) once the queue is closed.
    pub(crate) fn push(&self, item: T) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.1 {
            return false;
        }
        state.0.push_back(item);
        self.changed.notify_all();
        true
    }

    /// The next item, waiting for one; `None` once the queue is closed and empty.
    pub(crate) fn pop(&self) -> Option<T> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(item) = state.0.pop_front() {
                return Some(item);
            }
            if state.1 {
                return None;
            }
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// No more pushes; waiting pops return what is left, then `None`.
    pub(crate) fn close(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1 = true;
        self.changed.notify_all();
    }

    /// A guard that closes the queue when dropped (a thread's every way out, panics included).
    pub(crate) fn closer(&self) -> Closer<'_, T> {
        Closer(self)
    }
}

/// Closes its [`Queue`] when dropped.
pub(crate) struct Closer<'a, T>(&'a Queue<T>);

impl<T> Drop for Closer<'_, T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn parallel_map_keeps_order_and_runs_nested_work_on_its_own_thread() {
        let items: Vec<u32> = (0..1000).collect();
        let nested_threads = std::sync::Mutex::new(Vec::new());
        let out = super::map(&items, |item| {
            nested_threads.lock().unwrap().push(super::threads());
            item * 2
        });
        assert_eq!(out, items.iter().map(|item| item * 2).collect::<Vec<_>>());
        if super::threads() > 1 {
            assert!(nested_threads.into_inner().unwrap().iter().all(|&threads| threads == 1));
        }
        let (left, right) = super::join(|| 1 + 1, || 2 + 2);
        assert_eq!((left, right), (2, 4));
        let panicked = std::panic::catch_unwind(|| {
            super::map(&items, |item| assert!(*item != 500, "item 500"));
        });
        assert!(panicked.is_err(), "a panic in the work reaches the caller");
    }
}
