//! Real cargo builds of the crates in `examples/`: cold, `cargo clean`, warm, and edits.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace's target directory (the probe binary lives in `<target>/<profile>/`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_memoshelve-probe"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_owned()
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// The examples' target dir, kept between runs so dependencies compile once.
fn examples_target() -> PathBuf {
    target_dir().join("e2e-examples")
}

/// `cargo <args>` on a manifest, with the examples' target dir, a cache root, logging on, and a
/// marker file the example generators append to when they really run.
fn cargo_output(manifest: &Path, args: &[&str], cache: &Path) -> Output {
    cargo_output_with_target(manifest, args, cache, &examples_target())
}

fn cargo_output_with_target(manifest: &Path, args: &[&str], cache: &Path, target: &Path) -> Output {
    cargo_output_with_env(manifest, args, cache, target, &[])
}

fn cargo_output_with_env(
    manifest: &Path,
    args: &[&str],
    cache: &Path,
    target: &Path,
    env: &[(&str, &str)],
) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(args).arg("--manifest-path").arg(manifest);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MEMOSHELVE_") {
            command.env_remove(name);
        }
    }
    command
        .env("CARGO_TARGET_DIR", target)
        .env("MEMOSHELVE_DIR", cache)
        .env("MEMOSHELVE_LOG", "all")
        .env("MEMOSHELVE_EXAMPLE_MARKER", cache.with_extension("marker"))
        .envs(env.iter().copied())
        .output()
        .expect("run cargo")
}

fn cargo_in(manifest: &Path, args: &[&str], cache: &Path) -> String {
    let output = cargo_output(manifest, args, cache);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "cargo {args:?} failed:\n{stderr}");
    stderr
}

fn cargo(args: &[&str], cache: &Path) -> String {
    cargo_in(&examples_dir().join("Cargo.toml"), args, cache)
}

/// How often the example generators ran with this cache.
fn generator_runs(cache: &Path) -> usize {
    std::fs::read_to_string(cache.with_extension("marker")).map_or(0, |text| text.lines().count())
}

fn generated_file(profile: &str, package: &str, file: &str) -> Vec<u8> {
    let build = examples_target().join(profile).join("build");
    // Build directories are named `<package>-<16 hex digits>`.
    let is_package = |dir: &Path| {
        let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        name.strip_prefix(&format!("{package}-")).is_some_and(|hash| {
            hash.len() == 16 && hash.bytes().all(|byte| byte.is_ascii_hexdigit())
        })
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(&build)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|dir| is_package(dir))
        .map(|dir| dir.join("out").join(file))
        .filter(|path| path.is_file())
        .collect();
    assert_eq!(found.len(), 1, "expected one {file} under {}: {found:?}", build.display());
    std::fs::read(found.remove(0)).unwrap()
}

#[test]
fn lookup_table_is_served_from_the_cache_after_cargo_clean() {
    let cache = tempfile::tempdir().unwrap();
    cargo(&["clean", "-p", "lookup-table"], cache.path());
    let cold = cargo(&["build", "-p", "lookup-table"], cache.path());
    assert!(cold.contains("memoshelve: lookup-table-crc32") && cold.contains(": miss"), "{cold}");
    let generated = generated_file("debug", "lookup-table", "crc32_table.rs");

    cargo(&["clean", "-p", "lookup-table"], cache.path());
    let warm = cargo(&["build", "-p", "lookup-table"], cache.path());
    assert!(warm.contains(": cached (disk)"), "the warm build did not hit the cache:\n{warm}");
    assert!(!warm.contains(": miss"), "{warm}");
    assert_eq!(generated_file("debug", "lookup-table", "crc32_table.rs"), generated);

    // A release build is another profile: by default it must not reuse the debug entry.
    cargo(&["clean", "--release", "-p", "lookup-table"], cache.path());
    let release = cargo(&["build", "--release", "-p", "lookup-table"], cache.path());
    assert!(
        release.contains(": miss") && !release.contains(": cached"),
        "release reused the debug entry:\n{release}"
    );
    cargo(&["clean", "--release", "-p", "lookup-table"], cache.path());
    let release = cargo(&["build", "--release", "-p", "lookup-table"], cache.path());
    assert!(release.contains(": cached (disk)"), "the release entry was not stored:\n{release}");
}

