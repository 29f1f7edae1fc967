//! The unit cache: `cargo-memoshelve` as `RUSTC_WRAPPER` memoizes rustc's compiles, in real
//! cargo builds of a workspace of three packages: `dep` (a library), `middle` (a library with a
//! build script, using `dep`, an `option_env!`, a `--cfg`, a feature, and the lengths of
//! `env!("CARGO_MANIFEST_DIR")` and `env!("OUT_DIR")`), and `app` (a program printing what
//! `middle` makes). Every test checks what the program prints, the
//! truth a wrong hit would change, and what the cache did with each compile
//! (`<target>/<profile>/.memoshelve/units.log`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::wrapper::{copy_tree, ok, wrapped_cargo};

fn workspace(dir: &Path) {
    let write = |path: &str, text: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "Cargo.toml",
        "[workspace]\nmembers = [\"dep\", \"middle\", \"app\"]\nresolver = \"2\"\n",
    );
    write("dep/Cargo.toml", "[package]\nname = \"dep\"\nversion = \"0.1.0\"\nedition = \"2021\"\n");
    write("dep/src/lib.rs", "pub fn value() -> &'static str {\n    \"dep-v1\"\n}\n");
    write(
        "middle/Cargo.toml",
        "[package]\nname = \"middle\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\ndep = { path = \"../dep\" }\n\n[features]\nextra = []\n\n\
         [lints.rust]\nunexpected_cfgs = { level = \"warn\", check-cfg = ['cfg(units_cfg)'] }\n",
    );
    write(
        "middle/src/lib.rs",
        "pub fn message() -> String {\n\
             let flavor = option_env!(\"UNITS_FLAVOR\").unwrap_or(\"plain\");\n\
             let cfg = if cfg!(units_cfg) { \"cfg\" } else { \"nocfg\" };\n\
             let extra = if cfg!(feature = \"extra\") { \"extra\" } else { \"base\" };\n\
             let lengths = (env!(\"CARGO_MANIFEST_DIR\").len(), env!(\"OUT_DIR\").len());\n\
             format!(\"{} {flavor} {cfg} {extra} {} {}\", dep::value(), lengths.0, lengths.1)\n\
         }\n",
    );
    write("middle/build.rs", "fn main() {}\n");
    write(
        "app/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nmiddle = { path = \"../middle\" }\n",
    );
    write("app/src/main.rs", "fn main() {\n    println!(\"{}\", middle::message());\n}\n");
}

/// One test's world: the workspace and a cache root.
struct World {
    _temp: tempfile::TempDir,
    root: PathBuf,
    cache: PathBuf,
}

impl World {
    fn new() -> World {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("ws");
        workspace(&root);
        World { cache: temp.path().join("cache"), root, _temp: temp }
    }

    /// `cargo <args>` in `dir` through the wrapper, target dir `target`, none of the caller's
    /// compile settings.
    fn cargo_in(&self, dir: &Path, target: &Path, args: &[&str]) -> Command {
        wrapped_cargo(dir, target, &self.cache, args, "UNITS_")
    }

    fn target(&self) -> PathBuf {
        self.root.join("target")
    }

    fn cargo(&self, args: &[&str]) -> Command {
        self.cargo_in(&self.root, &self.target(), args)
    }

    /// `cargo clean`, then `cargo run` with `args` added: what the program printed.
    fn clean_run(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        ok(self.cargo(&["clean", "-q"]));
        let mut run = vec!["run", "-q", "-p", "app"];
        run.extend(args);
        let mut command = self.cargo(&run);
        command.envs(env.iter().copied());
        ok(command).trim().to_owned()
    }

    /// What `app` prints for the checkout `dir` built into `target`, given the rest of the
    /// line (`middle`'s OUT_DIR is read from `target`: call it after the build).
    fn expected_in(&self, dir: &Path, target: &Path, profile: &str, rest: &str) -> String {
        let manifest = dir.join("middle").to_str().unwrap().len();
        format!("{rest} {manifest} {}", out_dir(target, profile).to_str().unwrap().len())
    }

    /// [`World::expected_in`] for the workspace's own debug build.
    fn expected(&self, rest: &str) -> String {
        self.expected_in(&self.root, &self.target(), "debug", rest)
    }
}

