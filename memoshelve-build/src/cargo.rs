//! Talks to cargo: detects a build script, prints `cargo:` directives; the only module that prints.
//!
//! Directives use the single-colon `cargo:` form on purpose: the `cargo::` form is an error in
//! packages whose `rust-version` is older than 1.77, and this crate must not break such a build.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// Whether this process is a build script run by cargo. `OUT_DIR` and `CARGO_MANIFEST_DIR` are
/// also set for the compiles of a package that has a build script (what a `RUSTC_WRAPPER` sees)
/// and for its tests; `HOST` is set for build scripts only.
pub(crate) fn in_build_script() -> bool {
    ["OUT_DIR", "CARGO_MANIFEST_DIR", "HOST"].iter().all(|name| std::env::var_os(name).is_some())
}

/// Prints one `cargo:` directive line. Inside a build script only.
#[expect(clippy::print_stdout, reason = "stdout is cargo's control channel in a build script")]
pub(crate) fn emit(line: &str) {
    // A directive is one line: a newline inside would start an unrelated directive.
    let line = line.replace(['\n', '\r'], " ");
    println!("cargo:{line}");
}

/// Reports an event the user asked to see (see `Memo::log`).
pub(crate) fn report(message: &str) {
    if in_build_script() {
        emit(&format!("warning=memoshelve: {message}"));
    } else {
        log::info!("memoshelve: {message}");
    }
}

/// Warns once per process and `topic`: a broken cache gives one line, not one per call.
pub(crate) fn warn_once(topic: &str, message: &str) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let first = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(topic.to_owned());
    if !first {
        return;
    }
    if in_build_script() {
        emit(&format!("warning=memoshelve: {message}"));
    } else {
        log::warn!("memoshelve: {message}");
    }
}

/// Tells cargo to rerun the build script when this file or directory changes.
pub(crate) fn rerun_if_changed(path: &std::path::Path) {
    emit(&format!("rerun-if-changed={}", path.display()));
}

/// Tells cargo to rerun the build script when this variable changes.
pub(crate) fn rerun_if_env_changed(name: &str) {
    emit(&format!("rerun-if-env-changed={name}"));
}

/// Prints one line exactly as given (a recorded directive being replayed). Inside a build
/// script only.
#[expect(clippy::print_stdout, reason = "stdout is cargo's control channel in a build script")]
pub(crate) fn print_line(line: &str) {
    println!("{line}");
}

/// Runs `work` with this process's standard output (descriptor 1, so child processes' output
/// too) going into a pipe, and returns what was written there. A thread forwards the pipe to
/// the real stdout as it comes, so cargo sees every line once, in order, even when `work` panics
/// or calls `std::process::exit`. Nothing goes through a file, so `TMPDIR` plays no part.
///
/// Descriptor 1 belongs to the whole process: what other threads print meanwhile is forwarded
/// and recorded too, and two threads must not capture at once (file steps take turns, see
/// `outputs::StepTurn`; a capture nested on one thread is fine). Where a descriptor call fails
/// (or not on Unix) the result is `None` and `work` simply runs.
pub(crate) fn capture_stdout<R>(work: impl FnOnce() -> R) -> (R, Option<Vec<u8>>) {
    #[cfg(unix)]
    if let Some(capture) = unix::Capture::start() {
        let value = work();
        return (value, Some(capture.finish()));
    }
    (work(), None)
}

/// Whether threads other than this one and memoshelve's own (named `memoshelve-…`: a capture's
/// forwarder, which may outlive its capture while a child holds the pipe) are running in the
/// process: then what a capture records may be theirs. Known on Linux (`/proc/self/task`, each
/// thread's `comm`); elsewhere `false`.
pub(crate) fn other_threads_running() -> bool {
    #[cfg(target_os = "linux")]
    {
        let me = std::fs::read_link("/proc/thread-self").ok();
        let me = me.as_deref().and_then(std::path::Path::file_name);
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return false };
        tasks.flatten().any(|task| {
            Some(task.file_name().as_os_str()) != me
                && std::fs::read(task.path().join("comm"))
                    .is_ok_and(|name| !name.starts_with(b"memoshelve-"))
        })
    }
    #[cfg(not(target_os = "linux"))]
    false
}

