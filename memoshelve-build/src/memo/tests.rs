//! Unit tests of argument encoding and rendering.

#[test]
fn args_rendering_is_bounded_and_readable() {
    use crate::ArgsEncoder as _;
    assert_eq!(crate::PostcardArgs.render(&(1, "two")), r#"[1,"two"]"#);
    let long = crate::PostcardArgs.render(&vec![123_456u32; 1_000_000]);
    assert!(long.starts_with("[123456,123456"), "{long}");
    assert!(long.len() <= 204, "{} bytes", long.len());
}

/// The arguments' bytes are postcard's, byte for byte, whichever way a run of bytes is copied
/// (pushed one by one up to 16, extended beyond): keys must not depend on that.
#[test]
fn argument_bytes_are_postcards_for_every_length() {
    use crate::ArgsEncoder as _;
    for len in 0..80usize {
        let text: String = (0..len).map(|index| char::from(b'a' + (index % 26) as u8)).collect();
        let bytes: Vec<u8> = (0..len).map(|index| (index * 37) as u8).collect();
        let args = (len as u64, u64::MAX - len as u64, -(len as i64), text, bytes, [len as u8; 20]);
        assert_eq!(
            crate::PostcardArgs.encode(&args).unwrap(),
            postcard::to_allocvec(&args).unwrap(),
            "{len}"
        );
    }
}
