//! File steps (`Memo::outputs`) in real cargo builds: what a step prints reaches cargo exactly
//! once and is replayed as printed, its entry holds exactly what a clean run of its key
//! produces, and inputs the step declares itself (`rerun-if-changed`, `rerun-if-env-changed`)
//! are checked on every hit.
//!
//! Each test generates packages that use memoshelve-build as a build-dependency, with a cache
//! root of its own. Their build scripts append to a file (`FS_RUNS`) whenever a step really
//! runs, so a hit is a step that did not append. Cargo writes exactly what a build script
//! printed into `<target>/debug/build/<package>-<hash>/output`: that file is the oracle for
//! "each line reached cargo once". All packages share one target directory (so dependencies
//! compile once) and so each has a name of its own: cargo derives OUT_DIR from the name.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What every generated build script starts with.
const PRELUDE: &str = r#"#![allow(unused)]
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use memoshelve_build::{Memo, Step};

fn out_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("OUT_DIR").unwrap())
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap())
}

/// Appends `tag` to the file named by FS_RUNS: how the tests know that a step really ran.
fn ran(tag: &str) {
    let path = std::env::var_os("FS_RUNS").expect("FS_RUNS is set by the tests");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    // One write: steps on two threads append at the same time.
    file.write_all(format!("{tag}\n").as_bytes()).unwrap();
}

/// Waits (at most 5 s) until `count` steps have arrived here: two steps that meet are running
/// at the same time. A library that runs them one after the other makes the first wait the
/// 5 s and go on; nothing is asserted about the waiting.
fn meet(met: &(std::sync::Mutex<usize>, std::sync::Condvar), count: usize) {
    let (arrived, changed) = met;
    let mut arrived = arrived.lock().unwrap();
    *arrived += 1;
    changed.notify_all();
    let _ = changed.wait_timeout_while(arrived, Duration::from_secs(5), |n| *n < count).unwrap();
}
"#;

/// The shared target directory of these tests, under the workspace's.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_memoshelve-probe"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("e2e-file-steps")
}

/// A generated package: memoshelve-build as its build-dependency, a build script, and a
/// binary (or an empty library).
#[derive(Clone, Debug)]
struct Package {
    name: String,
    /// Extra lines of the `[package]` table.
    package: String,
    /// Lines of the `[dependencies]` table.
    dependencies: String,
    /// The build script after [`PRELUDE`].
    build: String,
    /// `src/main.rs`; `None`: an empty `src/lib.rs`.
    main: Option<String>,
}

impl Package {
    fn bin(name: &str, build: &str, main: &str) -> Package {
        Package {
            name: name.to_owned(),
            package: String::new(),
            dependencies: String::new(),
            build: build.to_owned(),
            main: Some(main.to_owned()),
        }
    }

    fn lib(name: &str, build: &str) -> Package {
        Package { main: None, ..Package::bin(name, build, "") }
    }

    fn with_package(mut self, lines: &str) -> Package {
        self.package = lines.to_owned();
        self
    }

    fn with_dependencies(mut self, lines: &str) -> Package {
        self.dependencies = lines.to_owned();
        self
    }

    fn renamed(&self, name: &str) -> Package {
        Package { name: name.to_owned(), ..self.clone() }
    }

    /// Writes the package into `dir`; `standalone`: as a workspace of its own.
    fn write(&self, dir: &Path, standalone: bool) {
        std::fs::create_dir_all(dir.join("src")).unwrap();
        let library = Path::new(env!("CARGO_MANIFEST_DIR")).join("../memoshelve-build");
        let library = library.canonicalize().unwrap();
        let mut manifest = format!(
            "[package]\nname = \"{}\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\
             build = \"build.rs\"\n{}\n\n[dependencies]\n{}\n\n[build-dependencies]\n\
             memoshelve-build = {{ path = {:?} }}\n",
            self.name,
            self.package,
            self.dependencies,
            library.display().to_string()
        );
        if standalone {
            manifest.push_str("\n[workspace]\n");
            copy_lock(dir);
        }
        std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
        std::fs::write(dir.join("build.rs"), format!("{PRELUDE}\n{}", self.build)).unwrap();
        match &self.main {
            Some(main) => std::fs::write(dir.join("src/main.rs"), main).unwrap(),
            None => std::fs::write(dir.join("src/lib.rs"), "").unwrap(),
        }
    }
}

/// The workspace's lock file: the same dependency versions, and no registry lookups.
fn copy_lock(dir: &Path) {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    std::fs::copy(lock, dir.join("Cargo.lock")).unwrap();
}

