//! `cargo memoshelve verify [--repair]`: the index record by record, then every entry checked
//! by blake3, in parallel.

use std::io::Write;

use anyhow::bail;
use rayon::prelude::*;
use serde_json::json;

use crate::cli::MemoshelveArgs;
use crate::output;

pub(crate) fn run(args: &MemoshelveArgs, repair: bool) -> anyhow::Result<()> {
    let store = super::store(args)?;
    // The index first: a damaged record keeps its entry from being listed at all.
    let index_damage = store.check_index()?;
    let index_repaired = if repair { store.repair_index(&index_damage)? } else { 0 };
    let entries = store.entries(None)?;
    let bar = crate::output::progress(args, entries.len() as u64, "verifying");
    let damaged: Vec<(&memoshelve_build::store::Entry, String)> = entries
        .par_iter()
        .filter_map(|entry| {
            let checked = store.verify(entry).err().map(|err| {
                let reason = match err {
                    memoshelve_build::Error::Corrupt { reason, .. } => reason,
                    other => other.to_string(),
                };
                (entry, reason)
            });
            bar.inc(1);
            checked
        })
        .collect();
    bar.finish_and_clear();
    let clean = damaged.is_empty() && index_damage.is_empty();
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
        super::print_json(&json!({
            "checked": entries.len(),
            "damaged": rows,
            "removed": repaired,
            "index_damage": index_damage,
            "index_repaired": index_repaired,
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        for damage in &index_damage {
            writeln!(out, "damaged index: {}: {}", damage.file.display(), damage.problem)?;
        }
        for (entry, reason) in &damaged {
            writeln!(out, "damaged: {} {}: {reason}", entry.record.name, entry.key().short())?;
        }
        writeln!(
            out,
            "checked {}: {} damaged{}; {}{}",
            output::count(entries.len(), "entry"),
            damaged.len(),
            if repair { format!(", {repaired} removed") } else { String::new() },
            output::count(index_damage.len(), "damaged index record"),
            if repair { format!(", {index_repaired} repaired") } else { String::new() },
        )?;
        if !clean && !repair {
            writeln!(
                out,
                "run `cargo memoshelve verify --repair` to remove them (they are recomputed on next use)"
            )?;
        }
    }
    if !clean {
        bail!(
            "{} and {} in {}",
            output::count(damaged.len(), "damaged entry"),
            output::count(index_damage.len(), "damaged index record"),
            store.root().display()
        );
    }
    Ok(())
}
