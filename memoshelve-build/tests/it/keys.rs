//! Key derivation: stable, documented, and sensitive to every part.

use memoshelve_build::{KEY_FORMAT_TAG, Memo};

/// LEB128, written out independently of the library.
fn varint(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value % 128) as u8;
        value /= 128;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte + 128);
    }
}

/// The recipe of the crate docs, written out independently of the library.
fn documented_recipe(name: &str, version: &str, type_name: &str, args: &[u8]) -> String {
    let mut prefix = blake3::Hasher::new();
    for part in [KEY_FORMAT_TAG, name, version, type_name] {
        prefix.update(&varint(part.len()));
        prefix.update(part.as_bytes());
    }
    // No declared inputs outside a build script.
    prefix.update(&varint(0));
    let prefix = prefix.finalize();
    blake3::keyed_hash(prefix.as_bytes(), args).to_hex().to_string()
}

#[test]
fn pinned_key_for_known_input() {
    // If this fails, the key format changed: every user's cache is invalidated. Bump
    // KEY_FORMAT_TAG deliberately, note it in the changelog, then update the pin.
    let memo = Memo::new("pinned").version("1");
    let key = memo.key_for::<u32, _>(&(7u32, "seven")).unwrap();
    assert_eq!(key.to_hex(), "6092abba8c0262d697b188890d02043e6417abbb9d09a7be1c083aa44b0941a0");
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
fn declared_inputs_join_the_key_as_the_recipe_frames_them() {
    // Each input's kind, name and value, length-prefixed, in `key_inputs` order; a name of
    // over 127 bytes takes a two-byte length.
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join(format!("{}.txt", "n".repeat(150)));
    let short = dir.path().join("a.txt");
    std::fs::write(&long, "long").unwrap();
    std::fs::write(&short, "short").unwrap();
    let memo = Memo::new("recipe")
        .version("2")
        .input_files([&long, &short])
        .env("MEMOSHELVE_KEYS_TEST_UNSET_VARIABLE");
    let inputs = memo.key_inputs();
    assert_eq!(inputs.len(), 3, "{inputs:?}");
    assert!(inputs.iter().any(|input| input.name.len() > 127), "{inputs:?}");

    let mut prefix = blake3::Hasher::new();
    for part in [KEY_FORMAT_TAG, "recipe", "2", std::any::type_name::<u32>()] {
        prefix.update(&varint(part.len()));
        prefix.update(part.as_bytes());
    }
    prefix.update(&varint(inputs.len()));
    for input in inputs {
        for part in [&input.kind, &input.name, &input.value] {
            prefix.update(&varint(part.len()));
            prefix.update(part.as_bytes());
        }
    }
    let args = postcard::to_allocvec(&9u8).unwrap();
    let expected = blake3::keyed_hash(prefix.finalize().as_bytes(), &args).to_hex().to_string();
    assert_eq!(memo.key_for::<u32, _>(&9u8).unwrap().to_hex(), expected);
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
fn the_cached_prefix_follows_the_memo_and_the_value_type() {
    // A `Memo` keeps the digest of its constant parts for the first value type it is asked
    // about; another type, or a builder call that changes a part, must not reuse it.
    let memo = Memo::new("prefix").version("1");
    let first = memo.key_for::<u32, _>(&5u8).unwrap();
    assert_eq!(
        memo.key_for::<u64, _>(&5u8),
        Memo::new("prefix").version("1").key_for::<u64, _>(&5u8)
    );
    assert_ne!(memo.key_for::<u64, _>(&5u8).unwrap(), first);
    assert_eq!(memo.key_for::<u32, _>(&5u8).unwrap(), first);
    let bumped = memo.clone().version("2");
    assert_eq!(
        bumped.key_for::<u32, _>(&5u8),
        Memo::new("prefix").version("2").key_for::<u32, _>(&5u8)
    );
    assert_ne!(bumped.key_for::<u32, _>(&5u8).unwrap(), first);
    let with_input = memo.clone().env("MEMOSHELVE_KEYS_TEST_UNSET_VARIABLE");
    assert_ne!(with_input.key_for::<u32, _>(&5u8).unwrap(), first);
    assert_eq!(memo.key_for::<u32, _>(&5u8).unwrap(), first);
}

#[test]
fn key_hex_round_trips() {
    let key = Memo::new("hex").key_for::<u32, _>(&1).unwrap();
    assert_eq!(memoshelve_build::Key::from_hex(&key.to_hex()), Some(key));
    assert_eq!(memoshelve_build::Key::from_hex("not hex"), None);
}
