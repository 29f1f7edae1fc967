//! Putting the launcher where cargo runs a build script (DESIGN.md section 9): shared by the
//! front (`cargo-memoshelve`, which compiles a build script itself when the unit cache is off)
//! and the full tool's unit cache (which compiles or restores it first). Std only.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::protocol::{self, RECORD};

/// A build script's compile, as cargo spells it.
pub(crate) struct BuildScript {
    /// The binary rustc writes, which cargo then links to `build-script-build`.
    pub(crate) binary: PathBuf,
}

impl BuildScript {
    /// `--crate-name build_script_*`, `--crate-type bin`, `CARGO_BIN_NAME` unset (cargo sets it
    /// for `[[bin]]` targets, which may take the same name), `--out-dir` under a `build`
    /// directory (cargo's layouts `build/<pkg>-<hash>/` and `build/<pkg>/<hash>/`).
    pub(crate) fn of(args: &[OsString]) -> Option<BuildScript> {
        let name = value_of(args, "--crate-name")?.to_str()?;
        if !name.starts_with("build_script_")
            || value_of(args, "--crate-type")? != "bin"
            || std::env::var_os("CARGO_BIN_NAME").is_some()
        {
            return None;
        }
        let out_dir = PathBuf::from(value_of(args, "--out-dir")?);
        out_dir.ancestors().skip(1).find(|dir| dir.file_name() == Some(OsStr::new("build")))?;
        let extra = codegen_option(args, "extra-filename").unwrap_or_default();
        let file = format!("{name}{extra}{}", std::env::consts::EXE_SUFFIX);
        Some(BuildScript { binary: out_dir.join(file) })
    }

    /// [`BuildScript::install_launcher`], after a compile that succeeded; a failure is said on
    /// stderr and the script runs uncached (the build goes on).
    /// Whether it was put there.
    pub(crate) fn put_launcher(&self) -> bool {
        let installed = self.install_launcher();
        if let Err(err) = &installed {
            let _ = writeln!(
                std::io::stderr(),
                "warning: memoshelve: {}: {err}; this build script runs uncached",
                self.binary.display()
            );
        }
        installed.is_ok()
    }

    /// Moves the real binary aside and puts the launcher in its place, with its mtime (cargo's
    /// freshness compares it), and the record that names both.
    /// Where the real binary goes once the launcher takes its place.
    pub(crate) fn real(&self) -> PathBuf {
        let mut real_name = self.binary.file_name().expect("a file name").to_owned();
        real_name.push(".memoshelve-real");
        self.binary.with_file_name(real_name)
    }

    fn install_launcher(&self) -> std::io::Result<()> {
        let dir = self.binary.parent().expect("an --out-dir joined with a file name");
        let tool = pinned_tool(dir)?;
        let launcher = protocol::sibling("memoshelve-launcher")?;
        if !launcher.is_file() {
            return Err(std::io::Error::other(format!(
                "{} is missing (`cargo install cargo-memoshelve` installs it beside cargo-memoshelve)",
                launcher.display()
            )));
        }
        let real = self.real();
        let real_name = real.file_name().expect("a file name").to_owned();
        let mtime = fs::metadata(&self.binary)?.modified()?;
        let mut record = Vec::new();
        record.extend_from_slice(b"memoshelve-launch 1\ntool=");
        record.extend_from_slice(tool.as_os_str().as_encoded_bytes());
        record.extend_from_slice(b"\nreal=");
        record.extend_from_slice(real_name.as_encoded_bytes());
        record.push(b'\n');
        fs::write(dir.join(RECORD), record)?;
        let staged = dir.join(".memoshelve-launcher.tmp");
        fs::copy(&launcher, &staged)?;
        fs::File::options().write(true).open(&staged)?.set_modified(mtime)?;
        fs::rename(&self.binary, &real)?;
        if let Err(err) = fs::rename(&staged, &self.binary) {
            let _ = fs::rename(&real, &self.binary);
            return Err(err);
        }
        Ok(())
    }
}

/// The copy of the full tool every launcher of a profile directory runs: pinned, so that
/// reinstalling `cargo-memoshelve` mid-build changes nothing under a running build, and one per
/// profile directory, not one per script. Made once, atomically (compiles run in parallel).
fn pinned_tool(script_dir: &Path) -> std::io::Result<PathBuf> {
    let build = script_dir
        .ancestors()
        .find(|dir| dir.file_name() == Some(OsStr::new("build")))
        .expect("checked by BuildScript::of");
    let pinned_dir = build.join(".memoshelve");
    let pinned = pinned_dir.join(format!(
        "{}-{}{}",
        protocol::TOOL,
        env!("CARGO_PKG_VERSION"),
        std::env::consts::EXE_SUFFIX
    ));
    let me = protocol::sibling(protocol::TOOL)?;
    if same_file(&me, &pinned) {
        return Ok(pinned);
    }
    fs::create_dir_all(&pinned_dir)?;
    let staged = pinned_dir.join(format!(".tool-{}.tmp", std::process::id()));
    let _ = fs::remove_file(&staged);
    if fs::hard_link(&me, &staged).is_err() {
        fs::copy(&me, &staged)?;
    }
    fs::rename(&staged, &pinned)?;
    Ok(pinned)
}

/// Whether `pinned` is already a copy of `me`: its name holds the version, so one of the same
/// length is one.
fn same_file(me: &Path, pinned: &Path) -> bool {
    let (Ok(me), Ok(pinned)) = (fs::metadata(me), fs::metadata(pinned)) else { return false };
    me.len() == pinned.len()
}

/// The value of `--flag value` or `--flag=value`.
pub(crate) fn value_of<'a>(args: &'a [OsString], flag: &str) -> Option<&'a OsStr> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == flag {
            return args.next().map(OsString::as_os_str);
        }
        if let Some(value) = arg.to_str().and_then(|arg| arg.strip_prefix(flag)?.strip_prefix('='))
        {
            return Some(OsStr::new(value));
        }
    }
    None
}

/// The value of `-C name=value` (or `-Cname=value`, `--codegen name=value`).
fn codegen_option(args: &[OsString], name: &str) -> Option<String> {
    let mut args = args.iter().filter_map(|arg| arg.to_str());
    while let Some(arg) = args.next() {
        let option = match arg {
            "-C" | "--codegen" => args.next(),
            _ => arg.strip_prefix("-C").or_else(|| arg.strip_prefix("--codegen=")),
        };
        if let Some(value) = option.and_then(|option| option.strip_prefix(name)?.strip_prefix('='))
        {
            return Some(value.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn tells_a_build_script_compile() {
        let script = args(
            "--crate-name build_script_build --edition=2021 build.rs --crate-type bin \
             -C embed-bitcode=no -C extra-filename=-0a1b2c --out-dir /t/debug/build/foo-0a1b2c",
        );
        let found = BuildScript::of(&script).expect("a build script");
        assert_eq!(found.binary, Path::new("/t/debug/build/foo-0a1b2c/build_script_build-0a1b2c"));
        let library = args("--crate-name foo --crate-type lib --out-dir /t/debug/deps");
        assert!(BuildScript::of(&library).is_none());
        let elsewhere =
            args("--crate-name build_script_build --crate-type bin --out-dir /t/debug/deps");
        assert!(BuildScript::of(&elsewhere).is_none());
        let joined = args(
            "--crate-name=build_script_main --crate-type=bin -Cextra-filename=-9 --out-dir=/t/build/x/h",
        );
        let found = BuildScript::of(&joined).expect("a build script, options joined by =");
        assert_eq!(found.binary, Path::new("/t/build/x/h/build_script_main-9"));
    }
}
