//! The project a process belongs to: its configuration (`[workspace.metadata.memoshelve]`,
//! `memoshelve.toml`), read with a small TOML reader, and the cache root it chooses.

pub mod config;
pub(crate) mod location;
mod toml_reader;
