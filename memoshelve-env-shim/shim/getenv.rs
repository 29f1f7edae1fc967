//! The `getenv` interposer that `cargo-memoshelve` preloads into the processes of a traced build
//! script's run, to learn which environment variables they read by name (ptrace cannot see
//! that). `build.rs` compiles this file on its own into a cdylib; `src/wrapper/trace/env.rs`
//! installs it, sets `LD_PRELOAD` and `MEMOSHELVE_ENV_LOG`, and reads the log.
//!
//! It is loaded into every process the script starts (cc, perl, make...), so it is `no_std`,
//! allocates nothing (but `realpath`'s scratch, as libc's does) and takes no lock (a `vfork`
//! child or a signal handler may call it); a process image pays one `dlsym` pair, one `mmap`,
//! one `open` and one `write` at load, then an `fcntl` and a `write` per logged name or path.
//! It must not panic (core's unwinding tables would come along and name a
//! `rust_eh_personality` nothing defines): slices are read with `get`.
//!
//! Exported: `getenv` and `secure_getenv`, which return what the next definition (libc's,
//! found with `dlsym(RTLD_NEXT, ..)`) returns, and log the name; on x86_64 also the file calls
//! of the fast path (`files.rs`, which logs `<pid>\tF\t<path>\n` lines to the same log).
//!
//! The log is the file named by `MEMOSHELVE_ENV_LOG` (read with the real `getenv`, never
//! logged). The runner creates it; this opens it without `O_CREAT`, so a process started
//! after the run (the runner removed the log) logs nothing and leaves no file behind. One `write` per line, on an `O_APPEND`
//! descriptor, so lines of concurrent processes and threads never interleave:
//!
//! - `<pid>\tL\n`: the shim was loaded into this process image (its constructor ran).
//! - `<pid>\tG\t<name>\n`: a `getenv` or `secure_getenv` of `<name>`.
//! - `<pid>\tT\t<prefix>\n`: the same for a name too long for the line buffer: its first
//!   bytes, cut at [`NAME_MAX`] escaped bytes.
//!
//! In a name, `\` is written `\\` and a control byte (below 0x20, and 0x7f) `\xHH`, so a
//! line never holds a tab or newline of its own; other bytes are written as they are.
//!
//! When the variable is unset or the log cannot be opened, nothing is logged and the two
//! functions behave exactly as libc's. `errno` is left as the real function left it.

#![no_std]

#[cfg(target_arch = "x86_64")]
mod elf;
/// The fast path of file calls (x86_64 only: elsewhere every traced call stops).
#[cfg(target_arch = "x86_64")]
mod files;
/// The loader's search of `LD_LIBRARY_PATH`, checked here instead of stopping (x86_64).
#[cfg(target_arch = "x86_64")]
mod ldpath;
#[cfg(target_arch = "x86_64")]
mod page;

use core::ffi::{CStr, c_char, c_int, c_ulong, c_void};
use core::ptr;
use core::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

/// The variable naming the log (the runtime side sets it: `LOG_VAR` in `trace/env.rs`).
const LOG_VAR: &CStr = c"MEMOSHELVE_ENV_LOG";

/// The longest name logged whole, counted in escaped bytes.
const NAME_MAX: usize = 512;

/// A pid (at most 10 digits), two tabs, a tag, the name and the newline.
const LINE_MAX: usize = 10 + 3 + NAME_MAX + 1;

/// `dlsym`'s handle for "the next object after this one in the search order" (glibc).
const RTLD_NEXT: *mut c_void = -1isize as *mut c_void;

const F_GETFL: c_int = 3;
const EINTR: c_int = 4;
const AT_SECURE: c_ulong = 23;
const O_WRONLY: c_int = 0o1;
const O_ACCMODE: c_int = 0o3;
#[cfg(not(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
mod flags {
    use core::ffi::c_int;
    pub(crate) const O_APPEND: c_int = 0o2000;
    pub(crate) const O_NONBLOCK: c_int = 0o4000;
    pub(crate) const O_CLOEXEC: c_int = 0o2_000_000;
}
#[cfg(any(target_arch = "mips", target_arch = "mips64"))]
mod flags {
    use core::ffi::c_int;
    pub(crate) const O_APPEND: c_int = 0x8;
    pub(crate) const O_NONBLOCK: c_int = 0x80;
    pub(crate) const O_CLOEXEC: c_int = 0o2_000_000;
}
#[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
mod flags {
    use core::ffi::c_int;
    pub(crate) const O_APPEND: c_int = 0x8;
    pub(crate) const O_NONBLOCK: c_int = 0x4000;
    pub(crate) const O_CLOEXEC: c_int = 0x40_0000;
}
use flags::{O_APPEND, O_CLOEXEC, O_NONBLOCK};

