//! Cross-process locks under `locks/`, with `std::fs::File::lock`: the operating system drops
//! a lock when its holder dies, so a killed process never blocks anyone.

use std::fs;
use std::time::{Duration, Instant};

use super::files::open_in_dir;
use super::{Disk, io_error};
use crate::error::Result;
use crate::key::Key;

const LOCK_DIR: &str = "locks";
/// The root-wide lock: shared by writers, exclusive for compaction.
const ROOT_LOCK: &str = "root.lock";

impl Disk {
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

    /// Takes the root-wide lock in shared mode for a write (blobs, then the record that refers
    /// to them), so that a compaction, which takes it exclusively, never sees half of one.
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::test_key as key;

    #[test]
    fn a_lock_held_elsewhere_times_out_and_a_dropped_one_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path()).unwrap();
        let held = disk.lock_key(&key(1), std::time::Duration::ZERO).unwrap();
        assert!(held.is_some());
        let second = disk.lock_key(&key(1), std::time::Duration::from_millis(20)).unwrap();
        assert!(second.is_none(), "a held lock was taken twice");
        drop(held);
        assert!(disk.lock_key(&key(1), std::time::Duration::ZERO).unwrap().is_some());
    }
}
