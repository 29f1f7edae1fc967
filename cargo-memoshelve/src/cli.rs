//! The command line, with clap derive: `cargo memoshelve <command>` and `cargo-memoshelve <command>`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Cargo runs `cargo-memoshelve memoshelve <args>` for `cargo memoshelve <args>`.
#[derive(Debug, Parser)]
#[command(name = "cargo", bin_name = "cargo", version, styles = clap::builder::styling::Styles::styled())]
pub(crate) enum Cargo {
    /// Manage the memoshelve cache of build-script results.
    ///
    /// The cache holds the memoized results of build scripts (generated code, bindings,
    /// processed assets) and survives `cargo clean`. Its root is, first of: --dir;
    /// MEMOSHELVE_DIR (the word `target` meaning <cargo target dir>/memoshelve);
    /// $XDG_CACHE_HOME/memoshelve; $HOME/.cache/memoshelve.
    #[command(version, after_help = "Exit codes: 0 success, 1 error, 2 usage error.")]
    Memoshelve(MemoshelveArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MemoshelveArgs {
    /// Use this cache root instead of the default.
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the cache root in use and why it was chosen.
    ///
    /// With --json: {"path": "...", "source": "...", "exists": true}.
    Path,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cargo::command().debug_assert();
    }
}
