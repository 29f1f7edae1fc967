//! What cargo says about the unit whose script runs, and the runner's record of what it did
//! with each run (`runs.log`, the one line per build on cargo's stderr).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use memoshelve_build::store::Roots;

/// The size past which the runner's record starts again (`Unit::log`).
pub(super) const RUNS_LOG_MAX: u64 = 1 << 20;

/// What cargo says about the unit whose script runs.
pub(super) struct Unit {
    pub(super) package: String,
    pub(super) out_dir: PathBuf,
    pub(super) manifest_dir: PathBuf,
    /// `<target>/<profile>/build`: where the pinned tool and the log are.
    pub(super) build_dir: PathBuf,
    /// The target directory, above the profile's.
    pub(super) target_dir: Option<PathBuf>,
    /// This build's directories, named by placeholder as a file step names them.
    pub(super) roots: Roots,
    /// Whether the package's sources can change under one version (not from `CARGO_HOME`).
    pub(super) local: bool,
    pub(super) cargo_home: Option<PathBuf>,
}

impl Unit {
    pub(super) fn from_env() -> Result<Unit, String> {
        let var = |name: &str| {
            std::env::var_os(name).map(PathBuf::from).ok_or_else(|| format!("{name} is not set"))
        };
        let out_dir = std::path::absolute(var("OUT_DIR")?).map_err(|err| err.to_string())?;
        let manifest_dir = var("CARGO_MANIFEST_DIR")?;
        let package = std::env::var("CARGO_PKG_NAME").map_err(|_| "CARGO_PKG_NAME is not set")?;
        let build_dir = out_dir
            .ancestors()
            .find(|dir| dir.file_name().is_some_and(|name| name == "build"))
            .ok_or_else(|| format!("OUT_DIR {} is not in cargo's build layout", out_dir.display()))?
            .to_path_buf();
        // `<target>[/<triple>]/<profile>/build`: the target directory is above the profile's.
        let target_dir = build_dir.parent().and_then(Path::parent).map(Path::to_path_buf);
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
        let local = cargo_home.as_ref().is_none_or(|home| !manifest_dir.starts_with(home));
        // A local package's workspace: a traced read of a sibling names it by placeholder.
        let workspace = if local { workspace_of(&manifest_dir) } else { None };
        let roots = Roots::new(
            [
                ("out", Some(out_dir.as_path())),
                ("manifest", Some(manifest_dir.as_path())),
                ("workspace", workspace.as_deref()),
                ("target", target_dir.as_deref()),
                ("cargo-home", cargo_home.as_deref()),
            ]
            .into_iter()
            .filter_map(|(name, dir)| Some((name, dir?))),
        );
        Ok(Unit { package, out_dir, manifest_dir, build_dir, target_dir, roots, local, cargo_home })
    }

    /// Why an earlier run of this build found that tracing cannot run here (`ptrace` or
    /// seccomp refused), if one did.
    pub(super) fn tracing_failed(&self) -> Option<String> {
        fs::read_to_string(self.build_dir.join(".memoshelve").join("tracing-failed")).ok()
    }

    /// Remembers for the rest of this build (its target dir) that tracing cannot run here.
    pub(super) fn mark_tracing_failed(&self, why: &str) {
        let dir = self.build_dir.join(".memoshelve");
        let _ = fs::create_dir_all(&dir)
            .and_then(|()| fs::write(dir.join("tracing-failed"), format!("tracing failed: {why}")));
    }

    /// The profile's directory below the target dir (`debug`, `<triple>/release`).
    pub(super) fn profile_dir(&self) -> PathBuf {
        let profile = self.build_dir.parent().unwrap_or(&self.build_dir);
        match &self.target_dir {
            Some(target) => profile.strip_prefix(target).unwrap_or(profile).to_path_buf(),
            None => PathBuf::from("debug"),
        }
    }

    /// `text` with this build's directories as placeholders, at whole path components.
    pub(super) fn normalize(&self, text: &str) -> String {
        self.roots.name(text)
    }

    /// Now, as the file system stamps a file written now: a declared input written after this
    /// carries an mtime at or after it. The wall clock cannot say so: the kernel stamps files
    /// from a coarse clock (4 ms ticks here), so a file rewritten just after `SystemTime::now()`
    /// can carry an earlier time. Read from a file touched in the build dir; where that fails,
    /// the wall clock a second back (an input rewritten in that second is taken as changed
    /// while the script ran: the run is not recorded, never wrongly replayed).
    pub(super) fn file_clock(&self) -> SystemTime {
        let path = self.build_dir.join(".memoshelve").join("clock");
        let stamped = fs::create_dir_all(path.parent().unwrap_or(&self.build_dir))
            .and_then(|()| fs::write(&path, b"t"))
            .and_then(|()| fs::metadata(&path)?.modified());
        stamped.unwrap_or_else(|_| SystemTime::now() - Duration::from_secs(1))
    }

