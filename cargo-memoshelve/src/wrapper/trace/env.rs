//! Which environment variables a traced run reads by name: the watchers cannot see a `getenv`,
//! so the run's processes preload an interposer of libc's `getenv` and `secure_getenv`
//! (`memoshelve-env-shim/shim/getenv.rs`, compiled by that crate's `build.rs`, embedded here)
//! that logs each name it is asked for to a file this module creates, parses and removes.
//!
//! What it cannot see: a process that reads its inherited `environ` without `getenv` (sh,
//! perl, python, Rust's `env::vars()`), a static binary or one that drops `LD_PRELOAD`, a
//! process with another ABI (32-bit; ld.so then prints that it ignored the preload), and reads
//! through libc's own internal calls (`TZ`, the locale variables, `PATH` in `execvp`).
//! [`EnvReads::loaded`] tells which processes were watched at all.

// The runner watches runs on glibc only (`trace/mod.rs`); elsewhere only the tests use this.
#![cfg_attr(not(target_env = "gnu"), allow(dead_code, reason = "watched runs are glibc-only"))]

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable that names the log to the shim (`LOG_VAR` in `shim/getenv.rs`). The shim
/// never logs a read of it: its value differs on every run.
pub(crate) const LOG_VAR: &str = "MEMOSHELVE_ENV_LOG";

/// The interposer, built for this target by `memoshelve-env-shim` (`None` where it is not).
const SHIM: Option<&[u8]> = memoshelve_env_shim::SHIM;

/// Ends a name in [`EnvReads::names`] that the shim had to cut (see there).
const TRUNCATED: char = '\0';

/// Watches which environment variables a traced run reads by name.
#[derive(Debug)]
pub(crate) struct EnvWatch {
    shim: PathBuf,
    log: PathBuf,
    /// The run's table of logged paths, shared by its processes (`None` where a `memfd`
    /// could not be made: each process then keeps its own).
    seen: Option<OwnedFd>,
}

/// The variable that names the shared table to the shim (`SEEN_VAR` in `shim/files.rs`).
const SEEN_VAR: &str = "MEMOSHELVE_SEEN_TABLE";

/// The shared table's size (`SHARED_BYTES` in `shim/files.rs`: 65,536 slots of two u64s).
const SEEN_BYTES: i64 = 1 << 20;

/// A `memfd` of [`SEEN_BYTES`] zeros (memory, not disk: the shim maps it shared, and a
/// mapped file on a full disk would kill a process with `SIGBUS`).
fn seen_table() -> Option<OwnedFd> {
    // SAFETY: a NUL-terminated name and flags; the result is a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"memoshelve-seen".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just made and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a valid descriptor and length.
    (unsafe { libc::ftruncate(fd.as_raw_fd(), SEEN_BYTES) } == 0).then_some(fd)
}

/// What a watched run read.
#[derive(Debug, Default)]
pub(crate) struct EnvReads {
    /// Every name any process read with getenv/secure_getenv.
    ///
    /// A name longer than the shim's line buffer (over 500 bytes, never seen in practice) is
    /// recorded as its first bytes followed by a NUL, which no variable's name can hold: take
    /// it as every variable whose name starts with those bytes.
    pub(crate) names: std::collections::BTreeSet<String>,
    /// The processes the shim was loaded into (by pid; a pid appears once per exec'd image).
    pub(crate) loaded: std::collections::BTreeSet<u32>,
    /// The paths the shim's fast path looked at (x86_64: `shim/files.rs`), each logged before
    /// the call, which then did not stop for the watcher.
    pub(crate) looked: std::collections::BTreeSet<PathBuf>,
    /// How many calls the fast path logged.
    pub(crate) logged: u64,
}

