//! In-process tier: one LRU per process, bounded by bytes, that hands out clones without decoding.
//!
//! It lives only as long as one process (one build-script run). Each slot holds the value as
//! `Arc<dyn Any>`, tagged with the cache name and version that stored it. Sizes are the encoded
//! (postcard) length of the value, which the caller knows anyway because it writes the same bytes
//! to disk. There are two bounds: each cache name stays within its own `mem_capacity`, and all
//! names together stay within [`DEFAULT_MEM_CAPACITY`] or `MEMOSHELVE_MEM_CAPACITY`.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::key::Key;

/// The default byte bound of the memory tier, per cache name and for the whole process.
pub const DEFAULT_MEM_CAPACITY: u64 = 256 * 1024 * 1024;

pub(crate) type Shared = Arc<dyn Any + Send + Sync>;

struct Slot {
    namespace: Arc<Namespace>,
    value: Shared,
    bytes: u64,
    tick: u64,
}

/// The name and version a slot was stored under.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Namespace {
    pub(crate) name: String,
    pub(crate) version: String,
}

#[derive(Default)]
struct NameUsage {
    bytes: u64,
    /// This name's slots, oldest first (see [`Order`]).
    order: Order,
}

/// Slots by last use, oldest first: `(tick, key)` pairs appended at each use. A pair is live
/// while its key's slot still has that tick; the others are skipped, and dropped when they
/// outnumber the live ones. A use is one push instead of a tree's remove and insert, and this
/// library compiles no B-tree (a `BTreeMap` here was 7% of its generated code).
#[derive(Default)]
struct Order {
    pairs: VecDeque<(u64, Key)>,
    /// Live pairs: one per slot.
    live: usize,
}

impl Order {
    /// A new slot, used at `tick`.
    fn add(&mut self, tick: u64, key: Key) {
        self.pairs.push_back((tick, key));
        self.live += 1;
    }

    /// A slot used again at `tick` (its slot has that tick already).
    fn touch(&mut self, tick: u64, key: Key, slots: &Slots) {
        self.pairs.push_back((tick, key));
        self.trim(slots);
    }

    /// A slot gone from `slots`: its pairs are stale now, skipped and trimmed in time.
    fn forget(&mut self, slots: &Slots) {
        self.live -= 1;
        self.trim(slots);
    }

    /// The oldest live key.
    fn oldest(&mut self, slots: &Slots) -> Option<Key> {
        while let Some(&(tick, key)) = self.pairs.front() {
            if is_live(slots, tick, &key) {
                return Some(key);
            }
            self.pairs.pop_front();
        }
        None
    }

    /// Drops stale pairs once they are most of the queue (amortized: each pair is dropped once).
    fn trim(&mut self, slots: &Slots) {
        if self.pairs.len() > 2 * self.live + 32 {
            self.pairs.retain(|(tick, key)| is_live(slots, *tick, key));
        }
    }
}

type Slots = HashMap<Key, Slot, BuildHasherDefault<KeyHasher>>;

fn is_live(slots: &Slots, tick: u64, key: &Key) -> bool {
    slots.get(key).is_some_and(|slot| slot.tick == tick)
}

/// Keys are blake3 hashes already: eight of their bytes are as good a hash as SipHash would
/// make of all 32, at a fraction of the cost of a memory hit.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let take = bytes.len().min(8);
        word[..take].copy_from_slice(&bytes[..take]);
        self.0 = self.0.rotate_left(17) ^ u64::from_le_bytes(word);
    }

    fn write_usize(&mut self, _length_prefix: usize) {}

    /// `Key`'s own `Hash`: its first eight bytes.
    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }
}

pub(crate) struct MemoryTier {
    capacity: u64,
    bytes: u64,
    next_tick: u64,
    slots: Slots,
    /// Every slot, oldest first.
    order: Order,
    per_name: HashMap<String, NameUsage>,
}

impl MemoryTier {
    pub(crate) fn new(capacity: u64) -> MemoryTier {
        MemoryTier {
            capacity,
            bytes: 0,
            next_tick: 0,
            slots: HashMap::default(),
            order: Order::default(),
            per_name: HashMap::new(),
        }
    }

