//! `cargo memoshelve show KEY`: one entry in full.

use std::io::Write;

use anyhow::bail;
use serde_json::json;

use crate::cli::MemoshelveArgs;
use crate::output;
use crate::wrapper::compile::Compiled;
use crate::wrapper::outputs::Recorded;

pub(crate) fn run(args: &MemoshelveArgs, prefix: &str) -> anyhow::Result<()> {
    let store = super::store(args)?;
    let prefix = prefix.to_ascii_lowercase();
    let all = store.entries(None)?;
    let mut matches: Vec<_> =
        all.iter().filter(|entry| entry.record.key.starts_with(&prefix)).cloned().collect();
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
    // A file step's manifest: what it declared while it ran, what it replays; a build script's
    // entry (transparent mode) also says how its run was made.
    let manifest = entry.is_file_step().then(|| store.file_step(&entry)).transpose()?;
    let build_script = manifest
        .as_ref()
        .filter(|_| entry.record.name.starts_with("build-script."))
        .and_then(|manifest| Recorded::decode(&manifest.result));
    // A rustc compile's entry (the unit cache): what it read, where it holds.
    let unit = manifest
        .as_ref()
        .filter(|_| entry.record.name.starts_with("rustc."))
        .and_then(|manifest| Compiled::decode(&manifest.result));
    // The other runs kept for the same key (a file step keeps a few whose declared inputs
    // differ): the same name and key inputs, another entry.
    let mut runs: Vec<_> = all
        .iter()
        .filter(|other| {
            entry.is_file_step()
                && other.record.name == entry.record.name
                && other.record.inputs == entry.record.inputs
                && other.record.key != entry.record.key
        })
        .collect();
    runs.sort_by_key(|other| std::cmp::Reverse(other.last_used_ms));
    if args.json {
        return super::print_json(&json!({
            "entry": entry,
            "usage": counts,
            "declared": manifest.as_ref().map(|manifest| &manifest.discovered),
            "directives": manifest.as_ref().map(|manifest| &manifest.directives),
            "build_script": build_script,
            "unit": unit,
            "other_runs": runs.iter().map(|other| &other.record.key).collect::<Vec<_>>(),
        }));
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
            rows.push(vec![input.kind.clone(), input.name.clone(), short(&input.value)]);
        }
        output::table(&mut out, &rows)?;
    }
    if let Some(recorded) = &build_script {
        writeln!(out, "\nbuild script:")?;
        for (what, text) in recorded.describe() {
            writeln!(out, "  {what:<10}{text}")?;
        }
    }
    if let Some(unit) = &unit {
        writeln!(out, "\nrustc unit:")?;
        for (what, text) in unit.describe() {
            writeln!(out, "  {what:<10}{text}")?;
        }
    }
    if let Some(manifest) = &manifest {
        if !manifest.discovered.is_empty() {
            writeln!(out, "\ndeclared while it ran (checked before a hit):")?;
            let rows: Vec<Vec<String>> = manifest
                .discovered
                .iter()
                .map(|input| {
                    vec![format!("  {}", input.kind), input.name.clone(), short(&input.value)]
                })
                .collect();
            output::table(&mut out, &rows)?;
        }
        writeln!(out, "\ndirectives replayed: {}", manifest.directives.len())?;
    }
    if !runs.is_empty() {
        writeln!(
            out,
            "\nother runs of its key (declared inputs that differ; a hit takes the first that matches):"
        )?;
        for other in &runs {
            writeln!(
                out,
                "  {} (last used {})",
                other.key().short(),
                output::age(other.last_used_ms)
            )?;
        }
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

/// A value on one line, cut at 72 characters.
fn short(value: &str) -> String {
    let value = value.replace('\n', " ").replace('\0', "");
    if value.chars().count() > 72 {
        format!("{}…", value.chars().take(72).collect::<String>())
    } else {
        value
    }
}
