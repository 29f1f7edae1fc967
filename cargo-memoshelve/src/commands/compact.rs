//! `cargo memoshelve compact`: the index without its history, and unreferenced content deleted.

use std::io::Write;

use serde_json::json;

use crate::cli::MemoshelveArgs;
use crate::output;

pub(crate) fn run(args: &MemoshelveArgs) -> anyhow::Result<()> {
    let store = super::store(args)?;
    let done = store.compact()?;
    if args.json {
        return super::print_json(&json!(done));
    }
    writeln!(
        std::io::stdout(),
        "index {} -> {}; {} files of unreferenced content deleted ({} freed)",
        output::size(done.index_before),
        output::size(done.index_after),
        done.freed_files,
        output::size(done.freed_bytes)
    )?;
    Ok(())
}
