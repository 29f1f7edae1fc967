//! Disk tier: the only module that names `cacache`.
//!
//! Layout under a cache root:
//!
//! ```text
//! index-v5/      cacache's index: one append-only bucket file per key, last line wins
//! blobs-b3/      values too large to inline, addressed by their blake3 hash (aa/bb/<hex>), read-only
//! tmp-b3/        blobs being written; renamed into blobs-b3/ when complete
//! locks/         one lock file per key being computed under `allow_race(false)`
//! ```
//!
//! Why not cacache's own content store: its writer always hashes with sha256 (about 32 MB/s in a
//! build script compiled at opt-level 0). Every byte here is hashed once, with blake3, when it is
//! written and again when it is read. Each index record is an [`EntryRecord`] stored as the
//! cacache metadata of the key `memoshelve/v1/<name>/<hex key>`. Its cacache integrity field holds
//! the fixed [`NO_CACACHE_CONTENT`] marker: the value lives inline in the record or in `blobs-b3/`,
//! never in cacache's `content-v2/`.

use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hashing;
use crate::key::{Key, KeyInput, hex_lower};

/// The on-disk format version written into every record; records of another version are misses.
pub const FORMAT_VERSION: u32 = 2;
/// Prefix of every index key memoshelve writes.
pub(crate) const INDEX_PREFIX: &str = "memoshelve/v1/";
/// Values up to this many encoded bytes are stored inside the index record: one file per hit.
pub(crate) const INLINE_MAX: usize = 1024;
/// The cacache integrity recorded for memoshelve entries, meaning "no cacache content".
pub(crate) const NO_CACACHE_CONTENT: &str = "sha1-bWVtb3NoZWx2ZS1uby1jb250ZW50";

const BLOB_DIR: &str = "blobs-b3";
const TMP_DIR: &str = "tmp-b3";
const LOCK_DIR: &str = "locks";
/// The root-wide lock: shared by writers, exclusive for compaction.
const ROOT_LOCK: &str = "root.lock";

/// What the index records about one entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EntryRecord {
    /// [`FORMAT_VERSION`] at the time of writing.
    pub format: u32,
    /// The cache name.
    pub name: String,
    /// The version salt.
    pub version: String,
    /// The full hex key.
    pub key: String,
    /// `std::any::type_name` of the value.
    pub type_name: String,
    /// When it was written, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// How long the computation took, in microseconds.
    pub compute_us: u64,
    /// Encoded size of the value in bytes.
    pub size: u64,
    /// blake3 of the encoded value, hex.
    pub blake3: String,
    /// A short rendering of the arguments, for people.
    pub args: String,
    /// The declared inputs that joined the key, by name.
    #[serde(default)]
    pub inputs: Vec<KeyInput>,
    /// The encoded value, base64, when it is at most 1 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
}

/// A damaged line of an index bucket (see `cargo memoshelve verify`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg(feature = "maintenance")]
#[non_exhaustive]
pub struct IndexDamage {
    /// The bucket file.
    pub file: PathBuf,
    /// The line, counted from 1 (0: the whole file).
    pub line: usize,
    /// What is wrong with it.
    pub problem: String,
    /// The index key of a well-formed line whose record is unreadable.
    pub index_key: Option<String>,
}

/// One line of an index bucket as cacache 13 writes it: `\n<sha256 hex of the JSON>\t<JSON>`.
#[derive(Clone, Debug, Deserialize)]
struct IndexLine {
    key: String,
    /// `None` for a deletion.
    integrity: Option<String>,
    time: u128,
    size: usize,
    #[serde(default)]
    metadata: serde_json::Value,
    #[serde(default)]
    raw_metadata: Option<Vec<u8>>,
}

/// The lines of a bucket, numbered from 1: well-formed ones (hash and JSON good), or what is
/// wrong with them (cacache skips such lines). Missing bucket: none.
#[cfg(feature = "maintenance")]
fn read_bucket(
    path: &Path,
) -> std::io::Result<Vec<(usize, std::result::Result<IndexLine, String>)>> {
    match fs::read(path) {
        Ok(bytes) => Ok(parse_bucket(&bytes)),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

/// [`read_bucket`] of bytes already read.
fn parse_bucket(bytes: &[u8]) -> Vec<(usize, std::result::Result<IndexLine, String>)> {
    use sha2::Digest as _;
    let text = String::from_utf8_lossy(bytes);
    text.split('\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(number, line)| {
            let parsed = match line.split_once('\t') {
                Some((hash, json))
                    if !json.contains('\t')
                        && hex_lower(&sha2::Sha256::digest(json.as_bytes())) == hash =>
                {
                    serde_json::from_str::<IndexLine>(json)
                        .map_err(|err| format!("a line that is not an index entry: {err}"))
                }
                _ => Err("a torn or garbage line (cacache skips it)".to_owned()),
            };
            (number + 1, parsed)
        })
        .collect()
}

/// The live entries of a bucket's lines, by cacache's rules (see [`lines_in_effect`]).
fn live_lines(
    lines: Vec<(usize, std::result::Result<IndexLine, String>)>,
) -> Vec<cacache::index::Metadata> {
    let in_effect = lines_in_effect(&lines);
    lines
        .into_iter()
        .filter(|(number, _)| in_effect.contains(number))
        .filter_map(|(_, parsed)| parsed.ok())
        .filter_map(|line| {
            // A deletion in effect: the key is gone.
            let integrity = line.integrity.as_deref()?.parse().ok()?;
            Some(cacache::index::Metadata {
                integrity,
                key: line.key,
                time: line.time,
                size: line.size,
                metadata: line.metadata,
                raw_metadata: line.raw_metadata,
            })
        })
        .collect()
}

/// The fast read of a bucket for listing: when every line is of one memoshelve key and the
/// last line is well-formed, that line's index key and record (`Some(None)`: the key was deleted). Like a
/// hit's [`read_last_line`], it skips cacache's sha256 of each line and parses the record
/// typed, not through a JSON tree: that was most of a 100k-entry `list`. `None`: anything
/// unusual (a torn last line, several keys, another format); the caller reads the bucket by
/// cacache's rules. `verify` always does, so a line whose hash does not match is still found.
fn sole_record(bytes: &[u8]) -> Option<Option<(String, EntryRecord)>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split('\n').filter(|line| !line.is_empty());
    let line = hit_line(lines.next_back()?)?;
    if !line.key.starts_with(INDEX_PREFIX) {
        return None;
    }
    // cacache writes the key first: every earlier line must be a line of the same key.
    let head = format!("{{\"key\":{}", serde_json::to_string(&line.key).ok()?);
    if !lines.all(|other| other.split_once('\t').is_some_and(|(_, json)| json.starts_with(&head))) {
        return None;
    }
    match (line.integrity.as_deref(), line.metadata) {
        (None, _) => Some(None),
        (Some(NO_CACACHE_CONTENT), Some(record)) => Some(Some((line.key, record))),
        _ => None,
    }
}