/// A test's temporary directory, its cache root, its runs file, and the workspaces in it.
struct Fixture {
    _temp: tempfile::TempDir,
    /// The temporary directory, canonical.
    tmp: PathBuf,
    cache: PathBuf,
    runs: PathBuf,
    /// The workspace `build` and `clean` use.
    root: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let temp = tempfile::tempdir().unwrap();
        let tmp = temp.path().canonicalize().unwrap();
        Fixture {
            cache: tmp.join("cache"),
            runs: tmp.join("runs"),
            root: tmp.clone(),
            tmp,
            _temp: temp,
        }
    }

    /// One package at `<tmp>/<dir>`, a workspace of its own, as the default workspace.
    fn single(dir: &str, package: &Package) -> Fixture {
        let mut fixture = Fixture::new();
        fixture.root = fixture.add(dir, package);
        fixture
    }

    /// Writes a standalone package at `<tmp>/<dir>` and cleans what an earlier test run left
    /// in the shared target dir under its name; returns its workspace root.
    fn add(&self, dir: &str, package: &Package) -> PathBuf {
        let root = self.tmp.join(dir);
        package.write(&root, true);
        self.clean_at(&root, &[&package.name]);
        root
    }

    /// A workspace at `<tmp>/<dir>` with `members` (`(folder, package)`), as the default.
    fn workspace(dir: &str, members: &[(&str, &Package)]) -> Fixture {
        let mut fixture = Fixture::new();
        let root = fixture.tmp.join(dir);
        let names: Vec<String> = members.iter().map(|(folder, _)| format!("{folder:?}")).collect();
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(
            root.join("Cargo.toml"),
            format!("[workspace]\nresolver = \"3\"\nmembers = [{}]\n", names.join(", ")),
        )
        .unwrap();
        copy_lock(&root);
        for (folder, package) in members {
            package.write(&root.join(folder), false);
        }
        let packages: Vec<&str> =
            members.iter().map(|(_, package)| package.name.as_str()).collect();
        fixture.clean_at(&root, &packages);
        fixture.root = root;
        fixture
    }

    /// `cargo <args> --offline --manifest-path <root>/Cargo.toml` with the shared target dir,
    /// this test's cache root and runs file, and no inherited MEMOSHELVE_* variables.
    fn command(&self, root: &Path, args: &[&str]) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command.args(args).args(["--offline", "--manifest-path"]).arg(root.join("Cargo.toml"));
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("MEMOSHELVE_") || name.starts_with("FS_") {
                command.env_remove(name);
            }
        }
        for name in ["OUT_DIR", "FLAVOR", "KEY"] {
            command.env_remove(name);
        }
        command
            .env("CARGO_TARGET_DIR", target_dir())
            .env("MEMOSHELVE_DIR", &self.cache)
            .env("FS_RUNS", &self.runs);
        command
    }

    /// Builds the workspace at `root` with `env`; asserts success and returns cargo's stderr.
    fn build_at(&self, root: &Path, env: &[(&str, &str)]) -> String {
        let output = self.command(root, &["build"]).envs(env.iter().copied()).output().unwrap();
        assert_success(&output, &format!("cargo build {env:?} of {}", root.display()));
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    fn build(&self, env: &[(&str, &str)]) -> String {
        self.build_at(&self.root, env)
    }

    /// Builds the default workspace with `env` and returns what cargo did, success or not.
    fn try_build(&self, env: &[(&str, &str)]) -> Output {
        self.command(&self.root, &["build"]).envs(env.iter().copied()).output().unwrap()
    }

    /// `cargo clean -p ..` of these packages of the workspace at `root` (`cargo clean`, for
    /// them; the shared dependencies stay).
    fn clean_at(&self, root: &Path, packages: &[&str]) {
        let mut args = vec!["clean"];
        for package in packages {
            args.extend(["-p", package]);
        }
        let output = self.command(root, &args).output().unwrap();
        assert_success(&output, &format!("cargo clean {packages:?}"));
    }

    fn clean(&self, packages: &[&str]) {
        self.clean_at(&self.root, packages);
    }

    /// How often a step tagged `tag` really ran.
    fn runs(&self, tag: &str) -> usize {
        std::fs::read_to_string(&self.runs)
            .unwrap_or_default()
            .lines()
            .filter(|line| *line == tag)
            .count()
    }
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs the built binary `name` and returns its stdout.
fn run_binary(name: &str) -> String {
    let output = Command::new(target_dir().join("debug").join(name)).output().unwrap();
    assert_success(&output, name);
    String::from_utf8(output.stdout).unwrap()
}

/// `<target>/debug/build/<package>-<16 hex digits>/`: the directory of the package's build
/// script run (the one with cargo's `output` file in it).
fn run_dir(package: &str) -> PathBuf {
    let build = target_dir().join("debug/build");
    let prefix = format!("{package}-");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&build)
        .unwrap()
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&prefix).is_some_and(|hash| {
                hash.len() == 16 && hash.bytes().all(|byte| byte.is_ascii_hexdigit())
            })
        })
        .map(|entry| entry.path())
        .filter(|dir| dir.join("output").is_file())
        .collect();
    assert_eq!(found.len(), 1, "one build-script run of {package} in {}", build.display());
    found.remove(0)
}

/// What the package's build script printed, as cargo recorded it.
fn cargo_output(package: &str) -> String {
    String::from_utf8(std::fs::read(run_dir(package).join("output")).unwrap()).unwrap()
}

/// The package's OUT_DIR.
fn out_dir(package: &str) -> PathBuf {
    run_dir(package).join("out")
}

/// How many lines of `text` are exactly `line`.
fn count(text: &str, line: &str) -> usize {
    text.lines().filter(|candidate| *candidate == line).count()
}

