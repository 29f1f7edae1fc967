//! File steps: captured on a miss, restored byte-identical on a hit, never served stale.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use memoshelve_build::{Memo, Status, Step};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

fn set_mtime(path: &Path, time: SystemTime) {
    fs::File::options().append(true).open(path).unwrap().set_modified(time).unwrap();
}

/// A generator: three files, one nested and binary, one executable.
fn generate(step: &mut Step) -> usize {
    let dir = step.dir();
    fs::write(dir.join("parser.rs"), "pub fn parse() {}\n").unwrap();
    fs::create_dir_all(dir.join("tables")).unwrap();
    fs::write(
        dir.join("tables/action.bin"),
        (0..100_000u32).flat_map(u32::to_le_bytes).collect::<Vec<u8>>(),
    )
    .unwrap();
    fs::write(dir.join("run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(dir.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    3
}

#[test]
fn files_are_restored_byte_identical_with_modes_without_running_the_step() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let runs = AtomicUsize::new(0);
    let memo = Memo::new("outputs-restore").dir(cache.path());
    let step = |step: &mut Step| {
        runs.fetch_add(1, Ordering::SeqCst);
        generate(step)
    };
    assert_eq!(memo.outputs(out.path()).call_with_status(&"grammar", step), (3, Status::Miss));
    let originals: Vec<(String, Vec<u8>, u32)> = ["parser.rs", "tables/action.bin", "run.sh"]
        .iter()
        .map(|name| {
            (
                name.to_string(),
                fs::read(out.path().join(name)).unwrap(),
                mode(&out.path().join(name)),
            )
        })
        .collect();
    // As after `cargo clean`: the output directory is gone.
    fs::remove_dir_all(out.path()).unwrap();
    assert_eq!(memo.outputs(out.path()).call_with_status(&"grammar", step), (3, Status::Disk));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the step ran on a hit");
    for (name, bytes, file_mode) in originals {
        assert_eq!(fs::read(out.path().join(&name)).unwrap(), bytes, "{name} differs");
        assert_eq!(mode(&out.path().join(&name)), file_mode, "{name} lost its mode");
    }
    assert_eq!(mode(&out.path().join("run.sh")), 0o755);
}

#[test]
fn identical_files_are_left_alone_and_changed_ones_get_a_fresh_mtime() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let memo = Memo::new("outputs-mtime").dir(cache.path());
    memo.outputs(out.path()).call(&1, generate);
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let same = out.path().join("parser.rs");
    let changed = out.path().join("tables/action.bin");
    set_mtime(&same, an_hour_ago);
    fs::write(&changed, "stale bytes from an older build").unwrap();
    set_mtime(&changed, an_hour_ago);
    assert_eq!(
        memo.outputs(out.path()).call_with_status(&1, |_| -> usize { unreachable!() }).1,
        Status::Disk
    );
    assert_eq!(mtime(&same), an_hour_ago, "an identical file was rewritten (needless recompiles)");
    assert!(
        mtime(&changed) > an_hour_ago + Duration::from_secs(3000),
        "a restored file kept an old mtime"
    );
    assert_eq!(fs::read(&changed).unwrap().len(), 400_000);
}

#[test]
fn another_steps_files_are_not_stored_and_pre_existing_files_are_never_overwritten() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // Another memoized step shares the directory: its file is its own.
    Memo::new("outputs-neighbour").dir(cache.path()).outputs(out.path()).call(&1, |step| {
        fs::write(step.dir().join("neighbour.rs"), "// the other step").unwrap();
    });
    // The build script writes a file of its own before the step.
    fs::write(out.path().join("script.rs"), "// written by build.rs, version 1").unwrap();
    let memo = Memo::new("outputs-ours").dir(cache.path());
    memo.outputs(out.path()).call(&1, generate);

    // On a hit, the script's newer file is not overwritten with the captured one.
    fs::write(out.path().join("script.rs"), "// written by build.rs, version 2").unwrap();
    fs::remove_file(out.path().join("parser.rs")).unwrap();
    assert_eq!(memo.outputs(out.path()).call_with_status(&1, generate).1, Status::Disk);
    assert_eq!(
        fs::read_to_string(out.path().join("script.rs")).unwrap(),
        "// written by build.rs, version 2"
    );
    assert!(out.path().join("parser.rs").exists());

    // After a clean, the step's files come back, and a pre-existing one only because it is missing;
    // the neighbour's file is not this step's to restore.
    fs::remove_dir_all(out.path()).unwrap();
    assert_eq!(memo.outputs(out.path()).call_with_status(&1, generate).1, Status::Disk);
    assert!(out.path().join("parser.rs").exists());
    assert_eq!(
        fs::read_to_string(out.path().join("script.rs")).unwrap(),
        "// written by build.rs, version 1"
    );
    assert!(!out.path().join("neighbour.rs").exists());
}