/// Builds an example cold (cleaned, empty cache: a miss, its generator runs once), cleans it,
/// and builds it warm (a disk hit, the generator does not run), checking that `files` came back
/// from the cache byte-identical.
fn cold_then_warm(package: &str, cache_name: &str, files: &[&str], cache: &Path) {
    cargo(&["clean", "-p", package], cache);
    let cold = cargo(&["build", "-p", package], cache);
    assert!(
        cold.contains(&format!("memoshelve: {cache_name}")) && cold.contains(": miss"),
        "{cold}"
    );
    assert_eq!(generator_runs(cache), 1);
    let generated: Vec<Vec<u8>> =
        files.iter().map(|file| generated_file("debug", package, file)).collect();

    cargo(&["clean", "-p", package], cache);
    let warm = cargo(&["build", "-p", package], cache);
    assert!(warm.contains(": cached (disk)"), "{warm}");
    assert_eq!(generator_runs(cache), 1, "the generator of {package} ran on a warm build");
    for (file, bytes) in files.iter().zip(generated) {
        assert_eq!(generated_file("debug", package, file), bytes, "{file} differs");
    }
}

#[test]
fn protos_codegen_is_restored_without_running_protoc() {
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().join("cache");
    cold_then_warm("protos", "protos-prost", &["shop.rs", "common.rs"], &cache);
    // The restored code compiles and works.
    cargo(&["test", "-p", "protos"], &cache);

    // profile_independent(): a release build shares the debug build's entry.
    cargo(&["clean", "--release", "-p", "protos"], &cache);
    let release = cargo(&["build", "--release", "-p", "protos"], &cache);
    assert!(release.contains(": cached (disk)"), "release did not share the entry:\n{release}");
    assert_eq!(generator_runs(&cache), 1);
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A standalone copy of `examples/<name>` in `dir` (its own workspace), so a test can edit it.
/// Its package is renamed `<name>-<tag>` (the library keeps its name): cargo derives a package's
/// OUT_DIR from its name, not its path, so copies sharing a target dir must not share a name.
fn copy_of_example(name: &str, tag: &str, dir: &Path) -> PathBuf {
    let source = examples_dir().join(name);
    let crate_dir = dir.join(format!("{name}-copy"));
    copy_tree(&source, &crate_dir);
    let library = examples_dir().join("../memoshelve-build").canonicalize().unwrap();
    let manifest = std::fs::read_to_string(source.join("Cargo.toml"))
        .unwrap()
        .replace("edition.workspace = true", "edition = \"2024\"")
        .replace("publish.workspace = true", "publish = false")
        .replace(&format!("name = \"{name}\""), &format!("name = \"{name}-{tag}\""))
        .replace(
            "path = \"../../memoshelve-build\"",
            &format!("path = {:?}", library.display().to_string()),
        )
        + &format!("\n[lib]\nname = \"{}\"\n\n[workspace]\n", name.replace('-', "_"));
    std::fs::write(crate_dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(examples_dir().join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    crate_dir
}

#[test]
fn editing_protos_misses_undeclared_files_do_not_and_a_failing_generator_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let crate_dir = copy_of_example("protos", "edits", dir.path());
    let manifest = crate_dir.join("Cargo.toml");
    let build = || cargo_in(&manifest, &["build"], &cache);
    assert!(build().contains(": miss"));
    assert_eq!(generator_runs(&cache), 1);

    // An undeclared file: cargo does not even rerun the build script.
    std::fs::write(crate_dir.join("NOTES.md"), "not an input").unwrap();
    build();
    assert_eq!(generator_runs(&cache), 1);

    // A declared input changes: a miss, and the new field is generated.
    let shop = crate_dir.join("proto/shop.proto");
    let original = std::fs::read_to_string(&shop).unwrap();
    std::fs::write(
        &shop,
        original.replace("uint32 quantity = 2;", "uint32 quantity = 2;\n  string note = 3;"),
    )
    .unwrap();
    assert!(build().contains(": miss"));
    assert_eq!(generator_runs(&cache), 2);
    let generated = std::fs::read_dir(examples_target().join("debug/build"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path().join("out/shop.rs"))
        .filter(|path| path.is_file())
        .any(|path| std::fs::read_to_string(path).unwrap().contains("pub note:"));
    assert!(generated, "the edited proto was not regenerated");

    // A broken schema: the build fails with the generator's own message, and nothing is stored.
    std::fs::write(&shop, original.replace("message Order {", "message Order {{ broken")).unwrap();
    let failed = cargo_output(&manifest, &["build"], &cache);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "a broken proto built");
    assert!(stderr.contains("prost-build failed") && stderr.contains("shop.proto"), "{stderr}");
    let runs_after_failure = generator_runs(&cache);

    // Fixed again: the original schema's entry is still there (a hit), the broken one never was.
    std::fs::write(&shop, &original).unwrap();
    assert!(build().contains(": cached (disk)"));
    assert_eq!(generator_runs(&cache), runs_after_failure);
}

#[test]
fn assets_are_compressed_once_each_and_an_edit_recompresses_only_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let crate_dir = copy_of_example("assets", "edits", dir.path());
    let manifest = crate_dir.join("Cargo.toml");
    let cold = cargo_in(&manifest, &["build"], &cache);
    assert_eq!(generator_runs(&cache), 24, "{cold}");
    assert_eq!(cold.matches(": miss").count(), 24, "{cold}");

    cargo_in(&manifest, &["clean", "-p", "assets-edits"], &cache);
    let warm = cargo_in(&manifest, &["build"], &cache);
    assert_eq!(warm.matches(": cached (disk)").count(), 24, "{warm}");
    assert_eq!(generator_runs(&cache), 24, "a warm build compressed again");

    let page = crate_dir.join("assets/page07.txt");
    let mut text = std::fs::read_to_string(&page).unwrap();
    text.push_str("One more line.\n");
    std::fs::write(&page, text).unwrap();
    let edited = cargo_in(&manifest, &["build"], &cache);
    assert_eq!(generator_runs(&cache), 25, "{edited}");
    assert_eq!(edited.matches(": miss").count(), 1, "{edited}");
    let marker = std::fs::read_to_string(cache.with_extension("marker")).unwrap();
    assert_eq!(marker.lines().last(), Some("assets page07.txt"));
    // The rebuilt crate serves the edited asset.
    cargo_in(&manifest, &["test"], &cache);
}

#[test]
fn a_c_library_is_restored_and_links_and_an_edited_discovered_header_misses() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let crate_dir = copy_of_example("cbind", "links", dir.path());
    let manifest = crate_dir.join("Cargo.toml");
    // (what the program printed, what cargo printed)
    let run = |target: &Path| {
        let output = cargo_output_with_target(&manifest, &["run"], &cache, target);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "cargo run failed:\n{stderr}");
        (String::from_utf8_lossy(&output.stdout).trim().to_owned(), stderr)
    };
    let (answer, log) = run(&examples_target());
    assert_eq!((answer.as_str(), generator_runs(&cache)), ("42", 1), "{log}");
    assert!(log.contains(": miss"), "{log}");

    // Another target directory: another OUT_DIR path. The library is restored there and cc's
    // replayed `rustc-link-search=native=<OUT_DIR>` must name the new one, or linking fails.
    // The first OUT_DIR is removed, so a replayed path to it cannot link by accident.
    cargo_output(&manifest, &["clean", "-p", "cbind-links"], &cache);
    let other_target = examples_target().join("second-target");
    cargo_output_with_target(&manifest, &["clean", "-p", "cbind-links"], &cache, &other_target);
    let (answer, log) = run(&other_target);
    assert_eq!((answer.as_str(), generator_runs(&cache)), ("42", 1), "{log}");
    assert!(log.contains(": cached (disk)"), "{log}");

    // detail.h is not declared: it was discovered through api.h. Editing it is a miss and the
    // binary reflects the edit (no stale library).
    std::fs::write(crate_dir.join("c/detail.h"), "#define DETAIL_OFFSET 3\n").unwrap();
    let (answer, log) = run(&examples_target());
    assert_eq!((answer.as_str(), generator_runs(&cache)), ("43", 2), "{log}");
    assert!(log.contains(": miss"), "{log}");
}

