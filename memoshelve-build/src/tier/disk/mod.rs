//! The disk tier: memoshelve's own content-addressed store, one per cache root.
//!
//! ```text
//! index/aa/<hex key>   one record file per entry (see `record`): replaced whole, self-checking
//! blobs-b3/aa/bb/<hex> values too large to inline and every output file, by blake3, read-only
//! tmp-b3/              records and blobs being written, renamed into place when complete (a
//!                      killed writer's go with a later process's first store, or `compact`)
//! locks/               the per-key compute locks and the root-wide writer/compactor lock
//! events/, events.log  what hit and what missed (see `events`)
//! ```
//!
//! An entry's last use is its record file's modification time, refreshed through the file a
//! hit has open anyway. Every byte is hashed once with blake3 when it is written and once when
//! it is read: the record by its checksum, a blob against the hash it is named by.
//! `index-v5/` (cacache's index, formats 1 and 2) is never read: `upgrade` deletes it.

mod blobs;
pub(crate) mod events;
pub(crate) mod files;
mod locks;
pub(crate) mod manifest;
mod record;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(feature = "maintenance")]
pub(crate) use self::blobs::check_file;
use self::files::{dangling_link, read_small, rename_in_dir};
use self::record::{Decoded, decode, encode};
pub use self::record::{EntryRecord, FORMAT_VERSION};
use crate::error::{Error, Result};
use crate::key::{Key, hex_lower};

/// Values up to this many encoded bytes are stored inside the index record: one file per hit.
pub(crate) const INLINE_MAX: usize = 1024;
/// No record is larger (its inputs list every declared file): a larger file at a record's path
/// is damage (a listing does not even read it; a lookup finds out after its one read).
const RECORD_MAX: usize = 64 << 20;
/// The index: one record file per entry.
const INDEX_DIR: &str = "index";
/// cacache's index, where memoshelve kept its records up to format 2.
#[cfg(feature = "maintenance")]
const OLD_INDEX_DIR: &str = "index-v5";

