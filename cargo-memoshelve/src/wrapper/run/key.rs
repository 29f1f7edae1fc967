//! The level-1 key of a script's run: everything known before it runs that determines it, as
//! named parts; and, for a miss with nothing under its key, the nearest stored run's first
//! differing part.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::unit::Unit;
use super::{EXTRA_ENV, listed};
use crate::wrapper::outputs::contains;

/// Why a run of `name` keyed by `parts` found nothing stored under its key: the first part (in
/// name order) in which the nearest of the name's stored runs differs, the nearest being the
/// one with the fewest differing parts (the newest among equals); `None` when there is none, or
/// the nearest differs in none of these parts.
pub(crate) fn nearest_difference(
    root: &Path,
    name: &str,
    parts: &[(String, String)],
) -> Option<String> {
    let entries = memoshelve_build::store::Store::open(root).entries(Some(name)).ok()?;
    let ours: std::collections::BTreeMap<&str, &str> =
        parts.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    let differences = |entry: &memoshelve_build::store::Entry| {
        let theirs: std::collections::BTreeMap<&str, &str> = entry
            .record
            .inputs
            .iter()
            .filter(|input| input.kind == "value")
            .map(|input| (input.name.as_str(), input.value.as_str()))
            .collect();
        let names: std::collections::BTreeSet<&str> =
            ours.keys().chain(theirs.keys()).copied().collect();
        let differing: Vec<&str> =
            names.into_iter().filter(|name| ours.get(name) != theirs.get(name)).collect();
        let first = differing.first().map(|part| (*part).to_owned());
        (differing.len(), std::cmp::Reverse(entry.record.created_ms), first)
    };
    // No part differs: this very key (an audit's rerun), or a part the library adds (`rustc
    // -vV`): nothing to name.
    entries.iter().map(differences).min()?.2
}

/// The level-1 key: everything known before the run that determines it, as named parts (the
/// `Memo`'s `input_value`s, which `cargo memoshelve explain` names when one changes):
/// - `script`: the blake3 of the script's binary (any change to its code or its dependencies');
/// - `env:<NAME>`: cargo's environment for the unit, this build's directories as placeholders;
/// - `contents:<DEP_NAME>`: what is behind a `DEP_*` value that is a path this build made (a
///   `links` provider hands down paths whose spelling stays when what is there changes);
/// - `inputs`: `traced` (the run's traced inputs are its second level), or `declared`, then
///   also:
///   - `package files`: for a package whose files can change under one version;
///   - `c compiler`: what the C compiler cc-rs would pick says of its version (a result built
///     by another compiler is not this build's, the more so from a remote);
/// - `host`: the OS and architecture.
#[derive(Debug)]
pub(super) struct ScriptKey {
    pub(super) parts: Vec<(String, String)>,
}

/// Cargo's unit environment that a script may read without declaring it (never `NUM_JOBS` or
/// the jobserver: they describe the machine, not the run).
pub(super) fn in_key(name: &str) -> bool {
    const EXACT: [&str; 10] = [
        "TARGET",
        "HOST",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_MANIFEST_LINKS",
        "RUSTC",
        "RUSTC_LINKER",
        "RUSTDOC",
    ];
    const PREFIXES: [&str; 6] =
        ["CARGO_CFG_", "CARGO_FEATURE_", "CARGO_PKG_", "DEP_", "PKG_CONFIG_", "CARGO_TRIM_PATHS_"];
    EXACT.contains(&name)
        || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
        || name == EXTRA_ENV
}

impl ScriptKey {
    /// A short name of the key, for the hermetic sandbox.
    pub(super) fn id(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        for (name, value) in &self.parts {
            for text in [name, value] {
                hasher.update(&(text.len() as u64).to_le_bytes());
                hasher.update(text.as_bytes());
            }
        }
        hasher.finalize().to_hex()[..16].to_owned()
    }

