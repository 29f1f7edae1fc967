//! Traced inputs (DESIGN.md section 10, issue 29): a build script's hit is right however little
//! it declares. Each test changes an input a script reads without declaring it, runs
//! `cargo clean` and builds: the script runs and the program prints what plain cargo's would;
//! then changes it back, cleans and builds: a hit.
//!
//! The workspace: `ws/app` (whose build script is the test's) beside `ws/shared`.

use std::path::Path;
use std::process::Command;

use crate::wrapper::{World, copy_tree, describe, make_executable, ok, take_log_lines};

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A world whose `app` has the build script `script`, which writes `OUT_DIR/made.rs`
/// (`pub const MADE: &str`); the program prints `MADE`.
fn app_world(script: &str) -> World {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("ws");
    write(&root, "Cargo.toml", "[workspace]\nmembers = [\"app\"]\nresolver = \"2\"\n");
    write(
        &root,
        "app/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write(&root, "app/build.rs", script);
    write(
        &root,
        "app/src/main.rs",
        "include!(concat!(env!(\"OUT_DIR\"), \"/made.rs\"));\nfn main() { println!(\"{MADE}\"); }\n",
    );
    write(&root, "shared/data.txt", "one\n");
    World { root, cache: temp.path().join("cache"), runs: temp.path().join("runs"), _temp: temp }
}

/// The start of every test script: `made(text)` writes `made.rs`, and the run is counted.
const PRELUDE: &str = r#"
fn made(text: &str) {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out.join("made.rs"), format!("pub const MADE: &str = {:?};", text.trim()))
        .unwrap();
    let runs = std::env::var("RUNS").unwrap();
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(runs).unwrap();
    std::io::Write::write_all(&mut file, b"app\n").unwrap();
    println!("cargo:rerun-if-changed=build.rs");
}
"#;

/// `cargo clean`, then `cargo run -p app` with `command`'s settings: what it printed, and the
/// runner's record of the app's script.
fn clean_run(world: &World, set: impl Fn(&mut Command)) -> (String, String) {
    let mut clean = world.cargo(&["clean", "-q"]);
    set(&mut clean);
    ok(clean);
    let mut run = world.cargo(&["run", "-q", "-p", "app"]);
    set(&mut run);
    let printed = ok(run).trim().to_owned();
    let log = take_log_lines(&world.target());
    let line = log.iter().find(|line| line.starts_with("app\t")).expect("the app's record");
    (printed, line.clone())
}

fn word(line: &str) -> &str {
    line.split('\t').nth(1).unwrap()
}

#[test]
fn an_undeclared_variable_set_by_a_parent_cargo_config_is_an_input() {
    let world = app_world(&format!(
        "{PRELUDE}\nfn main() {{ made(&std::env::var(\"APP_FLAVOR\").unwrap_or_default()); }}\n"
    ));
    // The workspace root's config, a parent of the package.
    let flavor = |value: &str| {
        write(&world.root, ".cargo/config.toml", &format!("[env]\nAPP_FLAVOR = \"{value}\"\n"));
    };
    let run = || clean_run(&world, |_| {});
    flavor("sweet");
    let (printed, line) = run();
    assert_eq!((printed.as_str(), word(&line)), ("sweet", "recorded"), "{line}");
    flavor("sour");
    let (printed, line) = run();
    assert_eq!((printed.as_str(), word(&line)), ("sour", "recorded"), "{line}");
    assert!(line.ends_with("missed: env APP_FLAVOR"), "{line}");
    // `explain` names the variable, with both values.
    let mut explain = Command::new(crate::cli_binary());
    explain.args(["memoshelve", "--json", "explain", "app"]).env("MEMOSHELVE_DIR", &world.cache);
    let report: serde_json::Value = serde_json::from_str(&ok(explain)).unwrap();
    let changes = report["changes"].as_array().unwrap();
    assert!(
        changes.iter().any(|change| change["part"] == "env APP_FLAVOR"
            && change["before"] == "sweet"
            && change["after"] == "sour"),
        "{report}"
    );
    assert_eq!(report["missed"], "env APP_FLAVOR", "{report}");
    flavor("sweet");
    let (printed, line) = run();
    assert_eq!((printed.as_str(), word(&line)), ("sweet", "restored"), "{line}");
    assert_eq!(world.take_runs().len(), 2, "the script ran twice in three builds");
}

