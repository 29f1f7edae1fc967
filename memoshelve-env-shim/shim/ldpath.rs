//! The dynamic loader's search of `LD_LIBRARY_PATH`, out of the stops (x86_64, with the fast
//! path).
//!
//! cargo runs build scripts with `LD_LIBRARY_PATH` naming four directories (`target/debug/deps`,
//! `target/debug` and two of the toolchain's), and every process a script starts has ld.so
//! look for each library it needs in each of them and in a dozen `glibc-hwcaps`/`tls`/`x86_64`
//! subdirectories of each: about 90 `openat`s and `stat`s that fail, per process, all before
//! this shim is loaded, all stopping for the watcher (a configure script's 10,000 processes: a
//! million stops). The answers are the same in every process and are all "missing"; only the
//! stops cost.
//!
//! So a process of the run that starts a program with this shim's `exec`/`posix_spawn` hands
//! it the variable under another name of the same length, [`HIDDEN`] for `LD_LIBRARY_PATH`,
//! when it knows the program loads this shim (an ELF whose interpreter is the one the runner
//! measured, not set-id, no file capabilities, `LD_PRELOAD` naming this shim). Then:
//! - ld.so finds no `LD_LIBRARY_PATH` and goes to `RUNPATH`, its cache and the system
//!   directories at once;
//! - this shim's constructor, first thing, renames the variable back in place, so the program
//!   (and `/proc/self/environ`) sees exactly the environment it was given;
//! - then it looks, through the fast path (each path logged), at every place the loader would
//!   have looked in the variable's directories first, for every library the process loaded
//!   (each `DT_NEEDED` of each loaded object, in each subdirectory the runner measured with
//!   `LD_DEBUG=libs`). All missing: the loader would have found what it found, and the run's
//!   record holds every one of those misses, as the stops held them. One there (or anything it
//!   cannot check): the process execs itself again with the environment as given, and the
//!   loader searches as it would have, stops included.
//!
//! Anything this cannot be sure of starts the program as asked: a static or set-id program, a
//! script whose interpreter is one of those, `$ORIGIN`-style tokens or empty entries in the
//! variable, a program whose `LD_PRELOAD` would not load this shim, no runner measurements.

use core::ffi::{CStr, c_char, c_int, c_long, c_ulong, c_void};
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use super::elf::interpreter_at;
use super::files::{
    self, AT_FDCWD, ENOENT, O_CLOEXEC, O_RDONLY, PhdrInfo, SYS_FACCESSAT, SYS_OPENAT,
    SYS_READLINKAT, Stat, dl_iterate_phdr, entry, fast, logged_call,
};

/// What a started program gets in place of `LD_LIBRARY_PATH=`: as long, so that its
/// constructor renames it in place.
const HIDDEN: &[u8] = b"MEMOSHELVE_LDLP=";
const SHOWN: &[u8] = b"LD_LIBRARY_PATH=";
/// The subdirectories the loader searches in each directory, before the directory itself, in
/// its order, `:`-separated (the runner measures them: `SUBDIRS_VAR` in `trace/env.rs`).
const SUBDIRS: &[u8] = b"MEMOSHELVE_LD_SUBDIRS=";
/// The loader they were measured with (a program's `PT_INTERP`).
const INTERP: &[u8] = b"MEMOSHELVE_LD_INTERP=";
const PRELOAD: &[u8] = b"LD_PRELOAD=";
const LOG: &[u8] = b"MEMOSHELVE_ENV_LOG=";

/// The most variables a started program's environment may hold for it to get [`HIDDEN`].
const ENV_MAX: usize = 1024;
/// The longest `LD_LIBRARY_PATH` value handed over under [`HIDDEN`].
const VALUE_MAX: usize = 4096;
const PATH_MAX: usize = 4096;
/// The most libraries a process may need for its constructor to check them.
const NEEDED_MAX: usize = 256;

const SYS_PREAD64: c_long = 17;
const SYS_CLOSE: c_long = 3;
const SYS_FGETXATTR: c_long = 193;
const ENOTDIR: c_long = 20;
const ENODATA: c_long = 61;
const X_OK: c_int = 1;
const AT_EXECFN: c_ulong = 31;
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const PT_DYNAMIC: u32 = 2;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;

