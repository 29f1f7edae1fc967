//! Transparent mode: `cargo-memoshelve` as `RUSTC_WRAPPER` memoizes build scripts that know
//! nothing of memoshelve, in real cargo builds.
//!
//! Each test makes a workspace: `provider` (`links = "prov"`, a build script that writes a
//! header from `input.txt` into OUT_DIR and hands its directory down as `DEP_PROV_INCLUDE`) and
//! `user` (whose build script reads the provider's `DEP_*` values and generates code from them).
//! Every real run of a script appends a line to `RUNS`, so a restored script is one that did not
//! append; the runner's own record (`<target>/debug/build/.memoshelve/runs.log`) says what it
//! did with each run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PROVIDER_BUILD: &str = r#"
use std::io::Write as _;
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let mode = std::env::var("PROV_MODE").unwrap_or_default();
    if std::env::var_os("PROV_FAIL").is_some() {
        eprintln!("provider: told to fail");
        std::process::exit(3);
    }
    let input = std::fs::read_to_string("input.txt").unwrap();
    std::fs::create_dir_all(out.join("include")).unwrap();
    let undeclared = std::env::var("PROV_UNDECLARED").unwrap_or_default();
    std::fs::write(out.join("include/prov.h"), format!("{}{mode}{undeclared}", input.trim()))
        .unwrap();
    let features = std::env::var_os("CARGO_FEATURE_EXTRA").map_or("", |_| "+extra");
    std::fs::write(out.join("gen.rs"), format!("pub const BUILT: &str = {features:?};")).unwrap();
    let runs = std::env::var("RUNS").unwrap();
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(runs).unwrap();
    file.write_all(b"provider\n").unwrap();
    if std::env::var_os("PROV_EMBED").is_some() {
        // An object whose debug information spells OUT_DIR (its compile directory).
        std::fs::write(out.join("embed.c"), "int prov_embed = 1;\n").unwrap();
        let status = std::process::Command::new("cc")
            .args(["-g", "-c", "embed.c", "-o", "paths.bin"])
            .current_dir(&out)
            .status()
            .unwrap();
        assert!(status.success());
    }
    if std::env::var_os("PROV_TOUCH_INPUT").is_some() {
        // Its declared input, rewritten while it runs (the same bytes: only the time says so).
        std::fs::write("input.txt", &input).unwrap();
    }
    if std::env::var_os("PROV_NONDET").is_some() {
        let now = std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_nanos();
        std::fs::write(out.join("stamp.txt"), now.to_string()).unwrap();
    }
    if std::env::var_os("PROV_PC").is_some() {
        std::fs::create_dir_all(out.join("lib/pkgconfig")).unwrap();
        let pc = format!("prefix={}\nlibdir=${{prefix}}/lib\n", out.display());
        std::fs::write(out.join("lib/pkgconfig/prov.pc"), pc).unwrap();
    }
    if std::env::var_os("PROV_OUTSIDE").is_some() {
        // `OUT_DIR/../../..` is the profile's directory in cargo's layout.
        std::fs::write(out.join("../../../prov-stray.txt"), "x").unwrap();
    }
    if std::env::var_os("PROV_LINK").is_some() {
        std::os::unix::fs::symlink("/etc", out.join("escape")).unwrap();
    }
    if let Some(gate) = std::env::var_os("PROV_WAIT") {
        // Says who runs it (the runner is its parent), then waits for the test to open the gate.
        let gate = std::path::PathBuf::from(gate);
        let pids = format!("{} {}", std::os::unix::process::parent_id(), std::process::id());
        std::fs::write(gate.with_extension("tmp"), pids).unwrap();
        std::fs::rename(gate.with_extension("tmp"), gate.with_extension("ready")).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while !gate.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    if std::env::var_os("PROV_EMPTY").is_some() {
        // An empty directory is valid output: a dependent lists it.
        std::fs::create_dir_all(out.join("empty")).unwrap();
        println!("cargo:empty={}", out.join("empty").display());
    }
    if std::env::var_os("PROV_LINKED").is_some() {
        // Package files that are symbolic links to files and a directory outside the package.
        let file = std::fs::read_to_string("linked.txt").unwrap();
        let dir = std::fs::read_to_string("linkdir/x.txt").unwrap();
        std::fs::write(out.join("include/prov.h"), format!("{}{}", file.trim(), dir.trim()))
            .unwrap();
    }
    if std::env::var_os("PROV_CDIR").is_some() {
        // C with a compiled-in directory of OUT_DIR, which the built program looks in.
        std::fs::create_dir_all(out.join("share")).unwrap();
        std::fs::write(out.join("share/data.txt"), "d").unwrap();
        let source = format!(
            "const char *prov_share(void) {{ return \"{}/share\"; }}\n",
            out.display()
        );
        std::fs::write(out.join("share.c"), source).unwrap();
        let run = |program: &str, args: &[&str]| {
            let status = std::process::Command::new(program)
                .args(args)
                .current_dir(&out)
                .status()
                .unwrap();
            assert!(status.success(), "{program} {args:?}");
        };
        run("cc", &["-g", "-c", "share.c", "-o", "share.o"]);
        run("ar", &["rcs", "libprovshare.a", "share.o"]);
        println!("cargo:rustc-link-search=native={}", out.display());
        println!("cargo:rustc-link-lib=static=provshare");
        println!("cargo:rustc-cfg=prov_cdir");
    }
    println!("cargo:rustc-check-cfg=cfg(prov_cdir)");
    if let Some(path) = std::env::var_os("PROV_SYSTEM_FILE") {
        // A file of the machine's (a system header), read and not declared.
        let _ = std::fs::read(path);
    }
    if std::env::var_os("PROV_DECLARE_OUT").is_some() {
        println!("cargo:rerun-if-env-changed=OUT_DIR");
    }
    // Not a directive: cargo keeps it in the unit's `output` file all the same.
    println!("provider: a line for the output file");
    if std::env::var_os("PROV_OWN_INPUT").is_some() {
        std::fs::write(out.join("made.txt"), "x").unwrap();
        println!("cargo:rerun-if-changed={}", out.join("made.txt").display());
    }
    eprintln!("provider: built in {}", out.display());
    println!("cargo:rerun-if-changed=input.txt");
    println!("cargo::rerun-if-env-changed=PROV_MODE");
    println!("cargo:include={}", out.join("include").display());
    println!("cargo:core:path=odd-name");
    println!("cargo:rustc-check-cfg=cfg(prov_built)");
    println!("cargo:rustc-cfg=prov_built");
}
"#;