/// `cargo build --message-format=json` of the crate at `manifest`: its OUT_DIR, whether its lib
/// was recompiled, and cargo's stderr (memoshelve's log lines).
fn build_json(manifest: &Path, cache: &Path) -> (PathBuf, bool, String) {
    let output = cargo_output(manifest, &["build", "--message-format=json"], cache);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let crate_dir = manifest.parent().unwrap().to_string_lossy().into_owned();
    let (mut out_dir, mut recompiled) = (None, false);
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let message: serde_json::Value = serde_json::from_str(line).unwrap();
        if !message["package_id"].as_str().is_some_and(|id| id.contains(&crate_dir)) {
            continue;
        }
        match message["reason"].as_str() {
            Some("build-script-executed") => {
                out_dir = message["out_dir"].as_str().map(PathBuf::from)
            }
            Some("compiler-artifact") if message["target"]["kind"][0] == "lib" => {
                recompiled = message["fresh"] == false;
            }
            _ => {}
        }
    }
    (out_dir.expect("a build-script-executed message"), recompiled, stderr)
}

#[test]
fn restoring_over_a_newer_out_dir_recompiles_and_identical_files_keep_their_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let crate_dir = copy_of_example("protos", "restore", dir.path());
    let manifest = crate_dir.join("Cargo.toml");
    let shop = crate_dir.join("proto/shop.proto");
    let schema_a = std::fs::read_to_string(&shop).unwrap();
    build_json(&manifest, &cache);
    std::fs::write(
        &shop,
        schema_a.replace("uint32 quantity = 2;", "uint32 quantity = 2;\n  string note = 3;"),
    )
    .unwrap();
    let (out_dir, _, log) = build_json(&manifest, &cache);
    assert!(log.contains(": miss"), "{log}");
    assert!(std::fs::read_to_string(out_dir.join("shop.rs")).unwrap().contains("pub note:"));

    // Back to schema A: its entry is restored over B's files, and the crate is rebuilt from it.
    std::fs::write(&shop, &schema_a).unwrap();
    let (out_dir, recompiled, log) = build_json(&manifest, &cache);
    assert!(log.contains(": cached (disk)"), "{log}");
    assert!(recompiled, "the crate was not recompiled after its generated code changed");
    assert!(
        !std::fs::read_to_string(out_dir.join("shop.rs")).unwrap().contains("pub note:"),
        "stale code in {}:\n{log}",
        out_dir.display()
    );

    // Only the schema's mtime changes: the build script reruns and hits, and the identical
    // generated files are left as they are. (Cargo still rebuilds a crate whose build script
    // reran; what memoshelve owes is not to touch identical files.)
    let generated_mtime = std::fs::metadata(out_dir.join("shop.rs")).unwrap().modified().unwrap();
    std::fs::File::options()
        .append(true)
        .open(&shop)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    let (again, _, log) = build_json(&manifest, &cache);
    assert_eq!(again, out_dir);
    assert!(log.contains(": cached (disk)"), "{log}");
    assert_eq!(
        std::fs::metadata(out_dir.join("shop.rs")).unwrap().modified().unwrap(),
        generated_mtime
    );
}

