//! Tests of the preloaded shim's fast path (`memoshelve-env-shim/shim/files.rs`, x86_64): the
//! file calls it logs and makes from its own page must answer exactly as libc's do, and a
//! watched run must see through the log what it saw through stops.

use std::ffi::{CStr, CString};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use super::env::EnvWatch;

/// Set on the probe process: the directory whose paths it asks about.
const PROBE_VAR: &str = "MEMOSHELVE_FAST_PROBE_DIR";

/// The paths the probe asks about, relative to its directory (made by [`probe_dir`]): files,
/// directories, links of each kind, `.` and `..` after a file, trailing slashes, a loop, a
/// chain longer than libc follows, missing components, empty and over-long paths.
fn probe_paths(dir: &Path) -> Vec<Vec<u8>> {
    let mut relative: Vec<Vec<u8>> = [
        "file",
        "dir",
        "dir/",
        "dir/.",
        "dir/..",
        "dir//inner",
        "./file",
        "file/",
        "file/.",
        "file/..",
        "file/../file",
        "file/x",
        "missing",
        "missing/x",
        "to-file",
        "to-file/",
        "to-dir",
        "to-dir/",
        "to-dir/inner",
        "to-dir/../file",
        "to-dir/..",
        "relative",
        "up/file",
        "dangling",
        "dangling/",
        "loop-a",
        "loop-a/x",
        "chain-0",
        "chain-38",
        "to-abs-dir/file",
        "dir/../to-dir/inner/..",
        ".",
        "..",
        "",
    ]
    .iter()
    .map(|path| path.as_bytes().to_vec())
    .collect();
    relative.push(vec![b'x'; 5000]);
    let mut all = relative.clone();
    for path in relative.iter().filter(|path| !path.is_empty()) {
        let mut absolute = dir.as_os_str().as_bytes().to_vec();
        absolute.push(b'/');
        absolute.extend_from_slice(path);
        all.push(absolute);
    }
    all
}

fn probe_dir() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    std::fs::write(dir.join("file"), "x").unwrap();
    std::fs::create_dir_all(dir.join("dir/inner")).unwrap();
    symlink("file", dir.join("to-file")).unwrap();
    symlink("dir", dir.join("to-dir")).unwrap();
    symlink("./dir/../file", dir.join("relative")).unwrap();
    symlink(".", dir.join("up")).unwrap();
    symlink("nothing-here", dir.join("dangling")).unwrap();
    symlink("loop-b", dir.join("loop-a")).unwrap();
    symlink("loop-a", dir.join("loop-b")).unwrap();
    symlink(dir, dir.join("to-abs-dir")).unwrap();
    // chain-0 -> chain-1 -> ... -> chain-44 -> file: more links than one lookup follows.
    for link in 0..45 {
        let target = if link == 44 { "file".to_owned() } else { format!("chain-{}", link + 1) };
        symlink(target, dir.join(format!("chain-{link}"))).unwrap();
    }
    root
}

/// What a call gave: its result, or the `errno` it failed with.
fn outcome<T: std::fmt::Debug>(ok: bool, value: T) -> String {
    if ok { format!("{value:?}") } else { format!("errno {}", std::io::Error::last_os_error()) }
}