const USER_BUILD: &str = r#"
use std::io::Write as _;
fn main() {
    let include = std::env::var("DEP_PROV_INCLUDE").unwrap();
    let header = std::fs::read_to_string(format!("{include}/prov.h")).unwrap();
    let odd = std::env::var("DEP_PROV_CORE:PATH").unwrap_or_else(|_| "missing".to_owned());
    let wrapper = std::env::var("RUSTC_WRAPPER").unwrap_or_default();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(
        out.join("h.rs"),
        format!("pub const H: &str = {:?}; pub const ODD: &str = {odd:?};", header.trim()),
    )
    .unwrap();
    let runs = std::env::var("RUNS").unwrap();
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(runs).unwrap();
    file.write_all(format!("user wrapper={wrapper}\n").as_bytes()).unwrap();
    if let Ok(empty) = std::env::var("DEP_PROV_EMPTY") {
        assert_eq!(std::fs::read_dir(empty).unwrap().count(), 0);
    }
    if std::env::var_os("USER_DECLARE_DEP").is_some() {
        println!("cargo:rerun-if-env-changed=DEP_PROV_INCLUDE");
    }
    if std::env::var_os("USER_EMBED").is_some() {
        // As a C compile's debug info spells the headers it read.
        std::fs::write(out.join("deps.bin"), format!("\0{include}\0")).unwrap();
        println!("cargo:rustc-link-search=native={include}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
"#;

/// A workspace at `dir` (see the module's doc).
fn workspace(dir: &Path) {
    let write = |path: &str, text: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("Cargo.toml", "[workspace]\nmembers = [\"provider\", \"user\"]\nresolver = \"2\"\n");
    write(
        "provider/Cargo.toml",
        "[package]\nname = \"provider\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
         links = \"prov\"\n\n[features]\nextra = []\n",
    );
    write("provider/build.rs", PROVIDER_BUILD);
    write("provider/input.txt", "v1\n");
    write(
        "provider/src/lib.rs",
        "include!(concat!(env!(\"OUT_DIR\"), \"/gen.rs\"));\n\
         #[cfg(prov_built)]\npub const CFG: bool = true;\n\
         #[cfg(prov_cdir)]\nunsafe extern \"C\" { fn prov_share() -> *const std::ffi::c_char; }\n\
         /// The directory the C code names, as the built program sees it.\n\
         #[cfg(prov_cdir)]\npub fn share() -> std::path::PathBuf {\n\
             let name = unsafe { std::ffi::CStr::from_ptr(prov_share()) };\n\
             std::path::PathBuf::from(name.to_str().unwrap())\n}\n\
         #[cfg(prov_cdir)]\n#[test]\nfn the_compiled_in_directory_is_there() {\n\
             assert!(share().join(\"data.txt\").is_file(), \"{}\", share().display());\n}\n",
    );
    write(
        "user/Cargo.toml",
        "[package]\nname = \"user\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nprovider = { path = \"../provider\" }\n\n\
         [features]\nextra = [\"provider/extra\"]\n",
    );
    write("user/build.rs", USER_BUILD);
    write(
        "user/src/main.rs",
        "include!(concat!(env!(\"OUT_DIR\"), \"/h.rs\"));\n\
         fn main() { println!(\"{} {} {}{}\", H, ODD, provider::CFG, provider::BUILT); }\n\
         #[test]\nfn generated() { assert!(provider::CFG); assert!(!H.is_empty()); }\n",
    );
}

/// One test's world: a workspace, a cache root, the runs file.
pub(crate) struct World {
    pub(crate) _temp: tempfile::TempDir,
    pub(crate) root: PathBuf,
    pub(crate) cache: PathBuf,
    pub(crate) runs: PathBuf,
}

impl World {
    pub(crate) fn new() -> World {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("ws");
        workspace(&root);
        World {
            cache: temp.path().join("cache"),
            runs: temp.path().join("runs"),
            root,
            _temp: temp,
        }
    }

    /// `cargo <args>` in `dir` with the wrapper on, its target dir `target`.
    pub(crate) fn cargo_in(&self, dir: &Path, target: &Path, args: &[&str]) -> Command {
        let mut command = wrapped_cargo(dir, target, &self.cache, args, "PROV_");
        command
            .env("MEMOSHELVE_BUILD_SCRIPTS_MIN_TIME", "0")
            .env("RUNS", &self.runs)
            // The scripts' own record of their runs is no output of theirs.
            .env("MEMOSHELVE_BUILD_SCRIPTS_IGNORE", &self.runs);
        command
    }

    pub(crate) fn target(&self) -> PathBuf {
        self.root.join("target")
    }

    pub(crate) fn cargo(&self, args: &[&str]) -> Command {
        self.cargo_in(&self.root, &self.target(), args)
    }

    /// The lines real script runs appended, then emptied.
    pub(crate) fn take_runs(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.runs).unwrap_or_default();
        let _ = std::fs::remove_file(&self.runs);
        text.lines().map(str::to_owned).collect()
    }
}

/// `cargo <args>` in `dir` with the wrapper on (target dir `target`, cache root `cache`), as a
/// user would run it: none of the caller's memoshelve or compile settings (CI sets
/// `RUSTFLAGS="-D warnings"`: these builds are a user's, and their key must not depend on the
/// test runner's flags), nor its variables that start with `prefix` (the test's own knobs).
pub(crate) fn wrapped_cargo(
    dir: &Path,
    target: &Path,
    cache: &Path,
    args: &[&str],
    prefix: &str,
) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(args).current_dir(dir);
    crate::without_callers_cargo_env(&mut command);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("MEMOSHELVE_")
            || name.starts_with(prefix)
            || name.ends_with("RUSTFLAGS")
            || ["RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_BUILD_RUSTC_WRAPPER"]
                .contains(&name.as_str())
        {
            command.env_remove(name);
        }
    }
    command
        .env("RUSTC_WRAPPER", crate::cli_binary())
        .env("CARGO_TARGET_DIR", target)
        .env("MEMOSHELVE_DIR", cache);
    command
}

/// Runs `command`, asserting success; its stdout.
pub(crate) fn ok(mut command: impl std::borrow::BorrowMut<Command>) -> String {
    let command = command.borrow_mut();
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?} failed:\n{}", describe(&output));
    String::from_utf8(output.stdout).unwrap()
}

pub(crate) fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The runner's record for `target`: `(package, what)` per script run, then emptied.
pub(crate) fn take_log(target: &Path) -> Vec<(String, String)> {
    let path = target.join("debug/build/.memoshelve/runs.log");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    text.lines()
        .map(|line| {
            let mut fields = line.split('\t');
            (fields.next().unwrap().to_owned(), fields.next().unwrap_or("").to_owned())
        })
        .collect()
}

fn sorted(mut log: Vec<(String, String)>) -> Vec<(String, String)> {
    log.sort();
    log
}

fn pair(package: &str, what: &str) -> (String, String) {
    (package.to_owned(), what.to_owned())
}

#[test]
fn a_clean_rebuild_runs_no_build_script_here_or_at_another_path() {
    let world = World::new();
    let first = ok(world.cargo(&["run", "-q", "-p", "user"]));
    assert_eq!(first.trim(), "v1 odd-name true");
    assert_eq!(world.take_runs().len(), 2, "both scripts ran cold");
    assert_eq!(
        sorted(take_log(&world.target())),
        [pair("provider", "recorded"), pair("user", "recorded")]
    );

    ok(world.cargo(&["clean", "-q"]));
    assert_eq!(ok(world.cargo(&["run", "-q", "-p", "user"])), first);
    assert_eq!(world.take_runs(), Vec::<String>::new(), "no real script ran");
    assert_eq!(
        sorted(take_log(&world.target())),
        [pair("provider", "restored"), pair("user", "restored")]
    );
    // The replayed directives name this build's OUT_DIR, and `cargo test` links.
    ok(world.cargo(&["test", "-q", "-p", "user"]));

    // Another checkout path, another target dir.
    let moved = world.root.with_file_name("moved");
    copy_tree(&world.root, &moved);
    std::fs::remove_dir_all(moved.join("target")).unwrap();
    let other_target = world.root.with_file_name("other-target");
    assert_eq!(ok(world.cargo_in(&moved, &other_target, &["run", "-q", "-p", "user"])), first);
    assert_eq!(world.take_runs(), Vec::<String>::new(), "no real script ran at the other path");
    assert_eq!(
        sorted(take_log(&other_target)),
        [pair("provider", "restored"), pair("user", "restored")]
    );
    let output = std::fs::read_dir(other_target.join("debug/build"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("output"))
        .find(|output| std::fs::read_to_string(output).is_ok_and(|text| text.contains("include=")))
        .expect("the provider's output");
    let output = std::fs::read_to_string(output).unwrap();
    let include = output.lines().find_map(|line| line.strip_prefix("cargo:include=")).unwrap();
    assert!(include.starts_with(other_target.to_str().unwrap()), "{include}");
    assert!(Path::new(include).join("prov.h").is_file(), "{include}");
}

#[test]
fn each_changed_input_is_a_miss_and_the_build_is_right() {
    let world = World::new();
    ok(world.cargo(&["build", "-q", "-p", "user"]));
    world.take_runs();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        ok(world.cargo(&["clean", "-q"]));
        let mut command = world.cargo(&[&["run", "-q", "-p", "user"], args].concat());
        for (name, value) in env {
            command.env(name, value);
        }
        let printed = ok(command);
        (printed.trim().to_owned(), world.take_runs())
    };
    std::fs::write(world.root.join("provider/input.txt"), "v2\n").unwrap();
    let (printed, runs) = run(&[], &[]);
    assert_eq!(printed, "v2 odd-name true");
    assert!(runs.contains(&"provider".to_owned()), "an edited rerun-if-changed input: {runs:?}");

    let (printed, runs) = run(&[], &[("PROV_MODE", "-fast")]);
    assert_eq!(printed, "v2-fast odd-name true");
    assert!(runs.contains(&"provider".to_owned()), "a declared env var: {runs:?}");

    let (printed, runs) = run(&["--features", "extra"], &[]);
    assert_eq!(printed, "v2 odd-name true+extra");
    assert!(runs.contains(&"provider".to_owned()), "another feature set: {runs:?}");

    // Another C compiler (here `cc` behind a script that says another version), for a run that
    // compiles C (`PROV_EMBED`): a miss. A run that starts no program reads no `CC`: a hit.
    let fake_cc = world.root.with_file_name("fake-cc");
    std::fs::write(
        &fake_cc,
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'fake-cc 99.1'; exit 0; }\nexec cc \"$@\"\n",
    )
    .unwrap();
    make_executable(&fake_cc);
    let (_, runs) = run(&[], &[("PROV_EMBED", "1")]);
    assert!(runs.contains(&"provider".to_owned()), "an undeclared variable read: {runs:?}");
    let fake = fake_cc.to_str().unwrap();
    let (printed, runs) = run(&[], &[("PROV_EMBED", "1"), ("CC", fake)]);
    assert_eq!(printed, "v2 odd-name true");
    assert!(runs.contains(&"provider".to_owned()), "another C compiler: {runs:?}");
    let (printed, runs) = run(&[], &[("CC", fake)]);
    assert_eq!((printed.as_str(), runs), ("v2 odd-name true", vec![]), "CC unread");

    let (printed, runs) = run(&["--release"], &[]);
    assert_eq!(printed, "v2 odd-name true");
    assert_eq!(runs.len(), 2, "another profile: {runs:?}");

    // And each of them is a hit the second time.
    let (printed, runs) = run(&[], &[("PROV_MODE", "-fast")]);
    assert_eq!((printed.as_str(), runs), ("v2-fast odd-name true", vec![]));

    // Another version of the dependency (its `CARGO_PKG_VERSION`, and its script's binary).
    let manifest = world.root.join("provider/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("version = \"0.1.0\"", "version = \"0.2.0\"")).unwrap();
    let (printed, runs) = run(&[], &[]);
    assert_eq!(printed, "v2 odd-name true");
    assert!(runs.contains(&"provider".to_owned()), "a changed dependency version: {runs:?}");

    // Without `cargo clean`, cargo reruns the script over its last OUT_DIR: it runs for real.
    std::fs::write(world.root.join("provider/input.txt"), "v3\n").unwrap();
    let printed = ok(world.cargo(&["run", "-q", "-p", "user"]));
    assert_eq!(printed.trim(), "v3 odd-name true");
    assert!(
        take_log(&world.target()).contains(&pair("provider", "ran (OUT_DIR not empty: gen.rs)")),
    );
}

