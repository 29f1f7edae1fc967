//! Property tests over everything the library reads from disk: index records (torn, garbage,
//! or well-formed files with garbage records) and file-step manifests. Whatever the bytes, no
//! panic, no wrong value, no file written outside the output directory. Seeds: a real cache
//! made per case, and the committed corpus in `tests/corpus/` (index buckets of formats 1 and
//! 2, cacache's JSON lines, put where a record was).

use std::path::{Path, PathBuf};

use memoshelve_build::store::Store;
use memoshelve_build::{Memo, Step};
use proptest::prelude::*;

fn expected(arg: u64) -> Vec<u8> {
    (0..3000u64).map(|index| (arg * 31 + index * 7) as u8).collect()
}

/// A cache with two values (3000 bytes: blobs) and one file step, and its record files.
fn real_cache(dir: &Path) -> Vec<PathBuf> {
    let root = dir.join("cache");
    let memo = Memo::new("fuzz").dir(&root).mem_capacity(0);
    for arg in 0..2 {
        memo.call(&arg, || expected(arg));
    }
    Memo::new("fuzz-files").dir(&root).mem_capacity(0).outputs(dir.join("out")).call(&(), step);
    let mut buckets = Vec::new();
    let mut stack = vec![root.join("index")];
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
    let damage = store.check_index().unwrap();
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
    assert!(store.check_index().unwrap().is_empty(), "repair left damage");
    // Nothing appeared beside the cache and the output directory.
    let mut beside: Vec<_> =
        std::fs::read_dir(dir).unwrap().flatten().map(|entry| entry.file_name()).collect();
    beside.sort();
    assert_eq!(beside, ["cache", "out"]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// Raw damage: torn records, garbage, truncation, corpus files put where a real one was.
    #[test]
    fn damaged_records_never_panic_or_serve_wrong_values(
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

    /// Well-formed record files (their checksum recomputed) carrying damaged records: garbage
    /// fields, wrong sizes and hashes, manifests with hostile paths.
    #[test]
    fn well_formed_files_with_damaged_records_never_panic_or_serve_wrong_values(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let buckets = real_cache(dir.path());
        let target = &buckets[which % buckets.len()];
        let bytes = std::fs::read(target).unwrap();
        // Magic and format (12 bytes) stay; the record between them and the checksum is edited.
        let mut body = bytes[12..bytes.len() - 32].to_vec();
        mutate(&mut body, &edits);
        let mut forged = bytes[..12].to_vec();
        forged.extend_from_slice(&body);
        let checksum = blake3::hash(&forged);
        forged.extend_from_slice(checksum.as_bytes());
        std::fs::write(target, forged).unwrap();
        read_everything(dir.path());
    }
}
