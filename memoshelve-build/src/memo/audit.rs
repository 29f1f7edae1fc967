//! `MEMOSHELVE_AUDIT=<fraction>`: which hits to recompute and compare (see `Memo::audit`), the
//! way to find inputs a computation uses but does not declare.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The share of hits to audit, from `MEMOSHELVE_AUDIT` (0 to 1; unset, empty or invalid: 0).
fn fraction() -> f64 {
    static FRACTION: OnceLock<f64> = OnceLock::new();
    *FRACTION.get_or_init(|| {
        let text = std::env::var("MEMOSHELVE_AUDIT").unwrap_or_default();
        let value: f64 = text.trim().parse().unwrap_or(0.0);
        if value.is_finite() { value.clamp(0.0, 1.0) } else { 0.0 }
    })
}

/// Whether this hit is audited: a draw against [`fraction`] (splitmix64 over a per-process
/// seed and a counter; auditing needs spread, not cryptography).
pub(crate) fn due() -> bool {
    let share = fraction();
    if share <= 0.0 {
        return false;
    }
    if share >= 1.0 {
        return true;
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed =
        std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |since| since.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
    let mut x = seed
        .wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - share
}