/// A damaged file of the index (see `cargo memoshelve verify`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg(feature = "maintenance")]
#[non_exhaustive]
pub struct IndexDamage {
    /// The record file.
    pub file: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

/// A record as listed, with its last use.
pub(crate) type Listed = (EntryRecord, Option<SystemTime>);

/// Whether a record is filed where it belongs: under its own key, a valid one.
fn filed_right(path: &Path, record: &EntryRecord) -> bool {
    path.file_name().is_some_and(|file| *file == *record.key)
        && Key::from_hex(&record.key).is_some()
}

/// One cache root on disk.
#[derive(Clone, Debug)]
pub(crate) struct Disk {
    root: PathBuf,
}

/// How people see an entry in messages: `<name>/<hex key>`.
pub(crate) fn index_key(name: &str, key: &Key) -> String {
    format!("{name}/{key}")
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

    pub(crate) fn corrupt(&self, name: &str, key: &Key, reason: impl Into<String>) -> Error {
        Error::Corrupt { root: self.root.clone(), key: index_key(name, key), reason: reason.into() }
    }

    /// The record file of an entry: `index/<first two hex digits>/<hex key>`.
    pub(crate) fn record_path(&self, key: &Key) -> PathBuf {
        let hex = key.to_hex();
        self.root.join(INDEX_DIR).join(&hex[..2]).join(hex)
    }

    /// The record of `name`/`key`, if any. A damaged record is an error (the caller recomputes
    /// and replaces it); a record of another format version is a miss.
    pub(crate) fn find(&self, name: &str, key: &Key) -> Result<Option<EntryRecord>> {
        self.find_touching(name, key, false)
    }

    /// [`Disk::find`] for a hit: also refreshes the entry's last use (its record's mtime),
    /// through the same open file.
    pub(crate) fn find_and_touch(&self, name: &str, key: &Key) -> Result<Option<EntryRecord>> {
        self.find_touching(name, key, true)
    }

    fn find_touching(&self, name: &str, key: &Key, touch: bool) -> Result<Option<EntryRecord>> {
        let path = self.record_path(key);
        let open = |touch: bool| fs::File::options().read(true).append(touch).open(&path);
        let (mut file, touch) = match open(touch) {
            Ok(file) => (file, touch),
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
            // A read-only cache (a restored CI cache, a shared one): read it, leave last use be.
            Err(_) if touch => match open(false) {
                Ok(file) => (file, false),
                Err(err) => return Err(io_error("read", &path, err)),
            },
            Err(err) => return Err(io_error("read", &path, err)),
        };
        let bytes = read_small(&mut file, None).map_err(|err| io_error("read", &path, err))?;
        if bytes.len() > RECORD_MAX {
            return Err(self.corrupt(name, key, format!("a record of {} bytes", bytes.len())));
        }
        let record = match decode(&bytes) {
            Decoded::Record(record) => record,
            // Never misread: the fresh entry replaces it, and `upgrade` drops those that are
            // never asked for again.
            Decoded::OtherFormat(format) => {
                log::debug!("{}: a record of format {format}: a miss", path.display());
                return Ok(None);
            }
            Decoded::Damaged(problem) => return Err(self.corrupt(name, key, problem)),
        };
        if record.key != key.to_hex() || record.name != name {
            return Err(self.corrupt(name, key, "its record names another entry"));
        }
        if touch {
            let _ = file.set_modified(SystemTime::now());
        }
        Ok(Some(record))
    }

    /// Stores a value: the blob first (if not inline), then the record, so a crash in between
    /// leaves at most an unreferenced blob, never a record without its value.
    pub(crate) fn store(&self, mut record: EntryRecord, bytes: &[u8]) -> Result<()> {
        record.size = bytes.len() as u64;
        record.blake3 = hex_lower(blake3::hash(bytes).as_bytes());
        if bytes.len() <= INLINE_MAX {
            record.inline = Some(bytes.to_vec());
        } else {
            record.inline = None;
            self.write_blob(&record.blake3, bytes)?;
        }
        self.insert_record(&record)
    }

    /// Writes a complete record (its blobs must already be in place), replacing the entry's
    /// record whole: written in `tmp-b3/`, then renamed over it.
    pub(crate) fn insert_record(&self, record: &EntryRecord) -> Result<()> {
        let key = Key::from_hex(&record.key).ok_or_else(|| Error::Corrupt {
            root: self.root.clone(),
            key: format!("{}/{}", record.name, record.key),
            reason: "malformed key".to_owned(),
        })?;
        let path = self.record_path(&key);
        let tmp = self.temporary_file("record")?;
        let written = fs::write(&tmp, encode(record)).and_then(|()| rename_in_dir(&tmp, &path));
        if let Err(err) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("write index record", &path, err));
        }
        Ok(())
    }

    /// Removes an entry's record; its blobs stay until `compact`. Whether there was one.
    pub(crate) fn remove(&self, name: &str, key: &Key) -> Result<bool> {
        let _guard = self.write_guard();
        self.remove_if(&self.record_path(key), |bytes| match decode(bytes) {
            Decoded::Record(record) => record.name == name,
            Decoded::OtherFormat(_) => false,
            Decoded::Damaged(_) => true,
        })
    }

    /// Deletes the file at `path` if its bytes pass `doomed`, and never a file that replaced
    /// them meanwhile: it is moved aside first (readers see no record for that moment: a miss),
    /// checked there, and put back with a hard link, which fails rather than replace a record
    /// another process wrote since. Whether it was deleted.
    fn remove_if(&self, path: &Path, doomed: impl FnOnce(&[u8]) -> bool) -> Result<bool> {
        let aside = self.temporary_file("removed")?;
        match fs::rename(path, &aside) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(io_error("remove", path, err)),
        }
        let bytes = fs::read(&aside).unwrap_or_default();
        let deleted = doomed(&bytes);
        if !deleted {
            // AlreadyExists: a newer record is in place, and it wins.
            let _ = fs::hard_link(&aside, path);
        }
        let _ = fs::remove_file(&aside);
        Ok(deleted)
    }

    /// Every readable record of this format (of one name, or of all).
    pub(crate) fn list(&self, name: Option<&str>) -> Result<Vec<EntryRecord>> {
        Ok(self.list_used(name)?.into_iter().map(|(record, _)| record).collect())
    }

    /// [`Disk::list`], each record with its last use (its file's mtime).
    pub(crate) fn list_used(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<(EntryRecord, Option<SystemTime>)>> {
        Ok(self.scan(name)?.0)
    }

    /// [`Disk::list_used`], and in the same pass the newest format of a record here that is
    /// newer than this one, if any: maintenance that needs to know every entry (garbage
    /// collection) refuses to run beside such records.
    pub(crate) fn scan(&self, name: Option<&str>) -> Result<(Vec<Listed>, Option<u32>)> {
        // A record listed, or (`Err`) the format of a newer one.
        let found = self.map_records(|path, read| match decode(&read.as_ref().ok()?.0) {
            Decoded::Record(record)
                if name.is_none_or(|name| record.name == name) && filed_right(path, &record) =>
            {
                Some(Ok((record, read.ok()?.1)))
            }
            Decoded::OtherFormat(format) if format > FORMAT_VERSION => Some(Err(format)),
            _ => None,
        })?;
        let (mut listed, mut newer) = (Vec::new(), None);
        for found in found {
            match found {
                Ok(entry) => listed.push(entry),
                Err(format) => newer = newer.max(Some(format)),
            }
        }
        Ok((listed, newer))
    }

    /// `read(path, bytes and mtime)` of every file of the index, in parallel: each thread takes
    /// the index's top-level directories in turn, lists them by entry type (no stat per file)
    /// and reads each record with one open and one fstat. None if there is no index yet.
    fn map_records<T: Send>(
        &self,
        read: impl Fn(&Path, std::io::Result<(Vec<u8>, Option<SystemTime>)>) -> Option<T> + Sync,
    ) -> Result<Vec<T>> {
        let index = self.root.join(INDEX_DIR);
        let tops: Vec<PathBuf> = match fs::read_dir(&index) {
            Ok(listing) => listing.flatten().map(|item| item.path()).collect(),
            Err(err) if err.kind() == ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(io_error("list", &index, err)),
        };
        let found = crate::parallel::map(&tops, |top| {
            let mut found = Vec::new();
            for path in files::paths_under(top) {
                let contents = fs::File::open(&path).and_then(|mut file| {
                    let meta = file.metadata()?;
                    if meta.len() > RECORD_MAX as u64 {
                        // Read as damage: too large to be a record.
                        return Ok((Vec::new(), meta.modified().ok()));
                    }
                    Ok((read_small(&mut file, Some(meta.len()))?, meta.modified().ok()))
                });
                if matches!(&contents, Err(err) if err.kind() == ErrorKind::NotFound) {
                    // Removed since it was listed.
                    continue;
                }
                found.extend(read(&path, contents));
            }
            found
        });
        Ok(found.into_iter().flatten().collect())
    }

    /// Records one event (a disk hit, remote hit or miss) in the root's event log
    /// ([`events`]), which `cargo memoshelve stats` reads. Best effort, like every cache
    /// write.
    pub(crate) fn log_event(&self, tier: &str, name: &str, key: &Key) {
        let line = format!("{}\t{tier}\t{name}\t{key}\n", now_ms());
        crate::tier::disk::events::append(self, &line);
    }
}

