//! Steps that produce files: `Memo::outputs(dir)`.
//!
//! On a miss the step runs and writes into `dir`; inside a build script what it prints on
//! stdout (its own `println!`s and its child processes') is captured as it goes to cargo. The
//! entry keeps exactly what a clean run of the step produces: every file and in-tree symbolic
//! link it created or changed in `dir` (a blob per file, and a manifest), the directive lines it
//! printed (stored by [`crate::directive`]'s rules, this build's directories as placeholders),
//! and the inputs those lines declared: `rerun-if-changed` paths by content (a directory by its
//! whole tree) and `rerun-if-env-changed` values. On a hit those inputs are checked first (any
//! difference is a miss, like ccache's manifest mode), then the files are restored (files
//! already present and identical are left untouched, so their mtimes do not trigger
//! recompiles), the step's own files of another key are removed, and the lines are replayed
//! byte for byte with this build's directories, all without running the step.
//!
//! Which files are the step's: those that did not exist before it ran, or that it rewrote (size,
//! modification and change times, inode; and, for a file changed in the last two seconds before
//! the step, where a coarse clock could hide a rewrite, its contents). A marker
//! (`dir/.memoshelve/<name>.files`) lists what the step wrote, and which of those it *created*:
//! only created files are ever deleted (when the step runs again, or a hit of another key
//! replaces them, and only while their contents are unchanged), so a file of the user's that the
//! step merely rewrote stays. Before a miss runs, the step's created files go, so it writes all it
//! produces; the files a failed or panicking run created are marked too, so they go next time.
//!
//! A file that was there before and that the step left alone is not its output, except one that
//! no marker claims: a generator that skips rewriting identical files (prost-build) in a
//! directory filled before the cache was on (or while `MEMOSHELVE_DISABLE` was set) leaves its
//! outputs alone, and an entry without them would break the build after `cargo clean`. Such files
//! are stored "if missing": restored only where nothing is, or where the step itself wrote what
//! is there. Files that another step's marker claims are never stored.

pub(crate) mod directive;

pub use crate::tier::disk::manifest::{OutputFile, OutputLink, OutputManifest};

use std::any::type_name;
use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, SystemTime};

use self::directive::Roots;
use crate::cargo;
use crate::error::{Error, Result};
use crate::key::inputs::{self, path_bytes};
use crate::key::{Key, KeyInput};
use crate::memo::codec;
use crate::memo::status::Status;
use crate::memo::{ArgsEncoder, Cacheable, Memo};
use crate::tier::disk::files::mode_of;
use crate::tier::disk::manifest::{FilesOf, path_from_bytes, safe_relative};
use crate::tier::disk::{Disk, EntryRecord};

/// How a file step's result was had.
enum Run {
    /// Restored from an entry; these lines (this build's paths) are for cargo.
    Restored(Vec<String>),
    /// Computed; what to store, or why it cannot be.
    Computed(std::result::Result<Captured, String>),
}

/// How many recorded runs one key keeps (DESIGN section 9: several runs may share a level-1
/// key, the first whose declared inputs all match is the hit): an input that goes A, B, A hits
/// on the way back. The newest is the entry of the key itself; older ones are kept under keys
/// derived from it ([`run_key`]), least recently used out.
const RUNS_PER_KEY: u8 = 4;

/// The key of the `slot`th recorded run of `key` (slot 0 is `key` itself).
fn run_key(key: &Key, slot: u8) -> Key {
    if slot == 0 {
        return *key;
    }
    let derived = blake3::keyed_hash(key.as_bytes(), &[b'r', slot]);
    Key::from_hex(&derived.to_hex()).expect("a blake3 hex is a key")
}

/// What became of one call of a file step: where its files came from, and, on a miss, why no
/// stored run served and whether this one was stored. For callers that keep a record of their
/// own, as `cargo-memoshelve`'s build-script runner does.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Where the files came from.
    pub status: Status,
    /// On a miss, why the newest run stored under this key did not serve: the first of its
    /// inputs that changed (`file {memoshelve:manifest}/x.h`, `env NAME`), or the check that
    /// failed. `None` when no run was stored under the key (or on a hit).
    pub missed: Option<String>,
    /// On a miss, why this run was not stored; `None` when it was (or on a hit).
    pub not_stored: Option<String>,
}

/// What a miss leaves to store: the directive lines it printed, and the directory as it was
/// before it ran.
struct Captured {
    lines: Vec<String>,
    before: Snapshot,
}

/// What a file step gets: the directory to write into, and ways to report what it read and what
/// it tells cargo, so that a hit can check the one and replay the other.
#[derive(Debug)]
pub struct Step {
    dir: PathBuf,
    /// The lines the step reported (inside a build script they also go to stdout, captured).
    lines: Vec<String>,
    /// Why no stored run served (see [`Report::missed`]).
    missed: Option<String>,
}

impl Step {
    /// The directory to write the outputs into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why the step runs: the first input of the newest run stored under this key that changed
    /// (`file {memoshelve:manifest}/x.h`, `env NAME`), or the check it failed; `None` when no run
    /// is stored under the key, or the cache is off. The same as the call's [`Report::missed`].
    pub fn missed(&self) -> Option<&str> {
        self.missed.as_deref()
    }

    /// Reports an input the step found while running (a header an included header includes,
    /// an imported `.proto`): the same as printing `cargo:rerun-if-changed=PATH`. It is hashed
    /// when the step ends (a directory as its whole tree); on a later hit it is hashed again,
    /// and a difference makes the hit a miss.
    pub fn input_file(&mut self, path: impl AsRef<Path>) {
        let path = inputs::base_dir().join(path);
        self.report(format!("cargo:rerun-if-changed={}", path.display()));
    }

