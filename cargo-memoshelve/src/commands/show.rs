//! `cargo memoshelve show KEY`: one entry in full.

use std::io::Write;

use anyhow::bail;
use serde_json::json;

use crate::cli::MemoshelveArgs;
use crate::output;

pub(crate) fn run(args: &MemoshelveArgs, prefix: &str) -> anyhow::Result<()> {
    let store = super::store(args)?;
    let prefix = prefix.to_ascii_lowercase();
    let mut matches: Vec<_> = store
        .entries(None)?
        .into_iter()
        .filter(|entry| entry.record.key.starts_with(&prefix))
        .collect();
    let entry = match matches.len() {
        0 => bail!(
            "no entry's key starts with {prefix:?} in {} (see `cargo memoshelve list`)",
            store.root().display()
        ),
        1 => matches.remove(0),
        n => bail!(
            "{n} entries' keys start with {prefix:?}: give more digits (see `cargo memoshelve list`)"
        ),
    };
    let counts = store.usage().remove(&entry.record.key).unwrap_or_default();
    if args.json {
        return super::print_json(&json!({ "entry": entry, "usage": counts }));
    }
    let record = &entry.record;
    let mut out = std::io::stdout().lock();
    writeln!(out, "name:       {}", record.name)?;
    writeln!(out, "key:        {}", record.key)?;
    writeln!(out, "version:    {:?}", record.version)?;
    writeln!(out, "type:       {}", record.type_name)?;
    writeln!(out, "args:       {}", record.args)?;
    writeln!(
        out,
        "size:       {} ({} value)",
        output::size(entry.bytes),
        output::size(record.size)
    )?;
    writeln!(out, "created:    {}", output::age(record.created_ms))?;
    writeln!(out, "last used:  {}", output::age(entry.last_used_ms))?;
    writeln!(out, "compute:    {}", output::duration(record.compute_us))?;
    writeln!(out, "disk hits:  {} (misses: {})", counts.hits, counts.misses)?;
    writeln!(out, "blake3:     {}", record.blake3)?;
    if !record.inputs.is_empty() {
        writeln!(out, "\nkey inputs:")?;
        let mut rows = vec![vec!["KIND".to_owned(), "NAME".to_owned(), "VALUE".to_owned()]];
        for input in &record.inputs {
            let value = input.value.replace('\n', " ").replace('\0', "");
            let value = if value.chars().count() > 72 {
                format!("{}…", value.chars().take(72).collect::<String>())
            } else {
                value
            };
            rows.push(vec![input.kind.clone(), input.name.clone(), value]);
        }
        output::table(&mut out, &rows)?;
    }
    if entry.is_file_step() {
        writeln!(out, "\noutput files:")?;
        let mut rows = vec![vec![
            "PATH".to_owned(),
            "MODE".to_owned(),
            "SIZE".to_owned(),
            "BLAKE3".to_owned(),
        ]];
        for file in &entry.files {
            rows.push(vec![
                file.display_path().into_owned(),
                format!("{:o}", file.mode),
                output::size(file.size),
                file.blake3[..12].to_owned(),
            ]);
        }
        output::table(&mut out, &rows)?;
    }
    Ok(())
}
