//! The tiers a value can be found in, fastest first: memory, disk, remote. Each knows nothing
//! of the ones above it; `crate::memo` is what goes through them in order.

pub(crate) mod disk;
pub(crate) mod memory;
pub mod remote;