/// The index as maintenance sees it: damage, other formats, compaction.
#[cfg(feature = "maintenance")]
impl Disk {
    /// Whether anything was ever stored here (by this format or an older one).
    pub(crate) fn has_index(&self) -> bool {
        self.root.join(INDEX_DIR).is_dir() || self.root.join(OLD_INDEX_DIR).is_dir()
    }

    /// Every file of the index that is not a readable record of this format: unreadable, not
    /// a record, torn or garbage, named for another entry. (Records of other formats are not
    /// damage: `upgrade` drops them.)
    pub(crate) fn check_index(&self) -> Result<Vec<IndexDamage>> {
        self.map_records(|path, read| {
            let problem = match read {
                Err(err) => format!("unreadable: {err}"),
                Ok((bytes, _)) => problem_of(path, &bytes)?,
            };
            Some(IndexDamage { file: path.to_owned(), problem })
        })
    }

    /// Deletes a damaged file of the index (its entry is recomputed on next use), unless a
    /// good record has replaced it since it was checked.
    pub(crate) fn remove_damaged(&self, damage: &IndexDamage) -> Result<()> {
        if !damage.file.starts_with(self.root.join(INDEX_DIR)) {
            return Ok(());
        }
        let file = &damage.file;
        self.remove_if(file, |bytes| problem_of(file, bytes).is_some()).map(|_| ())
    }

