//! One module per subcommand; `run` dispatches.

mod backup;
mod clear;
mod compact;
mod explain;
mod list;
mod path;
mod prune;
mod remote;
mod restore;
mod setup;
mod show;
mod stats;
mod upgrade;
mod verify;
mod warm;

use memoshelve_build::store::{Entry, Store};

use crate::cli::{Command, MemoshelveArgs};

pub(crate) fn run(args: &MemoshelveArgs) -> anyhow::Result<()> {
    match &args.command {
        Command::Path => path::run(args),
        Command::List { name, sort } => list::run(args, name.as_deref(), *sort),
        Command::Show { key } => show::run(args, key),
        Command::Stats => stats::run(args),
        Command::Compact { backup } => compact::run(args, backup.as_deref()),
        Command::Upgrade => upgrade::run(args),
        Command::Setup { global, undo } => setup::run(args, *global, *undo),
        Command::Backup { file, used_since } => backup::run(args, file, *used_since),
        Command::Restore { file, merge } => restore::run(args, file, *merge),
        Command::Warm { push, cargo_args } => warm::run(args, cargo_args, *push),
        Command::Remote(command) => remote::run(args, command),
        Command::Verify { repair } => verify::run(args, *repair),
        Command::Clear { name, yes } => clear::run(args, name.as_deref(), *yes),
        Command::Explain { name, key } => explain::run(args, name, key.as_deref()),
        Command::Prune { max_size, max_age, keep_recent, name, dry_run } => prune::run(
            args,
            &prune::Limits { max_size: *max_size, max_age: *max_age, keep_recent: *keep_recent },
            name.as_deref(),
            *dry_run,
        ),
    }
}

/// The cache root in use (see `path`), opened for inspection; an error naming what is there
/// when it is not a directory (a file, a dangling link, one that cannot be read).
pub(crate) fn store(args: &MemoshelveArgs) -> anyhow::Result<Store> {
    let root = crate::project::cache_root(args)?;
    path::check_usable(&root)?;
    Ok(Store::open(root.path))
}

/// The entries of cache name `name`; when it has none, a package name stands for its build
/// script: the entries of `build-script.<name>` (or with `_` read as `-`, as in a crate name),
/// with a note saying so. Returns the name used.
pub(crate) fn entries_named(
    args: &MemoshelveArgs,
    store: &Store,
    name: &str,
) -> anyhow::Result<(String, Vec<Entry>)> {
    let entries = store.entries(Some(name))?;
    if !entries.is_empty() || name.starts_with(BUILD_SCRIPT) {
        return Ok((name.to_owned(), entries));
    }
    let mut candidates = vec![format!("{BUILD_SCRIPT}{name}")];
    if name.contains('_') {
        candidates.push(format!("{BUILD_SCRIPT}{}", name.replace('_', "-")));
    }
    for script in candidates {
        let scripts = store.entries(Some(&script))?;
        if !scripts.is_empty() {
            crate::output::note(
                args,
                &format!("no entry is named {name:?}: using {script:?}, a package's build script"),
            );
            return Ok((script, scripts));
        }
    }
    Ok((name.to_owned(), entries))
}

/// The prefix of a build script's cache name in transparent mode: `build-script.<package>`.
const BUILD_SCRIPT: &str = "build-script.";

/// Writes a JSON value and a newline to stdout.
pub(crate) fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write;
    // Buffered: pretty JSON has a line per field, and stdout alone writes each line.
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    stdout.flush()?;
    Ok(())
}