#[test]
fn a_failing_script_is_not_stored_and_its_error_reaches_the_user() {
    let world = World::new();
    let output = world.cargo(&["build", "-p", "user"]).env("PROV_FAIL", "1").output().unwrap();
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("provider: told to fail"), "{stderr}");
    assert!(stderr.contains("exit status: 3"), "{stderr}");
    assert!(take_log(&world.target()).contains(&pair("provider", "failed")));

    ok(world.cargo(&["build", "-q", "-p", "user"]));
    ok(world.cargo(&["clean", "-q"]));
    world.take_runs();
    take_log(&world.target());
    ok(world.cargo(&["build", "-q", "-p", "user"]));
    assert_eq!(world.take_runs(), Vec::<String>::new(), "the good run was recorded");
}

#[test]
fn switched_off_when_the_script_runs_launchers_pass_through() {
    let world = World::new();
    // Two switches, and the wrapper gone from cargo's settings (the launchers stay: cargo does
    // not recompile a build script for that).
    let cases = [
        ("MEMOSHELVE_BUILD_SCRIPTS", Some("off")),
        ("MEMOSHELVE_DISABLE", Some("1")),
        ("RUSTC_WRAPPER", None),
    ];
    for (name, value) in cases {
        ok(world.cargo(&["clean", "-q"]));
        // Compiled with the wrapper on; run with it off.
        ok(world.cargo(&["build", "-q", "-p", "user"]));
        world.take_runs();
        take_log(&world.target());
        std::fs::write(world.root.join("provider/input.txt"), format!("{name}\n")).unwrap();
        let mut build = world.cargo(&["build", "-q", "-p", "user"]);
        match value {
            Some(value) => build.env(name, value),
            None => build.env_remove(name),
        };
        ok(build);
        let runs = world.take_runs();
        assert!(runs.contains(&"provider".to_owned()), "{name}={value:?}: the real script ran");
        assert_eq!(take_log(&world.target()), vec![], "{name}={value:?}: the runner did nothing");
    }
}

#[test]
fn the_users_wrapper_sees_every_other_compile_and_the_script_sees_it() {
    let world = World::new();
    let log = world.root.with_file_name("wrapper.log");
    let inner = world.root.with_file_name("logging-wrapper");
    std::fs::write(&inner, format!("#!/bin/sh\necho \"$@\" >> '{}'\nexec \"$@\"\n", log.display()))
        .unwrap();
    make_executable(&inner);
    ok(world.cargo(&["build", "-q", "-p", "user"]).env("MEMOSHELVE_RUSTC_WRAPPER", &inner));
    let logged = std::fs::read_to_string(&log).unwrap();
    for crate_name in ["provider", "user", "build_script_build"] {
        assert!(logged.contains(&format!("--crate-name {crate_name} ")), "{crate_name}: {logged}");
    }
    let runs = world.take_runs();
    let expected = format!("user wrapper={}", inner.display());
    assert!(runs.contains(&expected), "the real script's RUSTC_WRAPPER: {runs:?}");

    // A workspace wrapper of any name (cargo runs `<wrapper> <workspace wrapper> rustc ...`).
    std::fs::remove_file(&log).unwrap();
    ok(world.cargo(&["clean", "-q"]));
    ok(world.cargo(&["build", "-q", "-p", "user"]).env("RUSTC_WORKSPACE_WRAPPER", &inner));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("--crate-name user "), "{logged}");
}

#[test]
fn runs_that_must_not_be_replayed_are_not_recorded() {
    let cases = [
        ("PROV_OWN_INPUT", "inside OUT_DIR"),
        ("PROV_LINK", "a symbolic link leaving OUT_DIR"),
        ("PROV_TOUCH_INPUT", "input.txt changed while it ran"),
        // The size cap, lowered: the provider leaves two files.
        ("MEMOSHELVE_BUILD_SCRIPTS_MAX_FILES", "it left 2 files, more than 1"),
    ];
    for (variable, why) in cases {
        let world = World::new();
        ok(world.cargo(&["build", "-q", "-p", "user"]).env(variable, "1"));
        let log = take_log(&world.target());
        assert!(
            log.iter().any(|(package, what)| package == "provider" && what.contains(why)),
            "{variable}: {log:?}"
        );
        ok(world.cargo(&["clean", "-q"]));
        world.take_runs();
        ok(world.cargo(&["build", "-q", "-p", "user"]).env(variable, "1"));
        let runs = world.take_runs();
        assert!(runs.contains(&"provider".to_owned()), "{variable}: ran again after cargo clean");
    }
}

/// `cargo memoshelve show --json` of the newest `build-script.provider` entry: its
/// `build_script` part (how the run was made).
pub(crate) fn shown_provider(world: &World) -> serde_json::Value {
    let cli = |args: &[&str]| -> serde_json::Value {
        let mut command = Command::new(crate::cli_binary());
        command.arg("memoshelve").arg("--json").args(args).env("MEMOSHELVE_DIR", &world.cache);
        serde_json::from_str(&ok(command)).unwrap()
    };
    let listed = cli(&["list"]);
    let newest = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["name"] == "build-script.provider")
        .max_by_key(|entry| entry["created_ms"].as_u64())
        .expect("a provider entry");
    cli(&["show", newest["key"].as_str().unwrap()])["build_script"].clone()
}

/// What the runner did with the provider's run at `target`.
fn provider_log(target: &Path) -> String {
    take_log(target).into_iter().find(|(package, _)| package == "provider").unwrap().1
}