/// How the log is opened. `O_NONBLOCK` changes nothing for a regular file; it marks the
/// descriptor, so that [`is_log`] can tell it from one the program opened under the same
/// number after closing ours (a daemon that closes every descriptor, say).
const LOG_FLAGS: c_int = O_WRONLY | O_APPEND | O_NONBLOCK | O_CLOEXEC;

// `dl` is empty on glibc 2.34 and later (`dlsym` moved into libc) and holds `dlsym` before.
#[link(name = "dl")]
unsafe extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

#[link(name = "c")]
unsafe extern "C" {
    #[cfg(not(target_arch = "x86_64"))]
    fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn getpid() -> c_int;
    fn getauxval(kind: c_ulong) -> c_ulong;
    fn __errno_location() -> *mut c_int;
    fn abort() -> !;
    static mut environ: *const *const c_char;
}

type GetenvFn = unsafe extern "C" fn(*const c_char) -> *mut c_char;

/// The real `getenv` and `secure_getenv`, resolved on first use (null: not yet).
static REAL_GETENV: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
static REAL_SECURE_GETENV: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());

/// The log's descriptor, or [`UNOPENED`] or [`DISABLED`]. After a `fork` the child shares the
/// descriptor (and this value): still good. A `vfork` child shares this memory with its
/// parent but has its own descriptor table, so a descriptor is checked by [`is_log`] before
/// each use rather than trusted, and whoever opens a new one stores it with a
/// compare-exchange (the parent, back, finds that number is not its log and opens again).
static LOG_FD: AtomicI32 = AtomicI32::new(UNOPENED);
const UNOPENED: c_int = -1;
/// The variable is unset or the log could not be opened: this image logs nothing.
const DISABLED: c_int = -2;

/// `getenv(3)`, logging the name.
///
/// # Safety
///
/// As libc's: `name` is null or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getenv(name: *const c_char) -> *mut c_char {
    // Another library's constructor, before this one's: the environment as given first.
    #[cfg(target_arch = "x86_64")]
    ldpath::restore();
    let real = real(&REAL_GETENV, c"getenv", scan_environ);
    // SAFETY: the caller's contract is the real function's.
    let value = unsafe { real(name) };
    // SAFETY: as above.
    unsafe { log_name(name) };
    value
}

/// `secure_getenv(3)`, logging the name.
///
/// # Safety
///
/// As libc's: `name` is null or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn secure_getenv(name: *const c_char) -> *mut c_char {
    // Another library's constructor, before this one's: the environment as given first.
    #[cfg(target_arch = "x86_64")]
    ldpath::restore();
    let real = real(&REAL_SECURE_GETENV, c"secure_getenv", scan_environ_secure);
    // SAFETY: the caller's contract is the real function's.
    let value = unsafe { real(name) };
    // SAFETY: as above.
    unsafe { log_name(name) };
    value
}

/// The constructor: runs once per process image, when the dynamic loader initializes the
/// shim (possibly after another library's constructor has called `getenv`: everything here
/// is also done lazily).
#[used]
#[unsafe(link_section = ".init_array")]
static LOADED: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = loaded;

/// glibc calls it with `main`'s arguments.
extern "C" fn loaded(_argc: c_int, argv: *const *const c_char, _env: *const *const c_char) {
    #[cfg(target_arch = "x86_64")]
    {
        ldpath::restore();
        files::map_page();
        files::map_shared_table();
    }
    real(&REAL_GETENV, c"getenv", scan_environ);
    real(&REAL_SECURE_GETENV, c"secure_getenv", scan_environ_secure);
    log_tag(b'L');
    #[cfg(target_arch = "x86_64")]
    ldpath::settle(argv);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = argv;
}