/// `middle`'s OUT_DIR in `target` (cargo's layout `build/middle-<hash>/out`, or
/// `build/middle/<hash>/out`).
fn out_dir(target: &Path, profile: &str) -> PathBuf {
    let build = target.join(profile).join("build");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&build).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("middle-") && entry.path().join("out").is_dir() {
            found.push(entry.path().join("out"));
        } else if name == "middle" {
            for hashed in std::fs::read_dir(entry.path()).unwrap().flatten() {
                if hashed.path().join("out").is_dir() {
                    found.push(hashed.path().join("out"));
                }
            }
        }
    }
    assert_eq!(found.len(), 1, "middle's OUT_DIR in {}: {found:?}", build.display());
    found.pop().unwrap()
}

/// The unit cache's whole record for `target`'s `profile`.
fn units_log(target: &Path, profile: &str) -> String {
    std::fs::read_to_string(target.join(profile).join(".memoshelve/units.log")).unwrap_or_default()
}

/// What the unit cache did, `(crate, what)` per compile of the library crates, then emptied.
fn take_units(target: &Path, profile: &str) -> Vec<(String, String)> {
    let path = target.join(profile).join(".memoshelve/units.log");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    let mut units: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let name = fields.next()?.to_owned();
            let what = fields.next().unwrap_or("").to_owned();
            ["dep", "middle"].contains(&name.as_str()).then_some((name, what))
        })
        .collect();
    units.sort();
    units
}

/// A change to build with: cargo's arguments, variables, and what the program then prints.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

fn both(dep: &str, middle: &str) -> Vec<(String, String)> {
    vec![("dep".to_owned(), dep.to_owned()), ("middle".to_owned(), middle.to_owned())]
}

#[test]
fn library_units_are_restored_after_clean_and_the_program_is_the_same() {
    let world = World::new();
    let printed = world.clean_run(&[], &[]);
    let expected = world.expected("dep-v1 plain nocfg base");
    assert_eq!(printed, expected);
    assert_eq!(take_units(&world.target(), "debug"), both("recorded", "recorded"));
    assert_eq!(world.clean_run(&[], &[]), expected);
    assert_eq!(take_units(&world.target(), "debug"), both("restored", "restored"));
    // Cargo finds what a hit left fresh: nothing compiles again.
    let output = world.cargo(&["build", "-v", "-p", "app"]).output().unwrap();
    assert!(output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!said.contains("Running `"), "a restored unit was compiled again:\n{said}");
    assert!(said.contains("Fresh middle"), "{said}");
    assert_eq!(take_units(&world.target(), "debug"), []);
}

#[test]
fn each_input_a_unit_reads_is_a_miss_and_going_back_hits() {
    let world = World::new();
    let root = &world.root;
    assert_eq!(world.clean_run(&[], &[]), world.expected("dep-v1 plain nocfg base"));
    take_units(&world.target(), "debug");

    // A source file of a dependency: both miss (`middle` reads `dep`'s new metadata).
    let source = root.join("dep/src/lib.rs");
    let original = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, original.replace("dep-v1", "dep-v2")).unwrap();
    assert_eq!(world.clean_run(&[], &[]), world.expected("dep-v2 plain nocfg base"));
    assert_eq!(take_units(&world.target(), "debug"), both("recorded", "recorded"));
    std::fs::write(&source, &original).unwrap();
    assert_eq!(world.clean_run(&[], &[]), world.expected("dep-v1 plain nocfg base"));
    assert_eq!(take_units(&world.target(), "debug"), both("restored", "restored"));

    // A variable `option_env!` reads, a `--cfg`, a feature: `middle` misses, `dep` hits.
    let cases: [Case<'_>; 3] = [
        (&[], &[("UNITS_FLAVOR", "spicy")], "dep-v1 spicy nocfg base"),
        (&[], &[("RUSTFLAGS", "--cfg units_cfg")], "dep-v1 plain cfg base"),
        (&["--features", "middle/extra"], &[], "dep-v1 plain nocfg extra"),
    ];
    for (args, env, printed) in cases {
        assert_eq!(world.clean_run(args, env), world.expected(printed), "{args:?} {env:?}");
        let units = take_units(&world.target(), "debug");
        let middle = &units.iter().find(|(name, _)| name == "middle").unwrap().1;
        assert_eq!(middle, "recorded", "{args:?} {env:?}: {units:?}");
    }
    // And back: every one hits.
    for (args, env, printed) in cases {
        assert_eq!(world.clean_run(args, env), world.expected(printed));
        let units = take_units(&world.target(), "debug");
        assert!(units.iter().all(|(_, what)| what == "restored"), "{args:?} {env:?}: {units:?}");
    }

    // Another profile is a compile of its own.
    let printed = world.clean_run(&["--release"], &[]);
    let release = world.expected_in(root, &world.target(), "release", "dep-v1 plain nocfg base");
    assert_eq!(printed, release);
    assert_eq!(take_units(&world.target(), "release"), both("recorded", "recorded"));
}

