//! The tiers a value can be found in, fastest first: memory, disk, remote.

pub(crate) mod disk;
