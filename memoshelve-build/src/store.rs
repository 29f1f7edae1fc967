//! Cache maintenance for tools such as `cargo memoshelve`: every entry of a root, its size and
//! last use, checks and removal. It reuses the disk tier's code, so the on-disk format has one
//! implementation.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::key::Key;
pub use crate::memo::outputs::directive::Roots;
pub use crate::tier::disk::IndexDamage;
use crate::tier::disk::files::files_under;
use crate::tier::disk::manifest::{OutputFile, OutputManifest, is_file_step};
use crate::tier::disk::{Disk, EntryRecord, check_file};

/// The index's areas under a root: format 3's, and cacache's of formats 1 and 2.
const INDEX_AREAS: [&str; 2] = ["index", "index-v5"];

/// The output of `rustc -vV` for the compiler at `rustc`: run once per toolchain, then read from
/// `root` (a cache root) while the binary and its toolchain's driver library keep their path,
/// size and modification time; a compiler that is not a toolchain's own binary (a proxy) is run
/// every time. `None` when it cannot be run or fails.
pub fn rustc_version(rustc: &Path, root: Option<&Path>) -> Option<String> {
    crate::key::context::rustc_version_of(rustc, root)
}

/// A cache root opened for maintenance. Opening does not create anything.
#[derive(Debug)]
pub struct Store {
    disk: Disk,
}

/// One entry, as maintenance tools see it.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Entry {
    /// The index record.
    pub record: EntryRecord,
    /// When it was last used (a disk hit or a write), in milliseconds since the Unix epoch.
    pub last_used_ms: u64,
    /// For a file step (`Memo::outputs`), its files.
    pub files: Vec<OutputFile>,
    /// Bytes of its value plus, for a file step, its files.
    pub bytes: u64,
}

impl Entry {
    /// The entry's key.
    pub fn key(&self) -> Key {
        Key::from_hex(&self.record.key).expect("listed records have valid keys")
    }

    /// Whether the entry is a file step's manifest.
    pub fn is_file_step(&self) -> bool {
        is_file_step(&self.record.type_name)
    }
}

/// How many disk hits, remote hits and misses the event log counts, per entry key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Usage {
    /// Disk hits.
    pub hits: u64,
    /// Remote hits (fetched from the remote tier into this root).
    pub remote_hits: u64,
    /// Misses (computations).
    pub misses: u64,
    /// The last event's time, in milliseconds since the Unix epoch.
    pub last_ms: u64,
}

/// What a garbage collection deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Freed {
    /// Blobs and temporary files deleted.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Compaction {
    /// Bytes of the index before.
    pub index_before: u64,
    /// Bytes of the index after.
    pub index_after: u64,
    /// Blobs and temporary files deleted.
    pub freed_files: u64,
    /// Their bytes.
    pub freed_bytes: u64,
    /// Lines of the event log before folding.
    pub events_before: u64,
    /// Lines after: one per entry and kind of event, with a count.
    pub events_after: u64,
}

/// What the root occupies on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Footprint {
    /// Every file under the root.
    pub total_bytes: u64,
    /// The index: the record files (and an older format's index not yet dropped).
    pub index_bytes: u64,
    /// The blob area (each distinct content once).
    pub blob_bytes: u64,
    /// How many blobs.
    pub blobs: u64,
}

impl Store {
    /// Opens the cache at `root` for inspection and maintenance.
    pub fn open(root: impl AsRef<Path>) -> Store {
        Store { disk: Disk::at(root.as_ref()) }
    }

    /// Opens the cache at `root`, creating it (owner-only) if it does not exist yet.
    ///
    /// # Errors
    /// When the root cannot be created or is not a directory.
    pub fn create(root: impl AsRef<Path>) -> Result<Store> {
        Ok(Store { disk: Disk::open(root.as_ref())? })
    }

    /// The file holding the blob with this blake3 hash, if the cache has it.
    pub fn blob_path(&self, blake3_hex: &str) -> Option<PathBuf> {
        self.disk.existing_blob(blake3_hex)
    }

