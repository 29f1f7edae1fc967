//! One module per subcommand; `run` dispatches.

mod path;

use crate::cli::{Command, MemoshelveArgs};

pub(crate) fn run(args: &MemoshelveArgs) -> anyhow::Result<()> {
    match args.command {
        Command::Path => path::run(args),
    }
}