/// The files under `dir` (relative, `/`-separated, sorted), memoshelve's `.memoshelve` left out.
fn listing(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(dir.join(&relative)).unwrap().flatten() {
            let path = relative.join(entry.file_name());
            if path == Path::new(".memoshelve") {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                pending.push(path);
            } else {
                files.push(path.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    files.sort();
    files
}

/// A binary that prints the file `OUT_DIR/<file>`.
fn main_printing(file: &str) -> String {
    format!(
        "fn main() {{ print!(\"{{}}\", include_str!(concat!(env!(\"OUT_DIR\"), \"/{file}\"))); }}\n"
    )
}

// 1. A variable the step declared itself (`cargo:rerun-if-env-changed`) is part of its entry.
#[test]
fn a_variable_the_step_declares_by_printing_rerun_if_env_changed_is_checked_on_a_hit() {
    let build = r#"
fn main() {
    Memo::new("flavor").outputs(out_dir()).call(&(), |step: &mut Step| {
        ran("flavor");
        println!("cargo:rerun-if-env-changed=FLAVOR");
        let flavor = std::env::var("FLAVOR").unwrap_or_default();
        std::fs::write(step.dir().join("flavor.txt"), flavor).unwrap();
    });
}
"#;
    let package = Package::bin("fs-flavor", build, &main_printing("flavor.txt"));
    let fixture = Fixture::single("flavor", &package);
    fixture.build(&[("FLAVOR", "one")]);
    assert_eq!(run_binary("fs-flavor"), "one");
    fixture.build(&[("FLAVOR", "two")]);
    assert_eq!(run_binary("fs-flavor"), "two", "FLAVOR changed, and the old entry was served");
    assert_eq!(fixture.runs("flavor"), 2);
    // A key keeps its last runs: back to FLAVOR=one after `cargo clean`, the run recorded with
    // `one` hits, and the one with `two` is never served for it.
    fixture.clean(&["fs-flavor"]);
    fixture.build(&[("FLAVOR", "one")]);
    assert_eq!(run_binary("fs-flavor"), "one");
    assert_eq!(fixture.runs("flavor"), 2, "FLAVOR=one again: a hit");
    fixture.clean(&["fs-flavor"]);
    fixture.build(&[("FLAVOR", "two")]);
    assert_eq!(run_binary("fs-flavor"), "two");
    assert_eq!(fixture.runs("flavor"), 2, "FLAVOR=two again: a hit");
    // A third value runs the step.
    fixture.clean(&["fs-flavor"]);
    fixture.build(&[("FLAVOR", "three")]);
    assert_eq!(run_binary("fs-flavor"), "three");
    assert_eq!(fixture.runs("flavor"), 3);
}

// 2. A directory the step declared itself (`cargo:rerun-if-changed=data`) is hashed as a tree.
#[test]
fn a_directory_the_step_declares_by_printing_rerun_if_changed_is_checked_on_a_hit() {
    let build = r#"
fn main() {
    Memo::new("data").outputs(out_dir()).call(&(), |step: &mut Step| {
        ran("data");
        println!("cargo:rerun-if-changed=data");
        let mut files: Vec<PathBuf> =
            std::fs::read_dir("data").unwrap().map(|entry| entry.unwrap().path()).collect();
        files.sort();
        let text: String =
            files.iter().map(|file| std::fs::read_to_string(file).unwrap()).collect();
        std::fs::write(step.dir().join("data.txt"), text).unwrap();
    });
}
"#;
    let package = Package::bin("fs-data", build, &main_printing("data.txt"));
    let fixture = Fixture::single("data", &package);
    let data = fixture.root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "alpha\n").unwrap();
    fixture.build(&[]);
    assert_eq!(run_binary("fs-data"), "alpha\n");

    std::fs::write(data.join("a.txt"), "ALPHA\n").unwrap();
    fixture.build(&[]);
    assert_eq!(run_binary("fs-data"), "ALPHA\n", "an edit inside data/ was not seen");
    fixture.clean(&["fs-data"]);
    fixture.build(&[]);
    assert_eq!(run_binary("fs-data"), "ALPHA\n", "after cargo clean, the edit was not seen");

    std::fs::write(data.join("b.txt"), "beta\n").unwrap();
    fixture.build(&[]);
    assert_eq!(run_binary("fs-data"), "ALPHA\nbeta\n", "a new file in data/ was not seen");
    fixture.clean(&["fs-data"]);
    fixture.build(&[]);
    assert_eq!(run_binary("fs-data"), "ALPHA\nbeta\n");
    assert_eq!(fixture.runs("data"), 3, "the last build should have been a hit");
}

// 3. `cargo::` directives are replayed as `cargo::`: metadata reaches the dependent as printed.
#[test]
fn a_replayed_cargo_double_colon_metadata_line_reaches_the_dependent_as_on_a_miss() {
    let provider = r#"
fn main() {
    Memo::new("p3").outputs(out_dir()).call(&(), |step: &mut Step| {
        ran("p3");
        println!("cargo::metadata=foo=bar");
        std::fs::write(step.dir().join("p3.txt"), "p3").unwrap();
    });
}
"#;
    let dependent = r#"
fn main() {
    let foo = std::env::var("DEP_P3_FOO").unwrap_or_else(|_| "unset".to_owned());
    let metadata = std::env::var("DEP_P3_METADATA").unwrap_or_else(|_| "unset".to_owned());
    println!("cargo:rustc-env=SEEN_FOO={foo}");
    println!("cargo:rustc-env=SEEN_METADATA={metadata}");
}
"#;
    let main =
        r#"fn main() { print!("foo={} metadata={}", env!("SEEN_FOO"), env!("SEEN_METADATA")); }"#;
    let p3 = Package::lib("fs-p3", provider).with_package("links = \"p3\"");
    let user = Package::bin("fs-p3-user", dependent, main)
        .with_dependencies("fs-p3 = { path = \"../p3\" }");
    let fixture = Fixture::workspace("ws", &[("p3", &p3), ("p3-user", &user)]);
    let metadata_lines = |text: &str| {
        text.lines().filter(|line| line.contains("metadata")).map(str::to_owned).collect::<Vec<_>>()
    };

    fixture.build(&[]);
    assert_eq!(run_binary("fs-p3-user"), "foo=bar metadata=unset");
    let missed = metadata_lines(&cargo_output("fs-p3"));
    assert_eq!(missed, ["cargo::metadata=foo=bar"]);

    fixture.clean(&["fs-p3", "fs-p3-user"]);
    fixture.build(&[]);
    assert_eq!(fixture.runs("p3"), 1, "the build after cargo clean should have been a hit");
    assert_eq!(
        run_binary("fs-p3-user"),
        "foo=bar metadata=unset",
        "the hit replayed cargo::metadata=foo=bar in another form"
    );
    assert_eq!(metadata_lines(&cargo_output("fs-p3")), missed, "the replayed line differs");
}

// 3. A replayed `cargo::error=` fails the build as the miss did.
#[test]
fn a_replayed_cargo_double_colon_error_fails_the_build_as_on_a_miss() {
    let build = r#"
fn main() {
    Memo::new("boom").outputs(out_dir()).call(&(), |step: &mut Step| {
        ran("boom");
        println!("cargo::error=boom");
        std::fs::write(step.dir().join("boom.txt"), "boom").unwrap();
    });
}
"#;
    let fixture = Fixture::single("boom", &Package::bin("fs-boom", build, "fn main() {}\n"));
    // Cargo writes no `output` file for a script that logged errors; it shows them on stderr
    // (`error: fs-boom@0.0.0: boom`).
    let errors = |output: &Output| {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let lines: Vec<String> = stderr
            .lines()
            .filter(|line| line.starts_with("error:") && line.ends_with(": boom"))
            .map(str::to_owned)
            .collect();
        (lines, stderr)
    };
    let first = fixture.try_build(&[]);
    let (missed, stderr) = errors(&first);
    assert!(!first.status.success(), "the miss built: {stderr}");
    assert_eq!(missed.len(), 1, "{stderr}");

    fixture.clean(&["fs-boom"]);
    let second = fixture.try_build(&[]);
    let (replayed, stderr) = errors(&second);
    assert_eq!(fixture.runs("boom"), 1, "the second build should have been a hit: {stderr}");
    assert!(!second.status.success(), "the hit built: cargo::error=boom was not replayed as such");
    assert_eq!(replayed, missed, "{stderr}");
}

// 4. Placeholders replace whole path components: a sibling of the package dir stays itself.
#[test]
fn placeholders_replace_whole_path_components_only() {
    let build = r#"
fn main() {
    Memo::new("p7").outputs(out_dir()).call(&(), |step: &mut Step| {
        ran("p7");
        let manifest = manifest_dir();
        println!("cargo:rustc-env=SIBLING={}-assets", manifest.display());
        println!("cargo:rustc-env=INSIDE={}", manifest.join("x").display());
        println!("cargo:rustc-link-search=native={}", out_dir().display());
        std::fs::write(step.dir().join("p7.txt"), "p7").unwrap();
    });
}
"#;
    let main = r#"fn main() { print!("{}\n{}\n{}\n", env!("SIBLING"), env!("INSIDE"), env!("OUT_DIR")); }"#;
    let package = Package::bin("fs-p7", build, main);
    let fixture = Fixture::single("p7", &package);
    let original = fixture.root.clone();
    fixture.build(&[]);
    let sibling = format!("{}-assets", original.display());
    let printed = run_binary("fs-p7");
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines[..2], [sibling.as_str(), &original.join("x").display().to_string()]);

    // The same package at `<tmp>/p7-copy` (renamed: its own OUT_DIR in the shared target dir).
    let copy = fixture.add("p7-copy", &package.renamed("fs-p7-copy"));
    fixture.build_at(&copy, &[]);
    assert_eq!(fixture.runs("p7"), 1, "the copy should have hit the original's entry");
    let printed = run_binary("fs-p7-copy");
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 3, "{printed}");
    assert_eq!(lines[0], sibling, "a path that only starts with the package dir was rewritten");
    assert_eq!(lines[1], copy.join("x").display().to_string(), "a path inside it was not");
    let copy_out = lines[2];
    assert_eq!(Path::new(copy_out), out_dir("fs-p7-copy"));
    let replayed = cargo_output("fs-p7-copy");
    assert_eq!(
        count(&replayed, &format!("cargo:rustc-link-search=native={copy_out}")),
        1,
        "OUT_DIR was not rewritten to the copy's:\n{replayed}"
    );
}

