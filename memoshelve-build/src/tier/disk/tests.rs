//! Unit tests of the disk tier: where records live, last use, values read in parts, temporary
//! files of killed writers.

use crate::tier::disk::Disk;
use crate::{Memo, Status};

#[test]
fn an_entry_is_one_record_file_under_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("unit-record").dir(dir.path());
    memo.put(&1u8, &2u8).unwrap();
    let key = memo.key_for::<u8, _>(&1u8).unwrap();
    let hex = key.to_hex();
    let path = Disk::open(dir.path()).unwrap().record_path(&key);
    assert_eq!(path, dir.path().join("index").join(&hex[..2]).join(&hex));
    assert!(path.is_file());
    assert_eq!(crate::tier::disk::files::paths_under(&dir.path().join("index")), vec![path]);
}

#[test]
fn a_disk_hit_refreshes_last_use() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("unit-touch").dir(dir.path()).mem_capacity(0);
    memo.put(&1u8, &2u8).unwrap();
    let key = memo.key_for::<u8, _>(&1u8).unwrap();
    let record = Disk::open(dir.path()).unwrap().record_path(&key);
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().append(true).open(&record).unwrap().set_modified(an_hour_ago).unwrap();
    assert_eq!(memo.get_with_status::<u8, _>(&1u8), Some((2, Status::Disk)));
    let used = std::fs::metadata(&record).unwrap().modified().unwrap();
    assert!(
        used > an_hour_ago + std::time::Duration::from_secs(3000),
        "last use was not refreshed"
    );
}

/// A large `Vec<u8>` is read from its blob in two parts (prefix apart) and still checked as a
/// whole: the same bytes come back, and a changed byte anywhere, the prefix included, is a miss.
#[test]
fn a_large_byte_vector_is_read_in_parts_and_checked_whole() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("unit-large").dir(dir.path()).mem_capacity(0);
    let value: Vec<u8> = (0..(5usize << 20) + 77).map(|index| (index % 251) as u8).collect();
    let stored = value.clone();
    memo.call(&1u8, move || stored);
    assert_eq!(
        memo.call_with_status::<_, Vec<u8>>(&1u8, || unreachable!()),
        (value.clone(), Status::Disk)
    );
    let blobs = crate::tier::disk::files::files_under(&dir.path().join("blobs-b3"));
    assert_eq!(blobs.len(), 1, "one blob");
    let blob = &blobs[0].0;
    for at in [0, 1, 3 << 20] {
        let mut bytes = std::fs::read(blob).unwrap();
        let original = bytes[at];
        bytes[at] ^= 0x40;
        let mut perms = std::fs::metadata(blob).unwrap().permissions();
        #[expect(clippy::permissions_set_readonly_false, reason = "a test damages the blob")]
        perms.set_readonly(false);
        std::fs::set_permissions(blob, perms).unwrap();
        std::fs::write(blob, &bytes).unwrap();
        let (fresh, status) = memo.call_with_status::<_, Vec<u8>>(&1u8, || vec![9]);
        assert_eq!((fresh, status), (vec![9], Status::Miss), "a changed byte at {at} is a miss");
        // Put the value back for the next round.
        bytes[at] = original;
        memo.put(&1u8, &value).unwrap();
        assert_eq!(memo.call_with_status::<_, Vec<u8>>(&1u8, || unreachable!()).1, Status::Disk);
    }
}

/// The first store of a process in a root deletes the temporary files of writers that have
/// ended (killed, say) once they are a minute old; a live writer's file, a young file and the
/// event log's scratch file stay. Later stores of the process do not look again.
#[cfg(unix)]
#[test]
fn the_first_store_sweeps_the_old_temporary_files_of_ended_writers() {
    use std::time::{Duration, SystemTime};
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp-b3");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let (ended, live) = (child.id(), std::process::id());
    let file = |name: String, age: u64| {
        let path = tmp.join(name);
        std::fs::write(&path, "half").unwrap();
        let modified = SystemTime::now() - Duration::from_secs(age);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(modified).unwrap();
        path
    };
    let killed = file(format!("{}.{ended}.0.1.tmp", "ab".repeat(32)), 120);
    let others = [
        file(format!("record.{live}.0.1.tmp"), 120),
        file(format!("record.{ended}.1.1.tmp"), 10),
        file(format!("events-{ended}.log"), 120),
    ];
    let memo = Memo::new("unit-sweep").dir(dir.path());
    memo.put(&1u8, &2u8).unwrap();
    // Where a writer's end cannot be known (not Linux), nothing is swept by a store.
    assert_eq!(killed.exists(), !cfg!(target_os = "linux"), "the killed writer's file");
    assert!(others.iter().all(|path| path.exists()), "{others:?}");
    let later = file(format!("record.{ended}.2.1.tmp"), 120);
    memo.put(&1u8, &3u8).unwrap();
    assert!(later.exists(), "swept once per process and root");
}
