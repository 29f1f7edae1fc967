//! `cargo memoshelve path`: the cache root in use and why.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use memoshelve_build::config::Config;
use memoshelve_build::{CacheRoot, RootSource};

use crate::cli::MemoshelveArgs;

/// What is at a cache root's path: only a readable directory, or nothing yet, is a cache.
pub(crate) enum Found {
    /// A directory this process can list.
    Directory,
    /// Nothing: the first build creates the directory.
    Missing,
    /// A regular file, or a link to one.
    File,
    /// A symbolic link to a path where nothing is (its target as the link spells it).
    DanglingLink(PathBuf),
    /// A directory whose listing fails.
    Unreadable(std::io::Error),
    /// Something else that is not a directory: a device, a socket, a pipe.
    NotADirectory,
    /// A path below a file (`/a/file/cache`): the file.
    BelowAFile(PathBuf),
    /// The path cannot be looked at.
    Unreachable(std::io::Error),
}

impl Found {
    pub(crate) fn at(path: &Path) -> Found {
        match std::fs::metadata(path) {
            Ok(metadata) if metadata.is_dir() => match std::fs::read_dir(path) {
                Ok(_) => Found::Directory,
                Err(err) => Found::Unreadable(err),
            },
            Ok(metadata) if metadata.is_file() => Found::File,
            Ok(_) => Found::NotADirectory,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::read_link(path) {
                    Ok(target) => Found::DanglingLink(target),
                    Err(_) => Found::Missing,
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotADirectory => {
                match path.ancestors().skip(1).find(|dir| dir.is_file()) {
                    Some(file) => Found::BelowAFile(file.to_owned()),
                    None => Found::Unreachable(err),
                }
            }
            Err(err) => Found::Unreachable(err),
        }
    }

    /// One word or two for `--json`.
    fn kind(&self) -> &'static str {
        match self {
            Found::Directory => "directory",
            Found::Missing => "missing",
            Found::File => "file",
            Found::DanglingLink(_) => "dangling link",
            Found::Unreadable(_) => "unreadable directory",
            Found::NotADirectory => "not a directory",
            Found::BelowAFile(_) => "below a file",
            Found::Unreachable(_) => "unreachable",
        }
    }

    /// What is wrong, to follow the path (`is a file, not a directory`); `None` where builds can
    /// keep a cache: a directory, or nothing yet.
    pub(crate) fn problem(&self) -> Option<String> {
        Some(match self {
            Found::Directory | Found::Missing => return None,
            Found::File => "is a file, not a directory".to_owned(),
            Found::DanglingLink(target) => {
                format!("is a symbolic link to {}, where nothing is", target.display())
            }
            Found::Unreadable(err) => format!("is a directory that cannot be read ({err})"),
            Found::NotADirectory => "is not a directory (a device, socket or pipe)".to_owned(),
            Found::BelowAFile(file) => {
                format!("cannot be a directory: {} is a file", file.display())
            }
            Found::Unreachable(err) => format!("cannot be looked at ({err})"),
        })
    }
}

/// An error naming what is at `root` when builds cannot keep a cache there.
pub(crate) fn check_usable(root: &CacheRoot) -> anyhow::Result<()> {
    match Found::at(&root.path).problem() {
        None => Ok(()),
        Some(problem) => anyhow::bail!(
            "the cache root {} ({}) {problem}: builds cannot keep a cache there (point the root \
             at a directory, or move what is there away)",
            root.path.display(),
            root.source
        ),
    }
}

pub(crate) fn run(args: &MemoshelveArgs) -> anyhow::Result<()> {
    let (root, project) = crate::project::locate(args)?;
    let found = Found::at(&root.path);
    // Whether anything is there (a file counts: it is in the way).
    let exists = !matches!(found, Found::Missing | Found::BelowAFile(_) | Found::Unreachable(_));
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let config = match &root.source {
            RootSource::Config(setting) => serde_json::json!({
                "file": setting.file,
                "table": setting.table,
                "value": setting.value,
            }),
            _ => serde_json::Value::Null,
        };
        let json = serde_json::json!({
            "path": root.path,
            "source": root.source.to_string(),
            "config": config,
            "exists": exists,
            "kind": found.kind(),
            "problem": found.problem(),
            "warnings": root.warnings,
        });
        writeln!(stdout, "{json}").context("cannot write to stdout")?;
        return Ok(());
    }
    // Only the path on stdout, so `$(cargo memoshelve path)` works; the reason goes to stderr.
    writeln!(stdout, "{}", root.path.display()).context("cannot write to stdout")?;
    let (path, source) = (root.path.display(), &root.source);
    match (&found, found.problem()) {
        (Found::Missing, _) => crate::output::note(
            args,
            &format!("{path} ({source}); it does not exist yet (the first build creates it)"),
        ),
        (_, None) => crate::output::note(args, &format!("{path} ({source})")),
        (_, Some(problem)) => crate::output::warn(
            args,
            &format!("{path} ({source}) {problem}: builds cannot keep a cache there"),
        ),
    }
    if args.verbose {
        let shown = |dir: &Option<std::path::PathBuf>| {
            dir.as_ref().map_or("-".to_owned(), |dir| dir.display().to_string())
        };
        let mut stderr = std::io::stderr().lock();
        writeln!(stderr, "package:   {}", shown(&project.package_dir))?;
        writeln!(stderr, "workspace: {}", shown(&project.workspace_root))?;
        writeln!(stderr, "target:    {}", shown(&project.target_dir))?;
        for setting in Config::load(&project).settings {
            writeln!(
                stderr,
                "setting:   {} = {:?} in {}",
                setting.key,
                setting.value,
                setting.origin()
            )?;
        }
    }
    Ok(())
}
