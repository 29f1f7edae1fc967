//! Files and values over the size where reading and hashing are pipelined on two threads:
//! the same bytes come back, and damage anywhere in them, the last chunk included, is caught.

use std::fs;
use std::path::Path;

use memoshelve_build::{Memo, Status};

use crate::{disk_only, files_under};

/// Six and a half MiB: over the pipeline's 4 MiB threshold, not a whole number of its chunks.
const LARGE: usize = (6 << 20) + 12_345;

fn large_bytes(seed: u8) -> Vec<u8> {
    (0..LARGE).map(|index| (index % 251) as u8 ^ seed).collect()
}

fn writable(path: &Path) {
    let mut perms = fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(path, perms).unwrap();
}

fn only_blob(root: &Path) -> std::path::PathBuf {
    let blobs = files_under(&root.join("blobs-b3"));
    assert_eq!(blobs.len(), 1, "one blob expected: {blobs:?}");
    blobs.into_iter().next().unwrap()
}

#[test]
fn a_large_byte_vector_round_trips_and_any_damage_is_a_miss() {
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 4] = [
        ("first byte", |bytes| bytes[0] ^= 1),
        ("last byte", |bytes| *bytes.last_mut().unwrap() ^= 1),
        ("cut short", |bytes| bytes.truncate(bytes.len() - 1)),
        ("grown", |bytes| bytes.push(0)),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        let memo = disk_only("large-bytes", dir.path());
        assert_eq!(memo.call_with_status(&1, || large_bytes(0)).1, Status::Miss);
        let (value, status) = memo.call_with_status::<_, Vec<u8>>(&1, || unreachable!());
        assert_eq!(status, Status::Disk);
        assert!(value == large_bytes(0), "the disk hit returns the stored bytes");

        let blob = only_blob(dir.path());
        writable(&blob);
        let mut bytes = fs::read(&blob).unwrap();
        damage(&mut bytes);
        fs::write(&blob, bytes).unwrap();
        let (value, status) = memo.call_with_status(&1, || large_bytes(9));
        assert_eq!(status, Status::Miss, "{what}: a damaged blob is a miss");
        assert!(value == large_bytes(9), "{what}: the fresh value is returned");
    }
}

#[test]
fn a_large_generated_file_restores_byte_for_byte_and_damage_reruns_the_step() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let memo = Memo::new("large-outputs").dir(cache.path()).mem_capacity(0);
    let step = |step: &mut memoshelve_build::Step| {
        fs::write(step.dir().join("big.bin"), large_bytes(3)).unwrap();
    };
    assert_eq!(memo.outputs(out.path()).call_with_status(&1, step).1, Status::Miss);
    fs::remove_file(out.path().join("big.bin")).unwrap();
    let ((), status) = memo.outputs(out.path()).call_with_status(&1, |_| unreachable!());
    assert_eq!(status, Status::Disk);
    assert!(fs::read(out.path().join("big.bin")).unwrap() == large_bytes(3));

    // Damage in the last chunk of the blob: the restore is refused and the step runs again.
    let blob = files_under(&cache.path().join("blobs-b3"))
        .into_iter()
        .find(|path| fs::metadata(path).unwrap().len() == LARGE as u64)
        .expect("the generated file's blob");
    writable(&blob);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[LARGE - 10] ^= 0x80;
    fs::write(&blob, bytes).unwrap();
    fs::remove_file(out.path().join("big.bin")).unwrap();
    let ((), status) = memo.outputs(out.path()).call_with_status(&1, step);
    assert_eq!(status, Status::Miss);
    assert!(fs::read(out.path().join("big.bin")).unwrap() == large_bytes(3));
}

#[test]
fn a_large_declared_input_changes_the_key_with_its_last_byte() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.bin");
    fs::write(&input, large_bytes(0)).unwrap();
    let key = || Memo::new("large-input").dir(dir.path()).input_file(&input).key_for::<(), _>(&());
    let before = key().unwrap();
    assert_eq!(key().unwrap(), before, "the same content, the same key");
    let mut bytes = large_bytes(0);
    *bytes.last_mut().unwrap() ^= 1;
    fs::write(&input, bytes).unwrap();
    assert_ne!(key().unwrap(), before, "a change in the last byte is a new key");
}