/// The numbers of a bucket's lines in effect, by cacache's reading rules (those of its `find`):
/// for each key, the last well-formed line that is a deletion or has an integrity cacache can
/// parse (lines with another integrity are skipped; cacache's `ls` would panic on them).
fn lines_in_effect(
    lines: &[(usize, std::result::Result<IndexLine, String>)],
) -> std::collections::HashSet<usize> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (number, parsed) in lines {
        if let Ok(line) = parsed
            && line.integrity.as_deref().is_none_or(|sri| sri.parse::<cacache::Integrity>().is_ok())
        {
            last.insert(&line.key, *number);
        }
    }
    last.into_values().collect()
}

/// What is wrong with a well-formed index line, if anything: an integrity cacache cannot parse,
/// or a memoshelve record of this format that does not parse or names another entry.
/// (Deletions and other formats' records are fine here; `upgrade` drops the latter.)
#[cfg(feature = "maintenance")]
fn record_problem(line: &IndexLine) -> Option<String> {
    let key = &line.key;
    let Some(integrity) = &line.integrity else { return None };
    if integrity.parse::<cacache::Integrity>().is_err() {
        return Some(format!("malformed integrity for {key}"));
    }
    if !key.starts_with(INDEX_PREFIX) {
        return None;
    }
    let format = line.metadata.get("format").and_then(|format| format.as_u64());
    if format.is_some_and(|format| format != u64::from(FORMAT_VERSION)) {
        return None;
    }
    match serde_json::from_value::<EntryRecord>(line.metadata.clone()) {
        Err(err) => Some(format!("unreadable record of {key}: {err}")),
        Ok(record) => match Key::from_hex(&record.key) {
            Some(parsed) if index_key(&record.name, &parsed) == *key => None,
            _ => Some(format!("the record of {key} names another entry")),
        },
    }
}

/// One cache root on disk.
#[derive(Clone, Debug)]
pub(crate) struct Disk {
    root: PathBuf,
}

pub(crate) fn index_key(name: &str, key: &Key) -> String {
    format!("{INDEX_PREFIX}{name}/{key}")
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io { action, path: path.to_owned(), source }
}