    /// [`Step::input_file`] for each of these paths.
    pub fn input_files<P: AsRef<Path>>(&mut self, paths: impl IntoIterator<Item = P>) {
        for path in paths {
            self.input_file(path);
        }
    }

    /// Emits a cargo directive now (inside a build script) and stores it with the entry, so a
    /// hit replays it: `step.directive("rustc-link-lib=z")` prints `cargo:rustc-link-lib=z`. A
    /// `cargo:` or `cargo::` prefix is kept as given. A directive is one line: a line break
    /// inside becomes a space. `rerun-if-changed` and `rerun-if-env-changed` also join the
    /// entry's inputs, as when the step prints them itself.
    pub fn directive(&mut self, directive: &str) {
        let line = directive.trim().replace(['\n', '\r'], " ");
        let line = if line.starts_with("cargo:") { line } else { format!("cargo:{line}") };
        self.report(line);
    }

    /// Inside a build script the line is printed now (and captured); it is kept in any case,
    /// so that a step whose stdout other threads share can tell its own lines (`own_lines`).
    fn report(&mut self, line: String) {
        if cargo::in_build_script() {
            cargo::print_line(&line);
        }
        self.lines.push(line);
    }

    /// Feeds the output of a generator that speaks cargo's protocol (bindgen's
    /// `CargoCallbacks`, a build tool's stdout): every line of `text` that cargo would read as a
    /// directive is taken as by [`Step::directive`]; other lines are ignored.
    pub fn cargo_output(&mut self, text: &str) {
        for line in text.lines().filter(|line| directive::parse(line).is_some()) {
            self.directive(line);
        }
    }
}

/// A `Memo` applied to a step that writes files into a directory; see [`Memo::outputs`].
#[derive(Debug)]
pub struct Outputs<'memo, H> {
    memo: &'memo Memo<H>,
    dir: PathBuf,
    /// The step's files, when it names them ([`Outputs::only`]).
    only: Option<Vec<PathBuf>>,
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
        Outputs { memo: self, dir: dir.as_ref().to_owned(), only: None }
    }
}