unsafe extern "C" {
    static environ: *const *const c_char;
    fn getauxval(kind: c_ulong) -> c_ulong;
}

type Env = *const *const c_char;

/// The environment a program is started with: `env` as given, or a copy with [`HIDDEN`].
struct Handover {
    env: [*const c_char; ENV_MAX + 1],
    value: [u8; HIDDEN.len() + VALUE_MAX + 1],
    found: [u8; PATH_MAX],
}

impl Handover {
    const fn new() -> Handover {
        Handover {
            env: [ptr::null(); ENV_MAX + 1],
            value: [0; HIDDEN.len() + VALUE_MAX + 1],
            found: [0; PATH_MAX],
        }
    }

    /// The environment to start the program `target` finds with (its path, NUL-terminated, as
    /// exec will find it, written into the buffer when it had to be looked for; `None` when
    /// that is not known), given `env`: this one's copy with [`HIDDEN`] where that is safe,
    /// else `env`. The program is looked for only once the environment allows a handover.
    fn env(
        &mut self,
        env: Env,
        target: impl for<'a> FnOnce(&'a mut [u8; PATH_MAX]) -> Option<&'a [u8]>,
    ) -> Env {
        self.hidden(env, target).unwrap_or(env)
    }

    fn hidden(
        &mut self,
        env: Env,
        target: impl for<'a> FnOnce(&'a mut [u8; PATH_MAX]) -> Option<&'a [u8]>,
    ) -> Option<Env> {
        if !fast() || env.is_null() {
            return None;
        }
        let mut library_path = None;
        let (mut preload, mut interp, mut has_subdirs, mut has_log) = (None, None, false, false);
        let mut count = 0;
        loop {
            // SAFETY: a NULL-terminated array of NUL-terminated strings (exec's contract).
            let entry = unsafe { *env.add(count) };
            if entry.is_null() {
                break;
            }
            if count == ENV_MAX {
                return None;
            }
            // SAFETY: as above.
            let bytes = unsafe { CStr::from_ptr(entry) }.to_bytes();
            if let Some(value) = bytes.strip_prefix(SHOWN) {
                // ld.so takes the last, getenv the first: two are left alone.
                if library_path.replace((count, value)).is_some() {
                    return None;
                }
            } else if let Some(value) = bytes.strip_prefix(PRELOAD) {
                if preload.replace(value).is_some() {
                    return None;
                }
            } else if let Some(value) = bytes.strip_prefix(INTERP) {
                interp = Some(value);
            } else if bytes.starts_with(SUBDIRS) {
                has_subdirs = true;
            } else if bytes.starts_with(LOG) {
                has_log = true;
            } else if bytes.starts_with(HIDDEN) {
                return None;
            }
            count += 1;
        }
        let (at, value) = library_path?;
        let plain_dirs = !value.is_empty()
            && value.len() <= VALUE_MAX
            && !value.iter().any(|&byte| byte == b'$' || byte == b';')
            && value.split(|&byte| byte == b':').all(|dir| !dir.is_empty());
        if !plain_dirs || !has_subdirs || !has_log || !preload.is_some_and(loads_this_shim) {
            return None;
        }
        if !runs_with_shim(target(&mut self.found)?, interp?, 0) {
            return None;
        }
        put(self.value.get_mut(..HIDDEN.len())?, HIDDEN)?;
        put(self.value.get_mut(HIDDEN.len()..HIDDEN.len() + value.len())?, value)?;
        *self.value.get_mut(HIDDEN.len() + value.len())? = 0;
        for index in 0..count {
            // SAFETY: `index` is below the array's length, counted above.
            let entry = unsafe { *env.add(index) };
            *self.env.get_mut(index)? =
                if index == at { self.value.as_ptr().cast() } else { entry };
        }
        *self.env.get_mut(count)? = ptr::null();
        Some(self.env.as_ptr())
    }
}

/// Whether `LD_PRELOAD`'s `value` loads this shim and searches for nothing (every entry a
/// path: a bare name is searched for in `LD_LIBRARY_PATH`).
fn loads_this_shim(value: &[u8]) -> bool {
    let Some(own) = own_path() else { return false };
    let mut entries = value.split(|&byte| byte == b' ' || byte == b':').filter(|e| !e.is_empty());
    let mut found = false;
    entries.all(|entry| {
        found |= entry == own;
        entry.iter().any(|&byte| byte == b'/')
    }) && found
}