impl EnvWatch {
    /// Installs the shim under `shim_dir` (once: `memoshelve-env-<first 16 hex of the blake3
    /// of its bytes>.so`, written to a temp file in the same dir and renamed, so concurrent
    /// runners never see half a file) and makes an empty log file in `log_dir` (a name unique
    /// to this process and call). Err(why) when the shim is unavailable (not built for this
    /// target, the shim crate built none, or a write failed).
    ///
    /// An installed file whose bytes differ (damaged, or a half-written file from before) is
    /// replaced. Both directories are created when missing. A `shim_dir` whose path holds a
    /// space or a colon is refused: `LD_PRELOAD` cannot spell it.
    pub(crate) fn prepare(shim_dir: &Path, log_dir: &Path) -> Result<EnvWatch, String> {
        let Some(bytes) = SHIM else {
            return Err(
                "the getenv interposer was not built for this target (see memoshelve-env-shim's build.rs)".to_owned()
            );
        };
        let shim = install(shim_dir, bytes)?;
        let log = create_log(log_dir)?;
        Ok(EnvWatch { shim, log, seen: seen_table() })
    }

    /// Variables to set on the traced command: `LD_PRELOAD` = the shim's path, followed by
    /// the user's own `LD_PRELOAD` if set (space-separated, as ld.so reads it), and
    /// `MEMOSHELVE_ENV_LOG` = the log's path.
    ///
    /// "The user's own" is this process's `LD_PRELOAD` (cargo runs the runner with the
    /// script's environment).
    pub(crate) fn env(&self) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        let user = std::env::var_os("LD_PRELOAD");
        let mut env = vec![
            ("LD_PRELOAD".into(), self.preload(user.as_deref())),
            (LOG_VAR.into(), self.log.clone().into_os_string()),
        ];
        if let Some(seen) = &self.seen {
            let fd = seen.as_raw_fd();
            env.push((SEEN_VAR.into(), format!("/proc/{}/fd/{fd}", std::process::id()).into()));
        }
        // For the shim to keep the loader's search of LD_LIBRARY_PATH out of the stops, where a
        // started program's environment has one (`shim/ldpath.rs`).
        if let Some(search) = loader_search() {
            env.extend(search.iter().cloned());
        }
        env
    }

    /// The files the watch itself uses (the shim, the log): the tracer leaves them out of
    /// what the run read and wrote.
    pub(crate) fn own_paths(&self) -> Vec<PathBuf> {
        vec![self.shim.clone(), self.log.clone()]
    }

    /// After the run: parses and removes the log.
    ///
    /// A line that does not parse (a process killed in the middle of a write, a full disk)
    /// or a name that is not UTF-8 is an error: what was read is then not known.
    pub(crate) fn finish(self) -> Result<EnvReads, String> {
        let bytes = fs::read(&self.log)
            .map_err(|err| format!("cannot read {}: {err}", self.log.display()))?;
        parse(&bytes).map_err(|why| format!("{}: {why}", self.log.display()))
        // Drop removes the log.
    }

    /// `LD_PRELOAD`'s value: the shim first (so its `getenv` is the one programs call, and
    /// `RTLD_NEXT` from it finds the user's interposers, then libc), then `user`'s entries.
    fn preload(&self, user: Option<&OsStr>) -> OsString {
        let mut preload = self.shim.clone().into_os_string();
        let user_entries = user
            .map(|user| user.as_bytes())
            .unwrap_or_default()
            .split(|&byte| byte == b' ' || byte == b':')
            .filter(|entry| !entry.is_empty() && *entry != self.shim.as_os_str().as_bytes());
        for entry in user_entries {
            preload.push(" ");
            preload.push(OsStr::from_bytes(entry));
        }
        preload
    }
}

impl Drop for EnvWatch {
    fn drop(&mut self) {
        // A process that outlives the run keeps writing to the unlinked file; the shim opens
        // without `O_CREAT`, so one started later finds no log and logs nothing.
        let _ = fs::remove_file(&self.log);
    }
}

/// The variable that tells the shim which subdirectories the loader searches in each
/// directory of `LD_LIBRARY_PATH` (`SUBDIRS` in `shim/ldpath.rs`), and the one naming the
/// loader that was measured with (`INTERP`).
const SUBDIRS_VAR: &str = "MEMOSHELVE_LD_SUBDIRS";
const INTERP_VAR: &str = "MEMOSHELVE_LD_INTERP";