#[test]
fn files_outside_the_package_count_by_content_and_by_absence() {
    let temp = tempfile::tempdir().unwrap();
    let outside = temp.path().join("system.h");
    std::fs::write(&outside, "#define V 1\n").unwrap();
    let world = app_world(&format!(
        r#"{PRELUDE}
fn main() {{
    let sibling = std::fs::read_to_string("../shared/data.txt").unwrap();
    let system = std::fs::read_to_string({outside:?}).unwrap();
    // A file found on a search path when it is there: its absence is an input too.
    let chosen = ["../shared/override.txt", "../shared/data.txt"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .unwrap();
    made(&format!("{{}} {{}} {{}}", sibling.trim(), system.trim(), chosen));
}}
"#
    ));
    let run = || clean_run(&world, |_| {});
    let (printed, line) = run();
    assert_eq!(word(&line), "recorded");
    assert_eq!(printed, "one #define V 1 ../shared/data.txt");

    write(&world.root, "shared/data.txt", "two\n");
    let (printed, line) = run();
    assert_eq!((printed.as_str(), word(&line)), ("two #define V 1 ../shared/data.txt", "recorded"));
    assert!(line.ends_with("missed: file {memoshelve:workspace}/shared/data.txt"), "{line}");

    std::fs::write(&outside, "#define V 2\n").unwrap();
    let (printed, line) = run();
    assert_eq!((printed.as_str(), word(&line)), ("two #define V 2 ../shared/data.txt", "recorded"));
    assert!(line.contains(&format!("missed: file {}", outside.display())), "{line}");

    write(&world.root, "shared/override.txt", "o\n");
    let (printed, line) = run();
    assert_eq!(
        (printed.as_str(), word(&line)),
        ("two #define V 2 ../shared/override.txt", "recorded")
    );
    assert!(line.ends_with("missed: file {memoshelve:workspace}/shared/override.txt"), "{line}");

    // Each back as it was: the runs recorded on the way hit again.
    std::fs::remove_file(world.root.join("shared/override.txt")).unwrap();
    let (printed, line) = run();
    assert_eq!((printed.as_str(), word(&line)), ("two #define V 2 ../shared/data.txt", "restored"));
    write(&world.root, "shared/data.txt", "one\n");
    std::fs::write(&outside, "#define V 1\n").unwrap();
    let (printed, line) = run();
    assert_eq!((printed.as_str(), word(&line)), ("one #define V 1 ../shared/data.txt", "restored"));

    // At another checkout path with another target dir, the sibling is the other checkout's.
    let moved = world.root.with_file_name("moved");
    copy_tree(&world.root, &moved);
    let _ = std::fs::remove_dir_all(moved.join("target"));
    let other_target = world.root.with_file_name("other-target");
    let printed = ok(world.cargo_in(&moved, &other_target, &["run", "-q", "-p", "app"]));
    let log = take_log_lines(&other_target);
    assert_eq!(
        (printed.trim(), log.iter().map(|line| word(line)).collect::<Vec<_>>()),
        ("one #define V 1 ../shared/data.txt", vec!["restored"])
    );
    write(&moved, "shared/data.txt", "moved\n");
    ok(world.cargo_in(&moved, &other_target, &["clean", "-q"]));
    let printed = ok(world.cargo_in(&moved, &other_target, &["run", "-q", "-p", "app"]));
    assert_eq!(printed.trim(), "moved #define V 1 ../shared/data.txt", "the moved sibling");
}

/// Git, as a script that embeds the commit sees it.
fn git(dir: &Path, args: &[&str]) -> String {
    let mut command = Command::new("git");
    command
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com");
    ok(command).trim().to_owned()
}

#[test]
fn a_script_that_embeds_the_git_commit_declaring_only_head_sees_each_commit() {
    let world = app_world(&format!(
        r#"{PRELUDE}
fn main() {{
    let head = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().unwrap();
    assert!(head.status.success());
    made(&String::from_utf8(head.stdout).unwrap());
    println!("cargo:rerun-if-changed=../.git/HEAD");
}}
"#
    ));
    write(&world.root, ".gitignore", "target\n");
    git(&world.root, &["init", "-q", "-b", "main"]);
    git(&world.root, &["add", "."]);
    git(&world.root, &["commit", "-q", "-m", "one"]);
    let first = git(&world.root, &["rev-parse", "HEAD"]);
    let run = || clean_run(&world, |_| {});
    let (printed, line) = run();
    assert_eq!((printed.as_str(), word(&line)), (first.as_str(), "recorded"), "{line}");

    write(&world.root, "shared/data.txt", "two\n");
    git(&world.root, &["commit", "-q", "-am", "two"]);
    let second = git(&world.root, &["rev-parse", "HEAD"]);
    let (printed, line) = run();
    assert_eq!((printed.as_str(), word(&line)), (second.as_str(), "recorded"), "{line}");

    git(&world.root, &["reset", "-q", "--hard", &first]);
    let (printed, line) = run();
    assert_eq!((printed.as_str(), word(&line)), (first.as_str(), "restored"), "{line}");
}

#[test]
fn a_file_a_script_writes_beside_the_binary_is_restored_with_out_dir() {
    let world = app_world(&format!(
        r#"{PRELUDE}
fn main() {{
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // `OUT_DIR/../../..` is the profile's directory, where the binary is.
    let profile = out.join("../../..").canonicalize().unwrap();
    let greeting = std::fs::read_to_string("../shared/data.txt").unwrap();
    std::fs::write(
        profile.join("app.conf"),
        format!("greeting={{}}\ndata={{}}\n", greeting.trim(), profile.join("data").display()),
    )
    .unwrap();
    made("conf");
}}
"#
    ));
    let conf = |target: &Path| std::fs::read_to_string(target.join("debug/app.conf")).unwrap();
    let expected = |target: &Path, greeting: &str| {
        format!("greeting={greeting}\ndata={}\n", target.join("debug/data").display())
    };
    let run = || clean_run(&world, |_| {});
    let (_, line) = run();
    assert_eq!(word(&line), "recorded", "{line}");
    assert_eq!(conf(&world.target()), expected(&world.target(), "one"));

    let (_, line) = run();
    assert_eq!(word(&line), "restored", "{line}");
    assert_eq!(conf(&world.target()), expected(&world.target(), "one"), "after cargo clean");

    write(&world.root, "shared/data.txt", "two\n");
    let (_, line) = run();
    assert_eq!(word(&line), "recorded", "{line}");
    assert_eq!(conf(&world.target()), expected(&world.target(), "two"));

    // Back as it was: the first run hits, and its file is put back.
    write(&world.root, "shared/data.txt", "one\n");
    let (_, line) = run();
    assert_eq!(word(&line), "restored", "{line}");
    assert_eq!(conf(&world.target()), expected(&world.target(), "one"));
    write(&world.root, "shared/data.txt", "two\n");
    let (_, line) = run();
    assert_eq!(word(&line), "restored", "{line}");

    // At another target dir the file is there too, naming that target dir.
    let other = world.root.with_file_name("other-target");
    ok(world.cargo_in(&world.root, &other, &["build", "-q", "-p", "app"]));
    let log = take_log_lines(&other);
    assert_eq!(log.iter().map(|line| word(line)).collect::<Vec<_>>(), ["restored"]);
    assert_eq!(conf(&other), expected(&other, "two"));
}

#[test]
fn a_script_that_writes_outside_the_target_dir_runs_every_time() {
    let temp = tempfile::tempdir().unwrap();
    let stamp = temp.path().join("stamp");
    let world = app_world(&format!(
        "{PRELUDE}\nfn main() {{ std::fs::write({stamp:?}, \"x\").unwrap(); made(\"stamped\"); }}\n"
    ));
    for _ in 0..2 {
        let (printed, line) = clean_run(&world, |_| {});
        assert_eq!(printed, "stamped");
        let expected =
            format!("ran (it wrote {}, outside OUT_DIR and the target dir)", stamp.display());
        assert_eq!(word(&line), expected, "{line}");
        std::fs::remove_file(&stamp).unwrap();
    }
    assert_eq!(world.take_runs().len(), 2);
}

#[test]
fn a_program_on_path_replaced_by_another_is_a_miss() {
    let temp = tempfile::tempdir().unwrap();
    let bin = temp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // A `cc` that says another version, and compiles (links) as the real one.
    let fake_cc = |version: &str| {
        let path = bin.join("cc");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'fake cc {version}'; exit 0; fi\n\
                 exec /usr/bin/cc \"$@\"\n"
            ),
        )
        .unwrap();
        make_executable(&path);
    };
    let world = app_world(&format!(
        r#"{PRELUDE}
fn main() {{
    let version = std::process::Command::new("cc").arg("--version").output().unwrap();
    made(String::from_utf8(version.stdout).unwrap().lines().next().unwrap());
}}
"#
    ));
    let path = std::env::join_paths(
        std::iter::once(bin.clone())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let run = || {
        clean_run(&world, |command| {
            command.env("PATH", &path);
        })
    };
    fake_cc("1.0");
    let (printed, line) = run();
    assert_eq!((printed.as_str(), word(&line)), ("fake cc 1.0", "recorded"), "{line}");
    fake_cc("2.0");
    let (printed, line) = run();
    assert_eq!((printed.as_str(), word(&line)), ("fake cc 2.0", "recorded"), "{line}");
    assert!(line.contains(&format!("missed: file {}", bin.join("cc").display())), "{line}");
    fake_cc("1.0");
    let (printed, line) = run();
    assert_eq!((printed.as_str(), word(&line)), ("fake cc 1.0", "restored"), "{line}");
}