    /// Drops what this format replaces: the records of older format versions, and the whole of
    /// cacache's `index-v5/` (formats 1 and 2). Records of a newer format are another
    /// memoshelve's, which may share this root: they stay. Returns what was dropped, one line
    /// each: an entry as `name/key` where it can be told, else the file. Call it under
    /// [`Disk::exclusive_guard`].
    pub(crate) fn drop_older_formats(&self) -> Result<Vec<String>> {
        let older = |bytes: &[u8]| matches!(decode(bytes), Decoded::OtherFormat(format) if format < FORMAT_VERSION);
        let mut dropped = self.map_records(|path, read| {
            let format = match decode(&read.ok()?.0) {
                Decoded::OtherFormat(format) if format < FORMAT_VERSION => format,
                _ => return None,
            };
            self.remove_if(path, older)
                .ok()?
                .then(|| format!("{} (format {format})", path.display()))
        })?;
        let old = self.root.join(OLD_INDEX_DIR);
        if old.is_dir() {
            let mut keys = std::collections::BTreeSet::new();
            for path in files::paths_under(&old) {
                let text = fs::read(&path).unwrap_or_default();
                keys.extend(old_index_keys(&text));
            }
            fs::remove_dir_all(&old).map_err(|err| io_error("remove", &old, err))?;
            dropped.extend(keys.into_iter().map(|key| format!("{key} (format 1 or 2)")));
        }
        Ok(dropped)
    }
}

/// What is wrong with the index file at `path`, holding `bytes`, if anything: not a record, torn
/// or garbage, or the record of an entry filed under another name. (A record of another format
/// is not damage: `upgrade` drops it.)
#[cfg(feature = "maintenance")]
fn problem_of(path: &Path, bytes: &[u8]) -> Option<String> {
    match decode(bytes) {
        Decoded::Record(record) if filed_right(path, &record) => None,
        Decoded::Record(record) => {
            Some(format!("the record of {}/{} under another name", record.name, record.key))
        }
        Decoded::OtherFormat(_) => None,
        Decoded::Damaged(problem) => Some(problem),
    }
}

/// The memoshelve keys named in a bucket of cacache's index (`..\t{"key":"memoshelve/v1/<name>/
/// <hex>",...`): enough to say what `upgrade` dropped, without reading JSON.
#[cfg(feature = "maintenance")]
fn old_index_keys(bucket: &[u8]) -> Vec<String> {
    const START: &str = "\t{\"key\":\"memoshelve/v1/";
    let text = String::from_utf8_lossy(bucket);
    text.split('\n')
        .filter_map(|line| {
            let rest = &line[line.find(START)? + START.len()..];
            Some(rest[..rest.find('"')?].to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests;
