//! The Linux tracer: a seccomp filter sends the file system calls (and `exec`s) of the script
//! and every process it starts to this runner as `ptrace` stops; everything else runs at full
//! speed (research/traced-inputs-prior-art.md: strace's seccomp mode, Riker, BuildXL).
//!
//! The script's process asks to be traced (`PTRACE_TRACEME`) and installs the filter between
//! `fork` and `exec`; the runner then follows forks, vforks, clones and execs. At each stop the
//! call's arguments are read (`PTRACE_GET_SYSCALL_INFO`, `process_vm_readv`), its paths made
//! absolute against the process's working directory or directory descriptor (as the kernel is
//! about to resolve them), and the process goes on: only entries stop, and what is at each
//! path is looked at after the run (by `inputs`). Calls of another ABI (32-bit `int 0x80`,
//! x32) stop too and make the run unrecordable; `io_uring_setup` fails with `ENOSYS` (its
//! operations would pass the filter unseen), which every io_uring user falls back from.
//!
//! The filter is hand-written (a table of 60-odd system call numbers): `seccompiler` kills a
//! process that makes a call of another ABI, where this filter must trace it.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::Observed;

/// What a traced call does with its paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// Looks at the path in argument `path` (relative to the directory descriptor in `dirfd`).
    Look { dirfd: Option<usize>, path: usize },
    /// Opens it: a look, or a write by its flags (in argument `flags`; `None`: `openat2`'s
    /// `struct open_how`, whose first field they are; `creat` always writes).
    Open { dirfd: Option<usize>, path: usize, flags: Flags },
    /// Changes what is at the path.
    Write { dirfd: Option<usize>, path: usize },
    /// Changes what is at two paths (`rename`), or makes the second from the first (`link`).
    Two { from: (Option<usize>, usize), to: (Option<usize>, usize), moves: bool },
    /// Lists the directory open as the descriptor in argument 0.
    List,
    /// Executes the path (the image that loads is recorded at the exec event).
    Exec { dirfd: Option<usize>, path: usize },
    /// Changes the working directory (nothing to record beyond the look at its path).
    Chdir { path: Option<usize> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flags {
    Arg(usize),
    OpenHow,
    Create,
}

/// The traced calls of this ABI, and what each does.
fn table() -> Vec<(libc::c_long, Act)> {
    use Act::{Chdir, Exec, List, Look, Open, Two, Write};
    let at = Some(0);
    let mut calls = vec![
        (libc::SYS_openat, Open { dirfd: at, path: 1, flags: Flags::Arg(2) }),
        (libc::SYS_openat2, Open { dirfd: at, path: 1, flags: Flags::OpenHow }),
        (libc::SYS_newfstatat, Look { dirfd: at, path: 1 }),
        (libc::SYS_statx, Look { dirfd: at, path: 1 }),
        (libc::SYS_faccessat, Look { dirfd: at, path: 1 }),
        (libc::SYS_faccessat2, Look { dirfd: at, path: 1 }),
        (libc::SYS_readlinkat, Look { dirfd: at, path: 1 }),
        (libc::SYS_execve, Exec { dirfd: None, path: 0 }),
        (libc::SYS_execveat, Exec { dirfd: at, path: 1 }),
        (libc::SYS_getdents64, List),
        (libc::SYS_chdir, Chdir { path: Some(0) }),
        (libc::SYS_fchdir, Chdir { path: None }),
        (libc::SYS_renameat, Two { from: (at, 1), to: (Some(2), 3), moves: true }),
        (libc::SYS_renameat2, Two { from: (at, 1), to: (Some(2), 3), moves: true }),
        (libc::SYS_linkat, Two { from: (at, 1), to: (Some(2), 3), moves: false }),
        (libc::SYS_unlinkat, Write { dirfd: at, path: 1 }),
        (libc::SYS_mkdirat, Write { dirfd: at, path: 1 }),
        (libc::SYS_mknodat, Write { dirfd: at, path: 1 }),
        (libc::SYS_symlinkat, Write { dirfd: Some(1), path: 2 }),
        (libc::SYS_truncate, Write { dirfd: None, path: 0 }),
        (libc::SYS_utimensat, Write { dirfd: at, path: 1 }),
        (libc::SYS_fchmodat, Write { dirfd: at, path: 1 }),
        (libc::SYS_fchmodat2, Write { dirfd: at, path: 1 }),
        (libc::SYS_fchownat, Write { dirfd: at, path: 1 }),
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        (libc::SYS_open, Open { dirfd: None, path: 0, flags: Flags::Arg(1) }),
        (libc::SYS_creat, Open { dirfd: None, path: 0, flags: Flags::Create }),
        (libc::SYS_stat, Look { dirfd: None, path: 0 }),
        (libc::SYS_lstat, Look { dirfd: None, path: 0 }),
        (libc::SYS_access, Look { dirfd: None, path: 0 }),
        (libc::SYS_readlink, Look { dirfd: None, path: 0 }),
        (libc::SYS_getdents, List),
        (libc::SYS_rename, Two { from: (None, 0), to: (None, 1), moves: true }),
        (libc::SYS_link, Two { from: (None, 0), to: (None, 1), moves: false }),
        (libc::SYS_unlink, Write { dirfd: None, path: 0 }),
        (libc::SYS_rmdir, Write { dirfd: None, path: 0 }),
        (libc::SYS_mkdir, Write { dirfd: None, path: 0 }),
        (libc::SYS_mknod, Write { dirfd: None, path: 0 }),
        (libc::SYS_symlink, Write { dirfd: None, path: 1 }),
        (libc::SYS_utime, Write { dirfd: None, path: 0 }),
        (libc::SYS_utimes, Write { dirfd: None, path: 0 }),
        (libc::SYS_futimesat, Write { dirfd: Some(0), path: 1 }),
        (libc::SYS_chmod, Write { dirfd: None, path: 0 }),
        (libc::SYS_chown, Write { dirfd: None, path: 0 }),
        (libc::SYS_lchown, Write { dirfd: None, path: 0 }),
    ]);
    calls
}

