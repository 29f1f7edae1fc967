//! The event log: disk hits, remote hits and misses, which `cargo memoshelve stats`, `list` and
//! `show` count.
//!
//! ```text
//! <root>/events/<pid>.<n>.<ns>.log  one process's lines: `time TAB tier TAB name TAB key`
//! <root>/events.log         what `compact` folded: `time TAB tier TAB name TAB key TAB count`,
//!                           plus a `#folded TAB <file>` line per file of events/ it took in
//! ```
//!
//! A process appends to a file of its own, created on its first event and kept open, under a
//! shared lock, for as long as it lives: an event is one `write`. A shared log took five more
//! system calls per event (open and lock the root's lock, open the log, two closes), which were
//! a third of a small disk hit. `compact`, under the root's exclusive lock, folds only the files
//! it can lock exclusively, whose writer has gone; a live writer's file stays as it is. A file is
//! created under the root's shared lock, so a compaction never sees one before it is locked.
//!
//! A compaction stopped between writing `events.log` and deleting the files it folded leaves
//! them behind: `events.log` names them (`#folded`), so they are never counted twice, and the
//! next compaction deletes them. Lines written straight into `events.log` by memoshelve 0.1's
//! first releases are read as before. Reading and folding are for the maintenance API (feature
//! `maintenance`); a build only appends.

#[cfg(feature = "maintenance")]
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
#[cfg(feature = "maintenance")]
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(feature = "maintenance")]
use crate::error::{Error, Result};
use crate::tier::disk::Disk;

/// What `compact` folded, and the lines memoshelve's first releases appended.
#[cfg(feature = "maintenance")]
pub(crate) const EVENT_LOG: &str = "events.log";
/// The per-process files.
pub(crate) const EVENTS_DIR: &str = "events";
/// Roots a process keeps a file open for; the oldest is closed beyond this (a test process
/// opens hundreds of temporary roots). A closed file is folded by the next compaction.
const OPEN_ROOTS: usize = 16;
/// `events.log`'s mark for a file of `events/` already folded into it.
#[cfg(feature = "maintenance")]
const FOLDED: &str = "#folded\t";

/// Event files kept open, by root (most recently opened last).
pub(crate) type Appenders = Mutex<Vec<(PathBuf, Option<fs::File>)>>;

/// This process's open event files.
static APPENDERS: Appenders = Mutex::new(Vec::new());

/// Appends `line` (ending in a newline) to this process's event file under `disk`'s root,
/// opening it on the first event. Best effort, like every cache write: a root where it cannot
/// be created gets no events from this process.
pub(crate) fn append(disk: &Disk, line: &str) {
    append_with(&APPENDERS, disk, line);
}

/// [`append`] with the open files kept in `appenders`.
pub(crate) fn append_with(appenders: &Appenders, disk: &Disk, line: &str) {
    let mut appenders = appenders.lock().unwrap_or_else(PoisonError::into_inner);
    let root = disk.root();
    let index = match appenders.iter().position(|(open, _)| open == root) {
        Some(index) => index,
        None => {
            if appenders.len() >= OPEN_ROOTS {
                appenders.remove(0);
            }
            appenders.push((root.to_owned(), open_appender(disk)));
            appenders.len() - 1
        }
    };
    if let Some(file) = &mut appenders[index].1 {
        // One `write` on a file opened for appending: a reader sees whole lines, or a last
        // one without its newline, which it skips.
        let _ = file.write_all(line.as_bytes());
    }
}

/// Creates a new event file under the root's shared lock and locks it (shared) before the
/// root's lock is let go, so a compaction can tell it from the file of a writer that has gone.
fn open_appender(disk: &Disk) -> Option<fs::File> {
    let _guard = disk.write_guard();
    let path = disk.root().join(EVENTS_DIR).join(file_name());
    let file = crate::tier::disk::files::open_in_dir(
        fs::File::options().append(true).create_new(true),
        &path,
    )
    .ok()?;
    file.lock_shared().ok()?;
    Some(file)
}

/// A new event file's name: `<pid>.<n>.<nanoseconds>.log`, unique among this process's and
/// (with the clock) those of an earlier process of the same id.
fn file_name() -> String {
    static OPENED: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos());
    let opened = OPENED.fetch_add(1, Ordering::Relaxed);
    format!("{}.{opened}.{nanos}.log", std::process::id())
}

/// The event lines of a root: `events.log` and every file of `events/` it has not folded. A
/// last line still being written (no newline yet) is left out.
#[cfg(feature = "maintenance")]
pub(crate) fn read_all(root: &Path) -> String {
    let mut text = read_log(&root.join(EVENT_LOG)).unwrap_or_default();
    let folded: HashSet<String> = folded_names(&text).into_iter().map(str::to_owned).collect();
    for (name, path) in event_files(root) {
        if folded.contains(&name) {
            continue;
        }
        if let Ok(lines) = fs::read_to_string(&path) {
            text.push_str(whole_lines(&lines));
        }
    }
    text
}