impl<H> Outputs<'_, H> {
    /// Names the step's outputs: exactly these files of the directory (relative paths), which
    /// the step must write. Nothing else of the directory is looked at, so a directory that other
    /// processes write into at the same time (a compiler's shared output directory) is fine:
    /// no snapshot before and after, no marker of the step's files, no file of another key
    /// removed. A hit writes every named file anew (as the step would have), each by a rename.
    /// Inside a build script the step's stdout is not captured: report its directives through
    /// [`Step::directive`].
    #[must_use]
    pub fn only<P: AsRef<Path>>(mut self, files: impl IntoIterator<Item = P>) -> Self {
        self.only = Some(files.into_iter().map(|file| file.as_ref().to_owned()).collect());
        self
    }

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
        match self
            .try_call_with_status(args, |state| Ok::<R, std::convert::Infallible>(step(state)))
        {
            Ok(found) => found,
            Err(never) => match never {},
        }
    }

    /// Like [`Outputs::call`] for a fallible step: an `Err` is returned and nothing is stored.
    /// The files it created stay where they are, listed as the step's own, so that its next run
    /// removes them first.
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
        self.try_call_with_status(args, step).map(|(value, _)| value)
    }

    /// Like [`Outputs::try_call`], and says where the files came from.
    ///
    /// # Errors
    /// Only the errors of `step`.
    pub fn try_call_with_status<A: ?Sized, R: Cacheable, E>(
        &self,
        args: &A,
        step: impl FnOnce(&mut Step) -> Result<R, E>,
    ) -> Result<(R, Status), E>
    where
        H: ArgsEncoder<A>,
    {
        self.try_call_with_report(args, step).map(|(value, report)| (value, report.status))
    }

    /// Like [`Outputs::try_call`], and reports what became of the call: where the files came
    /// from, why a miss missed, and whether its run was stored ([`Report`]).
    ///
    /// # Errors
    /// Only the errors of `step`.
    pub fn try_call_with_report<A: ?Sized, R: Cacheable, E>(
        &self,
        args: &A,
        step: impl FnOnce(&mut Step) -> Result<R, E>,
    ) -> Result<(R, Report), E>
    where
        H: ArgsEncoder<A>,
    {
        let memo = self.memo;
        let uncached = |why: &str| Report {
            status: Status::Miss,
            missed: None,
            not_stored: Some(why.to_owned()),
        };
        let key = if memo.disabled() { None } else { memo.key_of::<A, FilesOf<R>>(args) };
        let (Some(key), Some(disk)) = (key, memo.disk()) else {
            // Exactly as with the cache on, minus the cache: the same inputs resolved (their
            // rerun directives), the directory made before the step runs.
            memo.key_inputs();
            let why = match memo.root_problem() {
                _ if memo.disabled() => "the cache is off",
                Some(problem) => problem,
                None => "no usable cache root",
            };
            return self.run_uncached(step).map(|(value, _)| (value, uncached(why)));
        };
        // One file step at a time in a process: a step's before/after snapshots must not see
        // another's files appear, and standard output is the process's.
        let Some(_turn) = StepTurn::take(memo.lock_timeout()) else {
            cargo::warn_once(
                &format!("turn {}", memo.name()),
                &format!(
                    "{}: waited {}s for a file step on another thread (a file step must not wait \
                     for one on another thread); running it uncached",
                    memo.name(),
                    memo.lock_timeout().as_secs()
                ),
            );
            let why = "a file step on another thread held its turn";
            return self.run_uncached(step).map(|(value, _)| (value, uncached(why)));
        };
        let roots = self.roots();
        // Why the newest stored run did not serve (the last lookup's word), and why a computed
        // run was not stored.
        let missed = std::cell::RefCell::new(None);
        let mut not_stored = None;
        let found = memo.memoize(
            key,
            |disk_only| {
                memo.read_stored_tiers(&key, disk_only, |disk| {
                    let (found, why) = self.restore_any::<R>(disk, &key, &roots);
                    *missed.borrow_mut() = why;
                    found
                })
            },
            || self.compute(step, missed.borrow().clone()),
            |(value, run), took| {
                let captured = match run {
                    Run::Computed(Ok(captured)) => captured,
                    Run::Computed(Err(why)) => return not_stored = Some(why.clone()),
                    Run::Restored(_) => return,
                };
                let args = memo.render_args(args);
                let stored = self.store(disk, &key, value, captured, &roots, args, took);
                if let Err(err) = memo.written(disk, &key, stored) {
                    memo.warn_store_failed(&err);
                    not_stored = Some(err.to_string());
                }
            },
        )?;
        let ((value, run), status) = found;
        // Replayed only now: an audit that recomputes a hit has printed the fresh lines itself.
        if let Run::Restored(lines) = run
            && cargo::in_build_script()
        {
            for line in &lines {
                cargo::print_line(line);
            }
        }
        let missed = if status == Status::Miss { missed.into_inner() } else { None };
        Ok((value, Report { status, missed, not_stored }))
    }

    /// Runs the step with no cache, as it runs with one: its directory made first.
    fn run_uncached<R, E>(
        &self,
        step: impl FnOnce(&mut Step) -> Result<R, E>,
    ) -> Result<(R, Status), E> {
        let _ = std::fs::create_dir_all(&self.dir);
        let value = step(&mut Step { dir: self.dir.clone(), lines: Vec::new(), missed: None })?;
        Ok((value, Status::Miss))
    }

    /// The directories that stored lines and inputs name by placeholder: the step's directory,
    /// `OUT_DIR`, the package's directory, and the target dir's profile parent that `OUT_DIR`
    /// is in (`<target>[/<triple>]`, where a `links` provider's OUT_DIR is too: a line naming
    /// `DEP_Z_INCLUDE` restores naming this build's).
    fn roots(&self) -> Roots {
        let base = inputs::base_dir();
        let dir = std::path::absolute(&self.dir).unwrap_or_else(|_| self.dir.clone());
        let out = std::env::var_os("OUT_DIR").map(PathBuf::from);
        let target = out.as_deref().and_then(cargo::target_of);
        let mut roots = vec![("dir", dir.as_path()), ("manifest", base.as_path())];
        roots.extend(out.as_deref().map(|out| ("out", out)));
        roots.extend(target.map(|target| ("target", target)));
        Roots::new(roots)
    }

    /// A miss: runs the step, with its stdout captured inside a build script.
    fn compute<R, E>(
        &self,
        step: impl FnOnce(&mut Step) -> Result<R, E>,
        missed: Option<String>,
    ) -> Result<(R, Run), E> {
        let name = self.memo.name();
        if self.only.is_some() {
            let _ = std::fs::create_dir_all(&self.dir);
            let mut state = Step { dir: self.dir.clone(), lines: Vec::new(), missed };
            let value = step(&mut state)?;
            let captured = Captured { lines: state.lines, before: Snapshot::new() };
            return Ok((value, Run::Computed(Ok(captured))));
        }
        // The step's own files of an earlier run go first, so that a generator that skips
        // rewriting unchanged files still writes every one of them, and all are seen.
        remove_own_outputs(&self.dir, name);
        let before = snapshot(&self.dir, Some(SystemTime::now()));
        let _ = std::fs::create_dir_all(&self.dir);
        let mut state = Step { dir: self.dir.clone(), lines: Vec::new(), missed };
        // Until the step has returned `Ok`, the files it creates are listed as its own: a
        // failed or panicking run leaves nothing that a later run could take for another's.
        let pending = MarkCreated { dir: &self.dir, name, before: &before };
        // Standard output is the process's: with other threads running, a line may be theirs.
        let shared = cargo::in_build_script() && cargo::other_threads_running();
        let (value, printed) = if cargo::in_build_script() {
            let (value, printed) = cargo::capture_stdout(|| step(&mut state));
            (value, Some(printed))
        } else {
            (step(&mut state), None)
        };
        let value = value?;
        std::mem::forget(pending);
        let lines = match printed {
            None => state.lines,
            Some(Some(bytes)) if shared => match own_lines(&stdout_lines(&bytes), state.lines) {
                Ok(lines) => lines,
                Err(line) => {
                    let why = format!(
                        "other threads ran while it printed {line:?}, which it did not report \
                         through `Step`: the line may be theirs (report the step's directives \
                         with `Step::directive` or `Step::cargo_output` to cache it)"
                    );
                    cargo::warn_once(
                        &format!("threads {name}"),
                        &format!("{name}: not cached: {why}"),
                    );
                    return Ok((value, Run::Computed(Err(why))));
                }
            },
            Some(Some(bytes)) => stdout_lines(&bytes),
            Some(None) => {
                let why = "the step's stdout could not be captured (a descriptor call failed)";
                cargo::warn_once(
                    &format!("capture {name}"),
                    &format!("{name}: {why}: it ran, and is not cached"),
                );
                return Ok((value, Run::Computed(Err(why.to_owned()))));
            }
        };
        Ok((value, Run::Computed(Ok(Captured { lines, before }))))
    }

    /// The first of the key's recorded runs ([`RUNS_PER_KEY`]) that restores, newest first; a
    /// hit on an older one makes it the newest. Else why the newest one present did not serve
    /// (`None` when none is).
    fn restore_any<R: Cacheable>(
        &self,
        disk: &Disk,
        key: &Key,
        roots: &Roots,
    ) -> (Option<(R, Run)>, Option<String>) {
        let mut missed = None;
        for slot in 0..RUNS_PER_KEY {
            match self.restore::<R>(disk, &run_key(key, slot), roots) {
                Ok(found) => {
                    if slot > 0 {
                        self.promote(disk, key, slot);
                    }
                    return (Some(found), None);
                }
                Err(why) => missed = missed.or(why),
            }
        }
        (None, missed)
    }

    /// Makes the run in `slot` the key's newest, the newer ones one older each.
    fn promote(&self, disk: &Disk, key: &Key, slot: u8) {
        let _guard = disk.write_guard();
        let runs: Vec<_> = (0..=slot)
            .filter_map(|slot| disk.find(self.memo.name(), &run_key(key, slot)).ok().flatten())
            .collect();
        if runs.len() != usize::from(slot) + 1 {
            return; // changed meanwhile: left as it is
        }
        let order = runs.iter().skip(usize::from(slot)).chain(&runs[..usize::from(slot)]);
        for (to, record) in order.enumerate() {
            let mut record = record.clone();
            record.key = run_key(key, to as u8).to_hex();
            let _ = disk.insert_record(&record);
        }
    }

    /// The run stored under `key`, checked and restored into the directory; else why not
    /// (`None`: nothing stored).
    fn restore<R: Cacheable>(
        &self,
        disk: &Disk,
        key: &Key,
        roots: &Roots,
    ) -> std::result::Result<(R, Run), Option<String>> {
        let memo = self.memo;
        let Some((_, manifest, _)) = memo.read_entry::<OutputManifest>(disk, key) else {
            return Err(None);
        };
        let unsafe_path = manifest
            .files
            .iter()
            .map(|file| &file.path)
            .chain(manifest.links.iter().map(|link| &link.path))
            .chain(&manifest.dirs)
            .find(|path| safe_relative(path).is_none());
        let bad_link = manifest.links.iter().find(|link| {
            let (path, target) = (path_from_bytes(&link.path), path_from_bytes(&link.target));
            !path.zip(target).is_some_and(|(path, target)| stays_inside(&path, &target))
        });
        let checked = codec::decode::<R>(manifest.result.clone())
            .map_err(|err| format!("cannot decode as {}: {err}", type_name::<R>()))
            .and_then(|value| match (unsafe_path, bad_link) {
                (Some(path), _) => {
                    Err(format!("unsafe path {:?} in manifest", String::from_utf8_lossy(path)))
                }
                (None, Some(link)) => Err(format!(
                    "link {:?} in manifest leaves the directory",
                    String::from_utf8_lossy(&link.path)
                )),
                (None, None) => Ok(value),
            });
        let value = match checked {
            Ok(value) => value,
            Err(reason) => {
                memo.discard(disk, key, &disk.corrupt(memo.name(), key, reason));
                return Err(Some("its entry was damaged".to_owned()));
            }
        };
        // A step's value that fails the `Memo::validate` check of its type: a miss, as for values.
        if !memo.is_valid(&value) {
            return Err(Some("its value failed the `Memo::validate` check".to_owned()));
        }
        // The second level of the key: the inputs the step declared must be unchanged.
        let produced = produced_paths(&manifest);
        let changed = manifest.discovered.iter().find(|recorded| {
            let current = match recorded.kind.as_str() {
                "env" => Some(env_input(&recorded.name, roots)),
                _ => {
                    let path = PathBuf::from(roots.expand(&recorded.name));
                    self.discovered_input(recorded.name.clone(), &path, &produced)
                }
            };
            current.is_some_and(|current| current != **recorded)
        });
        if let Some(changed) = changed {
            return Err(Some(format!("{} {}", changed.kind, changed.name)));
        }
        // Never write through a symbolic link: a link inside the output directory could point
        // anywhere. (Such a directory is a miss; the step runs and writes as it always would.)
        let mut in_the_way =
            produced.iter().copied().chain(manifest.dirs.iter().map(Vec::as_slice));
        if let Some(path) = in_the_way.find(|path| through_link(&self.dir, path)) {
            cargo::warn_once(
                &format!("link {}", self.dir.display()),
                &format!(
                    "{}: not restoring {:?} into {}: a symbolic link is in the way; running the step",
                    memo.name(),
                    String::from_utf8_lossy(path),
                    self.dir.display()
                ),
            );
            return Err(Some("a symbolic link is in the way of its files".to_owned()));
        }
        let target_of = |path: &[u8]| self.dir.join(safe_relative(path).expect("checked above"));
        let ours: HashMap<Vec<u8>, Record> = if self.only.is_some() {
            HashMap::new()
        } else {
            read_marker(&marker_path(&self.dir, memo.name()))
                .into_iter()
                .map(|record| (record.path.clone(), record))
                .collect()
        };
        // An "if missing" file is left alone where something is that this step did not write.
        let mut left_alone = HashSet::new();
        let mut placed = Vec::new();
        for (mut record, if_missing) in owned_records(&manifest) {
            let present = std::fs::symlink_metadata(target_of(&record.path)).is_ok();
            let old = ours.get(&record.path);
            if if_missing && present && old.is_none() {
                left_alone.insert(record.path);
                continue;
            }
            record.created = if present { old.is_some_and(|old| old.created) } else { !if_missing };
            placed.push(record);
        }
        let restores: Vec<(&OutputFile, PathBuf)> = manifest
            .files
            .iter()
            .filter(|file| !left_alone.contains(&file.path))
            .map(|file| (file, target_of(&file.path)))
            .filter(|(file, target)| self.only.is_some() || !already_there(target, file))
            .collect();
        // What a failed restore must take away again, so that the step runs on the directory as
        // it was: the paths that were not there before.
        let absent: Vec<PathBuf> = restores
            .iter()
            .map(|(_, target)| target.clone())
            .chain(manifest.links.iter().map(|link| target_of(&link.path)))
            .chain(manifest.dirs.iter().map(|dir| target_of(dir)))
            .filter(|path| std::fs::symlink_metadata(path).is_err())
            .collect();
        // Files are restored in parallel: a tree of generated sources is many small copies.
        let restored = crate::parallel::map(&restores, |(file, target)| {
            disk.restore_file(&file.blake3, file.size, target, file.mode)
        });
        let linked = manifest.links.iter().map(|link| restore_link(&target_of(&link.path), link));
        let made = manifest.dirs.iter().map(|dir| {
            let path = target_of(dir);
            std::fs::create_dir_all(&path).map_err(|source| Error::Io {
                action: "restore the empty directory",
                path,
                source,
            })
        });
        if let Some(err) = restored.into_iter().chain(linked).chain(made).find_map(Result::err) {
            memo.discard(disk, key, &err);
            for path in absent.iter().rev() {
                let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir(path));
            }
            remove_empty_parents(&self.dir, &absent);
            return Err(Some(format!("its files could not be restored ({err})")));
        }
        // What the step created here for another key goes.
        for old in ours.values() {
            if old.created
                && !produced.contains(old.path.as_slice())
                && let Some(relative) = safe_relative(&old.path)
                && old.what.matches(&self.dir.join(&relative))
            {
                let _ = std::fs::remove_file(self.dir.join(relative));
            }
        }
        if self.only.is_none() {
            write_marker(&self.dir, memo.name(), &placed);
        }
        let lines = manifest.directives.iter().map(|line| roots.expand(line)).collect();
        Ok((value, Run::Restored(lines)))
    }

    /// A path the step declared, as a key part, or `None` for one of the step's own outputs
    /// (restored with the entry: after `cargo clean` it would be missing and never hit). A
    /// directory inside the step's directory is hashed without the step's outputs in it.
    fn discovered_input(
        &self,
        name: String,
        path: &Path,
        produced: &HashSet<&[u8]>,
    ) -> Option<KeyInput> {
        let own = |path: &Path| {
            path.strip_prefix(&self.dir).is_ok_and(|relative| {
                relative == Path::new(MARKER_DIR)
                    || produced.contains(path_bytes(relative).as_slice())
            })
        };
        if own(path) {
            return None;
        }
        Some(inputs::path_input(name, path, &|below| own(&path.join(below))))
    }

    #[expect(clippy::too_many_arguments, reason = "one call site, each part distinct")]
    fn store<R: Cacheable>(
        &self,
        disk: &Disk,
        key: &Key,
        value: &R,
        captured: &Captured,
        roots: &Roots,
        args: String,
        took: Duration,
    ) -> Result<()> {
        let name = self.memo.name();
        let uncacheable = |reason: String| Error::Uncacheable { name: name.to_owned(), reason };
        let (mut files, mut links, mut dirs, mut created) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // Every blob and then the manifest's record, under the root's write lock.
        let _guard = disk.write_guard();
        let claimed =
            if self.only.is_some() { HashSet::new() } else { claimed_by_others(&self.dir, name) };
        let seen = match &self.only {
            Some(only) => named_files(&self.dir, only).map_err(uncacheable)?,
            None => snapshot(&self.dir, None),
        };
        for (relative, seen) in seen {
            let before = captured.before.get(&relative);
            let path = self.dir.join(&relative);
            let name = path_bytes(&relative);
            let changed = seen.changed_since(before, &path);
            if !changed
                && (claimed.contains(&name) || matches!(seen, Seen::Link(_) | Seen::EmptyDir))
            {
                continue; // there before, left alone, and someone else's
            }
            if safe_relative(&name).is_none() {
                return Err(uncacheable(format!("{} has a backslash in its name", path.display())));
            }
            if before.is_none() && !matches!(seen, Seen::EmptyDir) {
                created.push(name.clone());
            }
            match seen {
                Seen::EmptyDir => dirs.push(name),
                Seen::File { mode, .. } => {
                    let (size, blake3) = disk.store_file(&path)?;
                    files.push(OutputFile { path: name, mode, size, blake3, if_missing: !changed });
                }
                Seen::Link(target) if stays_inside(&relative, &target) && cfg!(unix) => {
                    links.push(OutputLink { path: name, target: path_bytes(&target) });
                }
                Seen::Link(target) => {
                    return Err(uncacheable(format!(
                        "{} is a symbolic link to {}, outside the output directory",
                        path.display(),
                        target.display()
                    )));
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        links.sort_by(|a, b| a.path.cmp(&b.path));
        dirs.sort();
        let mut manifest = OutputManifest {
            files,
            links,
            dirs,
            discovered: Vec::new(),
            directives: captured.lines.iter().map(|line| roots.name(line)).collect(),
            result: Vec::new(),
        };
        let written: Vec<Record> = owned_records(&manifest)
            .filter(|(_, if_missing)| !if_missing)
            .map(|(mut record, _)| {
                record.created = created.contains(&record.path);
                record
            })
            .collect();
        if self.only.is_none() {
            write_marker(&self.dir, name, &written);
        }
        let base = inputs::base_dir();
        let produced = produced_paths(&manifest);
        let mut discovered: Vec<KeyInput> = captured
            .lines
            .iter()
            .filter_map(|line| {
                let directive = directive::parse(line)?;
                match directive.key {
                    "rerun-if-env-changed" => Some(env_input(directive.value, roots)),
                    "rerun-if-changed" => {
                        let path = base.join(directive.value);
                        self.discovered_input(roots.name(&path.to_string_lossy()), &path, &produced)
                    }
                    _ => None,
                }
            })
            .collect();
        discovered.sort();
        discovered.dedup();
        manifest.discovered = discovered;
        manifest.result = codec::encode(value).map_err(|source| Error::Encode {
            what: "value",
            name: name.to_owned(),
            source: source.into(),
        })?;
        let bytes = postcard::to_allocvec(&manifest).expect("a manifest always encodes");
        let record = self.memo.record_for(*key, type_name::<FilesOf<R>>(), args, took);
        self.keep_older_runs::<R>(disk, key, &manifest.discovered);
        disk.store(record, &bytes)
    }

    /// Before a new run is stored under `key`: the runs stored for it that the new one does
    /// not supersede move one slot older, the oldest beyond [`RUNS_PER_KEY`] dropping out. A
    /// run is superseded when it would have served this build: the same declared inputs, with
    /// the same values, and a value that passes `Memo::validate` here.
    fn keep_older_runs<R: Cacheable>(&self, disk: &Disk, key: &Key, discovered: &[KeyInput]) {
        let memo = self.memo;
        let mut kept: Vec<EntryRecord> = (0..RUNS_PER_KEY)
            .filter_map(|slot| memo.read_entry::<OutputManifest>(disk, &run_key(key, slot)))
            .filter(|(_, manifest, _)| {
                manifest.discovered != discovered
                    || !codec::decode::<R>(manifest.result.clone())
                        .is_ok_and(|value| memo.is_valid(&value))
            })
            .map(|(record, _, _)| record)
            .collect();
        kept.truncate(usize::from(RUNS_PER_KEY) - 1);
        for (older, record) in (1..).zip(&mut kept) {
            record.key = run_key(key, older).to_hex();
            let _ = disk.insert_record(record);
        }
        for slot in (kept.len() + 1)..usize::from(RUNS_PER_KEY) {
            let _ = disk.remove(memo.name(), &run_key(key, slot as u8));
        }
    }
}

/// The right to run a file step in this process: held by one thread at a time, any number of
/// times over on that thread (a step inside a step).
struct StepTurn;

static STEP_TURN: Mutex<Option<(ThreadId, usize)>> = Mutex::new(None);
static STEP_DONE: Condvar = Condvar::new();

impl StepTurn {
    /// Waits at most `wait` for another thread's step to end.
    fn take(wait: Duration) -> Option<StepTurn> {
        let me = std::thread::current().id();
        let owner = STEP_TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (mut owner, _) = STEP_DONE
            .wait_timeout_while(owner, wait, |owner| owner.is_some_and(|(thread, _)| thread != me))
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match owner.as_mut() {
            Some((thread, depth)) if *thread == me => *depth += 1,
            Some(_) => return None,
            None => *owner = Some((me, 1)),
        }
        Some(StepTurn)
    }
}

impl Drop for StepTurn {
    fn drop(&mut self) {
        let mut owner = STEP_TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, depth)) = owner.as_mut() {
            *depth -= 1;
            if *depth == 0 {
                *owner = None;
                STEP_DONE.notify_all();
            }
        }
    }
}