// 5. An entry restores exactly the files a clean run of its key produces.
#[test]
fn an_entry_restores_only_the_files_of_its_own_key() {
    let build = r#"
fn main() {
    let key = std::env::var("KEY").unwrap();
    Memo::new("keys").env("KEY").outputs(out_dir()).call(&key, |step: &mut Step| {
        ran(&key);
        let files: &[&str] = match key.as_str() {
            "k1" => &["a", "b"],
            "k2" => &["a"],
            "k3" => &["c"],
            other => panic!("unknown KEY {other}"),
        };
        for file in files {
            std::fs::write(step.dir().join(file), format!("{file} of {key}\n")).unwrap();
        }
    });
}
"#;
    let fixture = Fixture::single("keys", &Package::bin("fs-keys", build, "fn main() {}\n"));
    for key in ["k1", "k2", "k1", "k2", "k3"] {
        fixture.build(&[("KEY", key)]);
    }
    fixture.clean(&["fs-keys"]);
    fixture.build(&[("KEY", "k3")]);
    assert_eq!(fixture.runs("k3"), 1, "KEY=k3 after cargo clean should have been a hit");
    let out = out_dir("fs-keys");
    assert_eq!(listing(&out), ["c"], "the k3 entry restored files a clean run of k3 never makes");
    assert_eq!(std::fs::read_to_string(out.join("c")).unwrap(), "c of k3\n");
}