/// [`SUBDIRS_VAR`] and [`INTERP_VAR`], measured once per process: this program run by its own
/// loader with `LD_DEBUG=libs` and `LD_TRACE_LOADED_OBJECTS` (it loads its libraries, prints
/// where it searched and exits before `main`), with `LD_LIBRARY_PATH` a directory that does not
/// exist, so that the loader lists every subdirectory it would try. `None` off x86_64, for a
/// static build, or when the loader says nothing usable: the shim then lets the loader search.
fn loader_search() -> Option<[(OsString, OsString); 2]> {
    static SEARCH: std::sync::OnceLock<Option<[(OsString, OsString); 2]>> =
        std::sync::OnceLock::new();
    SEARCH
        .get_or_init(|| {
            if !cfg!(target_arch = "x86_64") {
                return None;
            }
            let exe = std::env::current_exe().ok()?;
            let interp = interpreter(&exe)?;
            const PROBE: &str = "/memoshelve-loader-probe";
            let output = std::process::Command::new(&exe)
                .env("LD_TRACE_LOADED_OBJECTS", "1")
                .env("LD_DEBUG", "libs")
                .env("LD_LIBRARY_PATH", PROBE)
                .env_remove("LD_PRELOAD")
                .env_remove("LD_DEBUG_OUTPUT")
                .stdin(std::process::Stdio::null())
                .output()
                .ok()?;
            let subdirs = searched_subdirs(&String::from_utf8_lossy(&output.stderr), PROBE)?;
            Some([(SUBDIRS_VAR.into(), subdirs.into()), (INTERP_VAR.into(), interp)])
        })
        .clone()
}

/// From `LD_DEBUG=libs` output, the subdirectories of `probe` (the only `LD_LIBRARY_PATH`
/// directory) the loader searched, in its order, `:`-separated, without `probe` itself (which
/// it searches last).
fn searched_subdirs(debug: &str, probe: &str) -> Option<String> {
    let line = debug.lines().find(|line| line.trim_end().ends_with("(LD_LIBRARY_PATH)"))?;
    let list = line.split("search path=").nth(1)?.split_whitespace().next()?;
    let mut subdirs: Vec<&str> = Vec::new();
    let mut ends_with_probe = false;
    for dir in list.split(':') {
        ends_with_probe = dir == probe;
        if ends_with_probe {
            continue;
        }
        let sub = dir.strip_prefix(probe)?.strip_prefix('/')?;
        if sub.is_empty() || sub.contains(':') {
            return None;
        }
        if !subdirs.contains(&sub) {
            subdirs.push(sub);
        }
    }
    ends_with_probe.then(|| subdirs.join(":"))
}

/// The `PT_INTERP` of the x86_64 ELF program at `path` (its loader), without the NUL.
fn interpreter(path: &Path) -> Option<OsString> {
    use std::io::Read as _;
    // The headers and the name come first in the file.
    let mut bytes = Vec::new();
    fs::File::open(path).ok()?.take(64 * 1024).read_to_end(&mut bytes).ok()?;
    let (offset, size) = memoshelve_env_shim::elf::interpreter_at(&bytes)?;
    let name = bytes.get(offset..offset.checked_add(size)?)?.strip_suffix(b"\0")?;
    Some(OsStr::from_bytes(name).to_owned())
}

/// Writes `bytes` as `shim_dir/memoshelve-env-<hash>.so` unless that file already holds them.
fn install(shim_dir: &Path, bytes: &[u8]) -> Result<PathBuf, String> {
    let hash = blake3::hash(bytes).to_hex();
    let hash = &hash.as_str()[..16];
    let shim = shim_dir.join(format!("memoshelve-env-{hash}.so"));
    if shim.as_os_str().as_bytes().iter().any(|&byte| byte == b' ' || byte == b':') {
        return Err(format!(
            "{} holds a space or a colon, which LD_PRELOAD cannot spell",
            shim.display()
        ));
    }
    if fs::read(&shim).is_ok_and(|installed| installed == bytes) {
        return Ok(shim);
    }
    fs::create_dir_all(shim_dir)
        .map_err(|err| format!("cannot create {}: {err}", shim_dir.display()))?;
    let temp = shim_dir.join(format!(
        ".memoshelve-env-{hash}.{}.{}.tmp",
        std::process::id(),
        unique_number()
    ));
    let written = write_new(&temp, bytes, 0o755).and_then(|()| fs::rename(&temp, &shim));
    if let Err(err) = written {
        let _ = fs::remove_file(&temp);
        return Err(format!("cannot install the getenv interposer as {}: {err}", shim.display()));
    }
    Ok(shim)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    file.write_all(bytes)?;
    // The mode given to open is masked by the umask; the loader needs only read, but keep the
    // usual mode of a library.
    file.set_permissions(fs::Permissions::from_mode(mode))
}

