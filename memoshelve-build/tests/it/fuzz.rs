//! Property tests over everything the library reads from disk: index buckets (torn, garbage,
//! or well-formed lines with garbage records) and file-step manifests. Whatever the bytes, no
//! panic, no wrong value, no file written outside the output directory. Seeds: a real cache
//! made per case, and the committed bucket corpus in `tests/corpus/`.

use std::path::{Path, PathBuf};

use memoshelve_build::store::Store;
use memoshelve_build::{Memo, Step};
use proptest::prelude::*;

fn expected(arg: u64) -> Vec<u8> {
    (0..3000u64).map(|index| (arg * 31 + index * 7) as u8).collect()
}

/// A cache with two values (3000 bytes: blobs) and one file step, and its bucket files.
fn real_cache(dir: &Path) -> Vec<PathBuf> {
    let root = dir.join("cache");
    let memo = Memo::new("fuzz").dir(&root).mem_capacity(0);
    for arg in 0..2 {
        memo.call(&arg, || expected(arg));
    }
    Memo::new("fuzz-files").dir(&root).mem_capacity(0).outputs(dir.join("out")).call(&(), step);
    let mut buckets = Vec::new();
    let mut stack = vec![root.join("index-v5")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else {
                buckets.push(entry.path());
            }
        }
    }
    buckets.sort();
    buckets
}

fn step(step: &mut Step) {
    std::fs::write(step.dir().join("gen.rs"), "pub const N: u8 = 1;\n").unwrap();
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut seeds: Vec<_> =
        std::fs::read_dir(dir).unwrap().flatten().map(|entry| entry.path()).collect();
    seeds.sort();
    seeds.into_iter().map(|path| std::fs::read(path).unwrap()).collect()
}

/// Byte edits: (position, byte, kind) with kind 0 = overwrite, 1 = truncate, 2 = insert.
fn mutate(bytes: &mut Vec<u8>, edits: &[(u16, u8, u8)]) {
    for &(position, byte, kind) in edits {
        let at = usize::from(position) % (bytes.len() + 1);
        match kind {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.truncate(at),
            _ => bytes.insert(at, byte),
        }
    }
}

/// Reads the damaged cache every way there is; asserts the invariants.
fn read_everything(dir: &Path) {
    let root = dir.join("cache");
    let store = Store::open(&root);
    let damage = store.check_index();
    if let Ok(entries) = store.entries(None) {
        for entry in &entries {
            let _ = store.verify(entry);
        }
    }
    let memo = Memo::new("fuzz").dir(&root).mem_capacity(0);
    for arg in 0..2u64 {
        if let Some(value) = memo.get::<Vec<u8>, _>(&arg) {
            assert_eq!(value, expected(arg), "a wrong value was served");
        }
    }
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    Memo::new("fuzz-files").dir(&root).mem_capacity(0).outputs(&out).call(&(), step);
    assert_eq!(std::fs::read_to_string(out.join("gen.rs")).unwrap(), "pub const N: u8 = 1;\n");
    let _ = store.repair_index(&damage);
    assert!(store.check_index().is_empty(), "repair left damage");
    // Nothing appeared beside the cache and the output directory.
    let mut beside: Vec<_> =
        std::fs::read_dir(dir).unwrap().flatten().map(|entry| entry.file_name()).collect();
    beside.sort();
    assert_eq!(beside, ["cache", "out"]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// Raw damage: torn lines, garbage, truncation, corpus buckets put where a real one was.
    #[test]
    fn damaged_buckets_never_panic_or_serve_wrong_values(
        which in 0usize..3,
        from_corpus in any::<bool>(),
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 0..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let buckets = real_cache(dir.path());
        let target = &buckets[which % buckets.len()];
        let mut bytes = if from_corpus {
            let corpus = corpus();
            corpus[which % corpus.len()].clone()
        } else {
            std::fs::read(target).unwrap()
        };
        mutate(&mut bytes, &edits);
        std::fs::write(target, bytes).unwrap();
        read_everything(dir.path());
    }

    /// Well-formed lines (their hash recomputed) carrying damaged records: garbage metadata,
    /// wrong sizes and hashes, manifests with hostile paths.
    #[test]
    fn well_formed_lines_with_damaged_records_never_panic_or_serve_wrong_values(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let buckets = real_cache(dir.path());
        let target = &buckets[which % buckets.len()];
        let text = std::fs::read_to_string(target).unwrap();
        let line = text.lines().rfind(|line| !line.is_empty()).unwrap();
        let (_, json) = line.split_once('\t').unwrap();
        let mut json = json.as_bytes().to_vec();
        mutate(&mut json, &edits);
        let json = String::from_utf8_lossy(&json).replace(['\t', '\n'], " ");
        let hash: String = sha2::Sha256::digest(json.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(target, format!("{text}\n{hash}\t{json}")).unwrap();
        read_everything(dir.path());
    }
}