    /// `traced`: the run's traced inputs stand for the package's files and the C compiler.
    /// `script`: [`script_hash`]; `root`: the cache root, where the C compiler's version is
    /// kept between runs.
    pub(super) fn of(
        unit: &Unit,
        script: [u8; 32],
        traced: bool,
        root: Option<&Path>,
    ) -> Result<ScriptKey, String> {
        let hex = |hash: [u8; 32]| blake3::Hash::from(hash).to_hex().to_string();
        let mut parts = vec![("script".to_owned(), hex(script))];
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if !in_key(name) && !listed(EXTRA_ENV, name) {
                continue;
            }
            let value_text = value.to_string_lossy();
            parts.push((format!("env:{name}"), unit.normalize(&value_text)));
            // Only what this build made: a provider's OUT_DIR keeps its spelling when what is
            // there changes. A path outside the target dir (`DEP_Z_INCLUDE=/usr/include` from a
            // system zlib) is the system's, as any library a script finds: its spelling is in
            // the key, its contents are not (hashing /usr/include took 2 s).
            if name.starts_with("DEP_")
                && unit
                    .target_dir
                    .as_ref()
                    .is_some_and(|target| Path::new(&value).starts_with(target))
                && let Some(hash) = contents_hash(unit, Path::new(&value))
            {
                parts.push((format!("contents:{name}"), hex(hash)));
            }
        }
        if traced {
            parts.push(("inputs".to_owned(), "traced".to_owned()));
        } else {
            parts.push(("inputs".to_owned(), "declared".to_owned()));
            if unit.local {
                parts.push(("package files".to_owned(), hex(package_files(unit)?)));
            }
            parts.push(("c compiler".to_owned(), c_compiler(root)));
        }
        let host = format!("{} {}", std::env::consts::OS, std::env::consts::ARCH);
        parts.push(("host".to_owned(), host));
        parts.sort();
        Ok(ScriptKey { parts })
    }
}

/// The first line `--version` prints for the C compiler cc-rs would use for `TARGET`: the first
/// of `CC_<target>`, `CC_<target_with_underscores>`, `TARGET_CC`, `CC` that is set, else `cc`
/// (a wrapper such as `sccache cc` runs as it is given); `none` when it does not run.
///
/// Kept under `root` (`tools/cc-<blake3 of the command and the program's resolved path, size,
/// modification time and inode>`), so that a hit does not run the compiler: a new compiler at
/// the same path is a new file.
pub(super) fn c_compiler(root: Option<&Path>) -> String {
    let command = c_compiler_command();
    let kept = root.zip(program_identity(&command)).map(|(root, identity)| {
        root.join("tools").join(format!("cc-{}", &blake3::hash(identity.as_bytes()).to_hex()[..32]))
    });
    if let Some(text) = kept.as_ref().and_then(|path| fs::read_to_string(path).ok()) {
        return text;
    }
    let version = c_compiler_version(&command);
    if let Some(path) = kept {
        // Best effort, atomically: a reader sees the whole file or none.
        let temp = path.with_extension(format!("{}.tmp", std::process::id()));
        let written = path
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::write(&temp, &version).and_then(|()| fs::rename(&temp, &path)));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
    }
    version
}

/// The command line the C compiler is run with (see [`c_compiler`]).
fn c_compiler_command() -> String {
    let target = std::env::var("TARGET").unwrap_or_default();
    let names = [
        format!("CC_{target}"),
        format!("CC_{}", target.replace('-', "_")),
        "TARGET_CC".to_owned(),
        "CC".to_owned(),
    ];
    let configured = names
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.trim().is_empty()));
    configured.unwrap_or_else(|| "cc".to_owned())
}

/// What identifies the program `command` runs: the command, and its first word's resolved
/// path (through `PATH` and links), size, modification time and inode; `None` when not found.
fn program_identity(command: &str) -> Option<String> {
    let program = command.split_whitespace().next()?;
    let path = if program.contains('/') {
        PathBuf::from(program)
    } else {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())?
    };
    let path = fs::canonicalize(path).ok()?;
    let meta = fs::metadata(&path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    let mtime = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
    Some(format!("{command}\0{}\0{} {mtime} {inode}", path.display(), meta.len()))
}

/// [`c_compiler`]'s answer, from running it.
fn c_compiler_version(command: &str) -> String {
    let mut words = command.split_whitespace();
    let Some(program) = words.next() else { return "none".to_owned() };
    let output = Command::new(program)
        .args(words)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            format!("{command}: {}", text.lines().next().unwrap_or_default().trim())
        }
        _ => format!("{command}: none"),
    }
}

/// The blake3 of the script's real binary: the unit cache vouched for it when it compiled or
/// restored it (`statcache::vouch`), else read.
pub(super) fn script_hash(unit: &Unit, real: &Path) -> Result<[u8; 32], String> {
    let vouched = unit.build_dir.parent().zip(real.file_name()).and_then(|(profile, name)| {
        let record = crate::wrapper::statcache::vouched_in(profile).join(name);
        crate::wrapper::statcache::vouched(&record, real)
    });
    match vouched {
        Some(hash) => Ok(hash),
        None => hash_file(real),
    }
}