/// This shim's path as ld.so loaded it (from `LD_PRELOAD`).
fn own_path() -> Option<&'static [u8]> {
    static OWN: AtomicPtr<c_char> = AtomicPtr::new(ptr::null_mut());
    let mut name = OWN.load(Ordering::Relaxed);
    if name.is_null() {
        unsafe extern "C" fn visit(info: *mut PhdrInfo, _: usize, data: *mut c_void) -> c_int {
            // SAFETY: dl_iterate_phdr passes a valid info; `data` is the pointer below.
            let (info, found) = unsafe { (&*info, &mut *data.cast::<*mut c_char>()) };
            if info.holds(own_path as fn() -> Option<&'static [u8]> as usize) {
                *found = info.name.cast_mut();
                return 1;
            }
            0
        }
        // SAFETY: `visit` has the callback's type and writes only `name`.
        unsafe { dl_iterate_phdr(visit, (&raw mut name).cast()) };
        if name.is_null() {
            return None;
        }
        OWN.store(name, Ordering::Relaxed);
    }
    // SAFETY: the loader's name of this object, alive while it is loaded.
    Some(unsafe { CStr::from_ptr(name) }.to_bytes())
}

/// Whether exec'ing `path` (NUL-terminated) runs a program that loads this shim before
/// `main`: an ELF for x86_64 whose interpreter is `interp`, or a `#!` script whose
/// interpreter is one (at most four deep, as the kernel), never set-id or with capabilities.
fn runs_with_shim(path: &[u8], interp: &[u8], depth: usize) -> bool {
    if depth > 4 || path.last() != Some(&0) {
        return false;
    }
    let flags = (O_RDONLY | O_CLOEXEC) as usize;
    let Some(fd) = logged_call(SYS_OPENAT, AT_FDCWD, path.as_ptr().cast(), [flags, 0, 0]) else {
        return false;
    };
    let Ok(fd) = c_int::try_from(fd) else { return false };
    if fd < 0 {
        return false;
    }
    let result = (|| {
        let mode = Stat::of_fd(fd)?.mode();
        if mode & S_IFMT != S_IFREG || mode & (S_ISUID | S_ISGID) != 0 {
            return None;
        }
        let capability = c"security.capability".as_ptr() as usize;
        if entry(SYS_FGETXATTR, [fd as usize, capability, 0, 0, 0]) != -ENODATA {
            return None;
        }
        let mut head = [0u8; 4096];
        let read = entry(SYS_PREAD64, [fd as usize, head.as_mut_ptr() as usize, head.len(), 0, 0]);
        let head = head.get(..usize::try_from(read).ok()?)?;
        if let Some(line) = head.strip_prefix(b"#!") {
            // The kernel reads the interpreter's name up to the first blank or newline.
            let line = line.get(..line.iter().position(|&byte| byte == b'\n')?)?;
            let start = line.iter().position(|&byte| byte != b' ' && byte != b'\t')?;
            let name = line.get(start..)?;
            let end = name.iter().position(|&byte| byte == b' ' || byte == b'\t');
            let name = name.get(..end.unwrap_or(name.len()))?;
            let mut inner = [0u8; 256];
            put(inner.get_mut(..name.len())?, name)?;
            return Some(runs_with_shim(inner.get(..=name.len())?, interp, depth + 1));
        }
        // Its loader's name, with the NUL, is `interp` and its NUL.
        let (offset, size) = interpreter_at(head)?;
        let mut name = [0u8; PATH_MAX];
        let name = name.get_mut(..size).filter(|_| size == interp.len() + 1)?;
        let read = entry(SYS_PREAD64, [fd as usize, name.as_mut_ptr() as usize, size, offset, 0]);
        Some(read == size as c_long && name.get(..interp.len())? == interp)
    })();
    entry(SYS_CLOSE, [fd as usize, 0, 0, 0, 0]);
    result.unwrap_or(false)
}

