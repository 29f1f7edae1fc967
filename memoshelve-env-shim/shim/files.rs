//! The fast path of a watched run (x86_64): the file calls programs make most often (`open`,
//! `stat`, `access`, `readlink`, `realpath`, `fopen` to read...) log their path to the run's
//! log and make the system call from one page at a fixed address, [`FAST_PAGE`], which the
//! seccomp filter lets run without stopping. A stop costs about 10 µs; a logged line, one
//! `writev` (issue 29's measurements are in BENCHMARKS.md).
//!
//! The rule that keeps it right: a call is logged *before* it is made, and whatever this file
//! cannot log exactly as the watcher would record it (no log, no page, a path with a control
//! byte or a backslash, a relative path whose base cannot be read, an open that may write, a
//! version of `__xstat` it does not know) goes to libc's function, whose system call the
//! filter stops as before. So the shim only moves work; it never hides a call. Calls libc
//! makes inside itself (`fopen`'s `open`, `opendir`, the loader's) do not come here and stop.
//!
//! Log lines: `<pid>\tF\t<absolute path>\n`, a path looked at (opened to read, `stat`ed,
//! `access`ed, read as a link), spelled as the watcher spells it (a relative path joined to
//! the working directory or the directory descriptor's path, links not resolved).

use core::ffi::{CStr, c_char, c_int, c_long, c_uint, c_void};
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU64, Ordering};

use super::{RTLD_NEXT, SavedErrno, abort, dlsym, log_fd};

use super::page::FAST_PAGE;

const PAGE_SIZE: usize = 4096;
const PATH_MAX: usize = 4096;
/// Links followed by one `realpath` before `ELOOP` (glibc's threshold).
const MAX_LINKS: usize = 40;

pub(crate) const SYS_OPENAT: c_long = 257;
pub(crate) const SYS_NEWFSTATAT: c_long = 262;
pub(crate) const SYS_READLINKAT: c_long = 267;
pub(crate) const SYS_FACCESSAT: c_long = 269;
const SYS_GETCWD: c_long = 79;
const SYS_STATX: c_long = 332;
const SYS_FACCESSAT2: c_long = 439;

pub(crate) const AT_FDCWD: c_int = -100;
const AT_SYMLINK_NOFOLLOW: c_int = 0x100;
pub(crate) const AT_EMPTY_PATH: c_int = 0x1000;
const O_ACCMODE: c_int = 0o3;
pub(crate) const O_RDONLY: c_int = 0;
const O_CREAT: c_int = 0o100;
const O_TRUNC: c_int = 0o1000;
const O_TMPFILE: c_int = 0o20_000_000;
pub(crate) const O_CLOEXEC: c_int = 0o2_000_000;
const EBADF: c_int = 9;
const ENOMEM: c_int = 12;
pub(crate) const ENOENT: c_int = 2;
const EINVAL: c_int = 22;
const ELOOP: c_int = 40;
const ENOSYS: c_int = 38;
const F_OK: c_int = 0;

const PROT_READ: c_int = 1;
const PROT_WRITE: c_int = 2;
const PROT_EXEC: c_int = 4;
const MAP_PRIVATE: c_int = 0x02;
const MAP_ANONYMOUS: c_int = 0x20;
const MAP_FIXED_NOREPLACE: c_int = 0x10_0000;

#[link(name = "c")]
unsafe extern "C" {
    fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: i64,
    ) -> *mut c_void;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fn mprotect(addr: *mut c_void, len: usize, prot: c_int) -> c_int;
    fn syscall(number: c_long, ...) -> c_long;
    fn malloc(size: usize) -> *mut c_void;
    fn calloc(count: usize, size: usize) -> *mut c_void;
    fn free(ptr: *mut c_void);
    fn close(fd: c_int) -> c_int;
    fn fdopen(fd: c_int, mode: *const c_char) -> *mut c_void;
}

/// `fn(number, a1, .., a6) -> result` (the kernel's: `-errno` on failure), as machine code:
/// the System V arguments moved to the kernel's registers, `syscall`, `ret`.
const ENTRY: [u8; 26] = [
    0x48, 0x89, 0xf8, // mov rax, rdi
    0x48, 0x89, 0xf7, // mov rdi, rsi
    0x48, 0x89, 0xd6, // mov rsi, rdx
    0x48, 0x89, 0xca, // mov rdx, rcx
    0x4d, 0x89, 0xc2, // mov r10, r8
    0x4d, 0x89, 0xc8, // mov r8, r9
    0x4c, 0x8b, 0x4c, 0x24, 0x08, // mov r9, [rsp + 8]
    0x0f, 0x05, // syscall
    0xc3, // ret
];

type Entry = unsafe extern "C" fn(c_long, usize, usize, usize, usize, usize, usize) -> c_long;

/// Whether this process image has the page: 0 not yet tried, 1 yes, 2 no.
static PAGE: AtomicU8 = AtomicU8::new(0);