/// Where tracing cannot run (here: the whole build runs under strace, and a process has one
/// tracer), scripts are keyed by what they declare, and the build says so once.
#[test]
fn where_tracing_cannot_run_scripts_are_keyed_as_declared_with_one_note() {
    let world = crate::wrapper::World::new();
    let cargo = world.cargo(&["build", "-p", "user"]);
    let mut traced = Command::new("strace");
    traced
        .args(["-f", "-qq", "-e", "trace=execve", "-o", "/dev/null", "--"])
        .arg(cargo.get_program())
        .args(cargo.get_args())
        .current_dir(&world.root);
    for (name, value) in cargo.get_envs() {
        match value {
            Some(value) => traced.env(name, value),
            None => traced.env_remove(name),
        };
    }
    let output = traced.output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let notes: Vec<&str> = stderr.lines().filter(|line| line.contains("not traced")).collect();
    assert_eq!(notes.len(), 1, "one note per build:\n{stderr}");
    assert!(notes[0].contains("traced process"), "{}", notes[0]);
    let log = take_log_lines(&world.target());
    let words: Vec<&str> = log.iter().map(|line| word(line)).collect();
    assert_eq!(words, ["recorded", "recorded"], "{log:?}");
    let shown = crate::wrapper::shown_provider(&world);
    assert_eq!(shown["traced"], serde_json::Value::Null, "{shown}");
    assert!(shown["untraced"].as_str().unwrap().contains("traced process"), "{shown}");
    // Untraced, the same build's entries are not those of a traced build.
    ok(world.cargo(&["clean", "-q"]));
    ok(world.cargo(&["build", "-q", "-p", "user"]));
    let log = take_log_lines(&world.target());
    assert!(log.iter().all(|line| word(line) == "recorded"), "{log:?}");
    assert!(crate::wrapper::shown_provider(&world)["traced"].is_object());
}

