//! Unit tests of the crate internals: memory-tier accounting, log parsing, the disk layout.

use std::sync::Arc;

use crate::key::{self, KeyPrefix};
use crate::memory::{MemoryTier, Namespace};
use crate::tier::disk::Disk;
use crate::{Key, Log, Memo, Status};

fn key(n: u32) -> Key {
    let args = n.to_le_bytes();
    let prefix = KeyPrefix { name: "unit", version: "", type_name: "u32", inputs: &[] }.digest();
    key::key_from(&prefix, &args)
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

/// The memory tier against a plain list in order of use, over random inserts, gets and
/// removes: the same slots, bytes, eviction order and values; its use queue stays bounded.
#[test]
fn memory_tier_matches_a_simple_lru_model() {
    use proptest::prelude::*;
    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8, u8, u64),
        Get(u8),
        Remove(u8),
    }
    let op = prop_oneof![
        1 => (0u8..24, 0u8..3, 1u64..160).prop_map(|(k, n, b)| Op::Insert(k, n, b)),
        3 => (0u8..24).prop_map(Op::Get),
        1 => (0u8..24).prop_map(Op::Remove),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(200));
    runner
        .run(&proptest::collection::vec(op, 1..400), |ops| {
            let (capacity, name_capacity) = (1000, 450);
            let mut tier = MemoryTier::new(capacity);
            let names: Vec<Arc<Namespace>> = (0..3).map(|n| namespace(&format!("n{n}"))).collect();
            // (key, name, bytes, value), least recently used first.
            let mut model: Vec<(u8, u8, u64, usize)> = Vec::new();
            for (step, op) in ops.iter().enumerate() {
                match *op {
                    Op::Insert(k, n, bytes) => {
                        tier.insert(
                            key(k.into()),
                            names[usize::from(n)].clone(),
                            Arc::new(step),
                            bytes,
                            name_capacity,
                        );
                        model.retain(|entry| entry.0 != k);
                        if bytes <= name_capacity && bytes <= capacity {
                            while model.iter().filter(|e| e.1 == n).map(|e| e.2).sum::<u64>()
                                + bytes
                                > name_capacity
                            {
                                let oldest = model.iter().position(|e| e.1 == n).unwrap();
                                model.remove(oldest);
                            }
                            while model.iter().map(|e| e.2).sum::<u64>() + bytes > capacity {
                                model.remove(0);
                            }
                            model.push((k, n, bytes, step));
                        }
                    }
                    Op::Get(k) => {
                        let got = tier
                            .get(&key(k.into()))
                            .map(|value| *value.downcast::<usize>().unwrap());
                        let position = model.iter().position(|e| e.0 == k);
                        prop_assert_eq!(
                            got,
                            position.map(|at| model[at].3),
                            "get {} at {}",
                            k,
                            step
                        );
                        if let Some(at) = position {
                            let entry = model.remove(at);
                            model.push(entry);
                        }
                    }
                    Op::Remove(k) => {
                        let had = model.iter().any(|e| e.0 == k);
                        model.retain(|e| e.0 != k);
                        prop_assert_eq!(tier.remove(&key(k.into())), had);
                    }
                }
                for (n, name) in names.iter().enumerate() {
                    let expected: Vec<Key> = model
                        .iter()
                        .filter(|e| usize::from(e.1) == n)
                        .map(|e| key(e.0.into()))
                        .collect();
                    prop_assert_eq!(tier.keys(name), expected, "name {} after step {}", n, step);
                }
                let total: u64 = model.iter().map(|e| e.2).sum();
                prop_assert_eq!(tier.usage("n0").1, total);
                let (queued, slots) = tier.queued();
                prop_assert_eq!(slots, model.len());
                prop_assert!(queued <= 2 * slots + 33, "{} queued for {} slots", queued, slots);
            }
            Ok(())
        })
        .unwrap();
}