/// Maps the page (the constructor calls this once per image, before `main`; before it, and
/// where the address is taken, every call goes the slow way).
pub(crate) fn map_page() {
    if PAGE.load(Ordering::Acquire) != 0 {
        return;
    }
    if !next_definitions_are_libcs() {
        PAGE.store(2, Ordering::Release);
        return;
    }
    let at = FAST_PAGE as usize as *mut c_void;
    // SAFETY: a new anonymous mapping at an address nothing else holds (NOREPLACE).
    let mapped = unsafe {
        mmap(
            at,
            PAGE_SIZE,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    let ready = if mapped == at {
        // SAFETY: the page is ours, writable and PAGE_SIZE long.
        unsafe { ptr::copy_nonoverlapping(ENTRY.as_ptr(), at.cast::<u8>(), ENTRY.len()) };
        // SAFETY: as above.
        unsafe { mprotect(at, PAGE_SIZE, PROT_READ | PROT_EXEC) == 0 }
    } else {
        // A kernel before 4.17 takes NOREPLACE as a hint and maps elsewhere.
        if !mapped.is_null() && mapped as isize != -1 {
            // SAFETY: the mapping just made, unused.
            unsafe { munmap(mapped, PAGE_SIZE) };
        }
        false
    };
    PAGE.store(if ready { 1 } else { 2 }, Ordering::Release);
}

/// The functions the fast path answers.
const FAST_SYMBOLS: [&CStr; 34] = [
    c"open",
    c"open64",
    c"__open_2",
    c"__open64_2",
    c"openat",
    c"openat64",
    c"__openat_2",
    c"__openat64_2",
    c"fopen",
    c"fopen64",
    c"stat",
    c"stat64",
    c"lstat",
    c"lstat64",
    c"fstatat",
    c"fstatat64",
    c"fstat",
    c"fstat64",
    c"__xstat",
    c"__xstat64",
    c"__lxstat",
    c"__lxstat64",
    c"__fxstat",
    c"__fxstat64",
    c"__fxstatat",
    c"__fxstatat64",
    c"statx",
    c"access",
    c"faccessat",
    c"readlink",
    c"readlinkat",
    c"realpath",
    c"__realpath_chk",
    c"canonicalize_file_name",
];

/// `struct dl_phdr_info`'s first fields (all `dl_iterate_phdr` promises for any `size`).
#[repr(C)]
pub(crate) struct PhdrInfo {
    /// Where the object is loaded (added to each header's `p_vaddr`).
    pub(crate) address: usize,
    pub(crate) name: *const c_char,
    pub(crate) headers: *const ProgramHeader,
    pub(crate) count: u16,
}

/// `Elf64_Phdr`.
#[repr(C)]
pub(crate) struct ProgramHeader {
    pub(crate) kind: u32,
    flags: u32,
    offset: u64,
    pub(crate) virtual_address: u64,
    physical_address: u64,
    file_size: u64,
    pub(crate) memory_size: u64,
    align: u64,
}

pub(crate) const PT_LOAD: u32 = 1;

/// `dl_iterate_phdr`'s callback.
pub(crate) type Visit = unsafe extern "C" fn(*mut PhdrInfo, usize, *mut c_void) -> c_int;

#[link(name = "c")]
unsafe extern "C" {
    pub(crate) fn dl_iterate_phdr(visit: Visit, data: *mut c_void) -> c_int;
}

impl PhdrInfo {
    /// The object's program headers.
    pub(crate) fn headers(&self) -> &[ProgramHeader] {
        // SAFETY: the loader's `count` headers of this object, alive while it is loaded.
        unsafe { core::slice::from_raw_parts(self.headers, usize::from(self.count)) }
    }

    /// Whether `address` lies in one of the object's loaded segments.
    pub(crate) fn holds(&self, address: usize) -> bool {
        self.headers().iter().filter(|header| header.kind == PT_LOAD).any(|header| {
            let start = self.address.wrapping_add(header.virtual_address as usize);
            address >= start && address - start < header.memory_size as usize
        })
    }
}

/// What the walk over the loaded objects looks for, and finds.
struct Addresses {
    /// `[libc's gnu_get_libc_version, the next definition of each FAST_SYMBOLS...]` (null:
    /// libc lacks that function, which no program here then calls).
    wanted: [*mut c_void; 1 + FAST_SYMBOLS.len()],
    /// Whether the object holding the first address holds all the others.
    all_in_libc: bool,
}

/// Whether, for every function the fast path answers, the next definition after this shim is
/// libc's own. Another interposer in between (the user's `LD_PRELOAD`, fakeroot's `stat`, a
/// library of the program defining `open`) would be skipped by a call made from the page:
/// the fast path is then off in this process, and every call goes to the next definition.
///
/// One walk over the loaded objects' segments (`dl_iterate_phdr`), not a `dladdr` per
/// function: `dladdr` searches libc's symbol table for the nearest symbol, and 35 of them cost
/// a third of a millisecond in every process (two thirds of what the shim added to a run of
/// `/bin/true`, BENCHMARKS.md).
fn next_definitions_are_libcs() -> bool {
    /// Stops the walk (1) at the object holding libc's function, noting whether it holds the
    /// others too.
    unsafe extern "C" fn visit(info: *mut PhdrInfo, _size: usize, data: *mut c_void) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info, and `data` is the `Addresses` below.
        let (info, addresses) = unsafe { (&*info, &mut *data.cast::<Addresses>()) };
        let holds = |address: *mut c_void| info.holds(address as usize);
        if !holds(addresses.wanted[0]) {
            return 0;
        }
        addresses.all_in_libc =
            addresses.wanted[1..].iter().all(|&next| next.is_null() || holds(next));
        1
    }
    let mut addresses =
        Addresses { wanted: [ptr::null_mut(); 1 + FAST_SYMBOLS.len()], all_in_libc: false };
    // SAFETY: a NUL-terminated name; RTLD_DEFAULT (null) is a valid handle.
    addresses.wanted[0] = unsafe { dlsym(ptr::null_mut(), c"gnu_get_libc_version".as_ptr()) };
    if addresses.wanted[0].is_null() {
        return false;
    }
    for (slot, symbol) in addresses.wanted[1..].iter_mut().zip(FAST_SYMBOLS) {
        // SAFETY: a NUL-terminated name; RTLD_NEXT is a valid handle for a shared object.
        *slot = unsafe { dlsym(RTLD_NEXT, symbol.as_ptr()) };
    }
    // SAFETY: `visit` matches the callback type and reads `addresses` only during the walk.
    unsafe { dl_iterate_phdr(visit, (&raw mut addresses).cast()) };
    addresses.all_in_libc
}

pub(crate) fn fast() -> bool {
    PAGE.load(Ordering::Acquire) == 1
}

/// A system call from the page (the caller has checked [`fast`]); the kernel's result.
pub(crate) fn entry(number: c_long, args: [usize; 5]) -> c_long {
    // SAFETY: the page holds ENTRY (fast() said so), a function of this type.
    let call = unsafe { core::mem::transmute::<usize, Entry>(FAST_PAGE as usize) };
    // SAFETY: the arguments are the caller's call's, valid for that system call.
    unsafe { call(number, args[0], args[1], args[2], args[3], args[4], 0) }
}

/// Opens the log (`path`, `flags`) without being seen: from the page when there is one.
pub(crate) fn open_log(path: *const c_char, flags: c_int) -> c_int {
    let fd = if fast() {
        entry(SYS_OPENAT, [AT_FDCWD as usize, path as usize, flags as usize, 0, 0])
    } else {
        // SAFETY: openat with a NUL-terminated path and no O_CREAT.
        unsafe { syscall(SYS_OPENAT, AT_FDCWD, path, flags) }
    };
    if fd < 0 { -1 } else { fd as c_int }
}

/// A result as libc's wrappers give it: `-1` and `errno` on failure.
fn libc_result(result: c_long) -> c_long {
    if (-4095..0).contains(&result) {
        // SAFETY: glibc's errno location is valid for the calling thread.
        unsafe { *super::__errno_location() = -result as c_int };
        -1
    } else {
        result
    }
}

pub(crate) fn set_errno(errno: c_int) {
    // SAFETY: glibc's errno location is valid for the calling thread.
    unsafe { *super::__errno_location() = errno };
}

/// What [`log_path`] did.
#[derive(PartialEq, Eq)]
pub(crate) enum Logged {
    /// The path is in the log: make the call from the page.
    Yes,
    /// Nothing to log (an empty path: the call is about the descriptor, or fails): from the page.
    Nothing,
    /// Could not log it as the watcher would record it: call libc's function (it stops).
    No,
}

/// Logs the path `path` (relative to `dirfd`, or to the working directory for `AT_FDCWD`)
/// before the call that looks at it.
pub(crate) fn log_path(dirfd: c_int, path: *const c_char) -> Logged {
    if !fast() || path.is_null() {
        return Logged::No;
    }
    // SAFETY: non-null, NUL-terminated by the caller's contract (as the system call's).
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    if bytes.is_empty() {
        return Logged::Nothing;
    }
    if !plain(bytes) {
        return Logged::No;
    }
    let _errno = SavedErrno::save();
    if bytes.first() == Some(&b'/') {
        return if write_line(&[bytes]) { Logged::Yes } else { Logged::No };
    }
    let mut base = [0u8; PATH_MAX];
    let Some(base) = base_of(dirfd, &mut base) else { return Logged::No };
    let separator: &[u8] = if base == b"/" { b"" } else { b"/" };
    if write_line(&[base, separator, bytes]) { Logged::Yes } else { Logged::No }
}

/// A path the log can hold as it is (no control byte, no backslash: nothing to escape).
fn plain(bytes: &[u8]) -> bool {
    bytes.iter().all(|&byte| byte >= 0x20 && byte != 0x7f && byte != b'\\')
}

/// The absolute path `dirfd` stands for (the working directory for `AT_FDCWD`), in `buf`.
fn base_of(dirfd: c_int, buf: &mut [u8; PATH_MAX]) -> Option<&[u8]> {
    let len = if dirfd == AT_FDCWD {
        // getcwd's length counts the NUL.
        let len = entry(SYS_GETCWD, [buf.as_mut_ptr() as usize, PATH_MAX, 0, 0, 0]);
        usize::try_from(len).ok()?.checked_sub(1)?
    } else {
        if dirfd < 0 {
            return None;
        }
        let mut link = super::Line::new();
        for &byte in b"/proc/self/fd/" {
            link.push(byte);
        }
        link.push_number(dirfd.cast_unsigned());
        link.push(0);
        let link = link.bytes();
        let len = entry(
            SYS_READLINKAT,
            [AT_FDCWD as usize, link.as_ptr() as usize, buf.as_mut_ptr() as usize, PATH_MAX, 0],
        );
        usize::try_from(len).ok().filter(|&len| len < PATH_MAX)?
    };
    let base = buf.get(..len)?;
    // "(unreachable)/..", "socket:[..]": no path the call can resolve against as written.
    (base.first() == Some(&b'/') && plain(base)).then_some(base)
}

/// How many paths a process remembers having logged when the run has no shared table (64 KiB
/// of `.bss`).
const SEEN_SLOTS: usize = 4096;
/// How far a lookup probes past a path's slot.
const SEEN_PROBES: usize = 8;

/// The paths logged in this run, by two 64-bit hashes (the first never 0: an empty slot). A
/// path logged once in a run is in the run's log: logging it again adds nothing (what the run
/// read is a set), and gcc asks about `/usr` hundreds of times per compile, every process of a
/// configure script about the same locale files. Either the run's table, shared by all its
/// processes ([`SHARED`]), or this process image's own. A `fork` child inherits either and a
/// `vfork` child shares it; whatever it holds was logged to the same run's log. Threads and
/// processes race only to log a path twice.
static SEEN: [[AtomicU64; 2]; SEEN_SLOTS] =
    [const { [const { AtomicU64::new(0) }; 2] }; SEEN_SLOTS];

/// The variable naming the run's shared table (`SEEN_VAR` in `trace/env.rs`): a file of
/// [`SHARED_BYTES`] bytes (a `memfd` of the runner, named through `/proc`).
const SEEN_VAR: &CStr = c"MEMOSHELVE_SEEN_TABLE";
/// Slots in the shared table (1 MiB).
pub(crate) const SHARED_SLOTS: usize = 1 << 16;
const SHARED_BYTES: usize = SHARED_SLOTS * 16;
const MAP_SHARED: c_int = 0x01;
const O_RDWR: c_int = 0o2;

/// The shared table, mapped by the constructor (null: none, use [`SEEN`]).
static SHARED: AtomicPtr<[AtomicU64; 2]> = AtomicPtr::new(ptr::null_mut());

/// Maps the run's shared table when the runner made one (once per image, from the
/// constructor; before it, and without one, this process's own table serves).
pub(crate) fn map_shared_table() {
    if !fast() || !SHARED.load(Ordering::Acquire).is_null() {
        return;
    }
    let real_getenv = super::real(&super::REAL_GETENV, c"getenv", super::scan_environ);
    // SAFETY: a NUL-terminated name.
    let path = unsafe { real_getenv(SEEN_VAR.as_ptr()) };
    if path.is_null() {
        return;
    }
    let fd =
        entry(SYS_OPENAT, [AT_FDCWD as usize, path as usize, (O_RDWR | O_CLOEXEC) as usize, 0, 0]);
    let Ok(fd) = c_int::try_from(fd) else { return };
    if fd < 0 {
        return;
    }
    // A file shorter than the table would fault past its end: its size is checked first.
    let big_enough = Stat::of_fd(fd).is_some_and(|stat| stat.size() >= SHARED_BYTES as u64);
    if big_enough {
        // SAFETY: a shared mapping of the table's bytes, which the file holds.
        let mapped = unsafe {
            mmap(ptr::null_mut(), SHARED_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        };
        if !mapped.is_null() && mapped as isize != -1 {
            SHARED.store(mapped.cast(), Ordering::Release);
        }
    }
    // SAFETY: the descriptor opened above (the mapping outlives it).
    unsafe { close(fd) };
}

/// The table in use: the run's, else this process's.
fn table() -> &'static [[AtomicU64; 2]] {
    let shared = SHARED.load(Ordering::Acquire);
    if shared.is_null() {
        &SEEN
    } else {
        // SAFETY: a live shared mapping of SHARED_SLOTS slots of two u64s, never unmapped;
        // atomics are what every process uses on it.
        unsafe { core::slice::from_raw_parts(shared, SHARED_SLOTS) }
    }
}

/// Two independent hashes of the concatenated `parts` (FNV-1a, and a multiply-rotate).
fn hashes(parts: &[&[u8]]) -> (u64, u64) {
    let mut first: u64 = 0xcbf2_9ce4_8422_2325;
    let mut second: u64 = 0x9e37_79b9_7f4a_7c15;
    for &byte in parts.iter().flat_map(|part| part.iter()) {
        first = (first ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        second = (second.rotate_left(5) ^ u64::from(byte)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    }
    (first | 1, second)
}

/// Whether the path with these hashes was logged already.
fn seen((first, second): (u64, u64)) -> bool {
    let table = table();
    (0..SEEN_PROBES).any(|probe| {
        let slot = table.get((first as usize).wrapping_add(probe) % table.len());
        slot.is_some_and(|[a, b]| {
            a.load(Ordering::Acquire) == first && b.load(Ordering::Acquire) == second
        })
    })
}

/// Remembers a logged path (when a slot near its own is free).
fn remember((first, second): (u64, u64)) {
    let table = table();
    for probe in 0..SEEN_PROBES {
        let Some([a, b]) = table.get((first as usize).wrapping_add(probe) % table.len()) else {
            return;
        };
        match a.compare_exchange(0, first, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                b.store(second, Ordering::Release);
                return;
            }
            // Logged by another at the same time: nothing to add.
            Err(current) if current == first && b.load(Ordering::Acquire) == second => return,
            Err(_) => {}
        }
    }
}

/// Logs the path `parts` spell, unless this process did already; whether it is in the log.
fn write_line(parts: &[&[u8]]) -> bool {
    let hashes = hashes(parts);
    if seen(hashes) {
        return true;
    }
    let written = write_line_now(parts);
    if written {
        remember(hashes);
    }
    written
}

/// Writes `<pid>\tF\t<parts>\n` in one `writev`; whether it was written whole.
fn write_line_now(parts: &[&[u8]]) -> bool {
    #[repr(C)]
    struct IoVec {
        base: *const c_void,
        len: usize,
    }
    unsafe extern "C" {
        fn writev(fd: c_int, iov: *const IoVec, count: c_int) -> isize;
    }
    let Some(fd) = log_fd() else { return false };
    let mut head = super::Line::new();
    head.push_pid();
    head.push(b'\t');
    head.push(b'F');
    head.push(b'\t');
    let mut iov = [const { IoVec { base: ptr::null(), len: 0 } }; 5];
    let mut count = 0;
    let mut total = 0;
    let head = head.bytes();
    for part in core::iter::once(head).chain(parts.iter().copied()).chain([b"\n".as_slice()]) {
        let Some(slot) = iov.get_mut(count) else { return false };
        *slot = IoVec { base: part.as_ptr().cast(), len: part.len() };
        count += 1;
        total += part.len();
    }
    // SAFETY: each vector is a live slice.
    let written = unsafe { writev(fd.fd, iov.as_ptr(), count as c_int) };
    if fd.close {
        // SAFETY: opened for this line only.
        unsafe { close(fd.fd) };
    }
    // A short write leaves a cut line: the runner then records nothing of the run.
    written == total as isize
}

/// The function `symbol` that the next object defines (libc's), cached in `slot`.
pub(crate) fn next(slot: &AtomicPtr<c_void>, symbol: &CStr) -> *mut c_void {
    let mut address = slot.load(Ordering::Relaxed);
    if address.is_null() {
        // SAFETY: `symbol` is NUL-terminated; RTLD_NEXT is a valid handle for a shared object.
        address = unsafe { dlsym(RTLD_NEXT, symbol.as_ptr()) };
        if address.is_null() {
            // The program called a function its libc does not have: nothing to call.
            // SAFETY: abort is always safe to call.
            unsafe { abort() }
        }
        slot.store(address, Ordering::Relaxed);
    }
    address
}

/// Calls libc's `$name` with these arguments, of these types.
macro_rules! libc_fn {
    ($name:expr, fn($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty) => {{
        static SLOT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
        let address = next(&SLOT, $name);
        // SAFETY: `address` is libc's function of this name, which has this type.
        let real = unsafe { core::mem::transmute::<*mut c_void, unsafe extern "C" fn($($ty),*) -> $ret>(address) };
        // SAFETY: the caller's arguments, under the function's own contract.
        unsafe { real($($arg),*) }
    }};
}

/// `name` (an identifier) as a C string, at compile time.
macro_rules! c_name {
    ($name:ident) => {
        const {
            match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                Ok(name) => name,
                Err(_) => panic!("a symbol's name has no NUL"),
            }
        }
    };
}

/// Exports each of the `[names]` as a function of these parameters whose body is `body`, in
/// which `next()` calls libc's function of the same name with the same arguments.
macro_rules! interpose {
    ([], $($signature_and_body:tt)*) => {};
    ([$name:ident $(, $more:ident)*], $($signature_and_body:tt)*) => {
        interpose_one!($name, $($signature_and_body)*);
        interpose!([$($more),*], $($signature_and_body)*);
    };
}

/// [`interpose`] for one name.
macro_rules! interpose_one {
    ($name:ident, fn($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty, |$next:ident| $body:expr) => {
        /// # Safety
        ///
        /// As libc's function of the same name.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            let $next = || libc_fn!(c_name!($name), fn($($arg: $ty),*) -> $ret);
            $body
        }
    };
}

// `open` and `openat` are variadic in C; the mode is taken as a third (fourth) argument, which
// on x86_64 is where a variadic caller puts it, and read only by an `O_CREAT` open.
interpose!([open, open64], fn(path: *const c_char, flags: c_int, mode: c_uint) -> c_int, |next| {
    fast_open(AT_FDCWD, path, flags, mode).unwrap_or_else(next)
});
// `open` under `_FORTIFY_SOURCE`.
interpose!([__open_2, __open64_2], fn(path: *const c_char, flags: c_int) -> c_int, |next| {
    fast_open(AT_FDCWD, path, flags, 0).unwrap_or_else(next)
});
interpose!(
    [openat, openat64],
    fn(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int,
    |next| fast_open(dirfd, path, flags, mode).unwrap_or_else(next)
);
interpose!(
    [__openat_2, __openat64_2],
    fn(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int,
    |next| fast_open(dirfd, path, flags, 0).unwrap_or_else(next)
);
interpose!([fopen, fopen64], fn(path: *const c_char, mode: *const c_char) -> *mut c_void, |next| {
    fast_fopen(path, mode).unwrap_or_else(next)
});
interpose!([stat, stat64], fn(path: *const c_char, buf: *mut c_void) -> c_int, |next| {
    fast_fstatat(AT_FDCWD, path, buf, 0).unwrap_or_else(next)
});
interpose!([lstat, lstat64], fn(path: *const c_char, buf: *mut c_void) -> c_int, |next| {
    fast_fstatat(AT_FDCWD, path, buf, AT_SYMLINK_NOFOLLOW).unwrap_or_else(next)
});
interpose!(
    [fstatat, fstatat64],
    fn(dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int,
    |next| fast_fstatat(dirfd, path, buf, flags).unwrap_or_else(next)
);
interpose!([fstat, fstat64], fn(fd: c_int, buf: *mut c_void) -> c_int, |next| {
    fast_fstat(fd, buf).unwrap_or_else(next)
});
// What programs built against glibc before 2.33 call for `stat` and its kin.
interpose!(
    [__xstat, __xstat64],
    fn(version: c_int, path: *const c_char, buf: *mut c_void) -> c_int,
    |next| {
        known_stat_version(version)
            .then(|| fast_fstatat(AT_FDCWD, path, buf, 0))
            .flatten()
            .unwrap_or_else(next)
    }
);
interpose!(
    [__lxstat, __lxstat64],
    fn(version: c_int, path: *const c_char, buf: *mut c_void) -> c_int,
    |next| {
        known_stat_version(version)
            .then(|| fast_fstatat(AT_FDCWD, path, buf, AT_SYMLINK_NOFOLLOW))
            .flatten()
            .unwrap_or_else(next)
    }
);
interpose!(
    [__fxstat, __fxstat64],
    fn(version: c_int, fd: c_int, buf: *mut c_void) -> c_int,
    |next| known_stat_version(version).then(|| fast_fstat(fd, buf)).flatten().unwrap_or_else(next)
);
interpose!(
    [__fxstatat, __fxstatat64],
    fn(version: c_int, dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int,
    |next| {
        known_stat_version(version)
            .then(|| fast_fstatat(dirfd, path, buf, flags))
            .flatten()
            .unwrap_or_else(next)
    }
);
interpose!(
    [statx],
    fn(dirfd: c_int, path: *const c_char, flags: c_int, mask: c_uint, buf: *mut c_void) -> c_int,
    |next| {
        fast_look(SYS_STATX, dirfd, path, [flags as usize, mask as usize, buf as usize])
            .unwrap_or_else(next)
    }
);
interpose!([access], fn(path: *const c_char, mode: c_int) -> c_int, |next| {
    fast_look(SYS_FACCESSAT, AT_FDCWD, path, [mode as usize, 0, 0]).unwrap_or_else(next)
});
// With flags, libc's emulates them where the kernel lacks `faccessat2`: that case goes to
// libc's.
interpose!(
    [faccessat],
    fn(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int,
    |next| {
        let fast = if flags == 0 {
            fast_look(SYS_FACCESSAT, dirfd, path, [mode as usize, 0, 0])
        } else {
            fast_look(SYS_FACCESSAT2, dirfd, path, [mode as usize, flags as usize, 0])
                .filter(|&result| !(result == -1 && super::errno() == ENOSYS))
        };
        fast.unwrap_or_else(next)
    }
);
interpose!([readlink], fn(path: *const c_char, buf: *mut c_char, size: usize) -> isize, |next| {
    fast_readlink(AT_FDCWD, path, buf, size).unwrap_or_else(next)
});
interpose!(
    [readlinkat],
    fn(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: usize) -> isize,
    |next| fast_readlink(dirfd, path, buf, size).unwrap_or_else(next)
);
interpose!([realpath], fn(path: *const c_char, resolved: *mut c_char) -> *mut c_char, |next| {
    fast_realpath(path, resolved).unwrap_or_else(next)
});
// `realpath` under `_FORTIFY_SOURCE`: a buffer shorter than PATH_MAX is libc's to refuse.
interpose!(
    [__realpath_chk],
    fn(path: *const c_char, resolved: *mut c_char, size: usize) -> *mut c_char,
    |next| (size >= PATH_MAX).then(|| fast_realpath(path, resolved)).flatten().unwrap_or_else(next)
);
interpose!([canonicalize_file_name], fn(path: *const c_char) -> *mut c_char, |next| {
    fast_realpath(path, ptr::null_mut()).unwrap_or_else(next)
});

/// Whether an open with `flags` only reads (as the watcher tells a look from a write).
fn reads_only(flags: c_int) -> bool {
    flags & O_ACCMODE == O_RDONLY && flags & (O_CREAT | O_TRUNC | O_TMPFILE) == 0
}

fn fast_open(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> Option<c_int> {
    if !reads_only(flags) || log_path(dirfd, path) == Logged::No {
        return None;
    }
    let result =
        entry(SYS_OPENAT, [dirfd as usize, path as usize, flags as usize, mode as usize, 0]);
    Some(libc_result(result) as c_int)
}

/// `fopen` of a mode that only reads (`r`, then any of `b`, `e`, `m`, `c`): the open from the
/// page, the stream from libc's `fdopen`. Other modes: `None`.
fn fast_fopen(path: *const c_char, mode: *const c_char) -> Option<*mut c_void> {
    if mode.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated by the caller's contract.
    let mode_bytes = unsafe { CStr::from_ptr(mode) }.to_bytes();
    let (&first, rest) = mode_bytes.split_first()?;
    // (No `<[u8]>::contains`: core's `memchr` would bring its unwinding tables along.)
    if first != b'r' || !rest.iter().all(|&byte| matches!(byte, b'b' | b'e' | b'm' | b'c')) {
        return None;
    }
    let flags = O_RDONLY | if rest.iter().any(|&byte| byte == b'e') { O_CLOEXEC } else { 0 };
    let fd = fast_open(AT_FDCWD, path, flags, 0o666)?;
    if fd < 0 {
        return Some(ptr::null_mut());
    }
    // SAFETY: `fd` is open to read, `mode` a valid mode string.
    let stream = unsafe { fdopen(fd, mode) };
    if stream.is_null() {
        let errno = SavedErrno::save();
        // SAFETY: the descriptor just opened, held by nothing else.
        unsafe { close(fd) };
        drop(errno);
    }
    Some(stream)
}

/// A call looking at `dirfd`/`path` whose arguments after the path are `rest`: logged and made
/// from the page, or `None` (libc's function, then).
fn fast_look(number: c_long, dirfd: c_int, path: *const c_char, rest: [usize; 3]) -> Option<c_int> {
    logged_call(number, dirfd, path, rest).map(|result| libc_result(result) as c_int)
}

/// [`fast_look`] as the kernel answers: its result (`-errno` on failure), `errno` untouched.
pub(crate) fn logged_call(
    number: c_long,
    dirfd: c_int,
    path: *const c_char,
    rest: [usize; 3],
) -> Option<c_long> {
    if log_path(dirfd, path) == Logged::No {
        return None;
    }
    Some(entry(number, [dirfd as usize, path as usize, rest[0], rest[1], rest[2]]))
}

/// x86_64's `struct stat`, as the kernel fills it.
pub(crate) struct Stat([u64; 18]);

impl Stat {
    /// `dirfd`/`path` (`flags` as `fstatat`'s), logged and looked at from the page: the
    /// kernel's result (`-errno`); `None` when it could not be logged.
    pub(crate) fn logged(
        dirfd: c_int,
        path: *const c_char,
        flags: c_int,
    ) -> Option<Result<Stat, c_long>> {
        let mut stat = Stat([0; 18]);
        let result = logged_call(
            SYS_NEWFSTATAT,
            dirfd,
            path,
            [stat.0.as_mut_ptr() as usize, flags as usize, 0],
        )?;
        Some(if result == 0 { Ok(stat) } else { Err(result) })
    }

    /// The open descriptor `fd` (nothing to log: its open was).
    pub(crate) fn of_fd(fd: c_int) -> Option<Stat> {
        let mut stat = Stat([0; 18]);
        let result = entry(
            SYS_NEWFSTATAT,
            [
                fd as usize,
                c"".as_ptr() as usize,
                stat.0.as_mut_ptr() as usize,
                AT_EMPTY_PATH as usize,
                0,
            ],
        );
        (result == 0).then_some(stat)
    }

    /// `st_dev` and `st_ino`.
    pub(crate) fn identity(&self) -> (u64, u64) {
        (self.0[0], self.0[1])
    }

    /// `st_mode` (the low half of the fourth word).
    pub(crate) fn mode(&self) -> u32 {
        self.0[3] as u32
    }

    /// `st_size`.
    pub(crate) fn size(&self) -> u64 {
        self.0[6]
    }
}

/// `newfstatat`, where an empty path with `AT_EMPTY_PATH` is the descriptor itself.
fn fast_fstatat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_void,
    flags: c_int,
) -> Option<c_int> {
    fast_look(SYS_NEWFSTATAT, dirfd, path, [buf as usize, flags as usize, 0])
}

/// `fstat`: nothing to log (the open was), but libc's makes it an `fstatat` with an empty path,
/// which the filter cannot tell from one with a path.
fn fast_fstat(fd: c_int, buf: *mut c_void) -> Option<c_int> {
    if !fast() {
        return None;
    }
    if fd < 0 {
        set_errno(EBADF);
        return Some(-1);
    }
    let result = entry(
        SYS_NEWFSTATAT,
        [fd as usize, c"".as_ptr() as usize, buf as usize, AT_EMPTY_PATH as usize, 0],
    );
    Some(libc_result(result) as c_int)
}

/// The `struct stat` versions `__xstat` and friends take on x86_64 (`_STAT_VER_KERNEL`,
/// `_STAT_VER_LINUX`): both the kernel's layout.
fn known_stat_version(version: c_int) -> bool {
    version == 0 || version == 1
}

fn fast_readlink(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    size: usize,
) -> Option<isize> {
    if log_path(dirfd, path) == Logged::No {
        return None;
    }
    let result = entry(SYS_READLINKAT, [dirfd as usize, path as usize, buf as usize, size, 0]);
    Some(libc_result(result) as isize)
}

/// Why [`resolve`] stopped.
enum Unresolved {
    /// The call fails with this `errno` (as libc's would).
    Fails(c_int),
    /// Not done here (a path too long for the buffers, one the log cannot hold): libc's.
    Slow,
}

/// `realpath` as glibc's does it: each component in turn, each read as a link (every
/// `readlink` logged), `..` taken off the resolved prefix. `None`: libc's then.
fn fast_realpath(path: *const c_char, resolved: *mut c_char) -> Option<*mut c_char> {
    if !fast() || path.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated by the caller's contract.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    // SAFETY: plain allocation, zeroed: the three buffers of PATH_MAX + 1 bytes.
    let scratch = unsafe { calloc(3, PATH_MAX + 1) }.cast::<u8>();
    if scratch.is_null() {
        return None;
    }
    // SAFETY: `scratch` holds 3 * (PATH_MAX + 1) bytes, split in three disjoint buffers.
    let (name, rest, link) = unsafe {
        (
            &mut *scratch.cast::<[u8; PATH_MAX + 1]>(),
            &mut *scratch.add(PATH_MAX + 1).cast::<[u8; PATH_MAX + 1]>(),
            &mut *scratch.add(2 * (PATH_MAX + 1)).cast::<[u8; PATH_MAX + 1]>(),
        )
    };
    let outcome = resolve(bytes, name, rest, link);
    let answer = match outcome {
        Ok(len) => {
            let out = if resolved.is_null() {
                // SAFETY: plain allocation.
                unsafe { malloc(len + 1) }.cast::<c_char>()
            } else {
                resolved
            };
            if out.is_null() {
                set_errno(ENOMEM);
            } else {
                // SAFETY: `out` holds at least len + 1 bytes (PATH_MAX for a caller's buffer,
                // and len < PATH_MAX); `name` holds the path and its NUL.
                unsafe { ptr::copy_nonoverlapping(name.as_ptr().cast::<c_char>(), out, len + 1) };
            }
            Some(out)
        }
        Err(Unresolved::Fails(errno)) => {
            // As glibc's: a caller's buffer gets the path resolved up to the missing part
            // (for a missing part only).
            if errno == ENOENT && !resolved.is_null() && name.first() == Some(&b'/') {
                let len = name.iter().position(|&byte| byte == 0).unwrap_or(PATH_MAX);
                if len < PATH_MAX {
                    // SAFETY: the caller's buffer holds PATH_MAX bytes; `len` + 1 fit.
                    unsafe {
                        ptr::copy_nonoverlapping(name.as_ptr().cast::<c_char>(), resolved, len + 1);
                    }
                }
            }
            set_errno(errno);
            Some(ptr::null_mut())
        }
        Err(Unresolved::Slow) => None,
    };
    let errno = SavedErrno::save();
    // SAFETY: allocated above, not used after.
    unsafe { free(scratch.cast()) };
    drop(errno);
    answer
}

/// Resolves `path` into `name` (NUL-terminated; its length returned), using `rest` for what
/// is left to resolve and `link` for a link's text.
fn resolve(
    path: &[u8],
    name: &mut [u8; PATH_MAX + 1],
    rest: &mut [u8; PATH_MAX + 1],
    link: &mut [u8; PATH_MAX + 1],
) -> Result<usize, Unresolved> {
    use Unresolved::{Fails, Slow};
    if path.is_empty() {
        return Err(Fails(ENOENT));
    }
    if path.len() >= PATH_MAX {
        return Err(Slow);
    }
    rest.get_mut(..path.len()).ok_or(Slow)?.copy_from_slice(path);
    let mut rest_len = path.len();
    let mut len = if path.first() == Some(&b'/') {
        put(name, 0, b'/')?;
        1
    } else {
        let cwd = entry(SYS_GETCWD, [name.as_mut_ptr() as usize, PATH_MAX, 0, 0, 0]);
        if cwd < 0 {
            return Err(Fails(-cwd as c_int));
        }
        if name.first() != Some(&b'/') {
            return Err(Slow);
        }
        cwd as usize - 1
    };
    let mut at = 0;
    let mut links = 0;
    loop {
        while rest.get(at..rest_len).is_some_and(|left| left.first() == Some(&b'/')) {
            at += 1;
        }
        if at >= rest_len {
            break;
        }
        let end = rest
            .get(at..rest_len)
            .ok_or(Slow)?
            .iter()
            .position(|&b| b == b'/')
            .map_or(rest_len, |i| at + i);
        let component = rest.get(at..end).ok_or(Slow)?;
        at = end;
        if component == b"." {
            continue;
        }
        if component == b".." {
            len = parent(name, len);
            continue;
        }
        let extra = usize::from(len > 1) + component.len();
        if len + extra >= PATH_MAX {
            return Err(Slow);
        }
        if len > 1 {
            put(name, len, b'/')?;
            len += 1;
        }
        name.get_mut(len..len + component.len()).ok_or(Slow)?.copy_from_slice(component);
        len += component.len();
        put(name, len, 0)?;
        let current = name.get(..len).ok_or(Slow)?;
        if !plain(current) || !write_line(&[current]) {
            return Err(Slow);
        }
        let read = entry(
            SYS_READLINKAT,
            [AT_FDCWD as usize, name.as_ptr() as usize, link.as_mut_ptr() as usize, PATH_MAX, 0],
        );
        if read >= 0 {
            let text_len = read as usize;
            links += 1;
            if links > MAX_LINKS {
                return Err(Fails(ELOOP));
            }
            let left = rest_len - at;
            if text_len + left >= PATH_MAX {
                return Err(Slow);
            }
            // The link's text, then what was left: the new rest.
            let (text, tail) = (text_len, left);
            link.get_mut(text..text + tail)
                .ok_or(Slow)?
                .copy_from_slice(rest.get(at..rest_len).ok_or(Slow)?);
            rest.get_mut(..text + tail)
                .ok_or(Slow)?
                .copy_from_slice(link.get(..text + tail).ok_or(Slow)?);
            rest_len = text + tail;
            at = 0;
            if rest.first() == Some(&b'/') {
                len = 1;
            } else {
                len = parent(name, len);
            }
        } else if read == -(EINVAL as c_long) {
            // Not a link. A `/`, `/.` or `/..` next needs it to be a directory.
            if dir_needed(rest.get(at..rest_len).ok_or(Slow)?) {
                if len + 1 >= PATH_MAX {
                    return Err(Slow);
                }
                put(name, len, b'/')?;
                put(name, len + 1, 0)?;
                let checked = entry(
                    SYS_FACCESSAT,
                    [AT_FDCWD as usize, name.as_ptr() as usize, F_OK as usize, 0, 0],
                );
                put(name, len, 0)?;
                if checked < 0 {
                    return Err(Fails(-checked as c_int));
                }
            }
        } else {
            return Err(Fails(-read as c_int));
        }
    }
    put(name, len, 0)?;
    Ok(len)
}

/// Sets `buf[at]` (no panic: the shim must not pull in core's unwinding code).
fn put(buf: &mut [u8], at: usize, byte: u8) -> Result<(), Unresolved> {
    *buf.get_mut(at).ok_or(Unresolved::Slow)? = byte;
    Ok(())
}

/// `name[..len]` without its last component (never shorter than `/`).
fn parent(name: &mut [u8; PATH_MAX + 1], len: usize) -> usize {
    let slash =
        name.get(..len).and_then(|prefix| prefix.iter().rposition(|&b| b == b'/')).unwrap_or(0);
    let len = slash.max(1);
    let _ = put(name, len, 0);
    len
}

/// Whether what follows a component (`suffix`, starting at its slash, if any) is only
/// slashes, or slashes then `.` or `..` (then optionally more): then that component must be a
/// directory for the path to resolve, even though nothing after it is looked up by name.
fn dir_needed(suffix: &[u8]) -> bool {
    let mut at = 0;
    while suffix.get(at) == Some(&b'/') {
        while suffix.get(at) == Some(&b'/') {
            at += 1;
        }
        match suffix.get(at) {
            None => return true,
            Some(&b'.') => {}
            Some(_) => return false,
        }
        at += 1;
        match (suffix.get(at), suffix.get(at + 1)) {
            (None, _) | (Some(&b'.'), None | Some(&b'/')) => return true,
            _ => {}
        }
    }
    false
}