/// The program `file` names as `execvp` finds it (in `PATH` when it has no `/`), into `buf`,
/// NUL-terminated: the first candidate that is an executable regular file, after candidates
/// whose `execve` would fail in a way glibc's search goes on after (each looked at through
/// the fast path, logged). `None` when not found or when a candidate fails otherwise (glibc
/// would stop there): the call then searches as libc does.
pub(crate) fn search<'a>(file: *const c_char, buf: &'a mut [u8; PATH_MAX]) -> Option<&'a [u8]> {
    if file.is_null() {
        return None;
    }
    // SAFETY: exec's contract: a NUL-terminated name.
    let name = unsafe { CStr::from_ptr(file) }.to_bytes_with_nul();
    if name.len() <= 1 {
        return None;
    }
    if name.iter().any(|&byte| byte == b'/') {
        put(buf.get_mut(..name.len())?, name)?;
        return buf.get(..name.len());
    }
    let real_getenv = super::real(&super::REAL_GETENV, c"getenv", super::scan_environ);
    // SAFETY: a NUL-terminated name.
    let path = unsafe { real_getenv(c"PATH".as_ptr()) };
    let path: &[u8] = if path.is_null() {
        b"/bin:/usr/bin"
    } else {
        // SAFETY: the environment's NUL-terminated value.
        unsafe { CStr::from_ptr(path) }.to_bytes()
    };
    for dir in path.split(|&byte| byte == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let len = dir.len() + 1 + name.len();
        put(buf.get_mut(..dir.len())?, dir)?;
        *buf.get_mut(dir.len())? = b'/';
        put(buf.get_mut(dir.len() + 1..len)?, name)?;
        let candidate = buf.get(..len)?.as_ptr().cast();
        match logged_call(SYS_FACCESSAT, AT_FDCWD, candidate, [X_OK as usize, 0, 0])? {
            0 => {}
            error if SEARCH_GOES_ON.iter().any(|&go_on| error == -go_on) => continue,
            _ => return None,
        }
        if Stat::logged(AT_FDCWD, candidate, 0)?.is_ok_and(|stat| stat.mode() & S_IFMT == S_IFREG) {
            return buf.get(..len);
        }
    }
    None
}

/// The errors of an `execve` after which glibc's `execvp` tries the next directory of `PATH`
/// (`ENOENT`, `ENOTDIR`, `EACCES`, `ESTALE`, `ENODEV`, `ETIMEDOUT`).
const SEARCH_GOES_ON: [c_long; 6] = [2, 20, 13, 116, 19, 110];

/// The calling process's environment.
pub(crate) fn environment() -> Env {
    // SAFETY: libc's `environ`, read once.
    unsafe { environ }
}

/// Whether this process image was started with [`HIDDEN`]: 0 not looked yet, 1 no, 2 yes
/// (renamed back), 3 yes and checked.
static STARTED_HIDDEN: AtomicU8 = AtomicU8::new(0);
/// The value it had (`LD_LIBRARY_PATH`'s, in the environment's own string).
static HIDDEN_VALUE: AtomicPtr<c_char> = AtomicPtr::new(ptr::null_mut());

/// Renames [`HIDDEN`] back to `LD_LIBRARY_PATH` in this process's environment, in place, the
/// first time anything here runs (the constructor, or a `getenv` from another library's
/// constructor before it).
pub(crate) fn restore() {
    if STARTED_HIDDEN.load(Ordering::Acquire) != 0 {
        return;
    }
    let env = environment();
    let mut index = 0;
    while !env.is_null() {
        // SAFETY: the environment: a NULL-terminated array of NUL-terminated strings.
        let entry = unsafe { *env.add(index) };
        if entry.is_null() {
            break;
        }
        // SAFETY: as above.
        let len = unsafe { CStr::from_ptr(entry) }.to_bytes().len();
        // SAFETY: the process's own string (the kernel put it on its stack): writable.
        let bytes = unsafe { core::slice::from_raw_parts_mut(entry.cast_mut().cast::<u8>(), len) };
        if let Some(name) = bytes.get_mut(..HIDDEN.len()).filter(|name| **name == *HIDDEN) {
            let _ = put(name, SHOWN);
            HIDDEN_VALUE.store(entry.wrapping_add(SHOWN.len()).cast_mut(), Ordering::Release);
            STARTED_HIDDEN.store(2, Ordering::Release);
            return;
        }
        index += 1;
    }
    STARTED_HIDDEN.store(1, Ordering::Release);
}

