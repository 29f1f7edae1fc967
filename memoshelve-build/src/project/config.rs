//! Project configuration: the settings of `[package.metadata.memoshelve]`,
//! `[workspace.metadata.memoshelve]` and `memoshelve.toml`, read the same way by build scripts
//! and by `cargo memoshelve`.
//!
//! ```toml
//! # Cargo.toml of a package or of the workspace root
//! [workspace.metadata.memoshelve]
//! dir = ".memoshelve"   # relative to the directory of the file that says it
//! remote = "redis://cache.internal:6379/0"   # the remote tier; see [`crate::tier::remote::Settings`]
//! remote-mode = "read-only"                  # MEMOSHELVE_REMOTE_MODE overrides it
//! ```
//!
//! The first that sets a key wins: the package's `Cargo.toml`, the workspace root's `Cargo.toml`,
//! then the nearest `memoshelve.toml` (top-level keys) in the package directory or one of its
//! ancestors up to the workspace root. `dir = "target"` means `<cargo target dir>/memoshelve`,
//! like `MEMOSHELVE_DIR=target`. Known keys: [`KNOWN_KEYS`].

use std::path::{Path, PathBuf};

use crate::project::toml_reader::{self, Value};

/// The settings memoshelve reads from configuration files.
pub const KNOWN_KEYS: &[&str] = &["dir", "remote", "remote-mode", "remote-token", "remote-key"];

/// Where a project is: what build scripts learn from cargo's environment and what
/// `cargo memoshelve` learns from `cargo metadata`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Project {
    /// The directory of the package's `Cargo.toml`.
    pub package_dir: Option<PathBuf>,
    /// The workspace root (the directory of the `Cargo.toml` with a `[workspace]` table).
    pub workspace_root: Option<PathBuf>,
    /// The cargo target directory.
    pub target_dir: Option<PathBuf>,
}

impl Project {
    /// The running program's project: `CARGO_MANIFEST_DIR` (set for build scripts and for
    /// `cargo run` / `cargo test`), the nearest ancestor whose `Cargo.toml` has a `[workspace]`
    /// table, and the target directory found from `OUT_DIR` or `CARGO_TARGET_DIR`.
    pub fn from_env() -> Project {
        let package_dir =
            std::env::var_os("CARGO_MANIFEST_DIR").filter(|dir| !dir.is_empty()).map(PathBuf::from);
        let workspace_root = package_dir.as_deref().and_then(find_workspace_root);
        Project { package_dir, workspace_root, target_dir: cargo_target_dir() }
    }
}

/// The nearest directory, `start` or one of its ancestors, whose `Cargo.toml` has a `[workspace]`
/// table.
fn find_workspace_root(start: &Path) -> Option<PathBuf> {
    start.ancestors().find_map(|dir| {
        let text = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
        let leaves = toml_reader::parse(&text).ok()?;
        let has_workspace =
            leaves.iter().any(|leaf| leaf.path.first().is_some_and(|first| first == "workspace"));
        has_workspace.then(|| dir.to_owned())
    })
}

/// One setting and where it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The key, e.g. `dir`.
    pub key: String,
    /// The value as written.
    pub value: String,
    /// The file that set it.
    pub file: PathBuf,
    /// The table it was in (`package.metadata.memoshelve`, `workspace.metadata.memoshelve`), or
    /// empty for the top level of a `memoshelve.toml`.
    pub table: String,
}

impl Setting {
    /// Where it was set, for messages: "[workspace.metadata.memoshelve] of /w/Cargo.toml".
    pub fn origin(&self) -> String {
        origin(&self.file, &self.table)
    }

    /// The value as a path: relative paths are taken from the directory of the file that set it.
    pub fn path_value(&self) -> PathBuf {
        let value = Path::new(&self.value);
        let joined = match self.file.parent() {
            Some(base) if value.is_relative() => base.join(value),
            _ => value.to_owned(),
        };
        // `pkg/../shelf` -> `shelf`, without touching the file system (the dir may not exist).
        let mut clean = PathBuf::new();
        for part in joined.components() {
            match part {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir
                    if matches!(
                        clean.components().next_back(),
                        Some(std::path::Component::Normal(_))
                    ) =>
                {
                    clean.pop();
                }
                other => clean.push(other),
            }
        }
        clean
    }
}