/// Not a test: the probe process (this test binary, run with [`PROBE_VAR`] set). Asks libc
/// (the shim, when preloaded) about each path and prints the answers.
#[test]
#[expect(clippy::print_stdout, reason = "the test below reads it")]
fn probe_answers() {
    let Some(dir) = std::env::var_os(PROBE_VAR) else { return };
    let dir = Path::new(&dir);
    std::env::set_current_dir(dir).unwrap();
    // The calls taking a directory descriptor resolve against `dir/dir`, the others against
    // `dir`: a path under `dir/dir` in the log came through the descriptor's path.
    let dir_fd = {
        let dir = CString::new(dir.join("dir").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        unsafe { libc::open(dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) }
    };
    assert!(dir_fd >= 0);
    let mut lines = Vec::new();
    for path in probe_paths(dir) {
        let c_path = CString::new(path.clone()).unwrap();
        let p = c_path.as_ptr();
        let shown = String::from_utf8_lossy(&path[..path.len().min(80)]).into_owned();
        let mut line = format!("{shown}:");
        // SAFETY (each call below): NUL-terminated paths, buffers of the sizes given.
        unsafe {
            let mut buf = [0 as libc::c_char; libc::PATH_MAX as usize];
            let resolved = libc::realpath(p, buf.as_mut_ptr());
            // On failure too: glibc leaves the part it resolved in the caller's buffer.
            let text = CStr::from_ptr(buf.as_ptr()).to_owned();
            write!(line, " realpath={} {text:?}", outcome(!resolved.is_null(), ())).unwrap();
            let allocated = libc::realpath(p, std::ptr::null_mut());
            let text = (!allocated.is_null()).then(|| CStr::from_ptr(allocated).to_owned());
            write!(line, " realpath-alloc={}", outcome(!allocated.is_null(), text)).unwrap();
            libc::free(allocated.cast());
            let mut st: libc::stat = std::mem::zeroed();
            let r = libc::stat(p, &mut st);
            write!(line, " stat={}", outcome(r == 0, (st.st_ino, st.st_mode))).unwrap();
            let r = libc::lstat(p, &mut st);
            write!(line, " lstat={}", outcome(r == 0, (st.st_ino, st.st_mode))).unwrap();
            let r = libc::fstatat(dir_fd, p, &mut st, libc::AT_SYMLINK_NOFOLLOW);
            write!(line, " fstatat={}", outcome(r == 0, (st.st_ino, st.st_mode))).unwrap();
            let mut stx: libc::statx = std::mem::zeroed();
            let r = libc::statx(libc::AT_FDCWD, p, 0, libc::STATX_INO, &mut stx);
            write!(line, " statx={}", outcome(r == 0, stx.stx_ino)).unwrap();
            let r = libc::access(p, libc::R_OK);
            write!(line, " access={}", outcome(r == 0, r)).unwrap();
            let r = libc::faccessat(dir_fd, p, libc::F_OK, libc::AT_EACCESS);
            write!(line, " faccessat={}", outcome(r == 0, r)).unwrap();
            let n = libc::readlink(p, buf.as_mut_ptr(), buf.len());
            let text = (n >= 0).then(|| {
                String::from_utf8_lossy(std::slice::from_raw_parts(
                    buf.as_ptr().cast::<u8>(),
                    n as usize,
                ))
                .into_owned()
            });
            write!(line, " readlink={}", outcome(n >= 0, text)).unwrap();
            let fd = libc::openat(dir_fd, p, libc::O_RDONLY | libc::O_CLOEXEC);
            let mut fd_st: libc::stat = std::mem::zeroed();
            let r = if fd >= 0 { libc::fstat(fd, &mut fd_st) } else { -1 };
            write!(line, " openat={}", outcome(fd >= 0 && r == 0, fd_st.st_ino)).unwrap();
            if fd >= 0 {
                libc::close(fd);
            }
            let file = libc::fopen(p, c"re".as_ptr());
            let byte = if file.is_null() { -1 } else { libc::fgetc(file) };
            write!(line, " fopen={}", outcome(!file.is_null(), byte)).unwrap();
            if !file.is_null() {
                libc::fclose(file);
            }
        }
        lines.push(line);
    }
    let fd = std::fs::File::open(dir.join("file")).unwrap();
    lines.push(format!("std: {:?}", fd.metadata().unwrap().len()));
    println!("PROBE-BEGIN\n{}\nPROBE-END", lines.join("\n"));
}

/// Runs this test binary's probe test `probe` (a test that does nothing unless its variable is
/// set) in a process of its own with `env`; asserts it passed, and gives its stdout.
fn run_probe<K, V>(probe: &str, env: impl IntoIterator<Item = (K, V)>) -> String
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let (_crate, module) = module_path!().split_once("::").unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &format!("{module}::{probe}"), "--nocapture", "-q"])
        .envs(env)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("1 passed"), "{stdout}");
    stdout
}

fn probe(dir: &Path, env: &[(std::ffi::OsString, std::ffi::OsString)]) -> String {
    let mut env = env.to_vec();
    env.push((PROBE_VAR.into(), dir.into()));
    let stdout = run_probe("probe_answers", env);
    let begin = stdout.find("PROBE-BEGIN").expect("the probe ran");
    let end = stdout.find("PROBE-END").expect("the probe ended");
    stdout[begin..end].to_owned()
}

