//! CRC-32 with a table generated (and memoized) by the build script.

include!(concat!(env!("OUT_DIR"), "/crc32_table.rs"));

/// The CRC-32 (IEEE) checksum of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &byte| {
        CRC32_TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_checksum() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
    }
}