// 5. What a failed run left behind is no part of a later entry.
#[test]
fn files_of_a_failed_run_are_not_part_of_the_next_entry() {
    let build = r#"
fn main() {
    let key = std::env::var("KEY").unwrap();
    Memo::new("half").env("KEY").outputs(out_dir()).call(&key, |step: &mut Step| {
        ran(&key);
        if key == "bad" {
            std::fs::write(step.dir().join("half"), "half\n").unwrap();
            panic!("the step fails half way");
        }
        std::fs::write(step.dir().join("full"), "full\n").unwrap();
    });
}
"#;
    let fixture = Fixture::single("half", &Package::bin("fs-half", build, "fn main() {}\n"));
    let failed = fixture.try_build(&[("KEY", "bad")]);
    assert!(!failed.status.success(), "the panicking step built");
    fixture.build(&[("KEY", "good")]);
    fixture.clean(&["fs-half"]);
    fixture.build(&[("KEY", "good")]);
    assert_eq!(fixture.runs("good"), 1, "KEY=good after cargo clean should have been a hit");
    assert_eq!(listing(&out_dir("fs-half")), ["full"], "the failed run's file came back");
}

// 6. Two steps on two threads: each line reaches cargo once, cold and on hits. With other
// threads running, a step's stdout may hold their lines: it reports its own through `Step`.
#[test]
fn two_steps_on_two_threads_each_print_their_lines_once_cold_and_on_hits() {
    let build = r#"
fn main() {
    let out = out_dir();
    let met = (std::sync::Mutex::new(0), std::sync::Condvar::new());
    std::thread::scope(|scope| {
        for (name, var, value) in [("thread-a", "A", "alpha"), ("thread-b", "B", "beta")] {
            let (out, met) = (&out, &met);
            scope.spawn(move || {
                Memo::new(name).outputs(out).call(&(), |step: &mut Step| {
                    ran(name);
                    meet(met, 2);
                    step.directive(&format!("rustc-env={var}={value}"));
                    std::fs::write(step.dir().join(format!("{name}.txt")), value).unwrap();
                });
            });
        }
    });
    println!("cargo:rustc-env=LAST=1");
}
"#;
    let main = r#"fn main() { print!("{} {} {}", env!("A"), env!("B"), env!("LAST")); }"#;
    let fixture = Fixture::single("threads", &Package::bin("fs-threads", build, main));
    let lines = ["cargo:rustc-env=A=alpha", "cargo:rustc-env=B=beta", "cargo:rustc-env=LAST=1"];
    let check = |when: &str| {
        let output = cargo_output("fs-threads");
        for line in lines {
            assert_eq!(count(&output, line), 1, "{when}: {line} not exactly once in:\n{output}");
        }
        assert_eq!(run_binary("fs-threads"), "alpha beta 1");
    };
    fixture.build(&[]);
    check("cold");
    fixture.clean(&["fs-threads"]);
    fixture.build(&[]);
    assert_eq!((fixture.runs("thread-a"), fixture.runs("thread-b")), (1, 1), "not two hits");
    check("after cargo clean (hits)");
}

