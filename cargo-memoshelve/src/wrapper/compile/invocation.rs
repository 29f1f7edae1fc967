//! A rustc command line as cargo writes it for a unit, read without running rustc: what the
//! unit is, which files it writes, and what of it the key holds.
//!
//! Only what is modelled is cached. Any option not listed here, an output named with `-o`, a
//! crate type or `--emit` kind not handled yet, reading the crate from stdin: the compile
//! passes through to rustc (with the reason in the log), never guessed at.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Options that take a value in the next argument (or after `=`), and are keyed as text.
const WITH_VALUE: &[&str] = &[
    "--crate-name",
    "--edition",
    "--error-format",
    "--json",
    "--crate-type",
    "--emit",
    "--cfg",
    "--check-cfg",
    "--cap-lints",
    "--target",
    "--diagnostic-width",
    "--color",
    "--remap-path-prefix",
    "--extern",
    "--out-dir",
    "-L",
    "-l",
    "-C",
    "-A",
    "-W",
    "-D",
    "-F",
    "--allow",
    "--warn",
    "--deny",
    "--forbid",
    "--force-warn",
];

/// Flags without a value.
const FLAGS: &[&str] = &["--test", "-g", "-O", "--verbose", "-v"];

/// The `-C` options a unit may carry. Others (`profile-use`, `llvm-args`, a linker's) may name
/// files that are inputs the key would not see.
const CODEGEN: &[&str] = &[
    "codegen-units",
    "debug-assertions",
    "debuginfo",
    "embed-bitcode",
    "extra-filename",
    "force-frame-pointers",
    "force-unwind-tables",
    "incremental",
    "instrument-coverage",
    "linker-plugin-lto",
    "lto",
    "metadata",
    "opt-level",
    "overflow-checks",
    "panic",
    "prefer-dynamic",
    "relocation-model",
    "split-debuginfo",
    "strip",
    "symbol-mangling-version",
    "target-cpu",
    "target-feature",
];

/// What a compile of one unit is.
#[derive(Debug)]
pub(crate) struct Invocation {
    /// The arguments as cargo gave them (after rustc's path).
    pub(crate) args: Vec<String>,
    pub(crate) crate_name: String,
    pub(crate) crate_types: Vec<String>,
    /// `--emit` kinds (`dep-info`, `metadata`, `link`).
    pub(crate) emit: Vec<String>,
    pub(crate) out_dir: PathBuf,
    /// `-C extra-filename`.
    pub(crate) extra: String,
    /// `--extern` `(name, path)`; a path only where one was given.
    pub(crate) externs: Vec<(String, Option<PathBuf>)>,
    /// `-L` directories (every kind), in order.
    pub(crate) search: Vec<PathBuf>,
    /// `-l` arguments as given (`static=z`, `dylib=ssl`, `z`).
    pub(crate) libs: Vec<String>,
    /// `--target`, when it names a target spec file (`.json`).
    pub(crate) target_spec: Option<PathBuf>,
    /// `-C incremental`'s directory.
    pub(crate) incremental: Option<PathBuf>,
}

impl Invocation {
    /// The compile described by `args` (rustc's arguments), or why it is not cached.
    pub(crate) fn parse(args: &[OsString]) -> Result<Invocation, String> {
        let args: Vec<String> = args
            .iter()
            .map(|arg| arg.to_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or("an argument is not UTF-8")?;
        let mut parsed = Invocation {
            args: args.clone(),
            crate_name: String::new(),
            crate_types: Vec::new(),
            emit: Vec::new(),
            out_dir: PathBuf::new(),
            extra: String::new(),
            externs: Vec::new(),
            search: Vec::new(),
            libs: Vec::new(),
            target_spec: None,
            incremental: None,
        };
        let mut inputs = 0;
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            if !arg.starts_with('-') {
                inputs += 1;
                continue;
            }
            if arg == "-" {
                return Err("the crate is read from stdin".to_owned());
            }
            if FLAGS.contains(&arg.as_str()) {
                if arg == "--test" {
                    parsed.crate_types.push("test".to_owned());
                }
                continue;
            }
            let (option, value) = match WITH_VALUE.iter().find_map(|option| split(arg, option)) {
                Some((option, Some(value))) => (option, value.to_owned()),
                Some((option, None)) => {
                    let value = rest.next().ok_or_else(|| format!("{option} without a value"))?;
                    (option, value.clone())
                }
                None => return Err(format!("option {arg} is not modelled")),
            };
            parsed.take(option, value)?;
        }
        if inputs != 1 {
            return Err(format!("{inputs} input files"));
        }
        if parsed.crate_name.is_empty() {
            return Err("no --crate-name".to_owned());
        }
        if parsed.out_dir.as_os_str().is_empty() {
            return Err("no --out-dir".to_owned());
        }
        if parsed.crate_types.is_empty() {
            parsed.crate_types.push("bin".to_owned());
        }
        if let Some(kind) = parsed.crate_types.iter().find(|kind| {
            !matches!(
                kind.as_str(),
                "lib" | "rlib" | "bin" | "test" | "proc-macro" | "dylib" | "cdylib" | "staticlib"
            )
        }) {
            return Err(format!("crate type {kind} is not modelled"));
        }
        if parsed.crate_types.len() > 1 {
            return Err(format!("{} crate types", parsed.crate_types.len()));
        }
        if !parsed.emit.iter().any(|kind| kind == "dep-info") {
            return Err("no dep-info is emitted (the inputs would be unknown)".to_owned());
        }
        if let Some(kind) = parsed
            .emit
            .iter()
            .find(|kind| !matches!(kind.as_str(), "dep-info" | "metadata" | "link"))
        {
            return Err(format!("--emit={kind} is not modelled"));
        }
        Ok(parsed)
    }