#[test]
fn at_another_target_dir_a_unit_hits_only_where_what_it_read_holds() {
    let world = World::new();
    let rest = "dep-v1 plain nocfg base";
    let printed = world.clean_run(&["--release"], &[]);
    assert_eq!(printed, world.expected_in(&world.root, &world.target(), "release", rest));
    take_units(&world.target(), "release");
    // The same checkout, a target dir of another length: `middle` baked the length of its
    // OUT_DIR in (`env!("OUT_DIR").len()`) without spelling it (no debug info in a release
    // build), so its entry must not serve; `dep` read nothing that moved, and hits.
    let other_target = world.root.with_file_name("another-target-dir");
    let run = ["run", "-q", "--release", "-p", "app"];
    let printed = ok(world.cargo_in(&world.root, &other_target, &run));
    assert_eq!(printed.trim(), world.expected_in(&world.root, &other_target, "release", rest));
    let log = units_log(&other_target, "release");
    assert_eq!(take_units(&other_target, "release"), both("restored", "recorded"), "{log}");
    assert!(log.contains("missed: env OUT_DIR"), "{log}");
}

#[test]
fn a_workspace_unit_holds_at_its_checkout_path_only() {
    let world = World::new();
    assert_eq!(world.clean_run(&[], &[]), world.expected("dep-v1 plain nocfg base"));
    take_units(&world.target(), "debug");
    // rustc writes its working directory and the sources' paths into a library's metadata:
    // a workspace crate's outputs spell the checkout, and its entry holds only there.
    let moved = world.root.with_file_name("moved-elsewhere");
    copy_tree(&world.root, &moved);
    let _ = std::fs::remove_dir_all(moved.join("target"));
    let target = moved.join("target");
    let printed = ok(world.cargo_in(&moved, &target, &["run", "-q", "-p", "app"]));
    assert_eq!(
        printed.trim(),
        world.expected_in(&moved, &target, "debug", "dep-v1 plain nocfg base")
    );
    let log = units_log(&target, "debug");
    assert_eq!(take_units(&target, "debug"), both("recorded", "recorded"), "{log}");
    assert!(log.contains("missed: bound to "), "{log}");
}

#[test]
fn switched_off_every_compile_goes_straight_to_rustc() {
    let world = World::new();
    for (name, value) in [("MEMOSHELVE_DISABLE", "1"), ("MEMOSHELVE_UNITS", "off")] {
        let printed = world.clean_run(&[], &[(name, value)]);
        assert_eq!(printed, world.expected("dep-v1 plain nocfg base"));
        assert_eq!(take_units(&world.target(), "debug"), [], "{name}={value}");
    }
    // Without tracing, a compile that links is not cached (its linker's inputs would not be
    // known); the libraries still are.
    let printed = world.clean_run(&[], &[("MEMOSHELVE_BUILD_SCRIPTS_TRACE", "0")]);
    assert_eq!(printed, world.expected("dep-v1 plain nocfg base"));
    let app = app_unit(&world.target());
    assert_eq!(
        app,
        "passed through (links or runs a proc macro; MEMOSHELVE_BUILD_SCRIPTS_TRACE=0)"
    );
    assert_eq!(take_units(&world.target(), "debug"), both("recorded", "recorded"));
}

/// A `MEMOSHELVE_RUSTC_WRAPPER` that notes each crate it compiles in `log`.
fn noting_wrapper(dir: &Path, log: &Path) -> PathBuf {
    let script = dir.join("noting-wrapper");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprev=\nfor arg in \"$@\"; do\n  if [ \"$prev\" = --crate-name ]; then echo \"$arg\" >> '{}'; fi\n  prev=$arg\ndone\nexec \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&script).status().unwrap();
    script
}

