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
    /// List the entries: name, short key, size, age, last use, compute time, disk hits.
    ///
    /// With --json: an array of {name, key, version, type_name, bytes, created_ms,
    /// last_used_ms, compute_us, hits, misses, files, args}.
    List {
        /// Only entries of this cache name.
        #[arg(long)]
        name: Option<String>,
        /// Order of the rows.
        #[arg(long, value_enum, default_value_t = Sort::Name)]
        sort: Sort,
    },
    /// Show one entry in full: metadata, key inputs, output files.
    ///
    /// KEY may be any unique prefix of the hex key (12 digits are shown by `list`).
    Show {
        /// The key, or a unique prefix of it.
        key: String,
    },
    /// Summarize the cache: entries, bytes, per-name figures, hits and time saved.
    ///
    /// Time saved is each entry's disk hits times the time its computation took.
    Stats,
    /// Check every entry's integrity (value and output files, by blake3), in parallel.
    ///
    /// Exits with 1 when it found damage, also with --repair.
    Verify {
        /// Remove the damaged entries (they are recomputed on next use).
        #[arg(long)]
        repair: bool,
    },
    /// Delete entries: all of them, or those of one cache name.
    ///
    /// Asks for confirmation on a terminal; elsewhere it refuses to run without --yes.
    Clear {
        /// Only entries of this cache name.
        #[arg(long)]
        name: Option<String>,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

/// How `list` orders its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Sort {
    /// By cache name, then key.
    Name,
    /// Largest first.
    Size,
    /// Newest first.
    Age,
    /// Most recently used first.
    Used,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cargo::command().debug_assert();
    }
}