/// `events.log` (empty if there is none), ending in a newline so more lines can follow.
#[cfg(feature = "maintenance")]
fn read_log(path: &Path) -> std::io::Result<String> {
    let mut text = match fs::read_to_string(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        read => read?,
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// The files of `events/`, by name.
#[cfg(feature = "maintenance")]
fn event_files(root: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(root.join(EVENTS_DIR)) else {
        return Vec::new();
    };
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(std::result::Result::ok)
        .filter_map(|entry| Some((entry.file_name().into_string().ok()?, entry.path())))
        .filter(|(name, _)| name.ends_with(".log"))
        .collect();
    files.sort_unstable();
    files
}

/// The files `events.log` says it has folded.
#[cfg(feature = "maintenance")]
fn folded_names(text: &str) -> HashSet<&str> {
    text.lines().filter_map(|line| line.strip_prefix(FOLDED)).collect()
}

/// `text` up to and including its last newline.
#[cfg(feature = "maintenance")]
fn whole_lines(text: &str) -> &str {
    text.rfind('\n').map_or("", |end| &text[..=end])
}

/// One event line: `time<TAB>tier<TAB>name<TAB>key`, and `<TAB>count` once folded.
#[cfg(feature = "maintenance")]
pub(crate) struct Event<'a> {
    pub(crate) time: u64,
    pub(crate) tier: &'a str,
    pub(crate) name: &'a str,
    pub(crate) key: &'a str,
    pub(crate) count: u64,
}

/// The events of `text`'s lines; anything else (a `#folded` line, a damaged line) is skipped.
#[cfg(feature = "maintenance")]
pub(crate) fn parse(text: &str) -> impl Iterator<Item = Event<'_>> {
    text.lines().filter_map(parse_line)
}

#[cfg(feature = "maintenance")]
fn parse_line(line: &str) -> Option<Event<'_>> {
    let mut fields = line.split('\t');
    let (time, tier, name, key) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
    let count = match fields.next() {
        Some(count) => count.parse().ok()?,
        None => 1,
    };
    if fields.next().is_some() {
        return None;
    }
    Some(Event { time: time.parse().ok()?, tier, name, key, count })
}

