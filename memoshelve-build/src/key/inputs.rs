//! Declared inputs: files, globs, environment variables, tools and the build-script binary,
//! turned into [`KeyInput`]s (sorted, so the key does not depend on declaration order).
//!
//! Paths in the key are relative to `CARGO_MANIFEST_DIR` when they are inside it, so two checkouts
//! of one project at different paths share entries. Inside a build script every declared file,
//! glob base directory and variable is also reported to cargo (`rerun-if-changed`,
//! `rerun-if-env-changed`), so cargo's change detection and the cache agree.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::cargo;
use crate::key::KeyInput;

/// The value recorded for an environment variable that is not set.
pub(crate) const UNSET: &str = "\u{0}unset";
/// The value recorded for a declared file that does not exist.
pub(crate) const MISSING: &str = "\u{0}missing";

/// One input declared on a `Memo`.
#[derive(Clone, Debug)]
pub(crate) enum Declared {
    File(PathBuf),
    Glob(String),
    Env(String),
    Tool { command: String, args: Vec<String> },
    BuildScript,
    Value { name: String, value: String },
}

/// The directory relative paths are taken from: the package being built, else the current one.
pub(crate) fn base_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default()
}

/// How a path is named in the key: relative to `base` when inside it, `/`-separated.
pub(crate) fn key_path(path: &Path, base: &Path) -> String {
    let relative = path.strip_prefix(base).unwrap_or(path);
    // A path already in normal form is its own name (the common case: a thousand headers).
    if let Some(text) = relative.to_str()
        && is_normal(text)
    {
        return text.to_owned();
    }
    components_joined(relative)
}

/// `relative`'s components joined with `/` (`.` left out): the name of any path, and what a
/// normal path's own text already is.
pub(crate) fn components_joined(relative: &Path) -> String {
    let parts: Vec<String> = relative
        .components()
        .filter(|component| !matches!(component, Component::CurDir))
        .map(|component| component.as_os_str().to_string_lossy().into_owned())
        .collect();
    let joined = parts.join("/");
    if relative.is_absolute() { format!("/{}", joined.trim_start_matches('/')) } else { joined }
}

/// Whether `text` is what joining its components with `/` gives: no empty or `.` component, no
/// trailing separator.
fn is_normal(text: &str) -> bool {
    !text.contains("//")
        && !text.contains("/./")
        && !text.starts_with("./")
        && !text.ends_with('/')
        && !text.ends_with("/.")
        && text != "."
        && !text.contains('\\')
}

/// The blake3 hex of a file's contents, read in parallel chunks for large files.
pub(crate) fn hash_file(path: &Path) -> std::io::Result<String> {
    Ok(crate::key::hex_lower(crate::hashing::hash_file(path)?.as_bytes()))
}

pub(crate) fn file_input(path: &Path, base: &Path) -> KeyInput {
    let absolute = if path.is_absolute() { path.to_owned() } else { base.join(path) };
    let value = file_value(&absolute);
    KeyInput { kind: "file".to_owned(), name: key_path(&absolute, base), value }
}

/// A file's blake3 hex, or the missing or unreadable marker.
fn file_value(path: &Path) -> String {
    match hash_file(path) {
        Ok(hash) => hash,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => MISSING.to_owned(),
        Err(err) => format!("\u{0}unreadable: {}", err.kind()),
    }
}

/// A path a step reported with `rerun-if-changed`, named `name`, as a key part: a file's
/// contents, a directory's whole tree (the names, kinds and contents of everything below it,
/// symbolic links by their text and what they point to), or the missing marker (also for a directory with nothing
/// in it). `skip` leaves parts of a tree out, by their path relative to `path`.
pub(crate) fn path_input(name: String, path: &Path, skip: &dyn Fn(&Path) -> bool) -> KeyInput {
    let value = match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => tree_value(path, skip),
        _ => file_value(path),
    };
    KeyInput { kind: "file".to_owned(), name, value }
}

/// An environment variable as a key part: its value, or the unset marker.
pub(crate) fn env_input(name: &str) -> KeyInput {
    let value = std::env::var(name).unwrap_or_else(|_| UNSET.to_owned());
    KeyInput { kind: "env".to_owned(), name: name.to_owned(), value }
}

