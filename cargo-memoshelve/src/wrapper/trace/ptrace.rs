//! The `ptrace` watcher, for kernels before 5.8 (see `notify` for the one used where it can
//! be): the filter (`calls`) sends the traced calls of the script and every process it starts
//! to this runner as `ptrace` stops (research/traced-inputs-prior-art.md: strace's seccomp
//! mode, Riker, BuildXL). Between fork and exec the script's process hands its pid to a tracer
//! thread, which attaches (`PTRACE_SEIZE`), then installs the filter; the tracer follows forks,
//! vforks, clones and execs, reads each stopped call's arguments (`PTRACE_GET_SYSCALL_INFO`)
//! and lets it go on: only entries stop, and what is at each path is looked at after the run.
//! Measured here: about 50 µs a stop (strace: 100 µs), against 10 µs for a user notification.

use std::collections::HashSet;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
#[cfg(test)]
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::Observed;
use super::calls::{self, Calls, filter};

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
    let program = filter(libc::SECCOMP_RET_TRACE);
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
    let calls = calls::calls();
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

pub(super) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
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
fn follow(root: Pid, calls: &Calls) -> io::Result<(ExitStatus, Observed)> {
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
                } else if status.is_some() && !live.contains(&pid) {
                    // A process whose first stop comes after the script ended: it outlives
                    // it (no later event would let go of it).
                    observed.unrecordable.get_or_insert_with(|| {
                        format!("a process (pid {pid}), which it started, was still running when it ended")
                    });
                    let _ = ptrace::detach(pid, None);
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
                        stopped(pid, calls, &mut observed);
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
                resume(pid, None, &mut letting_go, &mut live);
            }
            WaitStatus::Stopped(pid, signal) => {
                // A signal on its way to the process: delivered.
                resume(pid, Some(signal), &mut letting_go, &mut live);
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

/// Lets a stopped process go on with `signal`, or go altogether when it is being let go of
/// (it may stop on an event already queued before its interrupt does, which is then lost).
fn resume(
    pid: Pid,
    signal: Option<Signal>,
    letting_go: &mut HashSet<Pid>,
    live: &mut HashSet<Pid>,
) {
    if letting_go.remove(&pid) {
        let _ = ptrace::detach(pid, signal);
        live.remove(&pid);
    } else {
        let _ = ptrace::cont(pid, signal);
    }
}

/// One stopped call: its arguments, read through `ptrace`.
fn stopped(pid: Pid, calls: &Calls, observed: &mut Observed) {
    match ptrace::syscall_info(pid) {
        Ok(info) if info.op == libc::PTRACE_SYSCALL_INFO_SECCOMP => {
            // SAFETY: a seccomp stop fills the union's `seccomp` member.
            let call = unsafe { info.u.seccomp };
            calls::call(pid, info.arch, call.nr, call.args, calls, observed);
        }
        _ => {
            observed.unrecordable.get_or_insert_with(|| {
                format!("the tracer could not read a system call of process {pid}")
            });
        }
    }
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
        super::super::sees_every_process(traced);
    }

    #[test]
    fn lets_go_of_a_process_that_outlives_the_script() {
        let dir = tempfile::tempdir().unwrap();
        let (status, observed) = traced(dir.path(), "sleep 30 </dev/null >/dev/null 2>&1 & exit 0");
        assert!(status.success());
        let why = observed.unrecordable.expect("a process outlived the script");
        assert!(why.contains("was still running when it ended"), "{why}");
        let pid: i32 =
            why.split("(pid ").nth(1).unwrap().split(')').next().unwrap().parse().unwrap();
        // Let go of, not killed. (Its traced calls now fail with ENOSYS, so it may end on its
        // own, here when its shell cannot open /dev/null: then there is nothing to look at.)
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            assert!(status.contains("TracerPid:\t0"), "{status}");
        }
        // SAFETY: a signal to a process this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }

    /// Tracing needs no privilege: the first test, as `nobody`.
    #[test]
    fn a_user_without_privileges_traces() {
        super::super::passes_as_nobody(
            "wrapper::trace::ptrace::tests::sees_reads_misses_lists_writes_and_programs_of_every_process",
        );
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