/// The value `LD_LIBRARY_PATH` had when this process image was started with [`HIDDEN`].
fn hidden_value() -> Option<&'static [u8]> {
    let value = HIDDEN_VALUE.load(Ordering::Acquire);
    // SAFETY: a NUL-terminated string of the environment, never freed.
    (!value.is_null()).then(|| unsafe { CStr::from_ptr(value) }.to_bytes())
}

/// The constructor's part: when this image was started with [`HIDDEN`], renames it back and
/// checks that the loader would have found what it found; execs the program again as it was
/// started otherwise (or when that cannot be checked).
pub(crate) fn settle(argv: *const *const c_char) {
    restore();
    if STARTED_HIDDEN.compare_exchange(2, 3, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return;
    }
    let Some(value) = hidden_value() else { return };
    let mut names = Needed { names: [&[]; NEEDED_MAX], count: 0, overflow: false };
    for name in LIBC_LOADS {
        names.add(name);
    }
    // SAFETY: `needed` has the callback's type and writes only `names`.
    unsafe { dl_iterate_phdr(needed, (&raw mut names).cast()) };
    if names.overflow || !nothing_there(value, names.names.get(..names.count).unwrap_or_default()) {
        exec_again(argv);
    }
}

/// Libraries glibc itself may load later by name, searching as for any other (name service
/// modules, `pthread_cancel`'s unwinder, IDN): looked for at start, as the loader would have.
const LIBC_LOADS: [&[u8]; 16] = [
    b"libgcc_s.so.1",
    b"libidn2.so.0",
    b"libnss_files.so.2",
    b"libnss_dns.so.2",
    b"libnss_compat.so.2",
    b"libnss_systemd.so.2",
    b"libnss_myhostname.so.2",
    b"libnss_mymachines.so.2",
    b"libnss_resolve.so.2",
    b"libnss_sss.so.2",
    b"libnss_ldap.so.2",
    b"libnss_nis.so.2",
    b"libnss_mdns4_minimal.so.2",
    b"libnss_mdns.so.2",
    b"libnss_winbind.so.2",
    b"libnss_db.so.2",
];

/// Whether none of the places the loader would have looked at first, for `LD_LIBRARY_PATH`
/// `value`, holds one of `names` (each place looked at through the fast path, logged: the
/// run's record holds them as the stops would have).
fn nothing_there(value: &[u8], names: &[&[u8]]) -> bool {
    matches!(first_there(value, names, &mut [0; PATH_MAX]), There::Nothing)
}

/// What [`first_there`] found.
enum There {
    Nothing,
    /// Something, at the path of this length in the buffer.
    At,
    /// A place could not be logged or looked at.
    Unknown,
}

/// The first place, in the loader's order, where `LD_LIBRARY_PATH` `value` holds one of
/// `names` (its path left in `buf`).
fn first_there(value: &[u8], names: &[&[u8]], buf: &mut [u8; PATH_MAX]) -> There {
    let Some(subdirs) = variable(SUBDIRS) else { return There::Unknown };
    for dir in value.split(|&byte| byte == b':') {
        let subdirs = subdirs.split(|&byte| byte == b':').filter(|sub| !sub.is_empty());
        for sub in subdirs.chain([&b""[..]]) {
            let Some(len) = join(buf, &[dir, sub], 0) else { return There::Unknown };
            match look(buf.get(..=len).unwrap_or_default()) {
                Some(false) => continue,
                Some(true) => {}
                None => return There::Unknown,
            }
            for name in names {
                let Some(full) = join(buf, &[name], len) else { return There::Unknown };
                match look(buf.get(..=full).unwrap_or_default()) {
                    Some(false) => {}
                    Some(true) => return There::At,
                    None => return There::Unknown,
                }
                // Back to the directory for the next name.
                if let Some(end) = buf.get_mut(len) {
                    *end = 0;
                }
            }
        }
    }
    There::Nothing
}