/// The blake3 of a directory tree: every entry's relative path, kind, and contents (files) or
/// text (links), in byte order of the paths. A symbolic link also counts by what it points to
/// (a monorepo links shared protos into a crate): a file's contents, a directory's tree (each
/// directory once: a link back up is not followed again), or missing.
fn tree_value(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> String {
    let mut parts: Vec<(Vec<u8>, u8, Vec<u8>)> = Vec::new();
    let mut pending = vec![PathBuf::new()];
    let mut walked: std::collections::HashSet<PathBuf> =
        std::fs::canonicalize(dir).into_iter().collect();
    while let Some(relative) = pending.pop() {
        let listing = match std::fs::read_dir(dir.join(&relative)) {
            Ok(listing) => listing,
            Err(err) => {
                parts.push((path_bytes(&relative), b'?', err.kind().to_string().into_bytes()));
                continue;
            }
        };
        for item in listing.flatten() {
            let path = relative.join(item.file_name());
            if skip(&path) {
                continue;
            }
            let Ok(kind) = item.file_type() else { continue };
            let name = path_bytes(&path);
            if kind.is_dir() {
                parts.push((name, b'd', Vec::new()));
                pending.push(path);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(item.path()).unwrap_or_default();
                parts.push((name.clone(), b'l', path_bytes(&target)));
                match std::fs::metadata(item.path()) {
                    Ok(meta) if meta.is_dir() => {
                        let real = std::fs::canonicalize(item.path()).unwrap_or_default();
                        if walked.insert(real.clone()) {
                            pending.push(path);
                        } else {
                            parts.push((name, b'c', path_bytes(&real)));
                        }
                    }
                    Ok(_) => parts.push((name, b'f', file_value(&item.path()).into_bytes())),
                    Err(_) => parts.push((name, b'f', MISSING.as_bytes().to_vec())),
                }
            } else {
                parts.push((name, b'f', file_value(&item.path()).into_bytes()));
            }
        }
    }
    if parts.is_empty() {
        return MISSING.to_owned();
    }
    parts.sort();
    let mut hasher = blake3::Hasher::new();
    for (name, kind, contents) in &parts {
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name);
        hasher.update(&[*kind]);
        hasher.update(&(contents.len() as u64).to_le_bytes());
        hasher.update(contents);
    }
    format!("tree:{}", hasher.finalize().to_hex())
}

/// A path's bytes: exact on Unix, its lossy text elsewhere.
pub(crate) fn path_bytes(path: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec()
    }
    #[cfg(not(unix))]
    {
        path.to_string_lossy().replace('\\', "/").into_bytes()
    }
}

/// The directory before the first wildcard of a glob pattern: what cargo must watch so that a
/// new matching file makes it rerun the build script.
pub(crate) fn glob_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::new();
    for part in Path::new(pattern).components() {
        if part.as_os_str().to_string_lossy().contains(['*', '?', '[', '{']) {
            break;
        }
        base.push(part);
    }
    base
}

/// A pattern taken from `base` unless absolute, with `base` itself escaped.
fn absolute_pattern(pattern: &str, base: &Path) -> String {
    if Path::new(pattern).is_absolute() {
        pattern.to_owned()
    } else {
        format!("{}/{pattern}", glob::Pattern::escape(&base.to_string_lossy()))
    }
}

