//! Dev automation: `cargo xtask <task>`. Dispatch only; each task lives in its own file.

#![expect(clippy::print_stdout, clippy::print_stderr, reason = "xtask reports to a terminal")]

mod bench;
mod bench_e2e;
mod bench_table;
mod bench_wrapper;
mod ci;
mod demo;
mod tidy;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  demo    the README's demo: a LALRPOP codegen example built twice around `cargo clean`
  bench   the speed suite: criterion benches (release and opt-level 0), examples cold vs warm,
          compile cost; writes BENCHMARKS.md (`cargo xtask bench --help` for options)
  ci      everything CI checks: fmt, clippy -D warnings, tests (unit, integration, e2e, doc), the demo, docs, tidy
  tidy    repository hygiene: module docs, trailing whitespace, ARCHITECTURE.md names every crate";

fn main() -> ExitCode {
    // No test, example build or bench run from here touches the user's own cache: the per-user
    // default root (`$XDG_CACHE_HOME/memoshelve`, asked before the platform's) goes under the
    // target dir, for this process and everything it runs. What `ci` finds of the user's own
    // cache is checked unchanged at its end (`ci::UserFiles`).
    let home = ci::target_dir().join("xtask-home");
    // SAFETY: the first thing the process does, with no other thread running.
    unsafe {
        std::env::set_var(
            ci::USER_CACHE_HOME,
            std::env::var_os("XDG_CACHE_HOME").unwrap_or_default(),
        );
        std::env::set_var("XDG_CACHE_HOME", home.join("cache"));
    }
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("bench") => bench::run(&std::env::args().skip(2).collect::<Vec<_>>()),
        Some("ci") => ci::run(),
        Some("demo") => demo::run(),
        Some("tidy") => tidy::run(),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