// 6b. Another thread prints while a step runs: a hit replays none of its lines (each reaches
// cargo once), and a step whose own lines cannot be told from the thread's is not cached.
#[test]
fn a_thread_printing_beside_a_step_has_its_lines_once_and_never_replayed() {
    let build = r#"
fn main() {
    let out = out_dir();
    let go = std::sync::Barrier::new(2);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            go.wait();
            // Prints until the second step is done: some of it while that step captures.
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 3 {
                println!("cargo:rustc-env=BESIDE{n}=1");
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        // The thread is there, silent: a step that reports its lines through `Step` is cached.
        Memo::new("reported").outputs(out.join("r")).call(&(), |step: &mut Step| {
            ran("reported");
            step.directive("rustc-env=REPORTED=1");
            std::fs::write(step.dir().join("r.txt"), "r").unwrap();
        });
        go.wait();
        Memo::new("printed").outputs(out.join("p")).call(&(), |step: &mut Step| {
            ran("printed");
            std::thread::sleep(Duration::from_millis(200));
            println!("cargo:rustc-env=PRINTED=1");
            std::fs::write(step.dir().join("p.txt"), "p").unwrap();
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}
"#;
    let main =
        r#"fn main() { print!("{} {} {}", env!("REPORTED"), env!("PRINTED"), env!("BESIDE0")); }"#;
    let fixture = Fixture::single("beside", &Package::bin("fs-beside", build, main));
    let check = |when: &str| {
        let output = cargo_output("fs-beside");
        for line in output.lines().filter(|line| line.starts_with("cargo:")) {
            assert_eq!(count(&output, line), 1, "{when}: {line} not exactly once in:\n{output}");
        }
        assert_eq!(run_binary("fs-beside"), "1 1 1", "{when}");
    };
    fixture.build(&[]);
    check("cold");
    fixture.clean(&["fs-beside"]);
    fixture.build(&[]);
    check("after cargo clean");
    assert_eq!(fixture.runs("reported"), 1, "the step that reported its line is a hit");
    assert_eq!(fixture.runs("printed"), 2, "the step whose line may be the thread's runs");
}

/// A step that prints `cargo:rustc-env=X=1`, in a build script that sets its own TMPDIR to
/// `FS_TMPDIR` first (cargo and rustc keep theirs).
const PRINTS_X_WITH_TMPDIR: &str = r#"
fn main() {
    if let Some(dir) = std::env::var_os("FS_TMPDIR") {
        // SAFETY: nothing else runs yet.
        unsafe { std::env::set_var("TMPDIR", dir) };
    }
    Memo::new("tmpdir").outputs(out_dir()).call(&(), |step: &mut Step| {
        ran("tmpdir");
        println!("cargo:rustc-env=X=1");
        std::fs::write(step.dir().join("x.txt"), "x").unwrap();
    });
}
"#;

const MAIN_PRINTS_X: &str = "fn main() { print!(\"{}\", env!(\"X\")); }\n";

// 7. Capture does not depend on TMPDIR: one that does not exist.
#[test]
fn a_missing_tmpdir_does_not_keep_the_step_output_from_being_recorded() {
    let package = Package::bin("fs-tmpdir", PRINTS_X_WITH_TMPDIR, MAIN_PRINTS_X);
    let fixture = Fixture::single("tmpdir", &package);
    let missing = fixture.tmp.join("no-such-dir");
    let env = [("FS_TMPDIR", missing.to_str().unwrap())];
    fixture.build(&env);
    assert_eq!(run_binary("fs-tmpdir"), "1");
    fixture.clean(&["fs-tmpdir"]);
    fixture.build(&env);
    assert_eq!(fixture.runs("tmpdir"), 1, "the build after cargo clean should have been a hit");
    assert_eq!(run_binary("fs-tmpdir"), "1");
}

// 7. Capture does not depend on TMPDIR: one on a full file system.
#[test]
fn a_tmpdir_on_a_full_file_system_does_not_make_the_step_panic() {
    let package = Package::bin("fs-fulltmp", PRINTS_X_WITH_TMPDIR, MAIN_PRINTS_X);
    let fixture = Fixture::single("fulltmp", &package);
    let full = fixture.tmp.join("full");
    std::fs::create_dir_all(&full).unwrap();
    // Each cargo run in a private mount namespace where `full` is a tmpfs filled to the brim.
    let mount = "mount -t tmpfs -o size=64k tmpfs \"$1\" || exit 97; \
                 head -c 1048576 /dev/zero > \"$1/fill\" 2>/dev/null; shift; exec \"$@\"";
    // Root can mount in a mount namespace of its own; anyone else needs a user namespace too.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    let namespaces: &[&str] = if root { &["--mount"] } else { &["--mount", "--map-root-user"] };
    let in_full_tmpfs = |program: &std::ffi::OsStr, args: &[&std::ffi::OsStr]| {
        let mut command = Command::new("unshare");
        command.args(namespaces).args(["sh", "-c", mount, "sh"]).arg(&full).arg(program).args(args);
        command
    };
    let probe = in_full_tmpfs(
        "sh".as_ref(),
        &["-c".as_ref(), "! echo x > \"$0/more\"".as_ref(), full.as_os_str()],
    )
    .output()
    .unwrap();
    if !probe.status.success() {
        let stderr = String::from_utf8_lossy(&probe.stderr);
        assert!(std::env::var_os("CI").is_none(), "cannot mount a full tmpfs under CI: {stderr}");
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipping: cannot mount a full tmpfs: {stderr}");
        return;
    }
    let cargo = |args: &[&str]| {
        let cargo = fixture.command(&fixture.root, args);
        let args: Vec<&std::ffi::OsStr> = cargo.get_args().collect();
        let mut command = in_full_tmpfs(cargo.get_program(), &args);
        for (name, value) in cargo.get_envs() {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        command.env("FS_TMPDIR", &full).output().unwrap()
    };
    let built = cargo(&["build"]);
    assert_success(&built, "cargo build with TMPDIR on a full file system");
    assert_eq!(run_binary("fs-fulltmp"), "1");
    assert_success(&cargo(&["clean", "-p", "fs-fulltmp"]), "cargo clean");
    assert_success(&cargo(&["build"]), "cargo build after cargo clean");
    assert_eq!(fixture.runs("tmpdir"), 1, "the build after cargo clean should have been a hit");
    assert_eq!(run_binary("fs-fulltmp"), "1");
}

// 8. `std::process::exit(0)` inside a step: what it printed still reaches cargo.
#[test]
fn what_a_step_printed_before_exiting_the_process_reaches_cargo() {
    let build = r#"
fn main() {
    Memo::new("exit").outputs(out_dir()).call(&(), |step: &mut Step| -> () {
        ran("exit");
        println!("cargo:rustc-env=X=1");
        std::fs::write(step.dir().join("x.txt"), "x").unwrap();
        std::process::exit(0);
    });
}
"#;
    let fixture = Fixture::single("exit", &Package::bin("fs-exit", build, MAIN_PRINTS_X));
    fixture.build(&[]);
    assert_eq!(run_binary("fs-exit"), "1");
    assert_eq!(count(&cargo_output("fs-exit"), "cargo:rustc-env=X=1"), 1);
}

// 11. An audited hit gives cargo each line once.
#[test]
fn an_audited_hit_gives_cargo_each_line_once() {
    let build = r#"
fn main() {
    Memo::new("audit").outputs(out_dir()).call(&(), |step: &mut Step| {
        ran("audit");
        println!("cargo:rustc-env=X=1");
        step.directive("rustc-env=Y=2");
        std::fs::write(step.dir().join("audit.txt"), "same every time").unwrap();
    });
}
"#;
    let main = r#"fn main() { print!("{} {}", env!("X"), env!("Y")); }"#;
    let fixture = Fixture::single("audit", &Package::bin("fs-audit", build, main));
    fixture.build(&[]);
    let missed = cargo_output("fs-audit");
    assert_eq!(count(&missed, "cargo:rustc-env=X=1"), 1, "{missed}");
    fixture.clean(&["fs-audit"]);
    fixture.build(&[("MEMOSHELVE_AUDIT", "1")]);
    let audited = cargo_output("fs-audit");
    for line in ["cargo:rustc-env=X=1", "cargo:rustc-env=Y=2"] {
        assert_eq!(count(&audited, line), 1, "{line} not exactly once in:\n{audited}");
    }
    assert_eq!(run_binary("fs-audit"), "1 2");
}

// 12. A relative MEMOSHELVE_DIR is not used by build scripts (each runs in its own package's
// directory): one warning each, and the next source of the order decides (here XDG_CACHE_HOME).
#[test]
fn a_relative_cache_dir_is_refused_by_build_scripts_with_one_warning_each() {
    let step = |name: &str| {
        format!(
            r#"
fn main() {{
    Memo::new("{name}").outputs(out_dir()).call(&(), |step: &mut Step| {{
        ran("{name}");
        std::fs::write(step.dir().join("{name}.txt"), "{name}").unwrap();
    }});
}}
"#
        )
    };
    let a = Package::lib("fs-rel-a", &step("rel-a"));
    let b = Package::lib("fs-rel-b", &step("rel-b"));
    let fixture = Fixture::workspace("ws", &[("a", &a), ("b", &b)]);
    // cargo runs from somewhere else: neither its directory nor the packages' is the base.
    let elsewhere = fixture.tmp.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let xdg = fixture.tmp.join("xdg");
    let build = || {
        let output = fixture
            .command(&fixture.root, &["build"])
            .env("MEMOSHELVE_DIR", "relcache")
            .env("XDG_CACHE_HOME", &xdg)
            .current_dir(&elsewhere)
            .output()
            .unwrap();
        assert_success(&output, "cargo build with MEMOSHELVE_DIR=relcache");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = build();
    let warned = stderr.matches("MEMOSHELVE_DIR=relcache is a relative path").count();
    assert_eq!(warned, 2, "one warning per build script:\n{stderr}");
    for dir in
        [fixture.root.clone(), fixture.root.join("a"), fixture.root.join("b"), elsewhere.clone()]
    {
        assert!(!dir.join("relcache").exists(), "a cache in {}", dir.display());
    }
    let root = xdg.join("memoshelve");
    for name in ["rel-a", "rel-b"] {
        let memo = memoshelve_build::Memo::new(name).dir(&root);
        assert_eq!(memo.disk_keys().len(), 1, "{name} has no entry in {}", root.display());
    }
    fixture.clean(&["fs-rel-a", "fs-rel-b"]);
    build();
    assert_eq!((fixture.runs("rel-a"), fixture.runs("rel-b")), (1, 1), "not two hits");
}

// 13. With MEMOSHELVE_DISABLE=1 the step's directory exists as with the cache on.
#[test]
fn a_disabled_cache_still_creates_the_step_directory() {
    let build = r#"
fn main() {
    Memo::new("disabled").outputs(out_dir().join("gen")).call(&(), |step: &mut Step| {
        ran("disabled");
        std::fs::write(step.dir().join("a"), "generated").unwrap();
    });
}
"#;
    let package = Package::bin("fs-disabled", build, &main_printing("gen/a"));
    let fixture = Fixture::single("disabled", &package);
    fixture.build(&[("MEMOSHELVE_DISABLE", "1")]);
    assert_eq!(run_binary("fs-disabled"), "generated");
    assert!(!fixture.cache.exists(), "a disabled cache made its root");
}

// 5, 13. A generator that skips rewriting identical files (prost-build does), run first with
// the cache disabled and then with it on: its file was there before and it left it alone, yet the
// entry must hold it, or the hit after `cargo clean` would not build.
#[test]
fn a_generator_that_skips_identical_files_is_complete_after_a_disabled_build() {
    let build = r#"
fn main() {
    println!("cargo:rerun-if-env-changed=MEMOSHELVE_DISABLE");
    Memo::new("skip-identical").outputs(out_dir()).call(&(), |step: &mut Step| {
        ran("skip-identical");
        let path = step.dir().join("gen.txt");
        if std::fs::read_to_string(&path).ok().as_deref() != Some("generated") {
            std::fs::write(&path, "generated").unwrap();
        }
    });
}
"#;
    let package = Package::bin("fs-skip-identical", build, &main_printing("gen.txt"));
    let fixture = Fixture::single("skip-identical", &package);
    fixture.build(&[("MEMOSHELVE_DISABLE", "1")]);
    assert_eq!(run_binary("fs-skip-identical"), "generated");
    fixture.build(&[]);
    assert_eq!(fixture.runs("skip-identical"), 2, "the cache on: a miss");
    fixture.clean(&["fs-skip-identical"]);
    fixture.build(&[]);
    assert_eq!(fixture.runs("skip-identical"), 2, "after cargo clean: a hit");
    assert_eq!(run_binary("fs-skip-identical"), "generated");
}

// 14 (a). A cache root that is a dangling symbolic link: one warning that says so.
#[test]
fn a_cache_root_that_is_a_dangling_link_gives_one_warning_naming_it() {
    let build = r#"
fn main() {
    Memo::new("dangling").outputs(out_dir()).call(&(), |step: &mut Step| {
        ran("dangling");
        std::fs::write(step.dir().join("d.txt"), "d").unwrap();
    });
}
"#;
    let package = Package::bin("fs-dangling", build, &main_printing("d.txt"));
    let fixture = Fixture::single("dangling", &package);
    let link = fixture.tmp.join("cache-link");
    std::os::unix::fs::symlink(fixture.tmp.join("gone"), &link).unwrap();
    fixture.build(&[("MEMOSHELVE_DIR", link.to_str().unwrap())]);
    assert_eq!(run_binary("fs-dangling"), "d");
    let output = cargo_output("fs-dangling");
    let warnings: Vec<&str> =
        output.lines().filter(|line| line.starts_with("cargo:warning=memoshelve:")).collect();
    assert_eq!(warnings.len(), 1, "{output}");
    let warning = warnings[0].to_lowercase();
    assert!(warning.contains(&link.display().to_string().to_lowercase()), "{}", warnings[0]);
    assert!(
        ["not exist", "n't exist", "dangling", "nonexistent", "non-existent", "missing"]
            .iter()
            .any(|words| warning.contains(words)),
        "the warning does not say the link points at nothing: {}",
        warnings[0]
    );
}

// 14 (b). A file the step writes itself and names in `rerun-if-changed` does not spoil the hit.
#[test]
fn a_step_output_named_in_rerun_if_changed_still_hits_after_cargo_clean() {
    let build = r#"
fn main() {
    Memo::new("own-input").outputs(out_dir()).call(&(), |step: &mut Step| {
        ran("own-input");
        let generated = step.dir().join("gen.rs");
        std::fs::write(&generated, "pub const GENERATED: &str = \"gen\";\n").unwrap();
        println!("cargo:rerun-if-changed={}", generated.display());
    });
}
"#;
    let main = "include!(concat!(env!(\"OUT_DIR\"), \"/gen.rs\"));\n\
                fn main() { print!(\"{GENERATED}\"); }\n";
    let fixture = Fixture::single("own-input", &Package::bin("fs-own-input", build, main));
    fixture.build(&[]);
    assert_eq!(run_binary("fs-own-input"), "gen");
    fixture.clean(&["fs-own-input"]);
    fixture.build(&[]);
    assert_eq!(fixture.runs("own-input"), 1, "the build after cargo clean should have been a hit");
    assert_eq!(run_binary("fs-own-input"), "gen");
}

// 14 (c). A directive with a line break: the miss and the hit give cargo the same bytes.
#[test]
fn a_directive_with_a_line_break_gives_cargo_the_same_bytes_on_a_miss_and_a_hit() {
    let build = r#"
fn main() {
    Memo::new("newline").outputs(out_dir()).call(&(), |step: &mut Step| {
        ran("newline");
        step.directive("warning=a\nb");
        std::fs::write(step.dir().join("n.txt"), "n").unwrap();
    });
}
"#;
    let fixture = Fixture::single("newline", &Package::bin("fs-newline", build, "fn main() {}\n"));
    fixture.build(&[]);
    let missed = cargo_output("fs-newline");
    fixture.clean(&["fs-newline"]);
    fixture.build(&[]);
    assert_eq!(fixture.runs("newline"), 1, "the build after cargo clean should have been a hit");
    assert_eq!(cargo_output("fs-newline"), missed, "the hit gave cargo other bytes");
}

// 14 (e). A directive a child process of the step printed is recorded and replayed.
#[test]
fn a_directive_printed_by_a_child_process_of_the_step_is_replayed() {
    let build = r#"
fn main() {
    Memo::new("child").outputs(out_dir()).call(&(), |step: &mut Step| {
        ran("child");
        let status = std::process::Command::new("sh")
            .args(["-c", "echo cargo:rustc-env=FROM_CHILD=1"])
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::write(step.dir().join("c.txt"), "c").unwrap();
    });
}
"#;
    let main = "fn main() { print!(\"{}\", env!(\"FROM_CHILD\")); }\n";
    let fixture = Fixture::single("child", &Package::bin("fs-child", build, main));
    fixture.build(&[]);
    assert_eq!(run_binary("fs-child"), "1");
    fixture.clean(&["fs-child"]);
    fixture.build(&[]);
    assert_eq!(fixture.runs("child"), 1, "the build after cargo clean should have been a hit");
    assert_eq!(run_binary("fs-child"), "1");
    assert_eq!(count(&cargo_output("fs-child"), "cargo:rustc-env=FROM_CHILD=1"), 1);
}
