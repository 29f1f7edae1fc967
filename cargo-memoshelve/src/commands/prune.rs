//! `cargo memoshelve prune`: least recently used entries out until the cache fits, then free
//! the content nothing refers to.

use std::io::Write;
use std::time::Duration;

use serde_json::json;

use crate::cli::MemoshelveArgs;
use crate::output;

/// Content written this recently is never freed: a build may be storing an entry that will
/// refer to it.
const IN_USE: Duration = Duration::from_secs(10 * 60);

pub(crate) struct Limits {
    pub(crate) max_size: Option<u64>,
    pub(crate) max_age: Option<Duration>,
    /// Entries used this recently are never pruned: a build may be using them right now.
    pub(crate) keep_recent: Duration,
}

pub(crate) fn run(
    args: &MemoshelveArgs,
    limits: &Limits,
    name: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let store = super::store(args)?;
    let mut entries = match name {
        Some(name) => super::entries_named(args, &store, name)?.1,
        None => store.entries(None)?,
    };
    entries.sort_by_key(|entry| entry.last_used_ms);
    let now = output::now_ms();
    let recent = |last_used_ms: u64| {
        now.saturating_sub(last_used_ms) < limits.keep_recent.as_millis() as u64
    };
    let mut total: u64 = entries.iter().map(|entry| entry.bytes).sum();
    let mut doomed = Vec::new();
    // Entries the limits would have removed but for their recent use.
    let mut protected = 0;
    for entry in &entries {
        let too_old = limits.max_age.is_some_and(|max_age| {
            now.saturating_sub(entry.last_used_ms) > max_age.as_millis() as u64
        });
        let too_big = limits.max_size.is_some_and(|max_size| total > max_size);
        if !(too_old || too_big) {
            continue;
        }
        if recent(entry.last_used_ms) {
            protected += 1;
            continue;
        }
        total -= entry.bytes;
        doomed.push(entry);
    }
    let freed_bytes: u64 = doomed.iter().map(|entry| entry.bytes).sum();
    let (mut blob_files, mut blob_bytes) = (0, 0);
    if !dry_run {
        for entry in &doomed {
            store.remove(entry)?;
        }
        let freed = store.collect_garbage(IN_USE)?;
        (blob_files, blob_bytes) = (freed.files, freed.bytes);
    }
    let kept = entries.len() - doomed.len();
    if args.json {
        let rows: Vec<serde_json::Value> = doomed
            .iter()
            .map(|entry| json!({ "name": entry.record.name, "key": entry.record.key, "bytes": entry.bytes }))
            .collect();
        return super::print_json(&json!({
            "dry_run": dry_run,
            "removed": rows,
            "kept": kept,
            "kept_bytes": total,
            "protected": protected,
            "keep_recent_s": limits.keep_recent.as_secs(),
            "freed_files": blob_files,
            "freed_bytes": blob_bytes,
        }));
    }
    let mut out = std::io::stdout().lock();
    for entry in &doomed {
        let verb = if dry_run { "would remove" } else { "removed" };
        writeln!(
            out,
            "{verb} {} {} ({}, last used {})",
            entry.record.name,
            entry.key().short(),
            output::size(entry.bytes),
            output::age(entry.last_used_ms)
        )?;
    }
    let removed = if dry_run { "would be removed" } else { "removed" };
    writeln!(
        out,
        "{} ({}) {removed}, {kept} kept ({}){}",
        output::count(doomed.len(), "entry"),
        output::size(freed_bytes),
        output::size(total),
        if dry_run {
            String::new()
        } else {
            format!("; {} freed on disk", output::size(blob_bytes))
        }
    )?;
    if protected > 0 {
        let window = output::span(limits.keep_recent);
        let over = match limits.max_size {
            Some(max_size) if total > max_size => {
                format!(", and the cache stays over {}", output::size(max_size))
            }
            _ => String::new(),
        };
        writeln!(
            out,
            "{} kept though over the limits: used in the last {window}, a build may be using \
             {}{over} (`--keep-recent` sets that window; `--keep-recent 0s` prunes them too)",
            output::count(protected, "entry"),
            if protected == 1 { "it" } else { "them" },
        )?;
    }
    Ok(())
}