fn expand_glob(pattern: &str, base: &Path) -> Result<Vec<PathBuf>, String> {
    let absolute = absolute_pattern(pattern, base);

    let mut files: Vec<PathBuf> = glob::glob(&absolute)
        .map_err(|err| format!("invalid glob {pattern:?}: {err}"))?
        .filter_map(Result::ok)
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Resolves every declared input into key parts, sorted; emits cargo's rerun directives.
pub(crate) fn collect(declared: &[Declared]) -> Vec<KeyInput> {
    let base = base_dir();
    // Gitignore-style exclusions: `!pattern` removes matching files from every glob.
    let excluded: Vec<glob::Pattern> = declared
        .iter()
        .filter_map(|declaration| match declaration {
            Declared::Glob(pattern) => pattern.strip_prefix('!'),
            _ => None,
        })
        .filter_map(|pattern| glob::Pattern::new(&absolute_pattern(pattern, &base)).ok())
        .collect();
    let in_build_script = cargo::in_build_script();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut inputs: Vec<KeyInput> = Vec::new();
    for declaration in declared {
        match declaration {
            Declared::File(path) => {
                if in_build_script {
                    cargo::rerun_if_changed(&base.join(path));
                }
                files.push(path.clone());
            }
            Declared::Glob(pattern) if pattern.starts_with('!') => {
                // An exclusion: applied to every glob of this Memo, below.
                inputs.push(KeyInput {
                    kind: "glob".to_owned(),
                    name: pattern.clone(),
                    value: String::new(),
                });
            }
            Declared::Glob(pattern) => {
                if in_build_script {
                    cargo::rerun_if_changed(&base.join(glob_base(pattern)));
                }
                match expand_glob(pattern, &base) {
                    Ok(mut matched) => {
                        matched.retain(|path| {
                            !excluded.iter().any(|exclusion| exclusion.matches_path(path))
                        });
                        let names =
                            matched.iter().map(|path| key_path(path, &base)).collect::<Vec<_>>();
                        inputs.push(KeyInput {
                            kind: "glob".to_owned(),
                            name: pattern.clone(),
                            value: format!("{} files: {}", names.len(), names.join(",")),
                        });
                        files.extend(matched);
                    }
                    Err(message) => {
                        cargo::warn_once(&format!("glob {pattern}"), &message);
                        inputs.push(KeyInput {
                            kind: "glob".to_owned(),
                            name: pattern.clone(),
                            value: message,
                        });
                    }
                }
            }
            Declared::Env(name) => {
                if in_build_script {
                    cargo::rerun_if_env_changed(name);
                }
                inputs.push(env_input(name));
            }
            Declared::Tool { command, args } => inputs.push(tool_input(command, args)),
            Declared::Value { name, value } => inputs.push(KeyInput {
                kind: "value".to_owned(),
                name: name.clone(),
                value: value.clone(),
            }),
            Declared::BuildScript => {
                let value = std::env::current_exe()
                    .and_then(|exe| hash_file(&exe))
                    .unwrap_or_else(|err| format!("\u{0}unreadable: {}", err.kind()));
                inputs.push(KeyInput {
                    kind: "build-script".to_owned(),
                    name: "binary".to_owned(),
                    value,
                });
            }
        }
    }
    // By bytes, not by `Path`'s component-wise order (a tenth of the work for 1,000 files);
    // the inputs are sorted by their names below anyway.
    files.sort_unstable_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    files.dedup_by(|a, b| a.as_os_str() == b.as_os_str());
    // Hash declared files in parallel: large input sets (hundreds of headers) are common.
    let hashed: Vec<KeyInput> = if files.len() > 8 {
        crate::parallel::map(&files, |path| file_input(path, &base))
    } else {
        files.iter().map(|path| file_input(path, &base)).collect()
    };
    inputs.extend(hashed);
    inputs.sort_unstable();
    inputs.dedup();
    inputs
}

/// A tool's version output as a key part. A tool that cannot run is recorded as such (and
/// warned about): the step may still work, and it must not share entries with a working tool.
fn tool_input(command: &str, args: &[String]) -> KeyInput {
    // The key names the tool by its file name: its version output identifies it, and an absolute
    // path (a vendored binary under ~/.cargo) would keep other machines from sharing entries.
    let tool = Path::new(command).file_name().map_or(command.into(), |name| name.to_string_lossy());
    let name = std::iter::once(tool.as_ref())
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let value = match Command::new(command).args(args).output() {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }
        Ok(output) => format!("\u{0}failed: {}", output.status),
        Err(err) => {
            cargo::warn_once(
                &format!("tool {name}"),
                &format!("cannot run `{name}` for the cache key: {err}"),
            );
            format!("\u{0}not runnable: {}", err.kind())
        }
    };
    KeyInput { kind: "tool".to_owned(), name, value }
}

#[cfg(test)]
mod tests {

    /// A path already in normal form is named by its text; any other by its components joined with
    /// `/`: both ways give the same name.
    #[test]
    fn key_paths_are_the_components_joined() {
        use std::path::Path;
        let by_components = |path: &Path, base: &Path| {
            super::components_joined(path.strip_prefix(base).unwrap_or(path))
        };
        let base = Path::new("/work/pkg");
        for path in [
            "/work/pkg/src/a.rs",
            "/work/pkg//src/a.rs",
            "/work/pkg/./src/./a.rs",
            "/work/pkg/src/",
            "/work/pkg/src/.",
            "/work/pkg/../other/b.h",
            "/elsewhere/c.h",
            "//elsewhere//c.h",
            "/",
            "relative/d.proto",
            "./relative/d.proto",
            "relative//d.proto/",
            ".",
            "",
            "x/./y",
            "x/..",
            "a b/ü.txt",
            "back\\slash",
            "/work/pkg",
        ] {
            let path = Path::new(path);
            assert_eq!(
                super::key_path(path, base),
                by_components(path, base),
                "{}",
                path.display()
            );
        }
    }
}
