//! `cargo memoshelve backup FILE [--used-since AGE]`: entries and their content in one archive.
//!
//! Archive layout (tar, zstd-compressed): `memoshelve-backup/entries.jsonl` (one
//! `{"record": .., "last_used_ms": ..}` per line) and `memoshelve-backup/blobs/<blake3 hex>`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::cli::MemoshelveArgs;
use crate::output;

pub(crate) const PREFIX: &str = "memoshelve-backup";

/// What a backup wrote.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Written {
    pub(crate) file: std::path::PathBuf,
    pub(crate) entries: usize,
    pub(crate) blobs: usize,
    /// Content bytes before compression.
    pub(crate) bytes: u64,
    pub(crate) archive_bytes: u64,
}

pub(crate) fn run(
    args: &MemoshelveArgs,
    file: &Path,
    used_since: Option<Duration>,
) -> anyhow::Result<()> {
    let store = super::store(args)?;
    let written = write_archive(args, &store, file, used_since)?;
    if args.json {
        return super::print_json(&json!(written));
    }
    writeln!(std::io::stdout(), "{}", describe(&written))?;
    Ok(())
}

/// `wrote 3 entries and 2 blobs (1.2 MiB) to ci.tar.zst (200.0 KiB compressed)`.
pub(crate) fn describe(written: &Written) -> String {
    format!(
        "wrote {} and {} ({}) to {} ({} compressed)",
        output::count(written.entries, "entry"),
        output::count(written.blobs, "blob"),
        output::size(written.bytes),
        written.file.display(),
        output::size(written.archive_bytes)
    )
}

/// Writes the archive (atomically: a `.partial` file renamed into place when complete).
pub(crate) fn write_archive(
    args: &MemoshelveArgs,
    store: &memoshelve_build::store::Store,
    file: &Path,
    used_since: Option<Duration>,
) -> anyhow::Result<Written> {
    let now = output::now_ms();
    let entries: Vec<_> = store
        .entries(None)?
        .into_iter()
        .filter(|entry| {
            used_since
                .is_none_or(|age| now.saturating_sub(entry.last_used_ms) <= age.as_millis() as u64)
        })
        .collect();
    let mut lines = String::new();
    let mut blobs = BTreeSet::new();
    for entry in &entries {
        lines.push_str(&serde_json::to_string(
            &json!({ "record": entry.record, "last_used_ms": entry.last_used_ms }),
        )?);
        lines.push('\n');
        if entry.record.inline.is_none() {
            blobs.insert(entry.record.blake3.clone());
        }
        blobs.extend(entry.files.iter().map(|file| file.blake3.clone()));
    }
    let tmp = file.with_extension("partial");
    let written = (|| -> anyhow::Result<u64> {
        let out = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let encoder = zstd::Encoder::new(out, 3)?;
        let mut archive = tar::Builder::new(encoder);
        let mut header = tar::Header::new_gnu();
        header.set_size(lines.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive.append_data(&mut header, format!("{PREFIX}/entries.jsonl"), lines.as_bytes())?;
        let mut bytes = 0;
        let bar = output::progress(args, blobs.len() as u64, "backing up");
        for hex in &blobs {
            bar.inc(1);
            let path = store.blob_path(hex).with_context(|| {
                format!(
                    "blob {hex} is missing from {} (run `cargo memoshelve verify --repair` first)",
                    store.root().display()
                )
            })?;
            let mut blob = std::fs::File::open(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut header = tar::Header::new_gnu();
            header.set_size(blob.metadata()?.len());
            header.set_mode(0o444);
            header.set_cksum();
            bytes += header.size()?;
            archive.append_data(&mut header, format!("{PREFIX}/blobs/{hex}"), &mut blob)?;
        }
        bar.finish_and_clear();
        archive.into_inner()?.finish()?.sync_all()?;
        Ok(bytes)
    })();
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(err) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(err);
        }
    };
    std::fs::rename(&tmp, file)
        .with_context(|| format!("cannot move the archive to {}", file.display()))?;
    let archive_bytes = std::fs::metadata(file)?.len();
    Ok(Written {
        file: file.to_owned(),
        entries: entries.len(),
        blobs: blobs.len(),
        bytes,
        archive_bytes,
    })
}
