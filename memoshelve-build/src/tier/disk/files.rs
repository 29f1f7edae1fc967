//! Filesystem helpers of the disk tier, shared with the file steps and the event log.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Opens `path` with `options`, making its directory only when the open says it is absent: it
/// nearly always exists, and making it first is a system call or two on every open.
pub(crate) fn open_in_dir(options: &fs::OpenOptions, path: &Path) -> std::io::Result<fs::File> {
    match options.open(path) {
        Err(err) if err.kind() == ErrorKind::NotFound => {
            path.parent().map_or(Ok(()), fs::create_dir_all)?;
            options.open(path)
        }
        opened => opened,
    }
}

/// Renames `from` to `to`, making `to`'s directory only when the rename says it is absent.
pub(crate) fn rename_in_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    match fs::rename(from, to) {
        Err(err) if err.kind() == ErrorKind::NotFound && from.exists() => {
            to.parent().map_or(Ok(()), fs::create_dir_all)?;
            fs::rename(from, to)
        }
        renamed => renamed,
    }
}

/// The permission bits of a file (0o644 where there are none to read).
pub(crate) fn mode_of(meta: &fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777
    }
    #[cfg(not(unix))]
    {
        if meta.permissions().readonly() { 0o444 } else { 0o644 }
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let mut perms = fs::metadata(path)?.permissions();
        perms.set_readonly(mode & 0o222 == 0);
        fs::set_permissions(path, perms)
    }
}

/// The files under `path`, by directory entry types: no stat per file where the filesystem
/// reports types. Parts that cannot be read are skipped.
pub(crate) fn paths_under(path: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![path.to_owned()];
    while let Some(path) = pending.pop() {
        let Ok(listing) = fs::read_dir(&path) else {
            if path.is_file() {
                files.push(path);
            }
            continue;
        };
        for item in listing.flatten() {
            match item.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(item.path()),
                Ok(kind) if kind.is_file() => files.push(item.path()),
                // A symlink or an unknown type: followed.
                _ if item.path().is_dir() => pending.push(item.path()),
                _ => files.push(item.path()),
            }
        }
    }
    files
}

/// Every file under `dir`, recursively, with its metadata. Parts that cannot be read are
/// skipped: the callers (listings, garbage collection) then leave them alone.
#[cfg(feature = "maintenance")]
pub(crate) fn files_under(dir: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(listing) = fs::read_dir(&dir) else { continue };
        for item in listing.flatten() {
            let Ok(meta) = item.metadata() else { continue };
            if meta.is_dir() {
                pending.push(item.path());
            } else {
                files.push((item.path(), meta));
            }
        }
    }
    files
}

