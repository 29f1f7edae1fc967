//! Reads the header zstd-sys's build script installed (its `cargo:include`, seen here as
//! `DEP_ZSTD_INCLUDE`) and generates a constant from it: a `links` chain.

fn main() {
    let include = std::env::var("DEP_ZSTD_INCLUDE").expect("zstd-sys hands down its include dir");
    let header = std::fs::read_to_string(format!("{include}/zstd.h")).expect("zstd.h");
    let major = header
        .lines()
        .find_map(|line| line.strip_prefix("#define ZSTD_VERSION_MAJOR"))
        .expect("ZSTD_VERSION_MAJOR in zstd.h")
        .trim()
        .to_owned();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out.join("zstd_major.rs"), format!("pub const ZSTD_MAJOR: u32 = {major};"))
        .unwrap();
    println!("cargo:rerun-if-changed=build.rs");
}
