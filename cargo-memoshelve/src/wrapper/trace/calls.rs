//! The system calls a watched run stops on, and what each does to which paths: one table and
//! one reading of their arguments for every watcher (`notify`, `ptrace`).
//!
//! The filter is hand-written (a table of 60-odd system call numbers): `seccompiler` kills a
//! process that makes a call of another ABI, where this filter must send it to the watcher.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt as _;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

use super::Observed;

/// What a traced call does with its paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Act {
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
pub(super) enum Flags {
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
#[cfg(target_arch = "x86_64")]
const BPF_AND_K: u16 = 0x54;

fn statement(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter: another ABI's calls and this one's traced calls go to the watcher (`action`:
/// `SECCOMP_RET_USER_NOTIF` or `SECCOMP_RET_TRACE`); `io_uring_setup` fails with `ENOSYS`
/// (its operations would pass the filter unseen); the rest runs. On x86_64 so do the calls
/// made from the preloaded shim's page (`memoshelve-env-shim/shim/files.rs`), which logged
/// their paths before it made them.
pub(super) fn filter(action: u32) -> Vec<libc::sock_filter> {
    let trace = statement(BPF_RET_K, action);
    let mut program = vec![
        statement(BPF_LD_W_ABS, 4), // seccomp_data.arch
        jump(BPF_JEQ_K, ARCH, 1, 0),
        trace,
    ];
    #[cfg(target_arch = "x86_64")]
    {
        let page = memoshelve_env_shim::page::FAST_PAGE;
        program.extend([
            statement(BPF_LD_W_ABS, 12), // seccomp_data.instruction_pointer, high half
            jump(BPF_JEQ_K, (page >> 32) as u32, 0, 4),
            statement(BPF_LD_W_ABS, 8), // low half
            statement(BPF_AND_K, 0xFFFF_F000),
            jump(BPF_JEQ_K, page as u32, 0, 1),
            statement(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
        ]);
    }
    program.push(statement(BPF_LD_W_ABS, 0)); // seccomp_data.nr
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

/// The traced calls by number.
pub(super) type Calls = HashMap<u64, Act>;

/// The table as a map, for the watchers.
pub(super) fn calls() -> Calls {
    table().into_iter().map(|(number, act)| (number as u64, act)).collect()
}

/// One call the filter sent to the watcher, made by process (thread) `pid` of ABI `arch`:
/// what it does to which paths, into `observed`.
pub(super) fn call(
    pid: Pid,
    arch: u32,
    number: u64,
    args: [u64; 6],
    calls: &Calls,
    observed: &mut Observed,
) {
    let Some(&act) = (arch == ARCH).then(|| calls.get(&number)).flatten() else {
        observed.unrecordable.get_or_insert_with(|| {
            format!(
                "a process made a system call the tracer cannot read (arch {arch:#x}, number {number})"
            )
        });
        return;
    };
    // A path the tracer could not read would be an input it never checks: the run is not
    // recorded then (a path the call itself cannot use, such as a bad pointer, is none).
    let unreadable = std::cell::RefCell::new(None);
    let path = |dirfd: Option<usize>, index: usize| -> Option<PathBuf> {
        let read = read_path(pid, args[index])
            .map_err(|err| format!("cannot read a path process {pid} used: {err}"))
            .and_then(|path| match path {
                Some(path) => resolve(pid, dirfd.map(|at| args[at] as i32), path),
                None => Ok(None),
            });
        read.unwrap_or_else(|why| {
            unreadable.borrow_mut().get_or_insert(why);
            None
        })
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
                Flags::OpenHow => read_u64(pid, args[2]).unwrap_or_else(|| {
                    unreadable.borrow_mut().get_or_insert_with(|| {
                        format!("cannot read the flags of an openat2 of process {pid}")
                    });
                    0
                }) as i32,
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
        Act::List => match std::fs::read_link(format!("/proc/{pid}/fd/{}", args[0] as i32)) {
            Ok(dir) => {
                observed.listed.insert(dir);
            }
            // Not an open descriptor: the call fails.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                unreadable.borrow_mut().get_or_insert_with(|| {
                    format!("cannot read the directory process {pid} lists: {err}")
                });
            }
        },
    }
    if let Some(why) = unreadable.into_inner() {
        observed.unrecordable.get_or_insert(why);
    }
}

/// `path` made absolute as the kernel resolves it for process `pid`: against the directory
/// descriptor `dirfd` (`AT_FDCWD`, or `None`: the working directory). `None`: no path to look
/// at (an empty one is the descriptor itself, `fstatat(fd, "", AT_EMPTY_PATH)`, whose open was
/// recorded; a descriptor that is not open makes the call fail).
fn resolve(pid: Pid, dirfd: Option<i32>, path: PathBuf) -> Result<Option<PathBuf>, String> {
    if path.is_absolute() {
        return Ok(Some(path));
    }
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let base = match dirfd {
        Some(fd) if fd != libc::AT_FDCWD => {
            match std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) {
                Ok(base) => base,
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(err) => {
                    return Err(format!("cannot read descriptor {fd} of process {pid}: {err}"));
                }
            }
        }
        _ => std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map_err(|err| format!("cannot read the working directory of process {pid}: {err}"))?,
    };
    Ok(Some(base.join(path)))
}

/// The NUL-terminated string at `address` in process `pid`; `None` where the call itself could
/// not read one (a null or unmapped pointer, longer than the kernel takes).
fn read_path(pid: Pid, address: u64) -> Result<Option<PathBuf>, Errno> {
    const PAGE: u64 = 4096;
    if address == 0 {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    let mut at = address;
    let mut chunk = [0u8; PAGE as usize];
    while bytes.len() <= libc::PATH_MAX as usize {
        // Never across a page: the next one may not be mapped.
        let len = (PAGE - at % PAGE) as usize;
        let remote = [RemoteIoVec { base: at as usize, len }];
        let read =
            match process_vm_readv(pid, &mut [io::IoSliceMut::new(&mut chunk[..len])], &remote) {
                Ok(0) | Err(Errno::EFAULT) => return Ok(None),
                Ok(read) => read,
                Err(err) => return Err(err),
            };
        if let Some(end) = chunk[..read].iter().position(|byte| *byte == 0) {
            bytes.extend_from_slice(&chunk[..end]);
            return Ok(Some(PathBuf::from(OsString::from_vec(bytes))));
        }
        bytes.extend_from_slice(&chunk[..read]);
        at += read as u64;
    }
    Ok(None)
}

/// The 8 bytes at `address` in process `pid`.
fn read_u64(pid: Pid, address: u64) -> Option<u64> {
    let mut value = [0u8; 8];
    let remote = [RemoteIoVec { base: address as usize, len: 8 }];
    let read = process_vm_readv(pid, &mut [io::IoSliceMut::new(&mut value)], &remote).ok()?;
    (read == 8).then(|| u64::from_ne_bytes(value))
}
