//! Hermetic runs (DESIGN.md section 9): a build script run with `OUT_DIR` at a path that is the
//! same in every checkout, so that what it compiles in (a configure prefix, debug info) spells
//! that path wherever it ran, and the entry restores at any checkout and target dir.
//!
//! The sandbox is `<cache root>/hermetic/<key id>/target/<profile>/build/<package>/out`, named
//! by the level-1 key, one run at a time (a lock beside it; a second build with the same key
//! runs in place rather than wait). The directories above `out` mirror cargo's layout, so a
//! script that reaches outside `OUT_DIR` (`OUT_DIR/../..` to find the target dir) writes into
//! the sandbox, where it is seen ([`Sandbox::stray`]) and the run is redone in place. After a
//! good run the tree moves into cargo's `OUT_DIR` (a rename, or a copy across file systems).
//!
//! What a `links` provider hands down (`DEP_Z_INCLUDE=<target>/debug/build/libz-sys-<hash>/out/
//! include`) is given a spelling inside the sandbox too ([`Sandbox::link_providers`]): a
//! symbolic link at the same place below the sandbox's `target`. A C compile that reads the
//! provider's headers then spells the sandbox in its debug info, not this build's target dir,
//! and the result stays portable (measured: libgit2-sys over a vendored libz-sys).

use std::fs;
use std::path::{Path, PathBuf};

use super::outputs::{contains, list_files, text_of};
use super::spelled::spellings_outside_debug_info;

/// Which packages run hermetically: `MEMOSHELVE_BUILD_SCRIPTS_HERMETIC` is `registry` (the
/// default: packages from `CARGO_HOME`, whose only directory that differs between checkouts is
/// `OUT_DIR`), `all`, `none`, or a comma-separated list of package names.
pub(crate) fn wanted(package: &str, local: bool) -> bool {
    match std::env::var("MEMOSHELVE_BUILD_SCRIPTS_HERMETIC").as_deref() {
        Err(_) | Ok("" | "registry") => !local,
        Ok("all") => true,
        Ok("none") => false,
        Ok(list) => list.split(',').any(|name| name.trim() == package),
    }
}

/// A claimed sandbox; dropping it removes it.
#[derive(Debug)]
pub(crate) struct Sandbox {
    root: PathBuf,
    out_dir: PathBuf,
    /// `(variable, its spelling in the sandbox, its value)` for each provider path linked.
    links: Vec<(String, PathBuf, PathBuf)>,
    _lock: fs::File,
}

impl Sandbox {
    /// The sandbox for the key `id`, emptied, or `None` when another build holds it.
    /// `profile` is the profile's directory below the target dir (`debug`, `<triple>/release`).
    pub(crate) fn claim(
        cache_root: &Path,
        id: &str,
        profile: &Path,
        package: &str,
    ) -> std::io::Result<Option<Sandbox>> {
        let base = cache_root.join("hermetic");
        fs::create_dir_all(&base)?;
        let lock = fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(base.join(format!("{id}.lock")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(err)) => return Err(err),
        }
        let root = base.join(id);
        match fs::remove_dir_all(&root) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        let out_dir = root.join("target").join(profile).join("build").join(package).join("out");
        fs::create_dir_all(&out_dir)?;
        // Spelled as the file system resolves it (a cache root behind a symbolic link, macOS's
        // /var): a script that resolves its OUT_DIR (cmake does) prints the same path that is
        // rewritten to cargo's.
        let (root, out_dir) = (fs::canonicalize(&root)?, fs::canonicalize(&out_dir)?);
        Ok(Some(Sandbox { root, out_dir, links: Vec::new(), _lock: lock }))
    }

