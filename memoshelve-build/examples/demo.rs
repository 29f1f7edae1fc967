//! The README's demo: memoize a slow function, then call it again in this process and in a
//! fresh one, and print where each value came from.
//!
//! Run it with `cargo run -p memoshelve-build --example demo`. It uses a throwaway cache in the
//! system temp directory (or `MEMOSHELVE_DIR` when set), emptied at the start.

use std::process::Command;
use std::time::Instant;

use memoshelve_build::Memo;

/// Deliberately slow: counts primes below `limit` by trial division.
fn count_primes(limit: u64) -> u64 {
    (2..limit).filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)).count() as u64
}

fn call(memo: &Memo, label: &str) {
    let started = Instant::now();
    let (primes, status) = memo.call_with_status(&2_000_000u64, || count_primes(2_000_000));
    let took = started.elapsed().as_secs_f64();
    #[expect(clippy::print_stdout, reason = "a demo program reports to its terminal")]
    {
        println!("{label:<28} {primes} primes below 2,000,000   {status:<14} {took:>9.4} s");
    }
}

fn main() {
    let root = std::env::var_os("MEMOSHELVE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("memoshelve-demo"));
    let memo = Memo::new("demo-primes").dir(&root);
    if std::env::args().any(|arg| arg == "--fresh-process") {
        call(&memo, "call 3 (a fresh process):");
        return;
    }
    let _ = std::fs::remove_dir_all(&root);
    #[expect(clippy::print_stdout, reason = "a demo program reports to its terminal")]
    {
        println!("cache root: {}\n", root.display());
    }
    call(&memo, "call 1:");
    call(&memo, "call 2 (same process):");
    let exe = std::env::current_exe().expect("the demo knows its own path");
    let status = Command::new(exe).arg("--fresh-process").env("MEMOSHELVE_DIR", &root).status();
    assert!(status.is_ok_and(|status| status.success()), "the fresh process failed");
}
