//! Steps that produce files: `Memo::outputs(dir)`.
//!
//! On a miss the step runs and writes into `dir`; every regular file it created or changed there
//! is stored as a blob, and a manifest (relative path, mode, size, blake3) becomes the entry's
//! value, with the inputs the step discovered and the cargo directives it emitted. On a hit the
//! discovered inputs are re-hashed first (any difference is a miss, like ccache's manifest mode),
//! then the files are restored byte-identical with their modes, files already present and
//! identical are left untouched (their mtimes do not trigger recompiles), and the directives are
//! replayed, all without running the step.

use std::any::type_name;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::cargo;
use crate::codec;
use crate::disk::{Disk, mode_of};
use crate::error::{Error, Result};
use crate::inputs;
use crate::key::{Key, KeyInput};
use crate::memo::{ArgsEncoder, Cacheable, Memo};
use crate::status::Status;

/// The manifest of a file step, stored as the entry's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputManifest {
    /// Every file the step produced, sorted by path.
    pub files: Vec<OutputFile>,
    /// Inputs the step reported while it ran, with their hashes when it ran.
    pub discovered: Vec<KeyInput>,
    /// Cargo directives the step emitted (without the `cargo:` prefix), replayed on a hit.
    pub directives: Vec<String>,
    /// The step's own return value, postcard-encoded.
    pub result: Vec<u8>,
}

/// One produced file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to the output directory, `/`-separated.
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the contents, hex: the blob it is restored from.
    pub blake3: String,
    /// The file was already in the directory, unchanged, when the step ran (a generator that
    /// skips rewriting identical files, or a file of the build script's own). It is restored
    /// only where it is missing, or where this step put the file that is there now.
    pub if_missing: bool,
}

/// The `type_name` prefix of file steps' entries (`FilesOf<R>` below).
#[cfg(any(
    feature = "remote-redis",
    feature = "remote-http",
    feature = "remote-s3",
    feature = "maintenance"
))]
pub(crate) const FILE_STEP_TYPE: &str = "memoshelve_build::outputs::FilesOf<";

/// Marks file-step keys, so they never collide with a plain value of the same type.
struct FilesOf<R>(PhantomData<R>);

/// What a miss leaves to store: the step's reports, and the directory as it was before it ran.
struct Captured {
    step: Step,
    before: HashMap<PathBuf, (u64, SystemTime)>,
}

/// What a file step gets: the directory to write into, and ways to report what it read and what
/// it tells cargo, so that a hit can check the one and replay the other.
#[derive(Debug)]
pub struct Step {
    dir: PathBuf,
    discovered: Vec<PathBuf>,
    directives: Vec<String>,
}

impl Step {
    /// The directory to write the outputs into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reports an input the step found while running (a header an included header includes,
    /// an imported `.proto`). It is hashed when the step ends; on a later hit it is hashed again,
    /// and a difference makes the hit a miss.
    pub fn input_file(&mut self, path: impl AsRef<Path>) {
        self.discovered.push(path.as_ref().to_owned());
    }

    /// [`Step::input_file`] for each of these paths.
    pub fn input_files<P: AsRef<Path>>(&mut self, paths: impl IntoIterator<Item = P>) {
        for path in paths {
            self.input_file(path);
        }
    }

    /// Emits a cargo directive now (inside a build script) and stores it with the entry, so a
    /// hit replays it: `step.directive("rustc-link-lib=z")`. A `cargo:` or `cargo::` prefix is
    /// accepted. `rerun-if-changed=PATH` is taken as a discovered input.
    pub fn directive(&mut self, directive: &str) {
        let directive = directive.trim();
        let directive = directive
            .strip_prefix("cargo::")
            .or_else(|| directive.strip_prefix("cargo:"))
            .unwrap_or(directive);
        if let Some(path) = directive.strip_prefix("rerun-if-changed=") {
            self.input_file(path);
            return;
        }
        if cargo::in_build_script() {
            cargo::emit(directive);
        }
        self.directives.push(directive.to_owned());
    }