/// The one file under `dir` whose path ends with `tail`.
fn one_file(dir: &Path, tail: &str) -> PathBuf {
    let found: Vec<PathBuf> =
        files_under(dir).into_iter().filter(|path| path.ends_with(tail)).collect();
    assert_eq!(found.len(), 1, "{tail}: {found:?}");
    found.into_iter().next().unwrap()
}

/// A pkg-config file that names OUT_DIR is stored with a placeholder: it restores at another
/// target dir, naming that build's OUT_DIR.
#[test]
fn a_pkg_config_file_is_relocated_to_each_build() {
    let world = World::new();
    let build = |target: &Path| {
        ok(world.cargo_in(&world.root, target, &["build", "-q", "-p", "user"]).env("PROV_PC", "1"));
        provider_log(target)
    };
    assert_eq!(build(&world.target()), "recorded");
    let other = world.root.with_file_name("other-target");
    assert_eq!(build(&other), "restored", "another target dir");
    let pc = one_file(&other.join("debug/build"), "out/lib/pkgconfig/prov.pc");
    let out_dir = pc.ancestors().nth(3).unwrap();
    assert_eq!(
        std::fs::read_to_string(&pc).unwrap(),
        format!("prefix={}\nlibdir=${{prefix}}/lib\n", out_dir.display())
    );
    let shown = shown_provider(&world);
    assert_eq!(shown["relocated"], serde_json::json!(["lib/pkgconfig/prov.pc"]), "{shown}");
    assert_eq!(shown["bound"], serde_json::json!([]), "{shown}");
}