#[test]
fn the_fast_path_answers_as_libc_does() {
    let dir = probe_dir();
    let dir = dir.path().canonicalize().unwrap();
    let plain = probe(&dir, &[]);
    let tools = tempfile::tempdir().unwrap();
    let watch = EnvWatch::prepare(tools.path(), tools.path()).unwrap();
    let preloaded = probe(&dir, &watch.env());
    let reads = watch.finish().unwrap();
    for (plain, preloaded) in plain.lines().zip(preloaded.lines()) {
        assert_eq!(plain, preloaded);
    }
    assert_eq!(plain.lines().count(), preloaded.lines().count());
    // The answers came from the fast path: it logged what it looked at, each link of the
    // chain included (realpath reads every component as a link).
    assert!(reads.logged > 50, "{}", reads.logged);
    for path in ["file", "missing", "chain-44", "dir/inner", "to-dir", "dir/missing"] {
        let short: Vec<_> =
            reads.looked.iter().filter(|seen| seen.as_os_str().len() < 200).collect();
        assert!(reads.looked.contains(&dir.join(path)), "{path}: {short:?}");
    }
}

/// Set on the probe process of the next test: run [`watched_scenario`] (under whichever
/// watcher `MEMOSHELVE_BUILD_SCRIPTS_TRACE` picks).
const SCENARIO_VAR: &str = "MEMOSHELVE_FAST_SCENARIO_PROBE";

/// A watched run's processes (sh, cat, gcc...) make most of their file calls on the fast
/// path; what they looked at is seen all the same.
fn watched_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    std::fs::write(dir.join("input"), "x").unwrap();
    std::fs::write(
        dir.join("unit.c"),
        "#include \"header.h\"\n#include <stddef.h>\nsize_t f(void) { return N; }\n",
    )
    .unwrap();
    std::fs::write(dir.join("header.h"), "#define N 1\n").unwrap();
    std::fs::create_dir(dir.join("include")).unwrap();
    symlink("input", dir.join("link")).unwrap();
    let tools = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let dirs = super::Dirs { tools: tools.path(), scratch: scratch.path() };
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(
            "cat input >/dev/null; test -e missing || true; readlink -f link >/dev/null; \
              cc -Iinclude -c unit.c -o /dev/null",
        )
        .current_dir(&dir)
        // cargo test's long library path makes the loader (whose calls always stop) look in
        // every build dir.
        .env_remove("LD_LIBRARY_PATH");
    let run = super::spawn(&mut command, Some(&dirs)).unwrap();
    let (status, observed) = run.wait().unwrap();
    let observed = observed.expect("watched");
    assert!(status.success());
    assert_eq!(observed.unrecordable, None);
    for path in ["input", "missing", "link", "unit.c", "header.h", "include/stddef.h"] {
        assert!(observed.looked.contains(&dir.join(path)), "{path}: {observed:?}");
    }
    // Every compile's header lookups, and the shell's and cat's calls, went the fast way
    // (the loader's and libc's own calls still stop).
    assert!(observed.logged > 100, "{} logged, {} stopped", observed.logged, observed.stops);
}

/// Not a test: the scenario in a process of its own (with the watcher its environment picks).
#[test]
fn scenario_probe() {
    if std::env::var_os(SCENARIO_VAR).is_some() {
        watched_scenario();
    }
}

#[test]
fn a_watched_run_sees_what_the_fast_path_logged() {
    watched_scenario();
}

/// The fast path works the same under the `ptrace` watcher (the filter lets the page's calls
/// through before either watcher sees them).
#[test]
fn a_run_watched_by_ptrace_sees_what_the_fast_path_logged() {
    run_probe("scenario_probe", [(SCENARIO_VAR, "1"), (super::TRACE_VAR, "ptrace")]);
}

/// Set on the probe process of the next test.
const NESTED_VAR: &str = "MEMOSHELVE_FAST_NESTED_PROBE";

/// Not a test: run with [`NESTED_VAR`] and the log variable set, as a runner started inside a
/// watched build script is.
#[test]
fn nested_probe() {
    if std::env::var_os(NESTED_VAR).is_none() {
        return;
    }
    let why = super::unavailable().expect("a runner inside a watched run does not watch");
    assert!(why.contains("inside a traced build script"), "{why}");
}

/// A build inside a watched build script (a script that runs cargo) is not watched again:
/// its processes keep logging to the outer run's log, whose watch sees everything they do.
#[test]
fn a_runner_inside_a_watched_run_does_not_watch() {
    run_probe(
        "nested_probe",
        [(NESTED_VAR, "1"), ("MEMOSHELVE_ENV_LOG", "/nonexistent/outer.log")],
    );
}

