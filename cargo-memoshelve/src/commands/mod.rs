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

use memoshelve_build::store::Store;

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
        Command::Prune { max_size, max_age, name, dry_run } => prune::run(
            args,
            &prune::Limits { max_size: *max_size, max_age: *max_age },
            name.as_deref(),
            *dry_run,
        ),
    }
}

/// The cache root in use (see `path`), opened for inspection.
pub(crate) fn store(args: &MemoshelveArgs) -> anyhow::Result<Store> {
    Ok(Store::open(crate::project::cache_root(args)?.path))
}

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