    /// The process-wide tier.
    pub(crate) fn global() -> MutexGuard<'static, MemoryTier> {
        static GLOBAL: OnceLock<Mutex<MemoryTier>> = OnceLock::new();
        let tier = GLOBAL.get_or_init(|| {
            let capacity = std::env::var("MEMOSHELVE_MEM_CAPACITY")
                .ok()
                .and_then(|raw| raw.trim().parse().ok())
                .unwrap_or(DEFAULT_MEM_CAPACITY);
            Mutex::new(MemoryTier::new(capacity))
        });
        // A panic while holding the lock leaves the map consistent (no update is half-done
        // across an await point or user code), so a poisoned lock is safe to take over.
        tier.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    /// Returns the stored value and marks it most recently used.
    pub(crate) fn get(&mut self, key: &Key) -> Option<Shared> {
        let latest = self.next_tick;
        let slot = self.slots.get_mut(key)?;
        if slot.tick == latest {
            // Already the most recently used (a loop over one key): nothing to reorder.
            return Some(slot.value.clone());
        }
        self.next_tick += 1;
        let tick = self.next_tick;
        slot.tick = tick;
        let value = slot.value.clone();
        let usage = self.per_name.get_mut(&slot.namespace.name).expect("every slot has a usage");
        usage.order.touch(tick, *key, &self.slots);
        self.order.touch(tick, *key, &self.slots);
        Some(value)
    }

    pub(crate) fn contains(&self, key: &Key) -> bool {
        self.slots.contains_key(key)
    }

    /// Stores a value of `bytes` encoded bytes, evicting least recently used slots of the same
    /// name past `name_capacity`, then of any name past the process-wide bound.
    /// A value larger than either bound is not kept at all.
    pub(crate) fn insert(
        &mut self,
        key: Key,
        namespace: Arc<Namespace>,
        value: Shared,
        bytes: u64,
        name_capacity: u64,
    ) {
        self.remove(&key);
        if bytes > name_capacity || bytes > self.capacity {
            return;
        }
        loop {
            let usage = self.per_name.entry(namespace.name.clone()).or_default();
            if usage.bytes + bytes <= name_capacity {
                break;
            }
            let oldest = usage.order.oldest(&self.slots).expect("bytes > 0 implies a slot");
            self.remove(&oldest);
        }
        while self.bytes + bytes > self.capacity {
            let oldest = self.order.oldest(&self.slots).expect("bytes > 0 implies a slot");
            self.remove(&oldest);
        }
        let tick = self.tick();
        let usage = self.per_name.entry(namespace.name.clone()).or_default();
        usage.bytes += bytes;
        usage.order.add(tick, key);
        self.bytes += bytes;
        self.order.add(tick, key);
        self.slots.insert(key, Slot { namespace, value, bytes, tick });
    }

    /// Removes one slot; returns whether it was there.
    pub(crate) fn remove(&mut self, key: &Key) -> bool {
        let Some(slot) = self.slots.remove(key) else {
            return false;
        };
        self.order.forget(&self.slots);
        self.bytes -= slot.bytes;
        if let Some(usage) = self.per_name.get_mut(&slot.namespace.name) {
            usage.bytes -= slot.bytes;
            usage.order.forget(&self.slots);
        }
        true
    }

    /// Keys stored under this name and version, oldest first.
    pub(crate) fn keys(&self, namespace: &Namespace) -> Vec<Key> {
        let Some(usage) = self.per_name.get(&namespace.name) else {
            return Vec::new();
        };
        usage
            .order
            .pairs
            .iter()
            .filter(|(tick, key)| {
                self.slots
                    .get(key)
                    .is_some_and(|slot| slot.tick == *tick && *slot.namespace == *namespace)
            })
            .map(|(_, key)| *key)
            .collect()
    }