#[test]
fn the_users_wrapper_runs_the_compiles_that_miss() {
    let world = World::new();
    let log = world.root.with_file_name("compiled");
    let wrapper = noting_wrapper(world.root.parent().unwrap(), &log);
    let inner = [("MEMOSHELVE_RUSTC_WRAPPER", wrapper.to_str().unwrap())];
    let compiled = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        let mut names: Vec<String> = text.lines().map(str::to_owned).collect();
        names.sort();
        names
    };
    assert_eq!(world.clean_run(&[], &inner), world.expected("dep-v1 plain nocfg base"));
    assert!(compiled().contains(&"middle".to_owned()));
    assert_eq!(world.clean_run(&[], &inner), world.expected("dep-v1 plain nocfg base"));
    let second = compiled();
    assert!(
        !second.contains(&"middle".to_owned()) && !second.contains(&"dep".to_owned()),
        "{second:?}"
    );
    assert!(second.contains(&"app".to_owned()), "{second:?}");
}

#[test]
fn damaged_entries_cost_a_compile_never_a_wrong_build() {
    let world = World::new();
    let printed = world.clean_run(&[], &[]);
    let expected = world.expected("dep-v1 plain nocfg base");
    assert_eq!(printed, expected);
    take_units(&world.target(), "debug");
    for blob in files_under(&world.cache.join("blobs-b3")) {
        std::fs::write(blob, "cut").unwrap();
    }
    assert_eq!(world.clean_run(&[], &[]), expected);
    assert_eq!(take_units(&world.target(), "debug"), both("recorded", "recorded"));
    assert_eq!(world.clean_run(&[], &[]), expected);
    assert_eq!(take_units(&world.target(), "debug"), both("restored", "restored"));
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found
}