/// Appends `/part` for each of `parts` to the path of length `len` in `buf` (the first part
/// as it is when `len` is 0, an empty part adds nothing), NUL-terminated; the new length.
fn join(buf: &mut [u8; PATH_MAX], parts: &[&[u8]], mut len: usize) -> Option<usize> {
    for (index, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if index > 0 || len > 0 {
            *buf.get_mut(len)? = b'/';
            len += 1;
        }
        put(buf.get_mut(len..len + part.len())?, part)?;
        len += part.len();
    }
    *buf.get_mut(len)? = 0;
    Some(len)
}

/// Logs `path` (NUL-terminated) and `stat`s it from the page: whether something is there
/// (`None`: it could not be logged).
fn look(path: &[u8]) -> Option<bool> {
    match Stat::logged(AT_FDCWD, path.as_ptr().cast(), 0)? {
        Err(error) if error == -c_long::from(ENOENT) || error == -ENOTDIR => Some(false),
        _ => Some(true),
    }
}

/// The names of the libraries the loaded objects need (`DT_NEEDED`), as the loader searched
/// for them (a name with a `/` is a path: not searched).
struct Needed {
    names: [&'static [u8]; NEEDED_MAX],
    count: usize,
    overflow: bool,
}

impl Needed {
    fn add(&mut self, name: &'static [u8]) {
        if name.is_empty()
            || name.iter().any(|&byte| byte == b'/')
            || self.names.get(..self.count).unwrap_or_default().contains(&name)
        {
            return;
        }
        match self.names.get_mut(self.count) {
            Some(slot) => {
                *slot = name;
                self.count += 1;
            }
            None => self.overflow = true,
        }
    }
}

unsafe extern "C" fn needed(info: *mut PhdrInfo, _: usize, data: *mut c_void) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid info; `data` is the `Needed` of `settle`.
    let (info, names) = unsafe { (&*info, &mut *data.cast::<Needed>()) };
    let Some(dynamic) = info.headers().iter().find(|header| header.kind == PT_DYNAMIC) else {
        return 0;
    };
    let entries = info.address.wrapping_add(dynamic.virtual_address as usize) as *const [u64; 2];
    let mut strings = 0;
    let mut index = 0;
    // SAFETY: the object's dynamic section, ended by DT_NULL.
    while let [tag, value] = unsafe { *entries.add(index) }
        && tag != 0
    {
        if tag == DT_STRTAB {
            strings = value as usize;
        }
        index += 1;
    }
    // The loader relocates the table's address in place, except in the vDSO's.
    if strings < info.address {
        strings = strings.wrapping_add(info.address);
    }
    index = 0;
    // SAFETY: as above.
    while let [tag, value] = unsafe { *entries.add(index) }
        && tag != 0
    {
        index += 1;
        if tag != DT_NEEDED || strings == 0 {
            continue;
        }
        // SAFETY: a DT_NEEDED value is an offset into the string table.
        names
            .add(unsafe { CStr::from_ptr((strings + value as usize) as *const c_char) }.to_bytes());
    }
    // An object loaded by name (`dlopen` in another library's constructor) is found as
    // `<dir>/<name>`.
    if !info.name.is_null() {
        // SAFETY: the loader's NUL-terminated name of the object.
        let path = unsafe { CStr::from_ptr(info.name) }.to_bytes();
        if let Some(slash) = path.iter().rposition(|&byte| byte == b'/') {
            names.add(path.get(slash + 1..).unwrap_or_default());
        }
    }
    0
}

/// The value of the variable `prefix` (`NAME=`) in this process's environment.
fn variable(prefix: &[u8]) -> Option<&'static [u8]> {
    let env = environment();
    let mut index = 0;
    loop {
        // SAFETY: the environment: a NULL-terminated array of NUL-terminated strings.
        let entry = unsafe { env.as_ref().map(|_| *env.add(index)) }?;
        if entry.is_null() {
            return None;
        }
        // SAFETY: as above.
        let bytes = unsafe { CStr::from_ptr(entry) }.to_bytes();
        if let Some(value) = bytes.strip_prefix(prefix) {
            return Some(value);
        }
        index += 1;
    }
}