impl Disk {
    /// Opens a root, creating it (owner-only on Unix) if it does not exist yet.
    pub(crate) fn open(root: &Path) -> Result<Disk> {
        let root_error = |source| Error::Root { path: root.to_owned(), source };
        match fs::metadata(root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(root_error(std::io::Error::new(
                    ErrorKind::NotADirectory,
                    "it exists and is not a directory",
                )));
            }
            Err(err) if err.kind() == ErrorKind::NotFound => {
                let mut builder = fs::DirBuilder::new();
                builder.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                builder
                    .create(root)
                    .map_err(|err| root_error(dangling_link(root).unwrap_or(err)))?;
                // Tells backup tools (and `cargo clean`-like sweepers) that this is a cache.
                let _ = fs::write(
                    root.join("CACHEDIR.TAG"),
                    "Signature: 8a477f597d28d172789f06886806bc55\n\
                     # This directory is a memoshelve cache: https://bford.info/cachedir/\n",
                );
            }
            Err(err) => return Err(root_error(err)),
        }
        Ok(Disk { root: root.to_owned() })
    }

    /// A root as it is, created or not (for inspection: nothing is written by opening).
    #[cfg(feature = "maintenance")]
    pub(crate) fn at(root: &Path) -> Disk {
        Disk { root: root.to_owned() }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn index_error(&self, key: &str, err: cacache::Error) -> Error {
        Error::Index { root: self.root.clone(), key: key.to_owned(), message: err.to_string() }
    }

    pub(crate) fn corrupt(&self, name: &str, key: &Key, reason: impl Into<String>) -> Error {
        Error::Corrupt { root: self.root.clone(), key: index_key(name, key), reason: reason.into() }
    }

    /// The live record of `name`/`key`, if any. A record that does not parse is an error.
    pub(crate) fn find(&self, name: &str, key: &Key) -> Result<Option<EntryRecord>> {
        self.find_touching(name, key, false)
    }

    /// [`Disk::find`] for a hit: also refreshes the entry's last use (the bucket's mtime),
    /// through the same open file.
    pub(crate) fn find_and_touch(&self, name: &str, key: &Key) -> Result<Option<EntryRecord>> {
        self.find_touching(name, key, true)
    }

    fn find_touching(&self, name: &str, key: &Key, touch: bool) -> Result<Option<EntryRecord>> {
        let index_key = index_key(name, key);
        let bucket = bucket_of(&self.root, &index_key);
        let record = match read_last_line(&bucket, &index_key, touch) {
            Some(found) => found,
            None => {
                let found = self.find_by_cacache(&index_key, name, key)?;
                if touch && found.is_some() {
                    touch_bucket(&bucket);
                }
                found
            }
        };
        // A record of another format version is a miss (never misread): the fresh entry
        // replaces it, and `upgrade` drops those that are never asked for again.
        let record = record.filter(|record| record.format == FORMAT_VERSION);
        record.map(|record| self.checked(record, name, key)).transpose()
    }

    /// cacache's own reader: every line of the bucket hashed and parsed, the last good one for
    /// the key wins.
    fn find_by_cacache(
        &self,
        index_key: &str,
        name: &str,
        key: &Key,
    ) -> Result<Option<EntryRecord>> {
        let Some(meta) = cacache::index::find(&self.root, index_key)
            .map_err(|err| self.index_error(index_key, err))?
        else {
            return Ok(None);
        };
        serde_json::from_value(meta.metadata)
            .map(Some)
            .map_err(|err| self.corrupt(name, key, format!("unreadable record: {err}")))
    }

    /// A record is of this format and names the entry it was found under.
    fn checked(&self, record: EntryRecord, name: &str, key: &Key) -> Result<EntryRecord> {
        if record.format != FORMAT_VERSION {
            return Err(self.corrupt(
                name,
                key,
                format!("format {} is not {FORMAT_VERSION}", record.format),
            ));
        }
        if record.key != key.to_hex() || record.name != name {
            return Err(self.corrupt(name, key, "record names another entry"));
        }
        Ok(record)
    }

    fn blob_path(&self, blake3_hex: &str) -> Option<PathBuf> {
        if blake3_hex.len() != 64 || !blake3_hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return None;
        }
        Some(
            self.root
                .join(BLOB_DIR)
                .join(&blake3_hex[..2])
                .join(&blake3_hex[2..4])
                .join(blake3_hex),
        )
    }

    /// [`Disk::load`], the first `skip` bytes apart from the rest (see
    /// [`hashing::read_hashed_parts`]); checked the same way, as a whole.
    pub(crate) fn load_parts(
        &self,
        record: &EntryRecord,
        key: &Key,
        skip: usize,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let name = &record.name;
        let (head, rest, hash) = match &record.inline {
            Some(inline) => {
                let mut bytes = base64::engine::general_purpose::STANDARD
                    .decode(inline)
                    .map_err(|err| self.corrupt(name, key, format!("inline value: {err}")))?;
                let hash = blake3::hash(&bytes);
                let rest = bytes.split_off(skip.min(bytes.len()));
                (bytes, rest, hash)
            }
            None => {
                let path = self
                    .blob_path(&record.blake3)
                    .ok_or_else(|| self.corrupt(name, key, "malformed blob hash"))?;
                match hashing::read_hashed_parts(&path, skip) {
                    Ok(parts) => parts,
                    Err(err) if err.kind() == ErrorKind::NotFound => {
                        return Err(self.corrupt(
                            name,
                            key,
                            format!("blob {} is missing", path.display()),
                        ));
                    }
                    Err(err) => return Err(io_error("read blob", &path, err)),
                }
            }
        };
        let len = (head.len() + rest.len()) as u64;
        if len != record.size {
            return Err(self.corrupt(
                name,
                key,
                format!("size is {len} bytes, the record says {}", record.size),
            ));
        }
        if hash.to_hex().as_str() != record.blake3 {
            return Err(self.corrupt(name, key, "blake3 mismatch"));
        }
        Ok((head, rest))
    }

    /// Stores a value: the blob first (if not inline), then the index record, so a crash in
    /// between leaves at most an unreferenced blob, never a record without its value.
    pub(crate) fn store(&self, mut record: EntryRecord, bytes: &[u8]) -> Result<()> {
        let hash = blake3::hash(bytes);
        record.size = bytes.len() as u64;
        record.blake3 = hash.to_hex().to_string();
        if bytes.len() <= INLINE_MAX {
            record.inline = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
        } else {
            record.inline = None;
            self.write_blob(&record.blake3, bytes)?;
        }
        self.insert_record(&record)
    }

    /// Appends a complete record's index line (its blobs must already be in place).
    pub(crate) fn insert_record(&self, record: &EntryRecord) -> Result<()> {
        let key = Key::from_hex(&record.key).ok_or_else(|| Error::Corrupt {
            root: self.root.clone(),
            key: record.key.clone(),
            reason: "malformed key".to_owned(),
        })?;
        let index_key = index_key(&record.name, &key);
        // The line cacache's `index::insert` would append, written here (see `index_line::line`):
        // one `write` on the bucket opened for appending, its directories made only when absent.
        let line = crate::index_line::line(&index_key, NO_CACACHE_CONTENT, record);
        let bucket = bucket_of(&self.root, &index_key);
        open_in_dir(fs::File::options().create(true).append(true), &bucket)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .map_err(|err| io_error("write index", &bucket, err))
    }

    /// Stores a file as a blob, streamed and hashed in one pass; returns its size and blake3 hex.
    pub(crate) fn store_file(&self, path: &Path) -> Result<(u64, String)> {
        let tmp_dir = self.root.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir).map_err(|err| io_error("create", &tmp_dir, err))?;
        let tmp = tmp_dir.join(unique_name("file"));
        let copied = hashing::copy_hashed(path, &tmp).and_then(|copied| {
            let mut perms = fs::metadata(&tmp)?.permissions();
            perms.set_readonly(true);
            fs::set_permissions(&tmp, perms)?;
            Ok(copied)
        });
        let (size, hash) = match copied {
            Ok(done) => done,
            Err(err) => {
                let _ = fs::remove_file(&tmp);
                return Err(io_error("store output file", path, err));
            }
        };
        let hex = hash.to_hex().to_string();
        let blob = self.blob_path(&hex).expect("a blake3 hex is a valid blob name");
        if fs::metadata(&blob).is_ok_and(|meta| meta.len() == size) {
            let _ = fs::remove_file(&tmp);
            return Ok((size, hex));
        }
        let parent = blob.parent().expect("blob paths have a parent");
        if let Err(err) = fs::create_dir_all(parent).and_then(|()| fs::rename(&tmp, &blob)) {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("move blob into", &blob, err));
        }
        Ok((size, hex))
    }

    /// Writes the blob `blake3_hex` to `target`, verified and atomically: a reflink where the
    /// filesystem allows it, else a copy hashed while it streams. Never a hard link: a later
    /// write through the restored path would corrupt the store.
    pub(crate) fn restore_file(
        &self,
        blake3_hex: &str,
        size: u64,
        target: &Path,
        mode: u32,
    ) -> Result<()> {
        let blob = self.blob_path(blake3_hex).ok_or_else(|| Error::Corrupt {
            root: self.root.clone(),
            key: blake3_hex.to_owned(),
            reason: "malformed blob hash in a manifest".to_owned(),
        })?;
        let corrupt = |reason: String| Error::Corrupt {
            root: self.root.clone(),
            key: blake3_hex.to_owned(),
            reason,
        };
        let parent = target.parent().expect("restored files are inside the output dir");
        fs::create_dir_all(parent).map_err(|err| io_error("create", parent, err))?;
        // A short name of its own: the file's name may already be as long as names can be.
        let tmp = parent.join(short_temp_name());
        let copied = if reflink_copy::reflink(&blob, &tmp).is_ok() {
            // Shared extents: what is checked is what the restored file holds.
            hashing::hash_file(&tmp).and_then(|hash| Ok((fs::metadata(&tmp)?.len(), hash)))
        } else {
            hashing::copy_hashed(&blob, &tmp)
        };
        let checked = match copied {
            Ok((written, hash)) if written == size && hash.to_hex().as_str() == blake3_hex => {
                Ok(())
            }
            Ok((written, _)) => Err(corrupt(format!(
                "blob {} ({written} bytes) does not match its hash",
                blob.display()
            ))),
            Err(err) if err.kind() == ErrorKind::NotFound && !blob.exists() => {
                Err(corrupt(format!("blob {} is missing", blob.display())))
            }
            Err(err) => Err(io_error("restore", target, err)),
        };
        if let Err(err) = checked {
            let _ = fs::remove_file(&tmp);
            if let Error::Corrupt { .. } = err {
                let _ = fs::remove_file(&blob);
            }
            return Err(err);
        }
        let finished = set_mode(&tmp, mode).and_then(|()| fs::rename(&tmp, target));
        if let Err(err) = finished {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("move restored file to", target, err));
        }
        Ok(())
    }

    fn write_blob(&self, blake3_hex: &str, bytes: &[u8]) -> Result<()> {
        let path = self.blob_path(blake3_hex).expect("a blake3 hex is a valid blob name");
        if fs::metadata(&path).is_ok_and(|meta| meta.len() == bytes.len() as u64) {
            // Content-addressed: the same bytes are already there. A damaged copy of the same
            // length is caught by the blake3 check on read, which removes it.
            return Ok(());
        }
        let tmp_dir = self.root.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir).map_err(|err| io_error("create", &tmp_dir, err))?;
        let tmp = tmp_dir.join(unique_name(blake3_hex));
        let written = (|| {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            let mut perms = file.metadata()?.permissions();
            perms.set_readonly(true);
            file.set_permissions(perms)?;
            Ok(())
        })();
        if let Err(err) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("write blob", &tmp, err));
        }
        let parent = path.parent().expect("blob paths have a parent");
        let renamed = fs::create_dir_all(parent).and_then(|()| fs::rename(&tmp, &path));
        if let Err(err) = renamed {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("move blob into", &path, err));
        }
        Ok(())
    }

    /// Deletes a blob whose content failed its check (it cannot be right for any entry).
    pub(crate) fn remove_bad_blob(&self, record: &EntryRecord) {
        if record.inline.is_none()
            && let Some(path) = self.blob_path(&record.blake3)
        {
            let _ = fs::remove_file(path);
        }
    }

    /// Removes the index entry (a tombstone line); shared blobs stay until `compact`.
    pub(crate) fn remove(&self, name: &str, key: &Key) -> Result<bool> {
        let _guard = self.write_guard();
        let existed =
            cacache::index::find(&self.root, &index_key(name, key)).ok().flatten().is_some();
        if existed {
            let index_key = index_key(name, key);
            cacache::index::delete(&self.root, &index_key)
                .map_err(|err| self.index_error(&index_key, err))?;
        }
        Ok(existed)
    }

    /// Every live record (of one name, or of all), with its index key; unreadable records and
    /// records of other format versions are skipped.
    pub(crate) fn list(&self, name: Option<&str>) -> Result<Vec<EntryRecord>> {
        Ok(self.list_used(name)?.into_iter().map(|(record, _)| record).collect())
    }

    /// [`Disk::list`], each record with its last use (its bucket's mtime). Buckets are read in
    /// parallel, each by [`sole_record`] when it can, else by cacache's rules.
    pub(crate) fn list_used(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<(EntryRecord, Option<SystemTime>)>> {
        let prefix = match name {
            Some(name) => format!("{INDEX_PREFIX}{name}/"),
            None => INDEX_PREFIX.to_owned(),
        };
        self.map_buckets(|bytes, used| {
            let records = match sole_record(bytes) {
                Some(record) => record.into_iter().collect(),
                None => live_lines(parse_bucket(bytes))
                    .into_iter()
                    .filter(|meta| meta.key.starts_with(&prefix))
                    .filter_map(|meta| {
                        Some((meta.key, serde_json::from_value::<EntryRecord>(meta.metadata).ok()?))
                    })
                    .collect::<Vec<_>>(),
            };
            records
                .into_iter()
                .filter(|(index_key, record)| {
                    index_key.starts_with(&prefix)
                        && record.format == FORMAT_VERSION
                        && name.is_none_or(|name| record.name == name)
                })
                .map(|(_, record)| (record, used))
                .collect()
        })
    }

    /// `read(bytes, mtime)` of every index bucket, in parallel: each thread takes the index's
    /// top-level directories in turn, lists them by entry type (no stat per file) and reads each
    /// bucket with one open and one fstat. None if there is no index yet.
    fn map_buckets<T: Send>(
        &self,
        read: impl Fn(&[u8], Option<SystemTime>) -> Vec<T> + Sync,
    ) -> Result<Vec<T>> {
        let index = self.root.join("index-v5");
        let tops: Vec<PathBuf> = match fs::read_dir(&index) {
            Ok(listing) => listing.flatten().map(|item| item.path()).collect(),
            Err(err) if err.kind() == ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(io_error("list", &index, err)),
        };
        let found = crate::parallel::map(&tops, |top| {
            let mut found = Vec::new();
            for path in paths_under(top) {
                let mut file = match fs::File::open(&path) {
                    Ok(file) => file,
                    Err(err) if err.kind() == ErrorKind::NotFound => continue,
                    Err(err) => return Err(io_error("read", &path, err)),
                };
                let meta = file.metadata().map_err(|err| io_error("read", &path, err))?;
                let bytes = read_small(&mut file, Some(meta.len()))
                    .map_err(|err| io_error("read", &path, err))?;
                found.extend(read(&bytes, meta.modified().ok()));
            }
            Ok(found)
        });
        let mut all = Vec::new();
        for part in found {
            all.extend(part?);
        }
        Ok(all)
    }

    /// Every live index entry (memoshelve's and any other), with cacache's reading rules: in
    /// each bucket the last well-formed line of a key wins, a deletion removes it, torn lines
    /// and lines whose integrity does not parse are skipped. (cacache's own `ls` panics on the
    /// latter.) None if there is no index yet.
    #[cfg(feature = "maintenance")]
    fn ls_live(&self) -> Result<Vec<cacache::index::Metadata>> {
        self.map_buckets(|bytes, _| live_lines(parse_bucket(bytes)))
    }

    /// Index keys of memoshelve entries that this version cannot read: another `memoshelve/vN/`
    /// prefix, another record format, or a record that does not parse.
    #[cfg(feature = "maintenance")]
    pub(crate) fn foreign_keys(&self) -> Result<Vec<String>> {
        Ok(self
            .ls_live()?
            .into_iter()
            .filter(|meta| meta.key.starts_with("memoshelve/"))
            .filter(|meta| {
                !meta.key.starts_with(INDEX_PREFIX)
                    || serde_json::from_value::<EntryRecord>(meta.metadata.clone())
                        .map_or(true, |record| record.format != FORMAT_VERSION)
            })
            .map(|meta| meta.key)
            .collect())
    }

    /// Every index line cacache would skip (torn by a crash, or garbage) and every memoshelve
    /// record that does not parse, bucket by bucket. A bucket that cannot be read at all is one
    /// problem.
    #[cfg(feature = "maintenance")]
    pub(crate) fn check_index(&self) -> Vec<IndexDamage> {
        let mut damage = Vec::new();
        for (path, _) in files_under(&self.root.join("index-v5")) {
            let lines = match read_bucket(&path) {
                Ok(lines) => lines,
                Err(err) => {
                    let problem = format!("unreadable: {err}");
                    damage.push(IndexDamage { file: path, line: 0, problem, index_key: None });
                    continue;
                }
            };
            // A bad record superseded by a later line of its key is history: compaction drops
            // it. Only the line in effect is removed by key.
            let in_effect = lines_in_effect(&lines);
            for (line, parsed) in lines {
                let (problem, index_key) = match parsed {
                    Ok(entry) => {
                        let current = in_effect.contains(&line);
                        (record_problem(&entry), current.then_some(entry.key))
                    }
                    Err(problem) => (Some(problem), None),
                };
                if let Some(problem) = problem {
                    damage.push(IndexDamage { file: path.clone(), line, problem, index_key });
                }
            }
        }
        damage
    }

    /// Removes an index entry by its raw key.
    #[cfg(feature = "maintenance")]
    pub(crate) fn remove_index_key(&self, index_key: &str) -> Result<()> {
        let _guard = self.write_guard();
        cacache::index::delete(&self.root, index_key)
            .map_err(|err| self.index_error(index_key, err))
    }

    /// Checks that a blob exists with this size and blake3 hash.
    #[cfg(feature = "maintenance")]
    pub(crate) fn check_blob(
        &self,
        blake3_hex: &str,
        size: u64,
    ) -> std::result::Result<(), String> {
        let path = self
            .blob_path(blake3_hex)
            .ok_or_else(|| format!("malformed blob hash {blake3_hex:?}"))?;
        check_file(&path, blake3_hex, size)
    }

    /// Records one event (a disk hit, remote hit or miss) in the root's event log
    /// ([`crate::events`]), which `cargo memoshelve stats` reads. Best effort, like every cache
    /// write.
    pub(crate) fn log_event(&self, tier: &str, name: &str, key: &Key) {
        let line = format!("{}\t{tier}\t{name}\t{key}\n", now_ms());
        crate::events::append(self, &line);
    }

    /// The cacache bucket file of an index key (cacache 13: `index-v5/` + sha1 hex split 2/2/rest).
    #[cfg(feature = "maintenance")]
    pub(crate) fn bucket_path(&self, name: &str, key: &Key) -> PathBuf {
        bucket_of(&self.root, &index_key(name, key))
    }

    /// Takes the root-wide lock in shared mode for a write (blobs, then the index line that
    /// refers to them), so that a compaction, which takes it exclusively, never sees half of one.
    /// `None` (no lock) where it cannot be taken: writing goes on, as before there were locks.
    pub(crate) fn write_guard(&self) -> Option<fs::File> {
        let path = self.root.join(LOCK_DIR).join(ROOT_LOCK);
        let file = open_in_dir(fs::File::options().create(true).truncate(false).write(true), &path)
            .ok()?;
        file.lock_shared().ok()?;
        Some(file)
    }

    /// Takes the root-wide lock exclusively: no write is in progress while it is held.
    #[cfg(feature = "maintenance")]
    pub(crate) fn exclusive_guard(&self) -> Result<fs::File> {
        let path = self.root.join(LOCK_DIR).join(ROOT_LOCK);
        let file = open_in_dir(fs::File::options().create(true).truncate(false).write(true), &path)
            .map_err(|err| io_error("open", &path, err))?;
        file.lock().map_err(|err| io_error("lock", &path, err))?;
        Ok(file)
    }

    /// Rewrites every index bucket to hold only its live lines (cacache's index is append-only:
    /// overwrites and removals leave history behind) and deletes buckets with none. Each new
    /// bucket is written by cacache itself into a scratch root, given the old bucket's mtime
    /// (the entry's last use), and renamed over the old one. Call it under
    /// [`Disk::exclusive_guard`]. Returns the index's bytes before and after.
    #[cfg(feature = "maintenance")]
    pub(crate) fn compact_index(&self) -> Result<(u64, u64)> {
        let index = self.root.join("index-v5");
        if !index.is_dir() {
            return Ok((0, 0));
        }
        let live = self.ls_live()?;
        let mut by_bucket: std::collections::HashMap<PathBuf, Vec<cacache::index::Metadata>> =
            Default::default();
        for meta in live {
            by_bucket.entry(bucket_of(&self.root, &meta.key)).or_default().push(meta);
        }
        let (mut before, mut after) = (0, 0);
        for (path, meta) in files_under(&index) {
            before += meta.len();
            let Some(entries) = by_bucket.remove(&path) else {
                fs::remove_file(&path).map_err(|err| io_error("remove", &path, err))?;
                continue;
            };
            let lines = fs::read_to_string(&path)
                .map_or(0, |text| text.lines().filter(|line| !line.is_empty()).count());
            if lines == entries.len() {
                after += meta.len();
                continue;
            }
            let scratch = self.root.join(TMP_DIR).join(unique_name("compact"));
            let rewritten = (|| -> Result<u64> {
                for entry in entries {
                    let mut opts = cacache::WriteOpts::new()
                        .integrity(entry.integrity)
                        .size(entry.size)
                        .time(entry.time)
                        .metadata(entry.metadata);
                    if let Some(raw) = entry.raw_metadata {
                        opts = opts.raw_metadata(raw);
                    }
                    cacache::index::insert(&scratch, &entry.key, opts)
                        .map_err(|err| self.index_error(&entry.key, err))?;
                }
                let relative = path.strip_prefix(&self.root).expect("buckets are under the root");
                let fresh = scratch.join(relative);
                if let Ok(modified) = meta.modified() {
                    let _ = fs::File::options()
                        .append(true)
                        .open(&fresh)
                        .and_then(|file| file.set_modified(modified));
                }
                let size = fs::metadata(&fresh).map_err(|err| io_error("read", &fresh, err))?.len();
                fs::rename(&fresh, &path).map_err(|err| io_error("replace", &path, err))?;
                Ok(size)
            })();
            let _ = fs::remove_dir_all(&scratch);
            after += rewritten?;
        }
        Ok((before, after))
    }

    /// Takes the per-key compute lock, waiting at most `timeout`. `None` means it timed out
    /// or could not be taken; the caller then computes anyway.
    pub(crate) fn lock_key(&self, key: &Key, timeout: Duration) -> Result<Option<fs::File>> {
        let dir = self.root.join(LOCK_DIR);
        fs::create_dir_all(&dir).map_err(|err| io_error("create", &dir, err))?;
        let path = dir.join(format!("{key}.lock"));
        let file = fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|err| io_error("open lock file", &path, err))?;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(file)),
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(fs::TryLockError::WouldBlock) => return Ok(None),
                Err(fs::TryLockError::Error(err)) => return Err(io_error("lock", &path, err)),
            }
        }
    }
}