    /// The use queue's length over all names, and the number of slots.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> (usize, usize) {
        (self.order.pairs.len(), self.slots.len())
    }

    /// Bytes held for one name, and for the whole process.
    #[cfg(test)]
    pub(crate) fn usage(&self, name: &str) -> (u64, u64) {
        (self.per_name.get(name).map_or(0, |usage| usage.bytes), self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::test_key as key;
    use std::sync::Arc;

    fn namespace(name: &str) -> Arc<Namespace> {
        Arc::new(Namespace { name: name.to_owned(), version: String::new() })
    }

    #[test]
    fn memory_tier_accounts_bytes_exactly_and_evicts_least_recently_used() {
        let mut tier = MemoryTier::new(1000);
        let a = namespace("a");
        for n in 0..10 {
            tier.insert(key(n), a.clone(), Arc::new(n), 100, 300);
        }
        assert_eq!(tier.usage("a"), (300, 300), "the per-name bound holds");
        assert!(tier.contains(&key(9)) && tier.contains(&key(8)) && tier.contains(&key(7)));
        assert!(!tier.contains(&key(6)));
        // Using 7 makes 8 the least recently used.
        assert!(tier.get(&key(7)).is_some());
        tier.insert(key(10), a.clone(), Arc::new(10), 100, 300);
        assert!(tier.contains(&key(7)) && !tier.contains(&key(8)));
        // The process-wide bound evicts across names.
        let b = namespace("b");
        for n in 100..110 {
            tier.insert(key(n), b.clone(), Arc::new(n), 100, 1000);
        }
        let (a_bytes, total) = tier.usage("a");
        assert_eq!(total, 1000);
        assert_eq!(a_bytes, 0, "the oldest name was evicted first");
        // Too large for the bound: not kept, nothing else evicted.
        tier.insert(key(200), b.clone(), Arc::new(200), 5000, 10_000);
        assert!(!tier.contains(&key(200)));
        assert_eq!(tier.usage("b"), (1000, 1000));
        // Re-inserting a key replaces it without double counting.
        tier.insert(key(109), b.clone(), Arc::new(1), 100, 1000);
        assert_eq!(tier.usage("b"), (1000, 1000));
        assert!(tier.remove(&key(109)));
        assert_eq!(tier.usage("b"), (900, 900));
        assert_eq!(tier.keys(&b).len(), 9);
    }

    /// The memory tier against a plain list in order of use, over random inserts, gets and
    /// removes: the same slots, bytes, eviction order and values; its use queue stays bounded.
    #[test]
    fn memory_tier_matches_a_simple_lru_model() {
        use proptest::prelude::*;
        #[derive(Clone, Debug)]
        enum Op {
            Insert(u8, u8, u64),
            Get(u8),
            Remove(u8),
        }
        let op = prop_oneof![
            1 => (0u8..24, 0u8..3, 1u64..160).prop_map(|(k, n, b)| Op::Insert(k, n, b)),
            3 => (0u8..24).prop_map(Op::Get),
            1 => (0u8..24).prop_map(Op::Remove),
        ];
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(200));
        runner
            .run(&proptest::collection::vec(op, 1..400), |ops| {
                let (capacity, name_capacity) = (1000, 450);
                let mut tier = MemoryTier::new(capacity);
                let names: Vec<Arc<Namespace>> =
                    (0..3).map(|n| namespace(&format!("n{n}"))).collect();
                // (key, name, bytes, value), least recently used first.
                let mut model: Vec<(u8, u8, u64, usize)> = Vec::new();
                for (step, op) in ops.iter().enumerate() {
                    match *op {
                        Op::Insert(k, n, bytes) => {
                            tier.insert(
                                key(k.into()),
                                names[usize::from(n)].clone(),
                                Arc::new(step),
                                bytes,
                                name_capacity,
                            );
                            model.retain(|entry| entry.0 != k);
                            if bytes <= name_capacity && bytes <= capacity {
                                while model.iter().filter(|e| e.1 == n).map(|e| e.2).sum::<u64>()
                                    + bytes
                                    > name_capacity
                                {
                                    let oldest = model.iter().position(|e| e.1 == n).unwrap();
                                    model.remove(oldest);
                                }
                                while model.iter().map(|e| e.2).sum::<u64>() + bytes > capacity {
                                    model.remove(0);
                                }
                                model.push((k, n, bytes, step));
                            }
                        }
                        Op::Get(k) => {
                            let got = tier
                                .get(&key(k.into()))
                                .map(|value| *value.downcast::<usize>().unwrap());
                            let position = model.iter().position(|e| e.0 == k);
                            prop_assert_eq!(
                                got,
                                position.map(|at| model[at].3),
                                "get {} at {}",
                                k,
                                step
                            );
                            if let Some(at) = position {
                                let entry = model.remove(at);
                                model.push(entry);
                            }
                        }
                        Op::Remove(k) => {
                            let had = model.iter().any(|e| e.0 == k);
                            model.retain(|e| e.0 != k);
                            prop_assert_eq!(tier.remove(&key(k.into())), had);
                        }
                    }
                    for (n, name) in names.iter().enumerate() {
                        let expected: Vec<Key> = model
                            .iter()
                            .filter(|e| usize::from(e.1) == n)
                            .map(|e| key(e.0.into()))
                            .collect();
                        prop_assert_eq!(
                            tier.keys(name),
                            expected,
                            "name {} after step {}",
                            n,
                            step
                        );
                    }
                    let total: u64 = model.iter().map(|e| e.2).sum();
                    prop_assert_eq!(tier.usage("n0").1, total);
                    let (queued, slots) = tier.queued();
                    prop_assert_eq!(slots, model.len());
                    prop_assert!(queued <= 2 * slots + 33, "{} queued for {} slots", queued, slots);
                }
                Ok(())
            })
            .unwrap();
    }
}
