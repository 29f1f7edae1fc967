//! The watcher of choice (Linux 5.8 and later): seccomp user notification. The filter
//! (`calls`) sends each traced call of the script and every process it starts to a listener
//! descriptor; the runner's watcher threads read its arguments and let it go on unchanged
//! (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). Measured on this project's 2-core VM: about 10 µs a
//! call (9 µs with synchronous wake-ups, Linux 6.6), where a `ptrace` stop costs about 50 µs
//! (strace's, 100 µs); heavy-native's traced cold build went from 1.97x to 1.59x its untraced
//! one (BENCHMARKS.md, issue 29), and with the shim's fast path to 1.21x.
//!
//! Between fork and exec the script's process installs the filter, which gives it the
//! listener, and sends the listener to the runner over a socket (`SCM_RIGHTS`) before it
//! execs: its exec is the first call sent. Processes are not followed one by one: a call says
//! which thread made it, an `execve` is the program that runs (its image is read from
//! `/proc/<pid>/exe` at that process's next call), and the end of every process that holds the
//! filter is the listener's hang-up (`POLLHUP`). A process still holding it
//! [`LEFTOVER_GRACE`] after the script ended outlived it: the watcher lets go (its traced calls
//! then fail with `ENOSYS`) and the run is not recorded.
//!
//! A listener cannot be installed under another's (`EBUSY`: a build inside a watched script):
//! the spawn fails, and the runner runs untraced.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::unistd::Pid;

use super::Observed;
use super::calls::{self, Calls, filter};

/// How long processes the script started may take to end after it ended before they are taken
/// for ones that outlive it (an orphan's end is seen when something reaps it).
const LEFTOVER_GRACE: Duration = Duration::from_millis(300);

/// How many threads answer the listener (a script's compiles run in parallel).
const WATCHERS: usize = 2;

/// Whether this kernel has what the watcher needs: the listener's hang-up (5.8), and with it
/// `SECCOMP_USER_NOTIF_FLAG_CONTINUE` (5.5).
pub(super) fn supported() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut numbers = release.trim().split(['.', '-']).map(|part| part.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (5, 8),
        _ => false,
    }
}

/// A watcher waiting for its script's listener.
pub(super) struct Pending {
    /// The socket end the script's process sends the listener on (closed here once it is
    /// started, so a process that never got that far is seen to end).
    child_end: OwnedFd,
    watch: Watch,
}

/// The state the watcher threads share.
struct Shared {
    observed: Mutex<Observed>,
    /// Processes that made an `execve`: their image is read at their next call.
    exec_pending: Mutex<HashSet<i32>>,
    /// Set when the script has ended and the grace is over: the threads stop.
    stop: AtomicBool,
    /// The script's pid (its `execve`s are its own, others are programs it started).
    root: Mutex<Option<i32>>,
}

/// The running watcher.
pub(super) struct Watch {
    shared: Arc<Shared>,
    /// Ends when every process holding the filter has ended (or it was told to stop).
    thread: JoinHandle<io::Result<()>>,
    /// Says so.
    done: std::sync::mpsc::Receiver<()>,
    /// Tells the threads blocked in `poll` to look at `stop`.
    wake: OwnedFd,
}