/// The lines of a step's captured stdout as printed (cargo keeps every line in its `output`
/// file, directive or not), but lines that are not UTF-8 and memoshelve's own warnings: they
/// speak of this run, not of the step's output.
fn stdout_lines(printed: &[u8]) -> Vec<String> {
    directive::lines_of(printed)
        .filter(|line| {
            !directive::parse(line).is_some_and(|directive| {
                directive.key == "warning" && directive.value.starts_with("memoshelve:")
            })
        })
        .map(str::to_owned)
        .collect()
}

/// The lines to store for a step whose stdout other threads shared: those it reported through
/// [`Step`], when every directive line printed meanwhile is one of them; else the first line
/// that could be another thread's (`Err`), and nothing is stored. Other lines are left out:
/// nothing tells whose they are.
fn own_lines(
    printed: &[String],
    reported: Vec<String>,
) -> std::result::Result<Vec<String>, String> {
    let mut unclaimed: Vec<&str> = reported.iter().map(String::as_str).collect();
    for line in printed.iter().filter(|line| directive::parse(line).is_some()) {
        match unclaimed.iter().position(|own| own == line) {
            Some(at) => {
                unclaimed.swap_remove(at);
            }
            None => return Err(line.clone()),
        }
    }
    Ok(reported)
}

/// Removes the directories between `dir` and each of `paths` that are empty now (made for a
/// restore that failed), deepest first; `dir` itself stays.
fn remove_empty_parents(dir: &Path, paths: &[PathBuf]) {
    let mut parents: Vec<&Path> = paths
        .iter()
        .flat_map(|path| path.ancestors().skip(1))
        .filter(|parent| parent.starts_with(dir) && *parent != dir)
        .collect();
    parents.sort_by_key(|parent| std::cmp::Reverse(parent.components().count()));
    parents.dedup();
    for parent in parents {
        let _ = std::fs::remove_dir(parent);
    }
}

