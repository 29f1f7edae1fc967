//! Tests of the shim's handling of the loader's search of `LD_LIBRARY_PATH`
//! (`memoshelve-env-shim/shim/ldpath.rs`, x86_64): programs a watched run starts get the
//! variable under another name, which their loader ignores and their shim renames back; they
//! must see the environment they were given and load the libraries plain cargo's would.

use std::path::Path;
use std::process::Command;

use super::Observed;

/// Runs `script` with `sh -c` in `dir`, watched, with `LD_LIBRARY_PATH` = `library_path`.
fn watched(dir: &Path, script: &str, library_path: &str) -> Observed {
    let tools = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let dirs = super::Dirs { tools: tools.path(), scratch: scratch.path() };
    let mut command = Command::new("sh");
    command.args(["-c", script]).current_dir(dir).env("LD_LIBRARY_PATH", library_path);
    let run = super::spawn(&mut command, Some(&dirs)).unwrap();
    let (status, observed) = run.wait().unwrap();
    assert!(status.success());
    observed.expect("watched")
}

/// The variables of a `/proc/<pid>/environ` dump, sorted, without those `sh` sets itself.
fn environment(dump: &[u8]) -> Vec<String> {
    let mut vars: Vec<String> = dump
        .split(|&byte| byte == 0)
        .filter(|var| !var.is_empty())
        .map(|var| String::from_utf8_lossy(var).into_owned())
        .filter(|var| !["PWD=", "OLDPWD=", "_="].iter().any(|set| var.starts_with(set)))
        .collect();
    vars.sort();
    vars
}