    fn take(&mut self, option: &str, value: String) -> Result<(), String> {
        match option {
            "--crate-name" => self.crate_name = value,
            "--crate-type" => self.crate_types.extend(value.split(',').map(str::to_owned)),
            "--emit" => {
                for kind in value.split(',') {
                    if kind.contains('=') {
                        return Err(format!("--emit {kind} names its own path"));
                    }
                    self.emit.push(kind.to_owned());
                }
            }
            "--out-dir" => self.out_dir = PathBuf::from(value),
            "--extern" => {
                let (name, path) = match value.split_once('=') {
                    Some((name, path)) => (name, Some(PathBuf::from(path))),
                    None => (value.as_str(), None),
                };
                // `priv:name`, `noprelude:name`: the options are keyed with the argument.
                let name = name.rsplit(':').next().unwrap_or(name).to_owned();
                // Without a path rustc looks the crate up: only the toolchain's own (which
                // `rustc -vV` stands for) are taken.
                if path.is_none()
                    && !["proc_macro", "std", "core", "alloc", "test"].contains(&name.as_str())
                {
                    return Err(format!("--extern {name} has no path"));
                }
                self.externs.push((name, path));
            }
            "-L" => {
                // `KIND=PATH` for the kinds rustc knows; anything else is a path (`/a=b/lib`).
                let dir = match value.split_once('=') {
                    Some((kind, dir))
                        if ["native", "crate", "dependency", "framework", "all"]
                            .contains(&kind) =>
                    {
                        dir
                    }
                    _ => value.as_str(),
                };
                self.search.push(PathBuf::from(dir));
            }
            "-l" => self.libs.push(value),
            "--target" if value.ends_with(".json") => self.target_spec = Some(value.into()),
            "-C" => {
                let (key, setting) = value.split_once('=').unwrap_or((value.as_str(), ""));
                if !CODEGEN.contains(&key) {
                    return Err(format!("-C {key} is not modelled"));
                }
                if key == "extra-filename" {
                    self.extra = setting.to_owned();
                }
                if key == "incremental" {
                    self.incremental = Some(PathBuf::from(setting));
                }
                if key == "split-debuginfo" && setting != "off" {
                    return Err(format!("-C split-debuginfo={setting} writes more files"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the compile runs a linker, or code of another crate: a proc macro, which runs
    /// inside rustc and may read what it likes. What such a compile reads beyond its dep-info
    /// is only known by watching it.
    pub(crate) fn runs_other_code(&self) -> bool {
        let links = self.emit.iter().any(|kind| kind == "link")
            && self.crate_types.iter().any(|kind| !matches!(kind.as_str(), "lib" | "rlib"));
        links || self.uses_proc_macros()
    }

    /// Whether the compile may load a proc macro: an `--extern` is one (a shared library), or
    /// one is in a directory rustc searches for crates: a crate it uses may re-export one
    /// (`serde`'s derive, `tokio::main`), which rustc then finds there and runs.
    fn uses_proc_macros(&self) -> bool {
        let suffix = std::env::consts::DLL_SUFFIX.trim_start_matches('.');
        let shared = |path: &Path| path.extension().is_some_and(|ext| ext == suffix);
        self.externs.iter().any(|(_, path)| path.as_deref().is_some_and(shared))
            || (!self.externs.is_empty()
                && self.search.iter().any(|dir| {
                    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|entry| {
                        shared(&entry.path())
                            && entry
                                .file_name()
                                .to_string_lossy()
                                .starts_with(std::env::consts::DLL_PREFIX)
                    })
                }))
    }

    /// The files the compile writes into `--out-dir`, its dep-info last (rustc's names: the
    /// crate's name and `-C extra-filename`).
    pub(crate) fn outputs(&self) -> Vec<String> {
        use std::env::consts::{DLL_PREFIX, DLL_SUFFIX, EXE_SUFFIX};
        let stem = format!("{}{}", self.crate_name, self.extra);
        let mut files = Vec::new();
        if self.emit.iter().any(|kind| kind == "link") {
            for kind in &self.crate_types {
                files.push(match kind.as_str() {
                    "bin" | "test" => format!("{stem}{EXE_SUFFIX}"),
                    "proc-macro" | "dylib" | "cdylib" => format!("{DLL_PREFIX}{stem}{DLL_SUFFIX}"),
                    "staticlib" => format!("lib{stem}.a"),
                    _ => format!("lib{stem}.rlib"),
                });
            }
        }
        if self.emit.iter().any(|kind| kind == "metadata") {
            files.push(format!("lib{stem}.rmeta"));
        }
        files.push(format!("{stem}.d"));
        files
    }

    /// The dep-info file rustc writes.
    pub(crate) fn dep_info(&self) -> PathBuf {
        self.out_dir.join(format!("{}{}.d", self.crate_name, self.extra))
    }

    /// The arguments as the key holds them: `-C incremental` left out (where the compiler keeps
    /// its incremental state changes nothing it writes), an `--extern` path replaced by its
    /// file name (its content is a key part of its own), every directory of `name` (this
    /// build's) as a placeholder.
    pub(crate) fn keyed_args(&self, name: impl Fn(&str) -> String) -> String {
        let mut keyed = Vec::new();
        let mut rest = self.args.iter();
        while let Some(arg) = rest.next() {
            let (option, value) = match WITH_VALUE.iter().find_map(|option| split(arg, option)) {
                Some((option, Some(value))) => (option, value.to_owned()),
                Some((option, None)) => match rest.next() {
                    Some(value) => (option, value.clone()),
                    None => (option, String::new()),
                },
                None => {
                    keyed.push(name(arg));
                    continue;
                }
            };
            if option == "-C" && value.starts_with("incremental=") {
                continue;
            }
            let value = match (option, value.split_once('=')) {
                ("--extern", Some((crate_name, path))) => {
                    let file = Path::new(path).file_name().unwrap_or_default();
                    format!("{crate_name}={}", file.to_string_lossy())
                }
                _ => name(&value),
            };
            keyed.push(format!("{option} {value}"));
        }
        keyed.join("\n")
    }
}

/// `arg` as `option` with its value attached (`--emit=link`, `-Cdebuginfo=2`, `-Lnative=x`), as
/// `option` alone (the value follows), or `None`.
fn split<'a>(arg: &'a str, option: &'static str) -> Option<(&'static str, Option<&'a str>)> {
    let rest = arg.strip_prefix(option)?;
    if rest.is_empty() {
        return Some((option, None));
    }
    if option.starts_with("--") {
        return rest.strip_prefix('=').map(|value| (option, Some(value)));
    }
    // A short option's value may be attached (`-Cdebuginfo=2`).
    Some((option, Some(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Invocation, String> {
        let args: Vec<OsString> = line.split(' ').map(OsString::from).collect();
        Invocation::parse(&args)
    }

    /// A library unit as cargo 1.9x writes it.
    const LIB: &str = "--crate-name shlex --edition=2015 /h/.cargo/registry/src/x/shlex-1.3.0/src/lib.rs \
        --error-format=json --json=diagnostic-rendered-ansi,artifacts,future-incompat \
        --crate-type lib --emit=dep-info,metadata,link -C embed-bitcode=no -C debuginfo=2 \
        --cfg feature=\"std\" --check-cfg cfg(docsrs,test) -C metadata=8e9d \
        -C extra-filename=-a285 --out-dir /t/debug/deps -C incremental=/t/debug/incremental \
        -L dependency=/t/debug/deps --extern libc=/t/debug/deps/liblibc-b437.rmeta --cap-lints allow";

    #[test]
    fn reads_a_library_unit() {
        let unit = parse(LIB).unwrap();
        assert_eq!(unit.crate_name, "shlex");
        assert_eq!(unit.crate_types, ["lib"]);
        assert_eq!(unit.out_dir, Path::new("/t/debug/deps"));
        assert_eq!(unit.outputs(), ["libshlex-a285.rlib", "libshlex-a285.rmeta", "shlex-a285.d"]);
        assert_eq!(
            unit.externs,
            [("libc".to_owned(), Some("/t/debug/deps/liblibc-b437.rmeta".into()))]
        );
        assert_eq!(unit.search, [PathBuf::from("/t/debug/deps")]);
    }

    #[test]
    fn names_what_each_crate_type_writes_and_which_run_other_code() {
        let of = |types: &str| {
            let unit = parse(&LIB.replace("--crate-type lib", types)).unwrap();
            (unit.outputs(), unit.runs_other_code())
        };
        assert!(!of("--crate-type lib").1);
        assert_eq!(
            of("--crate-type bin"),
            (
                vec!["shlex-a285".to_owned(), "libshlex-a285.rmeta".into(), "shlex-a285.d".into()],
                true
            )
        );
        assert_eq!(of("--test").0[0], "shlex-a285");
        assert_eq!(of("--crate-type proc-macro").0[0], "libshlex-a285.so");
        assert_eq!(of("--crate-type staticlib").0[0], "libshlex-a285.a");
        let check = parse(&LIB.replace("dep-info,metadata,link", "dep-info,metadata")).unwrap();
        assert!(!check.runs_other_code());
        let proc_macro = LIB.replace(
            "--cap-lints allow",
            "--extern serde_derive=/t/debug/deps/libserde_derive-1.so",
        );
        assert!(parse(&proc_macro).unwrap().runs_other_code());
    }

    #[test]
    fn search_paths_and_externs_are_read_as_rustc_reads_them() {
        let unit = parse(&format!("{LIB} -L native=/n -L /a=b/lib -Lall=/x")).unwrap();
        let dirs: Vec<&str> = unit.search.iter().map(|dir| dir.to_str().unwrap()).collect();
        assert_eq!(dirs, ["/t/debug/deps", "/n", "/a=b/lib", "/x"]);
        // A crate rustc looks up by name: only the toolchain's.
        assert!(parse(&format!("{LIB} --extern proc_macro")).is_ok());
        assert!(parse(&format!("{LIB} --extern serde")).unwrap_err().contains("no path"));
    }

    #[test]
    fn the_key_leaves_out_where_things_are_but_not_what_they_are() {
        let unit = parse(LIB).unwrap();
        let keyed = unit.keyed_args(|text| text.replace("/t", "{target}"));
        assert!(!keyed.contains("incremental"), "{keyed}");
        assert!(keyed.contains("--extern libc=liblibc-b437.rmeta"), "{keyed}");
        assert!(keyed.contains("--out-dir {target}/debug/deps"), "{keyed}");
        assert!(keyed.contains("-C metadata=8e9d"), "{keyed}");
        let other = parse(&LIB.replace("debuginfo=2", "debuginfo=0")).unwrap();
        assert_ne!(
            other.keyed_args(|text| text.to_owned()),
            unit.keyed_args(|text| text.to_owned())
        );
    }

    #[test]
    fn what_is_not_modelled_passes_through() {
        for (change, why) in [
            ("--crate-type lib", "crate type lib,bin"),
            ("-C embed-bitcode=no", "-C llvm-args"),
            ("--cap-lints allow", "-Z"),
            ("--emit=dep-info,metadata,link", "--emit=metadata,link"),
            ("--emit=dep-info,metadata,link", "--emit=dep-info,asm"),
            ("-C debuginfo=2", "-C split-debuginfo"),
        ] {
            let replacement = match why {
                "crate type lib,bin" => "--crate-type lib --crate-type bin",
                "-C llvm-args" => "-C llvm-args=-x",
                "-Z" => "-Z threads=2",
                "-C split-debuginfo" => "-C split-debuginfo=unpacked",
                other => other,
            };
            let line = LIB.replace(change, replacement);
            assert!(parse(&line).is_err(), "{replacement} was taken");
        }
        assert!(parse(&LIB.replace("--out-dir /t/debug/deps ", "")).is_err());
    }
}
