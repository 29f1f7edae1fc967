//! `cargo memoshelve verify [--repair]`: every entry checked by blake3, in parallel.

use std::io::Write;

use anyhow::bail;
use rayon::prelude::*;
use serde_json::json;

use crate::cli::MemoshelveArgs;

pub(crate) fn run(args: &MemoshelveArgs, repair: bool) -> anyhow::Result<()> {
    let store = super::store(args)?;
    let entries = store.entries(None)?;
    let bar = crate::output::progress(args, entries.len() as u64, "verifying");
    let damaged: Vec<(&memoshelve_build::store::Entry, String)> = entries
        .par_iter()
        .filter_map(|entry| {
            let checked = store.verify(entry).err().map(|reason| (entry, reason));
            bar.inc(1);
            checked
        })
        .collect();
    bar.finish_and_clear();
    let mut repaired = 0;
    if repair {
        for (entry, _) in &damaged {
            store.remove(entry)?;
            repaired += 1;
        }
    }
    if args.json {
        let rows: Vec<serde_json::Value> = damaged
            .iter()
            .map(|(entry, reason)| json!({ "name": entry.record.name, "key": entry.record.key, "problem": reason }))
            .collect();
        super::print_json(
            &json!({ "checked": entries.len(), "damaged": rows, "removed": repaired }),
        )?;
    } else {
        let mut out = std::io::stdout().lock();
        for (entry, reason) in &damaged {
            writeln!(out, "damaged: {} {}: {reason}", entry.record.name, entry.key().short())?;
        }
        writeln!(
            out,
            "checked {} entries: {} damaged{}",
            entries.len(),
            damaged.len(),
            if repair { format!(", {repaired} removed") } else { String::new() }
        )?;
        if !damaged.is_empty() && !repair {
            writeln!(
                out,
                "run `cargo memoshelve verify --repair` to remove them (they are recomputed on next use)"
            )?;
        }
    }
    if !damaged.is_empty() {
        bail!("{} damaged entries in {}", damaged.len(), store.root().display());
    }
    Ok(())
}