/// The paths of every file and link of a manifest.
fn produced_paths(manifest: &OutputManifest) -> HashSet<&[u8]> {
    manifest
        .files
        .iter()
        .map(|file| file.path.as_slice())
        .chain(manifest.links.iter().map(|link| link.path.as_slice()))
        .collect()
}

/// Every file and link of a manifest as a marker record (not yet created), and whether it is
/// an "if missing" file.
fn owned_records(manifest: &OutputManifest) -> impl Iterator<Item = (Record, bool)> + '_ {
    let files = manifest.files.iter().map(|file| {
        let what = Owned::File(file.blake3.clone());
        (Record { path: file.path.clone(), what, created: false }, file.if_missing)
    });
    let links = manifest.links.iter().map(|link| {
        let what = Owned::Link(link.target.clone());
        (Record { path: link.path.clone(), what, created: false }, false)
    });
    files.chain(links)
}

/// A declared variable as a key part, its value with this build's directories as placeholders
/// (`OUT_DIR` itself, a provider's `DEP_*_INCLUDE` in the target dir), so that it compares
/// equal at another checkout path and target dir.
fn env_input(name: &str, roots: &Roots) -> KeyInput {
    let mut input = inputs::env_input(name);
    input.value = roots.name(&input.value);
    input
}

/// Puts a symbolic link in place atomically (a temporary link renamed over the path).
fn restore_link(path: &Path, link: &OutputLink) -> Result<()> {
    let target = path_from_bytes(&link.target).unwrap_or_default();
    if std::fs::read_link(path).is_ok_and(|current| current == target) {
        return Ok(());
    }
    let parent = path.parent().expect("restored links are inside the output dir");
    let temp = parent.join(crate::tier::disk::files::short_temp_name());
    let made = std::fs::create_dir_all(parent)
        .and_then(|()| make_symlink(&target, &temp))
        .and_then(|()| std::fs::rename(&temp, path));
    made.map_err(|source| {
        let _ = std::fs::remove_file(&temp);
        Error::Io { action: "restore the symbolic link", path: path.to_owned(), source }
    })
}

