//! The tiers in order for one key: a lookup through memory, disk and the remote (fetched into
//! the disk tier, then read from there), and a store to disk with write-through to the remote.
//! Values and file steps both go through `read_stored_tiers` and `written`.

use super::*;
use crate::EntryRecord;
use crate::FORMAT_VERSION;
use crate::Status;
use crate::tier::disk::now_ms;
use crate::tier::memory::MemoryTier;

impl<H> Memo<H> {
    /// Reports an event the log asks for: a miss with how long the computation took, a hit
    /// with how long the lookup (and, for a file step, the restore) took.
    pub(crate) fn report(&self, key: &Key, status: Status, took: Duration) {
        if self.options.log.includes(status) {
            let verb = if status == Status::Miss { "computed" } else { "served" };
            let took = took.as_secs_f64();
            cargo::report(&format!(
                "{} {}: {status}, {verb} in {took:.4}s",
                self.options.name,
                key.short()
            ));
        }
    }

    /// Appends disk hits and misses to the root's event log, for `cargo memoshelve stats`.
    /// Memory hits (repeats within one process) are not logged: they must stay nanoseconds.
    pub(crate) fn record_event(&self, key: &Key, status: Status) {
        let tier = match status {
            Status::Disk => "disk",
            Status::Remote => "remote",
            Status::Miss => "miss",
            _ => return,
        };
        if let Some(disk) = self.disk() {
            disk.log_event(tier, &self.options.name, key);
        }
    }

    /// Memory, then disk, then remote. A bad disk entry (corrupt, undecodable, invalid) is
    /// removed.
    pub(crate) fn lookup<T: Cacheable>(&self, key: &Key) -> Option<(T, Status)> {
        if let Some(value) = self.lookup_memory::<T>(key) {
            return Some((value, Status::Memory));
        }
        self.lookup_stored::<T>(key)
    }

    /// The tiers that need I/O: disk, then remote (the async path asks them on a helper thread).
    pub(crate) fn lookup_stored<T: Cacheable>(&self, key: &Key) -> Option<(T, Status)> {
        self.read_stored_tiers(key, false, |disk| self.value_on_disk::<T>(disk, key))
    }

    /// The one read of the tiers below memory, for values and file steps alike: `read` from
    /// the disk tier; on a miss, unless `disk_only`, the remote tier's entry is fetched (checked)
    /// into the disk tier and `read` from there. Nothing from the remote is served directly.
    pub(crate) fn read_stored_tiers<R>(
        &self,
        key: &Key,
        disk_only: bool,
        read: impl Fn(&Disk) -> Option<R>,
    ) -> Option<(R, Status)> {
        let disk = self.disk()?;
        if let Some(found) = read(disk) {
            return Some((found, Status::Disk));
        }
        if disk_only
            || !self.options.remote
            || !crate::tier::remote::fetch(disk, &self.options.name, key)
        {
            return None;
        }
        read(disk).map(|found| (found, Status::Remote))
    }

    /// What every store into the disk tier ends with, for values and file steps alike: an
    /// entry `written` is written through to the remote tier; the result is passed on.
    pub(crate) fn written(&self, disk: &Disk, key: &Key, written: Result<()>) -> Result<()> {
        if written.is_ok() && self.options.remote {
            crate::tier::remote::write_through(disk, &self.options.name, key);
        }
        written
    }

    /// The memory tier only: no I/O, so async calls ask it inline.
    /// [`Memo::lookup`], or only the disk tier: what `memoize` asks after waiting for another
    /// process's computation (its result can only be on disk).
    pub(crate) fn lookup_from<T: Cacheable>(
        &self,
        key: &Key,
        disk_only: bool,
    ) -> Option<(T, Status)> {
        if !disk_only && let Some(value) = self.lookup_memory::<T>(key) {
            return Some((value, Status::Memory));
        }
        self.read_stored_tiers(key, disk_only, |disk| self.value_on_disk::<T>(disk, key))
    }

    pub(crate) fn lookup_memory<T: Cacheable>(&self, key: &Key) -> Option<T> {
        let shared =
            if self.options.mem_capacity == 0 { None } else { MemoryTier::global().get(key) }?;
        match shared.downcast_ref::<T>() {
            Some(value) if self.is_valid(value) => Some(value.clone()),
            _ => {
                MemoryTier::global().remove(key);
                None
            }
        }
    }

    pub(crate) fn lookup_disk<T: Cacheable>(&self, key: &Key) -> Option<T> {
        self.value_on_disk(self.disk()?, key)
    }

    /// A value of the disk tier, checked, decoded and validated (then also kept in memory).
    pub(super) fn value_on_disk<T: Cacheable>(&self, disk: &Disk, key: &Key) -> Option<T> {
        let (_, value, bytes) = self.read_entry::<T>(disk, key)?;
        if !self.is_valid(&value) {
            // Failed validation: a miss; the fresh value will replace it.
            let _ = disk.remove(&self.options.name, key);
            return None;
        }
        self.remember(*key, &value, bytes);
        Some(value)
    }