/// Creates an empty log in `log_dir`, named after this process and a counter (a stale file
/// of an earlier process with the same pid is stepped over).
fn create_log(log_dir: &Path) -> Result<PathBuf, String> {
    fs::create_dir_all(log_dir)
        .map_err(|err| format!("cannot create {}: {err}", log_dir.display()))?;
    let mut last_err = None;
    for _ in 0..16 {
        let log =
            log_dir.join(format!("memoshelve-env-{}-{}.log", std::process::id(), unique_number()));
        match write_new(&log, b"", 0o600) {
            Ok(()) => return Ok(log),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last_err = Some(err),
            Err(err) => return Err(format!("cannot create {}: {err}", log.display())),
        }
    }
    let last_err = last_err.expect("the loop ran and every attempt failed");
    Err(format!("cannot create a log in {}: {last_err}", log_dir.display()))
}

fn unique_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Reads the shim's log (its format is in `shim/getenv.rs`).
fn parse(log: &[u8]) -> Result<EnvReads, String> {
    let mut reads = EnvReads::default();
    let Some(complete) = log.strip_suffix(b"\n") else {
        return if log.is_empty() { Ok(reads) } else { Err("the last line is cut".to_owned()) };
    };
    for (line_idx, line) in complete.split(|&byte| byte == b'\n').enumerate() {
        let bad_line =
            || format!("line {} does not parse: {:?}", line_idx + 1, String::from_utf8_lossy(line));
        let mut fields = line.splitn(3, |&byte| byte == b'\t');
        let pid = fields
            .next()
            .and_then(|pid| std::str::from_utf8(pid).ok()?.parse::<u32>().ok())
            .ok_or_else(bad_line)?;
        match (fields.next(), fields.next()) {
            (Some(b"L"), None) => {
                reads.loaded.insert(pid);
            }
            (Some(b"U"), None) => {
                return Err(format!(
                    "process {pid} may have loaded another library than plain cargo's would \
                     (the loader's search of LD_LIBRARY_PATH could not be checked)"
                ));
            }
            (Some(b"F"), Some(path)) if path.first() == Some(&b'/') => {
                let path = unescape(path).ok_or_else(bad_line)?;
                reads.looked.insert(PathBuf::from(OsString::from_vec(path)));
                reads.logged += 1;
            }
            (Some(tag @ (b"G" | b"T")), Some(escaped)) => {
                let bytes = unescape(escaped).ok_or_else(bad_line)?;
                let name =
                    if tag == b"T" { truncated_name(bytes) } else { String::from_utf8(bytes) };
                let name = name.map_err(|err| {
                    format!(
                        "line {}: a process read the variable {:?}, whose name is not UTF-8",
                        line_idx + 1,
                        String::from_utf8_lossy(err.as_bytes())
                    )
                })?;
                reads.names.insert(name);
            }
            _ => return Err(bad_line()),
        }
    }
    Ok(reads)
}

/// A cut name's prefix, without a character the cut split, followed by [`TRUNCATED`].
fn truncated_name(mut bytes: Vec<u8>) -> Result<String, std::string::FromUtf8Error> {
    if let Err(err) = std::str::from_utf8(&bytes)
        && err.error_len().is_none()
    {
        bytes.truncate(err.valid_up_to());
    }
    let mut name = String::from_utf8(bytes)?;
    name.push(TRUNCATED);
    Ok(name)
}