    /// The `OUT_DIR` the script is given.
    #[cfg(test)]
    pub(crate) fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Links each `DEP_*` value of `env` (this process's) that is a path in cargo's target dir `target`
    /// at the same place below the sandbox's `target` (shorter paths first: a longer one
    /// already reachable through a link is not linked again). Best effort: a path that cannot
    /// be linked keeps its spelling, and the result binds to the target dir as it would in place.
    pub(crate) fn link_providers(
        &mut self,
        target: &Path,
        env: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) {
        let mut found: Vec<(String, PathBuf)> = env
            .into_iter()
            .filter_map(|(name, value)| {
                let name = name.into_string().ok().filter(|name| name.starts_with("DEP_"))?;
                let path = PathBuf::from(value);
                let inside = path.is_absolute() && path.starts_with(target) && path != target;
                (inside && path.exists()).then_some((name, path))
            })
            .collect();
        found.sort_by_key(|(name, path)| (path.components().count(), name.clone()));
        let sandbox_target = self.root.join("target");
        for (name, real) in found {
            let Ok(relative) = real.strip_prefix(target) else { continue };
            let linked = sandbox_target.join(relative);
            // Reachable already through a link to an ancestor, or made here: nothing to do.
            if !linked.exists() && !link(&real, &linked) {
                continue;
            }
            self.links.push((name, linked, real));
        }
    }

    /// The variables the script is given in the sandbox: `OUT_DIR` and the linked `DEP_*`.
    pub(crate) fn env(&self) -> Vec<(&str, &Path)> {
        let links = self.links.iter().map(|(name, linked, _)| (name.as_str(), linked.as_path()));
        std::iter::once(("OUT_DIR", self.out_dir.as_path())).chain(links).collect()
    }

    /// `(sandbox spelling, this build's)` pairs, longest first: what the run's output and text
    /// files are rewritten with, `OUT_DIR` to cargo's `out_dir`, each link to its target.
    pub(crate) fn renames(&self, out_dir: &Path) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = std::iter::once((self.out_dir.as_path(), out_dir))
            .chain(self.links.iter().map(|(_, linked, real)| (linked.as_path(), real.as_path())))
            .filter_map(|(from, to)| Some((from.to_str()?.to_owned(), to.to_str()?.to_owned())))
            .collect();
        pairs.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        pairs.dedup();
        pairs
    }

    /// Whether `text` still names the sandbox (after its OUT_DIR was rewritten to cargo's).
    pub(crate) fn named_in(&self, text: &str) -> bool {
        self.root.to_str().is_some_and(|root| text.contains(root))
    }

