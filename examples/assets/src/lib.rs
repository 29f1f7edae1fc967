//! Text assets compressed at build time (and memoized per file) by the build script.

use std::io::Read as _;

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The decompressed contents of an asset, by file name.
pub fn asset(name: &str) -> Option<Vec<u8>> {
    let (_, compressed) = ASSETS.iter().find(|(asset, _)| *asset == name)?;
    let mut bytes = Vec::new();
    flate2::read::DeflateDecoder::new(*compressed).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_asset_decompresses_to_its_source() {
        assert_eq!(super::ASSETS.len(), 24);
        for (name, compressed) in super::ASSETS {
            let source =
                std::fs::read(format!("{}/assets/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            assert!(compressed.len() < source.len(), "{name} did not shrink");
            assert_eq!(super::asset(name).unwrap(), source, "{name}");
        }
    }
}
