//! `cargo memoshelve list`: the entries, one row each.

use std::io::Write;

use serde_json::json;

use crate::cli::{MemoshelveArgs, Sort};
use crate::output;

pub(crate) fn run(args: &MemoshelveArgs, name: Option<&str>, sort: Sort) -> anyhow::Result<()> {
    let store = super::store(args)?;
    let (name, mut entries) = match name {
        // A package name stands for its build script's entries (`build-script.<package>`).
        Some(name) => {
            let (name, entries) = super::entries_named(args, &store, name)?;
            (Some(name), entries)
        }
        None => (None, store.entries(None)?),
    };
    let usage = store.usage();
    match sort {
        Sort::Name => {}
        Sort::Size => entries.sort_by_key(|entry| std::cmp::Reverse(entry.bytes)),
        Sort::Age => entries.sort_by_key(|entry| std::cmp::Reverse(entry.record.created_ms)),
        Sort::Used => entries.sort_by_key(|entry| std::cmp::Reverse(entry.last_used_ms)),
    }
    if args.json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|entry| {
                let counts = usage.get(&entry.record.key).cloned().unwrap_or_default();
                json!({
                    "name": entry.record.name,
                    "key": entry.record.key,
                    "version": entry.record.version,
                    "type_name": entry.record.type_name,
                    "bytes": entry.bytes,
                    "created_ms": entry.record.created_ms,
                    "last_used_ms": entry.last_used_ms,
                    "compute_us": entry.record.compute_us,
                    "hits": counts.hits,
                    "misses": counts.misses,
                    "files": entry.files.len(),
                    "args": entry.record.args,
                })
            })
            .collect();
        return super::print_json(&serde_json::Value::Array(rows));
    }
    // Buffered: a listing can be 100k lines, and stdout alone writes each line.
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    if entries.is_empty() {
        match &name {
            Some(name) => {
                writeln!(stdout, "no entries named {name:?} in {}", store.root().display())?
            }
            None => writeln!(stdout, "no entries in {}", store.root().display())?,
        }
        stdout.flush()?;
        return Ok(());
    }
    let mut rows = vec![
        ["NAME", "KEY", "SIZE", "FILES", "CREATED", "LAST USED", "COMPUTE", "HITS"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for entry in &entries {
        let counts = usage.get(&entry.record.key).cloned().unwrap_or_default();
        rows.push(vec![
            entry.record.name.clone(),
            entry.key().short(),
            output::size(entry.bytes),
            if entry.is_file_step() { entry.files.len().to_string() } else { "-".to_owned() },
            output::age(entry.record.created_ms),
            output::age(entry.last_used_ms),
            output::duration(entry.record.compute_us),
            counts.hits.to_string(),
        ]);
    }
    output::table(&mut stdout, &rows)?;
    stdout.flush()?;
    Ok(())
}