/// A hermetic run (OUT_DIR at a path under the cache root that every checkout shares) makes a
/// result that spells its OUT_DIR in a binary portable: it restores at another target dir.
#[test]
fn a_hermetic_run_makes_a_result_that_spells_out_dir_portable() {
    let world = World::new();
    let cargo = |target: &Path, args: &[&str]| {
        let mut command = world.cargo_in(&world.root, target, args);
        command.env("PROV_EMBED", "1").env("MEMOSHELVE_BUILD_SCRIPTS_HERMETIC", "provider");
        command
    };
    assert_eq!(ok(cargo(&world.target(), &["run", "-q", "-p", "user"])).trim(), "v1 odd-name true");
    assert_eq!(provider_log(&world.target()), "recorded (hermetic)");
    let spelled = std::fs::read(one_file(&world.target().join("debug/build"), "out/paths.bin"));
    let spelled = String::from_utf8_lossy(&spelled.unwrap()).into_owned();
    assert!(spelled.contains(world.cache.join("hermetic").to_str().unwrap()), "{spelled}");
    assert!(!spelled.contains(world.target().to_str().unwrap()), "{spelled}");
    // The sandbox is gone; its lock stays.
    let left: Vec<PathBuf> = std::fs::read_dir(world.cache.join("hermetic"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_none_or(|extension| extension != "lock"))
        .collect();
    assert_eq!(left, Vec::<PathBuf>::new());
    let shown = shown_provider(&world);
    assert_eq!(
        (&shown["hermetic"], &shown["bound"]),
        (&serde_json::json!(true), &serde_json::json!([]))
    );

    let other = world.root.with_file_name("other-target");
    world.take_runs();
    assert_eq!(ok(cargo(&other, &["run", "-q", "-p", "user"])).trim(), "v1 odd-name true");
    assert_eq!(provider_log(&other), "restored", "another target dir");
    assert!(!world.take_runs().contains(&"provider".to_owned()));
}

/// In a hermetic run a provider's `DEP_*` path is spelled inside the sandbox (a link to it), so
/// a result that compiles it in (as debug info spells headers) stays portable; the directives
/// naming it are rewritten to this build's.
#[test]
fn a_hermetic_run_gives_a_providers_paths_a_portable_spelling() {
    let world = World::new();
    let build = |target: &Path| {
        let mut command = world.cargo_in(&world.root, target, &["run", "-q", "-p", "user"]);
        command.env("USER_EMBED", "1").env("MEMOSHELVE_BUILD_SCRIPTS_HERMETIC", "all");
        assert_eq!(ok(command).trim(), "v1 odd-name true");
        let build_dir = target.join("debug/build");
        let output = files_under(&build_dir)
            .into_iter()
            .filter(|path| path.ends_with("output"))
            .map(|path| std::fs::read_to_string(path).unwrap())
            .find(|text| text.contains("rustc-link-search"))
            .expect("the user's output");
        let spelled = std::fs::read(one_file(&build_dir, "out/deps.bin")).unwrap();
        (sorted(take_log(target)), output, String::from_utf8_lossy(&spelled).into_owned())
    };
    let (log, output, spelled) = build(&world.target());
    let hermetic = [pair("provider", "recorded (hermetic)"), pair("user", "recorded (hermetic)")];
    assert_eq!(log, hermetic);
    assert!(spelled.contains(world.cache.join("hermetic").to_str().unwrap()), "{spelled}");
    assert!(!spelled.contains(world.target().to_str().unwrap()), "{spelled}");
    let search =
        format!("rustc-link-search=native={}/debug/build/provider-", world.target().display());
    assert!(output.contains(&search), "the directive names this build's provider: {output}");

    world.take_runs();
    let other = world.root.with_file_name("other-target");
    let (log, output, _) = build(&other);
    assert_eq!(log, [pair("provider", "restored"), pair("user", "restored")], "another target");
    assert_eq!(world.take_runs(), Vec::<String>::new());
    let search = format!("rustc-link-search=native={}/debug/build/provider-", other.display());
    assert!(output.contains(&search), "and there, that build's: {output}");
}

/// A script that reaches outside OUT_DIR in a hermetic run is run again in place (so what it
/// writes lands where cargo's layout puts it), and is not recorded: a restore would not bring
/// back what it wrote outside.
#[test]
fn a_script_that_writes_outside_out_dir_is_run_in_place_and_not_recorded() {
    let world = World::new();
    let build = || {
        ok(world
            .cargo(&["build", "-q", "-p", "user"])
            .env("PROV_OUTSIDE", "1")
            .env("MEMOSHELVE_BUILD_SCRIPTS_HERMETIC", "all"));
        provider_log(&world.target())
    };
    let what = build();
    assert!(
        what.starts_with("ran (a hermetic run wrote") && what.contains("outside OUT_DIR"),
        "{what}"
    );
    assert!(world.target().join("debug/prov-stray.txt").is_file());
    ok(world.cargo(&["clean", "-q"]));
    world.take_runs();
    assert!(build().starts_with("ran ("));
    assert!(world.take_runs().contains(&"provider".to_owned()), "ran again after cargo clean");
}

/// The runner killed while the script runs: that build fails as a killed script's would, no
/// entry is left, and the next builds are right.
#[test]
fn a_runner_killed_mid_run_leaves_nothing_wrong() {
    let world = World::new();
    let gate = world.root.with_file_name("gate");
    let mut build = world
        .cargo(&["build", "-q", "-p", "user"])
        .env("PROV_WAIT", &gate)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = gate.with_extension("ready");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !ready.exists() {
        assert!(std::time::Instant::now() < deadline, "the provider never started");
        assert!(build.try_wait().unwrap().is_none(), "the build ended before the provider ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pids = std::fs::read_to_string(&ready).unwrap();
    let (runner, script) = pids.split_once(' ').unwrap();
    let killed = Command::new("kill").args(["-KILL", runner]).status().unwrap();
    assert!(killed.success());
    // The script dies with its runner (it would wait for the gate for minutes).
    let alive = || {
        std::fs::read_to_string(format!("/proc/{script}/stat")).is_ok_and(|stat| {
            // The state follows the command's closing parenthesis; a zombie has ended.
            stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!alive(), "the script {script} outlived its killed runner by a second");
    std::fs::write(&gate, "").unwrap();
    assert!(!build.wait().unwrap().success(), "a killed build script fails the build");

    assert_eq!(ok(world.cargo(&["run", "-q", "-p", "user"])).trim(), "v1 odd-name true");
    for expected in ["recorded", "restored"] {
        ok(world.cargo(&["clean", "-q"]));
        take_log(&world.target());
        assert_eq!(ok(world.cargo(&["run", "-q", "-p", "user"])).trim(), "v1 odd-name true");
        assert_eq!(provider_log(&world.target()), expected);
    }
}

#[test]
fn cache_trouble_never_breaks_the_build() {
    let world = World::new();
    // A cache root that cannot be made: a file where its directory would be.
    std::fs::write(&world.cache, "not a directory").unwrap();
    let printed = ok(world.cargo(&["run", "-q", "-p", "user"]));
    assert_eq!(printed.trim(), "v1 odd-name true");
    assert_eq!(world.take_runs().len(), 2);
    std::fs::remove_file(&world.cache).unwrap();

    // A corrupt entry: every blob of the cache cut short.
    ok(world.cargo(&["clean", "-q"]));
    ok(world.cargo(&["build", "-q", "-p", "user"]));
    for blob in files_under(&world.cache.join("blobs-b3")) {
        std::fs::write(blob, "cut").unwrap();
    }
    ok(world.cargo(&["clean", "-q"]));
    world.take_runs();
    assert_eq!(ok(world.cargo(&["run", "-q", "-p", "user"])).trim(), "v1 odd-name true");
    assert!(world.take_runs().contains(&"provider".to_owned()), "recomputed");
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

pub(crate) fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

pub(crate) fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `examples/native-deps`: libsqlite3-sys (bundled), zstd-sys, lz4-sys and libgit2-sys
/// (vendored) from crates.io compile C in their build scripts; the crate's own script reads
/// zstd-sys's `DEP_ZSTD_INCLUDE`. libgit2-sys's objects spell its OUT_DIR: its entry restores at
/// another target dir because its run was hermetic.
#[test]
fn vendored_c_libraries_are_restored_not_rebuilt() {
    let temp = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/native-deps");
    let checkout = temp.path().join("checkout");
    copy_tree(&example, &checkout);
    let _ = std::fs::remove_dir_all(checkout.join("target"));
    let world = World {
        root: checkout.clone(),
        cache: temp.path().join("cache"),
        runs: temp.path().join("runs"),
        _temp: temp,
    };
    // The real minimum time: scripts cheaper than that run directly, as they would.
    let cargo = |dir: &Path, target: &Path, args: &[&str]| {
        let mut command = world.cargo_in(dir, target, args);
        command.env_remove("MEMOSHELVE_BUILD_SCRIPTS_MIN_TIME");
        command
    };
    let native = ["libgit2-sys", "libsqlite3-sys", "lz4-sys", "zstd-sys"];
    let of_native = |log: Vec<(String, String)>| -> Vec<(String, String)> {
        sorted(log.into_iter().filter(|(package, _)| native.contains(&package.as_str())).collect())
    };
    let each = |what: &str| native.map(|package| pair(package, what)).to_vec();

    ok(cargo(&checkout, &world.target(), &["test", "-q", "--locked"]));
    let lines = take_log_lines(&world.target());
    let log = lines
        .iter()
        .map(|line| {
            let mut fields = line.split('\t');
            (fields.next().unwrap().to_owned(), fields.next().unwrap_or("").to_owned())
        })
        .collect();
    assert_eq!(of_native(log), each("recorded (hermetic)"));
    // Each traced: a C build uses hundreds of files (headers found and not found, the compiler).
    for line in lines.iter().filter(|line| native.iter().any(|name| line.starts_with(name))) {
        let inputs: usize = line
            .split("traced: ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("not traced: {line}"));
        assert!(inputs > 100, "{line}");
    }
    ok(cargo(&checkout, &world.target(), &["clean", "-q"]));
    ok(cargo(&checkout, &world.target(), &["test", "-q", "--locked"]));
    let log = take_log(&world.target());
    assert_eq!(of_native(log.clone()), each("restored"));
    assert!(
        log.iter().all(|(_, what)| what == "restored" || what.starts_with("ran (faster than")),
        "nothing recorded, nothing ran for another reason: {log:?}"
    );

    let moved = checkout.with_file_name("moved");
    copy_tree(&checkout, &moved);
    std::fs::remove_dir_all(moved.join("target")).unwrap();
    let other_target = checkout.with_file_name("other-target");
    ok(cargo(&moved, &other_target, &["test", "-q", "--locked"]));
    assert_eq!(of_native(take_log(&other_target)), each("restored"));
}

#[test]
fn warm_builds_through_the_wrapper() {
    let world = World::new();
    let mut command = world.cargo(&[]);
    command.env_remove("RUSTC_WRAPPER");
    let mut warm = Command::new(crate::cli_binary());
    warm.args(["memoshelve", "--json", "warm", "--", "build", "-q", "-p", "user"])
        .current_dir(&world.root)
        .envs(command.get_envs().filter_map(|(name, value)| Some((name, value?))))
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR");
    let report: serde_json::Value = serde_json::from_str(&ok(warm)).unwrap();
    let mut names: Vec<&str> =
        report["added"].as_array().unwrap().iter().filter_map(|row| row["name"].as_str()).collect();
    names.sort_unstable();
    // The build scripts' runs, and every compile (the unit cache).
    assert_eq!(
        names,
        [
            "build-script.provider",
            "build-script.user",
            "rustc.provider",
            "rustc.provider.build_script_build",
            "rustc.user",
            "rustc.user.build_script_build"
        ]
    );
    assert_eq!(
        sorted(take_log(&world.target())),
        [pair("provider", "recorded"), pair("user", "recorded")]
    );
}

/// Build-script entries stay off the remote tier unless opted into (DESIGN: only signed and
/// opted into): a configured remote, here one that answers nothing, is never even tried.
#[test]
fn build_script_entries_stay_off_the_remote() {
    let world = World::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let output = world
        .cargo(&["build", "-p", "user"])
        .env("MEMOSHELVE_REMOTE", format!("http://127.0.0.1:{port}/nothing"))
        .env("MEMOSHELVE_REMOTE_MODE", "read-write")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("remote"), "the remote was tried:\n{stderr}");
    assert_eq!(
        sorted(take_log(&world.target())),
        [pair("provider", "recorded"), pair("user", "recorded")]
    );
}

/// A file that spells OUT_DIR restores where OUT_DIR is the same, and is never restored where
/// it would name a wrong path: at another target dir the script runs.
#[test]
fn a_result_that_spells_its_out_dir_restores_only_there() {
    let world = World::new();
    let build = |target: &Path| {
        ok(world
            .cargo_in(&world.root, target, &["build", "-q", "-p", "user"])
            .env("PROV_EMBED", "1"));
        take_log(target).into_iter().find(|(package, _)| package == "provider").unwrap().1
    };
    assert_eq!(build(&world.target()), "recorded");
    let shown = shown_provider(&world);
    let out_bound = shown["bound"].as_array().unwrap().iter().any(|pair| pair[0] == "out");
    assert!(out_bound && shown["hermetic"] == false, "{shown}");
    ok(world.cargo(&["clean", "-q"]));
    assert_eq!(build(&world.target()), "restored", "the same target dir");
    let other = world.root.with_file_name("other-target");
    assert_eq!(build(&other), "recorded", "another target dir: the script ran");
    let spelled: Vec<String> = files_under(&other.join("debug/build"))
        .into_iter()
        .filter(|path| path.ends_with("out/paths.bin"))
        .map(|path| String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned())
        .collect();
    assert_eq!(spelled.len(), 1, "{spelled:?}");
    assert!(spelled[0].contains(other.to_str().unwrap()), "{spelled:?}");
}

/// The real script deleted under its launcher: the build fails as it would without memoshelve
/// when a build script is missing, naming the file; after `cargo clean` all is well.
#[test]
fn a_deleted_real_script_fails_like_a_missing_one_and_clean_mends_it() {
    let world = World::new();
    ok(world.cargo(&["build", "-q", "-p", "user"]));
    let real = files_under(&world.target().join("debug/build"))
        .into_iter()
        .find(|path| {
            path.parent().unwrap().file_name().unwrap().to_string_lossy().starts_with("provider-")
                && path.to_string_lossy().ends_with(".memoshelve-real")
        })
        .expect("the provider's real script");
    std::fs::remove_file(&real).unwrap();
    std::fs::write(world.root.join("provider/input.txt"), "v2\n").unwrap();
    let output = world.cargo(&["build", "-p", "user"]).output().unwrap();
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(real.file_name().unwrap().to_str().unwrap()), "{stderr}");

    ok(world.cargo(&["clean", "-q"]));
    assert_eq!(ok(world.cargo(&["run", "-q", "-p", "user"])).trim(), "v2 odd-name true");
}

/// The settings: a skipped package always runs; a variable a script reads undeclared is a miss
/// when it changes once it is listed in MEMOSHELVE_BUILD_SCRIPTS_ENV.
#[test]
fn skipped_packages_run_and_listed_variables_are_in_the_key() {
    let world = World::new();
    for expected in ["ran (in MEMOSHELVE_BUILD_SCRIPTS_SKIP)"; 2] {
        ok(world.cargo(&["clean", "-q"]));
        ok(world
            .cargo(&["build", "-q", "-p", "user"])
            .env("MEMOSHELVE_BUILD_SCRIPTS_SKIP", "x, provider"));
        assert_eq!(provider_log(&world.target()), expected);
        assert!(world.take_runs().contains(&"provider".to_owned()));
    }

    let run = |value: &str| {
        ok(world.cargo(&["clean", "-q"]));
        let printed = ok(world
            .cargo(&["run", "-q", "-p", "user"])
            .env("MEMOSHELVE_BUILD_SCRIPTS_ENV", "PROV_UNDECLARED")
            .env("PROV_UNDECLARED", value));
        (printed.trim().to_owned(), provider_log(&world.target()))
    };
    assert_eq!(run("-a"), ("v1-a odd-name true".to_owned(), "recorded".to_owned()));
    assert_eq!(run("-b"), ("v1-b odd-name true".to_owned(), "recorded".to_owned()));
    assert_eq!(run("-a"), ("v1-a odd-name true".to_owned(), "restored".to_owned()));
}

/// `cargo memoshelve explain` names the part of a build script's key that changed.
#[test]
fn explain_names_what_changed_in_a_build_scripts_key() {
    let world = World::new();
    ok(world.cargo(&["build", "-q", "-p", "user"]));
    ok(world.cargo(&["clean", "-q"]));
    ok(world.cargo(&["build", "-q", "-p", "user", "--features", "extra"]));
    let mut explain = Command::new(crate::cli_binary());
    explain
        .args(["memoshelve", "--json", "explain", "build-script.provider"])
        .env("MEMOSHELVE_DIR", &world.cache);
    let report: serde_json::Value = serde_json::from_str(&ok(explain)).unwrap();
    let changes = report["changes"].as_array().unwrap();
    let parts: Vec<&str> = changes.iter().filter_map(|change| change["part"].as_str()).collect();
    assert!(parts.contains(&"value env:CARGO_FEATURE_EXTRA"), "{report}");
    let feature = changes.iter().find(|change| change["part"] == "value env:CARGO_FEATURE_EXTRA");
    assert_eq!(feature.unwrap()["before"], serde_json::Value::Null, "{report}");
    // Cargo compiles the build script with the features too: its binary differs as well.
    assert!(parts.contains(&"value script"), "{report}");
    assert!(!parts.iter().any(|part| part.starts_with("value contents:")), "{report}");
}

/// `MEMOSHELVE_AUDIT=1`: every hit runs the real script again and compares; a script whose
/// output differs from run to run is reported, one that does not is not.
#[test]
fn an_audit_reruns_hits_and_reports_a_difference() {
    let world = World::new();
    for (nondeterministic, reported) in [(false, false), (true, true)] {
        let build = || {
            let mut command = world.cargo(&["build", "-vv", "-p", "user"]);
            command.env("MEMOSHELVE_AUDIT", "1");
            if nondeterministic {
                command.env("PROV_NONDET", "1");
            }
            let output = command.output().unwrap();
            assert!(output.status.success(), "{}", describe(&output));
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr)
        };
        ok(world.cargo(&["clean", "-q"]));
        build();
        ok(world.cargo(&["clean", "-q"]));
        world.take_runs();
        let printed = build();
        assert!(world.take_runs().contains(&"provider".to_owned()), "the audit ran the script");
        let audit: Vec<&str> = printed.lines().filter(|line| line.contains("audit")).collect();
        assert_eq!(!audit.is_empty(), reported, "nondeterministic={nondeterministic}: {audit:?}");
        if reported {
            assert!(
                audit[0].contains("MEMOSHELVE_BUILD_SCRIPTS_ENV"),
                "the fix is named: {audit:?}"
            );
        }
    }
}

/// What a script printed to stderr comes back on a hit, naming this build's directories (cargo
/// shows it with `-vv`).
#[test]
fn a_hit_replays_the_scripts_stderr_with_this_builds_paths() {
    let world = World::new();
    let build = |target: &Path| {
        let output =
            world.cargo_in(&world.root, target, &["build", "-vv", "-p", "user"]).output().unwrap();
        assert!(output.status.success(), "{}", describe(&output));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let first = build(&world.target());
    assert_eq!(provider_log(&world.target()), "recorded");
    let other = world.root.with_file_name("other-target");
    let second = build(&other);
    assert_eq!(provider_log(&other), "restored");
    let said = |stderr: &str| -> Option<String> {
        stderr.lines().find_map(|line| Some(line.split_once("provider: built in ")?.1.to_owned()))
    };
    let (before, after) = (said(&first).expect(&first), said(&second).expect(&second));
    assert!(before.starts_with(world.target().to_str().unwrap()), "{before}");
    assert!(after.starts_with(other.to_str().unwrap()) && after.ends_with("/out"), "{after}");
}

/// A `#![no_core]` library, so it builds for a target whose standard library is not installed.
const BARE_BUILD: &str = r#"
use std::io::Write as _;
fn main() {
    let out = std::env::var("OUT_DIR").unwrap();
    std::fs::write(format!("{out}/target.txt"), std::env::var("TARGET").unwrap()).unwrap();
    let runs = std::env::var("RUNS").unwrap();
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(runs).unwrap();
    file.write_all(b"bare\n").unwrap();
    println!("cargo::rerun-if-changed=build.rs");
}
"#;

/// What the `bare` crate's script wrote for `target`, per OUT_DIR under `dir`.
fn written_targets(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = files_under(dir)
        .into_iter()
        .filter(|path| path.ends_with("out/target.txt"))
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();
    found.sort();
    found
}

#[test]
fn another_target_is_a_miss_and_each_target_restores_its_own_result() {
    let world = World::new();
    let bare = world.root.with_file_name("bare");
    for (path, text) in [
        ("Cargo.toml", "[package]\nname = \"bare\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
        ("build.rs", BARE_BUILD),
        ("src/lib.rs", "#![feature(no_core)]\n#![no_core]\n"),
    ] {
        std::fs::create_dir_all(bare.join(path).parent().unwrap()).unwrap();
        std::fs::write(bare.join(path), text).unwrap();
    }
    let target = bare.join("target");
    let cargo = |args: &[&str]| {
        let mut command = world.cargo_in(&bare, &target, args);
        command.env("RUSTC_BOOTSTRAP", "1");
        ok(command);
        world.take_runs()
    };
    let wasm = "wasm32-unknown-unknown";
    let version = ok(Command::new("rustc").arg("-vV"));
    let host = version.lines().find_map(|line| line.strip_prefix("host: ")).unwrap();
    assert_eq!(cargo(&["build", "-q"]), ["bare"]);
    assert_eq!(cargo(&["build", "-q", "--target", wasm]), ["bare"], "another target: a miss");
    let mut both = [wasm, host];
    both.sort_unstable();
    assert_eq!(written_targets(&target), both);

    ok(world.cargo_in(&bare, &target, &["clean", "-q"]));
    assert_eq!(cargo(&["build", "-q", "--target", wasm]), Vec::<String>::new());
    assert_eq!(written_targets(&target), [wasm], "the wasm result, restored");
    assert_eq!(cargo(&["build", "-q"]), Vec::<String>::new());
    assert_eq!(written_targets(&target), both, "and the host's");
}

/// Opted in (`MEMOSHELVE_BUILD_SCRIPTS_REMOTE=1`) and signed (`MEMOSHELVE_REMOTE_KEY`),
/// build-script entries travel through a real WebDAV server: another machine (its own cache,
/// another checkout path and target dir) restores what the first recorded. Without the key
/// nothing is written; a reader with another key, or without the opt-in, runs the scripts.
#[test]
fn signed_opted_in_entries_travel_through_the_remote() {
    let Some(base) = crate::remote::server_var("MEMOSHELVE_TEST_HTTP") else { return };
    let Some(root) = crate::remote::server_var("MEMOSHELVE_TEST_HTTP_ROOT") else { return };
    let folder = crate::remote::unique("build-scripts");
    let url = format!("{}/{folder}", base.trim_end_matches('/'));
    let on_server = || files_under(&Path::new(&root).join(&folder)).len();
    let world = World::new();
    let moved = world.root.with_file_name("moved");
    copy_tree(&world.root, &moved);
    let machine = |name: &str| world.root.with_file_name(name);
    // A file of each machine's system the provider reads (the same everywhere but on `c`).
    let system = machine("system.h");
    std::fs::write(&system, "#define SYSTEM 1\n").unwrap();
    // A build on `machine`'s cache, at `dir`, with the opt-in or not and a key or none.
    let build = |cache: &str, dir: &Path, opt_in: bool, key: Option<&str>| {
        let target = machine(&format!("target-{cache}"));
        let _ = std::fs::remove_dir_all(&target);
        let mut command = world.cargo_in(dir, &target, &["run", "-p", "user"]);
        command
            .env("PROV_SYSTEM_FILE", &system)
            .env("MEMOSHELVE_DIR", machine(&format!("cache-{cache}")))
            .env("MEMOSHELVE_REMOTE", &url)
            .env("MEMOSHELVE_REMOTE_MODE", "read-write");
        if opt_in {
            command.env("MEMOSHELVE_BUILD_SCRIPTS_REMOTE", "1");
        }
        if let Some(key) = key {
            command.env("MEMOSHELVE_REMOTE_KEY", key);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", describe(&output));
        let printed = String::from_utf8(output.stdout).unwrap();
        assert_eq!(printed.trim(), "v1 odd-name true");
        let stderr = String::from_utf8(output.stderr).unwrap();
        (sorted(take_log(&target)), world.take_runs().len(), stderr)
    };
    let recorded = [pair("provider", "recorded"), pair("user", "recorded")];

    let (log, runs, stderr) = build("a0", &world.root, true, None);
    assert_eq!((log, runs), (recorded.to_vec(), 2));
    assert!(stderr.contains("MEMOSHELVE_REMOTE_KEY is not"), "the missing key is told:\n{stderr}");
    assert_eq!(on_server(), 0, "nothing unsigned is written");

    let (log, runs, _) = build("a", &world.root, true, Some("secret"));
    assert_eq!((log, runs), (recorded.to_vec(), 2));
    assert!(on_server() >= 2, "both entries written through, signed");

    let (log, runs, stderr) = build("b-other-key", &moved, true, Some("another secret"));
    assert_eq!((log, runs), (recorded.to_vec(), 2), "a wrong signature is not trusted");
    assert!(stderr.contains("valid signature"), "{stderr}");

    let (log, runs, _) = build("b-no-opt-in", &moved, false, Some("secret"));
    assert_eq!((log, runs), (recorded.to_vec(), 2), "not opted in: not read");

    let (log, runs, _) = build("b", &moved, true, Some("secret"));
    let restored = [pair("provider", "restored (remote)"), pair("user", "restored (remote)")];
    assert_eq!((log, runs), (restored.to_vec(), 0), "another machine restores them");

    // A machine whose system file differs: the reader checks the traced inputs, so the
    // provider runs there; what it makes is the same, so its dependent restores.
    std::fs::write(&system, "#define SYSTEM 2\n").unwrap();
    let (log, runs, _) = build("c", &moved, true, Some("secret"));
    let expected = [pair("provider", "recorded"), pair("user", "restored (remote)")];
    assert_eq!((log, runs), (expected.to_vec(), 1), "another system: the provider runs");
}

/// The runner's record for `target`, whole lines, then emptied.
pub(crate) fn take_log_lines(target: &Path) -> Vec<String> {
    let path = target.join("debug/build/.memoshelve/runs.log");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    text.lines().map(str::to_owned).collect()
}

/// Cargo's `output` file of the provider's script run (the one that hands down `include`).
fn provider_output(target: &Path) -> String {
    std::fs::read_dir(target.join("debug/build"))
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("output")).ok())
        .find(|text| text.contains("cargo:include="))
        .expect("the provider's output")
}

// Issue 28, 1: an empty directory a provider makes (and hands down) is there after a restore,
// in place and hermetic alike; its dependent's script lists it.
#[test]
fn an_empty_directory_a_script_made_is_restored() {
    for hermetic in ["registry", "all"] {
        let world = World::new();
        let build = || {
            let mut command = world.cargo(&["build", "-q", "-p", "user"]);
            command.env("PROV_EMPTY", "1").env("MEMOSHELVE_BUILD_SCRIPTS_HERMETIC", hermetic);
            command
        };
        ok(build());
        ok(world.cargo(&["clean", "-q"]));
        take_log(&world.target());
        ok(build());
        assert_eq!(provider_log(&world.target()), "restored", "{hermetic}");
    }
}

// Issue 28, 2: package files that are symbolic links to a file and a directory outside the
// package count by what they point to; and a declared input that goes A, B, A hits on the
// way back (several recorded runs per key).
#[test]
fn inputs_behind_symbolic_links_count_and_a_b_a_hits_on_the_way_back() {
    let world = World::new();
    let shared = world.root.with_file_name("shared");
    std::fs::create_dir_all(shared.join("dir")).unwrap();
    std::fs::write(shared.join("file.txt"), "f1").unwrap();
    std::fs::write(shared.join("dir/x.txt"), "d1").unwrap();
    std::os::unix::fs::symlink(shared.join("file.txt"), world.root.join("provider/linked.txt"))
        .unwrap();
    std::os::unix::fs::symlink(shared.join("dir"), world.root.join("provider/linkdir")).unwrap();
    let run = |env: &[(&str, &str)]| {
        ok(world.cargo(&["clean", "-q"]));
        let mut command = world.cargo(&["run", "-q", "-p", "user"]);
        command.envs(env.iter().copied());
        let printed = ok(command);
        (printed.trim().to_owned(), world.take_runs().contains(&"provider".to_owned()))
    };
    let linked = [("PROV_LINKED", "1")];
    assert_eq!(run(&linked), ("f1d1 odd-name true".to_owned(), true));
    std::fs::write(shared.join("file.txt"), "f2").unwrap();
    assert_eq!(run(&linked), ("f2d1 odd-name true".to_owned(), true), "a linked file edited");
    std::fs::write(shared.join("dir/x.txt"), "d2").unwrap();
    assert_eq!(run(&linked), ("f2d2 odd-name true".to_owned(), true), "a linked dir edited");
    std::fs::write(shared.join("file.txt"), "f1").unwrap();
    std::fs::write(shared.join("dir/x.txt"), "d1").unwrap();
    assert_eq!(run(&linked), ("f1d1 odd-name true".to_owned(), false), "back: a hit");

    // A declared variable A, B, A: the third build is a hit (the first run was kept).
    let world = World::new();
    let run = |mode: &str| {
        ok(world.cargo(&["clean", "-q"]));
        let printed = ok(world.cargo(&["run", "-q", "-p", "user"]).env("PROV_MODE", mode));
        (printed.trim().to_owned(), world.take_runs().contains(&"provider".to_owned()))
    };
    assert_eq!(run(""), ("v1 odd-name true".to_owned(), true));
    assert_eq!(run("-b"), ("v1-b odd-name true".to_owned(), true));
    assert_eq!(run(""), ("v1 odd-name true".to_owned(), false), "A after B: a hit");
    assert_eq!(run("-b"), ("v1-b odd-name true".to_owned(), false), "B after A: a hit");
    let runs = shown_runs(&world);
    assert_eq!(runs, 2, "two recorded runs of one key");
}

/// How many `build-script.provider` entries `cargo memoshelve list --json` shows.
fn shown_runs(world: &World) -> usize {
    let mut command = Command::new(crate::cli_binary());
    command.args(["memoshelve", "--json", "list"]).env("MEMOSHELVE_DIR", &world.cache);
    let listed: serde_json::Value = serde_json::from_str(&ok(command)).unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["name"] == "build-script.provider")
        .count()
}

// Issue 28, 3: a hermetic script whose binary output names a directory under OUT_DIR that the
// built program uses runs in place, so the program finds it, on the miss and on every hit.
#[test]
fn a_hermetic_run_whose_binary_names_a_directory_it_made_is_made_in_place() {
    let world = World::new();
    let cargo = |args: &[&str]| {
        let mut command = world.cargo(args);
        command.env("PROV_CDIR", "1").env("MEMOSHELVE_BUILD_SCRIPTS_HERMETIC", "all");
        command
    };
    // `cargo test -p provider` runs a program that looks in the compiled-in directory.
    ok(cargo(&["test", "-q", "-p", "provider"]));
    let log = provider_log(&world.target());
    assert!(log.starts_with("recorded (in place: a binary names "), "{log}");
    ok(world.cargo(&["clean", "-q"]));
    world.take_runs();
    ok(cargo(&["test", "-q", "-p", "provider"]));
    assert_eq!(provider_log(&world.target()), "restored");
    assert!(!world.take_runs().contains(&"provider".to_owned()));
}

// Issue 28, 4: the record says what happened: a store that failed is no "recorded"; a hit
// leaves cargo's `output` file as the run did (lines that are not directives too).
#[test]
fn records_say_what_happened_and_a_hit_keeps_the_whole_output() {
    let world = World::new();
    ok(world.cargo(&["build", "-q", "-p", "user"]));
    let first = provider_output(&world.target());
    assert!(first.contains("provider: a line for the output file\n"), "{first}");
    ok(world.cargo(&["clean", "-q"]));
    take_log(&world.target());
    ok(world.cargo(&["build", "-q", "-p", "user"]));
    assert_eq!(provider_log(&world.target()), "restored");
    assert_eq!(provider_output(&world.target()), first, "a hit's output file is the run's");

    // A directory where the blob of the provider's gen.rs goes: the store fails.
    let world = World::new();
    let hex = blake3_hex(b"pub const BUILT: &str = \"\";");
    let blob = world.cache.join("blobs-b3").join(&hex[..2]).join(&hex[2..4]).join(&hex);
    std::fs::create_dir_all(blob.join("in-the-way")).unwrap();
    ok(world.cargo(&["build", "-q", "-p", "user"]));
    let log = provider_log(&world.target());
    assert!(log.starts_with("ran (not stored: "), "{log}");
    ok(world.cargo(&["clean", "-q"]));
    world.take_runs();
    ok(world.cargo(&["build", "-q", "-p", "user"]));
    assert!(world.take_runs().contains(&"provider".to_owned()), "nothing was stored");
}

fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

// Issue 28, 6 and 7: variables declared with `rerun-if-env-changed` whose values spell this
// build's directories (OUT_DIR, a provider's DEP_*_INCLUDE) hit at another checkout path and
// target dir; a miss says why in runs.log and in `explain`.
#[test]
fn declared_variables_naming_this_builds_directories_hit_elsewhere_and_misses_say_why() {
    let world = World::new();
    let cargo_in = |dir: &Path, target: &Path, mode: &str| {
        let mut command = world.cargo_in(dir, target, &["run", "-q", "-p", "user"]);
        command.env("PROV_DECLARE_OUT", "1").env("USER_DECLARE_DEP", "1").env("PROV_MODE", mode);
        ok(command).trim().to_owned()
    };
    assert_eq!(cargo_in(&world.root, &world.target(), ""), "v1 odd-name true");
    assert_eq!(
        sorted(take_log(&world.target())),
        [pair("provider", "recorded"), pair("user", "recorded")]
    );
    let moved = world.root.with_file_name("moved");
    copy_tree(&world.root, &moved);
    std::fs::remove_dir_all(moved.join("target")).unwrap();
    let other_target = world.root.with_file_name("other-target");
    assert_eq!(cargo_in(&moved, &other_target, ""), "v1 odd-name true");
    assert_eq!(
        sorted(take_log(&other_target)),
        [pair("provider", "restored"), pair("user", "restored")]
    );

    // A miss: its reason, in runs.log and, after the fact, in `explain`.
    ok(world.cargo(&["clean", "-q"]));
    assert_eq!(cargo_in(&world.root, &world.target(), "-x"), "v1-x odd-name true");
    let lines = take_log_lines(&world.target());
    let provider = lines.iter().find(|line| line.starts_with("provider\t")).unwrap();
    assert!(provider.ends_with("\tmissed: env PROV_MODE"), "{lines:?}");
    let mut explain = Command::new(crate::cli_binary());
    explain
        .args(["memoshelve", "explain", "build-script.provider"])
        .env("MEMOSHELVE_DIR", &world.cache);
    let explained = ok(explain);
    assert!(explained.contains("missed on: env PROV_MODE"), "{explained}");

    // A level-1 miss names the key part: another feature set.
    ok(world.cargo(&["clean", "-q"]));
    ok(world.cargo(&["build", "-q", "-p", "user", "--features", "extra"]));
    let lines = take_log_lines(&world.target());
    let provider = lines.iter().find(|line| line.starts_with("provider\t")).unwrap();
    // `CARGO_CFG_FEATURE` (cargo 1.80 on) sorts before `CARGO_FEATURE_EXTRA`.
    let missed = provider.split_once("\tmissed: ").map(|(_, missed)| missed);
    assert!(
        matches!(missed, Some("env:CARGO_CFG_FEATURE" | "env:CARGO_FEATURE_EXTRA")),
        "{lines:?}"
    );
}

// Issue 30, 3: a cache root that cannot be used is said once per build, where the user sees
// it without `-v` (the scripts' `cargo:warning`s would show only for local packages, with
// `-vv` for registry ones), and `runs.log` says the runs were not stored.
#[test]
fn an_unusable_cache_root_is_said_once_per_build_and_in_the_record() {
    let world = World::new();
    std::fs::write(&world.cache, "not a directory").unwrap();
    for _ in 0..2 {
        ok(world.cargo(&["clean", "-q"]));
        let output = world.cargo(&["build", "-p", "user"]).output().unwrap();
        assert!(output.status.success(), "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        let told = "warning: memoshelve: build scripts run but are not cached: ";
        assert_eq!(stderr.matches(told).count(), 1, "{stderr}");
        let line = stderr.lines().find(|line| line.starts_with(told)).unwrap();
        assert!(line.contains(world.cache.to_str().unwrap()), "names the root: {line}");
        let log = sorted(take_log(&world.target()));
        assert_eq!(log.len(), 2, "{log:?}");
        for (_, what) in &log {
            assert!(what.starts_with("ran (not stored: "), "{log:?}");
        }
    }
}

// Issue 30, 4: a damaged blob costs one run, not two: the failed restore leaves OUT_DIR as it
// found it, so the hermetic run that follows moves its tree in and is recorded.
#[test]
fn a_damaged_blob_costs_one_run() {
    let world = World::new();
    let build = || {
        let mut command = world.cargo(&["build", "-q", "-p", "user"]);
        command.env("MEMOSHELVE_BUILD_SCRIPTS_HERMETIC", "all");
        ok(command);
    };
    build();
    world.take_runs();
    take_log(&world.target());
    // One flipped byte in the blob of the provider's `gen.rs`: its `include/prov.h` is
    // restored before the failure is known, and a tree left there would keep the hermetic run
    // from moving its own `include` in ("Directory not empty").
    let hex = blake3_hex(b"pub const BUILT: &str = \"\";");
    let blob = world.cache.join("blobs-b3").join(&hex[..2]).join(&hex[2..4]).join(&hex);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 1;
    make_writable(&blob);
    std::fs::write(&blob, bytes).unwrap();
    ok(world.cargo(&["clean", "-q"]));
    build();
    let runs: Vec<String> = world.take_runs().into_iter().filter(|run| run == "provider").collect();
    assert_eq!(runs, ["provider"], "the provider's script ran once");
    assert_eq!(provider_log(&world.target()), "recorded (hermetic)");
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}