/// Rewrites `events.log` as one line per live entry and kind of event (the time being the last
/// event's), taking in the files of `events/` whose writers have gone, which are then deleted;
/// events of entries not in `live` go. Call it under the root's exclusive lock. Returns the
/// event lines before and after (a live writer's file, left alone, is in neither).
#[cfg(feature = "maintenance")]
pub(crate) fn fold(root: &Path, live: &HashSet<String>) -> Result<(u64, u64)> {
    let path = root.join(EVENT_LOG);
    let mut text = match read_log(&path) {
        Ok(text) => text,
        Err(source) => return Err(Error::Io { action: "read", path, source }),
    };
    let already: HashSet<String> = folded_names(&text).into_iter().map(str::to_owned).collect();
    // Files to delete once the new log is in place, each named in it until it is gone.
    let mut taken: Vec<(String, PathBuf)> = Vec::new();
    // Held until the files are deleted: their exclusive locks.
    let mut held = Vec::new();
    for (name, file_path) in event_files(root) {
        if already.contains(&name) {
            taken.push((name, file_path));
            continue;
        }
        let Ok(file) = fs::File::open(&file_path) else { continue };
        if file.try_lock().is_err() {
            continue; // its writer is alive (or the lock cannot be had): next time
        }
        let Ok(lines) = fs::read_to_string(&file_path) else { continue };
        text.push_str(whole_lines(&lines));
        held.push(file);
        taken.push((name, file_path));
    }
    if text.is_empty() && taken.is_empty() {
        return Ok((0, 0));
    }
    let mut folded: BTreeMap<(&str, &str, &str), (u64, u64)> = BTreeMap::new();
    let mut before = 0;
    for event in parse(&text) {
        before += 1;
        if live.contains(event.key) {
            let totals = folded.entry((event.key, event.tier, event.name)).or_default();
            totals.0 += event.count;
            totals.1 = totals.1.max(event.time);
        }
    }
    let mut out: String = folded
        .iter()
        .map(|((key, tier, name), (count, time))| {
            format!("{time}\t{tier}\t{name}\t{key}\t{count}\n")
        })
        .collect();
    for (name, _) in &taken {
        out.push_str(FOLDED);
        out.push_str(name);
        out.push('\n');
    }
    let scratch = root.join("tmp-b3").join(format!("events-{}.log", std::process::id()));
    let written = fs::create_dir_all(root.join("tmp-b3"))
        .and_then(|()| fs::write(&scratch, &out))
        .and_then(|()| fs::rename(&scratch, &path));
    if let Err(source) = written {
        let _ = fs::remove_file(&scratch);
        return Err(Error::Io { action: "rewrite", path, source });
    }
    for (_, file_path) in &taken {
        let _ = fs::remove_file(file_path);
    }
    drop(held);
    Ok((before, folded.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The event log: per-process files, `events.log`'s folded and legacy lines, a compaction that
    /// stopped before deleting what it folded (never counted twice), a half-written last line, and
    /// a file still held by its writer (left alone until it is let go).
    #[test]
    fn event_files_are_folded_once_and_only_when_their_writer_has_gone() {
        use super::{EVENT_LOG, EVENTS_DIR, fold, parse, read_all};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let counts = |text: &str| -> std::collections::BTreeMap<(String, String), u64> {
            let mut counts = std::collections::BTreeMap::new();
            for event in parse(text) {
                *counts.entry((event.key.to_owned(), event.tier.to_owned())).or_default() +=
                    event.count;
            }
            counts
        };
        let pair = |key: &str, tier: &str, count: u64| ((key.to_owned(), tier.to_owned()), count);
        let events = root.join(EVENTS_DIR);
        std::fs::create_dir_all(&events).unwrap();
        // A legacy line, a folded line, and a file already folded whose deletion never happened.
        std::fs::write(
            root.join(EVENT_LOG),
            "100\tdisk\tn\tK1\n200\tmiss\tn\tK1\t2\n#folded\tgone.log\ngarbage\n",
        )
        .unwrap();
        std::fs::write(events.join("gone.log"), "300\tdisk\tn\tK1\n").unwrap();
        // An ended writer's file, its last line cut short.
        std::fs::write(
            events.join("ended.log"),
            "400\tdisk\tn\tK1\n400\tdisk\tn\tK2\n500\tdisk\tn",
        )
        .unwrap();
        // A live writer's file, under its shared lock.
        std::fs::write(events.join("live.log"), "600\tdisk\tn\tK1\n").unwrap();
        let live = std::fs::File::open(events.join("live.log")).unwrap();
        live.lock_shared().unwrap();
        let expected: std::collections::BTreeMap<_, _> =
            [pair("K1", "disk", 3), pair("K1", "miss", 2), pair("K2", "disk", 1)].into();
        assert_eq!(counts(&read_all(root)), expected);

        let keep: std::collections::HashSet<String> = ["K1".to_owned()].into();
        assert_eq!(fold(root, &keep).unwrap(), (4, 2), "legacy, folded, and ended's two lines");
        let mut left: Vec<String> = std::fs::read_dir(&events)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["live.log"]);
        let expected: std::collections::BTreeMap<_, _> =
            [pair("K1", "disk", 3), pair("K1", "miss", 2)].into();
        assert_eq!(counts(&read_all(root)), expected, "K2 is not live: its events went");
        let log = std::fs::read_to_string(root.join(EVENT_LOG)).unwrap();
        assert!(
            log.contains("#folded\tended.log\n") && log.contains("#folded\tgone.log\n"),
            "{log}"
        );
        assert!(
            log.contains("400\tdisk\tn\tK1\t2\n"),
            "the last event's time and the count: {log}"
        );

        // Stopped before the deletion: the folded file is back, and still counted once.
        std::fs::write(events.join("ended.log"), "400\tdisk\tn\tK1\n").unwrap();
        assert_eq!(counts(&read_all(root)), expected);

        // Its writer gone, the live file is folded too; the `#folded` names of deleted files go.
        drop(live);
        assert_eq!(fold(root, &keep).unwrap(), (3, 2));
        assert_eq!(std::fs::read_dir(&events).unwrap().count(), 0);
        assert_eq!(counts(&read_all(root)), expected);
        assert_eq!(fold(root, &keep).unwrap(), (2, 2));
        let log = std::fs::read_to_string(root.join(EVENT_LOG)).unwrap();
        assert!(!log.contains("#folded"), "{log}");
    }

    /// A process writes each root's events to one file of its own, kept open under a shared lock;
    /// beyond 16 roots the oldest is closed, and a compaction can then fold it.
    #[test]
    fn a_process_keeps_one_locked_event_file_per_root() {
        let dirs: Vec<tempfile::TempDir> = (0..17).map(|_| tempfile::tempdir().unwrap()).collect();
        // Its own registry: other tests open roots of their own meanwhile.
        let appenders = super::Appenders::default();
        let key = crate::key::Key::from_hex(&"07".repeat(32)).unwrap();
        for dir in &dirs {
            let disk = Disk::open(dir.path()).unwrap();
            for tier in ["disk", "miss"] {
                super::append_with(&appenders, &disk, &format!("1\t{tier}\tn\t{key}\n"));
            }
        }
        let files = |dir: &tempfile::TempDir| -> Vec<std::path::PathBuf> {
            std::fs::read_dir(dir.path().join(super::EVENTS_DIR))
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .collect()
        };
        for dir in &dirs {
            let files = files(dir);
            assert_eq!(files.len(), 1, "one file per root");
            let text = std::fs::read_to_string(&files[0]).unwrap();
            assert_eq!(text.lines().count(), 2, "{text}");
        }
        let locked = |dir: &tempfile::TempDir| {
            let file = std::fs::File::open(&files(dir)[0]).unwrap();
            file.try_lock().is_err()
        };
        assert!(!locked(&dirs[0]), "the first root's file was closed for the 17th");
        assert!(dirs[1..].iter().all(locked), "the others stay open and locked");
        let live: std::collections::HashSet<String> = [key.to_string()].into();
        assert_eq!(super::fold(dirs[0].path(), &live).unwrap(), (2, 2));
        assert_eq!(super::fold(dirs[16].path(), &live).unwrap(), (0, 0));
    }
}
