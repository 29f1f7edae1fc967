//! Key derivation: stable, documented, and sensitive to every part.

use memoshelve_build::{KEY_FORMAT_TAG, Memo};

/// The recipe of the crate docs, written out independently of the library.
fn documented_recipe(name: &str, version: &str, type_name: &str, args: &[u8]) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in
        [KEY_FORMAT_TAG.as_bytes(), name.as_bytes(), version.as_bytes(), type_name.as_bytes(), args]
    {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().to_hex().to_string()
}

#[test]
fn pinned_key_for_known_input() {
    // If this fails, the key format changed: every user's cache is invalidated. Bump
    // KEY_FORMAT_TAG deliberately, note it in the changelog, then update the pin.
    let memo = Memo::new("pinned").version("1");
    let key = memo.key_for::<u32, _>(&(7u32, "seven")).unwrap();
    assert_eq!(key.to_hex(), "5dfd1b1a1555dda74a52eaadffca127da3f3f66ed5382ca003a714fb01d09454");
    assert_eq!(key.short(), &key.to_hex()[..12]);
}

#[test]
fn key_follows_the_documented_recipe() {
    let args = postcard::to_allocvec(&(7u32, "seven")).unwrap();
    let memo = Memo::new("pinned").version("1");
    assert_eq!(
        memo.key_for::<u32, _>(&(7u32, "seven")).unwrap().to_hex(),
        documented_recipe("pinned", "1", std::any::type_name::<u32>(), &args)
    );
}

#[test]
fn every_part_changes_the_key() {
    let base = Memo::new("parts").version("1");
    let key = base.key_for::<u32, _>(&(1u8, "a")).unwrap();
    assert_eq!(key, Memo::new("parts").version("1").key_for::<u32, _>(&(1u8, "a")).unwrap());
    assert_ne!(key, Memo::new("parts").version("2").key_for::<u32, _>(&(1u8, "a")).unwrap());
    assert_ne!(key, Memo::new("parts2").version("1").key_for::<u32, _>(&(1u8, "a")).unwrap());
    assert_ne!(key, base.key_for::<u64, _>(&(1u8, "a")).unwrap());
    assert_ne!(key, base.key_for::<u32, _>(&(2u8, "a")).unwrap());
    assert_ne!(key, base.key_for::<u32, _>(&(1u8, "b")).unwrap());
    // Length prefixes keep part boundaries apart: ("ab", "") is not ("a", "b").
    assert_ne!(
        Memo::new("ab").key_for::<u32, _>(&()).unwrap(),
        Memo::new("a").version("b").key_for::<u32, _>(&()).unwrap()
    );
}

#[test]
fn key_hex_round_trips() {
    let key = Memo::new("hex").key_for::<u32, _>(&1).unwrap();
    assert_eq!(memoshelve_build::Key::from_hex(&key.to_hex()), Some(key));
    assert_eq!(memoshelve_build::Key::from_hex("not hex"), None);
}