/// Makes `command`'s process, between fork and exec, install the filter and send its listener
/// here; a thread waits for it and answers the calls.
pub(super) fn prepare(command: &mut Command) -> io::Result<Pending> {
    let (runner_end, child_end) = socket_pair()?;
    let program = filter(libc::SECCOMP_RET_USER_NOTIF);
    let send_on = child_end.as_raw_fd();
    // SAFETY: between fork and exec: `prctl`, `seccomp`, `sendmsg` and `close` on memory and
    // descriptors the closure owns (the filter and the message are built without allocating).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            let prog =
                libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr().cast_mut() };
            let listener = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &raw const prog,
            );
            if listener < 0 {
                return Err(io::Error::last_os_error());
            }
            let listener = listener as RawFd;
            let sent = send_fd(send_on, listener);
            libc::close(listener);
            if sent { Ok(()) } else { Err(io::Error::last_os_error()) }
        });
    }
    let (wake_read, wake) = super::ptrace::pipe()?;
    let shared = Arc::new(Shared {
        observed: Mutex::new(Observed { env: Ok(Default::default()), ..Observed::default() }),
        exec_pending: Mutex::new(HashSet::new()),
        stop: AtomicBool::new(false),
        root: Mutex::new(None),
    });
    let (done_tx, done) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new().name("memoshelve-trace".to_owned()).spawn({
        let shared = shared.clone();
        move || {
            // Whatever happens, the waiting side hears of the end.
            let _done = Done(done_tx);
            let listener = Arc::new(receive_fd(&runner_end)?);
            sync_wake_up(&listener);
            let wake_read = Arc::new(wake_read);
            let calls = Arc::new(calls::calls());
            let helpers: Vec<_> = (1..WATCHERS)
                .map(|_| {
                    let (listener, wake_read, calls, shared) =
                        (listener.clone(), wake_read.clone(), calls.clone(), shared.clone());
                    std::thread::Builder::new()
                        .name("memoshelve-trace".to_owned())
                        .spawn(move || answer(&listener, &wake_read, &calls, &shared))
                })
                .collect::<io::Result<_>>()?;
            answer(&listener, &wake_read, &calls, &shared);
            for helper in helpers {
                let _ = helper.join();
            }
            Ok(())
        }
    })?;
    Ok(Pending { child_end, watch: Watch { shared, thread, done, wake } })
}