#[test]
fn untraced_the_c_compilers_version_is_asked_once_per_compiler_not_per_hit() {
    let world = app_world(&format!("{PRELUDE}\nfn main() {{ made(\"x\"); }}\n"));
    let dir = world.root.parent().unwrap().to_path_buf();
    let (cc, asked) = (dir.join("cc-wrapper"), dir.join("asked"));
    let compiler = |version: &str| {
        let script = format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo asked >> '{}'; echo 'fake cc {version}'; exit 0; fi\nexec cc \"$@\"\n",
            asked.display()
        );
        std::fs::write(&cc, script).unwrap();
        make_executable(&cc);
    };
    let times_asked = || std::fs::read_to_string(&asked).unwrap_or_default().lines().count();
    let set = |command: &mut Command| {
        command.env("MEMOSHELVE_BUILD_SCRIPTS_TRACE", "0").env("CC", &cc);
    };
    compiler("1.0");
    let (printed, line) = clean_run(&world, set);
    assert_eq!((printed.as_str(), word(&line)), ("x", "recorded"));
    assert_eq!(times_asked(), 1);
    // A hit takes the kept version: the compiler does not run.
    let (_, line) = clean_run(&world, set);
    assert_eq!(word(&line), "restored");
    assert_eq!(times_asked(), 1, "the compiler ran on a hit");
    // Another compiler at the same path is asked again, and its version is a miss.
    compiler("2.0");
    let (_, line) = clean_run(&world, set);
    assert_eq!(word(&line), "recorded", "{line}");
    assert_eq!(times_asked(), 2);
}
