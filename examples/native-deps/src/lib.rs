//! Links four vendored C libraries; the tests call each.

include!(concat!(env!("OUT_DIR"), "/zstd_major.rs"));

/// SQLite's version number, from the bundled library.
pub fn sqlite_version() -> i32 {
    unsafe { libsqlite3_sys::sqlite3_libversion_number() }
}

/// zstd's version number, from the vendored library.
pub fn zstd_version() -> u32 {
    unsafe { zstd_sys::ZSTD_versionNumber() }
}

/// lz4's version number, from the vendored library.
pub fn lz4_version() -> i32 {
    unsafe { lz4_sys::LZ4_versionNumber() }
}

/// libgit2's version, from the vendored library.
pub fn libgit2_version() -> (i32, i32, i32) {
    let (mut major, mut minor, mut patch) = (0, 0, 0);
    unsafe { libgit2_sys::git_libgit2_version(&mut major, &mut minor, &mut patch) };
    (major, minor, patch)
}

#[cfg(test)]
mod tests {
    #[test]
    fn links_all_four() {
        assert!(super::sqlite_version() >= 3_000_000);
        assert_eq!(super::zstd_version() / 10_000, super::ZSTD_MAJOR);
        assert!(super::lz4_version() >= 10_000);
        assert!(super::libgit2_version() >= (1, 0, 0));
    }
}