/// Execs this process's program again with `argv` and the environment as given (restored):
/// the path it was started by (`AT_EXECFN`), or for a script its interpreter's.
fn exec_again(argv: *const *const c_char) {
    // SAFETY: getauxval is always safe to call; AT_EXECFN is a NUL-terminated string or 0.
    let started = unsafe { getauxval(AT_EXECFN) } as *const c_char;
    let mut image = [0u8; PATH_MAX];
    let len = entry(
        SYS_READLINKAT,
        [
            AT_FDCWD as usize,
            c"/proc/self/exe".as_ptr() as usize,
            image.as_mut_ptr() as usize,
            PATH_MAX - 1,
            0,
        ],
    );
    let path = match usize::try_from(len) {
        // The file started is the image unless it is a script (its interpreter runs).
        Ok(len) if len > 0 && len < PATH_MAX => {
            if !started.is_null() && same_file(started, image.as_ptr().cast()) {
                started
            } else {
                image.as_ptr().cast()
            }
        }
        _ => started,
    };
    if !path.is_null() && !argv.is_null() {
        static SLOT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
        // SAFETY: libc's execve, with the program's own arguments and environment.
        unsafe { libc::<Execve>(&SLOT, c"execve")(path, argv, environment()) };
    }
    // Could not exec: the run's record must not be kept (the process may differ from plain).
    super::log_unrecordable();
}

/// Whether the two paths name the same file (device and inode).
fn same_file(a: *const c_char, b: *const c_char) -> bool {
    let identity = |path| Some(Stat::logged(AT_FDCWD, path, 0)?.ok()?.identity());
    matches!((identity(a), identity(b)), (Some(x), Some(y)) if x == y)
}

/// libc's function `name` (the next definition after this shim), of type `F`.
fn libc<F: Copy>(slot: &AtomicPtr<c_void>, name: &CStr) -> F {
    let address = files::next(slot, name);
    // SAFETY: `address` is the function of that name, whose type the caller gives as `F` (a
    // function pointer, the size of a pointer).
    unsafe { core::mem::transmute_copy::<*mut c_void, F>(&address) }
}

/// `path` with its NUL, when it is one.
fn with_nul<'a>(path: *const c_char) -> Option<&'a [u8]> {
    // SAFETY: exec's contract: a NUL-terminated path (or null).
    (!path.is_null()).then(|| unsafe { CStr::from_ptr(path) }.to_bytes_with_nul())
}

type Execve = unsafe extern "C" fn(*const c_char, Env, Env) -> c_int;
type Spawn = unsafe extern "C" fn(
    *mut c_int,
    *const c_char,
    *const c_void,
    *const c_void,
    Env,
    Env,
) -> c_int;

/// The one way the interposers below start a program: with the environment [`Handover`] makes
/// of `env` for the program `target` finds.
fn start(
    env: Env,
    target: impl for<'a> FnOnce(&'a mut [u8; PATH_MAX]) -> Option<&'a [u8]>,
    call: impl FnOnce(Env) -> c_int,
) -> c_int {
    restore();
    let mut handover = Handover::new();
    call(handover.env(env, target))
}

/// The program `posix_spawn` or `posix_spawnp` (`search`) starts, when its file actions cannot
/// change where a relative path is found from.
fn spawned(
    file: *const c_char,
    actions: *const c_void,
    search_path: bool,
) -> impl for<'a> FnOnce(&'a mut [u8; PATH_MAX]) -> Option<&'a [u8]> {
    move |buf: &mut [u8; PATH_MAX]| {
        let found = if search_path { search(file, buf) } else { with_nul(file) };
        found.filter(|path| actions.is_null() || path.first() == Some(&b'/'))
    }
}

/// # Safety
///
/// As libc's `execve`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execve(path: *const c_char, argv: Env, envp: Env) -> c_int {
    static SLOT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
    // A path that is not there fails as the call would (a shell trying each directory of
    // `PATH`), looked at through the fast path instead of stopping.
    if fast()
        && let Some(Err(error)) = Stat::logged(AT_FDCWD, path, 0)
        && (error == -c_long::from(ENOENT) || error == -ENOTDIR)
    {
        files::set_errno(-error as c_int);
        return -1;
    }
    // SAFETY: the caller's arguments, and an environment as valid as theirs.
    start(
        envp,
        |_| with_nul(path),
        |env| unsafe { libc::<Execve>(&SLOT, c"execve")(path, argv, env) },
    )
}

/// # Safety
///
/// As libc's `execv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execv(path: *const c_char, argv: Env) -> c_int {
    // SAFETY: as the caller's.
    unsafe { execve(path, argv, environment()) }
}

