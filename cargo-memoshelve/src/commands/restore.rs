//! `cargo memoshelve restore FILE [--merge]`: entries from an archive, checked before anything is
//! visible. Members are never unpacked by path: only regular files named
//! `memoshelve-backup/entries.jsonl` or `memoshelve-backup/blobs/<64 hex digits>` are read, each
//! blob into a staging file under the root named by its verified hash.

use std::io::{Read, Write};
use std::path::{Component, Path};

use anyhow::{Context, bail};
use memoshelve_build::EntryRecord;
use memoshelve_build::store::Store;
use serde_json::json;

use super::backup::PREFIX;
use crate::cli::MemoshelveArgs;

pub(crate) fn run(args: &MemoshelveArgs, file: &Path, merge: bool) -> anyhow::Result<()> {
    let root = crate::project::cache_root(args)?;
    super::path::check_usable(&root)?;
    let root = root.path;
    let store = Store::create(&root)?;
    if !merge && !store.entries(None)?.is_empty() {
        bail!(
            "{} already has entries: use --merge to add to them, or `cargo memoshelve clear` first",
            root.display()
        );
    }
    let staging = root.join("tmp-b3").join(format!("restore-{}", std::process::id()));
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let result = stage_and_import(args, &store, file, &staging);
    let _ = std::fs::remove_dir_all(&staging);
    let (added, blobs) = result
        .with_context(|| format!("{} was not restored; nothing was added", file.display()))?;
    if args.json {
        return super::print_json(&json!({ "file": file, "entries": added, "blobs": blobs }));
    }
    writeln!(
        std::io::stdout(),
        "restored {} ({}) into {}",
        crate::output::count(added, "entry"),
        crate::output::count(blobs, "blob"),
        root.display()
    )?;
    Ok(())
}

fn stage_and_import(
    args: &MemoshelveArgs,
    store: &Store,
    file: &Path,
    staging: &Path,
) -> anyhow::Result<(usize, usize)> {
    let input =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    // Progress in archive bytes read: the number of members is not known before the end.
    let bar = crate::output::progress_bytes(args, input.metadata()?.len(), "restoring");
    let mut archive = tar::Archive::new(zstd::Decoder::new(bar.wrap_read(input))?);
    let mut lines: Option<String> = None;
    let mut blobs = 0;
    for member in archive.entries()? {
        let mut member = member?;
        let path = member.path()?.into_owned();
        let shown = path.display().to_string();
        if !member.header().entry_type().is_file() {
            bail!(
                "refusing member {shown:?}: not a regular file ({:?})",
                member.header().entry_type()
            );
        }
        if !path.components().all(|component| matches!(component, Component::Normal(_))) {
            bail!("refusing member {shown:?}: it would escape the cache root");
        }
        let relative = path
            .strip_prefix(PREFIX)
            .map_err(|_| anyhow::anyhow!("refusing member {shown:?}: not a memoshelve backup"))?;
        let relative = relative.to_string_lossy();
        if relative == "entries.jsonl" {
            let mut text = String::new();
            member.read_to_string(&mut text)?;
            lines = Some(text);
        } else if let Some(hex) = relative.strip_prefix("blobs/") {
            if hex.len() != 64 || !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                bail!("refusing member {shown:?}: not a blob name");
            }
            let target = staging.join(hex);
            let mut out = std::fs::File::create(&target)?;
            let mut hasher = blake3::Hasher::new();
            let mut buffer = vec![0u8; 1 << 16];
            loop {
                let read = member.read(&mut buffer)?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
                out.write_all(&buffer[..read])?;
            }
            if hasher.finalize().to_hex().as_str() != hex {
                bail!("member {shown:?} does not match its blake3 hash: the archive is damaged");
            }
            blobs += 1;
        } else {
            bail!("refusing member {shown:?}: not part of a memoshelve backup");
        }
    }
    let lines = lines
        .context("the archive has no memoshelve-backup/entries.jsonl: not a memoshelve backup")?;
    let mut entries: Vec<(EntryRecord, u64)> = Vec::new();
    for (number, line) in lines.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("entries.jsonl line {}: not JSON", number + 1))?;
        let record: EntryRecord = serde_json::from_value(value["record"].clone())
            .with_context(|| format!("entries.jsonl line {}: not an entry", number + 1))?;
        entries.push((record, value["last_used_ms"].as_u64().unwrap_or(0)));
    }
    bar.finish_and_clear();
    let added = store.import(staging, &entries)?;
    Ok((added, blobs))
}