/// The settings of a project, in order of precedence, and what was wrong with its files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Every setting found; for a key set in several places the first one wins.
    pub settings: Vec<Setting>,
    /// Problems that made a file or a setting be ignored, each naming the file and the fix.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads the configuration files of `project` (see the module docs for the order).
    pub fn load(project: &Project) -> Config {
        let mut config = Config::default();
        if let Some(package) = &project.package_dir {
            config.read(&package.join("Cargo.toml"), "package.metadata.memoshelve");
        }
        if let Some(workspace) = &project.workspace_root {
            config.read(&workspace.join("Cargo.toml"), "workspace.metadata.memoshelve");
        }
        let start = project.package_dir.as_deref().or(project.workspace_root.as_deref());
        if let Some(start) = start {
            let nearest = start
                .ancestors()
                .take_while(|dir| {
                    project.workspace_root.as_deref().is_none_or(|root| dir.starts_with(root))
                })
                .map(|dir| dir.join("memoshelve.toml"))
                .find(|file| file.is_file());
            if let Some(file) = nearest {
                config.read(&file, "");
            }
        }
        config
    }

    /// The winning setting of `key`.
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|setting| setting.key == key)
    }

    fn read(&mut self, file: &Path, table: &str) {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
            Err(err) => {
                self.warnings.push(format!(
                    "cannot read {}: {err}; its settings are ignored",
                    file.display()
                ));
                return;
            }
        };
        let leaves = match toml_reader::parse(&text) {
            Ok(leaves) => leaves,
            Err(message) => {
                self.warnings.push(format!(
                    "cannot read {} ({message}); its memoshelve settings are ignored",
                    file.display()
                ));
                return;
            }
        };
        let prefix: Vec<&str> =
            if table.is_empty() { Vec::new() } else { table.split('.').collect() };
        for leaf in leaves {
            let inside = leaf.path.len() > prefix.len()
                && leaf.path.iter().zip(&prefix).all(|(part, want)| part == want);
            if !inside {
                continue;
            }
            let rest = &leaf.path[prefix.len()..];
            let [key] = rest else {
                if !rest.is_empty() && !rest.iter().any(|part| part == "[]") {
                    self.warnings.push(format!(
                        "unknown setting `{}` in {}; known: {}",
                        rest.join("."),
                        origin(file, table),
                        KNOWN_KEYS.join(", ")
                    ));
                }
                continue;
            };
            if !KNOWN_KEYS.contains(&key.as_str()) {
                self.warnings.push(format!(
                    "unknown setting `{key}` in {}; known: {}",
                    origin(file, table),
                    KNOWN_KEYS.join(", ")
                ));
                continue;
            }
            let Value::String(value) = leaf.value else {
                self.warnings.push(format!(
                    "`{key}` in {} must be a string, like {key} = \"...\"; it is ignored",
                    origin(file, table)
                ));
                continue;
            };
            self.settings.push(Setting {
                key: key.clone(),
                value,
                file: file.to_owned(),
                table: table.to_owned(),
            });
        }
    }
}

fn origin(file: &Path, table: &str) -> String {
    if table.is_empty() {
        file.display().to_string()
    } else {
        format!("[{table}] of {}", file.display())
    }
}

/// The cargo target directory of the running build: found from `OUT_DIR`'s ancestors (cargo
/// marks the target directory with `CACHEDIR.TAG`), else an absolute `CARGO_TARGET_DIR`, else
/// the ancestors of the running executable (a binary run by `cargo run` or `cargo test`).
pub(crate) fn cargo_target_dir() -> Option<PathBuf> {
    let tagged_ancestor = |start: &Path| {
        start.ancestors().find(|dir| dir.join("CACHEDIR.TAG").is_file()).map(Path::to_owned)
    };
    if let Some(out_dir) = std::env::var_os("OUT_DIR")
        && let Some(target) = tagged_ancestor(Path::new(&out_dir))
    {
        return Some(target);
    }
    if let Some(dir) =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).filter(|dir| dir.is_absolute())
    {
        return Some(dir);
    }
    std::env::current_exe().ok().and_then(|exe| tagged_ancestor(&exe))
}
