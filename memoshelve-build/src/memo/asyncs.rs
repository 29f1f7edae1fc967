//! Async calls: `Memo::call_async` and friends, one computation per key in a process, and disk
//! work kept off the executor's threads. Runtime-agnostic: only `std::task`.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::Instant;

use crate::key::Key;
use crate::memo::flight::{self, Entered, FlightDone};
use crate::memo::status::Status;
use crate::memo::{ArgsEncoder, Cacheable, Memo, PostcardArgs};

impl<H> Memo<H> {
    /// [`Memo::call`] for an async computation: returns the cached value for `args`, or awaits
    /// `compute`, caches its value and returns it. Never fails because of the cache.
    ///
    /// It needs no particular executor (tokio, async-std, `futures::executor::block_on`,
    /// pollster...): the future only uses [`std::task`]. `compute` is awaited in the caller's task
    /// and only on a miss.
    ///
    /// - **One computation per key:** concurrent `call_async`s in one process that miss the same
    ///   key await a single computation (the first caller's `compute`; the others are dropped
    ///   unpolled) and all get its value, reported as [`Status::Memory`]. If that computation fails
    ///   ([`Memo::try_call_async`]) or its caller is cancelled, the next waiting caller computes.
    /// - **No blocking I/O on the executor:** memory hits are answered inline. Everything that
    ///   touches the disk (reading and checking a value, writing one, waiting for the
    ///   cross-process lock of [`Memo::allow_race`], resolving declared inputs) runs on a helper
    ///   thread started for it, and the task is woken when it is done, so a large value never
    ///   stalls a runtime's worker thread.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use memoshelve_build::{Memo, Status};
    ///
    /// async fn download(id: u32) -> String {
    ///     format!("body of {id}") // imagine a slow request
    /// }
    ///
    /// let memo = Memo::new("downloads").dir(dir.path());
    /// # futures::executor::block_on(async {
    /// let body: String = memo.call_async(&7u32, download(7)).await;
    /// assert_eq!(body, "body of 7");
    /// let (body, status) = memo.call_async_with_status(&7u32, download(7)).await;
    /// assert_eq!((body.as_str(), status), ("body of 7", Status::Memory));
    /// # });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn call_async<A: ?Sized, T: Cacheable>(
        &self,
        args: &A,
        compute: impl Future<Output = T>,
    ) -> T
    where
        H: ArgsEncoder<A>,
    {
        self.call_async_with_status(args, compute).await.0
    }

    /// Like [`Memo::call_async`], and says where the value came from.
    pub async fn call_async_with_status<A: ?Sized, T: Cacheable>(
        &self,
        args: &A,
        compute: impl Future<Output = T>,
    ) -> (T, Status)
    where
        H: ArgsEncoder<A>,
    {
        let compute = async { Ok::<T, std::convert::Infallible>(compute.await) };
        match self.compute_through_async(args, compute).await {
            Ok(found) => found,
            Err(never) => match never {},
        }
    }

    /// Like [`Memo::call_async`] for a fallible computation: an `Err` is returned and not cached.
    ///
    /// # Errors
    /// Only the errors of `compute`; cache problems are warnings.
    pub async fn try_call_async<A: ?Sized, T: Cacheable, E>(
        &self,
        args: &A,
        compute: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E>
    where
        H: ArgsEncoder<A>,
    {
        self.compute_through_async(args, compute).await.map(|(value, _)| value)
    }

    async fn compute_through_async<A: ?Sized, T: Cacheable, E>(
        &self,
        args: &A,
        compute: impl Future<Output = Result<T, E>>,
    ) -> Result<(T, Status), E>
    where
        H: ArgsEncoder<A>,
    {
        // Resolved even when disabled: their rerun directives must not depend on the switch.
        self.resolve_inputs().await;
        let key = if self.disabled() { None } else { self.key_of::<A, T>(args) };
        let Some(key) = key else {
            return compute.await.map(|value| (value, Status::Miss));
        };
        self.memoize_async(key, || (self.render_args(args), compute)).await
    }

    /// A copy of this `Memo` that owns everything and encodes no arguments, for blocking work
    /// moved to another thread. It shares the resolved inputs and the opened disk tier.
    fn detached(&self) -> Memo {
        Memo { options: self.options.clone(), args_encoder: PostcardArgs }
    }

    /// Whether the declared inputs and build context are resolved (resolving them may hash files
    /// and run `rustc -vV`, so async calls do it off the executor's thread).
    fn inputs_resolved(&self) -> bool {
        self.options.resolved.inputs.get().is_some()
    }

    /// Resolves the declared inputs (hashing files, running tools) on a helper thread, once.
    pub(crate) async fn resolve_inputs(&self) {
        if !self.inputs_resolved() {
            let memo = self.detached();
            unblock(move || {
                memo.key_inputs();
            })
            .await;
        }
    }

    /// The async lookup-or-compute path: memory inline; then, as the one caller computing `key`
    /// in this process, the disk and the remote (and the key's lock) on a helper thread; then `start` gives the
    /// args rendering and the computation, which is awaited here; its value is stored on a
    /// helper thread. Concurrent callers of the same key wait for that one computation.
    pub(crate) async fn memoize_async<T: Cacheable, E, F: Future<Output = Result<T, E>>>(
        &self,
        key: Key,
        start: impl FnOnce() -> (String, F),
    ) -> Result<(T, Status), E> {
        let started = Instant::now();
        let mut start = Some(start);
        loop {
            if let Some(value) = self.lookup_memory::<T>(&key) {
                self.report(&key, Status::Memory, started.elapsed());
                return Ok((value, Status::Memory));
            }
            let leader = match flight::enter(key) {
                Entered::Leader(leader) => leader,
                Entered::Follower(flight) => {
                    let shared = FlightDone { flight }.await;
                    if let Some(value) = shared.as_deref().and_then(|any| any.downcast_ref::<T>()) {
                        self.report(&key, Status::Memory, started.elapsed());
                        return Ok((value.clone(), Status::Memory));
                    }
                    // The computation failed or its caller went away: look again, and compute
                    // here if nobody else does.
                    continue;
                }
            };
            let memo = self.detached();
            let (found, lock) = leader
                .polled(unblock(move || {
                    let mut lock = None;
                    let mut found = memo.lookup_stored::<T>(&key);
                    if found.is_none() {
                        lock = memo.compute_lock(&key);
                        // Another process may have computed it while we waited for the lock (its
                        // result is on this disk).
                        if lock.is_some() {
                            found = memo.lookup_disk::<T>(&key).map(|value| (value, Status::Disk));
                        }
                    }
                    if let Some((_, status)) = &found {
                        memo.record_event(&key, *status);
                    }
                    (found, lock)
                }))
                .await;
            if let Some((value, status)) = found {
                drop(lock);
                self.report(&key, status, started.elapsed());
                leader.finish(&value);
                return Ok((value, status));
            }
            let (args, compute) = start.take().expect("one caller computes a key once")();
            let computing = Instant::now();
            let value = leader.polled(compute).await?;
            let took = computing.elapsed();
            self.report(&key, Status::Miss, took);
            let memo = self.detached();
            let value = leader
                .polled(unblock(move || {
                    memo.record_event(&key, Status::Miss);
                    memo.store_or_warn(key, &value, args, took);
                    drop(lock);
                    value
                }))
                .await;
            leader.finish(&value);
            return Ok((value, Status::Miss));
        }
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent between statements: a panic elsewhere
    // cannot leave it half-updated.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs blocking `work` on a helper thread and resolves to its result (a panic in `work` is
/// resumed in the awaiting task). When no thread can be started, `work` runs inline.
pub(crate) fn unblock<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> impl Future<Output = R> {
    let slot: Arc<Mutex<Slot<R>>> = Arc::default();
    let work = Arc::new(Mutex::new(Some(work)));
    let spawned = {
        let slot = slot.clone();
        let work = work.clone();
        thread::Builder::new().name("memoshelve-io".to_owned()).spawn(move || {
            let Some(work) = locked(&work).take() else { return };
            let result = catch_unwind(AssertUnwindSafe(work));
            let waker = {
                let mut slot = locked(&slot);
                slot.result = Some(result);
                slot.waker.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        })
    };
    if spawned.is_err()
        && let Some(work) = locked(&work).take()
    {
        locked(&slot).result = Some(catch_unwind(AssertUnwindSafe(work)));
    }
    Unblock { slot }
}

struct Slot<R> {
    result: Option<thread::Result<R>>,
    waker: Option<Waker>,
}

impl<R> Default for Slot<R> {
    fn default() -> Self {
        Slot { result: None, waker: None }
    }
}

struct Unblock<R> {
    slot: Arc<Mutex<Slot<R>>>,
}

impl<R> Future for Unblock<R> {
    type Output = R;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let mut slot = locked(&self.slot);
        match slot.result.take() {
            Some(Ok(value)) => Poll::Ready(value),
            Some(Err(panic)) => {
                drop(slot);
                resume_unwind(panic)
            }
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
