//! `memoshelve`, the full tool: `cargo memoshelve <command>` (the front, `cargo-memoshelve`,
//! execs it): parse, run, print the error, pick the exit code. Run by a build-script launcher,
//! the [`wrapper`]'s runner instead.

mod cli;
mod commands;
mod launching;
mod output;
mod project;
#[allow(dead_code, reason = "the full tool uses part of what the binaries share")]
mod protocol;
mod wrapper;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|first| first == protocol::RUN_FLAG) {
        return wrapper::run::main(&args[2..]);
    }
    if args.get(1).is_some_and(|first| first == protocol::COMPILE_FLAG) {
        return wrapper::compile::main(&args[2..]);
    }
    // `cargo memoshelve list` runs `cargo-memoshelve memoshelve list`; `memoshelve list` works too.
    if args.get(1).is_none_or(|first| first != "memoshelve") {
        args.insert(1, "memoshelve".into());
    }
    let cli::Cargo::Memoshelve(args) = cli::Cargo::parse_from(args);
    match commands::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {}", output::error_message(&err));
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
