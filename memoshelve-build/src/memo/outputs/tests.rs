//! Unit tests of manifest paths.

#[test]
fn manifest_paths_must_stay_inside_the_output_dir() {
    use crate::memo::outputs::safe_relative;
    assert_eq!(safe_relative(b"a/b.rs"), Some(std::path::PathBuf::from("a/b.rs")));
    assert!(safe_relative(b"dir/file:with-colon.rs").is_some());
    #[cfg(unix)]
    assert!(safe_relative(b"caf\xe9/\xff.rs").is_some(), "names are bytes on Unix");
    for escaping in
        ["", "../x", "a/../../x", "/etc/passwd", "./a", "a/./b", "a\\..\\b", "a/..", "a//b", "a\0b"]
    {
        assert_eq!(safe_relative(escaping.as_bytes()), None, "{escaping:?} was accepted");
    }
}

#[test]
fn file_steps_are_told_by_their_type_name_wherever_the_module_is() {
    use super::{FilesOf, is_file_step};
    assert!(is_file_step(std::any::type_name::<FilesOf<()>>()));
    assert!(is_file_step(std::any::type_name::<FilesOf<Vec<String>>>()));
    assert!(!is_file_step(std::any::type_name::<Vec<u8>>()));
    assert!(!is_file_step("FilesOf<()>"));
}