/// Like prost-build: writes a file only when its content would change.
fn write_if_changed(path: &Path, content: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(content) {
        fs::write(path, content).unwrap();
    }
}

#[test]
fn a_generator_that_skips_identical_writes_is_still_restored_correctly() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let memo = Memo::new("outputs-skip-identical").dir(cache.path());
    let generate = |schema: &'static str| {
        move |step: &mut Step| {
            write_if_changed(&step.dir().join("shop.rs"), &format!("// schema {schema}"))
        }
    };
    // An earlier build (before memoshelve) left schema A's output behind.
    fs::write(out.path().join("shop.rs"), "// schema A").unwrap();
    assert_eq!(memo.outputs(out.path()).call_with_status(&"A", generate("A")).1, Status::Miss);
    assert_eq!(memo.outputs(out.path()).call_with_status(&"B", generate("B")).1, Status::Miss);
    assert_eq!(fs::read_to_string(out.path().join("shop.rs")).unwrap(), "// schema B");
    // Back to A: restored over B's file.
    assert_eq!(memo.outputs(out.path()).call_with_status(&"A", generate("A")).1, Status::Disk);
    assert_eq!(
        fs::read_to_string(out.path().join("shop.rs")).unwrap(),
        "// schema A",
        "stale output"
    );
    // And after a clean, A's entry is complete.
    fs::remove_dir_all(out.path()).unwrap();
    assert_eq!(memo.outputs(out.path()).call_with_status(&"A", generate("A")).1, Status::Disk);
    assert_eq!(fs::read_to_string(out.path().join("shop.rs")).unwrap(), "// schema A");
}

#[test]
fn a_failing_step_stores_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let memo = Memo::new("outputs-fail").dir(cache.path());
    let failed: Result<usize, String> = memo.outputs(out.path()).try_call(&1, |step| {
        fs::write(step.dir().join("half.rs"), "partial").unwrap();
        Err("syntax error in grammar.y line 3".to_owned())
    });
    assert_eq!(failed, Err("syntax error in grammar.y line 3".to_owned()));
    assert!(memo.keys().is_empty(), "a failed step left an entry");
    assert_eq!(memo.outputs(out.path()).call_with_status(&1, generate), (3, Status::Miss));
}

#[test]
fn a_changed_discovered_input_is_a_miss() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let header = cache.path().join("included.h");
    fs::write(&header, "#define A 1").unwrap();
    let memo = Memo::new("outputs-discovered").dir(cache.path().join("store"));
    let step = |step: &mut Step| {
        let text = fs::read_to_string(&header).unwrap();
        step.input_file(&header);
        fs::write(step.dir().join("bindings.rs"), format!("// {text}")).unwrap();
    };
    assert_eq!(memo.outputs(out.path()).call_with_status(&(), step).1, Status::Miss);
    assert_eq!(memo.outputs(out.path()).call_with_status(&(), step).1, Status::Disk);
    fs::write(&header, "#define A 2").unwrap();
    assert_eq!(memo.outputs(out.path()).call_with_status(&(), step).1, Status::Miss, "a stale hit");
    assert_eq!(fs::read_to_string(out.path().join("bindings.rs")).unwrap(), "// #define A 2");
    assert_eq!(memo.outputs(out.path()).call_with_status(&(), step).1, Status::Disk);
}

#[test]
fn writing_to_a_restored_file_does_not_corrupt_the_store() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let memo = Memo::new("outputs-isolated").dir(cache.path());
    memo.outputs(out.path()).call(&1, generate);
    let original = fs::read(out.path().join("tables/action.bin")).unwrap();
    fs::remove_dir_all(out.path()).unwrap();
    memo.outputs(out.path()).call(&1, generate);
    // Edit the restored file in place (as a hard link would share it with the store).
    fs::OpenOptions::new().write(true).open(out.path().join("tables/action.bin")).unwrap();
    fs::write(out.path().join("tables/action.bin"), "overwritten").unwrap();
    fs::remove_dir_all(out.path()).unwrap();
    assert_eq!(memo.outputs(out.path()).call_with_status(&1, generate).1, Status::Disk);
    assert_eq!(fs::read(out.path().join("tables/action.bin")).unwrap(), original);
}

