//! The blob area: values too large to inline and every output file, each stored once under
//! its blake3 hash (`blobs-b3/aa/bb/<hex>`, read-only), written beside in `tmp-b3/` and renamed
//! into place when complete, and checked by size and blake3 on every read.

use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::files::{
    process_ended, rename_in_dir, set_mode, short_temp_name, unique_name, writer_of,
};
use super::{Disk, EntryRecord, io_error};
use crate::error::{Error, Result};
use crate::hashing;
use crate::key::{Key, hex_lower};

pub(super) const BLOB_DIR: &str = "blobs-b3";
pub(super) const TMP_DIR: &str = "tmp-b3";
/// How long a temporary file of an ended writer must have been left alone before a store sweeps
/// it: a live writer renames its file soon after its last write. (A record that `remove_if`
/// moved aside keeps its old mtime, but its writer is seen alive unless it is in another PID
/// namespace: then the worst is that the entry is removed, a miss.)
const SWEEP_AGE: Duration = Duration::from_secs(60);

impl Disk {
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

    fn corrupt_blob(&self, blake3_hex: &str, reason: String) -> Error {
        Error::Corrupt { root: self.root.clone(), key: blake3_hex.to_owned(), reason }
    }

    /// A fresh path in the root's temporary area (created if needed). A process's first one in
    /// a root (on its first store) also sweeps what killed writers left: see
    /// [`sweep_ended_writers`].
    pub(crate) fn temporary_file(&self, stem: &str) -> Result<PathBuf> {
        static SWEPT: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
        let tmp_dir = self.root.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir).map_err(|err| io_error("create", &tmp_dir, err))?;
        if SWEPT.lock().unwrap_or_else(PoisonError::into_inner).insert(tmp_dir.clone()) {
            sweep_ended_writers(&tmp_dir);
        }
        Ok(tmp_dir.join(unique_name(stem)))
    }

    /// The encoded value of a record, the first `skip` bytes apart from the rest (see
    /// [`hashing::read_hashed_parts`]), checked against the record's size and blake3 hash.
    pub(crate) fn load_parts(
        &self,
        record: &EntryRecord,
        key: &Key,
        skip: usize,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let name = &record.name;
        let (head, rest) = match &record.inline {
            Some(inline) => {
                // Checked although the record's checksum covers it: a record that is whole but
                // wrong (a writer's bug, an edit that recomputed the checksum) is still caught.
                if hex_lower(blake3::hash(inline).as_bytes()) != record.blake3 {
                    return Err(self.corrupt(name, key, "inline value: blake3 mismatch"));
                }
                let mut head = inline.clone();
                let rest = head.split_off(skip.min(head.len()));
                (head, rest)
            }
            None => {
                let path = self
                    .blob_path(&record.blake3)
                    .ok_or_else(|| self.corrupt(name, key, "malformed blob hash"))?;
                let (head, rest, hash) = match hashing::read_hashed_parts(&path, skip) {
                    Ok(parts) => parts,
                    Err(err) if err.kind() == ErrorKind::NotFound => {
                        return Err(self.corrupt(
                            name,
                            key,
                            format!("blob {} is missing", path.display()),
                        ));
                    }
                    Err(err) => return Err(io_error("read blob", &path, err)),
                };
                if hash.to_hex().as_str() != record.blake3 {
                    // Content-addressed: bytes that are not their name's are no entry's.
                    let _ = fs::remove_file(&path);
                    return Err(self.corrupt(name, key, "blake3 mismatch"));
                }
                (head, rest)
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
        Ok((head, rest))
    }

    /// Writes `bytes` as the blob `blake3_hex` (kept if already there).
    pub(super) fn write_blob(&self, blake3_hex: &str, bytes: &[u8]) -> Result<()> {
        let path = self.blob_path(blake3_hex).expect("a blake3 hex is a valid blob name");
        if fs::metadata(&path).is_ok_and(|meta| meta.len() == bytes.len() as u64) {
            // Content-addressed: the same bytes are already there. A damaged copy of the same
            // length is caught by the blake3 check on read, which removes it.
            return Ok(());
        }
        let tmp = self.temporary_file(blake3_hex)?;
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
            return Err(io_error("write blob", &path, err));
        }
        self.move_into_place(&tmp, &path)
    }

    fn move_into_place(&self, tmp: &Path, blob: &Path) -> Result<()> {
        match rename_in_dir(tmp, blob) {
            Ok(()) => Ok(()),
            // Another writer put the same content there first (where a rename cannot replace
            // a read-only file, as on Windows): content-addressed, so that is the same blob.
            Err(_) if blob.is_file() => {
                let _ = fs::remove_file(tmp);
                Ok(())
            }
            Err(err) => {
                let _ = fs::remove_file(tmp);
                Err(io_error("move blob into", blob, err))
            }
        }
    }

    /// Stores a file as a blob, streamed and hashed in one pass; returns its size and blake3 hex.
    pub(crate) fn store_file(&self, path: &Path) -> Result<(u64, String)> {
        let tmp = self.temporary_file("file")?;
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
        self.move_into_place(&tmp, &blob)?;
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
        let blob = self.blob_path(blake3_hex).ok_or_else(|| {
            self.corrupt_blob(blake3_hex, "malformed blob hash in a manifest".to_owned())
        })?;
        let parent = target.parent().expect("restored files are inside the output dir");
        fs::create_dir_all(parent).map_err(|err| io_error("create", parent, err))?;
        // A short name of its own: the file's name may already be as long as names can be.
        let tmp = parent.join(short_temp_name());
        let copied = if super::files::reflink(&blob, &tmp) {
            // Shared extents: what is checked is what the restored file holds.
            hashing::hash_file(&tmp).and_then(|hash| Ok((fs::metadata(&tmp)?.len(), hash)))
        } else {
            hashing::copy_hashed(&blob, &tmp)
        };
        let mut bad_blob = false;
        let checked = match copied {
            Ok((written, hash)) if written == size && hash.to_hex().as_str() == blake3_hex => {
                Ok(())
            }
            Ok((written, hash)) => {
                // Only bytes that are not their name's condemn the blob; a size that does not
                // match a right blob is the manifest's fault.
                bad_blob = hash.to_hex().as_str() != blake3_hex;
                Err(self.corrupt_blob(
                    blake3_hex,
                    format!("blob {} ({written} bytes) does not match its hash", blob.display()),
                ))
            }
            Err(err) if err.kind() == ErrorKind::NotFound && !blob.exists() => {
                Err(self.corrupt_blob(blake3_hex, format!("blob {} is missing", blob.display())))
            }
            Err(err) => Err(io_error("restore", target, err)),
        };
        if let Err(err) = checked {
            let _ = fs::remove_file(&tmp);
            if bad_blob {
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
}

/// Deletes the temporary files in `tmp_dir` that a killed writer left: those whose writer (the
/// process named in them) has ended and that have not been written to for [`SWEEP_AGE`]. Either
/// alone is not enough: a pid of another PID namespace looks ended here, and a young file may be
/// a live writer's. Best effort: what stays is `compact`'s. Other files (`events-<pid>.log`, the
/// event log's scratch file; a restore's staging directory) are not this tier's to sweep.
fn sweep_ended_writers(tmp_dir: &Path) {
    let Ok(listing) = fs::read_dir(tmp_dir) else { return };
    let Some(cutoff) = SystemTime::now().checked_sub(SWEEP_AGE) else { return };
    for item in listing.flatten() {
        let Some(writer) = item.file_name().to_str().and_then(writer_of) else { continue };
        let idle = item.metadata().is_ok_and(|meta| {
            meta.is_file() && meta.modified().is_ok_and(|modified| modified < cutoff)
        });
        if idle && process_ended(writer) {
            let _ = fs::remove_file(item.path());
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
        let path = self
            .blob_path(blake3_hex)
            .ok_or_else(|| self.corrupt_blob(blake3_hex, "malformed blob hash".to_owned()))?;
        if path.is_file() {
            return Ok(());
        }
        let mut perms =
            fs::metadata(file).map_err(|err| io_error("read", file, err))?.permissions();
        perms.set_readonly(true);
        fs::set_permissions(file, perms).map_err(|err| io_error("protect", file, err))?;
        rename_in_dir(file, &path).map_err(|err| io_error("move blob into", &path, err))
    }
}

/// Checks that a blob exists with this size and blake3 hash; says what is wrong otherwise.
#[cfg(feature = "maintenance")]
impl Disk {
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