    /// Records the `cargo:` lines the step printed itself (captured from stdout, already
    /// forwarded to cargo): those it did not also report through [`Step::directive`], and never
    /// memoshelve's own warnings.
    fn record_printed(&mut self, printed: &str) {
        let mut reported = self.directives.clone();
        for line in printed.lines().map(str::trim) {
            let Some(directive) =
                line.strip_prefix("cargo::").or_else(|| line.strip_prefix("cargo:"))
            else {
                continue;
            };
            if directive.starts_with("warning=memoshelve:") {
                continue;
            }
            if let Some(path) = directive.strip_prefix("rerun-if-changed=") {
                self.input_file(path);
            } else if let Some(index) = reported.iter().position(|seen| seen == directive) {
                reported.swap_remove(index);
            } else {
                self.directives.push(directive.to_owned());
            }
        }
    }

    /// Feeds the output of a generator that speaks cargo's protocol (bindgen's
    /// `CargoCallbacks`, a build tool's stdout): every `cargo:` line in `text` is taken as by
    /// [`Step::directive`]; other lines are ignored.
    pub fn cargo_output(&mut self, text: &str) {
        for line in text.lines().map(str::trim).filter(|line| line.starts_with("cargo:")) {
            self.directive(line);
        }
    }
}

/// A `Memo` applied to a step that writes files into a directory; see [`Memo::outputs`].
#[derive(Debug)]
pub struct Outputs<'memo, H> {
    memo: &'memo Memo<H>,
    dir: PathBuf,
}

impl<H> Memo<H> {
    /// Memoizes a step that writes files into `dir` (usually `OUT_DIR` or a folder in it).
    ///
    /// ```
    /// # let cache = tempfile::tempdir()?;
    /// # let out = tempfile::tempdir()?;
    /// use memoshelve_build::{Memo, Status};
    ///
    /// let memo = Memo::new("codegen").dir(cache.path());
    /// let generate = |step: &mut memoshelve_build::Step| {
    ///     std::fs::write(step.dir().join("generated.rs"), "pub const ANSWER: u32 = 42;\n").unwrap();
    /// };
    /// let ((), status) = memo.outputs(out.path()).call_with_status(&"v1", generate);
    /// assert_eq!(status, Status::Miss);
    /// std::fs::remove_file(out.path().join("generated.rs"))?; // as after `cargo clean`
    /// let ((), status) = memo.outputs(out.path()).call_with_status(&"v1", generate);
    /// assert_eq!(status, Status::Disk);
    /// assert!(std::fs::read_to_string(out.path().join("generated.rs"))?.contains("42"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn outputs(&self, dir: impl AsRef<Path>) -> Outputs<'_, H> {
        Outputs { memo: self, dir: dir.as_ref().to_owned() }
    }
}

