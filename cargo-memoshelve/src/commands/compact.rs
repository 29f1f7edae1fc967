//! `cargo memoshelve compact`: damaged records and unreferenced content deleted.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use crate::cli::MemoshelveArgs;
use crate::output;

pub(crate) fn run(args: &MemoshelveArgs, backup: Option<&Path>) -> anyhow::Result<()> {
    let store = super::store(args)?;
    // The backup holds every entry: if anything goes wrong, `restore` brings them back.
    let backup =
        backup.map(|file| super::backup::write_archive(args, &store, file, None)).transpose()?;
    let done = store.compact()?;
    if args.json {
        let mut report = json!(done);
        report["backup"] = json!(backup);
        return super::print_json(&report);
    }
    if let Some(backup) = &backup {
        writeln!(std::io::stdout(), "{}", super::backup::describe(backup))?;
    }
    writeln!(
        std::io::stdout(),
        "index {} -> {}; {} of unreferenced content deleted ({} freed); event log {} -> {}",
        output::size(done.index_before),
        output::size(done.index_after),
        output::count(done.freed_files, "file"),
        output::size(done.freed_bytes),
        done.events_before,
        output::count(done.events_after, "line"),
    )?;
    Ok(())
}
