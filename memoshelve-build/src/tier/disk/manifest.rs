//! What a file step's entry holds: its manifest (the files, links, declared inputs, directive
//! lines and return value of one run), stored as the entry's value, and the marker type that
//! tells a file step's entries from values. The disk tier stores it like any value; the remote
//! client and the maintenance API read it to find a file step's blobs.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::path::{Component, PathBuf};

use serde::{Deserialize, Serialize};

use crate::key::KeyInput;

/// The manifest of a file step, stored as the entry's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutputManifest {
    /// Every regular file the step produced, sorted by path.
    pub files: Vec<OutputFile>,
    /// Every symbolic link the step produced (relative, staying inside the directory).
    pub links: Vec<OutputLink>,
    /// Every empty directory the step made (relative, `/`-separated, sorted): restored too, as
    /// a tool may list one (an `include` dir a `links` provider hands down).
    #[serde(with = "paths_text_or_bytes")]
    pub dirs: Vec<Vec<u8>>,
    /// Inputs the step declared while it ran (`rerun-if-changed`, `rerun-if-env-changed`), with
    /// their hashes or values when it ran.
    pub discovered: Vec<KeyInput>,
    /// The lines the step printed on stdout inside a build script (directives whole, `cargo:`
    /// or `cargo::` as printed, and any other line: cargo keeps them all in its `output` file),
    /// this build's directories as placeholders; replayed on a hit.
    pub directives: Vec<String>,
    /// The step's own return value, postcard-encoded.
    pub result: Vec<u8>,
}

/// One produced file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutputFile {
    /// Path relative to the output directory, `/`-separated, as bytes (names need not be UTF-8;
    /// in JSON it is a string, lossy where they are not).
    #[serde(with = "text_or_bytes")]
    pub path: Vec<u8>,
    /// Unix permission bits.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the contents, hex: the blob it is restored from.
    pub blake3: String,
    /// The file was in the directory before the step ran, unclaimed, and the step left it alone
    /// (a generator that skips rewriting identical files). It is restored only where it is
    /// missing, or where this step wrote the file that is there now.
    pub if_missing: bool,
}

impl OutputFile {
    /// The path for people (lossy where it is not UTF-8).
    pub fn display_path(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.path)
    }
}

/// One produced symbolic link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutputLink {
    /// Path relative to the output directory, `/`-separated, as bytes.
    #[serde(with = "text_or_bytes")]
    pub path: Vec<u8>,
    /// What the link points to: a relative path that stays inside the directory.
    #[serde(with = "text_or_bytes")]
    pub target: Vec<u8>,
}

/// Path bytes in a manifest: bytes for postcard, a (lossy) string for people's formats (JSON).
mod text_or_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&String::from_utf8_lossy(bytes))
        } else {
            serializer.serialize_bytes(bytes)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        if deserializer.is_human_readable() {
            String::deserialize(deserializer).map(String::into_bytes)
        } else {
            Vec::<u8>::deserialize(deserializer)
        }
    }
}

/// A list of manifest paths, each as [`text_or_bytes`] does it.
mod paths_text_or_bytes {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Path(#[serde(with = "super::text_or_bytes")] Vec<u8>);

    pub(super) fn serialize<S: Serializer>(
        paths: &[Vec<u8>],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(paths.len()))?;
        for path in paths {
            seq.serialize_element(&Path(path.clone()))?;
        }
        seq.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Vec<u8>>, D::Error> {
        Ok(Vec::<Path>::deserialize(deserializer)?.into_iter().map(|Path(path)| path).collect())
    }
}

/// Whether an entry of this `type_name` is a file step's (`FilesOf<R>` below), wherever the
/// module that defines it is.
#[cfg(feature = "_remote-client")]
pub(crate) fn is_file_step(type_name: &str) -> bool {
    let ours = std::any::type_name::<FilesOf<()>>();
    type_name.starts_with(&ours[..ours.len() - "()>".len()])
}

/// Marks file-step keys, so they never collide with a plain value of the same type.
pub(crate) struct FilesOf<R>(PhantomData<R>);

/// A manifest path as a relative path that stays inside the output directory, or `None`.
/// Manifests use one spelling per path: `/`-separated segments, none empty, `.` or `..`, and
/// no backslash or NUL.
pub(crate) fn safe_relative(path: &[u8]) -> Option<PathBuf> {
    let canonical =
        path.split(|&byte| byte == b'/').all(|segment| !matches!(segment, b"" | b"." | b".."))
            && !path.iter().any(|&byte| byte == b'\\' || byte == 0);
    let relative = path_from_bytes(path).filter(|_| canonical)?;
    relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
        .then_some(relative)
}

/// The path spelled by these bytes: any bytes on Unix, UTF-8 elsewhere.
pub(crate) fn path_from_bytes(bytes: &[u8]) -> Option<PathBuf> {
    #[cfg(unix)]
    {
        Some(PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes)))
    }
    #[cfg(not(unix))]
    {
        std::str::from_utf8(bytes).ok().map(PathBuf::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_must_stay_inside_the_output_dir() {
        assert_eq!(safe_relative(b"a/b.rs"), Some(std::path::PathBuf::from("a/b.rs")));
        assert!(safe_relative(b"dir/file:with-colon.rs").is_some());
        #[cfg(unix)]
        assert!(safe_relative(b"caf\xe9/\xff.rs").is_some(), "names are bytes on Unix");
        for escaping in [
            "",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "./a",
            "a/./b",
            "a\\..\\b",
            "a/..",
            "a//b",
            "a\0b",
        ] {
            assert_eq!(safe_relative(escaping.as_bytes()), None, "{escaping:?} was accepted");
        }
    }

    #[test]
    fn file_steps_are_told_by_their_type_name_wherever_the_module_is() {
        assert!(is_file_step(std::any::type_name::<FilesOf<()>>()));
        assert!(is_file_step(std::any::type_name::<FilesOf<Vec<String>>>()));
        assert!(!is_file_step(std::any::type_name::<Vec<u8>>()));
        assert!(!is_file_step("FilesOf<()>"));
    }
}
