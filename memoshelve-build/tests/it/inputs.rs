//! Declared inputs outside a build script: what each records, and that it reaches the key.

use memoshelve_build::Memo;

fn input<'a>(memo: &'a Memo, kind: &str) -> Vec<&'a memoshelve_build::KeyInput> {
    memo.key_inputs().iter().filter(|input| input.kind == kind).collect()
}

#[test]
fn files_are_hashed_and_missing_ones_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.txt");
    std::fs::write(&file, "one").unwrap();
    let memo = Memo::new("inputs-file").input_file(&file).input_file(dir.path().join("absent.txt"));
    let files = input(&memo, "file");
    assert_eq!(files.len(), 2);
    assert!(files.iter().any(|input| input.value == blake3::hash(b"one").to_hex().as_str()));
    assert!(
        files
            .iter()
            .any(|input| input.name.ends_with("absent.txt") && input.value.contains("missing"))
    );
    let key = memo.key_for::<u8, _>(&()).unwrap();
    std::fs::write(&file, "two").unwrap();
    // Inputs are resolved once per Memo; a new Memo sees the edit.
    assert_eq!(memo.key_for::<u8, _>(&()).unwrap(), key);
    let edited =
        Memo::new("inputs-file").input_file(&file).input_file(dir.path().join("absent.txt"));
    assert_ne!(edited.key_for::<u8, _>(&()).unwrap(), key);
}

#[test]
fn declaration_order_does_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, "a").unwrap();
    std::fs::write(&b, "b").unwrap();
    let ab = Memo::new("inputs-order").input_files([&a, &b]).env("MEMOSHELVE_TEST_NEVER_SET");
    let ba = Memo::new("inputs-order").env("MEMOSHELVE_TEST_NEVER_SET").input_files([&b, &a]);
    assert_eq!(ab.key_for::<u8, _>(&()), ba.key_for::<u8, _>(&()));
    assert_ne!(ab.key_for::<u8, _>(&()), Memo::new("inputs-order").key_for::<u8, _>(&()));
}

#[test]
fn tools_and_the_running_binary_join_the_key() {
    let memo = Memo::new("inputs-tool")
        .tool_version("rustc", &["--version"])
        .invalidate_on_build_script_change(true);
    let tools = input(&memo, "tool");
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].name, "rustc --version");
    assert!(tools[0].value.starts_with("rustc "), "{:?}", tools[0]);
    let binary = input(&memo, "build-script");
    assert_eq!(binary.len(), 1);
    assert_eq!(binary[0].value.len(), 64, "the blake3 hex of the test binary: {:?}", binary[0]);
    // A tool given by absolute path is named by its file name: no machine-specific path in the key.
    let sysroot =
        std::process::Command::new("rustc").args(["--print", "sysroot"]).output().unwrap();
    let absolute =
        std::path::Path::new(String::from_utf8(sysroot.stdout).unwrap().trim()).join("bin/rustc");
    let by_path = Memo::new("inputs-tool").tool_version(absolute.to_str().unwrap(), &["--version"]);
    assert_eq!(input(&by_path, "tool")[0].name, "rustc --version");
    assert_eq!(input(&by_path, "tool")[0].value, tools[0].value);
    // A tool that cannot run is recorded, and the call still works.
    let broken = Memo::new("inputs-tool").tool_version("memoshelve-no-such-tool", &["--version"]);
    assert!(input(&broken, "tool")[0].value.contains("not runnable"));
    assert_eq!(broken.call(&1, || 2u8), 2);
}

#[test]
fn outside_a_build_script_there_is_no_build_context() {
    let memo = Memo::new("inputs-context");
    assert!(input(&memo, "context").is_empty(), "{:?}", memo.key_inputs());
}

#[test]
fn the_entry_records_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recorded.txt");
    std::fs::write(&file, "r").unwrap();
    let memo = Memo::new("inputs-recorded").dir(dir.path().join("cache")).input_file(&file);
    memo.call(&1, || 1u8);
    let key = memo.key_for::<u8, _>(&1).unwrap();
    let record = crate::read_record(&dir.path().join("cache"), &key);
    assert_eq!(record.inputs, memo.key_inputs());
}

#[test]
fn many_files_are_hashed_in_parallel_and_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = (0..40)
        .map(|n| {
            let path = dir.path().join(format!("header{n:02}.h"));
            std::fs::write(&path, format!("#define N {n}")).unwrap();
            path
        })
        .collect();
    let memo = Memo::new("inputs-many").input_files(&paths);
    let files = input(&memo, "file");
    assert_eq!(files.len(), 40);
    for (n, input) in files.iter().enumerate() {
        assert!(input.name.ends_with(&format!("header{n:02}.h")), "{input:?}");
        assert_eq!(
            input.value,
            blake3::hash(format!("#define N {n}").as_bytes()).to_hex().as_str()
        );
    }
}

#[test]
fn globs_match_recursively_and_exclusions_apply_like_gitignore() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["proto/a.proto", "proto/deep/b.proto", "proto/vendor/c.proto", "proto/readme.md"] {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, file).unwrap();
    }
    let pattern = format!("{}/proto/**/*.proto", dir.path().display());
    let all = Memo::new("inputs-glob").input_glob(&pattern);
    let names: Vec<_> = input(&all, "file").iter().map(|input| input.name.clone()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|name| name.ends_with(".proto")));
    let without_vendor = Memo::new("inputs-glob")
        .input_glob(&pattern)
        .input_glob(format!("!{}/proto/vendor/**", dir.path().display()));
    let names: Vec<_> =
        input(&without_vendor, "file").iter().map(|input| input.name.clone()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!names.iter().any(|name| name.contains("vendor")));
    // Editing an excluded file does not change the key; editing an included one does.
    let key = without_vendor.key_for::<u8, _>(&()).unwrap();
    std::fs::write(dir.path().join("proto/vendor/c.proto"), "edited").unwrap();
    let again = Memo::new("inputs-glob")
        .input_glob(&pattern)
        .input_glob(format!("!{}/proto/vendor/**", dir.path().display()));
    assert_eq!(again.key_for::<u8, _>(&()).unwrap(), key);
    std::fs::write(dir.path().join("proto/a.proto"), "edited").unwrap();
    let edited = Memo::new("inputs-glob")
        .input_glob(&pattern)
        .input_glob(format!("!{}/proto/vendor/**", dir.path().display()));
    assert_ne!(edited.key_for::<u8, _>(&()).unwrap(), key);
}
