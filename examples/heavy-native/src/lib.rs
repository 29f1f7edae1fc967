//! Links eight vendored C libraries; the test calls each (bzip2: a compressor set up and torn down).

/// The version numbers the eight libraries report, by name.
pub fn versions() -> Vec<(&'static str, String)> {
    // SAFETY: each is a version query with no arguments (libgit2's writes three integers).
    unsafe {
        let (mut major, mut minor, mut patch) = (0, 0, 0);
        libgit2_sys::git_libgit2_version(&mut major, &mut minor, &mut patch);
        let zlib = std::ffi::CStr::from_ptr(libz_sys::zlibVersion());
        // bzip2-sys binds no version query: a compressor set up and torn down.
        let mut stream: bzip2_sys::bz_stream = std::mem::zeroed();
        let bzip2 = match bzip2_sys::BZ2_bzCompressInit(&mut stream, 9, 0, 0) {
            bzip2_sys::BZ_OK => bzip2_sys::BZ2_bzCompressEnd(&mut stream).to_string(),
            code => format!("init failed: {code}"),
        };
        let mut jemalloc: *const std::ffi::c_char = std::ptr::null();
        let mut size = std::mem::size_of_val(&jemalloc);
        tikv_jemalloc_sys::mallctl(
            c"version".as_ptr(),
            (&raw mut jemalloc).cast(),
            &mut size,
            std::ptr::null_mut(),
            0,
        );
        vec![
            ("openssl", format!("{:x}", openssl_sys::OpenSSL_version_num())),
            ("jemalloc", std::ffi::CStr::from_ptr(jemalloc).to_string_lossy().into_owned()),
            ("libgit2", format!("{major}.{minor}.{patch}")),
            ("sqlite", libsqlite3_sys::sqlite3_libversion_number().to_string()),
            ("zstd", zstd_sys::ZSTD_versionNumber().to_string()),
            ("lz4", lz4_sys::LZ4_versionNumber().to_string()),
            ("bzip2", bzip2),
            ("zlib", zlib.to_string_lossy().into_owned()),
        ]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn links_all_eight() {
        let versions = super::versions();
        assert_eq!(versions.len(), 8);
        for (name, version) in &versions[..6] {
            assert!(!version.is_empty() && version != "0", "{name}: {version}");
        }
        assert_eq!(versions[6], ("bzip2", "0".to_owned()), "BZ_OK from BZ2_bzCompressEnd");
        assert!(versions[7].1.starts_with('1'), "zlib {}", versions[7].1);
    }
}