#[test]
fn grammar_parser_is_restored_without_running_lalrpop() {
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().join("cache");
    cold_then_warm("grammar", "grammar-lalrpop", &["minilang.rs"], &cache);
    // The restored parser compiles and parses.
    cargo(&["test", "-p", "grammar"], &cache);
}

#[test]
fn a_declared_env_var_or_a_new_version_recomputes_and_another_checkout_hits() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let crate_dir = copy_of_example("cbind", "env", dir.path());
    let manifest = crate_dir.join("Cargo.toml");
    let build = |env: &[(&str, &str)]| {
        let output = cargo_output_with_env(&manifest, &["build"], &cache, &examples_target(), env);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        stderr
    };
    assert!(build(&[]).contains(": miss"));
    assert_eq!(generator_runs(&cache), 1);
    // CFLAGS is declared with .env("CFLAGS"): a new value is a miss, and the same value again a hit.
    assert!(build(&[("CFLAGS", "-O1")]).contains(": miss"));
    assert_eq!(generator_runs(&cache), 2);
    assert!(build(&[]).contains(": cached (disk)"));
    assert_eq!(generator_runs(&cache), 2);

    // A new version salt in build.rs invalidates the entries made before it.
    let build_rs = crate_dir.join("build.rs");
    let source = std::fs::read_to_string(&build_rs).unwrap();
    let bumped = source.replace(".env(\"CFLAGS\");", ".env(\"CFLAGS\")\n        .version(\"2\");");
    assert_ne!(bumped, source, "build.rs no longer has the line this test edits");
    std::fs::write(&build_rs, bumped).unwrap();
    assert!(build(&[]).contains(": miss"));
    assert_eq!(generator_runs(&cache), 3);

    // The same project checked out at another path (and built in another target dir) hits.
    let elsewhere = dir.path().join("elsewhere");
    let other_checkout = copy_of_example("cbind", "env", &elsewhere);
    std::fs::copy(&build_rs, other_checkout.join("build.rs")).unwrap();
    let output = cargo_output_with_target(
        &other_checkout.join("Cargo.toml"),
        &["build"],
        &cache,
        &examples_target().join("second-target"),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains(": cached (disk)"), "another checkout missed:\n{stderr}");
    assert_eq!(generator_runs(&cache), 3);
}