/// # Safety
///
/// As libc's `execvpe`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execvpe(file: *const c_char, argv: Env, envp: Env) -> c_int {
    static SLOT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
    // The program glibc's search would reach, exec'd at once: the attempts before it, which
    // would fail and stop, are looked at through the fast path. It returns only on failure
    // (`ENOEXEC`: glibc runs it with `sh`; `EACCES`: glibc goes on): then libc's search.
    let mut found = [0u8; PATH_MAX];
    if fast()
        && let Some(program) = search(file, &mut found)
    {
        // SAFETY: a NUL-terminated path, the caller's arguments and environment.
        unsafe { execve(program.as_ptr().cast(), argv, envp) };
    }
    // SAFETY: the caller's arguments, and an environment as valid as theirs.
    start(
        envp,
        |buf| search(file, buf),
        |env| unsafe { libc::<Execve>(&SLOT, c"execvpe")(file, argv, env) },
    )
}

/// # Safety
///
/// As libc's `execvp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: Env) -> c_int {
    // SAFETY: as the caller's.
    unsafe { execvpe(file, argv, environment()) }
}

/// # Safety
///
/// As libc's `posix_spawn`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut c_int,
    path: *const c_char,
    actions: *const c_void,
    attributes: *const c_void,
    argv: Env,
    envp: Env,
) -> c_int {
    static SLOT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
    start(envp, spawned(path, actions, false), |env| {
        // SAFETY: the caller's arguments, and an environment as valid as theirs.
        unsafe { libc::<Spawn>(&SLOT, c"posix_spawn")(pid, path, actions, attributes, argv, env) }
    })
}

/// # Safety
///
/// As libc's `posix_spawnp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut c_int,
    file: *const c_char,
    actions: *const c_void,
    attributes: *const c_void,
    argv: Env,
    envp: Env,
) -> c_int {
    static SLOT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
    // As `execvpe`: the program glibc's search would reach, started at once; on failure (the
    // failed child is gone), libc's search.
    let mut found = [0u8; PATH_MAX];
    if let Some(program) = spawned(file, actions, true)(&mut found)
        // SAFETY: a NUL-terminated path, the caller's arguments and environment.
        && unsafe { posix_spawn(pid, program.as_ptr().cast(), actions, attributes, argv, envp) } == 0
    {
        return 0;
    }
    start(envp, spawned(file, actions, true), |env| {
        // SAFETY: the caller's arguments, and an environment as valid as theirs.
        unsafe { libc::<Spawn>(&SLOT, c"posix_spawnp")(pid, file, actions, attributes, argv, env) }
    })
}

/// # Safety
///
/// As libc's `dlopen`. In a process started with [`HIDDEN`], the loader no longer knows
/// `LD_LIBRARY_PATH`: a library found there first is opened by its path, as the loader would
/// have found it (and the run is not recorded: a `DT_RPATH` of the caller would have come
/// first, which is not followed here).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlopen(name: *const c_char, flags: c_int) -> *mut c_void {
    static SLOT: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
    let real = libc::<unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void>(&SLOT, c"dlopen");
    let hidden = hidden_value();
    let bare = with_nul(name)
        .and_then(|name| name.strip_suffix(b"\0"))
        .filter(|name| !name.is_empty() && !name.iter().any(|&byte| byte == b'/'));
    if let (Some(value), Some(bare)) = (hidden, bare) {
        let mut buf = [0u8; PATH_MAX];
        match first_there(value, &[bare], &mut buf) {
            There::Nothing => {}
            There::At => {
                super::log_unrecordable();
                // SAFETY: a NUL-terminated path and the caller's flags.
                return unsafe { real(buf.as_ptr().cast(), flags) };
            }
            There::Unknown => super::log_unrecordable(),
        }
    }
    // SAFETY: the caller's arguments.
    unsafe { real(name, flags) }
}

/// Copies `from` into `to`, of the same length (without `copy_from_slice`'s panic: the shim
/// must not link unwinding).
fn put(to: &mut [u8], from: &[u8]) -> Option<()> {
    if to.len() != from.len() {
        return None;
    }
    for (to, from) in to.iter_mut().zip(from) {
        *to = *from;
    }
    Some(())
}
