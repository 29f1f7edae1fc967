//! Unit tests of the crate internals.
