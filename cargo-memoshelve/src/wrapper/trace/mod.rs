//! Watching a build script's run (DESIGN.md section 10): every path it and the processes it
//! starts looked at, listed, ran and wrote, and the variables they read by name.
//!
//! One small interface over the mechanisms: [`spawn`] starts the script watched where this
//! machine allows it (Linux with glibc: a seccomp filter picks the file system calls, `calls`,
//! and sends them to the runner by user notification, `notify`, or before Linux 5.8 as
//! `ptrace` stops, `ptrace`; a preloaded interposer, `env`, logs the variables, and on x86_64
//! the paths of the most frequent file calls, which then do not stop: tested in `fast`),
//! plainly elsewhere;
//! [`Run::wait`] gives its exit status and, when watched, what it [`Observed`]. Turning what
//! was observed into an entry's inputs (what is left out, what each path holds) is
//! `inputs`' business; the mechanisms only report.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod calls;
#[cfg(target_os = "linux")]
pub(crate) mod env;
#[cfg(all(test, target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
mod fast;
pub(crate) mod inputs;
#[cfg(all(test, target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
mod ldpath;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod notify;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod ptrace;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};

/// `0` turns tracing off: scripts are keyed by what they declare (DESIGN.md section 9's rules);
/// `ptrace` picks that watcher where user notification would be used.
pub(crate) const TRACE_VAR: &str = "MEMOSHELVE_BUILD_SCRIPTS_TRACE";

/// How a run is watched: `notify` where the kernel allows it (5.8), else `ptrace`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
enum Watcher {
    Notify(notify::Watch),
    Ptrace(ptrace::Tracer),
}

/// What a watched run did, as the processes spelled it (a relative path made absolute against
/// the process's working directory or directory descriptor, links not resolved).
#[derive(Debug)]
pub(crate) struct Observed {
    /// Paths opened to read, `stat`ed, `access`ed, read as links, or executed (found or not).
    pub(crate) looked: BTreeSet<PathBuf>,
    /// Directories read as listings.
    pub(crate) listed: BTreeSet<PathBuf>,
    /// Paths created, opened to write, truncated, renamed (both names), removed, or whose
    /// times, mode or owner were set.
    pub(crate) written: BTreeSet<PathBuf>,
    /// The programs that ran (each image an `exec` loaded).
    pub(crate) ran: BTreeSet<PathBuf>,
    /// The variables read by name (`getenv`), or why they could not be watched.
    pub(crate) env: Result<BTreeSet<String>, String>,
    /// Whether the script's own process was watched for its `getenv`s (a static binary, or
    /// one that drops `LD_PRELOAD`, is not).
    pub(crate) script_env_watched: bool,
    /// Whether a process other than the script ran a program (a shell or perl reads its
    /// inherited environment without `getenv`).
    pub(crate) started_programs: bool,
    /// Why the run, though it succeeded, must not be recorded: a process that outlived the
    /// script, a call the tracer cannot read.
    pub(crate) unrecordable: Option<String>,
    /// How many system calls stopped for the tracer (what tracing cost).
    pub(crate) stops: u64,
    /// How many file calls the preloaded shim logged instead (`memoshelve-env-shim`'s fast
    /// path: they did not stop).
    pub(crate) logged: u64,
}

impl Default for Observed {
    fn default() -> Observed {
        Observed {
            looked: BTreeSet::new(),
            listed: BTreeSet::new(),
            written: BTreeSet::new(),
            ran: BTreeSet::new(),
            env: Err("not watched".to_owned()),
            script_env_watched: false,
            started_programs: false,
            unrecordable: None,
            stops: 0,
            logged: 0,
        }
    }
}

/// Where the watch keeps its own files (left out of what the run read and wrote).
#[cfg_attr(
    not(all(target_os = "linux", target_env = "gnu")),
    expect(dead_code, reason = "read by the Linux watchers only")
)]
pub(crate) struct Dirs<'a> {
    /// The installed `getenv` interposer's directory (in the cache root: shared by builds).
    pub(crate) tools: &'a Path,
    /// This build's scratch directory for the logs of one run.
    pub(crate) scratch: &'a Path,
}

/// Why runs cannot be watched here; `None` when they can (the cheap checks: a machine that
/// refuses `ptrace` is found out by the first run, see [`Run::wait`]'s error).
pub(crate) fn unavailable() -> Option<String> {
    if std::env::var_os(TRACE_VAR).is_some_and(|value| value == "0") {
        return Some(format!("{TRACE_VAR}=0"));
    }
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return Some("runs are traced on Linux with glibc only".to_owned());
    }
    // A build inside a watched build script (a script that runs cargo) under user
    // notification: the outer watch sees it all, through its log, which the inner processes
    // must keep writing to (a watch of its own would point them at another).
    #[cfg(target_os = "linux")]
    if std::env::var_os(env::LOG_VAR).is_some() {
        return Some("this build runs inside a traced build script".to_owned());
    }
    // A build inside a traced build script (a script that runs cargo): one tracer per process,
    // and the outer run records all the inner one reads.
    let traced = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        let line = status.lines().find(|line| line.starts_with("TracerPid:"))?;
        Some(line.split_whitespace().nth(1)? != "0")
    });
    match traced {
        Some(false) => None,
        Some(true) => Some("this build runs inside a traced process (a build script)".to_owned()),
        None => Some("cannot read /proc/self/status".to_owned()),
    }
}