impl<H> Outputs<'_, H> {
    /// Restores the step's files on a hit, or runs it and stores what it wrote; returns the
    /// step's own value. Never fails because of the cache.
    pub fn call<A: ?Sized, R: Cacheable>(&self, args: &A, step: impl FnOnce(&mut Step) -> R) -> R
    where
        H: ArgsEncoder<A>,
    {
        self.call_with_status(args, step).0
    }

    /// Like [`Outputs::call`], and says where the files came from.
    pub fn call_with_status<A: ?Sized, R: Cacheable>(
        &self,
        args: &A,
        step: impl FnOnce(&mut Step) -> R,
    ) -> (R, Status)
    where
        H: ArgsEncoder<A>,
    {
        match self.run(args, |state| Ok::<R, std::convert::Infallible>(step(state))) {
            Ok(found) => found,
            Err(never) => match never {},
        }
    }

    /// Like [`Outputs::call`] for a fallible step: an `Err` is returned and nothing is stored
    /// (files it wrote stay where they are, but no entry refers to them).
    ///
    /// # Errors
    /// Only the errors of `step`.
    pub fn try_call<A: ?Sized, R: Cacheable, E>(
        &self,
        args: &A,
        step: impl FnOnce(&mut Step) -> Result<R, E>,
    ) -> Result<R, E>
    where
        H: ArgsEncoder<A>,
    {
        self.run(args, step).map(|(value, _)| value)
    }

    fn run<A: ?Sized, R: Cacheable, E>(
        &self,
        args: &A,
        step: impl FnOnce(&mut Step) -> Result<R, E>,
    ) -> Result<(R, Status), E>
    where
        H: ArgsEncoder<A>,
    {
        let memo = self.memo;
        let fresh_step =
            || Step { dir: self.dir.clone(), discovered: Vec::new(), directives: Vec::new() };
        let key = if memo.disabled() { None } else { memo.key_of::<A, FilesOf<R>>(args) };
        let (Some(key), Some(disk)) = (key, memo.disk()) else {
            memo.key_inputs();
            let mut state = fresh_step();
            let value = step(&mut state)?;
            announce_discovered(&state.discovered);
            return Ok((value, Status::Miss));
        };
        let found = memo.memoize(
            key,
            |disk_only| {
                let found =
                    self.restore::<R>(disk, &key).map(|value| ((value, None), Status::Disk));
                // A remote hit is written to disk, then restored from there.
                found.or_else(|| {
                    let fetched = !disk_only && crate::remote::fetch(disk, memo.name(), &key);
                    let value = fetched.then(|| self.restore::<R>(disk, &key))??;
                    Some(((value, None), Status::Remote))
                })
            },
            || {
                // Our own earlier outputs go first, so that a generator that skips rewriting
                // unchanged files still writes every one of them, and all are captured.
                remove_own_outputs(&self.dir, memo.name());
                let before = snapshot(&self.dir);
                let _ = std::fs::create_dir_all(&self.dir);
                let mut state = fresh_step();
                // Inside a build script, what the step prints on stdout is captured too: a
                // generator that prints `cargo:rustc-link-lib=..` itself still links on a hit.
                let value = if cargo::in_build_script() {
                    let (value, printed) = cargo::capture_stdout(|| step(&mut state));
                    if let Some(printed) = printed {
                        state.record_printed(&printed);
                    }
                    value
                } else {
                    step(&mut state)
                }?;
                announce_discovered(&state.discovered);
                Ok((value, Some(Captured { step: state, before })))
            },
            |(value, captured), took| {
                let captured = captured.as_ref().expect("a computed step carries its capture");
                match self.store(disk, &key, value, captured, memo.render_args(args), took) {
                    Ok(()) => crate::remote::write_through(disk, memo.name(), &key),
                    Err(err) => memo.warn_store_failed(&err),
                }
            },
        )?;
        let ((value, _), status) = found;
        Ok((value, status))
    }

    fn restore<R: Cacheable>(&self, disk: &Disk, key: &Key) -> Option<R> {
        let memo = self.memo;
        let (record, manifest, _) = memo.read_entry::<OutputManifest>(disk, key)?;
        let checked = codec::decode::<R>(manifest.result.clone())
            .map_err(|err| {
                disk.corrupt(
                    memo.name(),
                    key,
                    format!("cannot decode as {}: {err}", type_name::<R>()),
                )
            })
            .and_then(|value| {
                match manifest.files.iter().find(|file| safe_relative(&file.path).is_none()) {
                    Some(file) => Err(disk.corrupt(
                        memo.name(),
                        key,
                        format!("unsafe path {:?} in manifest", file.path),
                    )),
                    None => Ok(value),
                }
            });
        let value = match checked {
            Ok(value) => value,
            Err(err) => {
                memo.discard(disk, key, Some(&record), &err);
                return None;
            }
        };
        // The second level of the key: inputs the step discovered must be unchanged.
        let base = inputs::base_dir();
        if manifest.discovered.iter().any(|recorded| inputs::rehash(recorded, &base) != *recorded) {
            return None;
        }
        // Never write through a symbolic link: a link inside the output directory could point
        // anywhere. (Such a directory is a miss; the step runs and writes as it always would.)
        if let Some(file) = manifest.files.iter().find(|file| through_link(&self.dir, &file.path)) {
            cargo::warn_once(
                &format!("link {}", self.dir.display()),
                &format!(
                    "{}: not restoring {:?} into {}: a symbolic link is in the way; running the step",
                    memo.name(),
                    file.path,
                    self.dir.display()
                ),
            );
            return None;
        }
        let ours = read_marker(&marker_path(&self.dir, memo.name()));
        // What to do with each file, in the manifest's order: keep it (`Some(None)`), restore it
        // (`Some(Some(target))`), or leave it alone (`None`).
        let plan: Vec<(&OutputFile, Option<Option<PathBuf>>)> = manifest
            .files
            .iter()
            .map(|file| {
                let target = self.dir.join(safe_relative(&file.path).expect("checked above"));
                let ours = ours.iter().any(|(path, _)| *path == file.path);
                let action = if already_there(&target, file) {
                    (!file.if_missing || ours).then_some(None)
                } else if file.if_missing && !ours && std::fs::symlink_metadata(&target).is_ok() {
                    None // never overwrite a file this step did not put there
                } else {
                    Some(Some(target))
                };
                (file, action)
            })
            .collect();
        let restores: Vec<(&OutputFile, &PathBuf)> = plan
            .iter()
            .filter_map(|(file, action)| Some((*file, action.as_ref()?.as_ref()?)))
            .collect();
        // Files are restored in parallel: a tree of generated sources is many small copies.
        let restored = crate::parallel::map(&restores, |(file, target)| {
            disk.restore_file(&file.blake3, file.size, target, file.mode)
        });
        if let Some(err) = restored.into_iter().find_map(Result::err) {
            memo.discard(disk, key, Some(&record), &err);
            return None;
        }
        let placed = plan.iter().filter(|(_, action)| action.is_some()).map(|(file, _)| *file);
        write_marker(&self.dir, memo.name(), placed);
        let discovered: Vec<PathBuf> =
            manifest.discovered.iter().map(|input| inputs::input_path(input, &base)).collect();
        announce_discovered(&discovered);
        if cargo::in_build_script() {
            for directive in &manifest.directives {
                cargo::emit(&expand_dirs(directive, &self.dir, &base));
            }
        }
        Some(value)
    }

    fn store<R: Cacheable>(
        &self,
        disk: &Disk,
        key: &Key,
        value: &R,
        captured: &Captured,
        args: String,
        took: Duration,
    ) -> Result<()> {
        let mut files = Vec::new();
        // Every blob and then the manifest's index line, under the root's write lock.
        let _guard = disk.write_guard();
        let others = claimed_by_other_steps(&self.dir, self.memo.name());
        for (relative, stamp) in snapshot(&self.dir) {
            let name = inputs::key_path(&relative, Path::new(""));
            let if_missing = captured.before.get(&relative) == Some(&stamp);
            if if_missing && others.contains(&name) {
                continue; // another memoized step's output
            }
            if safe_relative(&name).is_none() {
                return Err(Error::Io {
                    action: "cache a file with this name",
                    path: self.dir.join(&relative),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "a backslash or NUL in the name",
                    ),
                });
            }
            let path = self.dir.join(&relative);
            let meta = std::fs::metadata(&path).map_err(|source| Error::Io {
                action: "read",
                path: path.clone(),
                source,
            })?;
            let (size, blake3) = disk.store_file(&path)?;
            files.push(OutputFile { path: name, mode: mode_of(&meta), size, blake3, if_missing });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        write_marker(&self.dir, self.memo.name(), files.iter().filter(|file| !file.if_missing));
        let base = inputs::base_dir();
        let mut discovered: Vec<KeyInput> =
            captured.step.discovered.iter().map(|path| inputs::file_input(path, &base)).collect();
        discovered.sort();
        discovered.dedup();
        let result = codec::encode(value).map_err(|source| Error::Encode {
            what: "value",
            name: self.memo.name().to_owned(),
            source,
        })?;
        let manifest = OutputManifest {
            files,
            discovered,
            directives: captured
                .step
                .directives
                .iter()
                .map(|line| name_dirs(line, &self.dir, &base))
                .collect(),
            result,
        };
        let bytes = postcard::to_allocvec(&manifest).expect("a manifest always encodes");
        let record = self.memo.record_for(*key, type_name::<FilesOf<R>>(), args, took);
        disk.store(record, &bytes)
    }
}