/// A small file is read whole: with its size from an fstat (stopping there), with a size that
/// is out of date because the file grew (read on to the end), and without one.
#[test]
fn small_files_are_read_whole_with_or_without_their_size() {
    use crate::tier::disk::files::read_small;
    let dir = tempfile::tempdir().unwrap();
    for len in [0usize, 1, 600, 2047, 2048, 2049, 4095, 4096, 4097, 10_000, 40_000] {
        let bytes: Vec<u8> = (0..len).map(|index| (index % 251) as u8).collect();
        let path = dir.path().join(format!("{len}.bin"));
        std::fs::write(&path, &bytes).unwrap();
        let open = || std::fs::File::open(&path).unwrap();
        assert!(read_small(&mut open(), Some(len as u64)).unwrap() == bytes, "{len}, sized");
        assert!(read_small(&mut open(), None).unwrap() == bytes, "{len}, unsized");
        let stale = len.saturating_sub(100) as u64;
        assert!(read_small(&mut open(), Some(stale)).unwrap() == bytes, "{len}, grown");
    }
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
    let bucket = Disk::open(dir.path()).unwrap().record_path(&key);
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
    assert_eq!(safe_relative(b"a/b.rs"), Some(std::path::PathBuf::from("a/b.rs")));
    assert!(safe_relative(b"dir/file:with-colon.rs").is_some());
    #[cfg(unix)]
    assert!(safe_relative(b"caf\xe9/\xff.rs").is_some(), "names are bytes on Unix");
    for escaping in
        ["", "../x", "a/../../x", "/etc/passwd", "./a", "a/./b", "a\\..\\b", "a/..", "a//b", "a\0b"]
    {
        assert_eq!(safe_relative(escaping.as_bytes()), None, "{escaping:?} was accepted");
    }
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

/// Every string leaf of a document as the `toml` crate reads it, with the reader's path scheme
/// (array elements, also the tables of an array of tables, under `[]`).
fn toml_crate_strings(text: &str) -> Option<Vec<(Vec<String>, String)>> {
    fn walk(path: &mut Vec<String>, value: &toml::Value, out: &mut Vec<(Vec<String>, String)>) {
        match value {
            toml::Value::String(text) => out.push((path.clone(), text.clone())),
            toml::Value::Table(table) => {
                for (key, value) in table {
                    path.push(key.clone());
                    walk(path, value, out);
                    path.pop();
                }
            }
            toml::Value::Array(items) => {
                path.push("[]".to_owned());
                for item in items {
                    walk(path, item, out);
                }
                path.pop();
            }
            _ => {}
        }
    }
    let table: toml::Table = text.parse().ok()?;
    let mut out = Vec::new();
    walk(&mut Vec::new(), &toml::Value::Table(table), &mut out);
    out.sort();
    Some(out)
}

fn reader_strings(text: &str) -> Vec<(Vec<String>, String)> {
    let mut out: Vec<_> = crate::toml_reader::parse(text)
        .unwrap_or_else(|err| panic!("the reader rejects a valid document: {err}\n{text}"))
        .into_iter()
        .filter_map(|leaf| match leaf.value {
            crate::toml_reader::Value::String(text) => Some((leaf.path, text)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

const TRICKY_TOML: &str = r#"
# A header inside strings and comments must not start a table.
[package]
name = "tricky"   # [workspace.metadata.memoshelve]
description = """
[workspace.metadata.memoshelve]
dir = "not this one" \
  continued ""quoted"" """
notes = '''
[package.metadata.memoshelve]
dir = 'nor this' '''
"quoted key" = 'C:\path\no\escapes'
escapes = "tab\there \"q\" \u00e9 \U0001F600 back\\slash"
keywords = ["a", "b,c", 'd]', """e
f""", [ "nested" ], { inner = "x" }]
dates = [1979-05-27 07:32:00Z, 1979-05-27, 07:32:00]
numbers = [1_000, +3.5e2, 0xff, inf, -nan, true]
empty-inline = {}

[[bin]]
name = "a"
path = "dir"

[workspace]
members = [
  "one", # comment, with a ] bracket
  "two",
]

[workspace.metadata]
memoshelve = { dir = "inline wins" }

[package.metadata.'memoshelve']
"dir" = "quoted table and key"

[target.'cfg(unix)'.dependencies]
libc = { version = "0.2", default-features = false }
dotted.key.here = "deep"
"#;

#[test]
fn the_toml_reader_agrees_with_the_toml_crate_on_every_string() {
    let mut corpus = vec![TRICKY_TOML.to_owned()];
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for manifest in [
        "Cargo.toml",
        "memoshelve-build/Cargo.toml",
        "cargo-memoshelve/Cargo.toml",
        "examples/Cargo.toml",
    ] {
        corpus.push(std::fs::read_to_string(repo.join(manifest)).unwrap());
    }
    // Real-world manifests of every crate this build downloaded.
    let registry = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cargo")))
        .map(|home| home.join("registry/src"));
    for index in
        registry.iter().flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten()).flatten()
    {
        for krate in std::fs::read_dir(index.path()).into_iter().flatten().flatten().take(400) {
            if let Ok(text) = std::fs::read_to_string(krate.path().join("Cargo.toml.orig")) {
                corpus.push(text);
            }
        }
    }
    let mut compared = 0;
    for text in &corpus {
        let Some(expected) = toml_crate_strings(text) else { continue };
        assert_eq!(reader_strings(text), expected, "in document:\n{text}");
        compared += 1;
    }
    assert!(compared > 5, "only {compared} documents compared");
    let tricky = reader_strings(TRICKY_TOML);
    let get = |path: &str| {
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        tricky.iter().find(|(at, _)| *at == path).map(|(_, value)| value.as_str())
    };
    assert_eq!(get("workspace.metadata.memoshelve.dir"), Some("inline wins"));
    assert_eq!(get("package.metadata.memoshelve.dir"), Some("quoted table and key"));
    assert_eq!(get("package.escapes"), Some("tab\there \"q\" \u{e9} \u{1F600} back\\slash"));
}

#[test]
fn the_toml_reader_reports_bad_documents_by_line_and_never_panics() {
    for (text, line) in [
        ("a = \"unterminated\n", 1),
        ("[ok]\nb = 1\nc = \"\\q\"\n", 3),
        ("x = 1 2\n", 1),
        ("[t\n", 1),
        ("k = '''never closed", 1),
        ("\n\n= 3", 3),
    ] {
        let err = crate::toml_reader::parse(text).unwrap_err();
        assert!(err.starts_with(&format!("line {line}:")), "{text:?} gave {err:?}");
    }
    // Mutations of a real document: any outcome but a panic.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let bytes = TRICKY_TOML.as_bytes();
    for _ in 0..3000 {
        let mut doc = bytes.to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() % doc.len() as u64) as usize;
            match next() % 3 {
                0 => {
                    let alphabet = b"\"'[]{}=,.\\\n#x1 ";
                    doc[at] = alphabet[(next() % alphabet.len() as u64) as usize];
                }
                1 => {
                    doc.remove(at);
                }
                _ => doc.truncate(at),
            }
            if doc.is_empty() {
                break;
            }
        }
        if let Ok(text) = std::str::from_utf8(&doc) {
            let _ = crate::toml_reader::parse(text);
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// The `Vec<u8>` fast path writes postcard's bytes and reads postcard's bytes: the same
    /// value, or an error where postcard has one (a cut-off buffer), whatever follows.
    #[test]
    fn the_byte_vector_codec_is_postcard_byte_for_byte(
        value in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        big_len in 0usize..300_000,
        trailing in proptest::collection::vec(proptest::num::u8::ANY, 0..4),
        cut in 0usize..700,
    ) {
        let big = vec![7u8; big_len];
        for value in [&value, &big] {
            let ours = crate::codec::encode(value).unwrap();
            proptest::prop_assert_eq!(&ours, &postcard::to_allocvec(value).unwrap());
            let mut with_trailing = ours.clone();
            with_trailing.extend_from_slice(&trailing);
            let decoded: Vec<u8> = crate::codec::decode(with_trailing).unwrap();
            proptest::prop_assert_eq!(&decoded, value);
            // Read in two parts: the prefix apart, or cut anywhere, the same value.
            let skip = crate::codec::prefix_len::<Vec<u8>>(ours.len() as u64);
            proptest::prop_assert!(skip > 0);
            for at in [skip, cut.min(ours.len())] {
                let parts: Vec<u8> =
                    crate::codec::decode_parts(ours[..at].to_vec(), ours[at..].to_vec()).unwrap();
                proptest::prop_assert_eq!(&parts, value);
            }
            let cut = cut.min(ours.len());
            let theirs = postcard::from_bytes::<Vec<u8>>(&ours[..cut]);
            let mine = crate::codec::decode::<Vec<u8>>(ours[..cut].to_vec());
            proptest::prop_assert_eq!(mine.is_ok(), theirs.is_ok(), "cut at {}", cut);
        }
        // Any other type goes through postcard itself.
        let text = String::from_utf8_lossy(&value).into_owned();
        let encoded = crate::codec::encode(&text).unwrap();
        proptest::prop_assert_eq!(&encoded, &postcard::to_allocvec(&text).unwrap());
        proptest::prop_assert_eq!(crate::codec::decode::<String>(encoded).unwrap(), text);
    }

    /// Garbage never panics the fast path, and it agrees with postcard on what is readable.
    #[test]
    fn the_byte_vector_codec_reads_garbage_as_postcard_does(
        garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
    ) {
        let theirs = postcard::from_bytes::<Vec<u8>>(&garbage).ok();
        let mine = crate::codec::decode::<Vec<u8>>(garbage).ok();
        proptest::prop_assert_eq!(mine, theirs);
    }
}

#[test]
fn split_hashing_is_blake3_of_the_whole() {
    use crate::hashing::{PIPELINE_MIN, hash_file, read_hashed, split_hash_on};
    let dir = tempfile::tempdir().unwrap();
    // Small files are hashed from one buffer of their size.
    for len in [0, 1, 10 << 10, (256 << 10) - 1, 256 << 10, (256 << 10) + 1, 1 << 20] {
        let bytes: Vec<u8> = (0..len).map(|index| (index * 7 % 251) as u8).collect();
        let path = dir.path().join(format!("small-{len}.bin"));
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(hash_file(&path).unwrap(), blake3::hash(&bytes), "hash_file, {len} bytes");
    }
    let min = PIPELINE_MIN as usize;
    for len in [min - 1, min, min + 1, 3 * min + 1024, 5 * min - 777, 9 << 20] {
        let bytes: Vec<u8> = (0..len).map(|index| (index * 31 % 253) as u8).collect();
        let path = dir.path().join(format!("{len}.bin"));
        std::fs::write(&path, &bytes).unwrap();
        let expected = blake3::hash(&bytes);
        assert_eq!(hash_file(&path).unwrap(), expected, "hash_file, {len} bytes");
        let copied = dir.path().join(format!("{len}.copied"));
        let (written, hash) = crate::hashing::copy_hashed(&path, &copied).unwrap();
        assert_eq!((written, hash), (len as u64, expected), "copy_hashed, {len} bytes");
        assert!(std::fs::read(&copied).unwrap() == bytes, "copy_hashed copies, {len} bytes");
        let (read, hash) = read_hashed(&path).unwrap();
        assert_eq!(hash, expected, "read_hashed, {len} bytes");
        assert!(read == bytes, "read_hashed returns the bytes, {len} bytes");
        let file = std::fs::File::open(&path).unwrap();
        for threads in [2, 3, 4, 8] {
            let mut kept = vec![0u8; len];
            let split = split_hash_on(threads, &file, len as u64, Some(&mut kept), None).unwrap();
            assert_eq!(split, Some(expected), "{threads} threads, {len} bytes, kept");
            assert!(kept == bytes, "{threads} threads, {len} bytes: the bytes kept");
            let copy = dir.path().join(format!("{len}-{threads}.copy"));
            let sink = std::fs::File::create(&copy).unwrap();
            let split = split_hash_on(threads, &file, len as u64, None, Some(&sink)).unwrap();
            assert_eq!(split, Some(expected), "{threads} threads, {len} bytes");
            assert!(std::fs::read(&copy).unwrap() == bytes, "{threads} threads, {len} bytes: copy");
            for skip in [1, 3, 10] {
                let mut rest = vec![0u8; len - skip];
                let split = crate::hashing::split_hash_skipping(
                    threads,
                    &file,
                    len as u64,
                    Some((&mut rest, skip)),
                    None,
                )
                .unwrap();
                assert_eq!(split, Some(expected), "{threads} threads, {len} bytes, skip {skip}");
                assert!(rest == bytes[skip..], "{threads} threads, {len} bytes: kept after {skip}");
            }
        }
        for skip in [0, 1, 9] {
            let (head, rest, hash) = crate::hashing::read_hashed_parts(&path, skip).unwrap();
            assert_eq!(hash, expected, "read_hashed_parts, {len} bytes, skip {skip}");
            assert!(head == bytes[..skip] && rest == bytes[skip..], "parts, {len} bytes, {skip}");
            // On the threads of a parallel map there is one thread each: the pipeline instead.
            for (head, rest, hash) in crate::parallel::map(&[(); 2], |()| {
                crate::hashing::read_hashed_parts(&path, skip).unwrap()
            }) {
                assert_eq!(hash, expected, "one thread, {len} bytes, skip {skip}");
                assert!(
                    head == bytes[..skip] && rest == bytes[skip..],
                    "one thread, {len}, {skip}"
                );
            }
        }
    }
    // Small files, read whole in one go, the prefix apart; a file shorter than its prefix.
    for len in [0usize, 1, 5, 1024, 1025, 300_000] {
        let bytes: Vec<u8> = (0..len).map(|index| (index * 13 % 241) as u8).collect();
        let path = dir.path().join(format!("parts-{len}.bin"));
        std::fs::write(&path, &bytes).unwrap();
        for skip in [0, 1, 3, 9] {
            let (head, rest, hash) = crate::hashing::read_hashed_parts(&path, skip).unwrap();
            assert_eq!(hash, blake3::hash(&bytes), "{len} bytes, skip {skip}");
            let cut = skip.min(len);
            assert!(head == bytes[..cut] && rest == bytes[cut..], "{len} bytes, skip {skip}");
        }
    }
}

/// A large file streamed through the reading thread comes whole and in order; a consumer that
/// stops early gets its error back and the reader stops (with it left running, this hangs).
/// The same on the threads of a parallel map, where `hash_file` and `copy_hashed` stream.
#[test]
fn a_streamed_read_is_whole_and_one_that_stops_early_stops_its_reader() {
    use crate::hashing::{PIPELINE_MIN, stream};
    let dir = tempfile::tempdir().unwrap();
    let len = 3 * PIPELINE_MIN as usize + 12_345;
    let bytes: Vec<u8> = (0..len).map(|index| (index * 17 % 239) as u8).collect();
    let path = dir.path().join("large.bin");
    std::fs::write(&path, &bytes).unwrap();
    let mut read = Vec::new();
    stream(std::fs::File::open(&path).unwrap(), |chunk| {
        read.extend_from_slice(chunk);
        Ok(())
    })
    .unwrap();
    assert!(read == bytes, "streamed bytes differ");
    let mut calls = 0;
    let stopped = stream(std::fs::File::open(&path).unwrap(), |_| {
        calls += 1;
        if calls == 2 { Err(std::io::Error::other("enough")) } else { Ok(()) }
    });
    assert_eq!(stopped.unwrap_err().to_string(), "enough");
    assert_eq!(calls, 2);
    let expected = blake3::hash(&bytes);
    for (index, (hash, copied)) in crate::parallel::map(&[0, 1], |index| {
        let copy = dir.path().join(format!("copy-{index}"));
        let hash = crate::hashing::hash_file(&path).unwrap();
        (hash, crate::hashing::copy_hashed(&path, &copy).unwrap())
    })
    .into_iter()
    .enumerate()
    {
        assert_eq!((hash, copied), (expected, (len as u64, expected)), "thread {index}");
        let copy = std::fs::read(dir.path().join(format!("copy-{index}"))).unwrap();
        assert!(copy == bytes, "copy {index} differs");
    }
}

/// The part of a buffer advised to take huge pages is exactly its whole 2 MiB pages.
#[test]
fn huge_range_is_the_whole_huge_pages_inside() {
    use crate::hashing::huge_range;
    const HUGE: usize = 2 << 20;
    assert_eq!(huge_range(HUGE, 3 * HUGE), Some((0, 3 * HUGE)));
    assert_eq!(huge_range(HUGE + 16, 3 * HUGE), Some((HUGE - 16, 2 * HUGE)));
    assert_eq!(huge_range(HUGE - 1, HUGE + 1), Some((1, HUGE)));
    assert_eq!(huge_range(HUGE - 1, HUGE), None);
    assert_eq!(huge_range(HUGE + 1, HUGE), None);
    assert_eq!(huge_range(16, 100), None);
    assert_eq!(huge_range(usize::MAX - 10, 5), None);
    assert_eq!(huge_range(HUGE, usize::MAX), None);
}

/// Where Linux gives huge pages on request, a buffer advised by `huge_pages` is marked for
/// them (the `hg` flag of its mapping in /proc/self/smaps: the advice itself; whether the
/// kernel then finds free huge pages depends on the machine's memory, so AnonHugePages would
/// make a flaky test), and its content is whatever is written to it.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64")
))]
#[test]
fn advised_buffers_are_backed_by_huge_pages() {
    let enabled = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
    let mut buffer = vec![0u8; 8 << 20];
    crate::hashing::huge_pages(&mut buffer);
    for (index, byte) in buffer.iter_mut().enumerate() {
        *byte = (index % 251) as u8;
    }
    assert!(buffer.iter().enumerate().all(|(index, byte)| *byte == (index % 251) as u8));
    if !enabled.is_ok_and(|modes| modes.contains("[madvise]") || modes.contains("[always]")) {
        return; // huge pages off on this machine: the advice is refused, nothing to see
    }
    let address = buffer.as_ptr() as usize + (2 << 20);
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    let mut flags = None;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((from, to)) = range.split_once('-')
            && let (Ok(from), Ok(to)) =
                (usize::from_str_radix(from, 16), usize::from_str_radix(to, 16))
        {
            inside = (from..to).contains(&address);
        } else if inside && let Some(listed) = line.strip_prefix("VmFlags:") {
            flags = Some(listed.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
        }
    }
    let flags = flags.expect("the buffer's mapping and its VmFlags in /proc/self/smaps");
    assert!(flags.iter().any(|flag| flag == "hg"), "not advised for huge pages: {flags:?}");
}

#[test]
fn parallel_map_keeps_order_and_runs_nested_work_on_its_own_thread() {
    let items: Vec<u32> = (0..1000).collect();
    let nested_threads = std::sync::Mutex::new(Vec::new());
    let out = crate::parallel::map(&items, |item| {
        nested_threads.lock().unwrap().push(crate::parallel::threads());
        item * 2
    });
    assert_eq!(out, items.iter().map(|item| item * 2).collect::<Vec<_>>());
    if crate::parallel::threads() > 1 {
        assert!(nested_threads.into_inner().unwrap().iter().all(|&threads| threads == 1));
    }
    let (left, right) = crate::parallel::join(|| 1 + 1, || 2 + 2);
    assert_eq!((left, right), (2, 4));
    let panicked = std::panic::catch_unwind(|| {
        crate::parallel::map(&items, |item| assert!(*item != 500, "item 500"));
    });
    assert!(panicked.is_err(), "a panic in the work reaches the caller");
}

/// A toolchain's `rustc -vV` is run once and then read from the cache root, until the binary
/// or its driver library changes; a compiler without a toolchain's `lib/` is run every time.
#[cfg(unix)]
#[test]
fn the_compiler_version_is_kept_until_its_toolchain_changes() {
    use std::os::unix::fs::PermissionsExt as _;

    use crate::cargo::rustc_version_of;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let toolchain = dir.path().join("toolchain");
    std::fs::create_dir_all(toolchain.join("bin")).unwrap();
    std::fs::create_dir_all(toolchain.join("lib")).unwrap();
    let runs = dir.path().join("runs");
    let rustc = toolchain.join("bin/rustc");
    let script = |release: &str| {
        format!("#!/bin/sh\necho run >> '{}'\necho 'rustc {release}'\n", runs.display())
    };
    std::fs::write(&rustc, script("1.0.0")).unwrap();
    std::fs::set_permissions(&rustc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let driver = toolchain.join("lib/librustc_driver-0123.so");
    std::fs::write(&driver, "driver").unwrap();
    let count = || std::fs::read_to_string(&runs).unwrap_or_default().lines().count();

    assert_eq!(rustc_version_of(&rustc, Some(&root)).as_deref(), Some("rustc 1.0.0"));
    assert_eq!(rustc_version_of(&rustc, Some(&root)).as_deref(), Some("rustc 1.0.0"));
    assert_eq!(count(), 1, "the second call reads the kept version");

    // A new driver library (a toolchain updated in place): run again.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options().write(true).open(&driver).unwrap().set_modified(later).unwrap();
    assert_eq!(rustc_version_of(&rustc, Some(&root)).as_deref(), Some("rustc 1.0.0"));
    assert_eq!(count(), 2);

    // A new binary of another size: run again, and its version is the new one.
    std::fs::write(&rustc, script("1.10.0")).unwrap();
    assert_eq!(rustc_version_of(&rustc, Some(&root)).as_deref(), Some("rustc 1.10.0"));
    assert_eq!(count(), 3);

    // A kept file that is torn or foreign is not used.
    for kept in std::fs::read_dir(root.join(crate::cargo::RUSTC_VERSIONS)).unwrap() {
        std::fs::write(kept.unwrap().path(), "rustc 9.9.9").unwrap();
    }
    assert_eq!(rustc_version_of(&rustc, Some(&root)).as_deref(), Some("rustc 1.10.0"));
    assert_eq!(count(), 4);

    // No cache root, or no toolchain `lib/` beside the binary: run every time.
    assert_eq!(rustc_version_of(&rustc, None).as_deref(), Some("rustc 1.10.0"));
    std::fs::remove_file(&driver).unwrap();
    assert_eq!(rustc_version_of(&rustc, Some(&root)).as_deref(), Some("rustc 1.10.0"));
    assert_eq!(rustc_version_of(&rustc, Some(&root)).as_deref(), Some("rustc 1.10.0"));
    assert_eq!(count(), 7);
}

/// A path already in normal form is named by its text; any other by its components joined with
/// `/`: both ways give the same name.
#[test]
fn key_paths_are_the_components_joined() {
    use std::path::Path;
    let by_components = |path: &Path, base: &Path| {
        crate::inputs::components_joined(path.strip_prefix(base).unwrap_or(path))
    };
    let base = Path::new("/work/pkg");
    for path in [
        "/work/pkg/src/a.rs",
        "/work/pkg//src/a.rs",
        "/work/pkg/./src/./a.rs",
        "/work/pkg/src/",
        "/work/pkg/src/.",
        "/work/pkg/../other/b.h",
        "/elsewhere/c.h",
        "//elsewhere//c.h",
        "/",
        "relative/d.proto",
        "./relative/d.proto",
        "relative//d.proto/",
        ".",
        "",
        "x/./y",
        "x/..",
        "a b/ü.txt",
        "back\\slash",
        "/work/pkg",
    ] {
        let path = Path::new(path);
        assert_eq!(
            crate::inputs::key_path(path, base),
            by_components(path, base),
            "{}",
            path.display()
        );
    }
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

/// The event log: per-process files, `events.log`'s folded and legacy lines, a compaction that
/// stopped before deleting what it folded (never counted twice), a half-written last line, and
/// a file still held by its writer (left alone until it is let go).
#[test]
fn event_files_are_folded_once_and_only_when_their_writer_has_gone() {
    use crate::events::{EVENT_LOG, EVENTS_DIR, fold, parse, read_all};
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
    std::fs::write(events.join("ended.log"), "400\tdisk\tn\tK1\n400\tdisk\tn\tK2\n500\tdisk\tn")
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
    assert!(log.contains("#folded\tended.log\n") && log.contains("#folded\tgone.log\n"), "{log}");
    assert!(log.contains("400\tdisk\tn\tK1\t2\n"), "the last event's time and the count: {log}");

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
    let appenders = crate::events::Appenders::default();
    let key = crate::key::Key::from_hex(&"07".repeat(32)).unwrap();
    for dir in &dirs {
        let disk = Disk::open(dir.path()).unwrap();
        for tier in ["disk", "miss"] {
            crate::events::append_with(&appenders, &disk, &format!("1\t{tier}\tn\t{key}\n"));
        }
    }
    let files = |dir: &tempfile::TempDir| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir.path().join(crate::events::EVENTS_DIR))
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
    assert_eq!(crate::events::fold(dirs[0].path(), &live).unwrap(), (2, 2));
    assert_eq!(crate::events::fold(dirs[16].path(), &live).unwrap(), (0, 0));
}

/// The arguments' bytes are postcard's, byte for byte, whichever way a run of bytes is copied
/// (pushed one by one up to 16, extended beyond): keys must not depend on that.
#[test]
fn argument_bytes_are_postcards_for_every_length() {
    use crate::ArgsEncoder as _;
    for len in 0..80usize {
        let text: String = (0..len).map(|index| char::from(b'a' + (index % 26) as u8)).collect();
        let bytes: Vec<u8> = (0..len).map(|index| (index * 37) as u8).collect();
        let args = (len as u64, u64::MAX - len as u64, -(len as i64), text, bytes, [len as u8; 20]);
        assert_eq!(
            crate::PostcardArgs.encode(&args).unwrap(),
            postcard::to_allocvec(&args).unwrap(),
            "{len}"
        );
    }
}

/// Equal keys hash equally, and keys differing anywhere in their first eight bytes hash apart
/// (the memory tier's map uses those eight bytes).
#[test]
fn a_keys_hash_is_its_first_eight_bytes() {
    use std::hash::BuildHasher as _;
    let hasher = std::collections::hash_map::RandomState::new();
    let base = [0x5au8; 32];
    let key = crate::key::Key::from_hex(&crate::key::hex_lower(&base)).unwrap();
    let same = crate::key::Key::from_hex(&crate::key::hex_lower(&base)).unwrap();
    assert_eq!(hasher.hash_one(key), hasher.hash_one(same));
    for index in 0..8 {
        let mut bytes = base;
        bytes[index] ^= 1;
        let other = crate::key::Key::from_hex(&crate::key::hex_lower(&bytes)).unwrap();
        assert_ne!(hasher.hash_one(key), hasher.hash_one(other), "byte {index}");
    }
}
