//! A stat cache (DESIGN.md section 10), as git's index and ccache's inode cache: a file's
//! blake3 kept beside what `stat` said of it (device, inode, mode, size, modification and
//! change times in nanoseconds), so that checking a run's thousands of traced inputs hashes
//! only the files that changed.
//!
//! A hash is trusted only for a file whose times are at least [`SETTLED`] older than when it
//! was hashed: a file written within the clock's granularity of being hashed ("racily clean")
//! could change again with the same times, so it is hashed every time until it settles. Any
//! other change of content moves the change time (the kernel sets it on every write, and no
//! call sets it back), so a stat that matches means the bytes that were hashed.
//!
//! One file per cache (`<cache root>/tracing/stat/<name>`), read whole and written whole
//! (a temp file renamed): concurrent runners of one name lose each other's new entries at
//! worst, which costs a hash, never a wrong answer. A damaged file is an empty cache.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// How long after its last change a file's hash may be reused (ccache's 2 s: filesystems
/// stamp times from a clock with ticks of 4 ms here, of a second on some).
const SETTLED: Duration = Duration::from_secs(2);

/// Past this many entries the cache starts again (a name's traced set is rarely above 10,000).
const MAX_ENTRIES: usize = 200_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stat {
    dev: u64,
    ino: u64,
    mode: u32,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stat {
    #[cfg(unix)]
    fn of(meta: &fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt as _;
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        Stat {
            dev: meta.dev(),
            ino: meta.ino(),
            mode: meta.mode(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }

    #[cfg(not(unix))]
    fn of(meta: &fs::Metadata) -> Stat {
        let ns = |time: io::Result<SystemTime>| {
            time.ok()
                .and_then(|time| time.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |since| since.as_nanos() as i128)
        };
        Stat {
            dev: 0,
            ino: 0,
            mode: u32::from(meta.permissions().readonly()),
            size: meta.len(),
            mtime_ns: ns(meta.modified()),
            ctime_ns: ns(meta.created()),
        }
    }

    /// Whether both times are at least [`SETTLED`] before `now`.
    fn settled_at(&self, now: SystemTime) -> bool {
        let now = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |now| now.as_nanos());
        let newest = self.mtime_ns.max(self.ctime_ns);
        i128::try_from(now).is_ok_and(|now| now - newest >= SETTLED.as_nanos() as i128)
    }
}

/// Hashes files, reusing what an earlier hash of an unchanged file found.
#[derive(Debug, Default)]
pub(crate) struct StatCache {
    /// Where it is saved; `None`: in memory only.
    file: Option<PathBuf>,
    entries: HashMap<PathBuf, (Stat, [u8; 32])>,
    changed: bool,
    /// Where hashes are vouched for by file name ([`vouch`]), consulted before hashing.
    vouched_in: Option<PathBuf>,
    /// Hashes served from the cache, and files read.
    pub(crate) reused: usize,
    pub(crate) hashed: usize,
}

impl StatCache {
    /// The cache saved at `file` (empty when there is none or it cannot be read).
    pub(crate) fn open(file: PathBuf) -> StatCache {
        let entries = fs::read(&file)
            .ok()
            .and_then(|bytes| postcard::from_bytes::<Vec<(PathBuf, Stat, [u8; 32])>>(&bytes).ok())
            .map(|entries| {
                entries.into_iter().map(|(path, stat, hash)| (path, (stat, hash))).collect()
            })
            .unwrap_or_default();
        StatCache { file: Some(file), entries, ..StatCache::default() }
    }

    /// Takes the hashes [`vouch`]ed for in `dir` (by file name) too.
    pub(crate) fn with_vouched_in(mut self, dir: PathBuf) -> StatCache {
        self.vouched_in = Some(dir);
        self
    }

    /// The blake3 of the regular file at `path` (links followed), whose metadata is `meta`.
    pub(crate) fn hash(&mut self, path: &Path, meta: &fs::Metadata) -> io::Result<[u8; 32]> {
        let stat = Stat::of(meta);
        if let Some((known, hash)) = self.entries.get(path)
            && *known == stat
        {
            self.reused += 1;
            return Ok(*hash);
        }
        if let Some(dir) = &self.vouched_in
            && let Some(name) = path.file_name()
            && let Some(hash) = vouched(&dir.join(name), path)
        {
            self.reused += 1;
            return Ok(hash);
        }
        let now = SystemTime::now();
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(fs::File::open(path)?)?;
        let hash = *hasher.finalize().as_bytes();
        self.hashed += 1;
        // Stat again: a file that changed while it was read is not cached.
        let after = fs::metadata(path).map(|meta| Stat::of(&meta));
        if stat.settled_at(now) && after.is_ok_and(|after| after == stat) {
            self.entries.insert(path.to_owned(), (stat, hash));
            self.changed = true;
        } else if self.entries.remove(path).is_some() {
            self.changed = true;
        }
        Ok(hash)
    }

    /// Writes the cache back if it learned anything (a failure only costs hashes later).
    pub(crate) fn save(&mut self) {
        let Some(file) = &self.file else { return };
        if !self.changed {
            return;
        }
        if self.entries.len() > MAX_ENTRIES {
            self.entries.clear();
        }
        let entries: Vec<(&PathBuf, &Stat, &[u8; 32])> =
            self.entries.iter().map(|(path, (stat, hash))| (path, stat, hash)).collect();
        let Ok(bytes) = postcard::to_allocvec(&entries) else { return };
        let Some(dir) = file.parent() else { return };
        let temp = dir.join(format!(".{}.tmp", std::process::id()));
        let written = fs::create_dir_all(dir)
            .and_then(|()| fs::write(&temp, &bytes))
            .and_then(|()| fs::rename(&temp, file));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        self.changed = false;
    }
}

/// Where a profile directory's outputs are vouched for ([`vouch`]), by file name:
/// `<target>/<profile>/.memoshelve/hashes`.
pub(crate) fn vouched_in(profile: &Path) -> PathBuf {
    profile.join(".memoshelve").join("hashes")
}

/// Records that the file at `path`, as it is now, holds bytes whose blake3 is `hash`: written
/// by the writer that knows it (the unit cache, for the outputs it just restored or that rustc
/// just wrote and it read back), as `record`. Unlike the cache's own entries this is trusted at
/// once, not 2 s later: the stat taken now identifies this write of the file (a later write
/// moves its change time), and the writer knows no one else writes the file meanwhile (cargo
/// runs one compile of a unit at a time). Best effort.
pub(crate) fn vouch(record: &Path, path: &Path, hash: [u8; 32]) {
    let Ok(meta) = fs::metadata(path) else { return };
    let Ok(bytes) = postcard::to_allocvec(&(Stat::of(&meta), hash)) else { return };
    let Some(dir) = record.parent() else { return };
    let temp = dir.join(format!(".{}.tmp", std::process::id()));
    let written = fs::create_dir_all(dir)
        .and_then(|()| fs::write(&temp, &bytes))
        .and_then(|()| fs::rename(&temp, record));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
}

/// The blake3 a [`vouch`] recorded in `record` for the file at `path`, if the file is still
/// as it was then.
pub(crate) fn vouched(record: &Path, path: &Path) -> Option<[u8; 32]> {
    let (stat, hash): (Stat, [u8; 32]) = postcard::from_bytes(&fs::read(record).ok()?).ok()?;
    (Stat::of(&fs::metadata(path).ok()?) == stat).then_some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache saved under `dir` (a change time cannot be set back, so the tests that need a
    /// settled entry put it there themselves).
    fn cache_in(dir: &Path) -> StatCache {
        StatCache::open(dir.join("stat/cache"))
    }

    #[test]
    fn a_settled_file_is_hashed_once_and_a_changed_one_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("input.h");
        fs::write(&file, "int x;").unwrap();
        let mut cache = cache_in(dir.path());
        let meta = fs::metadata(&file).unwrap();
        let first = cache.hash(&file, &meta).unwrap();
        assert_eq!(first, *blake3::hash(b"int x;").as_bytes());
        // Just written: racily clean, so not cached.
        assert_eq!(cache.entries.len(), 0);
        // Pretend it settled: the entry is kept with the same stat.
        cache.entries.insert(file.clone(), (Stat::of(&meta), first));
        assert_eq!(cache.hash(&file, &meta).unwrap(), first);
        assert_eq!((cache.reused, cache.hashed), (1, 1));
        // Rewritten with the same size: the change time moves, so it is hashed again.
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&file, "int y;").unwrap();
        let meta = fs::metadata(&file).unwrap();
        assert_eq!(cache.hash(&file, &meta).unwrap(), *blake3::hash(b"int y;").as_bytes());
        assert_eq!(cache.hashed, 2);
    }

    #[test]
    fn a_vouched_hash_holds_until_the_file_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let (file, record) = (dir.path().join("lib.rlib"), dir.path().join("hashes/lib.rlib"));
        fs::write(&file, b"v1").unwrap();
        let hash = *blake3::hash(b"v1").as_bytes();
        vouch(&record, &file, hash);
        assert_eq!(vouched(&record, &file), Some(hash));
        // Rewritten with the same length: its change time moves (wait out the clock's tick).
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&file, b"v2").unwrap();
        assert_eq!(vouched(&record, &file), None);
        // Replaced by another file (a restore's rename): another inode.
        vouch(&record, &file, *blake3::hash(b"v2").as_bytes());
        let other = dir.path().join("other");
        fs::write(&other, b"v3").unwrap();
        fs::rename(&other, &file).unwrap();
        assert_eq!(vouched(&record, &file), None);
        fs::write(&record, b"damaged").unwrap();
        assert_eq!(vouched(&record, &file), None);
    }

    #[test]
    fn survives_a_save_and_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a");
        fs::write(&file, "a").unwrap();
        let meta = fs::metadata(&file).unwrap();
        let mut cache = cache_in(dir.path());
        cache.entries.insert(file.clone(), (Stat::of(&meta), [7; 32]));
        cache.changed = true;
        cache.save();
        let mut again = cache_in(dir.path());
        assert_eq!(again.hash(&file, &meta).unwrap(), [7; 32], "served from the saved cache");
        fs::write(dir.path().join("stat/cache"), b"\xff\xff\xff").unwrap();
        let mut damaged = cache_in(dir.path());
        assert_eq!(damaged.hash(&file, &meta).unwrap(), *blake3::hash(b"a").as_bytes());
    }

    #[test]
    fn only_times_two_seconds_old_are_settled() {
        let now = SystemTime::now();
        let ns = |time: SystemTime| {
            time.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as i128
        };
        let stat = |at: SystemTime| Stat {
            dev: 1,
            ino: 1,
            mode: 0,
            size: 1,
            mtime_ns: ns(at),
            ctime_ns: ns(at),
        };
        assert!(stat(now - Duration::from_secs(3)).settled_at(now));
        assert!(!stat(now - Duration::from_millis(1500)).settled_at(now));
        assert!(!stat(now).settled_at(now));
    }
}