/// What the remote tier's client and the maintenance API need besides the build's own paths:
/// whole values, and blobs received from elsewhere.
#[cfg(feature = "_remote-client")]
impl Disk {
    /// The encoded value of a record, checked against its size and blake3 hash.
    pub(crate) fn load(&self, record: &EntryRecord, key: &Key) -> Result<Vec<u8>> {
        self.load_parts(record, key, 0).map(|(_, bytes)| bytes)
    }

    /// The path of an existing blob, if there is one.
    pub(crate) fn existing_blob(&self, blake3_hex: &str) -> Option<PathBuf> {
        self.blob_path(blake3_hex).filter(|path| path.is_file())
    }

    /// Moves a verified file into the blob area under its hash (kept if already there).
    pub(crate) fn adopt_blob(&self, file: &Path, blake3_hex: &str) -> Result<()> {
        let path = self.blob_path(blake3_hex).ok_or_else(|| Error::Corrupt {
            root: self.root.clone(),
            key: blake3_hex.to_owned(),
            reason: "malformed blob hash".to_owned(),
        })?;
        if path.is_file() {
            return Ok(());
        }
        let parent = path.parent().expect("blob paths have a parent");
        fs::create_dir_all(parent)
            .and_then(|()| {
                let mut perms = fs::metadata(file)?.permissions();
                perms.set_readonly(true);
                fs::set_permissions(file, perms)?;
                fs::rename(file, &path)
            })
            .map_err(|err| io_error("move blob into", &path, err))
    }