/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS` (`_IOW('!', 4, __u64)`), Linux 6.6 and later.
const SECCOMP_IOCTL_NOTIF_SET_FLAGS: libc::c_ulong = 0x4008_2104;
/// Its one flag: a stopped call wakes the watcher on the caller's CPU, at once.
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;

/// Asks the kernel to hand each stopped call to the watcher synchronously (the caller's CPU
/// switches to the watcher thread, as a hand-off, instead of waking it elsewhere): halves a
/// stop's cost on this project's VM (18 µs to 9 µs, 100,000 `stat`s of a static program,
/// machine idle; BENCHMARKS.md). Before 6.6 the kernel refuses the flag: stops are then
/// answered the usual way.
fn sync_wake_up(listener: &OwnedFd) {
    // SAFETY: the listener, and the flags as the ioctl takes them (by value).
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            SECCOMP_IOCTL_NOTIF_SET_FLAGS as _,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        )
    };
}

/// Sends on drop: the watcher thread has ended.
struct Done(std::sync::mpsc::Sender<()>);

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl Pending {
    /// The script's process is started (`pid`): the watcher has it.
    pub(super) fn started(self, pid: u32) -> Watch {
        drop(self.child_end);
        *self.watch.shared.root.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(pid.cast_signed());
        self.watch
    }

    /// The script's process did not start: the watcher ends.
    pub(super) fn abandon(self) {
        drop(self.child_end);
        self.watch.shared.stop.store(true, Ordering::SeqCst);
        let _ = nix::unistd::write(&self.watch.wake, b"x");
        let _ = self.watch.thread.join();
    }
}

impl Watch {
    /// After the script has ended (its process reaped): waits for the processes it started to
    /// end (lets go of those still running after [`LEFTOVER_GRACE`]) and gives what was seen.
    pub(super) fn finish(self) -> io::Result<Observed> {
        if self.done.recv_timeout(LEFTOVER_GRACE).is_err() {
            self.shared.stop.store(true, Ordering::SeqCst);
            let _ = nix::unistd::write(&self.wake, b"x");
            let mut observed = self.shared.observed.lock().unwrap_or_else(PoisonError::into_inner);
            observed.unrecordable.get_or_insert_with(|| {
                "a process it started was still running when it ended".to_owned()
            });
        }
        self.thread.join().map_err(|_| io::Error::other("the watcher panicked"))??;
        let shared = Arc::try_unwrap(self.shared)
            .map_err(|_| io::Error::other("the watcher's threads are still running"))?;
        Ok(shared.observed.into_inner().unwrap_or_else(PoisonError::into_inner))
    }
}

/// One watcher thread: answers calls until every process holding the filter has ended
/// (`POLLHUP`) or it is told to stop.
fn answer(listener: &OwnedFd, wake: &OwnedFd, calls: &Calls, shared: &Shared) {
    let mut fds = [
        libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: wake.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        // SAFETY: two valid `pollfd`s.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            return; // told to stop (the byte stays: every thread sees it)
        }
        if fds[0].revents & libc::POLLIN == 0 {
            return; // hung up: no process holds the filter any more
        }
        // SAFETY: zeroed is a valid `seccomp_notif`, which the kernel fills.
        let mut request: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: the listener and a request of the size the ioctl takes.
        if unsafe {
            libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut request)
        } != 0
        {
            continue; // another thread took it, or its process died
        }
        let pid = request.pid.cast_signed();
        let data = request.data;
        seen(pid, data.nr, data.arch, data.args, calls, shared);
        // SAFETY: zeroed is a valid `seccomp_notif_resp`.
        let mut response: libc::seccomp_notif_resp = unsafe { std::mem::zeroed() };
        response.id = request.id;
        response.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32;
        // SAFETY: the listener and a response of the size the ioctl takes. An error means the
        // process is gone (or was interrupted and will call again): nothing to do.
        unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut response) };
    }
}

/// One call: read before it goes on (its pointers are the process's, still waiting).
fn seen(pid: i32, number: i32, arch: u32, args: [u64; 6], calls: &Calls, shared: &Shared) {
    let mut observed = Observed::default();
    // A process whose exec went through: its image, read at its first call after.
    let image = {
        let mut pending = shared.exec_pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.remove(&pid).then(|| std::fs::read_link(format!("/proc/{pid}/exe")).ok()).flatten()
    };
    calls::call(
        Pid::from_raw(pid),
        arch,
        u64::from(number.cast_unsigned()),
        args,
        calls,
        &mut observed,
    );
    let exec = i64::from(number) == libc::SYS_execve || i64::from(number) == libc::SYS_execveat;
    if exec {
        shared.exec_pending.lock().unwrap_or_else(PoisonError::into_inner).insert(pid);
    }
    let root = *shared.root.lock().unwrap_or_else(PoisonError::into_inner);
    let mut all = shared.observed.lock().unwrap_or_else(PoisonError::into_inner);
    all.stops += 1;
    // One insert each (`BTreeSet::append` rebuilds the whole set: quadratic over a run).
    all.looked.extend(observed.looked);
    all.listed.extend(observed.listed);
    all.written.extend(observed.written);
    all.ran.extend(image);
    // The script's own first exec is of itself; any other process's is a program it started.
    if exec && root.is_some_and(|root| root != pid) {
        all.started_programs = true;
    }
    if let Some(why) = observed.unrecordable {
        all.unrecordable.get_or_insert(why);
    }
}

fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `socketpair` fills the two descriptors it was given room for.
    let made = unsafe {
        libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    };
    if made != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The control message room for one descriptor (`CMSG_SPACE(sizeof(int))`), aligned.
#[repr(C, align(8))]
struct FdMessage([u8; 24]);

/// Sends descriptor `fd` over socket `socket` (async-signal-safe: no allocation).
unsafe fn send_fd(socket: RawFd, fd: RawFd) -> bool {
    let mut byte = [b'f'];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = FdMessage([0; 24]);
    // SAFETY: a message over the stack buffers above, sized by the CMSG macros.
    unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &raw mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.0.as_mut_ptr().cast();
        message.msg_controllen = libc::CMSG_SPACE(size_of::<RawFd>() as u32) as usize;
        let header = libc::CMSG_FIRSTHDR(&raw const message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        libc::CMSG_DATA(header).cast::<RawFd>().write_unaligned(fd);
        libc::sendmsg(socket, &raw const message, 0) == 1
    }
}

/// The descriptor the script's process sends (an error when it ended before it did).
fn receive_fd(socket: &OwnedFd) -> io::Result<OwnedFd> {
    let mut byte = [0u8];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = FdMessage([0; 24]);
    // SAFETY: a message over the stack buffers above; the descriptor read is checked.
    unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &raw mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.0.as_mut_ptr().cast();
        message.msg_controllen = control.0.len();
        let received = libc::recvmsg(socket.as_raw_fd(), &raw mut message, libc::MSG_CMSG_CLOEXEC);
        if received != 1 {
            return Err(io::Error::other("the script did not start"));
        }
        let header = libc::CMSG_FIRSTHDR(&raw const message);
        if header.is_null() || (*header).cmsg_type != libc::SCM_RIGHTS {
            return Err(io::Error::other("the script sent no listener"));
        }
        Ok(OwnedFd::from_raw_fd(libc::CMSG_DATA(header).cast::<RawFd>().read_unaligned()))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::ExitStatus;

    use super::*;

    /// Runs `sh -c script` watched, in `dir`.
    fn watched(dir: &Path, script: &str) -> (ExitStatus, Observed) {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script).current_dir(dir);
        let pending = prepare(&mut command).unwrap();
        let mut child = command.spawn().unwrap();
        let watch = pending.started(child.id());
        let status = child.wait().unwrap();
        (status, watch.finish().unwrap())
    }

    #[test]
    fn sees_reads_misses_lists_writes_and_programs_of_every_process() {
        assert!(supported(), "this machine's kernel is 5.8 or later");
        super::super::sees_every_process(watched);
    }

    /// No privilege needed: the test above, as `nobody`.
    #[test]
    fn a_user_without_privileges_watches() {
        super::super::passes_as_nobody(
            "wrapper::trace::notify::tests::sees_reads_misses_lists_writes_and_programs_of_every_process",
        );
    }

    #[test]
    fn a_process_that_outlives_the_script_makes_it_unrecordable() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let (status, observed) =
            watched(dir.path(), "sleep 30 </dev/null >/dev/null 2>&1 & echo $! > pid; exit 0");
        assert!(status.success());
        let why = observed.unrecordable.expect("a process outlived the script");
        assert!(why.contains("still running"), "{why}");
        let pid: i32 = std::fs::read_to_string(pid_file).unwrap().trim().parse().unwrap();
        // SAFETY: a signal to a process this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }

    #[test]
    fn a_process_that_ends_with_the_script_is_no_leftover() {
        let dir = tempfile::tempdir().unwrap();
        // A background child the script waits for, and one orphaned that ends at once.
        let (status, observed) = watched(dir.path(), "(sleep 0.1 &) ; sleep 0.2 & wait; exit 0");
        assert!(status.success());
        assert_eq!(observed.unrecordable, None);
    }

    #[test]
    fn a_listener_under_another_is_refused_and_the_spawn_fails() {
        // The script's process under a watched one: a build inside a watched build script.
        let exe = std::env::current_exe().unwrap();
        let mut outer = Command::new(&exe);
        outer
            .args([
                "--exact",
                "wrapper::trace::notify::tests::nested_probe",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MEMOSHELVE_NESTED_PROBE", "1")
            .stdout(std::process::Stdio::piped());
        let pending = prepare(&mut outer).unwrap();
        let child = outer.spawn().unwrap();
        let watch = pending.started(child.id());
        let output = child.wait_with_output().unwrap();
        let _ = watch.finish().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("nested spawn: refused"), "{text}");
    }

    /// Run by the test above, watched: tries to watch a process of its own.
    #[test]
    #[expect(clippy::print_stdout, reason = "the test above reads it")]
    fn nested_probe() {
        if std::env::var_os("MEMOSHELVE_NESTED_PROBE").is_none() {
            return;
        }
        let mut command = Command::new("true");
        let pending = prepare(&mut command).unwrap();
        match command.spawn() {
            Ok(mut child) => {
                let _ = child.wait();
                println!("nested spawn: allowed");
            }
            Err(err) => {
                pending.abandon();
                println!("nested spawn: refused ({err})");
            }
        }
    }
}
