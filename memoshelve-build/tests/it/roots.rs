//! Unusable cache roots never fail a call: the value is computed and the memory tier still works.

use std::path::Path;
use std::process::Command;

use memoshelve_build::{Memo, Status};

/// A directory that even root cannot write: a read-only bind mount when running as root,
/// permission bits otherwise. Undone on drop.
struct ReadOnly<'a> {
    path: &'a Path,
    mounted: bool,
}

impl<'a> ReadOnly<'a> {
    fn make(path: &'a Path) -> ReadOnly<'a> {
        let uid = Command::new("id").arg("-u").output().expect("run id -u");
        let is_root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        if is_root {
            let status = Command::new("mount")
                .arg("--bind")
                .arg("-o")
                .arg("ro")
                .arg(path)
                .arg(path)
                .status();
            assert!(
                status.is_ok_and(|status| status.success()),
                "running as root, and a read-only bind mount of {} failed: this test needs CAP_SYS_ADMIN or a non-root user",
                path.display()
            );
            ReadOnly { path, mounted: true }
        } else {
            set_mode(path, 0o555);
            ReadOnly { path, mounted: false }
        }
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.path).status();
        } else {
            set_mode(self.path, 0o755);
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

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
fn read_only_root_serves_hits_and_computes_misses() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let big: Vec<u32> = (0..1000).collect();
    let writer = Memo::new("root-ro").dir(&root).mem_capacity(0);
    writer.call(&"small", || 1u32);
    writer.call(&"big", || big.clone());
    let _read_only = ReadOnly::make(&root);
    let reader = Memo::new("root-ro").dir(&root).mem_capacity(0);
    assert_eq!(reader.call_with_status(&"small", || 2u32), (1, Status::Disk));
    assert_eq!(reader.call_with_status(&"big", Vec::new), (big, Status::Disk));
    assert_eq!(reader.call_with_status(&"new", || 3u32), (3, Status::Miss));
    assert_eq!(
        reader.call_with_status(&"new-big", || vec![4u32; 1000]),
        (vec![4u32; 1000], Status::Miss)
    );
    assert_eq!(reader.try_call(&"other", || Ok::<_, String>(4u32)), Ok(4));
    assert!(reader.put(&"put", &5u32).is_err(), "put reports what failed");
}
