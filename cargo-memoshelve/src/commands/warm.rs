//! `cargo memoshelve warm -- <cargo args>`: a cargo command run against this cache, and what it added.

use std::collections::HashSet;
use std::io::Write;
use std::process::Command;

use anyhow::Context;
use serde_json::json;

use crate::cli::MemoshelveArgs;
use crate::output;

pub(crate) fn run(args: &MemoshelveArgs, cargo_args: &[String], push: bool) -> anyhow::Result<()> {
    let store = super::store(args)?;
    let before: HashSet<String> =
        store.entries(None)?.into_iter().map(|entry| entry.record.key).collect();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command.args(cargo_args).env("MEMOSHELVE_DIR", store.root());
    // Through the wrapper, so that every build script is memoized too (a wrapper of the user's
    // stays the inner one).
    let me = crate::protocol::sibling(crate::protocol::FRONT)
        .context("cannot tell where cargo-memoshelve is")?;
    let wrapper = std::env::var_os("RUSTC_WRAPPER").filter(|wrapper| !wrapper.is_empty());
    if let Some(wrapper) = wrapper.filter(|wrapper| !crate::protocol::is_front(wrapper)) {
        command.env(crate::protocol::INNER_WRAPPER, wrapper);
    }
    let status = command
        .env("RUSTC_WRAPPER", me)
        .status()
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;
    let added: Vec<_> = store
        .entries(None)?
        .into_iter()
        .filter(|entry| !before.contains(&entry.record.key))
        .collect();
    let bytes: u64 = added.iter().map(|entry| entry.bytes).sum();
    let compute_us: u64 = added.iter().map(|entry| entry.record.compute_us).sum();
    // Entries written while a remote was configured read-write are there already: the remote
    // skips them (one existence check each).
    let pushed = if push && status.success() {
        let remote = super::remote::open(args)?;
        Some(super::remote::push(args, &store, &remote, &added)?)
    } else {
        None
    };
    if args.json {
        let rows: Vec<serde_json::Value> = added
            .iter()
            .map(|entry| json!({ "name": entry.record.name, "key": entry.record.key, "bytes": entry.bytes, "compute_us": entry.record.compute_us }))
            .collect();
        super::print_json(
            &json!({ "cargo_status": status.code(), "added": rows, "bytes": bytes, "compute_us": compute_us, "pushed": pushed }),
        )?;
    } else {
        writeln!(
            std::io::stderr(),
            "memoshelve: {} added to {} ({}, {} of computation)",
            output::count(added.len(), "entry"),
            store.root().display(),
            output::size(bytes),
            output::duration(compute_us)
        )?;
    }
    if let Some(pushed) = &pushed {
        if !args.json {
            writeln!(std::io::stderr(), "memoshelve: {}", pushed.describe())?;
        }
        pushed.check()?;
    }
    if !status.success() {
        // The cargo command's own status is the result of `warm`.
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}
