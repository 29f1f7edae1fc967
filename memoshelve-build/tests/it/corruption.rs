//! A damaged entry is detected, never returned, removed, and healthy again after the next call.

use std::fs;
use std::path::{Path, PathBuf};

use memoshelve_build::{Memo, Status};

use crate::{disk_only, files_under};

fn big_value() -> Vec<u32> {
    (0..4096).collect()
}

fn writable(path: &Path) {
    let mut perms = fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(path, perms).unwrap();
}

fn stored_blob(dir: &Path) -> PathBuf {
    let blobs = files_under(&dir.join("blobs-b3"));
    assert_eq!(blobs.len(), 1, "expected one blob, found {blobs:?}");
    blobs.into_iter().next().unwrap()
}

/// Stores the big value, damages its blob with `damage`, and checks the policy.
fn check_damaged_blob(name: &str, damage: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let memo = disk_only(name, dir.path());
    assert_eq!(memo.call_with_status(&1, big_value).1, Status::Miss);
    damage(&stored_blob(dir.path()));
    // The damaged entry is a miss and the fresh value is returned, not the damaged one.
    let mut fresh = big_value();
    fresh[0] = 99;
    assert_eq!(memo.call_with_status(&1, || fresh.clone()), (fresh.clone(), Status::Miss));
    // The entry is healthy again: a disk hit of the fresh value.
    assert_eq!(memo.call_with_status(&1, || unreachable!()), (fresh, Status::Disk));
}

#[test]
fn flipped_byte_in_a_blob_is_a_miss() {
    check_damaged_blob("corrupt-flip", |blob| {
        writable(blob);
        let mut bytes = fs::read(blob).unwrap();
        bytes[100] ^= 0x40;
        fs::write(blob, bytes).unwrap();
    });
}

#[test]
fn truncated_blob_is_a_miss() {
    check_damaged_blob("corrupt-truncate", |blob| {
        writable(blob);
        let bytes = fs::read(blob).unwrap();
        fs::write(blob, &bytes[..bytes.len() / 2]).unwrap();
    });
}

#[test]
fn deleted_blob_is_a_miss() {
    check_damaged_blob("corrupt-delete", |blob| fs::remove_file(blob).unwrap());
}

#[test]
fn flipped_byte_in_the_index_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let memo = disk_only("corrupt-index", dir.path());
    assert_eq!(memo.call_with_status(&1, || 7u8).1, Status::Miss);
    let buckets = files_under(&dir.path().join("index"));
    assert_eq!(buckets.len(), 1);
    let mut bytes = fs::read(&buckets[0]).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    fs::write(&buckets[0], bytes).unwrap();
    assert_eq!(memo.call_with_status(&1, || 8u8), (8, Status::Miss));
    assert_eq!(memo.call_with_status(&1, || -> u8 { unreachable!() }), (8, Status::Disk));
}

#[test]
fn a_whole_record_whose_inline_value_does_not_match_its_hash_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let memo = disk_only("corrupt-inline-forged", dir.path());
    memo.put(&1, &"genuine".to_owned()).unwrap();
    // Another inline value under the old hash, the record's checksum recomputed: the record is
    // whole, so only the value's own check can catch it.
    let key = memo.key_for::<String, _>(&1).unwrap();
    let mut record = crate::read_record(dir.path(), &key);
    let forged = postcard::to_allocvec("forged!").unwrap();
    record.inline = Some(forged.clone());
    record.size = forged.len() as u64;
    crate::write_record(dir.path(), &record);
    assert_eq!(memo.get::<String, _>(&1), None, "a forged inline value was served");
    assert_eq!(
        memo.call_with_status(&1, || "fresh".to_owned()),
        ("fresh".to_owned(), Status::Miss)
    );
}

#[test]
fn an_inline_value_changed_in_place_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let memo = disk_only("corrupt-inline", dir.path());
    memo.put(&1, &"genuine".to_owned()).unwrap();
    // The value's bytes edited inside the record, as a bad disk or a stray write would: the
    // record's checksum no longer matches.
    let key = memo.key_for::<String, _>(&1).unwrap();
    let path = crate::record_path(dir.path(), &key);
    let bytes = fs::read(&path).unwrap();
    let at = bytes.windows(7).position(|window| window == b"genuine").unwrap();
    let mut forged = bytes.clone();
    forged[at..at + 7].copy_from_slice(b"forged!");
    fs::write(&path, forged).unwrap();
    assert_eq!(memo.get::<String, _>(&1), None, "a changed inline value was served");
    assert_eq!(
        memo.call_with_status(&1, || "fresh".to_owned()),
        ("fresh".to_owned(), Status::Miss)
    );
    assert_eq!(memo.call_with_status(&1, || unreachable!()), ("fresh".to_owned(), Status::Disk));
}

#[test]
fn value_of_another_type_under_a_colliding_record_is_not_decoded_as_this_type() {
    let dir = tempfile::tempdir().unwrap();
    let strings = Memo::new("corrupt-type").dir(dir.path()).mem_capacity(0);
    strings.put(&1, &"text".to_owned()).unwrap();
    // Same name and args, another type: another key, so a miss and no misread.
    assert_eq!(strings.get::<u64, _>(&1), None);
    assert_eq!(strings.get::<String, _>(&1).as_deref(), Some("text"));
}

#[test]
fn a_record_that_is_wrong_about_a_right_blob_does_not_take_the_blob_from_other_entries() {
    let dir = tempfile::tempdir().unwrap();
    let a = disk_only("corrupt-shared-a", dir.path());
    let b = disk_only("corrupt-shared-b", dir.path());
    let bytes = vec![7u8; 5000];
    a.put(&1, &bytes).unwrap();
    b.put(&1, &bytes).unwrap();
    assert_eq!(files_under(&dir.path().join("blobs-b3")).len(), 1, "one blob for both");
    // b's record, whole, claims a size its (right) blob does not have.
    let key = b.key_for::<Vec<u8>, _>(&1).unwrap();
    let mut record = crate::read_record(dir.path(), &key);
    record.size += 1;
    crate::write_record(dir.path(), &record);
    assert_eq!(b.get::<Vec<u8>, _>(&1), None, "a record with a wrong size was served");
    assert_eq!(
        a.get_with_status::<Vec<u8>, _>(&1),
        Some((bytes, Status::Disk)),
        "the shared blob was deleted with the wrong record"
    );
}