#[cfg(unix)]
mod unix {
    //! The descriptor juggling behind [`super::capture_stdout`].

    use std::fs::File;
    use std::io::{PipeReader, PipeWriter, Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::sync::{Arc, Condvar, Mutex, Once};

    const STDOUT: i32 = 1;

    // std links the C library on every Unix; these calls are all that is needed.
    unsafe extern "C" {
        fn dup(fd: i32) -> i32;
        fn dup2(old: i32, new: i32) -> i32;
        fn close(fd: i32) -> i32;
        fn atexit(callback: extern "C" fn()) -> i32;
    }

    /// Captures in progress, innermost last: `std::process::exit` inside a step ends them all
    /// (see [`finish_at_exit`]) so that what the step printed still reaches cargo.
    static ACTIVE: Mutex<Vec<Redirect>> = Mutex::new(Vec::new());

    /// What the forwarding thread hands back when it reaches the end mark.
    type Handoff = Arc<(Mutex<Option<Vec<u8>>>, Condvar)>;

    /// One redirection of descriptor 1 into a pipe.
    struct Redirect {
        /// The descriptor 1 of before, to put back.
        saved: i32,
        /// This side's write end, for the end mark.
        writer: PipeWriter,
        /// Written last into the pipe: everything before it was printed during the capture.
        mark: Vec<u8>,
        handoff: Handoff,
    }

    /// A capture in progress; [`Capture::finish`] (or dropping it, when the work panics) ends it.
    pub(super) struct Capture {
        depth: usize,
    }

    impl Capture {
        pub(super) fn start() -> Option<Capture> {
            static AT_EXIT: Once = Once::new();
            AT_EXIT.call_once(|| {
                // SAFETY: registers a plain `extern "C"` function with no captured state.
                unsafe { atexit(finish_at_exit) };
            });
            let (reader, writer) = std::io::pipe().ok()?;
            let _ = std::io::stdout().flush();
            // SAFETY: plain descriptor calls on descriptors this process owns; failures are checked.
            let saved = unsafe { dup(STDOUT) };
            if saved < 0 {
                return None;
            }
            // The forwarder's own copy of the real stdout, closed when it ends.
            // SAFETY: as above.
            let out = unsafe { dup(saved) };
            if out < 0 {
                // SAFETY: `saved` came from `dup` above and is closed once.
                unsafe { close(saved) };
                return None;
            }
            // SAFETY: `out` is a fresh descriptor that nothing else owns.
            let out = unsafe { File::from_raw_fd(out) };
            let mark = end_mark();
            let handoff: Handoff = Arc::default();
            let forwarder = {
                let (mark, handoff) = (mark.clone(), handoff.clone());
                std::thread::Builder::new()
                    .name("memoshelve-stdout".to_owned())
                    .spawn(move || forward_until_mark(reader, out, &mark, &handoff))
            };
            // SAFETY: `writer` stays open for as long as the redirection lasts.
            if forwarder.is_err() || unsafe { dup2(writer.as_raw_fd(), STDOUT) } < 0 {
                // SAFETY: `saved` came from `dup` above and is closed once.
                unsafe { close(saved) };
                return None; // dropping `writer` ends a started forwarder
            }
            let mut active = ACTIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            active.push(Redirect { saved, writer, mark, handoff });
            Some(Capture { depth: active.len() })
        }

        /// Puts stdout back and returns what was printed meanwhile (already forwarded).
        pub(super) fn finish(self) -> Vec<u8> {
            let text = self.end();
            std::mem::forget(self);
            text
        }

        fn end(&self) -> Vec<u8> {
            let mut active = ACTIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // Ended already (the process is exiting), or by an inner capture's unwinding.
            if active.len() < self.depth {
                return Vec::new();
            }
            let mut text = Vec::new();
            while active.len() >= self.depth {
                text = active.pop().expect("checked above").end();
            }
            text
        }
    }

    impl Drop for Capture {
        fn drop(&mut self) {
            self.end();
        }
    }

    impl Redirect {
        fn end(mut self) -> Vec<u8> {
            let _ = std::io::stdout().flush();
            let marked = self.writer.write_all(&self.mark);
            // SAFETY: `saved` is the descriptor 1 of before, duplicated in `start`; closed once.
            unsafe {
                dup2(self.saved, STDOUT);
                close(self.saved);
            }
            drop(self.writer);
            if marked.is_err() {
                return Vec::new();
            }
            let (text, done) = &*self.handoff;
            let mut text = text.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            loop {
                if let Some(text) = text.take() {
                    return text;
                }
                text = done.wait(text).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        }
    }

    /// Ends every capture still in progress when the process exits (`std::process::exit` runs
    /// the C library's exit handlers after flushing Rust's stdout), so their output is
    /// forwarded before the process is gone.
    extern "C" fn finish_at_exit() {
        let mut active = ACTIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(redirect) = active.pop() {
            redirect.end();
        }
    }

    /// A byte string no program prints: a NUL, a tag, and this process's id and a counter.
    fn end_mark() -> Vec<u8> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nonce = blake3::hash(
            format!(
                "{}.{}.{:?}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
                std::time::SystemTime::now()
            )
            .as_bytes(),
        );
        format!("\0memoshelve-capture-end-{}\0", &nonce.to_hex()[..32]).into_bytes()
    }

    /// The forwarding thread: copies the pipe to the real stdout as it comes and records it, up
    /// to the end mark, then hands the record over. What a straggler (a child process that
    /// outlived the capture and kept its stdout) writes afterwards is still forwarded, not
    /// recorded, until the pipe closes.
    fn forward_until_mark(mut reader: PipeReader, mut out: File, mark: &[u8], handoff: &Handoff) {
        let mut recorded = Vec::new();
        let mut pending = Vec::new();
        let mut buffer = [0u8; 8192];
        let mut marked = false;
        loop {
            let read = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            pending.extend_from_slice(&buffer[..read]);
            let (ready, found) = if marked {
                (pending.len(), None)
            } else if let Some(at) = find(&pending, mark) {
                (at, Some(at))
            } else {
                (pending.len() - partial_mark_len(&pending, mark), None)
            };
            let _ = out.write_all(&pending[..ready]);
            if !marked {
                recorded.extend_from_slice(&pending[..ready]);
            }
            match found {
                Some(at) => {
                    pending.drain(..at + mark.len());
                    let _ = out.write_all(&pending);
                    pending.clear();
                    marked = true;
                    hand_over(handoff, std::mem::take(&mut recorded));
                }
                None => {
                    pending.drain(..ready);
                }
            }
        }
        if !marked {
            // The write end closed without a mark: the capture could not write it.
            hand_over(handoff, recorded);
        }
    }

    fn hand_over(handoff: &Handoff, recorded: Vec<u8>) {
        let (text, done) = &**handoff;
        *text.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(recorded);
        done.notify_all();
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|window| window == needle)
    }

