//! The call protocol: a lookup, else one computation per key (a single flight within the
//! process, a lock per key across processes with `allow_race(false)`), the store, and audits.

use super::*;
use crate::Status;
use std::time::Instant;

impl<H> Memo<H> {
    /// Returns the cached value for `args`, or runs `compute`, caches its value and returns it.
    /// Never fails because of the cache: a cache problem is one warning and a recomputation.
    pub fn call<A: ?Sized, T: Cacheable>(&self, args: &A, compute: impl FnOnce() -> T) -> T
    where
        H: ArgsEncoder<A>,
    {
        self.call_with_status(args, compute).0
    }

    /// Like [`Memo::call`], and says where the value came from.
    pub fn call_with_status<A: ?Sized, T: Cacheable>(
        &self,
        args: &A,
        compute: impl FnOnce() -> T,
    ) -> (T, Status)
    where
        H: ArgsEncoder<A>,
    {
        match self.compute_through(args, || Ok::<T, std::convert::Infallible>(compute())) {
            Ok(found) => found,
            Err(never) => match never {},
        }
    }

    /// Like [`Memo::call`] for a fallible computation: an `Err` is returned and not cached.
    ///
    /// # Errors
    /// Only the errors of `compute`; cache problems are warnings.
    pub fn try_call<A: ?Sized, T: Cacheable, E>(
        &self,
        args: &A,
        compute: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E>
    where
        H: ArgsEncoder<A>,
    {
        self.compute_through(args, compute).map(|(value, _)| value)
    }

    /// The one lookup-or-compute path behind `call`, `call_with_status` and `try_call`.
    pub(super) fn compute_through<A: ?Sized, T: Cacheable, E>(
        &self,
        args: &A,
        compute: impl FnOnce() -> Result<T, E>,
    ) -> Result<(T, Status), E>
    where
        H: ArgsEncoder<A>,
    {
        if self.disabled() {
            // Still resolve the declared inputs: their rerun directives must not depend on
            // whether the cache is on, or disabling it would change when cargo reruns.
            self.key_inputs();
            return compute().map(|value| (value, Status::Miss));
        }
        let Some(key) = self.key_of::<A, T>(args) else {
            return compute().map(|value| (value, Status::Miss));
        };
        self.memoize(
            key,
            |disk_only| self.lookup_from::<T>(&key, disk_only),
            compute,
            |value, took| self.store_or_warn(key, value, self.args_encoder.render(args), took),
        )
    }

    /// The lookup-or-compute sequence shared by values and file steps: `lookup(false)` asks
    /// every tier; on a miss without races allowed, the key's lock is taken and `lookup(true)`
    /// asks the disk again (another process may have just computed it); then `compute` runs and
    /// `store` keeps its result. Errors of `compute` are returned and nothing is stored.
    pub(crate) fn memoize<R, E>(
        &self,
        key: Key,
        lookup: impl Fn(bool) -> Option<(R, Status)>,
        compute: impl FnOnce() -> Result<R, E>,
        store: impl FnOnce(&R, Duration),
    ) -> Result<(R, Status), E> {
        // A hit reads the clock only when it is to be reported.
        let started = (self.options.log != Log::NONE).then(Instant::now);
        // Threads of this process asking for the same missing key compute it once.
        let _leader = loop {
            if let Some((value, status)) = lookup(false) {
                if let Some(disk) = self.disk().filter(|_| crate::memo::audit::due()) {
                    return self.audit(disk, key, value, status, compute, store);
                }
                self.record_event(&key, status);
                if let Some(started) = started {
                    self.report(&key, status, started.elapsed());
                }
                return Ok((value, status));
            }
            if let Some(leader) = crate::memo::flight::lead_or_wait(&key) {
                break leader;
            }
        };
        // One process computes a key at a time when races are not allowed; the others wait,
        // then find its result on disk.
        let lock = self.compute_lock(&key);
        if lock.is_some()
            && let Some((value, status)) = lookup(true)
        {
            self.record_event(&key, status);
            if let Some(started) = started {
                self.report(&key, status, started.elapsed());
            }
            return Ok((value, status));
        }
        let started = Instant::now();
        let value = compute()?;
        let took = started.elapsed();
        self.report(&key, Status::Miss, took);
        self.record_event(&key, Status::Miss);
        store(&value, took);
        drop(lock);
        Ok((value, Status::Miss))
    }

    /// With `allow_race(false)`, waits for and takes the key's cross-process lock (blocking). `None`
    /// when races are allowed, the disk tier is off, or the lock could not be had (warned once).
    pub(crate) fn compute_lock(&self, key: &Key) -> Option<std::fs::File> {
        let disk = self.disk().filter(|_| !self.options.allow_race)?;
        match disk.lock_key(key, self.options.lock_timeout) {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                cargo::warn_once(
                    &format!("lock {}", self.options.name),
                    &format!(
                        "{} {}: waited {}s for another process to compute it; computing here too",
                        self.options.name,
                        key.short(),
                        self.options.lock_timeout.as_secs()
                    ),
                );
                None
            }
            Err(err) => {
                cargo::warn_once(
                    &format!("lock {}", disk.root().display()),
                    &format!("{err}; computing unlocked"),
                );
                None
            }
        }
    }

    /// `MEMOSHELVE_AUDIT`: recomputes a hit and compares the stored result (the blake3 of the
    /// encoded value, or of a file step's manifest, which holds every file's hash) with the
    /// fresh one. A mismatch means the computation depends on something not in its key: one
    /// warning names the entry, and the fresh result is kept (returned and stored).
    pub(super) fn audit<R, E>(
        &self,
        disk: &Disk,
        key: Key,
        cached: R,
        status: Status,
        compute: impl FnOnce() -> Result<R, E>,
        store: impl FnOnce(&R, Duration),
    ) -> Result<(R, Status), E> {
        let stored_hash = |disk: &Disk| {
            disk.find(&self.options.name, &key).ok().flatten().map(|record| record.blake3)
        };
        let Some(before) = stored_hash(disk) else {
            // Only in memory: nothing to compare against.
            return Ok((cached, status));
        };
        let started = Instant::now();
        let fresh = compute()?;
        let took = started.elapsed();
        store(&fresh, took);
        match stored_hash(disk) {
            Some(after) if after != before => {
                let fix = if cargo::is_transparent(&self.options.name) {
                    "list a variable it reads in MEMOSHELVE_BUILD_SCRIPTS_ENV, or always run \
                     the package with MEMOSHELVE_BUILD_SCRIPTS_SKIP"
                } else {
                    "declare the input with input_file/input_glob/env, or bump version"
                };
                cargo::warn_once(
                    &format!("audit {} {key}", self.options.name),
                    &format!(
                        "audit: {} {} gave a different result when recomputed than the cached \
                         one: it depends on something its key does not cover ({fix}); keeping \
                         the fresh result",
                        self.options.name,
                        key.short()
                    ),
                );
                self.record_event(&key, Status::Miss);
                Ok((fresh, Status::Miss))
            }
            _ => {
                self.record_event(&key, status);
                Ok((fresh, status))
            }
        }
    }
}