/// Logs `<pid>\tU\n`: this process may have done what plain cargo's would not (a library
/// the loader was not given the chance to find first, `ldpath.rs`): the run is not recorded.
#[cfg(target_arch = "x86_64")]
fn log_unrecordable() {
    log_tag(b'U');
}

/// Logs `<pid>\t<tag>\n`.
fn log_tag(tag: u8) {
    let _errno = SavedErrno::save();
    let mut line = Line::new();
    line.push_pid();
    line.push(b'\t');
    line.push(tag);
    line.push(b'\n');
    line.write();
}

/// The function `slot` caches, resolved with `dlsym(RTLD_NEXT, symbol)`, or `fallback` when
/// nothing is found (never on glibc). Racing threads resolve the same address: no lock.
fn real(slot: &AtomicPtr<c_void>, symbol: &CStr, fallback: GetenvFn) -> GetenvFn {
    let mut address = slot.load(Ordering::Relaxed);
    if address.is_null() {
        // SAFETY: `symbol` is NUL-terminated; RTLD_NEXT is a valid handle for a shared object.
        address = unsafe { dlsym(RTLD_NEXT, symbol.as_ptr()) };
        if address.is_null() {
            address = fallback as *mut c_void;
        }
        slot.store(address, Ordering::Relaxed);
    }
    // SAFETY: `address` is the named libc function, whose type is `GetenvFn`, or `fallback`.
    unsafe { core::mem::transmute::<*mut c_void, GetenvFn>(address) }
}

/// Logs a read of `name` (nothing for null, for [`LOG_VAR`], or without a log).
///
/// # Safety
///
/// `name` is null or a NUL-terminated string.
unsafe fn log_name(name: *const c_char) {
    if name.is_null() {
        return;
    }
    // SAFETY: non-null, so NUL-terminated by the caller's contract.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    if name == LOG_VAR.to_bytes() {
        return;
    }
    let _errno = SavedErrno::save();
    let mut line = Line::new();
    line.push_pid();
    line.push(b'\t');
    let tag_at = line.len;
    line.push(b'G');
    line.push(b'\t');
    let mut escaped_len = 0;
    for &byte in name {
        let width = match byte {
            b'\\' => 2,
            0..0x20 | 0x7f => 4,
            _ => 1,
        };
        if escaped_len + width > NAME_MAX {
            line.set(tag_at, b'T');
            break;
        }
        escaped_len += width;
        match width {
            1 => line.push(byte),
            2 => {
                line.push(b'\\');
                line.push(b'\\');
            }
            _ => {
                line.push(b'\\');
                line.push(b'x');
                line.push(hex_digit(byte >> 4));
                line.push(hex_digit(byte & 0xf));
            }
        }
    }
    line.push(b'\n');
    line.write();
}

fn hex_digit(nibble: u8) -> u8 {
    if nibble < 10 { b'0' + nibble } else { b'a' + nibble - 10 }
}

/// One log line, built on the stack.
struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line { buf: [0; LINE_MAX], len: 0 }
    }

    /// Appends `byte`; a full line drops it (never: [`NAME_MAX`] bounds the name).
    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    fn set(&mut self, at: usize, byte: u8) {
        if let Some(slot) = self.buf.get_mut(at) {
            *slot = byte;
        }
    }

    fn push_pid(&mut self) {
        // SAFETY: getpid cannot fail.
        self.push_number(unsafe { getpid() }.cast_unsigned());
    }

    /// Appends `number` in decimal.
    fn push_number(&mut self, mut number: u32) {
        let mut digits = [0u8; 10];
        let mut n_digits = 0;
        loop {
            if let Some(digit) = digits.get_mut(n_digits) {
                *digit = b'0' + (number % 10) as u8;
                n_digits += 1;
            }
            number /= 10;
            if number == 0 {
                break;
            }
        }
        for &digit in digits.iter().take(n_digits).rev() {
            self.push(digit);
        }
    }

    /// Appends the line to the log in one `write` (when there is a log).
    fn write(&self) {
        let Some(fd) = log_fd() else { return };
        let bytes = self.buf.get(..self.len).unwrap_or(&[]);
        let mut written = 0;
        while let Some(rest) = bytes.get(written..).filter(|rest| !rest.is_empty()) {
            // SAFETY: `rest` is valid for reads of its length.
            let res = unsafe { write(fd.fd, rest.as_ptr().cast(), rest.len()) };
            if res > 0 {
                written += res.cast_unsigned();
            } else if res == 0 || errno() != EINTR {
                break;
            }
        }
        if fd.close {
            // SAFETY: this call opened `fd` and nothing else holds it.
            unsafe { close(fd.fd) };
        }
    }
}

