//! What a recorded run left in `OUT_DIR` and how it may come back (DESIGN.md section 9,
//! relocation).
//!
//! A file that spells none of this build's directories is portable as it is. A UTF-8 text file
//! that spells them only as whole path components (a pkg-config `prefix=<OUT_DIR>`, a
//! Makefile's `objroot`) is stored with those directories as placeholders and rewritten with
//! the restoring build's ([`Recorded::relocated`]). Any other file that spells one (a binary
//! with a compiled-in prefix) is kept byte for byte, and the directories it spells bind the
//! entry: it restores only where they are the same ([`Recorded::bound`]).

use std::fs;
use std::path::{Path, PathBuf};

use memoshelve_build::store::Roots;
use serde::{Deserialize, Serialize};

use super::trace::inputs::Traced;

/// The value a build-script entry stores beside its files.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Recorded {
    /// `(placeholder name, directory)`: the directories that files kept byte for byte spell.
    pub(crate) bound: Vec<(String, String)>,
    /// Text files (paths relative to `OUT_DIR`, `/`-separated) stored with placeholders.
    pub(crate) relocated: Vec<String>,
    /// Whether the run was hermetic (at the stable path, see `hermetic.rs`).
    pub(crate) hermetic: bool,
    /// What the script printed to stderr (its first MiB), this build's directories as
    /// placeholders; replayed on a hit.
    pub(crate) stderr: String,
    /// Why the run missed: the first key part that differed from the nearest stored run
    /// (`env:OUT_DIR`, `file {memoshelve:manifest}/x.h`, `script`); `None` for a package's
    /// first run. `cargo memoshelve explain` shows it.
    pub(crate) missed: Option<String>,
    /// What the traced run read, ran, listed and left beside `OUT_DIR` (see `trace::inputs`);
    /// `None` for a run keyed by what it declared.
    pub(crate) traced: Option<Traced>,
    /// Why the run was not traced (`None`: it was, or the entry predates tracing).
    pub(crate) untraced: Option<String>,
}

impl Recorded {
    /// The value of a build-script entry, from its manifest's `result`.
    pub(crate) fn decode(result: &[u8]) -> Option<Recorded> {
        postcard::from_bytes(result).ok()
    }

    /// How the run was made, in words (`cargo memoshelve show`).
    pub(crate) fn describe(&self) -> Vec<(&'static str, String)> {
        let run = if self.hermetic {
            "hermetic (OUT_DIR was a sandbox every checkout shares)"
        } else {
            "in place (cargo's OUT_DIR)"
        };
        let mut rows = vec![("run", run.to_owned())];
        if !self.relocated.is_empty() {
            rows.push((
                "relocated",
                format!("{} (text, this build's paths on restore)", self.relocated.join(", ")),
            ));
        }
        rows.push(("bound to", bound_in_words(&self.bound)));
        let inputs = match (&self.traced, &self.untraced) {
            (Some(traced), _) => format!("traced: {}", traced.counts()),
            (None, Some(why)) => format!("declared only ({why})"),
            (None, None) => "declared only".to_owned(),
        };
        rows.push(("inputs", inputs));
        if let Some(missed) = &self.missed {
            rows.push(("missed on", missed.clone()));
        }
        rows
    }

    /// The directories the entry is bound to, in words (why it did not hold elsewhere).
    pub(crate) fn describe_bound(&self) -> String {
        format!("bound to {}", dirs_in_words(&self.bound))
    }