    /// A fresh path in the root's temporary area (created if needed), for a blob being
    /// received; [`Disk::adopt_blob`] moves it into place once it is checked.
    pub(crate) fn temporary_file(&self, stem: &str) -> Result<PathBuf> {
        let tmp_dir = self.root.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir).map_err(|err| io_error("create", &tmp_dir, err))?;
        Ok(tmp_dir.join(unique_name(stem)))
    }
}

/// Opens `path` with `options`, making its directory only when the open says it is absent: it
/// nearly always exists, and making it first is a system call or two on every open.
pub(crate) fn open_in_dir(options: &fs::OpenOptions, path: &Path) -> std::io::Result<fs::File> {
    match options.open(path) {
        Err(err) if err.kind() == ErrorKind::NotFound => {
            path.parent().map_or(Ok(()), fs::create_dir_all)?;
            options.open(path)
        }
        opened => opened,
    }
}

/// The permission bits of a file (0o644 where there are none to read).
pub(crate) fn mode_of(meta: &fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777
    }
    #[cfg(not(unix))]
    {
        if meta.permissions().readonly() { 0o444 } else { 0o644 }
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let mut perms = fs::metadata(path)?.permissions();
        perms.set_readonly(mode & 0o222 == 0);
        fs::set_permissions(path, perms)
    }
}

