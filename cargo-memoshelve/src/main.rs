//! `cargo memoshelve`: parse, run, print the error, pick the exit code. As `RUSTC_WRAPPER`
//! (its first argument a rustc) or run by a build-script launcher, the [`wrapper`] instead.

mod cli;
mod commands;
mod output;
mod project;
mod wrapper;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = wrapper::dispatch(&args) {
        return code;
    }
    let cli::Cargo::Memoshelve(args) = cli::Cargo::parse();
    match commands::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