    /// Something the run made in the sandbox outside `OUT_DIR`.
    pub(crate) fn stray(&self) -> Option<PathBuf> {
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if self.links.iter().any(|(_, linked, _)| *linked == path) {
                    continue;
                }
                let on_the_way = entry.file_type().is_ok_and(|kind| kind.is_dir())
                    && std::iter::once(&self.out_dir)
                        .chain(self.links.iter().map(|(_, linked, _)| linked))
                        .any(|kept| kept.starts_with(&path));
                if !on_the_way {
                    return Some(path);
                }
                if path != self.out_dir {
                    pending.push(path);
                }
            }
        }
        None
    }

    /// A path the run made (in cargo's `out_dir`, where its tree is by now) that a binary it
    /// left names through the sandbox outside debug information: a compiled-in directory the built program
    /// would look in, gone with the sandbox (in cargo's `OUT_DIR` instead). Such a run must be
    /// made in place. A compiled-in path to nothing (openssl's `ENGINESDIR`: plain cargo's
    /// names a missing directory too) keeps the run portable. Text is left out: it is relocated.
    pub(crate) fn names_made_path(&self, out_dir: &Path) -> Option<String> {
        let needle = self.root.to_str()?;
        let renames = self.renames(out_dir);
        let (mut files, mut links) = (Vec::new(), Vec::new());
        list_files(out_dir, Path::new(""), &mut files, &mut links);
        files.into_iter().find_map(|relative| {
            let bytes = fs::read(out_dir.join(relative)).ok()?;
            if text_of(&bytes).is_some() || !contains(&bytes, needle.as_bytes()) {
                return None;
            }
            spellings_outside_debug_info(&bytes, needle.as_bytes())
                .into_iter()
                .map(|spelling| rename_all(spelling.path, &renames))
                .find(|named| Path::new(named).starts_with(out_dir) && Path::new(named).exists())
        })
    }

    /// Moves what the run left into `out_dir` (cargo's, empty): entry by entry, a rename, or a
    /// copy where the two are on different file systems.
    pub(crate) fn move_into(&self, out_dir: &Path) -> std::io::Result<()> {
        for entry in fs::read_dir(&self.out_dir)? {
            let entry = entry?;
            let to = out_dir.join(entry.file_name());
            if let Err(err) = fs::rename(entry.path(), &to) {
                if err.kind() != std::io::ErrorKind::CrossesDevices {
                    return Err(err);
                }
                copy_tree(&entry.path(), &to)?;
            }
        }
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// `text` with each `(from, to)` of `renames` (longest first) replaced.
pub(crate) fn rename_all(mut text: String, renames: &[(String, String)]) -> String {
    for (from, to) in renames {
        if text.contains(from.as_str()) {
            text = text.replace(from.as_str(), to);
        }
    }
    text
}

/// Makes `linked` a symbolic link to `real`, and the directories above it; `false` when it
/// cannot (or, off Unix, does not try: symbolic links need privileges on Windows).
fn link(real: &Path, linked: &Path) -> bool {
    #[cfg(unix)]
    {
        linked.parent().is_some_and(|parent| fs::create_dir_all(parent).is_ok())
            && std::os::unix::fs::symlink(real, linked).is_ok()
    }
    #[cfg(not(unix))]
    {
        let _ = (real, linked);
        false
    }
}

/// Copies a file, a symbolic link or a whole directory (modes kept).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.is_symlink() {
        let target = fs::read_link(from)?;
        #[cfg(unix)]
        return std::os::unix::fs::symlink(target, to);
        #[cfg(not(unix))]
        return Err(std::io::Error::other(format!(
            "cannot copy the symbolic link {} to {}",
            from.display(),
            target.display()
        )));
    }
    if meta.is_dir() {
        fs::create_dir(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        fs::set_permissions(to, meta.permissions())
    } else {
        fs::copy(from, to).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_is_one_run_at_a_time_and_sees_strays() {
        let cache = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::claim(cache.path(), "k1", Path::new("debug"), "p").unwrap().unwrap();
        assert!(sandbox.out_dir().ends_with("k1/target/debug/build/p/out"));
        assert!(Sandbox::claim(cache.path(), "k1", Path::new("debug"), "p").unwrap().is_none());
        fs::create_dir_all(sandbox.out_dir().join("lib")).unwrap();
        fs::write(sandbox.out_dir().join("lib/a.a"), b"a").unwrap();
        assert_eq!(sandbox.stray(), None, "what is inside OUT_DIR is no stray");
        let beside = sandbox.out_dir().join("../../../x.dll");
        fs::write(&beside, b"x").unwrap();
        assert!(sandbox.stray().is_some_and(|stray| stray.ends_with("x.dll")));
        fs::remove_file(&beside).unwrap();

        let cargo_out = cache.path().join("cargo/out");
        fs::create_dir_all(&cargo_out).unwrap();
        sandbox.move_into(&cargo_out).unwrap();
        assert_eq!(fs::read(cargo_out.join("lib/a.a")).unwrap(), b"a");
        let root = sandbox.root.clone();
        drop(sandbox);
        assert!(!root.exists());
        assert!(Sandbox::claim(cache.path(), "k1", Path::new("debug"), "p").unwrap().is_some());
    }

    #[test]
    fn providers_paths_are_linked_below_the_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let provider = target.join("debug/build/z-1/out");
        fs::create_dir_all(provider.join("include")).unwrap();
        fs::write(provider.join("include/z.h"), "z").unwrap();
        let mut sandbox = Sandbox::claim(&dir.path().join("cache"), "k", Path::new("debug"), "p")
            .unwrap()
            .unwrap();
        let env = [
            ("DEP_Z_INCLUDE", provider.join("include")),
            ("DEP_Z_ROOT", provider.clone()),
            ("DEP_Z_GONE", target.join("debug/build/z-1/missing")),
            ("DEP_SYS_INCLUDE", "/usr/include".into()),
            ("PATH", provider.clone()),
        ]
        .map(|(name, value)| (name.into(), value.into_os_string()));
        sandbox.link_providers(&target, env);
        let given: Vec<(&str, PathBuf)> =
            sandbox.env().into_iter().map(|(name, path)| (name, path.to_owned())).collect();
        let linked_root = sandbox.root.join("target/debug/build/z-1/out");
        assert_eq!(
            given,
            [
                ("OUT_DIR", sandbox.out_dir().to_owned()),
                ("DEP_Z_ROOT", linked_root.clone()),
                ("DEP_Z_INCLUDE", linked_root.join("include")),
            ]
        );
        assert_eq!(fs::read_to_string(linked_root.join("include/z.h")).unwrap(), "z");
        assert_eq!(sandbox.stray(), None, "the links and the way to them are no strays");
        let renames = sandbox.renames(&dir.path().join("cargo-out"));
        let text = format!("-I{}/include", linked_root.display());
        assert_eq!(rename_all(text, &renames), format!("-I{}/include", provider.display()));
        let root = sandbox.root.clone();
        drop(sandbox);
        assert!(!root.exists() && provider.join("include/z.h").is_file(), "only the links go");
    }
}
