//! Where the cache lives: the resolution order of DESIGN.md section 5, in one function.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::project::config::{Config, Project, Setting};

/// Why a cache root was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RootSource {
    /// Given to `Memo::dir` (or the CLI's `--dir`).
    Explicit,
    /// The `MEMOSHELVE_DIR` environment variable.
    EnvDir,
    /// `MEMOSHELVE_DIR=target`: `memoshelve/` inside the cargo target directory.
    EnvTarget,
    /// `$XDG_CACHE_HOME/memoshelve`.
    XdgCacheHome,
    /// `$HOME/.cache/memoshelve`.
    HomeCache,
    /// The platform's cache directory (macOS `~/Library/Caches`, Windows `%LOCALAPPDATA%`).
    Platform,
    /// The `dir` setting of a configuration file (see [`crate::config`]).
    Config(Setting),
}

impl fmt::Display for RootSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let RootSource::Config(setting) = self {
            return write!(f, "from `dir = {:?}` in {}", setting.value, setting.origin());
        }
        f.write_str(match self {
            RootSource::Explicit => "given explicitly",
            RootSource::EnvDir => "from MEMOSHELVE_DIR",
            RootSource::EnvTarget => "MEMOSHELVE_DIR=target: inside the cargo target directory",
            RootSource::XdgCacheHome => "from XDG_CACHE_HOME",
            RootSource::HomeCache => "default: $HOME/.cache",
            RootSource::Platform => "default: the platform cache directory",
            RootSource::Config(_) => unreachable!("written above"),
        })
    }
}

/// A resolved cache root and the reason it was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheRoot {
    /// The directory (it may not exist yet).
    pub path: PathBuf,
    /// Why it was chosen.
    pub source: RootSource,
    /// Configuration problems met on the way (each names the file and the fix); the root was
    /// chosen without the settings they concern.
    pub warnings: Vec<String>,
}

/// Resolves the cache root of the running program: `explicit`, else `MEMOSHELVE_DIR` (`target`
/// meaning the cargo target directory's `memoshelve/`), else the `dir` setting of the project's
/// configuration ([`crate::config`]: `[package.metadata.memoshelve]`,
/// `[workspace.metadata.memoshelve]`, `memoshelve.toml`), else `$XDG_CACHE_HOME/memoshelve`, else
/// `$HOME/.cache/memoshelve` (on macOS and Windows the platform cache directory).
///
/// The default lives outside `target/` on purpose, so it survives `cargo clean`.
///
/// # Errors
/// [`Error::NoRoot`], naming the fix, when `target` is asked for and no target directory is
/// known, or when no home directory is known.
pub fn resolve_root(explicit: Option<&Path>) -> Result<CacheRoot> {
    resolve(explicit, Project::from_env)
}

/// [`resolve_root`] for a given project (how `cargo memoshelve` resolves the root of the
/// workspace it was pointed at).
///
/// # Errors
/// As [`resolve_root`].
pub fn resolve_root_in(explicit: Option<&Path>, project: &Project) -> Result<CacheRoot> {
    resolve(explicit, || project.clone())
}

fn resolve(explicit: Option<&Path>, project: impl FnOnce() -> Project) -> Result<CacheRoot> {
    let found =
        |path: PathBuf, source: RootSource| CacheRoot { path, source, warnings: Vec::new() };
    if let Some(path) = explicit {
        return Ok(found(path.to_owned(), RootSource::Explicit));
    }
    let mut env_dir = env_var("MEMOSHELVE_DIR");
    let mut warnings = Vec::new();
    if let Some(dir) = env_dir.as_ref().filter(|dir| *dir != "target") {
        let path = PathBuf::from(dir);
        // Cargo runs each build script in its own package's directory: a relative root would
        // be one cache per package, inside its sources. It is not used there.
        if path.is_absolute() || !crate::cargo::in_build_script() {
            return Ok(found(path, RootSource::EnvDir));
        }
        warnings.push(format!(
            "MEMOSHELVE_DIR={} is a relative path, and build scripts run in their own packages' \
             directories, so it is ignored here; set an absolute path (or `dir = ...` in \
             [workspace.metadata.memoshelve], which is taken from the workspace root)",
            path.display()
        ));
        env_dir = None;
    }
    let project = project();
    let in_target = |what: &str| {
        project.target_dir.as_ref().map(|target| target.join("memoshelve")).ok_or_else(|| {
            Error::NoRoot {
                reason: format!(
                    "{what}, but no cargo target directory was found (set CARGO_TARGET_DIR to \
                     an absolute path, or name a directory instead)"
                ),
            }
        })
    };
    if env_dir.is_some() {
        return Ok(found(in_target("MEMOSHELVE_DIR=target")?, RootSource::EnvTarget));
    }
    let config = Config::load(&project);
    if let Some(setting) = config.get("dir") {
        let path = if setting.value == "target" {
            in_target(&format!("`dir = \"target\"` in {}", setting.origin()))?
        } else {
            setting.path_value()
        };
        let source = RootSource::Config(setting.clone());
        warnings.extend(config.warnings);
        return Ok(CacheRoot { path, source, warnings });
    }
    let (path, source) = default_root()?;
    warnings.extend(config.warnings);
    Ok(CacheRoot { path, source, warnings })
}

/// A set, non-empty environment variable.
fn env_var(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|value| !value.is_empty())
}

/// The per-user default: `$XDG_CACHE_HOME/memoshelve`, else the platform's cache directory.
fn default_root() -> Result<(PathBuf, RootSource)> {
    if let Some(xdg) =
        env_var("XDG_CACHE_HOME").map(PathBuf::from).filter(|path| path.is_absolute())
    {
        return Ok((xdg.join("memoshelve"), RootSource::XdgCacheHome));
    }
    if cfg!(target_os = "macos")
        && let Some(home) = env_var("HOME")
    {
        return Ok((PathBuf::from(home).join("Library/Caches/memoshelve"), RootSource::Platform));
    }
    if cfg!(windows)
        && let Some(local) = env_var("LOCALAPPDATA")
    {
        return Ok((PathBuf::from(local).join("memoshelve"), RootSource::Platform));
    }
    if let Some(home) = env_var("HOME") {
        return Ok((PathBuf::from(home).join(".cache").join("memoshelve"), RootSource::HomeCache));
    }
    Err(Error::NoRoot {
        reason:
            "no home or cache directory is known: set MEMOSHELVE_DIR (or HOME / XDG_CACHE_HOME)"
                .to_owned(),
    })
}