/// Programs started by a watched run (by `sh`, directly and through a `#!` script) see the
/// environment they were given, `LD_LIBRARY_PATH` included, in `environ` and in
/// `/proc/self/environ`; and their loaders' searches no longer stop: a run of twenty
/// programs stops less than half as often as one where the variable cannot be handed over
/// (an empty entry, the working directory, is one the shim leaves to the loader).
#[test]
fn started_programs_see_their_environment_and_their_loader_does_not_stop() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    std::fs::write(dir.join("script"), "#!/bin/sh\ncat /proc/$$/environ > script-env\n").unwrap();
    std::fs::set_permissions(
        dir.join("script"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let script = "cat /proc/$$/environ > given; cat /proc/self/environ > cat-env; \
                  env > env-env; ./script; i=0; while [ $i -lt 20 ]; do cat /dev/null; \
                  i=$((i+1)); done";
    let library_path = format!("{}:{}", a.display(), b.display());
    let handed = watched(&dir, script, &library_path);
    assert_eq!(handed.unrecordable, None);
    let given = environment(&std::fs::read(dir.join("given")).unwrap());
    assert!(given.contains(&format!("LD_LIBRARY_PATH={library_path}")), "{given:?}");
    assert!(given.iter().any(|var| var.starts_with("MEMOSHELVE_LD_SUBDIRS=")), "{given:?}");
    for dump in ["cat-env", "script-env"] {
        assert_eq!(environment(&std::fs::read(dir.join(dump)).unwrap()), given, "{dump}");
    }
    let env_env = std::fs::read_to_string(dir.join("env-env")).unwrap().replace('\n', "\0");
    assert_eq!(environment(env_env.as_bytes()), given);
    // What the loaders would have looked at is seen all the same.
    assert!(handed.looked.contains(&a.join("libc.so.6")), "{:?}", handed.looked);
    assert!(handed.looked.contains(&b.join("libc.so.6")), "{:?}", handed.looked);

    let searched = watched(&dir, script, &format!("{library_path}:"));
    assert!(
        handed.stops * 2 < searched.stops,
        "{} stops handed over, {} searched",
        handed.stops,
        searched.stops
    );
}

/// Builds `lib<name>.so` in `dir` from C source whose `which()` returns `answer`.
fn library(dir: &Path, name: &str, answer: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let source = dir.join(format!("{name}.c"));
    std::fs::write(&source, format!("const char *which(void) {{ return \"{answer}\"; }}\n"))
        .unwrap();
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(dir.join(format!("lib{name}.so")))
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A program that needs a library the loader would find in `LD_LIBRARY_PATH` before its
/// `RUNPATH`: started by a watched run, it loads the one plain cargo's would (its shim sees
/// the library there and execs it again, the variable given to its loader). A library opened
/// by name with `dlopen` later is the one in `LD_LIBRARY_PATH` too.
#[test]
fn programs_load_the_libraries_the_loader_finds_first() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let (first, runpath, opened) = (dir.join("first"), dir.join("runpath"), dir.join("opened"));
    library(&first, "msprobe", "first");
    library(&runpath, "msprobe", "runpath");
    library(&opened, "msopened", "opened");
    std::fs::write(
        dir.join("main.c"),
        "#include <dlfcn.h>\n#include <stdio.h>\nconst char *which(void);\n\
         int main(void) {\n  printf(\"%s\\n\", which());\n\
           void *lib = dlopen(\"libmsopened.so\", RTLD_NOW | RTLD_LOCAL);\n\
           const char *(*f)(void) = lib ? (const char *(*)(void))dlsym(lib, \"which\") : 0;\n\
           printf(\"%s\\n\", f ? f() : \"none\");\n  return 0;\n}\n",
    )
    .unwrap();
    let status = Command::new("cc")
        .arg("-o")
        .arg(dir.join("main"))
        .arg(dir.join("main.c"))
        .arg(format!("-L{}", runpath.display()))
        .arg(format!("-Wl,-rpath,{},--enable-new-dtags", runpath.display()))
        .args(["-lmsprobe", "-ldl"])
        .status()
        .unwrap();
    assert!(status.success());
    let library_path = format!("{}:{}", first.display(), opened.display());
    let plain = Command::new(dir.join("main")).env("LD_LIBRARY_PATH", &library_path).output();
    assert_eq!(String::from_utf8_lossy(&plain.unwrap().stdout), "first\nopened\n");
    watched(&dir, "./main > out", &library_path);
    assert_eq!(std::fs::read_to_string(dir.join("out")).unwrap(), "first\nopened\n");
}

/// A static program (no loader, no shim to rename the variable back) is started with the
/// environment as given.
#[test]
fn a_static_program_is_started_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    std::fs::write(
        dir.join("show.c"),
        "#include <stdio.h>\n#include <stdlib.h>\nint main(void) {\n\
           const char *path = getenv(\"LD_LIBRARY_PATH\");\n\
           printf(\"%s %s\\n\", path ? path : \"unset\", getenv(\"MEMOSHELVE_LDLP\") ? \"hidden\" : \"-\");\n\
           return 0;\n}\n",
    )
    .unwrap();
    let status = Command::new("cc")
        .args(["-static", "-o"])
        .arg(dir.join("show"))
        .arg(dir.join("show.c"))
        .status()
        .unwrap();
    assert!(status.success(), "cc -static (libc6-dev's libc.a)");
    watched(&dir, "./show > out", "/nonexistent-a:/nonexistent-b");
    assert_eq!(
        std::fs::read_to_string(dir.join("out")).unwrap(),
        "/nonexistent-a:/nonexistent-b -\n"
    );
}

/// A program found through `PATH` by `execvp` (`env`'s) is started without the attempts in
/// the directories before it stopping, and a program that is not there (`sh` trying
/// `missing/program`) fails without stopping: each path is looked at through the fast path
/// and recorded as missing all the same. Ten more directories in front of `PATH` and thirty
/// runs of a missing program: about as many stops as without them.
#[test]
fn a_search_through_path_does_not_stop_at_each_directory() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let empty: Vec<_> = (0..10).map(|index| dir.join(format!("empty-{index}"))).collect();
    for path in &empty {
        std::fs::create_dir(path).unwrap();
    }
    let system = std::env::var("PATH").unwrap();
    let library_path = dir.display().to_string();
    let programs = "i=0; while [ $i -lt 10 ]; do env cat /dev/null; i=$((i+1)); done";
    let short = watched(&dir, &format!("PATH={system}; {programs}"), &library_path);
    let long_path = format!(
        "{}:{system}",
        empty.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(":")
    );
    let missing =
        "{ i=0; while [ $i -lt 30 ]; do ./missing/program; i=$((i+1)); done; } 2>/dev/null";
    let long = watched(&dir, &format!("PATH={long_path}; {programs}; {missing}"), &library_path);
    for path in &empty {
        assert!(long.looked.contains(&path.join("cat")), "{path:?}");
    }
    assert!(long.looked.contains(&dir.join("missing/program")));
    assert!(
        long.stops < short.stops + 20,
        "{} stops with ten more directories in PATH and a missing program, {} without",
        long.stops,
        short.stops
    );
}
