//! Unit tests of the crate internals: memory-tier accounting, log parsing, the disk layout.

use std::sync::Arc;

use crate::disk::Disk;
use crate::key::KeyParts;
use crate::memory::{MemoryTier, Namespace};
use crate::{Key, Log, Memo, Status};

fn key(n: u32) -> Key {
    let args = n.to_le_bytes();
    KeyParts { name: "unit", version: "", type_name: "u32", args: &args, inputs: &[] }.key()
}

fn namespace(name: &str) -> Arc<Namespace> {
    Arc::new(Namespace { name: name.to_owned(), version: String::new() })
}

#[test]
fn memory_tier_accounts_bytes_exactly_and_evicts_least_recently_used() {
    let mut tier = MemoryTier::new(1000);
    let a = namespace("a");
    for n in 0..10 {
        tier.insert(key(n), a.clone(), Arc::new(n), 100, 300);
    }
    assert_eq!(tier.usage("a"), (300, 300), "the per-name bound holds");
    assert!(tier.contains(&key(9)) && tier.contains(&key(8)) && tier.contains(&key(7)));
    assert!(!tier.contains(&key(6)));
    // Using 7 makes 8 the least recently used.
    assert!(tier.get(&key(7)).is_some());
    tier.insert(key(10), a.clone(), Arc::new(10), 100, 300);
    assert!(tier.contains(&key(7)) && !tier.contains(&key(8)));
    // The process-wide bound evicts across names.
    let b = namespace("b");
    for n in 100..110 {
        tier.insert(key(n), b.clone(), Arc::new(n), 100, 1000);
    }
    let (a_bytes, total) = tier.usage("a");
    assert_eq!(total, 1000);
    assert_eq!(a_bytes, 0, "the oldest name was evicted first");
    // Too large for the bound: not kept, nothing else evicted.
    tier.insert(key(200), b.clone(), Arc::new(200), 5000, 10_000);
    assert!(!tier.contains(&key(200)));
    assert_eq!(tier.usage("b"), (1000, 1000));
    // Re-inserting a key replaces it without double counting.
    tier.insert(key(109), b.clone(), Arc::new(1), 100, 1000);
    assert_eq!(tier.usage("b"), (1000, 1000));
    assert!(tier.remove(&key(109)));
    assert_eq!(tier.usage("b"), (900, 900));
    assert_eq!(tier.keys(&b).len(), 9);
}

#[test]
fn log_parses_the_env_syntax() {
    assert_eq!(Log::parse("all"), Some(Log::ALL));
    assert_eq!(Log::parse("mem, misses"), Some(Log::MEMORY_HITS | Log::MISSES));
    assert_eq!(Log::parse("hits"), Some(Log::HITS));
    assert_eq!(Log::parse(""), Some(Log::NONE));
    assert_eq!(Log::parse("loud"), None);
    assert!(Log::HITS.includes(Status::Disk) && !Log::HITS.includes(Status::Miss));
    assert_eq!(format!("{:?}", Log::DISK_HITS | Log::MISSES), "Log(disk,misses)");
    assert_eq!(format!("[{:<14}]", Status::Memory), "[cached (mem)  ]");
}

#[test]
fn touch_finds_the_bucket_cacache_wrote() {
    // `Disk::bucket_path` re-derives cacache 13's bucket layout; if cacache moved its buckets,
    // last-use tracking would silently stop. This catches that.
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("unit-bucket").dir(dir.path());
    memo.put(&1u8, &2u8).unwrap();
    let key = memo.key_for::<u8, _>(&1u8).unwrap();
    let disk = Disk::open(dir.path()).unwrap();
    assert!(disk.bucket_path("unit-bucket", &key).is_file());
}

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

