//! Single flight inside one process: callers asking for the same missing key compute it once,
//! whether they are threads (`call`, `par_map` items), async tasks (`call_async`) or both; the
//! others wait for that computation, then look the key up again (async waiters are handed the
//! value itself when an async caller computed it).
//!
//! A sync caller blocks its thread while it waits, an async one awaits a waker. A sync caller
//! never blocks on a flight its own thread may have to drive: its own computation asking for its
//! key again, or an async computation its thread has polled (a single-threaded executor would
//! never get back to it); it computes instead. Across processes the per-key file lock of
//! `allow_race(false)` does the same; this works whatever `allow_race` says, and costs one map
//! lookup per miss.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::thread::ThreadId;

use crate::key::Key;

/// A computed value as async waiters get it.
pub(crate) type Shared = Arc<dyn Any + Send + Sync>;

/// The computations of keys in progress in this process.
static FLIGHTS: LazyLock<Mutex<HashMap<Key, Arc<Flight>>>> = LazyLock::new(Mutex::default);

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent between statements: a panic elsewhere
    // cannot leave it half-updated.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One computation of one key, and who waits for it.
#[derive(Default)]
pub(crate) struct Flight {
    state: Mutex<State>,
    landed: Condvar,
}

#[derive(Default)]
struct State {
    /// `Some` once the leader is done: its value for async waiters, or `None`.
    done: Option<Option<Shared>>,
    wakers: Vec<Waker>,
    /// The threads that may have to run the computation: a sync leader's own, or every thread
    /// that polled an async leader's task.
    runners: Vec<ThreadId>,
    /// The leader computes on its own thread (a sync call).
    sync: bool,
    /// Sync callers blocked on this flight.
    blocked: usize,
}

/// Held by the one caller computing a key; dropping it (after storing, or on failure, panic or
/// cancellation) wakes the waiters.
pub(crate) struct Leader {
    key: Key,
    flight: Arc<Flight>,
}

/// Makes this caller the leader of `key`'s computation, replacing in the map any flight it
/// must not wait for.
fn lead(flights: &mut HashMap<Key, Arc<Flight>>, key: Key, sync: bool) -> Leader {
    let flight = Arc::new(Flight::default());
    {
        let mut state = locked(&flight.state);
        state.runners.push(std::thread::current().id());
        state.sync = sync;
    }
    flights.insert(key, flight.clone());
    Leader { key, flight }
}

/// For a sync caller: becomes the leader for `key`, or, when another caller of this process is
/// computing it, waits for that computation to end and returns `None` (then look the key up
/// again: it is usually there; if the leader failed, call again to lead).
pub(crate) fn lead_or_wait(key: &Key) -> Option<Leader> {
    let me = std::thread::current().id();
    let flight = {
        let mut flights = locked(&FLIGHTS);
        match flights.get(key) {
            Some(flight) if !locked(&flight.state).runners.contains(&me) => flight.clone(),
            _ => return Some(lead(&mut flights, *key, true)),
        }
    };
    let mut state = locked(&flight.state);
    state.blocked += 1;
    while state.done.is_none() {
        state = flight.landed.wait(state).unwrap_or_else(PoisonError::into_inner);
    }
    state.blocked -= 1;
    None
}

impl Leader {
    /// Ends the flight; `shared` makes what async waiters get, and runs only when one waits.
    fn complete(&self, shared: impl FnOnce() -> Option<Shared>) {
        {
            let mut flights = locked(&FLIGHTS);
            if flights.get(&self.key).is_some_and(|flight| Arc::ptr_eq(flight, &self.flight)) {
                flights.remove(&self.key);
            }
        }
        let wakers = {
            let mut state = locked(&self.flight.state);
            if state.done.is_some() {
                return;
            }
            state.done = Some(if state.wakers.is_empty() { None } else { shared() });
            std::mem::take(&mut state.wakers)
        };
        self.flight.landed.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.complete(|| None);
    }
}

/// How many callers (async or sync) wait for another caller's computation of `key` in this
/// process.
#[cfg(feature = "macros")]
pub(crate) fn waiting_on(key: &Key) -> usize {
    let flight = locked(&FLIGHTS).get(key).cloned();
    flight.map_or(0, |flight| {
        let state = locked(&flight.state);
        state.wakers.len() + state.blocked
    })
}

/// The async side: a task leads a flight, or awaits another's.
#[cfg(feature = "async")]
mod tasks {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use super::{FLIGHTS, Flight, Leader, Shared, lead, locked};
    use crate::key::Key;

    /// What an async caller is: the one computing the key, or a waiter for another's computation.
    pub(crate) enum Entered {
        Leader(Leader),
        Follower(Arc<Flight>),
    }

    /// For an async caller: leads `key`'s computation, or follows the one in progress (a sync one on
    /// this very thread excepted: it is waiting for this call).
    pub(crate) fn enter(key: Key) -> Entered {
        let me = std::thread::current().id();
        let mut flights = locked(&FLIGHTS);
        match flights.get(&key) {
            Some(flight) => {
                let state = locked(&flight.state);
                if state.sync && state.runners.contains(&me) {
                    drop(state);
                    return Entered::Leader(lead(&mut flights, key, false));
                }
                drop(state);
                Entered::Follower(flight.clone())
            }
            None => Entered::Leader(lead(&mut flights, key, false)),
        }
    }

    impl Leader {
        /// Hands `value` to the async callers waiting (a clone, made only when one waits).
        pub(crate) fn finish<T: Clone + Send + Sync + 'static>(self, value: &T) {
            self.complete(|| Some(Arc::new(value.clone())));
        }

        /// Notes that the computing task is being polled on this thread (see [`Polled`]).
        fn polled_here(&self) {
            let me = std::thread::current().id();
            let mut state = locked(&self.flight.state);
            if !state.runners.contains(&me) {
                state.runners.push(me);
            }
        }

        /// `future`, noting every thread that polls it: a sync caller there must not block on this
        /// flight.
        pub(crate) fn polled<'a, F: Future>(&'a self, future: F) -> Polled<'a, F> {
            Polled { leader: self, future: Box::pin(future) }
        }
    }

    /// A future polled on behalf of a flight's async leader.
    pub(crate) struct Polled<'a, F> {
        leader: &'a Leader,
        future: Pin<Box<F>>,
    }

    impl<F: Future> Future for Polled<'_, F> {
        type Output = F::Output;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.leader.polled_here();
            self.future.as_mut().poll(cx)
        }
    }

    /// Resolves when the flight's leader is done: its value, or `None` when it failed, went away,
    /// or was a sync call (look the key up again).
    pub(crate) struct FlightDone {
        pub(crate) flight: Arc<Flight>,
    }

    impl Future for FlightDone {
        type Output = Option<Shared>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let mut state = locked(&self.flight.state);
            if let Some(done) = &state.done {
                return Poll::Ready(done.clone());
            }
            if !state.wakers.iter().any(|waker| waker.will_wake(cx.waker())) {
                state.wakers.push(cx.waker().clone());
            }
            Poll::Pending
        }
    }
}

#[cfg(feature = "async")]
pub(crate) use tasks::{Entered, FlightDone, enter};
