//! `cargo memoshelve upgrade`: entries of other format versions dropped, never misread.

use std::io::Write;

use serde_json::json;

use crate::cli::MemoshelveArgs;

pub(crate) fn run(args: &MemoshelveArgs) -> anyhow::Result<()> {
    let store = super::store(args)?;
    let dropped = store.upgrade()?;
    if args.json {
        return super::print_json(&json!({
            "format": memoshelve_build::FORMAT_VERSION,
            "dropped": dropped,
        }));
    }
    let mut out = std::io::stdout().lock();
    for index_key in &dropped {
        writeln!(out, "dropped {index_key} (another format; it is recomputed on next use)")?;
    }
    writeln!(
        out,
        "the cache is at format {}: {} of other formats dropped, nothing to migrate{}",
        memoshelve_build::FORMAT_VERSION,
        crate::output::count(dropped.len(), "entry"),
        if dropped.is_empty() {
            ""
        } else {
            " (run `cargo memoshelve compact` to free their space)"
        }
    )?;
    Ok(())
}
