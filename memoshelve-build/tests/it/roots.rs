//! Unusable cache roots never fail a call: the value is computed and the memory tier still works.

use memoshelve_build::{Memo, Status};

#[test]
fn root_that_is_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let memo = Memo::new("root-file").dir(&file);
    assert_eq!(memo.call_with_status(&1, || 10), (10, Status::Miss));
    assert_eq!(
        memo.call_with_status(&1, || 11),
        (10, Status::Memory),
        "the memory tier still works"
    );
    assert_eq!(memo.try_call(&2, || Ok::<_, String>(20)), Ok(20));
    assert_eq!(memo.root(), None);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    // Below a regular file nothing can be created either.
    let below = Memo::new("root-below-file").dir(file.join("cache"));
    assert_eq!(below.call_with_status(&1, || 12), (12, Status::Miss));
}

#[test]
fn missing_parents_are_created_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a/b/c");
    let memo = Memo::new("root-missing").dir(&root).mem_capacity(0);
    assert_eq!(memo.call_with_status(&1, || 5), (5, Status::Miss));
    assert_eq!(memo.call_with_status(&1, || 6), (5, Status::Disk));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "a new cache root must be private to its owner");
    assert!(root.join("CACHEDIR.TAG").is_file());
}

#[test]
fn put_reports_a_failed_write_and_calls_do_not() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the blob area should be: large values cannot be written.
    std::fs::write(dir.path().join("blobs-b3"), "in the way").unwrap();
    let memo = Memo::new("root-blocked").dir(dir.path()).mem_capacity(0);
    let big = vec![1u32; 5000]; // 5 KiB encoded: stored as a blob, not inline
    let err = memo.put(&"big", &big).unwrap_err().to_string();
    assert!(err.contains("blobs-b3"), "the error names the file: {err}");
    assert_eq!(memo.call_with_status(&"big", || big.clone()), (big.clone(), Status::Miss));
    assert_eq!(memo.try_call(&"big", || Ok::<_, String>(big.clone())), Ok(big));
    // Small values are inlined in their record and still cached.
    memo.put(&"small", &1u8).unwrap();
    assert_eq!(memo.get_with_status::<u8, _>(&"small"), Some((1, Status::Disk)));
}

#[test]
fn a_root_deleted_while_in_use_still_returns_values_and_is_used_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let memo = Memo::new("root-deleted").dir(&root).mem_capacity(0);
    let big = vec![7u32; 5000];
    assert_eq!(memo.call_with_status(&1, || big.clone()), (big.clone(), Status::Miss));
    assert_eq!(memo.call_with_status(&1, || big.clone()).1, Status::Disk);
    std::fs::remove_dir_all(&root).unwrap();
    // Gone: a miss, computed, and stored again where it can be.
    assert_eq!(memo.call_with_status(&1, || big.clone()), (big.clone(), Status::Miss));
    assert_eq!(memo.call_with_status(&2, || vec![2u32]), (vec![2u32], Status::Miss));
    assert_eq!(memo.call_with_status(&1, Vec::new), (big, Status::Disk), "stored again");
    assert_eq!(memo.call_with_status(&2, Vec::new), (vec![2u32], Status::Disk));
}

#[test]
fn asking_for_the_root_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("not-yet");
    let memo = Memo::new("root-getter").dir(&root);
    assert_eq!(memo.root(), Some(root.clone()));
    assert!(!root.exists(), "a getter made the cache root");
    assert_eq!(memo.call_with_status(&1, || 2), (2, Status::Miss));
    assert!(root.is_dir());
    assert_eq!(memo.root(), Some(root));
    assert_eq!(Memo::new("root-getter-off").dir(dir.path()).disable(true).root(), None);
}