/// Undoes the shim's escapes (`\\` and `\xHH`); `None` for a raw control byte or a bad escape.
fn unescape(escaped: &[u8]) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some((&byte, after)) = rest.split_first() {
        rest = after;
        match byte {
            b'\\' => match rest {
                [b'\\', after @ ..] => {
                    bytes.push(b'\\');
                    rest = after;
                }
                [b'x', high, low, after @ ..] => {
                    let digit = |hex: u8| char::from(hex).to_digit(16);
                    bytes.push(u8::try_from(digit(*high)? << 4 | digit(*low)?).ok()?);
                    rest = after;
                }
                _ => return None,
            },
            0..0x20 | 0x7f => return None,
            _ => bytes.push(byte),
        }
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_shim_is_built_for_glibc_and_prepare_says_when_it_is_not() {
        assert_eq!(
            SHIM.is_some(),
            cfg!(target_env = "gnu"),
            "see memoshelve-env-shim's build.rs warning"
        );
        if SHIM.is_none() {
            let root = tempfile::tempdir().unwrap();
            assert!(EnvWatch::prepare(root.path(), root.path()).is_err());
        }
    }

    /// Real processes under the watch.
    #[cfg(target_env = "gnu")]
    mod runs {
        use super::*;
        use std::process::{Command, Stdio};

        /// Set on a helper process: the names it reads with `std::env::var_os` (libc `getenv`),
        /// separated by commas. Coreutils' `printenv NAME` cannot serve: it walks `environ`.
        const READ_VAR: &str = "MEMOSHELVE_ENV_TEST_READ";
        /// Set on a helper process: how many threads read the names, and how many times each.
        const THREADS_VAR: &str = "MEMOSHELVE_ENV_TEST_THREADS";
        const ROUNDS_VAR: &str = "MEMOSHELVE_ENV_TEST_ROUNDS";

        /// Not a test: the body of the helper processes the tests start (this test binary, run
        /// with `--exact` on this test and [`READ_VAR`] set). Does nothing in a plain test run.
        #[test]
        fn helper_reads_variables() {
            let Some(names) = std::env::var_os(READ_VAR) else { return };
            let names: Vec<String> = names
                .to_str()
                .expect("test names are UTF-8")
                .split(',')
                .map(str::to_owned)
                .collect();
            let count = |var: &str| -> usize {
                std::env::var(var).map_or(1, |count| count.parse().expect("a count"))
            };
            let (n_threads, n_rounds) = (count(THREADS_VAR), count(ROUNDS_VAR));
            std::thread::scope(|scope| {
                for _ in 0..n_threads {
                    scope.spawn(|| {
                        for _ in 0..n_rounds {
                            for name in &names {
                                std::hint::black_box(std::env::var_os(name));
                            }
                        }
                    });
                }
            });
        }

        /// A command that runs [`helper_reads_variables`] reading `names`.
        fn helper(names: &[&str]) -> Command {
            let mut command = Command::new(helper_exe());
            command.args(helper_args()).env(READ_VAR, names.join(",")).stdout(Stdio::null());
            command
        }

        fn helper_exe() -> PathBuf {
            std::env::current_exe().expect("the test binary's path")
        }

        fn helper_args() -> [String; 3] {
            let (_crate, module) = module_path!().split_once("::").expect("a module path");
            ["--exact".to_owned(), format!("{module}::helper_reads_variables"), "-q".to_owned()]
        }

        struct Dirs {
            _root: tempfile::TempDir,
            shim: PathBuf,
            log: PathBuf,
        }

        fn dirs() -> Dirs {
            let root = tempfile::tempdir().unwrap();
            let shim = root.path().join("tools");
            let log = root.path().join("scratch");
            Dirs { shim, log, _root: root }
        }

        fn watch(dirs: &Dirs) -> EnvWatch {
            EnvWatch::prepare(&dirs.shim, &dirs.log).unwrap()
        }

        fn run(command: &mut Command) -> u32 {
            let mut child = command.spawn().unwrap();
            let pid = child.id();
            let status = child.wait().unwrap();
            assert!(status.success(), "{command:?}: {status}");
            pid
        }

        #[test]
        fn names_read_by_the_process_are_seen_and_others_are_not() {
            let dirs = dirs();
            let watch = watch(&dirs);
            let pid = run(helper(&["MEMOSHELVE_TEST_READ"])
                .envs(watch.env())
                .env("MEMOSHELVE_TEST_READ", "1")
                .env("MEMOSHELVE_TEST_NOT_READ", "1"));
            let printenv_pid = run(Command::new("printenv")
                .arg("MEMOSHELVE_TEST_READ")
                .envs(watch.env())
                .env("MEMOSHELVE_TEST_READ", "1")
                .stdout(Stdio::null()));
            let reads = watch.finish().unwrap();
            assert!(reads.names.contains("MEMOSHELVE_TEST_READ"), "{reads:?}");
            assert!(!reads.names.contains("MEMOSHELVE_TEST_NOT_READ"), "{reads:?}");
            assert!(reads.loaded.contains(&pid), "{reads:?}");
            assert!(reads.loaded.contains(&printenv_pid), "{reads:?}");
        }

        #[test]
        fn a_read_by_a_child_of_a_child_is_seen() {
            let dirs = dirs();
            let watch = watch(&dirs);
            // A command after the helper, so that sh forks rather than execs it.
            let sh_pid = run(Command::new("sh")
                .args(["-c", r#""$0" "$@"; status=$?; exit $status"#])
                .arg(helper_exe())
                .args(helper_args())
                .envs(watch.env())
                .env(READ_VAR, "MEMOSHELVE_TEST_GRANDCHILD")
                .stdout(Stdio::null()));
            let reads = watch.finish().unwrap();
            assert!(reads.names.contains("MEMOSHELVE_TEST_GRANDCHILD"), "{reads:?}");
            assert!(reads.loaded.contains(&sh_pid), "{reads:?}");
            assert_eq!(reads.loaded.len(), 2, "sh and the helper: {reads:?}");
        }

        #[test]
        fn a_process_that_clears_its_environment_is_not_watched_and_not_a_failure() {
            let dirs = dirs();
            let watch = watch(&dirs);
            let env_pid = run(Command::new("env")
                .arg("-i")
                .arg(format!("{READ_VAR}=MEMOSHELVE_TEST_CLEARED"))
                .arg(helper_exe())
                .args(helper_args())
                .envs(watch.env())
                .stdout(Stdio::null()));
            let reads = watch.finish().unwrap();
            assert!(!reads.names.contains("MEMOSHELVE_TEST_CLEARED"), "{reads:?}");
            assert_eq!(reads.loaded, BTreeSet::from([env_pid]), "only env: {reads:?}");
        }

        #[test]
        fn concurrent_processes_and_threads_log_whole_lines() {
            let dirs = dirs();
            let watch = watch(&dirs);
            let names: Vec<String> =
                (0..10).map(|idx| format!("MEMOSHELVE_TEST_MANY_{idx}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let (n_threads, n_rounds) = (4, 50);
            let children: Vec<_> = (0..8)
                .map(|_| {
                    helper(&names)
                        .envs(watch.env())
                        .env(THREADS_VAR, n_threads.to_string())
                        .env(ROUNDS_VAR, n_rounds.to_string())
                        .spawn()
                        .unwrap()
                })
                .collect();
            let mut pids = BTreeSet::new();
            for mut child in children {
                pids.insert(child.id());
                assert!(child.wait().unwrap().success());
            }
            let log = fs::read_to_string(&watch.log).unwrap();
            for pid in &pids {
                for name in &names {
                    let line = format!("{pid}\tG\t{name}");
                    let n_lines = log.lines().filter(|logged| *logged == line).count();
                    assert_eq!(n_lines, n_threads * n_rounds, "{line:?}");
                }
            }
            let reads = watch.finish().unwrap();
            assert!(names.iter().all(|name| reads.names.contains(*name)), "{reads:?}");
            assert_eq!(reads.loaded, pids);
        }

        #[test]
        fn prepare_reuses_the_installed_shim_and_replaces_a_damaged_one() {
            let dirs = dirs();
            let first = watch(&dirs);
            let installed = first.shim.clone();
            let inode =
                |path: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap());
            let first_inode = inode(&installed);
            let second = watch(&dirs);
            assert_eq!(second.shim, installed);
            assert_eq!(inode(&installed), first_inode, "rewritten rather than reused");
            assert_ne!(second.log, first.log);

            fs::write(&installed, b"not a shared object").unwrap();
            let third = watch(&dirs);
            assert_eq!(third.shim, installed);
            assert_eq!(fs::read(&installed).unwrap(), SHIM.unwrap());
            let listing: Vec<_> =
                fs::read_dir(&dirs.shim).unwrap().map(|entry| entry.unwrap().file_name()).collect();
            assert_eq!(listing, [installed.file_name().unwrap()], "no temp file is left");
            // And the replaced shim works.
            run(helper(&["MEMOSHELVE_TEST_AFTER_REPAIR"]).envs(third.env()));
            assert!(third.finish().unwrap().names.contains("MEMOSHELVE_TEST_AFTER_REPAIR"));
        }

        #[test]
        fn reads_of_the_log_variable_are_not_logged() {
            let dirs = dirs();
            let watch = watch(&dirs);
            run(helper(&[LOG_VAR, "MEMOSHELVE_TEST_BESIDE"]).envs(watch.env()));
            let reads = watch.finish().unwrap();
            assert!(reads.names.contains("MEMOSHELVE_TEST_BESIDE"), "{reads:?}");
            assert!(!reads.names.contains(LOG_VAR), "{reads:?}");
        }

        #[test]
        fn odd_and_long_names_survive_the_log() {
            let dirs = dirs();
            let watch = watch(&dirs);
            let odd = "A\tB\nC\\D\u{7f}é";
            let long = "L".repeat(600);
            run(helper(&[odd, &long]).envs(watch.env()));
            let reads = watch.finish().unwrap();
            assert!(reads.names.contains(odd), "{reads:?}");
            let cut = reads.names.iter().find(|name| name.starts_with('L')).expect("the long name");
            assert_eq!(cut.len(), 513, "512 bytes and the marker");
            assert!(long.starts_with(cut.strip_suffix(TRUNCATED).unwrap()));
        }

        #[test]
        fn a_process_started_after_finish_leaves_no_log() {
            let dirs = dirs();
            let watch = watch(&dirs);
            let env = watch.env();
            let log = watch.log.clone();
            watch.finish().unwrap();
            run(helper(&["MEMOSHELVE_TEST_LATE"]).envs(env));
            assert!(!log.exists());
        }

        #[test]
        fn the_shim_comes_first_in_ld_preload() {
            let dirs = dirs();
            let watch = watch(&dirs);
            let shim = watch.shim.to_str().unwrap().to_owned();
            assert_eq!(watch.preload(None), OsString::from(&shim));
            assert_eq!(
                watch.preload(Some(OsStr::new("/a.so:/b.so  /c.so"))),
                OsString::from(format!("{shim} /a.so /b.so /c.so"))
            );
            assert_eq!(
                watch.preload(Some(OsStr::new(&format!("{shim} /a.so")))),
                OsString::from(format!("{shim} /a.so")),
                "listed once"
            );
        }
    }

    #[test]
    fn a_damaged_log_is_an_error() {
        let check = |log: &[u8]| parse(log).map(|reads| (reads.names, reads.loaded));
        assert_eq!(check(b""), Ok((BTreeSet::new(), BTreeSet::new())));
        assert_eq!(
            check(b"7\tL\n7\tG\tA\\x09B\n8\tT\tLO\n"),
            Ok((BTreeSet::from(["A\tB".to_owned(), "LO\0".to_owned()]), BTreeSet::from([7])))
        );
        assert!(check(b"7\tL\n7\tG\tAB").is_err(), "a cut line");
        assert!(check(b"7\tG\tA\\qB\n").is_err(), "a bad escape");
        assert!(check(b"7\tG\tA\\x+fB\n").is_err(), "a bad hex escape");
        assert!(check(b"7\tX\tA\n").is_err(), "an unknown tag");
        assert!(check(b"x\tL\n").is_err(), "a bad pid");
        assert!(check(b"7\tG\t\xff\n").is_err(), "a name that is not UTF-8");
    }
}