fn make_symlink(target: &Path, path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(target, path)
    }
    #[cfg(not(unix))]
    {
        let _ = (target, path);
        Err(std::io::Error::other("symbolic links are not restored on this platform"))
    }
}

/// Whether a link at `relative` (inside a directory) pointing to `target` stays inside it:
/// `target` is relative and never climbs above the directory.
fn stays_inside(relative: &Path, target: &Path) -> bool {
    let mut depth = relative.components().count().saturating_sub(1);
    !target.as_os_str().is_empty()
        && target.components().all(|component| match component {
            Component::Normal(_) => {
                depth += 1;
                true
            }
            Component::CurDir => true,
            Component::ParentDir => depth.checked_sub(1).map(|up| depth = up).is_some(),
            Component::RootDir | Component::Prefix(_) => false,
        })
}

/// Whether `target` already holds exactly this file (then it is left untouched).
fn already_there(target: &Path, file: &OutputFile) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(target) else { return false };
    meta.is_file()
        && meta.len() == file.size
        && mode_of(&meta) == file.mode
        && inputs::hash_file(target).is_ok_and(|hash| hash == file.blake3)
}

/// Whether a manifest path (already checked by [`safe_relative`]) has a symbolic link among
/// its parent directories below `dir`. (The path itself may be one: a rename replaces it.)
fn through_link(dir: &Path, relative: &[u8]) -> bool {
    let Some(relative) = safe_relative(relative) else { return true };
    let mut path = dir.to_owned();
    let parents = relative.parent().map(Path::components).into_iter().flatten();
    parents.into_iter().any(|segment| {
        path.push(segment);
        std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.file_type().is_symlink())
    })
}

