//! Integration tests of the public API: both tiers, keys, failure policies.
//!
//! Each test uses its own cache name and temp root: the memory tier is shared by the process.

mod asyncs;
mod corruption;
#[cfg(unix)]
mod file_steps;
mod flight;
mod fuzz;
mod inputs;
mod keys;
mod large;
mod memoize;
mod outputs;
mod roots;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use memoshelve_build::{Memo, Status};

/// A memo that keeps nothing in memory, so every hit comes from disk.
fn disk_only(name: &str, dir: &Path) -> Memo {
    Memo::new(name).dir(dir).mem_capacity(0)
}

/// The record file of `key` under `root`, as the format documents it: `index/aa/<hex key>`.
fn record_path(root: &Path, key: &memoshelve_build::Key) -> PathBuf {
    let hex = key.to_hex();
    root.join("index").join(&hex[..2]).join(hex)
}

/// The record of `key` under `root`, read as the format documents it (magic, format, postcard,
/// blake3 of everything before): an oracle of its own, not the library's reader.
fn read_record(root: &Path, key: &memoshelve_build::Key) -> memoshelve_build::EntryRecord {
    let bytes = std::fs::read(record_path(root, key)).unwrap();
    let (body, checksum) = bytes.split_at(bytes.len() - 32);
    assert_eq!(blake3::hash(body).as_bytes(), checksum, "the record's checksum");
    assert_eq!(&body[..8], b"memoshv\n");
    assert_eq!(body[8..12], memoshelve_build::FORMAT_VERSION.to_le_bytes());
    postcard::from_bytes(&body[12..]).unwrap()
}

/// Writes `record` as a well-formed record file (its checksum right), as someone with write
/// access to the cache could: only the library's own checks of the value can catch a forgery.
fn write_record(root: &Path, record: &memoshelve_build::EntryRecord) {
    let mut bytes = b"memoshv\n".to_vec();
    bytes.extend_from_slice(&memoshelve_build::FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&postcard::to_allocvec(record).unwrap());
    let checksum = blake3::hash(&bytes);
    bytes.extend_from_slice(checksum.as_bytes());
    let key = memoshelve_build::Key::from_hex(&record.key).unwrap();
    std::fs::write(record_path(root, &key), bytes).unwrap();
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn call_misses_then_hits_memory_then_disk() {
    let dir = tempfile::tempdir().unwrap();
    let runs = AtomicUsize::new(0);
    let compute = || {
        runs.fetch_add(1, Ordering::SeqCst);
        "forty-two".to_owned()
    };
    let memo = Memo::new("it-call").dir(dir.path());
    assert_eq!(memo.call_with_status(&(1, "a"), compute), ("forty-two".to_owned(), Status::Miss));
    assert_eq!(memo.call_with_status(&(1, "a"), compute), ("forty-two".to_owned(), Status::Memory));
    assert_eq!(memo.call(&(1, "a"), compute), "forty-two");
    // Another memo over the same root that keeps nothing in memory reads the disk tier.
    let cold = disk_only("it-call", dir.path());
    assert_eq!(cold.call_with_status(&(1, "a"), compute), ("forty-two".to_owned(), Status::Disk));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(Status::Memory.to_string(), "cached (mem)");
    assert_eq!(Status::Disk.to_string(), "cached (disk)");
    assert_eq!(Status::Miss.to_string(), "miss");
}

#[test]
fn large_values_round_trip_through_the_blob_area() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u64> = (0..100_000).map(|n| n * n).collect();
    let memo = disk_only("it-big", dir.path());
    assert_eq!(memo.call_with_status(&"big", || big.clone()).1, Status::Miss);
    assert_eq!(memo.call_with_status(&"big", || unreachable!()), (big, Status::Disk));
    assert_eq!(files_under(&dir.path().join("blobs-b3")).len(), 1);
}

#[test]
fn try_call_does_not_cache_errors() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("it-try").dir(dir.path());
    let failed: Result<u32, String> = memo.try_call(&"x", || Err("generator failed".to_owned()));
    assert_eq!(failed, Err("generator failed".to_owned()));
    assert!(!memo.contains::<u32, _>(&"x"));
    assert_eq!(memo.try_call(&"x", || Ok::<u32, String>(5)), Ok(5));
    assert_eq!(memo.try_call(&"x", || Err::<u32, String>("not called".to_owned())), Ok(5));
}

#[test]
fn get_contains_put_uncache() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("it-put").dir(dir.path());
    assert_eq!(memo.get::<String, _>(&3), None);
    assert!(!memo.contains::<String, _>(&3));
    memo.put(&3, &"three".to_owned()).unwrap();
    assert!(memo.contains::<String, _>(&3));
    assert_eq!(memo.get_with_status::<String, _>(&3), Some(("three".to_owned(), Status::Memory)));
    // The value is typed: the same args with another type are another entry.
    assert!(!memo.contains::<u32, _>(&3));
    let cold = disk_only("it-put", dir.path());
    assert_eq!(cold.get_with_status::<String, _>(&3), Some(("three".to_owned(), Status::Disk)));
    assert_eq!(memo.call(&3, || "recomputed".to_owned()), "three");
    assert!(memo.uncache::<String, _>(&3).unwrap());
    assert!(!memo.uncache::<String, _>(&3).unwrap());
    assert!(!memo.contains::<String, _>(&3));
    assert_eq!(cold.get::<String, _>(&3), None);
    assert_eq!(memo.call(&3, || "recomputed".to_owned()), "recomputed");
}

