//! Generates Rust types from `proto/*.proto` with prost-build, memoized with `Memo::outputs`.
//!
//! After `cargo clean`, in a fresh worktree or on a CI runner with a restored cache, the
//! generated files come back from the cache instead of running protoc and prost's codegen.

use std::path::PathBuf;

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let protoc = std::env::var_os("PROTOC").map(PathBuf::from).unwrap_or_else(|| {
        protoc_bin_vendored::protoc_bin_path()
            .expect("protoc-bin-vendored has a protoc for this platform")
    });
    let memo = memoshelve_build::Memo::new("protos-prost")
        .input_glob("proto/**/*.proto") // the schemas: any edit, new or removed file is a miss
        .env("PROTOC") // another protoc is another result
        .tool_version(protoc.to_string_lossy(), &["--version"])
        .profile_independent(); // debug, release and `cargo check` share the generated code
    memo.outputs(&out_dir).call(&["shop.proto"], |step| {
        // Lets the end-to-end tests see whether the generator really ran.
        if let Some(marker) = std::env::var_os("MEMOSHELVE_EXAMPLE_MARKER") {
            let mut runs = std::fs::read_to_string(&marker).unwrap_or_default();
            runs.push_str("protos\n");
            std::fs::write(&marker, runs).expect("write the marker file");
        }
        prost_build::Config::new()
            .protoc_executable(&protoc)
            .out_dir(step.dir())
            .compile_protos(&["proto/shop.proto"], &["proto"])
            .unwrap_or_else(|err| panic!("prost-build failed: {err}"));
    });
}