/// Checks that the file at `path` has this size and blake3 hash; says what is wrong otherwise.
#[cfg(feature = "maintenance")]
pub(crate) fn check_file(
    path: &Path,
    blake3_hex: &str,
    size: u64,
) -> std::result::Result<(), String> {
    let mut hasher = blake3::Hasher::new();
    let file = fs::File::open(path).map_err(|err| format!("blob {}: {err}", path.display()))?;
    hasher.update_reader(file).map_err(|err| format!("blob {}: {err}", path.display()))?;
    let actual_size = hasher.count();
    if actual_size != size {
        return Err(format!("blob {} is {actual_size} bytes, expected {size}", path.display()));
    }
    if hasher.finalize().to_hex().as_str() != blake3_hex {
        return Err(format!("blob {} does not match its blake3 hash", path.display()));
    }
    Ok(())
}

/// Every regular file under `dir`, recursively, with its metadata. Parts that cannot be read
/// are skipped: the callers (listings, garbage collection, compaction) then leave them alone.
/// The files under `path` (or `path` itself if it is one), by directory entry types: no stat
/// per file where the filesystem reports types.
fn paths_under(path: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![path.to_owned()];
    while let Some(path) = pending.pop() {
        let Ok(listing) = fs::read_dir(&path) else {
            if path.is_file() {
                files.push(path);
            }
            continue;
        };
        for item in listing.flatten() {
            match item.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(item.path()),
                Ok(kind) if kind.is_file() => files.push(item.path()),
                // A symlink or an unknown type: follow it as `files_under` would.
                _ if item.path().is_dir() => pending.push(item.path()),
                _ => files.push(item.path()),
            }
        }
    }
    files
}