/// Where a step lists the files it created in its output directory (so that it can tell its
/// own files from others', and remove its stale ones before running again).
const MARKER_DIR: &str = ".memoshelve";

fn marker_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(MARKER_DIR).join(format!("{name}.files"))
}

/// How a marker knows a file or link as the step's: by its contents, or its target.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owned {
    File(String),
    Link(Vec<u8>),
}

impl Owned {
    /// Whether `path` still holds what the step put there.
    fn matches(&self, path: &Path) -> bool {
        match self {
            Owned::File(hash) => {
                !std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_symlink())
                    && inputs::hash_file(path).is_ok_and(|current| current == *hash)
            }
            Owned::Link(target) => {
                std::fs::read_link(path).is_ok_and(|current| path_bytes(&current) == *target)
            }
        }
    }
}

/// One path a marker lists: what the step wrote there, and whether it created it (only then
/// may it delete it).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    path: Vec<u8>,
    what: Owned,
    created: bool,
}

/// The records of a marker file; none if it is missing or unreadable. A record is a tag (`f`
/// a created file, `w` a file written over, `l` and `m` the same for links), the blake3 or the
/// link's target, a NUL, the path, a NUL (names may hold any byte but NUL).
fn read_marker(path: &Path) -> Vec<Record> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut fields = bytes.split(|&byte| byte == 0);
    let mut records = Vec::new();
    while let (Some(tag), Some(path)) = (fields.next(), fields.next()) {
        let Some((&kind, rest)) = tag.split_first() else { continue };
        let (what, created) = match kind {
            b'f' | b'w' => (Owned::File(String::from_utf8_lossy(rest).into_owned()), kind == b'f'),
            b'l' | b'm' => (Owned::Link(rest.to_vec()), kind == b'l'),
            _ => continue,
        };
        records.push(Record { path: path.to_vec(), what, created });
    }
    records
}

/// Records what this step put in `dir`. Best effort: without it a step only loses the ability
/// to clean its stale outputs first.
fn write_marker(dir: &Path, name: &str, records: &[Record]) {
    let mut bytes = Vec::new();
    for record in records {
        let (kind, what) = match &record.what {
            Owned::File(hash) => (if record.created { b'f' } else { b'w' }, hash.as_bytes()),
            Owned::Link(target) => (if record.created { b'l' } else { b'm' }, target.as_slice()),
        };
        bytes.push(kind);
        bytes.extend_from_slice(what);
        bytes.push(0);
        bytes.extend_from_slice(&record.path);
        bytes.push(0);
    }
    let _ = std::fs::create_dir_all(dir.join(MARKER_DIR))
        .and_then(|()| std::fs::write(marker_path(dir, name), bytes));
}

/// Removes the files this step created in `dir` last time, where they are still unmodified.
fn remove_own_outputs(dir: &Path, name: &str) {
    for record in read_marker(&marker_path(dir, name)) {
        let Some(relative) = safe_relative(&record.path) else { continue };
        let target = dir.join(relative);
        if record.created && record.what.matches(&target) {
            let _ = std::fs::remove_file(target);
        }
    }
}