    /// Reads the entry of `key` from disk, checked and decoded as `V`, with its record and
    /// encoded size, and refreshes its last use. A damaged entry is reported once, removed, and
    /// read as `None`.
    pub(crate) fn read_entry<V: DeserializeOwned + 'static>(
        &self,
        disk: &Disk,
        key: &Key,
    ) -> Option<(EntryRecord, V, u64)> {
        let record = match disk.find_and_touch(&self.options.name, key) {
            Ok(Some(record)) => record,
            Ok(None) => return None,
            Err(err) => {
                self.discard(disk, key, &err);
                return None;
            }
        };
        // A `Vec<u8>`'s length prefix is read apart, so its bytes need no moving afterwards.
        let skip = codec::prefix_len::<V>(record.size);
        let decoded = disk.load_parts(&record, key, skip).and_then(|(head, rest)| {
            let size = (head.len() + rest.len()) as u64;
            let value: V = codec::decode_parts(head, rest).map_err(|err| {
                disk.corrupt(
                    &self.options.name,
                    key,
                    format!("cannot decode as {}: {err}", type_name::<V>()),
                )
            })?;
            Ok((value, size))
        });
        match decoded {
            Ok((value, bytes)) => Some((record, value, bytes)),
            Err(err) => {
                self.discard(disk, key, &err);
                None
            }
        }
    }

    /// Reports a bad entry once and removes it, so the next call recomputes a healthy one.
    pub(crate) fn discard(&self, disk: &Disk, key: &Key, err: &Error) {
        // A blob whose bytes are not their hash was deleted where that was found; the blob of a
        // value that only fails to decode is right, and other entries may share it.
        if let Error::Corrupt { .. } = err {
            let _ = disk.remove(&self.options.name, key);
        }
        cargo::warn_once(
            &format!("read {}", disk.root().display()),
            &format!("{err}; recomputing"),
        );
    }

    pub(super) fn remember<T: Cacheable>(&self, key: Key, value: &T, bytes: u64) {
        if self.options.mem_capacity == 0 {
            return;
        }
        let shared: Arc<dyn Any + Send + Sync> = Arc::new(value.clone());
        MemoryTier::global().insert(
            key,
            self.options.namespace.clone(),
            shared,
            bytes,
            self.options.mem_capacity,
        );
    }

    /// Writes both tiers. Errors are returned; the memoizing calls turn them into a warning.
    pub(super) fn store<T: Cacheable>(
        &self,
        key: Key,
        value: &T,
        args: String,
        took: Duration,
    ) -> Result<()> {
        let bytes = codec::encode(value).map_err(|source| Error::Encode {
            what: "value",
            name: self.options.name.clone(),
            source: source.into(),
        })?;
        self.remember(key, value, bytes.len() as u64);
        let Some(disk) = self.disk() else {
            return Ok(());
        };
        let stored = {
            let _guard = disk.write_guard();
            disk.store(self.record_for(key, type_name::<T>(), args, took), &bytes)
        };
        self.written(disk, &key, stored)
    }

    pub(crate) fn store_or_warn<T: Cacheable>(
        &self,
        key: Key,
        value: &T,
        args: String,
        took: Duration,
    ) {
        if let Err(err) = self.store(key, value, args, took) {
            self.warn_store_failed(&err);
        }
    }

    /// The index record of a new entry (size and hash are filled in by the disk tier).
    pub(crate) fn record_for(
        &self,
        key: Key,
        type_name: &str,
        args: String,
        took: Duration,
    ) -> EntryRecord {
        EntryRecord {
            format: FORMAT_VERSION,
            name: self.options.name.clone(),
            version: self.options.version.clone(),
            key: key.to_hex(),
            type_name: type_name.to_owned(),
            created_ms: now_ms(),
            compute_us: took.as_micros() as u64,
            size: 0,
            blake3: String::new(),
            args: truncate(args, ARGS_RENDERING_MAX),
            inputs: self.key_inputs().to_vec(),
            inline: None,
        }
    }

    /// The short rendering of `args` kept in an entry's record.
    pub(crate) fn render_args<A: ?Sized>(&self, args: &A) -> String
    where
        H: ArgsEncoder<A>,
    {
        self.args_encoder.render(args)
    }

    /// One warning per problem when a computed result could not be stored.
    pub(crate) fn warn_store_failed(&self, err: &Error) {
        let topic = match err {
            Error::Uncacheable { .. } => {
                return cargo::warn_once(
                    &format!("uncacheable {}", self.options.name),
                    &err.to_string(),
                );
            }
            Error::Encode { .. } => format!("encode {}", self.options.name),
            _ => format!("write {}", self.root().unwrap_or_default().display()),
        };
        cargo::warn_once(
            &topic,
            &format!(
                "{err}; the result was computed but not cached \
                 (make the cache root writable, or set MEMOSHELVE_DIR to a writable directory)"
            ),
        );
    }
}