    /// Adds entries from elsewhere (a backup): `staged` holds their blobs, each file named by
    /// its blake3 hex. Everything is checked first: each entry's value (inline, staged or already
    /// here) against its size and blake3, and for a file step every file's blob. Only when all of
    /// them pass are the blobs moved in and the records written, with their last-use times.
    /// Returns how many entries were added.
    ///
    /// # Errors
    /// Naming the first entry that fails its check, before anything becomes visible.
    pub fn import(&self, staged: &Path, entries: &[(EntryRecord, u64)]) -> Result<usize> {
        let blob = |hex: &str| -> Option<PathBuf> {
            let staged_blob = staged.join(hex);
            if hex.len() == 64
                && hex.bytes().all(|byte| byte.is_ascii_hexdigit())
                && staged_blob.is_file()
            {
                Some(staged_blob)
            } else {
                self.disk.existing_blob(hex)
            }
        };
        let corrupt = |record: &EntryRecord, reason: String| Error::Corrupt {
            root: self.root().to_owned(),
            key: format!("{}/{}", record.name, record.key),
            reason,
        };
        let mut needed: Vec<(PathBuf, String)> = Vec::new();
        for (record, _) in entries {
            if record.format != crate::FORMAT_VERSION || Key::from_hex(&record.key).is_none() {
                return Err(corrupt(
                    record,
                    format!("format {} or key not readable here", record.format),
                ));
            }
            let value: Vec<u8> = match &record.inline {
                Some(inline) => inline.clone(),
                None => {
                    let path = blob(&record.blake3)
                        .ok_or_else(|| corrupt(record, "its value's blob is missing".to_owned()))?;
                    needed.push((path.clone(), record.blake3.clone()));
                    std::fs::read(&path)
                        .map_err(|err| corrupt(record, format!("{}: {err}", path.display())))?
                }
            };
            if value.len() as u64 != record.size
                || blake3::hash(&value).to_hex().as_str() != record.blake3
            {
                return Err(corrupt(
                    record,
                    "its value does not match its size and blake3".to_owned(),
                ));
            }
            if is_file_step(&record.type_name) {
                let manifest: OutputManifest = postcard::from_bytes(&value)
                    .map_err(|err| corrupt(record, format!("unreadable manifest: {err}")))?;
                for file in &manifest.files {
                    if crate::tier::disk::manifest::safe_relative(&file.path).is_none() {
                        return Err(corrupt(
                            record,
                            format!("unsafe path {:?} in its manifest", file.display_path()),
                        ));
                    }
                    let path = blob(&file.blake3).ok_or_else(|| {
                        corrupt(record, format!("{}: blob missing", file.display_path()))
                    })?;
                    check_file(&path, &file.blake3, file.size).map_err(|reason| {
                        corrupt(record, format!("{}: {reason}", file.display_path()))
                    })?;
                    needed.push((path, file.blake3.clone()));
                }
            }
        }
        let _guard = self.disk.write_guard();
        for (path, hex) in needed {
            if path.starts_with(staged) {
                self.disk.adopt_blob(&path, &hex)?;
            }
        }
        for (record, last_used_ms) in entries {
            self.disk.insert_record(record)?;
            let key = Key::from_hex(&record.key).expect("checked above");
            let time = UNIX_EPOCH + Duration::from_millis(*last_used_ms);
            let _ = set_modified(&self.disk.record_path(&key), time);
        }
        Ok(entries.len())
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.disk.root()
    }

    /// Whether anything was ever stored here.
    pub fn exists(&self) -> bool {
        self.disk.has_index()
    }

    /// Every readable entry, optionally of one name, sorted by name then key.
    ///
    /// # Errors
    /// When the index cannot be listed.
    pub fn entries(&self, name: Option<&str>) -> Result<Vec<Entry>> {
        Ok(self.listed(name)?.0)
    }

    /// [`Store::entries`], and the newest format newer than this one that a record here has.
    fn listed(&self, name: Option<&str>) -> Result<(Vec<Entry>, Option<u32>)> {
        let (listed, newer) = self.disk.scan(name)?;
        // The per-entry work (a file step's manifest is read from disk) runs in parallel; the
        // records then move into their entries.
        let files = crate::parallel::map(&listed, |(record, _)| {
            let key = Key::from_hex(&record.key)?;
            Some(if is_file_step(&record.type_name) {
                self.manifest(record, &key).map(|manifest| manifest.files).unwrap_or_default()
            } else {
                Vec::new()
            })
        });
        let mut entries: Vec<Entry> = listed
            .into_iter()
            .zip(files)
            .filter_map(|((record, used), files)| {
                let files = files?;
                let last_used_ms = used
                    .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
                    .map_or(record.created_ms, |since| since.as_millis() as u64);
                let bytes = record.size + files.iter().map(|file| file.size).sum::<u64>();
                Some(Entry { record, last_used_ms, files, bytes })
            })
            .collect();
        entries
            .sort_by(|a, b| (&a.record.name, &a.record.key).cmp(&(&b.record.name, &b.record.key)));
        Ok((entries, newer))
    }

    /// A file step's whole manifest: its files and links, the inputs it declared while it ran,
    /// the directives it replays, and its own value (`result`, postcard-encoded).
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the entry is no file step or its manifest does not decode, or an
    /// I/O error reading it.
    pub fn file_step(&self, entry: &Entry) -> Result<OutputManifest> {
        if !entry.is_file_step() {
            return Err(Error::Corrupt {
                root: self.root().to_owned(),
                key: entry.record.key.clone(),
                reason: "not a file step's entry".to_owned(),
            });
        }
        self.manifest(&entry.record, &entry.key())
    }