#[test]
fn warm_runs_cargo_against_the_cache_and_reports_what_it_added() {
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().join("cache");
    cargo(&["clean", "-p", "lookup-table"], &cache);
    let cli = crate::cli_binary();
    let manifest = examples_dir().join("Cargo.toml");
    let warm = |cargo_args: &[&str]| {
        Command::new(&cli)
            .args(["memoshelve", "--dir"])
            .arg(&cache)
            .args(["warm", "--json", "--"])
            .args(cargo_args)
            .arg("--manifest-path")
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", examples_target())
            .output()
            .unwrap()
    };
    let output = warm(&["build", "-p", "lookup-table"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let added: Vec<&str> =
        report["added"].as_array().unwrap().iter().filter_map(|row| row["name"].as_str()).collect();
    // The build script's own entry, and the compiles the wrapper memoized (the package's
    // own; its dependencies' too where this target dir did not have them yet).
    let (units, steps): (Vec<&str>, Vec<&str>) =
        added.iter().partition(|name| name.starts_with("rustc."));
    assert_eq!(steps, ["lookup-table-crc32"], "{report}");
    assert!(units.contains(&"rustc.lookup-table"), "{report}");
    assert_eq!(report["cargo_status"], 0);
    // A failing cargo command: warm exits with cargo's status.
    let failed = warm(&["build", "-p", "no-such-package"]);
    assert_eq!(failed.status.code(), Some(101), "{}", String::from_utf8_lossy(&failed.stderr));
}

/// The examples build memoshelve-build without a `remote-*` feature, so its remote client is not
/// compiled: a remote configured anyway is one warning naming the feature, and the build goes on
/// with the local tiers; with `MEMOSHELVE_REMOTE_MODE=off` it is not mentioned.
#[test]
fn a_remote_without_its_feature_is_one_warning_and_the_build_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = copy_of_example("lookup-table", "noremote", dir.path());
    let manifest = crate_dir.join("Cargo.toml");
    let build = |cache: &Path, env: &[(&str, &str)]| {
        let _ = cargo_output_with_env(
            &manifest,
            &["clean", "-p", "lookup-table-noremote"],
            cache,
            &examples_target(),
            &[],
        );
        let output = cargo_output_with_env(&manifest, &["build"], cache, &examples_target(), env);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        stderr
    };
    let remote = [("MEMOSHELVE_REMOTE", "redis://127.0.0.1:1/0")];
    let cache = dir.path().join("cache");
    let stderr = build(&cache, &remote);
    let warning = "remote redis://127.0.0.1:1/0: this build of memoshelve-build has no \
                   `remote-redis` feature (add `features = [\"remote-redis\"]` to its \
                   dependency); not using the remote";
    assert_eq!(stderr.matches(warning).count(), 1, "{stderr}");
    assert!(stderr.contains(": miss"), "{stderr}");
    // The entry was stored locally all the same.
    let stderr = build(&cache, &remote);
    assert!(stderr.contains(": cached (disk)"), "{stderr}");

    let off = [remote[0], ("MEMOSHELVE_REMOTE_MODE", "off")];
    let stderr = build(&dir.path().join("cache-off"), &off);
    assert!(stderr.contains(": miss") && !stderr.contains("remote-redis"), "{stderr}");
}
