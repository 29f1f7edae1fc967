//! Single flight inside one process: threads (and `par_map` items) asking for the same missing
//! key compute it once; the others wait for that computation, then look the key up again.
//!
//! Across processes the per-key file lock of `allow_race(false)` does the same; this works
//! whatever `allow_race` says, and costs one map lookup per miss.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

use crate::key::Key;

struct Flight {
    leader: std::thread::ThreadId,
    done: Mutex<bool>,
    landed: Condvar,
}

fn flights() -> &'static Mutex<HashMap<Key, Arc<Flight>>> {
    static FLIGHTS: OnceLock<Mutex<HashMap<Key, Arc<Flight>>>> = OnceLock::new();
    FLIGHTS.get_or_init(Default::default)
}

/// Held by the one thread computing a key; dropping it (after storing, or on failure or panic)
/// wakes the waiters.
pub(crate) struct Leader {
    key: Key,
    flight: Arc<Flight>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut map = flights().lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(&self.key).is_some_and(|current| Arc::ptr_eq(current, &self.flight)) {
            map.remove(&self.key);
        }
        drop(map);
        *self.flight.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.flight.landed.notify_all();
    }
}

/// Becomes the leader for `key`, or, when another thread of this process is computing it, waits
/// for that computation to end and returns `None` (then look the key up again: it is usually
/// there; if the leader failed, call again to lead).
pub(crate) fn lead_or_wait(key: &Key) -> Option<Leader> {
    let flight = {
        let mut map = flights().lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(key) {
            // A computation asking for its own key again must not wait for itself.
            Some(flight) if flight.leader != std::thread::current().id() => flight.clone(),
            _ => {
                let flight = Arc::new(Flight {
                    leader: std::thread::current().id(),
                    done: Mutex::new(false),
                    landed: Condvar::new(),
                });
                map.insert(*key, flight.clone());
                return Some(Leader { key: *key, flight });
            }
        }
    };
    let mut done = flight.done.lock().unwrap_or_else(PoisonError::into_inner);
    while !*done {
        done = flight.landed.wait(done).unwrap_or_else(PoisonError::into_inner);
    }
    None
}
