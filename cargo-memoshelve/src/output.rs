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
}