pub(super) fn hash_file(path: &Path) -> Result<[u8; 32], String> {
    let bytes = fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    Ok(*blake3::hash(&bytes).as_bytes())
}

/// The contents behind a path (a file, or a directory's whole tree), text with this build's
/// directories normalized; `None` when nothing is there (the value itself is in the key).
pub(super) fn contents_hash(unit: &Unit, path: &Path) -> Option<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let meta = fs::metadata(path).ok()?;
    if meta.is_dir() {
        tree_into(unit, path, &mut hasher, &[], &mut Walked::new(path)).ok()?;
    } else {
        file_into(unit, path, &mut hasher).ok()?;
    }
    Some(*hasher.finalize().as_bytes())
}

/// A file's bytes, or, when it is text that spells one of this build's directories, its text
/// with them as placeholders (the check first: most files spell none, and naming is slow).
pub(super) fn file_into(
    unit: &Unit,
    path: &Path,
    hasher: &mut blake3::Hasher,
) -> std::io::Result<()> {
    let bytes = fs::read(path)?;
    let spells = unit.roots.dirs().any(|(_, dir)| contains(&bytes, dir.as_bytes()));
    match std::str::from_utf8(&bytes) {
        Ok(text) if spells => hasher.update(unit.normalize(text).as_bytes()),
        _ => hasher.update(&bytes),
    };
    Ok(())
}

/// The directories a tree walk entered through a symbolic link (and its root): each once, so
/// that a link back up ends the walk.
pub(super) struct Walked(std::collections::HashSet<PathBuf>);

impl Walked {
    pub(super) fn new(root: &Path) -> Walked {
        Walked(fs::canonicalize(root).into_iter().collect())
    }
}

/// Names, kinds and contents of the tree under `dir`, sorted, leaving out `skip`. A symbolic
/// link counts by its text and by what it points to: a file's contents, a directory's tree
/// (once: see `Walked`), or nothing there.
pub(super) fn tree_into(
    unit: &Unit,
    dir: &Path,
    hasher: &mut blake3::Hasher,
    skip: &[&Path],
    walked: &mut Walked,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        if skip.iter().any(|skipped| path == *skipped) {
            continue;
        }
        let kind = entry.file_type()?;
        let name = entry.file_name();
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_encoded_bytes());
        if kind.is_symlink() {
            hasher.update(b"l");
            let text = fs::read_link(&path)?;
            hasher.update(&(text.as_os_str().len() as u64).to_le_bytes());
            hasher.update(text.as_os_str().as_encoded_bytes());
            match fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => {
                    if walked.0.insert(fs::canonicalize(&path)?) {
                        hasher.update(b"d");
                        tree_into(unit, &path, hasher, skip, walked)?;
                        hasher.update(b"e");
                    } else {
                        hasher.update(b"c");
                    }
                }
                Ok(_) => {
                    hasher.update(b"f");
                    file_into(unit, &path, hasher)?;
                }
                Err(_) => {
                    hasher.update(b"m");
                }
            }
        } else if kind.is_dir() {
            hasher.update(b"d");
            tree_into(unit, &path, hasher, skip, walked)?;
            hasher.update(b"e");
        } else {
            hasher.update(b"f");
            file_into(unit, &path, hasher)?;
        }
    }
    Ok(())
}

/// A local package's files (cargo's own rule for a script that declares no inputs: the package
/// directory without `target/` and `.git`).
pub(super) fn package_files(unit: &Unit) -> Result<[u8; 32], String> {
    let root = &unit.manifest_dir;
    let target = root.join("target");
    let git = root.join(".git");
    let mut skip = vec![target.as_path(), git.as_path(), unit.out_dir.as_path()];
    skip.extend(unit.target_dir.as_deref());
    let mut hasher = blake3::Hasher::new();
    tree_into(unit, root, &mut hasher, &skip, &mut Walked::new(root))
        .map_err(|err| format!("cannot hash the package {}: {err}", root.display()))?;
    Ok(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_on_the_unit_not_the_machine() {
        for name in ["TARGET", "CARGO_FEATURE_STD", "DEP_Z_INCLUDE", "CARGO_CFG_UNIX", "RUSTC"] {
            assert!(in_key(name), "{name}");
        }
        for name in ["NUM_JOBS", "CARGO_MAKEFLAGS", "MAKEFLAGS", "PATH", "OUT_DIR", "HOME"] {
            assert!(!in_key(name), "{name}");
        }
    }
}