    /// Looks at every file a successful run left in `out_dir` (its directories are `roots`):
    /// a hermetic run's text first has the sandbox's spellings rewritten to this build's
    /// (`renames`, see `Sandbox::renames`); text is then rewritten with placeholders, to be
    /// stored so (see [`Recorded::place`]).
    ///
    /// `Err` says why the run must not be recorded (a symbolic link leaving OUT_DIR, a file
    /// that cannot be read back).
    pub(crate) fn settle(
        out_dir: &Path,
        roots: &Roots,
        renames: Option<&[(String, String)]>,
    ) -> Result<Recorded, String> {
        let io = |path: &Path, err: std::io::Error| {
            format!("cannot read back {}: {err}", path.display())
        };
        let mut recorded = Recorded { hermetic: renames.is_some(), ..Recorded::default() };
        let mut files = Vec::new();
        let mut links = Vec::new();
        list_files(out_dir, Path::new(""), &mut files, &mut links);
        if let Some(link) = links.iter().find(|link| !stays_inside(out_dir, link)) {
            return Err(format!(
                "it made {}, a symbolic link leaving OUT_DIR",
                out_dir.join(link).display()
            ));
        }
        files.sort();
        Cap::from_env().check(out_dir, &files)?;
        for relative in files {
            let path = out_dir.join(&relative);
            let mut bytes = fs::read(&path).map_err(|err| io(&path, err))?;
            if let Some(renames) = renames
                && renames.iter().any(|(from, _)| contains(&bytes, from.as_bytes()))
                && let Some(text) = text_of(&bytes)
            {
                bytes = super::hermetic::rename_all(text.to_owned(), renames).into_bytes();
                replace_file(&path, &bytes).map_err(|err| io(&path, err))?;
            }
            let spelled: Vec<(&str, &str)> =
                roots.dirs().filter(|(_, dir)| contains(&bytes, dir.as_bytes())).collect();
            if spelled.is_empty() {
                continue;
            }
            match text_of(&bytes).and_then(|text| relocated(text, roots)) {
                Some(named) => {
                    replace_file(&path, named.as_bytes()).map_err(|err| io(&path, err))?;
                    recorded.relocated.push(slashed(&relative));
                }
                None => {
                    for (name, dir) in spelled {
                        if !recorded.bound.iter().any(|(known, _)| known == name) {
                            recorded.bound.push((name.to_owned(), dir.to_owned()));
                        }
                    }
                }
            }
        }
        recorded.bound.sort();
        Ok(recorded)
    }

    /// Rewrites the relocated files in `out_dir` with this build's directories: after a
    /// restore, and after a miss was stored.
    /// The files a traced run left beside `OUT_DIR` are put back too.
    pub(crate) fn place(&self, out_dir: &Path, roots: &Roots) -> std::io::Result<()> {
        for relative in &self.relocated {
            let path = out_dir.join(relative);
            let bytes = fs::read(&path)?;
            let text = std::str::from_utf8(&bytes).map_err(std::io::Error::other)?;
            replace_file(&path, roots.expand(text).as_bytes())?;
        }
        if let Some(traced) = &self.traced {
            traced.place_beside(roots)?;
        }
        Ok(())
    }

    /// Whether every directory the entry's byte-exact files spell is the same in this build.
    pub(crate) fn holds_in(&self, here: &Roots) -> bool {
        bound_holds(&self.bound, here)
    }
}

/// Whether each `(placeholder name, directory)` an entry's files spell is the same directory
/// in this build (`here`): a build-script run's and a compile's rule alike.
pub(crate) fn bound_holds(bound: &[(String, String)], here: &Roots) -> bool {
    bound.iter().all(|(name, dir)| {
        here.dirs().any(|(here_name, here_dir)| here_name == name && here_dir == dir)
    })
}

/// `name=dir, ...`.
pub(crate) fn dirs_in_words(bound: &[(String, String)]) -> String {
    let dirs: Vec<String> = bound.iter().map(|(name, dir)| format!("{name}={dir}")).collect();
    dirs.join(", ")
}

/// The directories an entry is bound to, as `show` says it.
pub(crate) fn bound_in_words(bound: &[(String, String)]) -> String {
    if bound.is_empty() {
        "nothing: restores at any checkout and target dir".to_owned()
    } else {
        format!("{} (files spell them: restores only there)", dirs_in_words(bound))
    }
}

/// The most a recorded run may leave: DESIGN's 2 GiB and 100,000 files by default,
/// `MEMOSHELVE_BUILD_SCRIPTS_MAX_SIZE` (bytes) and `MEMOSHELVE_BUILD_SCRIPTS_MAX_FILES` otherwise.
#[derive(Debug, Clone, Copy)]
struct Cap {
    bytes: u64,
    files: usize,
}