    fn manifest(&self, record: &EntryRecord, key: &Key) -> Result<OutputManifest> {
        let bytes = self.disk.load(record, key)?;
        postcard::from_bytes(&bytes).map_err(|err| Error::Corrupt {
            root: self.root().to_owned(),
            key: record.key.clone(),
            reason: format!("unreadable manifest: {err}"),
        })
    }

    /// Checks an entry completely: its value's size and blake3 and, for a file step, every
    /// file's blob. Returns what is wrong, if anything.
    ///
    /// # Errors
    /// [`Error::Corrupt`] saying what is wrong (nothing is removed), or an I/O error reading it.
    pub fn verify(&self, entry: &Entry) -> Result<()> {
        let key = entry.key();
        let corrupt = |reason: String| Error::Corrupt {
            root: self.root().to_owned(),
            key: entry.record.key.clone(),
            reason,
        };
        let bytes = self.disk.load(&entry.record, &key)?;
        if entry.is_file_step() {
            let manifest: OutputManifest = postcard::from_bytes(&bytes)
                .map_err(|err| corrupt(format!("unreadable manifest: {err}")))?;
            for file in &manifest.files {
                self.disk
                    .check_blob(&file.blake3, file.size)
                    .map_err(|reason| corrupt(format!("{}: {reason}", file.display_path())))?;
            }
        }
        Ok(())
    }

    /// Checks the index itself, file by file: records that are torn or garbage, that do not
    /// decode, or that are filed under another entry's name. Entries listed by
    /// [`Store::entries`] never include these.
    ///
    /// # Errors
    /// When the index cannot be listed.
    pub fn check_index(&self) -> Result<Vec<IndexDamage>> {
        self.disk.check_index()
    }

    /// Repairs what [`Store::check_index`] found: deletes the damaged record files (their
    /// entries are recomputed on next use). Returns how many were removed.
    ///
    /// # Errors
    /// When a file cannot be deleted.
    pub fn repair_index(&self, damage: &[IndexDamage]) -> Result<usize> {
        let _exclusive = self.disk.exclusive_guard()?;
        for damage in damage {
            self.disk.remove_damaged(damage)?;
        }
        Ok(damage.len())
    }

    /// Sets an entry's last-use time (what `prune` orders by). For tools: a restore keeps the
    /// times of a backup, a test makes an entry old.
    ///
    /// # Errors
    /// When the entry's index file cannot be changed.
    pub fn set_last_used(&self, entry: &Entry, time: SystemTime) -> Result<()> {
        let path = self.disk.record_path(&entry.key());
        set_modified(&path, time).map_err(|source| Error::Io {
            action: "set the last use of",
            path,
            source,
        })
    }

    /// Removes an entry from the index (its blobs stay until they are no longer referenced and a
    /// compaction deletes them).
    ///
    /// # Errors
    /// When the index cannot be written.
    pub fn remove(&self, entry: &Entry) -> Result<()> {
        self.disk.remove(&entry.record.name, &entry.key()).map(|_| ())
    }

    /// Deletes blobs no live entry refers to, and stray temporary files, when they are older than
    /// `grace`: a build that is writing an entry right now writes its blob before the record
    /// that refers to it, so a young unreferenced blob may be about to be used. Returns how many
    /// files and bytes were freed.
    ///
    /// # Errors
    /// When the index cannot be listed (then nothing is deleted).
    pub fn collect_garbage(&self, grace: Duration) -> Result<Freed> {
        let (entries, newer) = self.listed(None)?;
        if let Some(format) = newer {
            return Err(Error::NewerFormat { root: self.root().to_owned(), format });
        }
        let mut referenced = std::collections::HashSet::new();
        for entry in entries {
            if entry.record.inline.is_none() {
                referenced.insert(entry.record.blake3.clone());
            }
            referenced.extend(entry.files.into_iter().map(|file| file.blake3));
        }
        let cutoff = SystemTime::now() - grace;
        let mut freed = Freed::default();
        for dir in [self.root().join("blobs-b3"), self.root().join("tmp-b3")] {
            for (path, meta) in files_under(&dir) {
                let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                let old_enough = meta.modified().is_ok_and(|modified| modified < cutoff);
                if old_enough && !referenced.contains(&name) && std::fs::remove_file(&path).is_ok()
                {
                    freed.files += 1;
                    freed.bytes += meta.len();
                }
            }
        }
        Ok(freed)
    }