#[test]
fn keys_items_and_values_list_both_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("it-keys").dir(dir.path());
    for n in 0..5u32 {
        memo.call(&n, || n * 10);
    }
    let expected_keys: Vec<_> = (0..5u32).map(|n| memo.key_for::<u32, _>(&n).unwrap()).collect();
    let mut sorted = expected_keys.clone();
    sorted.sort();
    assert_eq!(memo.keys(), sorted);
    assert_eq!(memo.mem_keys(), sorted);
    assert_eq!(memo.disk_keys(), sorted);
    let mut values = memo.values::<u32>();
    values.sort();
    assert_eq!(values, vec![0, 10, 20, 30, 40]);
    let items = memo.items::<u32>();
    assert_eq!(items.len(), 5);
    for (key, value) in items {
        let n = value / 10;
        assert_eq!(key, memo.key_for::<u32, _>(&n).unwrap());
    }
    // Another version of the same name is another set of entries.
    let v2 = Memo::new("it-keys").dir(dir.path()).version("2");
    assert!(v2.keys().is_empty());
    assert!(v2.items::<u32>().is_empty());
    // A memo that keeps nothing in memory still sees every entry on disk.
    let cold = disk_only("it-keys", dir.path());
    assert_eq!(cold.disk_keys(), sorted);
    assert_eq!(cold.items::<u32>().len(), 5);
}

#[test]
fn par_map_memoizes_each_item_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let runs = AtomicUsize::new(0);
    let memo = Memo::new("it-par").dir(dir.path());
    let square = |n: &u64| {
        runs.fetch_add(1, Ordering::SeqCst);
        n * n
    };
    let items: Vec<u64> = (0..64).collect();
    let expected: Vec<u64> = items.iter().map(|n| n * n).collect();
    assert_eq!(memo.par_map(items.clone(), square), expected);
    assert_eq!(runs.load(Ordering::SeqCst), 64);
    assert_eq!(memo.par_map(items.clone(), square), expected);
    assert_eq!(runs.load(Ordering::SeqCst), 64, "the second map must be all hits");
    // Each item is its own entry: one more item computes only that item.
    let mut more = items;
    more.push(100);
    assert_eq!(*memo.par_map(more, square).last().unwrap(), 10_000);
    assert_eq!(runs.load(Ordering::SeqCst), 65);
}

#[test]
fn a_cached_value_that_fails_validation_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("it-validate").dir(dir.path()).validate(|value: &i32| *value >= 0);
    memo.put(&"k", &-1i32).unwrap();
    assert_eq!(memo.call_with_status(&"k", || 9i32), (9, Status::Miss));
    assert_eq!(memo.call_with_status(&"k", || unreachable!()), (9, Status::Memory));
    let cold = disk_only("it-validate", dir.path()).validate(|value: &i32| *value >= 0);
    assert_eq!(cold.get_with_status::<i32, _>(&"k"), Some((9, Status::Disk)));
    // A validator for another type does not apply.
    let strings = Memo::new("it-validate-s").dir(dir.path()).validate(|value: &i32| *value >= 0);
    strings.put(&"k", &"-1".to_owned()).unwrap();
    assert_eq!(strings.get::<String, _>(&"k").as_deref(), Some("-1"));
}

#[test]
fn disabled_memo_computes_every_time_and_touches_no_disk() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("never-created");
    let runs = AtomicUsize::new(0);
    let memo = Memo::new("it-disabled").dir(&root).disable(true);
    for _ in 0..3 {
        let (value, status) = memo.call_with_status(&1, || runs.fetch_add(1, Ordering::SeqCst));
        assert_eq!(status, Status::Miss);
        assert!(value < 3);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    memo.put(&1, &5usize).unwrap();
    assert_eq!(memo.get::<usize, _>(&1), None);
    assert!(memo.keys().is_empty());
    assert!(!root.exists(), "a disabled cache created its root");
}

#[test]
fn custom_arg_hashing_replaces_the_encoding() {
    struct NotSerialize {
        digest: u8,
        payload: String,
    }
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("it-custom")
        .dir(dir.path())
        .hash_args_with(|args: &NotSerialize| vec![args.digest]);
    let first = NotSerialize { digest: 1, payload: "first".into() };
    let same_digest = NotSerialize { digest: 1, payload: "other payload".into() };
    let other_digest = NotSerialize { digest: 2, payload: "first".into() };
    assert_eq!(memo.call(&first, || first.payload.clone()), "first");
    assert_eq!(
        memo.call_with_status(&same_digest, || unreachable!()),
        ("first".to_owned(), Status::Memory)
    );
    assert_eq!(
        memo.call_with_status(&other_digest, || "second".to_owned()),
        ("second".to_owned(), Status::Miss)
    );
    assert_ne!(memo.key_for::<String, _>(&first), memo.key_for::<String, _>(&other_digest));
}

#[test]
fn memory_tier_stays_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let capacity = 64 * 1024;
    let value_bytes = 4096;
    let memo = Memo::new("it-bound").dir(dir.path()).mem_capacity(capacity);
    // Ten times more data than fits.
    let count = 10 * capacity as usize / value_bytes;
    for n in 0..count {
        memo.call(&n, || vec![n as u8; value_bytes]);
    }
    let resident = memo.mem_keys().len();
    // Each value is its 4096 bytes plus a two-byte length prefix when encoded.
    assert!(
        resident * (value_bytes + 2) <= capacity as usize,
        "{resident} values of 4 KiB exceed 64 KiB"
    );
    assert!(resident >= 10, "the tier should hold about 15 values, holds {resident}");
    // The most recent values are the ones kept; evicted ones still hit on disk.
    assert_eq!(memo.get_with_status::<Vec<u8>, _>(&(count - 1)).unwrap().1, Status::Memory);
    let (value, status) = memo.get_with_status::<Vec<u8>, _>(&0usize).unwrap();
    assert_eq!((value, status), (vec![0u8; value_bytes], Status::Disk));
}