/// Stands for the output directory in stored directives.
const OUT_PLACEHOLDER: &str = "{memoshelve:out}";
/// Stands for the package directory (`CARGO_MANIFEST_DIR`) in stored directives.
const MANIFEST_PLACEHOLDER: &str = "{memoshelve:manifest}";

/// A directive as stored: the output and package directories named by placeholder, so a hit in
/// another target directory or checkout replays paths that exist there (`cc` prints
/// `rustc-link-search=native=<OUT_DIR>`, for one).
pub(crate) fn name_dirs(directive: &str, out: &Path, manifest: &Path) -> String {
    let mut named = directive.to_owned();
    for (dir, placeholder) in [(out, OUT_PLACEHOLDER), (manifest, MANIFEST_PLACEHOLDER)] {
        let dir = dir.to_string_lossy();
        if !dir.is_empty() {
            named = named.replace(dir.as_ref(), placeholder);
        }
    }
    named
}

/// The reverse of [`name_dirs`], for this build's directories.
pub(crate) fn expand_dirs(directive: &str, out: &Path, manifest: &Path) -> String {
    directive
        .replace(OUT_PLACEHOLDER, &out.to_string_lossy())
        .replace(MANIFEST_PLACEHOLDER, &manifest.to_string_lossy())
}

/// Tells cargo about discovered inputs, so its change detection covers them too.
fn announce_discovered(paths: &[PathBuf]) {
    if cargo::in_build_script() {
        let base = inputs::base_dir();
        for path in paths {
            cargo::rerun_if_changed(&base.join(path));
        }
    }
}