#[cfg(feature = "maintenance")]
pub(crate) fn files_under(dir: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(listing) = fs::read_dir(&dir) else { continue };
        for item in listing.flatten() {
            let Ok(meta) = item.metadata() else { continue };
            if meta.is_dir() {
                pending.push(item.path());
            } else {
                files.push((item.path(), meta));
            }
        }
    }
    files
}

/// The cacache bucket file of an index key (cacache 13: `index-v5/` + sha1 hex split 2/2/rest).
/// A miss asks twice for the same key (its lookup, then its store), and sha1 at opt-level 0 is
/// ~50k instructions a key, a tenth of a miss: the last key's hex is kept per thread.
fn bucket_of(root: &Path, index_key: &str) -> PathBuf {
    thread_local! {
        static LAST: std::cell::RefCell<(String, String)> =
            const { std::cell::RefCell::new((String::new(), String::new())) };
    }
    LAST.with_borrow_mut(|(key, hex)| {
        if key.is_empty() || key != index_key {
            use sha1::Digest as _;
            *hex = hex_lower(&sha1::Sha1::digest(index_key.as_bytes()));
            key.clear();
            key.push_str(index_key);
        }
        root.join("index-v5").join(&hex[..2]).join(&hex[2..4]).join(&hex[4..])
    })
}