/// The rest of a small file, read until `read` says it is done: unlike `read_to_end`, no fstat
/// and lseek first to size the buffer (two of a disk hit's dozen system calls). With `size`
/// (the caller's fstat), it stops once it has that many bytes, sparing the read that returns
/// nothing; a file that grew since is read on to its end.
pub(crate) fn read_small(file: &mut fs::File, size: Option<u64>) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = vec![0; size.map_or(2048, |size| size as usize + 1).max(2048)];
    let mut len = 0;
    loop {
        if len == bytes.len() {
            // Not `resize`: at opt-level 0 its zeroing is a byte loop (~70k instructions for
            // 2 KiB); a zeroed allocation and a copy are libc's memset and memcpy.
            let mut bigger = vec![0; 2 * len];
            bigger[..len].copy_from_slice(&bytes);
            bytes = bigger;
        }
        match file.read(&mut bytes[len..]) {
            Ok(0) => break,
            Ok(read) => len += read,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
        if size == Some(len as u64) {
            break;
        }
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// What is wrong when `path` cannot be created because it, or a directory above it, is a
/// symbolic link to nothing (`mkdir` then says only "File exists").
pub(crate) fn dangling_link(path: &Path) -> Option<std::io::Error> {
    let link = path.ancestors().find(|dir| {
        fs::symlink_metadata(dir).is_ok_and(|meta| meta.is_symlink()) && fs::metadata(dir).is_err()
    })?;
    let target = fs::read_link(link).ok()?;
    Some(std::io::Error::new(
        ErrorKind::NotFound,
        format!(
            "{} is a symbolic link to {}, which does not exist (create {1}, or remove the link)",
            link.display(),
            target.display()
        ),
    ))
}

/// A fresh, short name for a temporary file beside a restored one (`.ms.<pid>.<n>.<ns>.tmp`).
pub(crate) fn short_temp_name() -> String {
    unique_name(".ms")
}

/// `<stem>.<pid>.<counter>.<ns>.tmp`: unique among the processes and threads writing at once.
pub(crate) fn unique_name(stem: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.subsec_nanos());
    format!("{stem}.{}.{}.{nanos}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The process that made a [`unique_name`], read back from it (the stem may hold dots).
pub(crate) fn writer_of(name: &str) -> Option<u32> {
    let mut parts = name.strip_suffix(".tmp")?.rsplitn(4, '.');
    let (nanos, counter, pid) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next()?;
    nanos.parse::<u32>().ok()?;
    counter.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Whether the process `pid` is known to have ended. On Linux: `/proc/<pid>` is absent while
/// `/proc` is mounted. That is also what a live process of another PID namespace (a container
/// sharing the cache root) or one hidden by `hidepid` looks like, so callers must not rely on
/// it alone. Elsewhere it is never known (`kill(pid, 0)` would need libc): `false`.
pub(crate) fn process_ended(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let absent = |path: &str| {
            fs::symlink_metadata(path).is_err_and(|err| err.kind() == ErrorKind::NotFound)
        };
        !absent("/proc/self") && absent(&format!("/proc/{pid}"))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        false
    }
}

/// The error numbers [`reflink`] takes for "cannot clone here" (Linux's, the same on every
/// architecture it clones on).
#[cfg(target_os = "linux")]
mod libc_errno {
    pub(super) const EXDEV: i32 = 18;
    pub(super) const EINVAL: i32 = 22;
    pub(super) const ENOTTY: i32 = 25;
    pub(super) const EOPNOTSUPP: i32 = 95;
}

/// Makes `to` a copy-on-write clone of `from` (a new file) where the filesystem can (Btrfs, XFS,
/// bcachefs, APFS...): no data is copied. `false` when it cannot; nothing is left behind then.
/// A direct system call, not a crate: the one a crate would make.
pub(crate) fn reflink(from: &Path, to: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        /// `FICLONE`, `_IOW(0x94, 9, int)` in the generic ioctl encoding of these
        /// architectures (powerpc, mips and sparc encode it otherwise: they copy).
        const FICLONE: std::ffi::c_ulong = 0x4004_9409;
        const GENERIC_IOCTL: bool = cfg!(any(
            target_arch = "x86_64",
            target_arch = "x86",
            target_arch = "aarch64",
            target_arch = "arm",
            target_arch = "riscv64",
            target_arch = "loongarch64"
        ));
        unsafe extern "C" {
            fn ioctl(fd: std::ffi::c_int, request: std::ffi::c_ulong, ...) -> std::ffi::c_int;
        }
        use std::os::unix::fs::MetadataExt as _;
        /// The `(source, target)` devices between which a clone was refused as unsupported
        /// (ext4, tmpfs, two filesystems): not tried again in this process, since each try
        /// creates and removes a file, which costs as much as the copy of a small one.
        static REFUSED: std::sync::Mutex<Vec<(u64, u64)>> = std::sync::Mutex::new(Vec::new());
        if !GENERIC_IOCTL {
            return false;
        }
        let devices = fs::metadata(from)
            .ok()
            .zip(to.parent().and_then(|dir| fs::metadata(dir).ok()))
            .map(|(from, dir)| (from.dev(), dir.dev()));
        let refused = || REFUSED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if devices.is_some_and(|devices| refused().contains(&devices)) {
            return false;
        }
        let Ok(source) = fs::File::open(from) else { return false };
        let Ok(target) = fs::File::options().write(true).create_new(true).open(to) else {
            return false;
        };
        // SAFETY: both descriptors are open for the duration of the call, and FICLONE reads
        // nothing but its integer argument.
        let cloned = unsafe { ioctl(target.as_raw_fd(), FICLONE, source.as_raw_fd()) } == 0;
        if !cloned {
            let unsupported = std::io::Error::last_os_error().raw_os_error().is_some_and(|code| {
                [libc_errno::EOPNOTSUPP, libc_errno::EXDEV, libc_errno::EINVAL, libc_errno::ENOTTY]
                    .contains(&code)
            });
            if let (true, Some(devices)) = (unsupported, devices) {
                refused().push(devices);
            }
            drop(target);
            let _ = fs::remove_file(to);
        }
        cloned
    }
    #[cfg(target_os = "macos")]
    {
        use std::os::unix::ffi::OsStrExt as _;
        unsafe extern "C" {
            fn clonefile(
                src: *const std::ffi::c_char,
                dst: *const std::ffi::c_char,
                flags: u32,
            ) -> std::ffi::c_int;
        }
        let (Ok(from), Ok(to)) = (
            std::ffi::CString::new(from.as_os_str().as_bytes()),
            std::ffi::CString::new(to.as_os_str().as_bytes()),
        ) else {
            return false;
        };
        // SAFETY: both are NUL-terminated paths that live through the call.
        unsafe { clonefile(from.as_ptr(), to.as_ptr(), 0) == 0 }
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        let _ = (from, to);
        false
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_temporary_name_tells_its_writer() {
        use super::{short_temp_name, unique_name, writer_of};
        let pid = std::process::id();
        assert_eq!(writer_of(&unique_name("record")), Some(pid));
        assert_eq!(writer_of(&unique_name(&"ab".repeat(32))), Some(pid));
        assert_eq!(writer_of(&short_temp_name()), Some(pid));
        assert_eq!(writer_of("a.b.12.3.4.tmp"), Some(12), "a stem with dots");
        for other in ["events-12.log", "12.3.4.tmp", "x.12.3.tmp", "x.12.3.4", "x.y.3.4.tmp"] {
            assert_eq!(writer_of(other), None, "{other}");
        }
    }

    /// A small file is read whole: with its size from an fstat (stopping there), with a size that
    /// is out of date because the file grew (read on to the end), and without one.
    #[test]
    fn small_files_are_read_whole_with_or_without_their_size() {
        use super::read_small;
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 600, 2047, 2048, 2049, 4095, 4096, 4097, 10_000, 40_000] {
            let bytes: Vec<u8> = (0..len).map(|index| (index % 251) as u8).collect();
            let path = dir.path().join(format!("{len}.bin"));
            std::fs::write(&path, &bytes).unwrap();
            let open = || std::fs::File::open(&path).unwrap();
            assert!(read_small(&mut open(), Some(len as u64)).unwrap() == bytes, "{len}, sized");
            assert!(read_small(&mut open(), None).unwrap() == bytes, "{len}, unsized");
            let stale = len.saturating_sub(100) as u64;
            assert!(read_small(&mut open(), Some(stale)).unwrap() == bytes, "{len}, grown");
        }
    }
}