#[test]
fn args_rendering_is_bounded_and_readable() {
    use crate::ArgsEncoder as _;
    assert_eq!(crate::PostcardArgs.render(&(1, "two")), r#"[1,"two"]"#);
    let long = crate::PostcardArgs.render(&vec![123_456u32; 1_000_000]);
    assert!(long.starts_with("[123456,123456"), "{long}");
    assert!(long.len() <= 204, "{} bytes", long.len());
}

#[test]
fn a_disk_hit_refreshes_last_use() {
    let dir = tempfile::tempdir().unwrap();
    let memo = Memo::new("unit-touch").dir(dir.path()).mem_capacity(0);
    memo.put(&1u8, &2u8).unwrap();
    let key = memo.key_for::<u8, _>(&1u8).unwrap();
    let bucket = Disk::open(dir.path()).unwrap().bucket_path("unit-touch", &key);
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().append(true).open(&bucket).unwrap().set_modified(an_hour_ago).unwrap();
    assert_eq!(memo.get_with_status::<u8, _>(&1u8), Some((2, Status::Disk)));
    let used = std::fs::metadata(&bucket).unwrap().modified().unwrap();
    assert!(
        used > an_hour_ago + std::time::Duration::from_secs(3000),
        "last use was not refreshed"
    );
}

#[test]
fn manifest_paths_must_stay_inside_the_output_dir() {
    use crate::outputs::safe_relative;
    assert_eq!(safe_relative("a/b.rs"), Some(std::path::PathBuf::from("a/b.rs")));
    assert!(safe_relative("dir/file:with-colon.rs").is_some());
    for escaping in
        ["", "../x", "a/../../x", "/etc/passwd", "./a", "a/./b", "a\\..\\b", "a/..", "a//b"]
    {
        assert_eq!(safe_relative(escaping), None, "{escaping:?} was accepted");
    }
}

#[test]
fn stored_directives_name_the_build_directories_by_placeholder() {
    use crate::outputs::{expand_dirs, name_dirs};
    use std::path::Path;
    let (out, manifest) = (Path::new("/t/debug/build/x-1/out"), Path::new("/src/x"));
    let stored = name_dirs("rustc-link-search=native=/t/debug/build/x-1/out/lib", out, manifest);
    assert!(!stored.contains("/t/debug"), "{stored}");
    let (other_out, other_manifest) =
        (Path::new("/u/release/build/x-2/out"), Path::new("/home/me/x"));
    assert_eq!(
        expand_dirs(&stored, other_out, other_manifest),
        "rustc-link-search=native=/u/release/build/x-2/out/lib"
    );
    let rerun = name_dirs("rerun-if-changed=/src/x/c/api.h", out, manifest);
    assert_eq!(
        expand_dirs(&rerun, other_out, other_manifest),
        "rerun-if-changed=/home/me/x/c/api.h"
    );
    assert_eq!(name_dirs("rustc-link-lib=z", out, manifest), "rustc-link-lib=z");
}

#[cfg(feature = "macros")]
#[test]
fn the_default_memoize_name_is_the_same_from_the_function_and_its_companion() {
    use crate::__private::default_name;
    let cases = [
        ("square", "app::grid::square::MemoshelveSite", "app::grid::square_memo::MemoshelveSite"),
        ("fetch", "app::fetch::{{closure}}::MemoshelveSite", "app::fetch_memo::MemoshelveSite"),
        (
            "cells",
            "app::Grid<_>::cells::MemoshelveSite",
            "app::Grid<_>::cells_memo::MemoshelveSite",
        ),
    ];
    for (fn_name, in_function, in_companion) in cases {
        assert_eq!(default_name(in_function, fn_name), default_name(in_companion, fn_name));
    }
    assert_eq!(default_name("app::fetch::{{closure}}::MemoshelveSite", "fetch"), "app::fetch");
    assert_eq!(
        default_name("<app::Grid as app::Shape>::cells_memo::MemoshelveSite", "cells"),
        "<app::Grid as app::Shape>::cells"
    );
    assert_eq!(default_name("main_memo::MemoshelveSite", "main"), "main");
}
