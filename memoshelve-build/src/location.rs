//! Where the cache lives: the resolution order of DESIGN.md section 5, in one function.

use std::fmt;
use std::path::{Path, PathBuf};

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
}

impl fmt::Display for RootSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RootSource::Explicit => "given explicitly",
            RootSource::EnvDir => "from MEMOSHELVE_DIR",
            RootSource::EnvTarget => "MEMOSHELVE_DIR=target: inside the cargo target directory",
            RootSource::XdgCacheHome => "from XDG_CACHE_HOME",
            RootSource::HomeCache => "default: $HOME/.cache",
            RootSource::Platform => "default: the platform cache directory",
        })
    }
}

/// A resolved cache root and the reason it was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheRoot {
    /// The directory (it may not exist yet).
    pub path: PathBuf,
    /// Why it was chosen.
    pub source: RootSource,
}

/// Resolves the cache root: `explicit`, else `MEMOSHELVE_DIR` (`target` meaning the cargo
/// target directory's `memoshelve/`), else `$XDG_CACHE_HOME/memoshelve`, else
/// `$HOME/.cache/memoshelve` (on macOS and Windows the platform cache directory).
///
/// The default lives outside `target/` on purpose, so it survives `cargo clean`.
///
/// # Errors
/// A message naming the fix when `MEMOSHELVE_DIR=target` finds no target directory, or when no
/// home directory is known.
pub fn resolve_root(explicit: Option<&Path>) -> Result<CacheRoot, String> {
    let env = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(path) = explicit {
        return Ok(CacheRoot { path: path.to_owned(), source: RootSource::Explicit });
    }
    if let Some(dir) = env("MEMOSHELVE_DIR") {
        if dir == "target" {
            let target = cargo_target_dir().ok_or_else(|| {
                "MEMOSHELVE_DIR=target, but no cargo target directory was found \
                 (set CARGO_TARGET_DIR to an absolute path, or MEMOSHELVE_DIR to a directory)"
                    .to_owned()
            })?;
            return Ok(CacheRoot {
                path: target.join("memoshelve"),
                source: RootSource::EnvTarget,
            });
        }
        return Ok(CacheRoot { path: PathBuf::from(dir), source: RootSource::EnvDir });
    }
    if let Some(xdg) = env("XDG_CACHE_HOME").map(PathBuf::from).filter(|path| path.is_absolute()) {
        return Ok(CacheRoot { path: xdg.join("memoshelve"), source: RootSource::XdgCacheHome });
    }
    if cfg!(target_os = "macos")
        && let Some(home) = env("HOME")
    {
        let path = PathBuf::from(home).join("Library/Caches/memoshelve");
        return Ok(CacheRoot { path, source: RootSource::Platform });
    }
    if cfg!(windows)
        && let Some(local) = env("LOCALAPPDATA")
    {
        let path = PathBuf::from(local).join("memoshelve");
        return Ok(CacheRoot { path, source: RootSource::Platform });
    }
    if let Some(home) = env("HOME") {
        return Ok(CacheRoot {
            path: PathBuf::from(home).join(".cache").join("memoshelve"),
            source: RootSource::HomeCache,
        });
    }
    Err("no cache directory: set MEMOSHELVE_DIR (or HOME / XDG_CACHE_HOME)".to_owned())
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