/// Marks an entry as used now (its bucket's mtime), for least-recently-used pruning. Best
/// effort: a read-only cache still serves hits.
fn touch_bucket(bucket: &Path) {
    if let Ok(file) = fs::File::options().append(true).open(bucket) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// The index line of one key in cacache's JSON, with memoshelve's record typed.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(crate) struct HitLine {
    pub(crate) key: String,
    pub(crate) integrity: Option<String>,
    #[serde(default)]
    pub(crate) metadata: Option<EntryRecord>,
}

/// A bucket line (`<hash>\t<JSON>`, the hash not checked) as a [`HitLine`]: its JSON read by
/// [`crate::index_line::parse`] when the line has the exact shape memoshelve writes (serde_json's read was ~45% of a hit's instructions at opt-level
/// 0, the strict reader's is under a third of that), else by serde_json.
fn hit_line(line: &str) -> Option<HitLine> {
    let (_, json) = line.split_once('\t')?;
    if json.contains('\t') {
        return None;
    }
    match crate::index_line::parse(json) {
        Some(line) => Some(line),
        None => serde_json::from_str(json).ok(),
    }
}

/// The fast read of a hit: when the bucket's last line is a well-formed memoshelve line for
/// `index_key` (or its deletion), that line, without cacache's sha256 of every line (a bucket
/// line is ~1 KiB with an inline value, and sha256 runs at ~32 MB/s at opt-level 0: most of a
/// hit's time). Nothing served depends on that hash: the value is checked against the record's
/// blake3, and the record's key and name are checked by the caller. `None`: read the bucket
/// the slow way (cacache's rules: a torn last line, another key's line, anything unusual).
/// `touch` also refreshes the bucket's mtime (the entry's last use) through the open file.
fn read_last_line(bucket: &Path, index_key: &str, touch: bool) -> Option<Option<EntryRecord>> {
    let open = |touch: bool| fs::File::options().read(true).append(touch).open(bucket);
    let (mut file, touch) = match open(touch) {
        Ok(file) => (file, touch),
        Err(err) if err.kind() == ErrorKind::NotFound => return Some(None),
        // A read-only cache (a restored CI cache, a shared one): read it, leave last use be.
        Err(_) if touch => (open(false).ok()?, false),
        Err(_) => return None,
    };
    let bytes = read_small(&mut file, None).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let line = hit_line(text.trim_end_matches('\n').rsplit('\n').next()?)?;
    if line.key != index_key {
        return None;
    }
    match (line.integrity.as_deref(), line.metadata) {
        (None, _) => Some(None),
        (Some(NO_CACACHE_CONTENT), Some(record)) => {
            if touch {
                let _ = file.set_modified(SystemTime::now());
            }
            Some(Some(record))
        }
        _ => None,
    }
}

/// The rest of a small file, read until `read` says it is done: unlike `read_to_end`, no fstat
/// and lseek first to size the buffer (two of a disk hit's dozen system calls). With `size`
/// (the caller's fstat), it stops once it has that many bytes, sparing the read that returns
/// nothing (100k of a 100k-entry listing's 760k system calls); a file that grew since is read
/// on to its end.
pub(crate) fn read_small(file: &mut fs::File, size: Option<u64>) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = vec![0; size.map_or(2048, |size| size as usize + 1).max(2048)];
    let mut len = 0;
    loop {
        if len == bytes.len() {
            // Not `resize`: at opt-level 0 its zeroing is a byte loop (~70k instructions for
            // 2 KiB); a zeroed allocation and a copy are libc's memset and memcpy.
            let mut bigger = vec![0; 2 * len];
            bigger[..len].copy_from_slice(&bytes);
            bytes = bigger;
        }
        match file.read(&mut bytes[len..]) {
            Ok(0) => break,
            Ok(read) => len += read,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
        if size == Some(len as u64) {
            break;
        }
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// What is wrong when `path` cannot be created because it, or a directory above it, is a
/// symbolic link to nothing (`mkdir` then says only "File exists").
fn dangling_link(path: &Path) -> Option<std::io::Error> {
    let link = path.ancestors().find(|dir| {
        fs::symlink_metadata(dir).is_ok_and(|meta| meta.is_symlink()) && fs::metadata(dir).is_err()
    })?;
    let target = fs::read_link(link).ok()?;
    Some(std::io::Error::new(
        ErrorKind::NotFound,
        format!(
            "{} is a symbolic link to {}, which does not exist (create {1}, or remove the link)",
            link.display(),
            target.display()
        ),
    ))
}

/// A fresh, short name for a temporary file beside a restored one (`.ms.<pid>.<n>.<ns>.tmp`).
pub(crate) fn short_temp_name() -> String {
    unique_name(".ms")
}

fn unique_name(stem: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.subsec_nanos());
    format!("{stem}.{}.{}.{nanos}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}
