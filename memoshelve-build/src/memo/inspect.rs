//! Asking the tiers without computing: `get`, `contains`, `put`, `uncache`, and the listings.

use super::*;
use crate::EntryRecord;
use crate::Status;
use crate::tier::memory::MemoryTier;

impl<H> Memo<H> {
    /// The key a call with these arguments and value type `T` uses, or `None` when the
    /// arguments cannot be encoded.
    pub fn key_for<T: 'static, A: ?Sized>(&self, args: &A) -> Option<Key>
    where
        H: ArgsEncoder<A>,
    {
        self.key_of::<A, T>(args)
    }

    /// The cached value for `args`, without computing anything.
    pub fn get<T: Cacheable, A: ?Sized>(&self, args: &A) -> Option<T>
    where
        H: ArgsEncoder<A>,
    {
        self.get_with_status(args).map(|(value, _)| value)
    }

    /// The cached value for `args` and the tier it came from.
    pub fn get_with_status<T: Cacheable, A: ?Sized>(&self, args: &A) -> Option<(T, Status)>
    where
        H: ArgsEncoder<A>,
    {
        if self.disabled() {
            return None;
        }
        let key = self.key_of::<A, T>(args)?;
        let found = self.lookup::<T>(&key)?;
        self.record_event(&key, found.1);
        Some(found)
    }

    /// Whether a value of type `T` is cached for `args` in either tier. It does not read or
    /// check the value: a damaged entry still counts until a read removes it.
    pub fn contains<T: Cacheable, A: ?Sized>(&self, args: &A) -> bool
    where
        H: ArgsEncoder<A>,
    {
        if self.disabled() {
            return false;
        }
        let Some(key) = self.key_of::<A, T>(args) else {
            return false;
        };
        (self.options.mem_capacity > 0 && MemoryTier::global().contains(&key))
            || self.disk().is_some_and(|disk| {
                disk.find(&self.options.name, &key).is_ok_and(|found| found.is_some())
            })
    }

    /// Stores `value` as the result for `args` in both tiers.
    ///
    /// # Errors
    /// When the value cannot be encoded or the disk tier cannot be written (the memory tier
    /// keeps it regardless). Does nothing when the cache is disabled.
    pub fn put<T: Cacheable, A: ?Sized>(&self, args: &A, value: &T) -> Result<()>
    where
        H: ArgsEncoder<A>,
    {
        if self.disabled() {
            return Ok(());
        }
        let key = self.try_key::<A, T>(args)?;
        self.store(key, value, self.args_encoder.render(args), Duration::ZERO)
    }

    /// Removes the value of type `T` for `args` from both tiers; returns whether there was one.
    ///
    /// # Errors
    /// When the disk index cannot be written.
    pub fn uncache<T: Cacheable, A: ?Sized>(&self, args: &A) -> Result<bool>
    where
        H: ArgsEncoder<A>,
    {
        if self.disabled() {
            return Ok(false);
        }
        let Some(key) = self.key_of::<A, T>(args) else {
            return Ok(false);
        };
        let in_memory = MemoryTier::global().remove(&key);
        let on_disk = match self.disk() {
            Some(disk) => disk.remove(&self.options.name, &key)?,
            None => false,
        };
        Ok(in_memory || on_disk)
    }

    /// Keys of this name and version held in the memory tier of this process.
    pub fn mem_keys(&self) -> Vec<Key> {
        let mut keys = MemoryTier::global().keys(&self.options.namespace);
        keys.sort();
        keys
    }

    /// Keys of this name and version on disk. A listing error is warned about and gives none.
    pub fn disk_keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> =
            self.disk_records().iter().filter_map(|record| Key::from_hex(&record.key)).collect();
        keys.sort();
        keys
    }

    pub(super) fn disk_records(&self) -> Vec<EntryRecord> {
        let Some(disk) = self.disk() else {
            return Vec::new();
        };
        match disk.list(Some(&self.options.name)) {
            Ok(records) => records
                .into_iter()
                .filter(|record| record.version == self.options.version)
                .collect(),
            Err(err) => {
                cargo::warn_once(&format!("list {}", disk.root().display()), &err.to_string());
                Vec::new()
            }
        }
    }

    /// Keys of this name and version in either tier, sorted, without duplicates.
    pub fn keys(&self) -> Vec<Key> {
        let mut keys = self.mem_keys();
        keys.extend(self.disk_keys());
        keys.sort();
        keys.dedup();
        keys
    }

    /// Every readable `(key, value)` of type `T` under this name and version, from either tier,
    /// sorted by key. Damaged entries are removed and skipped.
    pub fn items<T: Cacheable>(&self) -> Vec<(Key, T)> {
        let mut items: Vec<(Key, T)> = Vec::new();
        for key in self.mem_keys() {
            if let Some(shared) = MemoryTier::global().get(&key)
                && let Some(value) = shared.downcast_ref::<T>()
            {
                items.push((key, value.clone()));
            }
        }
        let type_name = type_name::<T>();
        for record in self.disk_records() {
            let Some(key) = Key::from_hex(&record.key) else { continue };
            if record.type_name != type_name || items.iter().any(|(seen, _)| *seen == key) {
                continue;
            }
            if let Some(value) = self.lookup_disk::<T>(&key) {
                items.push((key, value));
            }
        }
        items.sort_by_key(|(key, _)| *key);
        items
    }

    /// The values of [`Memo::items`].
    pub fn values<T: Cacheable>(&self) -> Vec<T> {
        self.items().into_iter().map(|(_, value)| value).collect()
    }
}

impl<H: Sync> Memo<H> {
    /// Maps `compute` over `items` in parallel, each item memoized under its own key, and
    /// returns the values in the order of `items`. Inside a build script the pool has cargo's
    /// `NUM_JOBS` threads (its `-j`), not one per core.
    pub fn par_map<I, A, T, F>(&self, items: I, compute: F) -> Vec<T>
    where
        I: IntoIterator<Item = A>,
        A: Send + Sync,
        T: Cacheable,
        F: Fn(&A) -> T + Send + Sync,
        H: ArgsEncoder<A>,
    {
        let items: Vec<A> = items.into_iter().collect();
        crate::parallel::map(&items, |item| self.call(item, || compute(item)))
    }
}