impl Cap {
    fn from_env() -> Cap {
        let number =
            |name: &str| std::env::var(name).ok().and_then(|text| text.trim().parse().ok());
        Cap {
            bytes: number("MEMOSHELVE_BUILD_SCRIPTS_MAX_SIZE").unwrap_or(2 << 30),
            files: number("MEMOSHELVE_BUILD_SCRIPTS_MAX_FILES")
                .map_or(100_000, |files: u64| usize::try_from(files).unwrap_or(usize::MAX)),
        }
    }

    /// Why `files` (under `dir`) are too many or too large to record, if they are.
    fn check(self, dir: &Path, files: &[PathBuf]) -> Result<(), String> {
        if files.len() > self.files {
            return Err(format!("it left {} files, more than {}", files.len(), self.files));
        }
        let bytes: u64 = files
            .iter()
            .filter_map(|file| fs::symlink_metadata(dir.join(file)).ok())
            .map(|meta| meta.len())
            .sum();
        if bytes > self.bytes {
            return Err(format!("it left {bytes} bytes, more than {}", self.bytes));
        }
        Ok(())
    }
}

/// `bytes` as text a tool reads paths from: UTF-8 without NUL.
pub(crate) fn text_of(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok().filter(|text| !text.contains('\0'))
}

/// `text` with this build's directories as placeholders, when that names every spelling of
/// them: each is a whole path component wherever it appears (`/w/t/out`, never `/w/t-old`),
/// so the restoring build's directories can take their place. Text that also names other
/// absolute paths (a Makefile's `/bin/sh`, config.status's `/usr/bin/cc`) relocates too: those
/// are the same wherever the entry restores on this machine. Unix only: elsewhere no text is
/// relocated (it binds instead).
fn relocated(text: &str, roots: &Roots) -> Option<String> {
    if !cfg!(unix) {
        return None;
    }
    let named = roots.name(text);
    (!roots.dirs().any(|(_, dir)| named.contains(dir))).then_some(named)
}

/// Replaces `path` by a file holding `bytes`, with its permissions: written beside it and
/// renamed over it, never rewritten in place (a restored file may share its blocks).
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let permissions = fs::metadata(path)?.permissions();
    let mut staged = path.as_os_str().to_owned();
    staged.push(".memoshelve-tmp");
    let staged = PathBuf::from(staged);
    fs::write(&staged, bytes)?;
    fs::set_permissions(&staged, permissions)?;
    fs::rename(&staged, path)
}

/// The regular files and the symbolic links under `dir` (relative to it), leaving out the file
/// step's marker directory.
pub(crate) fn list_files(
    dir: &Path,
    relative: &Path,
    files: &mut Vec<PathBuf>,
    links: &mut Vec<PathBuf>,
) {
    for entry in fs::read_dir(dir.join(relative)).into_iter().flatten().flatten() {
        let path = relative.join(entry.file_name());
        match entry.file_type() {
            Ok(kind) if kind.is_dir() && path != Path::new(".memoshelve") => {
                list_files(dir, &path, files, links);
            }
            Ok(kind) if kind.is_file() => files.push(path),
            Ok(kind) if kind.is_symlink() => links.push(path),
            _ => {}
        }
    }
}

/// Whether the symbolic link `link` (relative to `dir`) points inside `dir`: a relative target
/// that never climbs above it.
fn stays_inside(dir: &Path, link: &Path) -> bool {
    let Ok(target) = fs::read_link(dir.join(link)) else { return false };
    let mut depth = link.components().count() - 1;
    for part in target.components() {
        match part {
            std::path::Component::Normal(_) => depth += 1,
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir if depth > 0 => depth -= 1,
            _ => return false,
        }
    }
    true
}

fn slashed(relative: &Path) -> String {
    let parts: Vec<String> =
        relative.components().map(|part| part.as_os_str().to_string_lossy().into_owned()).collect();
    parts.join("/")
}