    /// The length of the longest end of `text` that begins `mark`: bytes to hold back, since
    /// the mark may be arriving in parts.
    fn partial_mark_len(text: &[u8], mark: &[u8]) -> usize {
        (1..mark.len().min(text.len() + 1))
            .rev()
            .find(|&len| text.ends_with(&mark[..len]))
            .unwrap_or(0)
    }
}

/// The directory above the profile's in cargo's build layout (`<target>[/<triple>]`), from an
/// `OUT_DIR` below `<profile>/build/`; `None` for a path not in that layout.
pub(crate) fn target_of(out_dir: &std::path::Path) -> Option<&std::path::Path> {
    let build = out_dir
        .ancestors()
        .skip(1)
        .find(|dir| dir.file_name().is_some_and(|name| name == "build"))?;
    build.parent()?.parent()
}

/// The starts of the cache names of transparent mode (`cargo-memoshelve` as `RUSTC_WRAPPER`
/// names each script's entries `build-script.<package>`, and each compile's
/// `rustc.<package>[.<crate>]`): what they restore is linked into binaries.
pub(crate) const TRANSPARENT_PREFIXES: [&str; 2] = ["build-script.", "rustc."];

/// Whether cache `name` is one of transparent mode's.
pub(crate) fn is_transparent(name: &str) -> bool {
    TRANSPARENT_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}