/// This ABI's `AUDIT_ARCH_*` (what `seccomp_data.arch` holds for its calls).
#[cfg(target_arch = "x86_64")]
const ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = 0xC000_00B7;

// Classic BPF, as <linux/filter.h> spells it: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K,
// BPF_JMP|BPF_JGE|BPF_K, BPF_RET|BPF_K.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;

fn statement(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter: another ABI's calls and this one's traced calls stop; `io_uring_setup` fails
/// with `ENOSYS`; the rest runs.
fn filter() -> Vec<libc::sock_filter> {
    let trace = statement(BPF_RET_K, libc::SECCOMP_RET_TRACE);
    let mut program = vec![
        statement(BPF_LD_W_ABS, 4), // seccomp_data.arch
        jump(BPF_JEQ_K, ARCH, 1, 0),
        trace,
        statement(BPF_LD_W_ABS, 0), // seccomp_data.nr
    ];
    #[cfg(target_arch = "x86_64")]
    program.extend([jump(BPF_JGE_K, 0x4000_0000, 0, 1), trace]); // x32
    program.extend([
        jump(BPF_JEQ_K, libc::SYS_io_uring_setup as u32, 0, 1),
        statement(BPF_RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ]);
    for (number, _) in table() {
        program.extend([jump(BPF_JEQ_K, number as u32, 0, 1), trace]);
    }
    program.push(statement(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    program
}

/// A tracer waiting for its script: `command` was given the steps its process takes between
/// fork and exec, and a thread waits to take it over.
pub(super) struct Pending {
    /// The ends of the handshake's pipes the script's process uses (closed here once it is
    /// started, so that the tracer sees the end of a process that never got that far).
    child_ends: [OwnedFd; 2],
    thread: JoinHandle<io::Result<(ExitStatus, Observed)>>,
}

/// Follows a started script and every process it starts, on a thread of its own (a tracee
/// answers to the thread that attached it).
pub(super) struct Tracer {
    thread: JoinHandle<io::Result<(ExitStatus, Observed)>>,
}

/// Makes `command`'s process, between fork and exec, tell its pid to a tracer thread, wait for
/// that thread to attach (`PTRACE_SEIZE`, whose options take effect at once), then install the
/// filter. Attaching from another thread than the one blocked in `spawn` is what lets the
/// filter be installed before the exec: a call it traces fails with `ENOSYS` while no tracer
/// with `PTRACE_O_TRACESECCOMP` is attached.
pub(super) fn prepare(command: &mut Command) -> io::Result<Pending> {
    let (ready_read, ready_write) = pipe()?;
    let (go_read, go_write) = pipe()?;
    let program = filter();
    let (ready, go) = (ready_write.as_raw_fd(), go_read.as_raw_fd());
    // SAFETY: between fork and exec: `getpid`, `write`, `read`, `prctl` and `seccomp` on
    // descriptors and memory the closure owns (the filter was built before the fork: nothing
    // is allocated here).
    unsafe {
        command.pre_exec(move || {
            let pid = libc::getpid().to_ne_bytes();
            if libc::write(ready, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                return Err(io::Error::last_os_error());
            }
            let mut answer = [0u8; 1];
            if libc::read(go, answer.as_mut_ptr().cast(), 1) != 1 || answer[0] != 1 {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            let prog =
                libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr().cast_mut() };
            let installed =
                libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &raw const prog);
            if installed != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let calls: HashMap<u64, Act> =
        table().into_iter().map(|(number, act)| (number as u64, act)).collect();
    let thread =
        std::thread::Builder::new().name("memoshelve-trace".to_owned()).spawn(move || {
            let root = attach(ready_read, go_write)?;
            follow(root, &calls)
        })?;
    Ok(Pending { child_ends: [ready_write, go_read], thread })
}

impl Pending {
    /// The script's process is started: the tracer has it.
    pub(super) fn started(self) -> Tracer {
        drop(self.child_ends);
        Tracer { thread: self.thread }
    }

    /// The script's process did not start: the tracer thread ends.
    pub(super) fn abandon(self) {
        drop(self.child_ends);
        let _ = self.thread.join();
    }
}

impl Tracer {
    /// Waits for the script (and what it started, or lets go of what outlives it).
    pub(super) fn run(self) -> io::Result<(ExitStatus, Observed)> {
        self.thread.join().map_err(|_| io::Error::other("the tracer panicked"))?
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `pipe2` fills the two descriptors it was given room for.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The tracer's side of the handshake: the script's pid, attached to with every option set.
fn attach(ready: OwnedFd, go: OwnedFd) -> io::Result<Pid> {
    let mut pid = [0u8; 4];
    std::fs::File::from(ready)
        .read_exact(&mut pid)
        .map_err(|err| io::Error::other(format!("the script did not start: {err}")))?;
    let root = Pid::from_raw(libc::pid_t::from_ne_bytes(pid));
    let options = Options::PTRACE_O_TRACESECCOMP
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_EXITKILL;
    let seized = ptrace::seize(root, options);
    let mut go = std::fs::File::from(go);
    go.write_all(&[u8::from(seized.is_ok())])?;
    seized.map_err(io::Error::from)?;
    Ok(root)
}

/// Follows `root` and every process it starts until it has ended, then lets go of the
/// processes that outlive it.
fn follow(root: Pid, calls: &HashMap<u64, Act>) -> io::Result<(ExitStatus, Observed)> {
    let mut observed = Observed { env: Ok(Default::default()), ..Observed::default() };
    let mut live: HashSet<Pid> = HashSet::from([root]);
    let mut status = None;
    // Processes told to stop so they can be let go of.
    let mut letting_go: HashSet<Pid> = HashSet::new();
    loop {
        // Only this thread's tracees: the script's process is the spawning thread's child,
        // and that thread (or another) may have children of its own.
        let event = match waitpid(None, Some(WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD)) {
            Ok(event) => event,
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => break,
            Err(err) => return Err(err.into()),
        };
        match event {
            WaitStatus::PtraceEvent(pid, _, libc::PTRACE_EVENT_STOP) => {
                if letting_go.remove(&pid) {
                    let _ = ptrace::detach(pid, None);
                    live.remove(&pid);
                } else {
                    // A new process's first stop, or a group stop: a build script is not
                    // job-controlled, it goes on.
                    live.insert(pid);
                    let _ = ptrace::cont(pid, None);
                }
            }
            WaitStatus::PtraceEvent(pid, _, event) => {
                match event {
                    libc::PTRACE_EVENT_SECCOMP => {
                        observed.stops += 1;
                        call(pid, calls, &mut observed);
                    }
                    libc::PTRACE_EVENT_EXEC => {
                        if let Ok(image) = std::fs::read_link(format!("/proc/{pid}/exe")) {
                            observed.ran.insert(image);
                        }
                        if pid != root {
                            observed.started_programs = true;
                        }
                    }
                    libc::PTRACE_EVENT_FORK
                    | libc::PTRACE_EVENT_VFORK
                    | libc::PTRACE_EVENT_CLONE => {
                        if let Ok(new) = ptrace::getevent(pid) {
                            live.insert(Pid::from_raw(new as libc::pid_t));
                        }
                    }
                    _ => {}
                }
                let _ = ptrace::cont(pid, None);
            }
            WaitStatus::Stopped(pid, signal) => {
                // A signal on its way to the process: delivered.
                let _ = ptrace::cont(pid, signal);
            }
            WaitStatus::Exited(pid, code) => {
                live.remove(&pid);
                if pid == root {
                    status = Some(ExitStatus::from_raw((code & 0xff) << 8));
                }
            }
            WaitStatus::Signaled(pid, signal, core) => {
                live.remove(&pid);
                if pid == root {
                    status = Some(ExitStatus::from_raw(signal as i32 | i32::from(core) << 7));
                }
            }
            WaitStatus::PtraceSyscall(pid) => {
                let _ = ptrace::cont(pid, None);
            }
            _ => {}
        }
        if status.is_some() {
            // The script has ended: cargo goes on, and so do the processes it left running,
            // untraced (their traced calls now fail: the run is not recorded).
            let running: Vec<Pid> =
                live.iter().filter(|pid| !letting_go.contains(pid)).copied().collect();
            for pid in running {
                // A thread gone without an event of its own (an exec from a thread other than
                // the leader takes the leader's id) cannot be interrupted: it is no process.
                if ptrace::interrupt(pid).is_err() {
                    live.remove(&pid);
                    continue;
                }
                letting_go.insert(pid);
                let program = std::fs::read_link(format!("/proc/{pid}/exe"))
                    .map_or_else(|_| "a process".to_owned(), |exe| exe.display().to_string());
                observed.unrecordable.get_or_insert_with(|| {
                    format!(
                        "{program} (pid {pid}), which it started, was still running when it ended"
                    )
                });
            }
            if live.is_empty() {
                break;
            }
        }
    }
    let status = status.ok_or_else(|| io::Error::other("the traced script's end was not seen"))?;
    Ok((status, observed))
}

/// One stopped call: what it does to which paths.
fn call(pid: Pid, calls: &HashMap<u64, Act>, observed: &mut Observed) {
    let Ok(info) = ptrace::syscall_info(pid) else {
        observed.unrecordable.get_or_insert_with(|| {
            format!("the tracer could not read a system call of process {pid}")
        });
        return;
    };
    // SAFETY: a seccomp stop fills the union's `seccomp` member.
    let call = unsafe { info.u.seccomp };
    let act = (info.op == libc::PTRACE_SYSCALL_INFO_SECCOMP && info.arch == ARCH)
        .then(|| calls.get(&call.nr))
        .flatten();
    let Some(&act) = act else {
        observed.unrecordable.get_or_insert_with(|| {
            format!(
                "a process made a system call the tracer cannot read (arch {:#x}, number {})",
                info.arch, call.nr
            )
        });
        return;
    };
    let args = call.args;
    let path = |dirfd: Option<usize>, index: usize| -> Option<PathBuf> {
        let path = read_path(pid, args[index])?;
        resolve(pid, dirfd.map(|at| args[at] as i32), path)
    };
    match act {
        Act::Chdir { path: Some(at) } => {
            if let Some(path) = path(None, at) {
                observed.looked.insert(path);
            }
        }
        Act::Chdir { path: None } => {}
        Act::Look { dirfd, path: at } | Act::Exec { dirfd, path: at } => {
            if let Some(path) = path(dirfd, at) {
                observed.looked.insert(path);
            }
        }
        Act::Open { dirfd, path: at, flags } => {
            let flags = match flags {
                Flags::Arg(index) => args[index] as i32,
                Flags::OpenHow => read_u64(pid, args[2]).unwrap_or(0) as i32,
                Flags::Create => libc::O_CREAT | libc::O_WRONLY,
            };
            let writes = flags & libc::O_ACCMODE != libc::O_RDONLY
                || flags & (libc::O_CREAT | libc::O_TRUNC) != 0;
            if let Some(path) = path(dirfd, at) {
                if writes {
                    observed.written.insert(path)
                } else {
                    observed.looked.insert(path)
                };
            }
        }
        Act::Write { dirfd, path: at } => {
            if let Some(path) = path(dirfd, at) {
                observed.written.insert(path);
            }
        }
        Act::Two { from, to, moves } => {
            if let Some(from) = path(from.0, from.1) {
                if moves {
                    observed.written.insert(from)
                } else {
                    observed.looked.insert(from)
                };
            }
            if let Some(to) = path(to.0, to.1) {
                observed.written.insert(to);
            }
        }
        Act::List => {
            if let Ok(dir) = std::fs::read_link(format!("/proc/{pid}/fd/{}", args[0] as i32)) {
                observed.listed.insert(dir);
            }
        }
    }
}

/// `path` made absolute as the kernel resolves it for process `pid`: against the directory
/// descriptor `dirfd` (`AT_FDCWD`, or `None`: the working directory).
fn resolve(pid: Pid, dirfd: Option<i32>, path: PathBuf) -> Option<PathBuf> {
    if path.is_absolute() {
        return Some(path);
    }
    let base = match dirfd {
        Some(fd) if fd != libc::AT_FDCWD => format!("/proc/{pid}/fd/{fd}"),
        _ => format!("/proc/{pid}/cwd"),
    };
    let base = std::fs::read_link(base).ok()?;
    // `fstatat(fd, "", AT_EMPTY_PATH)` is a look at an open file: the open was recorded.
    if path.as_os_str().is_empty() {
        return None;
    }
    Some(base.join(path))
}

/// The NUL-terminated string at `address` in process `pid` (at most two pages).
fn read_path(pid: Pid, address: u64) -> Option<PathBuf> {
    const PAGE: u64 = 4096;
    if address == 0 {
        return None;
    }
    let mut bytes = Vec::new();
    let mut at = address;
    let mut chunk = [0u8; PAGE as usize];
    while bytes.len() < 2 * PAGE as usize {
        // Never across a page: the next one may not be mapped.
        let len = (PAGE - at % PAGE) as usize;
        let remote = [RemoteIoVec { base: at as usize, len }];
        let read = process_vm_readv(pid, &mut [io::IoSliceMut::new(&mut chunk[..len])], &remote)
            .ok()
            .filter(|read| *read > 0)?;
        if let Some(end) = chunk[..read].iter().position(|byte| *byte == 0) {
            bytes.extend_from_slice(&chunk[..end]);
            return Some(PathBuf::from(OsString::from_vec(bytes)));
        }
        bytes.extend_from_slice(&chunk[..read]);
        at += read as u64;
    }
    None
}

/// The 8 bytes at `address` in process `pid`.
fn read_u64(pid: Pid, address: u64) -> Option<u64> {
    let mut value = [0u8; 8];
    let remote = [RemoteIoVec { base: address as usize, len: 8 }];
    let read = process_vm_readv(pid, &mut [io::IoSliceMut::new(&mut value)], &remote).ok()?;
    (read == 8).then(|| u64::from_ne_bytes(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `sh -c script` traced, in `dir`.
    fn traced(dir: &Path, script: &str) -> (ExitStatus, Observed) {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script).current_dir(dir);
        let pending = prepare(&mut command).unwrap();
        // The tracer reaps it (a thread of its parent process).
        #[expect(clippy::zombie_processes, reason = "reaped by the tracer thread")]
        let _child = command.spawn().unwrap();
        pending.started().run().unwrap()
    }

    #[test]
    fn sees_reads_misses_lists_writes_and_programs_of_every_process() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().canonicalize().unwrap();
        std::fs::write(dir.join("input"), "x").unwrap();
        std::fs::create_dir(dir.join("listed")).unwrap();
        let (status, observed) = traced(
            &dir,
            "cat input > written; test -e missing || true; ls listed >/dev/null; \
             (cd listed && cat ../input > ../from-a-child); exit 3",
        );
        assert_eq!(status.code(), Some(3));
        assert!(observed.looked.contains(&dir.join("input")), "{observed:?}");
        assert!(observed.looked.contains(&dir.join("missing")), "{observed:?}");
        assert!(observed.listed.contains(&dir.join("listed")), "{observed:?}");
        assert!(observed.written.contains(&dir.join("written")), "{observed:?}");
        // A relative path in a child that changed directory resolves against its own cwd.
        assert!(observed.written.contains(&dir.join("listed/../from-a-child")), "{observed:?}");
        let ran: Vec<_> = observed.ran.iter().filter_map(|path| path.file_name()).collect();
        assert!(ran.iter().any(|name| *name == "cat"), "{observed:?}");
        assert!(observed.started_programs);
        assert_eq!(observed.unrecordable, None);
    }

    #[test]
    fn lets_go_of_a_process_that_outlives_the_script() {
        let dir = tempfile::tempdir().unwrap();
        let (status, observed) = traced(dir.path(), "sleep 30 & exit 0");
        assert!(status.success());
        let why = observed.unrecordable.expect("a process outlived the script");
        assert!(why.contains("was still running when it ended"), "{why}");
        // Let go of, not killed: it runs on, untraced (its traced calls fail with ENOSYS).
        let pid: i32 =
            why.split("(pid ").nth(1).unwrap().split(')').next().unwrap().parse().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains("TracerPid:\t0"), "{status}");
        // SAFETY: a signal to a process this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }

    /// Tracing needs no privilege: run as root (as in CI), the first test runs again as
    /// `nobody` from a copy of this binary that user can run.
    #[test]
    fn a_user_without_privileges_traces() {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // not root: every other test here already shows it
        }
        use std::os::unix::fs::PermissionsExt as _;
        use std::os::unix::process::CommandExt as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let binary = dir.path().join("tests");
        std::fs::copy(std::env::current_exe().unwrap(), &binary).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let output = Command::new(&binary)
            .args([
                "--exact",
                "wrapper::trace::ptrace::tests::sees_reads_misses_lists_writes_and_programs_of_every_process",
                "--test-threads=1",
            ])
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

    #[test]
    fn io_uring_is_refused_with_enosys() {
        let filtered = {
            let mut command = Command::new(std::env::current_exe().unwrap());
            command.args([
                "--exact",
                "wrapper::trace::ptrace::tests::probe_io_uring",
                "--nocapture",
            ]);
            command.env("MEMOSHELVE_PROBE_IO_URING", "1");
            let pending = prepare(&mut command).unwrap();
            command.stdout(std::process::Stdio::piped());
            #[expect(clippy::zombie_processes, reason = "reaped by the tracer thread")]
            let mut child = command.spawn().unwrap();
            let mut out = child.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                let mut text = String::new();
                io::Read::read_to_string(&mut out, &mut text).unwrap();
                text
            });
            let (status, _) = pending.started().run().unwrap();
            assert!(status.success());
            reader.join().unwrap()
        };
        assert!(filtered.contains("io_uring_setup result -1 errno 38"), "{filtered}");
    }

    /// Run by the test above, traced: prints what `io_uring_setup` returned.
    #[test]
    #[expect(clippy::print_stdout, reason = "the test above reads it")]
    fn probe_io_uring() {
        if std::env::var_os("MEMOSHELVE_PROBE_IO_URING").is_none() {
            return;
        }
        let mut params = [0u8; 120];
        // SAFETY: io_uring_setup with a zeroed params struct of its size.
        let result = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) };
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        println!("io_uring_setup result {result} errno {errno}");
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// `MEMOSHELVE_TIME_TRACE='<shell command>'`: the command's wall time untraced and traced,
    /// and how many paths the tracer saw (a measurement, not a test).
    #[test]
    #[ignore = "a measurement: run with --ignored and MEMOSHELVE_TIME_TRACE"]
    #[expect(clippy::print_stdout, reason = "the measurement's report")]
    fn time_a_command() {
        let Ok(script) = std::env::var("MEMOSHELVE_TIME_TRACE") else { return };
        let run = |traced: bool| {
            let mut command = Command::new("sh");
            command.arg("-c").arg(&script);
            let started = std::time::Instant::now();
            if traced {
                let pending = prepare(&mut command).unwrap();
                #[expect(clippy::zombie_processes, reason = "reaped by the tracer thread")]
                let _child = command.spawn().unwrap();
                let (_, observed) = pending.started().run().unwrap();
                (started.elapsed(), observed.looked.len() + observed.written.len())
            } else {
                command.status().unwrap();
                (started.elapsed(), 0)
            }
        };
        for round in 0..3 {
            let (plain, _) = run(false);
            let (traced, paths) = run(true);
            println!(
                "round {round}: untraced {plain:?}, traced {traced:?} ({:.2}x), {paths} paths",
                traced.as_secs_f64() / plain.as_secs_f64()
            );
        }
    }
}
