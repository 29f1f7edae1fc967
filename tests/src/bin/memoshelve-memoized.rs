//! A program with `#[memoize]` functions for the end-to-end tests: run twice on one cache root
//! (`MEMOSHELVE_DIR`), the second process must get its values from the disk tier.
//!
//! Usage: `memoshelve-memoized <n>`. Calls `square(n)` twice and the async `cube(n)` twice
//! (under `futures::executor::block_on`), and prints one line per function:
//! `<fn> <value> <tier before the first call>`, where the tier is `disk` when a fresh lookup of
//! the companion `Memo` without its memory tier finds the value, else `none`.
//! Each real computation appends a line to `$PROBE_COUNTER`, so tests can count them.

use std::io::Write;

use memoshelve_build::{Status, memoize};

fn count(what: &str) {
    if let Some(counter) = std::env::var_os("PROBE_COUNTER") {
        let mut file =
            std::fs::File::options().create(true).append(true).open(counter).expect("counter file");
        writeln!(file, "{what}").expect("counter line");
    }
}

#[memoize]
fn square(n: u64) -> u64 {
    count("square");
    n * n
}

#[memoize]
async fn cube(n: u64) -> u64 {
    count("cube");
    n * n * n
}

fn tier(found: Option<(u64, Status)>) -> &'static str {
    match found {
        Some((_, Status::Disk)) => "disk",
        Some(_) => "other",
        None => "none",
    }
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|n| n.parse().ok()).expect("usage: <n>");
    let mut stdout = std::io::stdout().lock();

    let before = tier(square_memo().clone().mem_capacity(0).get_with_status(&(n,)));
    let value = square(n);
    assert_eq!(square(n), value);
    writeln!(stdout, "square {value} {before}").expect("stdout");

    let before = tier(cube_memo().clone().mem_capacity(0).get_with_status(&(n,)));
    let value = futures::executor::block_on(cube(n));
    assert_eq!(futures::executor::block_on(cube(n)), value);
    writeln!(stdout, "cube {value} {before}").expect("stdout");
}