#[test]
fn a_damaged_output_blob_is_a_miss_and_is_regenerated() {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let memo = Memo::new("outputs-damaged").dir(cache.path());
    memo.outputs(out.path()).call(&1, generate);
    let original = fs::read(out.path().join("tables/action.bin")).unwrap();
    let blob = crate::files_under(&cache.path().join("blobs-b3"))
        .into_iter()
        .find(|path| fs::metadata(path).unwrap().len() == 400_000)
        .unwrap();
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&blob).unwrap();
    bytes[12345] ^= 1;
    fs::write(&blob, bytes).unwrap();
    fs::remove_dir_all(out.path()).unwrap();
    assert_eq!(memo.outputs(out.path()).call_with_status(&1, generate).1, Status::Miss);
    assert_eq!(fs::read(out.path().join("tables/action.bin")).unwrap(), original);
    fs::remove_dir_all(out.path()).unwrap();
    assert_eq!(memo.outputs(out.path()).call_with_status(&1, generate).1, Status::Disk);
}

/// Rewrites the stored manifest of `name`'s only entry under `root` with `edit` (a valid entry:
/// size and blake3 match the new bytes, as an attacker with write access to the cache could do).
fn tamper_manifest(
    root: &Path,
    name: &str,
    edit: impl FnOnce(&mut memoshelve_build::OutputManifest),
) {
    let store = memoshelve_build::store::Store::open(root);
    let entry = store.entries(Some(name)).unwrap().pop().unwrap();
    let mut record = entry.record.clone();
    let bytes = record.inline.clone().expect("a small manifest is inline");
    let mut manifest: memoshelve_build::OutputManifest = postcard::from_bytes(&bytes).unwrap();
    edit(&mut manifest);
    let bytes = postcard::to_stdvec(&manifest).unwrap();
    record.size = bytes.len() as u64;
    record.blake3 = blake3::hash(&bytes).to_hex().to_string();
    record.inline = Some(bytes);
    crate::write_record(root, &record);
}

#[test]
fn manifests_naming_paths_outside_the_output_dir_are_rejected_and_nothing_is_written_there() {
    for (case, escaping) in [
        ("dotdot", "../escaped.rs"),
        ("absolute", "/tmp/memoshelve-escaped.rs"),
        ("nested", "a/../../escaped.rs"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let out = dir.path().join("work/out");
        let name = format!("escape-{case}");
        let memo = Memo::new(&name).dir(&root).mem_capacity(0);
        let runs = AtomicUsize::new(0);
        let step = |step: &mut Step| {
            runs.fetch_add(1, Ordering::SeqCst);
            fs::write(step.dir().join("lib.rs"), "pub fn f() {}\n").unwrap();
        };
        memo.outputs(&out).call(&(), step);
        tamper_manifest(&root, &name, |manifest| {
            manifest.files[0].path = escaping.as_bytes().to_vec()
        });
        fs::remove_dir_all(&out).unwrap();
        let (_, status) = memo.outputs(&out).call_with_status(&(), step);
        assert_eq!(status, Status::Miss, "{case}: a tampered manifest must not be served");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(
            !dir.path().join("work/escaped.rs").exists() && !dir.path().join("escaped.rs").exists()
        );
        assert!(!Path::new("/tmp/memoshelve-escaped.rs").exists());
        assert_eq!(fs::read_to_string(out.join("lib.rs")).unwrap(), "pub fn f() {}\n");
    }
}

#[test]
fn restoring_never_writes_through_a_symbolic_link_in_the_output_dir() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let out = dir.path().join("out");
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let memo = Memo::new("through-link").dir(&root).mem_capacity(0);
    memo.outputs(&out).call(&(), generate_in_subdir);
    // The output dir is rebuilt with `gen` a link to a directory elsewhere.
    fs::remove_dir_all(&out).unwrap();
    fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("gen")).unwrap();
    let (_, status) = memo.outputs(&out).call_with_status(&(), |step: &mut Step| {
        // This generator removes the link and writes a real directory.
        fs::remove_file(step.dir().join("gen")).unwrap();
        generate_in_subdir(step)
    });
    assert_eq!(status, Status::Miss, "a link in the way makes a miss, not a restore through it");
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "something was written through the link"
    );
    assert!(out.join("gen/code.rs").is_file());
}

/// A step writing `gen/code.rs`.
fn generate_in_subdir(step: &mut Step) {
    fs::create_dir_all(step.dir().join("gen")).unwrap();
    fs::write(step.dir().join("gen/code.rs"), "pub const X: u8 = 1;\n").unwrap();
}