/// Whether `target` already holds exactly this file (then it is left untouched).
fn already_there(target: &Path, file: &OutputFile) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(target) else { return false };
    meta.is_file()
        && meta.len() == file.size
        && mode_of(&meta) == file.mode
        && inputs::hash_file(target).is_ok_and(|hash| hash == file.blake3)
}

/// A manifest path as a relative path that stays inside the output directory, or `None`.
/// Manifests use one spelling per path: `/`-separated segments, none empty, `.` or `..`.
pub(crate) fn safe_relative(path: &str) -> Option<PathBuf> {
    let canonical = path.split('/').all(|segment| !matches!(segment, "" | "." | ".."))
        && !path.contains(['\\', '\0']);
    let relative = PathBuf::from(path);
    let all_normal =
        relative.components().all(|component| matches!(component, Component::Normal(_)));
    (canonical && all_normal).then_some(relative)
}

/// Whether `relative` (already checked by [`safe_relative`]) reaches a symbolic link below
/// `dir`: the file itself or one of its parent directories.
fn through_link(dir: &Path, relative: &str) -> bool {
    let mut path = dir.to_owned();
    relative.split('/').any(|segment| {
        path.push(segment);
        std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.file_type().is_symlink())
    })
}

/// Where a step lists the files it put in its output directory (so that it can tell its own
/// files from others', and remove its stale ones before running again).
const MARKER_DIR: &str = ".memoshelve";

fn marker_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(MARKER_DIR).join(format!("{name}.files"))
}

/// `(relative path, blake3)` lines of a marker file; none if it is missing or unreadable.
fn read_marker(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(hash, path)| (path.to_owned(), hash.to_owned()))
        .collect()
}

/// Records the files this step put in `dir`. Best effort: without it a step only loses the
/// ability to clean its stale outputs first.
fn write_marker<'a>(dir: &Path, name: &str, files: impl Iterator<Item = &'a OutputFile>) {
    let lines: String = files.map(|file| format!("{} {}\n", file.blake3, file.path)).collect();
    let path = marker_path(dir, name);
    let _ =
        std::fs::create_dir_all(dir.join(MARKER_DIR)).and_then(|()| std::fs::write(path, lines));
}

/// Removes the files this step put in `dir` last time, where they are still unmodified.
fn remove_own_outputs(dir: &Path, name: &str) {
    for (path, hash) in read_marker(&marker_path(dir, name)) {
        let Some(relative) = safe_relative(&path) else { continue };
        let target = dir.join(relative);
        if inputs::hash_file(&target).is_ok_and(|current| current == hash) {
            let _ = std::fs::remove_file(target);
        }
    }
}

/// Paths other memoized steps list as theirs in this directory.
fn claimed_by_other_steps(dir: &Path, name: &str) -> std::collections::HashSet<String> {
    let own = format!("{name}.files");
    let Ok(entries) = std::fs::read_dir(dir.join(MARKER_DIR)) else { return Default::default() };
    entries
        .flatten()
        .filter(|entry| entry.file_name() != own.as_str())
        .flat_map(|entry| read_marker(&entry.path()))
        .map(|(path, _)| path)
        .collect()
}

/// Regular files under `dir` (relative paths) with their size and mtime; symlinks and the
/// markers' directory are skipped.
fn snapshot(dir: &Path) -> HashMap<PathBuf, (u64, SystemTime)> {
    let mut files = HashMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&relative)) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let path = relative.join(entry.file_name());
            if path == Path::new(MARKER_DIR) {
                continue;
            }
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                files.insert(path, (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
    }
    files
}