/// Whether `needle` occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> Roots {
        Roots::new([("out", Path::new("/t/debug/build/p-1/out")), ("target", Path::new("/t"))])
    }

    #[test]
    fn text_relocates_when_every_spelling_of_a_root_is_a_whole_component() {
        let roots = roots();
        let named = |text: &str| relocated(text, &roots);
        assert_eq!(
            named("prefix=/t/debug/build/p-1/out\nlibdir=${prefix}/lib\n").as_deref(),
            Some("prefix={memoshelve:out}\nlibdir=${prefix}/lib\n")
        );
        assert_eq!(
            named("SHELL = /bin/sh\nobjroot = /t/debug/build/p-1/out/build/\n").as_deref(),
            Some("SHELL = /bin/sh\nobjroot = {memoshelve:out}/build/\n"),
            "other absolute paths stay as they are"
        );
        assert_eq!(named("\"/tx/y\" and /t/a").as_deref(), None, "/tx spells /t too: it binds");
        assert_eq!(named("no paths").as_deref(), Some("no paths"));
    }

    #[test]
    fn a_bound_entry_holds_only_where_its_directories_are_the_same() {
        let here = roots();
        assert!(Recorded::default().holds_in(&here));
        let same = Recorded {
            bound: vec![("out".into(), "/t/debug/build/p-1/out".into())],
            ..Recorded::default()
        };
        assert!(same.holds_in(&here));
        let elsewhere = Recorded {
            bound: vec![("out".into(), "/u/debug/build/p-1/out".into())],
            ..Recorded::default()
        };
        assert!(!elsewhere.holds_in(&here));
        assert!(contains(b"prefix=/t/debug/build/p-1/out\n", b"/t/debug/build/p-1/out"));
        assert!(!contains(b"/t/debug/build/p-2/out", b"/t/debug/build/p-1/out"));
    }

    #[test]
    fn a_run_over_the_cap_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = ["a", "b"].iter().map(PathBuf::from).collect();
        for file in &files {
            fs::write(dir.path().join(file), [0; 10]).unwrap();
        }
        assert!(Cap { bytes: 20, files: 2 }.check(dir.path(), &files).is_ok());
        let too_many = Cap { bytes: 20, files: 1 }.check(dir.path(), &files).unwrap_err();
        assert!(too_many.contains("2 files, more than 1"), "{too_many}");
        let too_large = Cap { bytes: 19, files: 2 }.check(dir.path(), &files).unwrap_err();
        assert!(too_large.contains("20 bytes, more than 19"), "{too_large}");
    }

    #[test]
    fn settles_and_places_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir_all(out.join("lib/pkgconfig")).unwrap();
        let out_text = out.to_str().unwrap();
        let stable = dir.path().join("stable/out");
        let pc = format!("prefix={}\nlibdir=${{prefix}}/lib\n", stable.display());
        fs::write(out.join("lib/pkgconfig/p.pc"), &pc).unwrap();
        let binary = [b"\0\x7fELF".as_slice(), stable.to_str().unwrap().as_bytes()].concat();
        fs::write(out.join("lib/libp.a"), &binary).unwrap();
        fs::write(out.join("plain.rs"), "pub const X: u8 = 1;").unwrap();
        let bound_file = [b"\0".as_slice(), out_text.as_bytes()].concat();
        fs::write(out.join("bound.bin"), &bound_file).unwrap();
        let roots = Roots::new([("out", out.as_path())]);

        let renames = [(stable.to_str().unwrap().to_owned(), out_text.to_owned())];
        let recorded = Recorded::settle(&out, &roots, Some(&renames)).unwrap();
        assert!(recorded.hermetic);
        assert_eq!(recorded.relocated, ["lib/pkgconfig/p.pc"]);
        assert_eq!(recorded.bound, [("out".to_owned(), out_text.to_owned())]);
        let stored = fs::read_to_string(out.join("lib/pkgconfig/p.pc")).unwrap();
        assert_eq!(stored, "prefix={memoshelve:out}\nlibdir=${prefix}/lib\n");
        assert_eq!(fs::read(out.join("lib/libp.a")).unwrap(), binary, "binaries stay as built");

        let elsewhere = dir.path().join("elsewhere/out");
        fs::create_dir_all(&elsewhere).unwrap();
        fs::rename(out.join("lib"), elsewhere.join("lib")).unwrap();
        recorded.place(&elsewhere, &Roots::new([("out", elsewhere.as_path())])).unwrap();
        let placed = fs::read_to_string(elsewhere.join("lib/pkgconfig/p.pc")).unwrap();
        assert_eq!(placed, format!("prefix={}\nlibdir=${{prefix}}/lib\n", elsewhere.display()));
    }
}