/// A started script: its process (take its pipes from `child`), and the watch when it is
/// watched.
pub(crate) struct Run {
    pub(crate) child: Child,
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    watch: Option<(Watcher, Result<env::EnvWatch, String>)>,
}

/// Starts `command`, watched when `dirs` is given (the caller has checked [`unavailable`]; an
/// error then may be the machine refusing to trace: the caller can start it unwatched).
pub(crate) fn spawn(command: &mut Command, dirs: Option<&Dirs<'_>>) -> io::Result<Run> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let Some(dirs) = dirs {
        let watch = env::EnvWatch::prepare(dirs.tools, dirs.scratch);
        if let Ok(watch) = &watch {
            command.envs(watch.env());
        }
        let ptrace = std::env::var_os(TRACE_VAR).is_some_and(|value| value == "ptrace");
        if notify::supported() && !ptrace {
            let pending = notify::prepare(command)?;
            return match command.spawn() {
                Ok(child) => {
                    let watcher = Watcher::Notify(pending.started(child.id()));
                    Ok(Run { child, watch: Some((watcher, watch)) })
                }
                Err(err) => {
                    pending.abandon();
                    Err(err)
                }
            };
        }
        let pending = ptrace::prepare(command)?;
        return match command.spawn() {
            Ok(child) => {
                Ok(Run { child, watch: Some((Watcher::Ptrace(pending.started()), watch)) })
            }
            Err(err) => {
                pending.abandon();
                Err(err)
            }
        };
    }
    let _ = dirs;
    Ok(Run {
        child: command.spawn()?,
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        watch: None,
    })
}

impl Run {
    /// Waits for the script (and, watched, for every process it started, or lets go of those
    /// that outlive it); its exit status and what it was seen to do. An error of a watched
    /// run means the tracer failed (the script's process is gone).
    pub(crate) fn wait(mut self) -> io::Result<(ExitStatus, Option<Observed>)> {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if let Some((watcher, watch)) = self.watch.take() {
            let (status, mut observed) = match watcher {
                Watcher::Notify(watcher) => {
                    let status = self.child.wait()?;
                    (status, watcher.finish()?)
                }
                // The tracer, a thread of the script's parent process, reaps it.
                Watcher::Ptrace(tracer) => tracer.run()?,
            };
            let own_paths = watch.as_ref().map(env::EnvWatch::own_paths).unwrap_or_default();
            match watch.map(env::EnvWatch::finish) {
                Ok(Ok(mut reads)) => {
                    observed.script_env_watched = reads.loaded.contains(&self.child.id());
                    observed.env = Ok(reads.names);
                    observed.looked.append(&mut reads.looked);
                    observed.logged = reads.logged;
                }
                // The fast path's paths are in the log too: without them, what the run read
                // is not known.
                Ok(Err(why)) => {
                    observed.unrecordable.get_or_insert_with(|| why.clone());
                    observed.env = Err(why);
                }
                // No shim was preloaded: the variables are not known, the paths all stopped.
                Err(why) => observed.env = Err(why),
            }
            for own in own_paths {
                observed.looked.remove(&own);
                observed.written.remove(&own);
            }
            return Ok((status, Some(observed)));
        }
        Ok((self.child.wait()?, None))
    }
}

/// Runs this test binary's test `test` again as user `nobody`, from a copy that user can run:
/// watching needs no privilege. Only as root (as in CI): run as a user, the other tests show
/// it already.
#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
pub(super) fn passes_as_nobody(test: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let binary = dir.path().join("tests");
    // Copied by another process: a copy written here could be held open for writing by a
    // child another test thread is forking at that moment ("Text file busy" on exec).
    let copied =
        Command::new("cp").arg(std::env::current_exe().unwrap()).arg(&binary).status().unwrap();
    assert!(copied.success());
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = Command::new(&binary)
        .args(["--exact", test, "--test-threads=1"])
        .env("TMPDIR", dir.path())
        .current_dir(dir.path())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("1 passed"), "{text}");
}

/// The one scenario both watchers must see whole: `run(dir, script)` runs `sh -c script` in
/// `dir`, watched. A read, a missing path, a listing, writes (one by a child that changed
/// directory: its relative path resolves against its own cwd), programs, an exit code.
#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
pub(super) fn sees_every_process(run: impl FnOnce(&Path, &str) -> (ExitStatus, Observed)) {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    std::fs::write(dir.join("input"), "x").unwrap();
    std::fs::create_dir(dir.join("listed")).unwrap();
    let (status, observed) = run(
        &dir,
        "cat input > written; test -e missing || true; ls listed >/dev/null; \
         (cd listed && cat ../input > ../from-a-child); exit 3",
    );
    assert_eq!(status.code(), Some(3));
    assert!(observed.looked.contains(&dir.join("input")), "{observed:?}");
    assert!(observed.looked.contains(&dir.join("missing")), "{observed:?}");
    assert!(observed.listed.contains(&dir.join("listed")), "{observed:?}");
    assert!(observed.written.contains(&dir.join("written")), "{observed:?}");
    assert!(observed.written.contains(&dir.join("listed/../from-a-child")), "{observed:?}");
    let ran: Vec<_> = observed.ran.iter().filter_map(|path| path.file_name()).collect();
    assert!(ran.iter().any(|name| *name == "cat"), "{observed:?}");
    assert!(ran.iter().any(|name| *name == "ls"), "{observed:?}");
    assert!(observed.started_programs);
    assert_eq!(observed.unrecordable, None);
}