/// The functions the shim exports for the fast path are the ones whose next definition it
/// checks (`FAST_SYMBOLS` in `shim/files.rs`): one missing there would bypass an interposer.
/// The others always call the next definition (`getenv`, and `shim/ldpath.rs`'s).
#[test]
fn the_shim_checks_every_function_it_answers() {
    const PASSED_ON: [&str; 9] = [
        "getenv",
        "secure_getenv",
        "execve",
        "execv",
        "execvp",
        "execvpe",
        "posix_spawn",
        "posix_spawnp",
        "dlopen",
    ];
    let source = include_str!("../../../../memoshelve-env-shim/shim/files.rs");
    let list = source.split("const FAST_SYMBOLS").nth(1).unwrap().split("];").next().unwrap();
    let checked: std::collections::BTreeSet<&str> =
        list.split("c\"").skip(1).filter_map(|rest| rest.split('"').next()).collect();
    let tools = tempfile::tempdir().unwrap();
    let watch = EnvWatch::prepare(tools.path(), tools.path()).unwrap();
    let shim = watch.own_paths().remove(0);
    let output = Command::new("nm").args(["-D", "--defined-only"]).arg(&shim).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let exported: std::collections::BTreeSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [_, "T", name] if !PASSED_ON.contains(&name) => Some(name.to_owned()),
            _ => None,
        })
        .collect();
    let checked: std::collections::BTreeSet<String> =
        checked.into_iter().map(str::to_owned).collect();
    assert_eq!(exported, checked);
}

/// Set on the probe process of the next test.
const ACCESS_VAR: &str = "MEMOSHELVE_FAST_ACCESS_PROBE";

/// Not a test: prints what `access("/", F_OK)` answers in this process.
#[test]
#[expect(clippy::print_stdout, reason = "the test below reads it")]
fn access_probe() {
    if std::env::var_os(ACCESS_VAR).is_none() {
        return;
    }
    // SAFETY: a NUL-terminated path.
    let answer = unsafe { libc::access(c"/".as_ptr(), libc::F_OK) };
    println!("access={answer}");
}

/// An interposer preloaded after the shim (the user's `LD_PRELOAD`) still answers: the
/// fast path, which would go around it, is off in that process.
#[test]
fn an_interposer_after_the_shim_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("other.c");
    std::fs::write(&source, "int access(const char *path, int mode) { return 42; }\n").unwrap();
    let other = dir.path().join("other.so");
    let status =
        Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&other).arg(&source).status();
    assert!(status.unwrap().success());
    for with_other in [false, true] {
        let tools = tempfile::tempdir().unwrap();
        let watch = EnvWatch::prepare(tools.path(), tools.path()).unwrap();
        let mut env = watch.env();
        env.push((ACCESS_VAR.into(), "1".into()));
        for (name, value) in &mut env {
            if name == "LD_PRELOAD" && with_other {
                value.push(" ");
                value.push(&other);
            }
        }
        let stdout = run_probe("access_probe", env);
        let reads = watch.finish().unwrap();
        if with_other {
            assert!(stdout.contains("access=42"), "{stdout}");
            assert_eq!(reads.logged, 0, "{:?}", reads.looked);
        } else {
            assert!(stdout.contains("access=0"), "{stdout}");
            assert!(reads.looked.contains(Path::new("/")), "{:?}", reads.looked);
        }
    }
}

/// A path one process logged, the others of the run do not log again (the run's shared
/// table): three `cat`s of one file, one line.
#[test]
fn processes_of_a_run_log_a_path_once() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    std::fs::write(dir.join("input"), "x").unwrap();
    let tools = tempfile::tempdir().unwrap();
    let watch = EnvWatch::prepare(tools.path(), tools.path()).unwrap();
    let env = watch.env();
    assert!(env.iter().any(|(name, _)| name == "MEMOSHELVE_SEEN_TABLE"), "{env:?}");
    let log = env.iter().find(|(name, _)| name == "MEMOSHELVE_ENV_LOG").unwrap().1.clone();
    let status = Command::new("sh")
        .args(["-c", "cat input; cat input; cat input"])
        .current_dir(&dir)
        .envs(env)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let line_end = format!("\tF\t{}\n", dir.join("input").display());
    assert_eq!(text.matches(&line_end).count(), 1, "{text}");
    let reads = watch.finish().unwrap();
    assert!(reads.looked.contains(&dir.join("input")));
}
