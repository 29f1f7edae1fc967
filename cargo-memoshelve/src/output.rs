//! Rendering for people: sizes, ages, durations and aligned tables. (`--json` uses serde_json.)

use std::io::{IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cli::MemoshelveArgs;

/// A progress bar on stderr for `total` steps of long work; hidden when stderr is not a terminal
/// or the output is `--json` or `--quiet`, so scripts and pipes see nothing of it.
pub(crate) fn progress(
    args: &MemoshelveArgs,
    total: u64,
    message: &'static str,
) -> indicatif::ProgressBar {
    bar(args, total, message, "{msg} [{bar:30}] {pos}/{len} ({eta})")
}

/// [`progress`] counting bytes.
pub(crate) fn progress_bytes(
    args: &MemoshelveArgs,
    total: u64,
    message: &'static str,
) -> indicatif::ProgressBar {
    bar(args, total, message, "{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
}

fn bar(
    args: &MemoshelveArgs,
    total: u64,
    message: &'static str,
    template: &str,
) -> indicatif::ProgressBar {
    if args.json || args.quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(template)
        .expect("the template is valid")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(message);
    bar
}

/// `warning: ...` on stderr, unless `--quiet`.
pub(crate) fn warn(args: &MemoshelveArgs, message: &str) {
    if !args.quiet {
        let _ = writeln!(std::io::stderr(), "warning: {message}");
    }
}

/// `note: ...` on stderr, unless `--quiet`.
pub(crate) fn note(args: &MemoshelveArgs, message: &str) {
    if !args.quiet {
        let _ = writeln!(std::io::stderr(), "note: {message}");
    }
}

/// `1536` -> `1.5 KiB`.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// `1 entry`, `3 entries`, `0 files`, `2 damaged index records`: a count and its noun, the noun
/// (its last word) plural unless the count is one.
pub(crate) fn count(n: impl std::fmt::Display, noun: &str) -> String {
    let n = n.to_string();
    if n == "1" {
        return format!("{n} {noun}");
    }
    let consonant_y = noun.strip_suffix('y').filter(|stem| {
        stem.chars().last().is_some_and(|last| !matches!(last, 'a' | 'e' | 'i' | 'o' | 'u'))
    });
    match consonant_y {
        Some(stem) => format!("{n} {stem}ies"),
        None if ["s", "x", "sh", "ch"].iter().any(|end| noun.ends_with(end)) => {
            format!("{n} {noun}es")
        }
        None => format!("{n} {noun}s"),
    }
}

/// A duration as `parse_age` reads it back: `10m`, `36h`, `45s`, `7d`.
pub(crate) fn span(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0 => "0s".to_owned(),
        _ if seconds.is_multiple_of(86_400) => format!("{}d", seconds / 86_400),
        _ if seconds.is_multiple_of(3600) => format!("{}h", seconds / 3600),
        _ if seconds.is_multiple_of(60) => format!("{}m", seconds / 60),
        _ => format!("{seconds}s"),
    }
}

/// The error and its causes joined as `{:#}` joins them, each said once: a cause whose text the
/// messages before it already hold (an error that writes its source into its own message and
/// also returns it from `source()`, as `memoshelve_build::Error` does) is left out.
pub(crate) fn error_message(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if cause.is_empty() || text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// Milliseconds since the epoch -> `5m ago`, `3h ago`, `2d ago`.
pub(crate) fn age(then_ms: u64) -> String {
    let seconds = now_ms().saturating_sub(then_ms) / 1000;
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86_400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86_400),
    }
}

/// Microseconds -> `850µs`, `12.3ms`, `4.2s`, `3m05s`.
pub(crate) fn duration(micros: u64) -> String {
    match micros {
        0..1000 => format!("{micros}µs"),
        1000..1_000_000 => format!("{:.1}ms", micros as f64 / 1000.0),
        1_000_000..60_000_000 => format!("{:.1}s", micros as f64 / 1e6),
        _ => format!("{}m{:02}s", micros / 60_000_000, (micros / 1_000_000) % 60),
    }
}

/// Writes rows as columns aligned to their widest cell; the first row is the header.
pub(crate) fn table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    // Each cell's width is counted once; a listing can be 100k rows of 8 cells.
    let counts: Vec<Vec<usize>> =
        rows.iter().map(|row| row.iter().map(|cell| cell.chars().count()).collect()).collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in &counts {
        for (width, count) in widths.iter_mut().zip(row) {
            *width = (*width).max(*count);
        }
    }
    let mut line = String::new();
    for (row, counts) in rows.iter().zip(&counts) {
        line.clear();
        for (column, (cell, count)) in row.iter().zip(counts).enumerate() {
            line.push_str(cell);
            if column + 1 < row.len() {
                let pad = widths[column] - count + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_durations_and_tables_read_well() {
        assert_eq!(super::size(999), "999 B");
        assert_eq!(super::size(1536), "1.5 KiB");
        assert_eq!(super::size(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(super::duration(850), "850µs");
        assert_eq!(super::duration(12_345), "12.3ms");
        assert_eq!(super::duration(185_000_000), "3m05s");
        let mut out = Vec::new();
        super::table(
            &mut out,
            &[vec!["NAME".into(), "SIZE".into()], vec!["protos".into(), "1.5 KiB".into()]],
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "NAME    SIZE\nprotos  1.5 KiB\n");
    }

    #[test]
    fn an_error_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotADirectory, "Not a directory");
        // An error that writes its source into its message and returns it as its source.
        #[derive(Debug)]
        struct Repeats(std::io::Error);
        impl std::fmt::Display for Repeats {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "cannot list /r/index: {}", self.0)
            }
        }
        impl std::error::Error for Repeats {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = anyhow::Error::new(Repeats(io)).context("stats failed");
        assert_eq!(
            format!("{err:#}"),
            "stats failed: cannot list /r/index: Not a directory: Not a directory"
        );
        assert_eq!(
            super::error_message(&err),
            "stats failed: cannot list /r/index: Not a directory"
        );
        let plain = anyhow::anyhow!("denied").context("cannot read x");
        assert_eq!(super::error_message(&plain), "cannot read x: denied");
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(super::count(1, "entry"), "1 entry");
        assert_eq!(super::count(0, "entry"), "0 entries");
        assert_eq!(super::count(3_u64, "entry"), "3 entries");
        assert_eq!(super::count(1_usize, "blob"), "1 blob");
        assert_eq!(super::count(2, "file"), "2 files");
        assert_eq!(super::count(2, "key"), "2 keys");
        assert_eq!(super::count(11, "damaged index record"), "11 damaged index records");
        assert_eq!(super::count(2, "pass"), "2 passes");
        assert_eq!(super::span(std::time::Duration::from_secs(600)), "10m");
        assert_eq!(super::span(std::time::Duration::from_secs(86_400)), "1d");
        assert_eq!(super::span(std::time::Duration::from_secs(90)), "90s");
        assert_eq!(super::span(std::time::Duration::ZERO), "0s");
    }
}
