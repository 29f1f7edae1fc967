//! Compresses every file in `assets/` at build time, in parallel, each file its own cache entry.
//!
//! `Memo::par_map` memoizes each item under its own key: the file's name and the blake3 of its
//! contents. Editing one asset recompresses that one; the others come from the cache.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

fn compress(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("compressing into memory cannot fail");
    encoder.finish().expect("compressing into memory cannot fail")
}

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let assets_dir = Path::new("assets");
    // New, removed or edited assets rerun this script; each file's content is in its own key.
    println!("cargo:rerun-if-changed=assets");
    let mut assets: Vec<(String, String)> = std::fs::read_dir(assets_dir)
        .expect("read assets/")
        .map(|entry| {
            let entry = entry.expect("list assets/");
            let name = entry.file_name().into_string().expect("asset names are UTF-8");
            let hash = blake3::hash(&std::fs::read(entry.path()).expect("read an asset"))
                .to_hex()
                .to_string();
            (name, hash)
        })
        .collect();
    assets.sort();

    let memo = memoshelve_build::Memo::new("assets-deflate")
        .target_independent()
        .profile_independent()
        .features_independent();
    let compressed: Vec<Vec<u8>> = memo.par_map(assets.clone(), |(name, _content_hash)| {
        // Lets the end-to-end tests count which files were really compressed.
        if let Some(marker) = std::env::var_os("MEMOSHELVE_EXAMPLE_MARKER") {
            let mut file =
                std::fs::OpenOptions::new().create(true).append(true).open(marker).expect("marker");
            writeln!(file, "assets {name}").expect("write the marker");
        }
        compress(&std::fs::read(assets_dir.join(name)).expect("read an asset"))
    });

    let mut index =
        String::from("/// Every asset: its file name and its deflate-compressed bytes.\n");
    index.push_str("pub static ASSETS: &[(&str, &[u8])] = &[\n");
    for ((name, _), bytes) in assets.iter().zip(&compressed) {
        let file = format!("{name}.deflate");
        std::fs::write(out_dir.join(&file), bytes).expect("write a compressed asset");
        writeln!(index, "    ({name:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{file}\"))),")
            .expect("String");
    }
    index.push_str("];\n");
    std::fs::write(out_dir.join("assets.rs"), index).expect("write assets.rs");
}