    /// Tells the person at the build, once per cargo process, a cache problem they must see:
    /// a `cargo:warning` of a package from the registry shows only with `-vv`, and what a rustc
    /// wrapper prints is stored by cargo and replayed on later fresh builds (stale once mended).
    /// On Linux the line goes to cargo's own stderr (its terminal or CI log); elsewhere, or when
    /// that cannot be opened, it is a `cargo:warning`.
    pub(super) fn tell_once(&self, message: &str) {
        #[cfg(target_os = "linux")]
        {
            let cargo = std::os::unix::process::parent_id();
            // Its start time tells this cargo from an earlier one with the same pid.
            let started = fs::read_to_string(format!("/proc/{cargo}/stat"))
                .ok()
                .and_then(|stat| stat.rsplit_once(") ")?.1.split(' ').nth(19).map(str::to_owned));
            let dir = self.build_dir.join(".memoshelve");
            let told = dir.join(format!("told-{cargo}-{}", started.unwrap_or_default()));
            if fs::create_dir_all(&dir).is_err() {
                println!("cargo:warning=memoshelve: {message}");
                return;
            }
            match fs::File::create_new(&told) {
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => return,
                Err(_) => {}
                Ok(_) => {
                    // The marks of earlier builds go.
                    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                        let name = entry.file_name();
                        if name.to_string_lossy().starts_with("told-") && entry.path() != told {
                            let _ = fs::remove_file(entry.path());
                        }
                    }
                }
            }
            let line = format!("warning: memoshelve: {message}\n");
            let written = fs::OpenOptions::new()
                .append(true)
                .open(format!("/proc/{cargo}/fd/2"))
                .and_then(|mut stderr| stderr.write_all(line.as_bytes()));
            if written.is_ok() {
                return;
            }
        }
        println!("cargo:warning=memoshelve: {message}");
    }

    /// One line in `<build dir>/.memoshelve/runs.log`: what became of this script's run (the
    /// record the tests and `cargo memoshelve` read; a failure to write it changes nothing).
    /// Past `RUNS_LOG_MAX` bytes the log becomes `runs.log.1` (the one before is dropped).
    pub(super) fn log(&self, what: &str, took: Option<Duration>) {
        self.log_with(what, took, None);
    }

    /// [`Unit::log`], with one more field (`missed: <key part>`, `checked: <the hit check>`).
    pub(super) fn log_with(&self, what: &str, took: Option<Duration>, field: Option<&str>) {
        let dir = self.build_dir.join(".memoshelve");
        let path = dir.join("runs.log");
        if fs::metadata(&path).is_ok_and(|meta| meta.len() > RUNS_LOG_MAX) {
            let _ = fs::rename(&path, dir.join("runs.log.1"));
        }
        let took = took.map_or(String::new(), |took| format!("\t{} ms", took.as_millis()));
        let field = field.map_or(String::new(), |field| format!("\t{field}"));
        let line = format!("{}\t{what}{took}{field}\n", self.package);
        let _ = fs::create_dir_all(&dir).and_then(|()| {
            fs::File::options().create(true).append(true).open(&path)?.write_all(line.as_bytes())
        });
    }
}

/// The root of the workspace a local package at `manifest_dir` is in, by cargo's rule: the
/// nearest directory above whose `Cargo.toml` has a `[workspace]` table; `None` when none has.
pub(crate) fn workspace_of(manifest_dir: &Path) -> Option<PathBuf> {
    manifest_dir.ancestors().skip(1).find_map(|dir| {
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).ok()?;
        manifest
            .lines()
            .any(|line| line.trim_start().starts_with("[workspace"))
            .then(|| dir.to_path_buf())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> Unit {
        Unit {
            package: "p".to_owned(),
            out_dir: "/t/debug/build/p-1/out".into(),
            manifest_dir: "/src/p".into(),
            build_dir: "/t/debug/build".into(),
            target_dir: Some("/t".into()),
            roots: Roots::new([
                ("out", Path::new("/t/debug/build/p-1/out")),
                ("manifest", Path::new("/src/p")),
                ("target", Path::new("/t")),
            ]),
            local: true,
            cargo_home: None,
        }
    }

    #[test]
    fn normalizes_whole_components_only() {
        let unit = unit();
        assert_eq!(unit.normalize("/t/debug/build/p-1/out/lib"), "{memoshelve:out}/lib");
        assert_eq!(
            unit.normalize("-L /t/debug/deps:/src/p"),
            "-L {memoshelve:target}/debug/deps:{memoshelve:manifest}"
        );
        assert_eq!(unit.normalize("/tx/y /src/pq"), "/tx/y /src/pq");
    }

    #[test]
    fn the_runs_log_starts_again_past_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let unit = Unit { build_dir: dir.path().to_owned(), ..unit() };
        let log = dir.path().join(".memoshelve/runs.log");
        unit.log("recorded", None);
        assert_eq!(fs::read_to_string(&log).unwrap(), "p\trecorded\n");
        fs::write(&log, vec![b'x'; usize::try_from(RUNS_LOG_MAX).unwrap() + 1]).unwrap();
        unit.log("restored", Some(Duration::from_millis(7)));
        assert_eq!(fs::read_to_string(&log).unwrap(), "p\trestored\t7 ms\n");
        let before = fs::metadata(dir.path().join(".memoshelve/runs.log.1")).unwrap().len();
        assert_eq!(before, RUNS_LOG_MAX + 1, "the full log is kept once");
    }

    #[test]
    fn a_file_written_after_the_file_clock_is_never_older_than_it() {
        // The property the "changed while it ran" rule needs, on a coarse clock too: 300 tries
        // (with the wall clock, 218 of 300 failed on a kernel with 4 ms ticks).
        let dir = tempfile::tempdir().unwrap();
        let unit = Unit { build_dir: dir.path().join("build"), ..unit() };
        for round in 0..300 {
            let started = unit.file_clock();
            let input = dir.path().join(format!("input-{round}"));
            fs::write(&input, b"x").unwrap();
            let modified = fs::metadata(&input).unwrap().modified().unwrap();
            assert!(modified >= started, "round {round}: {modified:?} < {started:?}");
        }
    }
}