/// Every path that another step's marker in `dir` lists.
fn claimed_by_others(dir: &Path, name: &str) -> HashSet<Vec<u8>> {
    let own = marker_path(dir, name);
    let Ok(entries) = std::fs::read_dir(dir.join(MARKER_DIR)) else { return HashSet::new() };
    entries
        .flatten()
        .filter(|entry| entry.path() != own)
        .flat_map(|entry| read_marker(&entry.path()))
        .map(|record| record.path)
        .collect()
}

/// Until dropped with `std::mem::forget`, lists every file that was not in `before` as the
/// step's own: a step that failed or panicked half way has its files removed by its next run.
struct MarkCreated<'a> {
    dir: &'a Path,
    name: &'a str,
    before: &'a Snapshot,
}

impl Drop for MarkCreated<'_> {
    fn drop(&mut self) {
        let created: Vec<Record> = snapshot(self.dir, None)
            .into_iter()
            .filter(|(relative, _)| !self.before.contains_key(relative))
            .filter_map(|(relative, seen)| {
                let what = match seen {
                    Seen::File { .. } => {
                        Owned::File(inputs::hash_file(&self.dir.join(&relative)).ok()?)
                    }
                    Seen::Link(target) => Owned::Link(path_bytes(&target)),
                    Seen::EmptyDir => return None,
                };
                Some(Record { path: path_bytes(&relative), what, created: true })
            })
            .collect();
        write_marker(self.dir, self.name, &created);
    }
}

/// The files and links under a directory (relative paths), the markers' directory left out.
type Snapshot = HashMap<PathBuf, Seen>;

/// A file or link as a snapshot saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    File {
        stamp: Stamp,
        mode: u32,
        /// The contents' blake3, for a file changed within [`COARSE_CLOCK`] of the snapshot.
        hash: Option<String>,
    },
    Link(PathBuf),
    /// A directory with nothing in it.
    EmptyDir,
}

/// What tells a rewritten file from an untouched one without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    size: u64,
    modified: Option<SystemTime>,
    /// Change time (seconds, nanoseconds) and inode, where the platform has them.
    changed: (i64, i64),
    inode: u64,
}

/// The coarsest file-time granularity in common use (FAT's two seconds): a file changed within
/// this long of a snapshot may be rewritten later without its times moving.
const COARSE_CLOCK: Duration = Duration::from_secs(2);

impl Seen {
    /// Whether the step made or changed this entry, given what was there before it ran.
    fn changed_since(&self, before: Option<&Seen>, path: &Path) -> bool {
        match (before, self) {
            (Some(Seen::File { stamp: was, hash, .. }), Seen::File { stamp: now, .. }) => {
                was != now
                    || hash.as_ref().is_some_and(|hash| {
                        inputs::hash_file(path).is_ok_and(|current| current != *hash)
                    })
            }
            (Some(Seen::Link(was)), Seen::Link(now)) => was != now,
            (Some(Seen::EmptyDir), Seen::EmptyDir) => false,
            _ => true,
        }
    }
}

/// The files `only` names in `dir`, as a snapshot sees them; an error names one that is not a
/// regular file there.
fn named_files(dir: &Path, only: &[PathBuf]) -> std::result::Result<Snapshot, String> {
    only.iter()
        .map(|relative| {
            let path = dir.join(relative);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_file() => Ok((
                    relative.clone(),
                    Seen::File { stamp: stamp_of(&meta), mode: mode_of(&meta), hash: None },
                )),
                Ok(_) => Err(format!("{} is not a regular file", path.display())),
                Err(err) => Err(format!("the step did not write {}: {err}", path.display())),
            }
        })
        .collect()
}

/// Regular files, symbolic links and empty directories under `dir` (relative paths); other
/// kinds and the markers' directory are skipped. With `hash_recent`, files changed within [`COARSE_CLOCK`] of that
/// moment are hashed too.
fn snapshot(dir: &Path, hash_recent: Option<SystemTime>) -> Snapshot {
    let mut seen = HashMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&relative)) else { continue };
        let mut empty = true;
        for entry in entries.flatten() {
            // `DirEntry::metadata` does not follow a symbolic link (an lstat).
            let Ok(meta) = entry.metadata() else { continue };
            let path = relative.join(entry.file_name());
            if path == Path::new(MARKER_DIR) {
                continue;
            }
            empty = false;
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_symlink() {
                seen.insert(path, Seen::Link(std::fs::read_link(entry.path()).unwrap_or_default()));
            } else if meta.is_file() {
                let stamp = stamp_of(&meta);
                let recent = hash_recent.is_some_and(|now| {
                    let since = now.checked_sub(COARSE_CLOCK).unwrap_or(SystemTime::UNIX_EPOCH);
                    stamp.modified.is_none_or(|modified| modified >= since)
                        || changed_after(&stamp, since)
                });
                let hash = if recent { inputs::hash_file(&entry.path()).ok() } else { None };
                seen.insert(path, Seen::File { stamp, mode: mode_of(&meta), hash });
            }
        }
        if empty && !relative.as_os_str().is_empty() {
            seen.insert(relative, Seen::EmptyDir);
        }
    }
    seen
}

fn stamp_of(meta: &std::fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let (changed, inode) = {
        use std::os::unix::fs::MetadataExt;
        ((meta.ctime(), meta.ctime_nsec()), meta.ino())
    };
    #[cfg(not(unix))]
    let (changed, inode) = ((0, 0), 0);
    Stamp { size: meta.len(), modified: meta.modified().ok(), changed, inode }
}

/// Whether the stamp's change time is at or after `since` (false where there is none).
fn changed_after(stamp: &Stamp, since: SystemTime) -> bool {
    let since = since.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (seconds, nanos) = stamp.changed;
    cfg!(unix) && (seconds, nanos) >= (since.as_secs() as i64, i64::from(since.subsec_nanos()))
}