struct LogFd {
    fd: c_int,
    /// Opened for this line only (another thread stored its own first): close after.
    close: bool,
}

/// The log's descriptor, opened on first use; `None` without a log.
fn log_fd() -> Option<LogFd> {
    let current = LOG_FD.load(Ordering::Acquire);
    if current == DISABLED {
        return None;
    }
    if current >= 0 && is_log(current) {
        return Some(LogFd { fd: current, close: false });
    }
    let real_getenv = real(&REAL_GETENV, c"getenv", scan_environ);
    // SAFETY: LOG_VAR is NUL-terminated.
    let path = unsafe { real_getenv(LOG_VAR.as_ptr()) };
    let opened = if path.is_null() { -1 } else { open_log(path) };
    let new = if opened < 0 { DISABLED } else { opened };
    match LOG_FD.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire) {
        _ if opened < 0 => None,
        Ok(_) => Some(LogFd { fd: opened, close: false }),
        Err(_) => Some(LogFd { fd: opened, close: true }),
    }
}

/// Opens the log at `path` (from the environment), unseen by the watcher where the fast path
/// is there: this file exports its own `open`.
fn open_log(path: *const c_char) -> c_int {
    #[cfg(target_arch = "x86_64")]
    return files::open_log(path, LOG_FLAGS);
    // SAFETY: `path` is a NUL-terminated string from the environment; no O_CREAT, so no mode.
    #[cfg(not(target_arch = "x86_64"))]
    return unsafe { open(path, LOG_FLAGS) };
}

/// Whether `fd` is (still) the log this image opened: its flags are [`LOG_FLAGS`]'.
fn is_log(fd: c_int) -> bool {
    // SAFETY: F_GETFL takes no argument and only reads the descriptor's flags.
    let flags = unsafe { fcntl(fd, F_GETFL) };
    let mask = O_ACCMODE | O_APPEND | O_NONBLOCK;
    flags >= 0 && flags & mask == LOG_FLAGS & mask
}

fn errno() -> c_int {
    // SAFETY: glibc's errno location is valid for the calling thread.
    unsafe { *__errno_location() }
}

/// Puts `errno` back as it was when dropped: the real `getenv` leaves it alone, and so must
/// the logging.
struct SavedErrno(c_int);

impl SavedErrno {
    fn save() -> SavedErrno {
        SavedErrno(errno())
    }
}

impl Drop for SavedErrno {
    fn drop(&mut self) {
        // SAFETY: glibc's errno location is valid for the calling thread.
        unsafe { *__errno_location() = self.0 };
    }
}

/// `getenv` without libc's: a walk of `environ`.
unsafe extern "C" fn scan_environ(name: *const c_char) -> *mut c_char {
    if name.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: non-null, so NUL-terminated by the caller's contract.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    // SAFETY: `environ` is libc's, a null-terminated array of NUL-terminated strings (or null).
    let mut entry = unsafe { ptr::read_volatile(&raw const environ) };
    if entry.is_null() {
        return ptr::null_mut();
    }
    loop {
        // SAFETY: `entry` points into the null-terminated array, not past its null.
        let text = unsafe { *entry };
        if text.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: each entry is NUL-terminated.
        let bytes = unsafe { CStr::from_ptr(text) }.to_bytes();
        if bytes.starts_with(name) && bytes.get(name.len()) == Some(&b'=') {
            // SAFETY: within `text`, before its NUL.
            return unsafe { text.add(name.len() + 1) }.cast_mut();
        }
        // SAFETY: `text` was not the terminating null, so the next element exists.
        entry = unsafe { entry.add(1) };
    }
}

/// `secure_getenv` without libc's.
unsafe extern "C" fn scan_environ_secure(name: *const c_char) -> *mut c_char {
    // SAFETY: getauxval only reads the auxiliary vector.
    if unsafe { getauxval(AT_SECURE) } != 0 {
        return ptr::null_mut();
    }
    // SAFETY: the caller's contract.
    unsafe { scan_environ(name) }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: abort is always safe to call.
    unsafe { abort() }
}
