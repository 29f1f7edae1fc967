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
    /// MEMOSHELVE_DIR (the word `target` meaning <cargo target dir>/memoshelve); the `dir`
    /// setting of the project (in [package.metadata.memoshelve], then
    /// [workspace.metadata.memoshelve], then a memoshelve.toml); $XDG_CACHE_HOME/memoshelve;
    /// $HOME/.cache/memoshelve. `cargo memoshelve path` prints it and why.
    #[command(version, after_help = "Exit codes: 0 success, 1 error, 2 usage error.")]
    Memoshelve(MemoshelveArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MemoshelveArgs {
    /// Use this cache root instead of the default.
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,

    /// The Cargo.toml of the project whose cache settings to use (default: the one of the
    /// current directory). Settings: `dir` in [package.metadata.memoshelve],
    /// [workspace.metadata.memoshelve] or a memoshelve.toml.
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) manifest_path: Option<PathBuf>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Print no warnings, notes or progress bars (errors still go to stderr).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,

    /// Print more detail (`path`: the project found and every setting read).
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the cache root in use and why it was chosen, and what is there when it is not a
    /// directory (a file, a dangling link, a directory that cannot be read).
    ///
    /// With --json: {"path": "...", "source": "...", "config", "exists": true, "kind":
    /// "directory" | "missing" | "file" | "dangling link" | ..., "problem": "..." | null,
    /// "warnings"}.
    Path,
    /// List the entries: name, short key, size, age, last use, compute time, disk hits.
    ///
    /// With --json: an array of {name, key, version, type_name, bytes, created_ms,
    /// last_used_ms, compute_us, hits, misses, files, args}.
    List {
        /// Only entries of this cache name (a package name stands for its build script,
        /// `build-script.NAME`, when no entry has the name itself).
        #[arg(long)]
        name: Option<String>,
        /// Order of the rows.
        #[arg(long, value_enum, default_value_t = Sort::Name)]
        sort: Sort,
    },
    /// Show one entry in full: metadata, key inputs, output files.
    ///
    /// KEY may be any unique prefix of the hex key (12 digits are shown by `list`).
    ///
    /// With --json: {entry: {record, bytes, last_used_ms, files: [{path, mode, size, blake3,
    /// if_missing}]}, usage: {hits, misses, last_ms}}.
    Show {
        /// The key, or a unique prefix of it.
        key: String,
    },
    /// Summarize the cache: entries, bytes, per-name figures, hits and time saved.
    ///
    /// Time saved is each entry's hits (disk and remote) times the time its computation took.
    /// Remote hits (entries fetched from the remote tier into this root) are counted apart.
    ///
    /// With --json: {root, entries, bytes, blobs, blob_bytes, index_bytes, disk_bytes, hits,
    /// remote_hits, saved_us, oldest_ms, newest_ms, names: {NAME: {entries, bytes, hits,
    /// remote_hits, misses, saved_us}}}.
    Stats,
    /// Check every entry's integrity (value and output files, by blake3), in parallel.
    ///
    /// The index is read record by record first (torn or garbage records, unreadable ones).
    /// Exits with 1 when it found damage, also with --repair.
    ///
    /// With --json: {checked, damaged: [{name, key, problem}], removed, index_damage: [{file,
    /// problem}], index_repaired}.
    Verify {
        /// Remove the damaged entries (they are recomputed on next use).
        #[arg(long)]
        repair: bool,
    },
    /// Why did the last build miss? Compare the key parts recorded for the newest entry of NAME
    /// with the entry before it (or with KEY): input files, env vars, build context, version,
    /// arguments.
    ///
    /// With --json: {name, newest, against, changes: [{part, before, after}], unchanged}.
    Explain {
        /// The cache name (see `list`); a package name stands for its build script,
        /// `build-script.NAME`, when no entry has the name itself.
        name: String,
        /// Compare with this entry (a unique key prefix) instead of the one before the newest.
        key: Option<String>,
    },
    /// Delete least recently used entries until the cache fits the limits, then free the space
    /// of content nothing refers to any more.
    ///
    /// Entries used in the last 10 minutes (--keep-recent) are never pruned: a build may be
    /// using them. The report says how many the limits spared for that.
    ///
    /// With --json: {dry_run, removed: [{name, key, bytes}], kept, kept_bytes, protected,
    /// keep_recent_s, freed_files, freed_bytes}, where protected counts the kept entries the
    /// limits would have removed but for their recent use.
    Prune {
        /// Keep at most this much (e.g. 2GiB, 500MB, 1048576).
        #[arg(long, value_parser = parse_size)]
        max_size: Option<u64>,
        /// Delete entries not used for this long (e.g. 30d, 12h, 90m).
        #[arg(long, value_parser = parse_age)]
        max_age: Option<std::time::Duration>,
        /// Never delete entries used this recently (e.g. 1h; 0s turns the protection off):
        /// a build running now may be using them.
        #[arg(long, value_parser = parse_age, value_name = "AGE", default_value = "10m")]
        keep_recent: std::time::Duration,
        /// Only entries of this cache name (a package name stands for its build script,
        /// `build-script.NAME`, when no entry has the name itself).
        #[arg(long)]
        name: Option<String>,
        /// Show what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete damaged index records and content nothing refers to (blobs of removed or
    /// dropped entries, temporary files left by killed processes). Safe while builds use the
    /// cache: it waits for running writes and holds new ones off while it works.
    ///
    /// The event log (hits and misses, read by `stats`) is folded to one line per entry and
    /// kind of event; the event files of processes still running stay as they are until a
    /// later compaction. events_before and events_after count the lines folded.
    ///
    /// With --json: {index_before, index_after, freed_files, freed_bytes, events_before,
    /// events_after, backup}, where backup
    /// is null or {file, entries, blobs, bytes, archive_bytes}.
    Compact {
        /// First write every entry to this archive (as `backup` does; `restore` reads it).
        #[arg(long, value_name = "FILE")]
        backup: Option<std::path::PathBuf>,
    },
    /// Bring the cache to this version's format: entries written by other versions are dropped
    /// (recomputed on next use), never misread.
    Upgrade,
    /// Turn on transparent mode: write this tool as `[build] rustc-wrapper` into the project's
    /// `.cargo/config.toml` (or, with --global, `$CARGO_HOME/config.toml`), so that every
    /// build script cargo runs is memoized, unchanged.
    ///
    /// The wrapper is written by its bare name, `cargo-memoshelve`, when the first one on PATH
    /// is this one: the file then names no path of this machine and can be committed.
    /// Otherwise it is this binary's absolute path, and a note says why.
    ///
    /// A wrapper already set there (sccache, say) is kept as the inner one, in `[env]
    /// MEMOSHELVE_RUSTC_WRAPPER`: every other compile still goes to it. The rest of the file,
    /// comments included, stays as it is. Undo with `cargo memoshelve setup --undo`, which
    /// removes the file when nothing else is left in it (and a project's `.cargo` directory
    /// when that is then empty).
    ///
    /// With --json: {"config": "...", "scope": "project" | "global", "wrapper": "...",
    /// "inner": "..." | null, "changed": true, "by_name": true, "reason": "...", "removed":
    /// ["..."]} (by_name and reason are null with --undo).
    Setup {
        /// Write `$CARGO_HOME/config.toml` (every project of this user) instead.
        #[arg(long)]
        global: bool,
        /// Remove the wrapper again (the inner one, if any, becomes the wrapper again).
        #[arg(long)]
        undo: bool,
    },
    /// Run a cargo command with this cache (MEMOSHELVE_DIR set to it), then report the entries
    /// it added and the computation time they hold: for warming a CI cache. Exits with cargo's
    /// status.
    ///
    /// Example: cargo memoshelve warm -- build --release --workspace
    Warm {
        /// Then push the entries it added to the remote tier (see `remote push`).
        #[arg(long)]
        push: bool,
        /// The cargo command line, after `--`.
        #[arg(last = true, required = true, value_name = "CARGO ARGS")]
        cargo_args: Vec<String>,
    },
    /// Write entries and their content to one compressed archive (tar + zstd).
    Backup {
        /// The archive to write (conventionally `.tar.zst`).
        file: std::path::PathBuf,
        /// Only entries used (hit or written) this recently, e.g. 7d: what recent builds needed.
        #[arg(long, value_parser = parse_age, value_name = "AGE")]
        used_since: Option<std::time::Duration>,
    },
    /// Add the entries of an archive made by `backup`. Every member is checked first: only
    /// regular files at the expected places (nothing that could escape the root), every blob
    /// and every entry verified by blake3; only then does anything become visible.
    Restore {
        /// The archive to read.
        file: std::path::PathBuf,
        /// Add to a cache that already has entries (otherwise restoring needs an empty one).
        #[arg(long)]
        merge: bool,
    },
    /// The remote tier shared by CI runners and people (MEMOSHELVE_REMOTE, or `remote` in
    /// [workspace.metadata.memoshelve]): check it, push local entries to it, pull from it.
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Delete entries: all of them, or those of one cache name.
    ///
    /// Asks for confirmation on a terminal; elsewhere it refuses to run without --yes.
    Clear {
        /// Only entries of this cache name (a package name stands for its build script,
        /// `build-script.NAME`, when no entry has the name itself).
        #[arg(long)]
        name: Option<String>,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

/// `cargo memoshelve remote ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum RemoteCommand {
    /// Is the remote reachable, how fast does it answer, and what may this process do with it.
    /// Exits with 1 when it is not reachable.
    ///
    /// With --json: {url, origin, mode, signing, reachable, latency_ms, error} (the URL
    /// without credentials; url is null when no remote is configured).
    Status,
    /// Upload local entries the remote does not have (their blobs first, skipping blobs it has),
    /// in parallel. Refused in read-only mode.
    ///
    /// With --json: {url, entries, uploaded, present, blobs, bytes, failed: [{name, key,
    /// error}]}.
    Push {
        /// Only entries used (hit or written) this recently, e.g. 7d.
        #[arg(long, value_parser = parse_age, value_name = "AGE")]
        used_since: Option<std::time::Duration>,
    },
    /// Fetch the remote's entries into the local cache ahead of a build (every blob checked).
    ///
    /// With --json: {url, listed, fetched, present, other_names, missing, failed: [{key,
    /// error}]}.
    Pull {
        /// Only entries of this cache name.
        #[arg(long)]
        name: Option<String>,
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

/// `2GiB`, `500MB`, `10k`, `1048576` -> bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|ch: char| !ch.is_ascii_digit() && ch != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 =
        number.parse().map_err(|_| format!("{text:?} is not a size like 2GiB or 500MB"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
            ));
        }
    };
    Ok((number * factor) as u64)
}

/// `30d`, `12h`, `90m`, `45s` -> a duration.
pub(crate) fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("{text:?} is not an age like 30d, 12h or 90m"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => return Err(format!("unknown age unit {other:?} (use s, m, h, d or w)")),
    };
    Ok(std::time::Duration::from_secs(number * seconds))
}

#[cfg(test)]
mod parse_tests {
    #[test]
    fn sizes_and_ages_parse() {
        assert_eq!(super::parse_size("2GiB"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(super::parse_size("500MB"), Ok(500_000_000));
        assert_eq!(super::parse_size("1.5KiB"), Ok(1536));
        assert_eq!(super::parse_size("1048576"), Ok(1_048_576));
        assert!(super::parse_size("lots").is_err());
        assert!(super::parse_size("3 parsecs").is_err());
        assert_eq!(super::parse_age("30d"), Ok(std::time::Duration::from_secs(30 * 86_400)));
        assert_eq!(super::parse_age("90m"), Ok(std::time::Duration::from_secs(5400)));
        assert!(super::parse_age("soon").is_err());
    }
}