    /// Compacts the cache while no write is in progress (it waits for running writes and holds
    /// writers off meanwhile): damaged records go, blobs and temporary files nothing refers to
    /// are deleted, and the event log is folded. Every live entry stays readable, with its
    /// last-use time. (Records are replaced whole, so the index keeps no history to drop.)
    ///
    /// # Errors
    /// When the lock cannot be taken or a file cannot be deleted.
    pub fn compact(&self) -> Result<Compaction> {
        if !self.exists() {
            return Ok(Compaction::default());
        }
        let _exclusive = self.disk.exclusive_guard()?;
        let index_before = self.index_bytes();
        for damage in self.check_index()? {
            self.disk.remove_damaged(&damage)?;
        }
        let index_after = self.index_bytes();
        let Freed { files: freed_files, bytes: freed_bytes } =
            self.collect_garbage(Duration::ZERO)?;
        let live: std::collections::HashSet<String> =
            self.entries(None)?.into_iter().map(|entry| entry.record.key).collect();
        let (events_before, events_after) = crate::tier::disk::events::fold(self.root(), &live)?;
        Ok(Compaction {
            index_before,
            index_after,
            freed_files,
            freed_bytes,
            events_before,
            events_after,
        })
    }

    /// Brings the cache to the current format ([`crate::FORMAT_VERSION`]): entries written by
    /// older versions are dropped (they are recomputed on next use; nothing is ever misread),
    /// among them the whole of cacache's `index-v5/`, where formats 1 and 2 kept their records.
    /// Their blobs stay until [`Store::compact`]. Returns what was dropped, one line each.
    ///
    /// # Errors
    /// When the index cannot be listed or written.
    pub fn upgrade(&self) -> Result<Vec<String>> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let _exclusive = self.disk.exclusive_guard()?;
        self.disk.drop_older_formats()
    }

    /// Disk hits, remote hits and misses per key hex, from the event log.
    pub fn usage(&self) -> HashMap<String, Usage> {
        let text = crate::tier::disk::events::read_all(self.root());
        let mut usage: HashMap<String, Usage> = HashMap::new();
        for event in crate::tier::disk::events::parse(&text) {
            let counts = usage.entry(event.key.to_owned()).or_default();
            match event.tier {
                "disk" => counts.hits += event.count,
                "remote" => counts.remote_hits += event.count,
                "miss" => counts.misses += event.count,
                _ => continue,
            }
            counts.last_ms = counts.last_ms.max(event.time);
        }
        usage
    }

    /// The bytes of the index (and of an older format's index not yet dropped): what
    /// [`Footprint::index_bytes`] counts, without walking the blobs.
    fn index_bytes(&self) -> u64 {
        INDEX_AREAS
            .iter()
            .flat_map(|area| files_under(&self.root().join(area)))
            .map(|(_, meta)| meta.len())
            .sum()
    }

    /// What the root occupies on disk.
    pub fn footprint(&self) -> Footprint {
        let mut footprint = Footprint::default();
        let mut by_area: BTreeMap<PathBuf, u64> = BTreeMap::new();
        for (path, meta) in files_under(self.root()) {
            footprint.total_bytes += meta.len();
            let area = path
                .strip_prefix(self.root())
                .ok()
                .and_then(|rel| rel.iter().next())
                .map(PathBuf::from);
            if let Some(area) = area {
                if area == Path::new("blobs-b3") {
                    footprint.blobs += 1;
                }
                *by_area.entry(area).or_default() += meta.len();
            }
        }
        footprint.index_bytes =
            ["index", "index-v5"].iter().filter_map(|area| by_area.get(Path::new(area))).sum();
        footprint.blob_bytes = by_area.get(Path::new("blobs-b3")).copied().unwrap_or(0);
        footprint
    }
}

/// Sets a file's modification time (an entry's last use), through a handle opened for writing
/// as the platforms require.
fn set_modified(path: &Path, time: SystemTime) -> std::io::Result<()> {
    std::fs::File::options().append(true).open(path)?.set_modified(time)
}

/// The remote's maintenance: what `cargo memoshelve remote push` and `pull` do, entry by entry.
impl crate::remote::Remote {
    /// Uploads a local entry: its blobs the remote does not have, then the entry itself (unless
    /// the remote has it already).
    ///
    /// # Errors
    /// The remote failed, or the local entry is damaged (`cargo memoshelve verify`).
    pub fn push(&self, store: &Store, entry: &Entry) -> Result<crate::remote::Pushed> {
        self.push_entry(&store.disk, &entry.record)
    }

    /// Fetches one remote entry into the local root (checked as a build would check it), if it
    /// is of cache `name` (any when `None`) and not there yet.
    ///
    /// # Errors
    /// The remote failed, its entry or a blob was rejected, or the local root cannot be written.
    pub fn pull(
        &self,
        store: &Store,
        key: &Key,
        name: Option<&str>,
    ) -> Result<crate::remote::Pulled> {
        self.pull_entry(&store.disk, key, name)
    }
}
