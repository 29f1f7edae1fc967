//! `cargo memoshelve stats`: what the cache holds and what it saved.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::json;

use crate::cli::MemoshelveArgs;
use crate::output;

#[derive(Default, Clone)]
struct PerName {
    entries: u64,
    bytes: u64,
    hits: u64,
    remote_hits: u64,
    misses: u64,
    saved_us: u64,
    remote_saved_us: u64,
}

impl PerName {
    fn add(&mut self, other: &PerName) {
        self.entries += other.entries;
        self.bytes += other.bytes;
        self.hits += other.hits;
        self.remote_hits += other.remote_hits;
        self.misses += other.misses;
        self.saved_us += other.saved_us;
        self.remote_saved_us += other.remote_saved_us;
    }
}

pub(crate) fn run(args: &MemoshelveArgs) -> anyhow::Result<()> {
    let store = super::store(args)?;
    let entries = store.entries(None)?;
    let usage = store.usage();
    let footprint = store.footprint();
    let mut per_name: BTreeMap<String, PerName> = BTreeMap::new();
    for entry in &entries {
        let counts = usage.get(&entry.record.key).cloned().unwrap_or_default();
        let row = per_name.entry(entry.record.name.clone()).or_default();
        row.entries += 1;
        row.bytes += entry.bytes;
        row.hits += counts.hits;
        row.remote_hits += counts.remote_hits;
        row.misses += counts.misses;
        row.saved_us += (counts.hits + counts.remote_hits) * entry.record.compute_us;
        row.remote_saved_us += counts.remote_hits * entry.record.compute_us;
    }
    // Transparent mode's two kinds beside the library's own caches.
    let mut per_kind: BTreeMap<&str, PerName> = BTreeMap::new();
    for (name, row) in &per_name {
        per_kind.entry(kind_of(name)).or_default().add(row);
    }
    let logical: u64 = entries.iter().map(|entry| entry.bytes).sum();
    let hits: u64 = per_name.values().map(|row| row.hits).sum();
    let saved_us: u64 = per_name.values().map(|row| row.saved_us).sum();
    let remote_hits: u64 = per_name.values().map(|row| row.remote_hits).sum();
    let remote_saved_us: u64 = per_name.values().map(|row| row.remote_saved_us).sum();
    let oldest = entries.iter().map(|entry| entry.record.created_ms).min();
    let newest = entries.iter().map(|entry| entry.record.created_ms).max();
    if args.json {
        let row_json = |row: &PerName| {
            json!({
                "entries": row.entries, "bytes": row.bytes, "hits": row.hits,
                "remote_hits": row.remote_hits, "misses": row.misses, "saved_us": row.saved_us,
            })
        };
        let names: serde_json::Map<String, serde_json::Value> =
            per_name.iter().map(|(name, row)| (name.clone(), row_json(row))).collect();
        let kinds: serde_json::Map<String, serde_json::Value> =
            per_kind.iter().map(|(kind, row)| ((*kind).to_owned(), row_json(row))).collect();
        return super::print_json(&json!({
            "root": store.root(),
            "entries": entries.len(),
            "bytes": logical,
            "disk_bytes": footprint.total_bytes,
            "blob_bytes": footprint.blob_bytes,
            "index_bytes": footprint.index_bytes,
            "blobs": footprint.blobs,
            "hits": hits,
            "remote_hits": remote_hits,
            "saved_us": saved_us,
            "oldest_ms": oldest,
            "newest_ms": newest,
            "kinds": kinds,
            "names": names,
        }));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "root:        {}", store.root().display())?;
    writeln!(out, "entries:     {}", entries.len())?;
    writeln!(
        out,
        "stored:      {} ({} on disk, {} in {} after deduplication)",
        output::size(logical),
        output::size(footprint.total_bytes),
        output::size(footprint.blob_bytes),
        output::count(footprint.blobs, "blob")
    )?;
    writeln!(
        out,
        "disk hits:   {hits}, saving about {} of computation",
        output::duration(saved_us - remote_saved_us)
    )?;
    if remote_hits > 0 {
        writeln!(
            out,
            "remote hits: {remote_hits}, saving about {} of computation",
            output::duration(remote_saved_us)
        )?;
    }
    if let (Some(oldest), Some(newest)) = (oldest, newest) {
        writeln!(out, "oldest:      {}, newest: {}", output::age(oldest), output::age(newest))?;
    }
    if per_kind.len() > 1 || per_kind.keys().any(|kind| *kind != OTHER) {
        usage_table(&mut out, "KIND", per_kind.iter().map(|(kind, row)| (*kind, row)))?;
    }
    if !per_name.is_empty() {
        usage_table(&mut out, "NAME", per_name.iter().map(|(name, row)| (name.as_str(), row)))?;
    }
    Ok(())
}

/// A table of what each name (or kind) holds and saved, after a blank line.
fn usage_table<'a>(
    out: &mut impl Write,
    first: &str,
    rows: impl Iterator<Item = (&'a str, &'a PerName)>,
) -> anyhow::Result<()> {
    writeln!(out)?;
    let mut table =
        vec![[first, "ENTRIES", "SIZE", "HITS", "MISSES", "SAVED"].map(str::to_owned).to_vec()];
    for (name, row) in rows {
        table.push(vec![
            name.to_owned(),
            row.entries.to_string(),
            output::size(row.bytes),
            row.hits.to_string(),
            row.misses.to_string(),
            output::duration(row.saved_us),
        ]);
    }
    output::table(out, &table)?;
    Ok(())
}

/// The kind of entries a name holds: transparent mode's compiles (`rustc.<package>...`) and
/// build-script runs (`build-script.<package>`), or another cache.
fn kind_of(name: &str) -> &'static str {
    if name.starts_with("rustc.") {
        "rustc units"
    } else if name.starts_with("build-script.") {
        "build scripts"
    } else {
        OTHER
    }
}

/// [`kind_of`] a library cache.
const OTHER: &str = "other caches";