#[test]
fn a_compile_killed_mid_way_leaves_nothing_wrong() {
    let world = World::new();
    let dir = world.root.parent().unwrap();
    let gate = dir.join("gate");
    // The user's wrapper stops `middle`'s compile until the gate opens, having said which
    // process runs it (the cache's, its parent).
    let wrapper = dir.join("gated-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$*\" in *'--crate-name middle '*)\n  echo $PPID > '{gate}.ready'\n  while [ ! -e '{gate}' ]; do sleep 0.05; done;;\nesac\nexec \"$@\"\n",
            gate = gate.display()
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&wrapper).status().unwrap();
    let mut build = world
        .cargo(&["build", "-q", "-p", "app"])
        .env("MEMOSHELVE_RUSTC_WRAPPER", &wrapper)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = gate.with_extension("ready");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !ready.exists() {
        assert!(std::time::Instant::now() < deadline, "middle's compile never started");
        assert!(build.try_wait().unwrap().is_none(), "the build ended before middle compiled");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let cache_process = std::fs::read_to_string(&ready).unwrap();
    assert!(Command::new("kill").args(["-KILL", cache_process.trim()]).status().unwrap().success());
    std::fs::write(&gate, "").unwrap();
    assert!(!build.wait().unwrap().success(), "a killed compile fails the build");
    take_units(&world.target(), "debug");

    let printed = ok(world.cargo(&["run", "-q", "-p", "app"]));
    let expected = world.expected("dep-v1 plain nocfg base");
    assert_eq!(printed.trim(), expected);
    let units = take_units(&world.target(), "debug");
    assert_eq!(units, [("middle".to_owned(), "recorded".to_owned())]);
    // `dep`'s entry was made through the user's wrapper, which its key holds: compiled again.
    assert_eq!(world.clean_run(&[], &[]), expected);
    assert_eq!(take_units(&world.target(), "debug"), both("recorded", "restored"));
    assert_eq!(world.clean_run(&[], &[]), expected);
    assert_eq!(take_units(&world.target(), "debug"), both("restored", "restored"));
}

#[test]
fn builds_side_by_side_share_the_cache_and_both_are_right() {
    let world = World::new();
    let other = world.root.with_file_name("other");
    copy_tree(&world.root, &other);
    let start = |dir: &Path, target: &Path| {
        world
            .cargo_in(dir, target, &["run", "-q", "-p", "app"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let other_target = other.join("target");
    let (first, second) = (start(&world.root, &world.target()), start(&other, &other_target));
    for (child, dir) in [(first, &world.root), (second, &other)] {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let printed = String::from_utf8(output.stdout).unwrap();
        assert_eq!(
            printed.trim(),
            world.expected_in(dir, &dir.join("target"), "debug", "dep-v1 plain nocfg base")
        );
    }
    assert_eq!(world.clean_run(&[], &[]), world.expected("dep-v1 plain nocfg base"));
    let units = take_units(&world.target(), "debug");
    assert!(units.iter().all(|(_, what)| what == "restored"), "{units:?}");
}

/// `cargo memoshelve <args> --json` against the world's cache.
fn cli_json(world: &World, args: &[&str]) -> serde_json::Value {
    let mut command = Command::new(crate::cli_binary());
    command.args(["memoshelve", "--json", "--dir"]).arg(&world.cache).args(args);
    serde_json::from_str(&ok(command)).unwrap()
}

#[test]
fn explain_show_and_stats_speak_of_units() {
    let world = World::new();
    world.clean_run(&[], &[]);
    let source = world.root.join("dep/src/lib.rs");
    let original = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, original.replace("dep-v1", "dep-v2")).unwrap();
    world.clean_run(&[], &[]);

    // The newest compile of `dep` says which file changed, and what the two compiles read.
    let explained = cli_json(&world, &["explain", "rustc.dep"]);
    let missed = explained["missed"].as_str().unwrap();
    assert_eq!(missed, "file {memoshelve:manifest}/src/lib.rs", "{explained}");
    let changes = explained["changes"].as_array().unwrap();
    assert!(changes.iter().any(|change| change["part"] == missed), "{explained}");
    // `middle` read `dep`'s new metadata: a level-1 part.
    let explained = cli_json(&world, &["explain", "rustc.middle"]);
    assert_eq!(explained["missed"], "extern:dep", "{explained}");

    // `show` lists what a program's compile read: the sources, and, traced, the linker's.
    let list = cli_json(&world, &["list", "--name", "rustc.app"]);
    let key = list.as_array().unwrap()[0]["key"].as_str().unwrap().to_owned();
    let shown = cli_json(&world, &["show", &key]);
    let unit = &shown["unit"];
    let sources = unit["files"].as_array().unwrap();
    assert!(sources.iter().any(|file| file[0] == "{memoshelve:manifest}/src/main.rs"), "{unit}");
    let traced = unit["traced"]["programs"].as_array().unwrap();
    assert!(!traced.is_empty(), "the linker ran: {unit}");

    let stats = cli_json(&world, &["stats"]);
    // Two compiles each of `dep`, `middle` and `app`, one of `middle`'s build script.
    assert_eq!(stats["kinds"]["rustc units"]["entries"], 7, "{stats}");
}

#[test]
fn a_hit_leaves_incremental_state_that_the_next_edit_still_builds_right_from() {
    // `dep` is a workspace member: cargo compiles it with `-C incremental` in a debug build.
    let world = World::new();
    let source = world.root.join("dep/src/lib.rs");
    let original = std::fs::read_to_string(&source).unwrap();
    let build = |version: &str| {
        std::fs::write(&source, original.replace("dep-v1", version)).unwrap();
        let printed = ok(world.cargo(&["run", "-q", "-p", "app"]));
        let dep = take_units(&world.target(), "debug").into_iter().find(|(name, _)| name == "dep");
        (printed.trim().to_owned(), dep.map(|(_, what)| what))
    };
    let expected = |version: &str| world.expected(&format!("{version} plain nocfg base"));
    let (printed, dep) = build("dep-v1");
    assert_eq!((printed, dep.as_deref()), (expected("dep-v1"), Some("recorded")));
    let (printed, dep) = build("dep-v2");
    assert_eq!((printed, dep.as_deref()), (expected("dep-v2"), Some("recorded")));
    // Back to v1: a hit, over an incremental directory that holds v2's compile.
    let (printed, dep) = build("dep-v1");
    assert_eq!((printed, dep.as_deref()), (expected("dep-v1"), Some("restored")));
    // The next edit compiles incrementally from that state, and is right.
    let (printed, dep) = build("dep-v3");
    assert_eq!((printed, dep.as_deref()), (expected("dep-v3"), Some("recorded")));
    let (printed, dep) = build("dep-v2");
    assert_eq!((printed, dep.as_deref()), (expected("dep-v2"), Some("restored")));
}

/// An executable script at `path`.
fn script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    Command::new("chmod").arg("+x").arg(path).status().unwrap();
}

/// What the unit cache did with `app`'s compile.
fn app_unit(target: &Path) -> String {
    let log = units_log(target, "debug");
    let line =
        log.lines().find(|line| line.starts_with("app\t")).unwrap_or_else(|| panic!("{log}"));
    line.split('\t').nth(1).unwrap().to_owned()
}

#[test]
fn another_linker_or_rustc_is_a_miss() {
    let world = World::new();
    let dir = world.root.parent().unwrap();
    let rest = "dep-v1 plain nocfg base";
    assert_eq!(world.clean_run(&[], &[]), world.expected(rest));
    assert_eq!(app_unit(&world.target()), "recorded");
    assert_eq!(world.clean_run(&[], &[]), world.expected(rest));
    assert_eq!(app_unit(&world.target()), "restored");

    // A `cc` first on PATH (rustc links through `cc`): the program's link read another linker.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    script(&bin.join("cc"), "#!/bin/sh\nexec /usr/bin/cc \"$@\"\n");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    assert_eq!(world.clean_run(&[], &[("PATH", &path)]), world.expected(rest));
    let log = units_log(&world.target(), "debug");
    assert_eq!(app_unit(&world.target()), "recorded", "{log}");
    assert!(log.contains("missed: "), "{log}");

    // A `RUSTC` that answers `-vV` as the toolchain does but compiles with a `--cfg` of its
    // own: what it makes differs, so nothing of the toolchain's may serve it.
    let sysroot = Command::new("rustc").args(["--print", "sysroot"]).output().unwrap();
    let real = Path::new(String::from_utf8(sysroot.stdout).unwrap().trim()).join("bin/rustc");
    let flagged = dir.join("flagged-rustc");
    script(
        &flagged,
        &format!(
            "#!/bin/sh\ncase \"$*\" in *--crate-name*) exec '{0}' \"$@\" --cfg units_cfg;; esac\nexec '{0}' \"$@\"\n",
            real.display()
        ),
    );
    let rustc = flagged.to_str().unwrap();
    assert_eq!(world.clean_run(&[], &[("RUSTC", rustc)]), world.expected("dep-v1 plain cfg base"));
    assert_eq!(take_units(&world.target(), "debug"), both("recorded", "recorded"));
}

#[test]
fn a_proc_macro_a_dependency_re_exports_is_watched_too() {
    // `user` names only `facade`, which re-exports `pm`'s macro: rustc finds the macro in the
    // deps directory and runs it, and it reads a file nothing declares.
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("ws");
    let secret = temp.path().join("secret.txt");
    let write = |path: &str, text: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "Cargo.toml",
        "[workspace]\nmembers = [\"pm\", \"facade\", \"user\"]\nresolver = \"2\"\n",
    );
    let manifest = |name: &str, extra: &str| {
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n{extra}")
    };
    write("pm/Cargo.toml", &manifest("pm", "\n[lib]\nproc-macro = true\n"));
    write(
        "pm/src/lib.rs",
        &format!(
            "#[proc_macro]\npub fn val(_: proc_macro::TokenStream) -> proc_macro::TokenStream {{\n\
                 let text = std::fs::read_to_string({:?}).unwrap();\n\
                 format!(\"{{:?}}\", text.trim()).parse().unwrap()\n}}\n",
            secret.to_str().unwrap()
        ),
    );
    write(
        "facade/Cargo.toml",
        &manifest("facade", "\n[dependencies]\npm = { path = \"../pm\" }\n"),
    );
    write("facade/src/lib.rs", "pub use pm::val;\n");
    write(
        "user/Cargo.toml",
        &manifest("user", "\n[dependencies]\nfacade = { path = \"../facade\" }\n"),
    );
    write("user/src/lib.rs", "pub fn secret() -> &'static str { facade::val!() }\n");
    write("user/src/main.rs", "fn main() { println!(\"{}\", user::secret()); }\n");
    let world = World { _temp: temp, cache: root.with_file_name("cache"), root };
    let mut printed = Vec::new();
    for (text, expected) in [("one", "recorded"), ("two", "recorded"), ("one", "restored")] {
        std::fs::write(&secret, text).unwrap();
        ok(world.cargo(&["clean", "-q"]));
        printed.push(ok(world.cargo(&["run", "-q", "-p", "user"])).trim().to_owned());
        let log = units_log(&world.target(), "debug");
        let line = log.lines().find(|line| line.starts_with("user\t")).unwrap();
        assert_eq!(line.split('\t').nth(1), Some(expected), "{text}: {log}");
    }
    assert_eq!(printed, ["one", "two", "one"]);
}
