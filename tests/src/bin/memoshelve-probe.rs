//! A small program for the end-to-end tests: memoizes a known pure function in a fresh process.
//!
//! Usage: `memoshelve-probe call|key [--dir DIR] [--name NAME] [--version V] [--arg N]
//! [--count C | --args N,M,..] [--times K] [--size BYTES] [--disable] [--no-race] [--input-file PATH]
//! [--input-glob PATTERN] [--env NAME] [--target-independent] [--profile-independent]
//! [--features-independent] [--async] [--hold]`.
//! `call` calls each of the `C` arguments `N..N+C`, `K` times over, and prints one line per
//! call: `<arg> <checksum> <status>` (`--async`: through `Memo::call_async_with_status`;
//! `--hold`: then prints `holding` and waits for its stdin to close); `key` prints the hex key
//! of argument `N`; `inputs` prints the key inputs, one `kind<TAB>name<TAB>value` line each; `outputs --out DIR` runs a file step
//! that writes `generated.rs` and emits `cargo:rustc-link-lib=probe` (with `--print`, also prints
//! `cargo:rustc-link-lib=printed` itself), and prints its status.
//! Each computation also appends a line to `$PROBE_COUNTER` when that is set, so tests can count
//! how often the function really ran, across processes. `--undeclared FILE` makes the result
//! depend on a file that is not part of the key (the first byte of `call`'s value, the text of
//! `outputs`' file): what `MEMOSHELVE_AUDIT` exists to catch.

use std::io::Write;
use std::process::ExitCode;

use memoshelve_build::Memo;

/// The pure function under test: `size` bytes derived from `arg`.
fn expected(arg: u64, size: usize) -> Vec<u8> {
    (0..size).map(|index| (arg as usize).wrapping_mul(31).wrapping_add(index * 7) as u8).collect()
}

/// `expected`, counted: the line in `$PROBE_COUNTER` shows the function really ran.
/// `$PROBE_SLEEP_MS` makes it slow, so that concurrent processes overlap.
fn compute(arg: u64, size: usize) -> Vec<u8> {
    if let Some(pause) = std::env::var("PROBE_SLEEP_MS").ok().and_then(|ms| ms.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(pause));
    }
    if let Some(counter) = std::env::var_os("PROBE_COUNTER") {
        let mut file =
            std::fs::File::options().create(true).append(true).open(counter).expect("counter file");
        // One write per line: appends from concurrent processes do not interleave.
        file.write_all(format!("{arg}\n").as_bytes()).expect("counter line");
    }
    expected(arg, size)
}

fn checksum(bytes: &[u8]) -> String {
    format!("{}:{}", bytes.len(), bytes.iter().map(|&byte| u64::from(byte)).sum::<u64>())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        return usage();
    };
    let option =
        |flag: &str| args.iter().position(|arg| arg == flag).and_then(|index| args.get(index + 1));
    let flag = |flag: &str| args.iter().any(|arg| arg == flag);
    let mut memo = Memo::new(option("--name").map_or("probe", String::as_str));
    if let Some(dir) = option("--dir") {
        memo = memo.dir(dir);
    }
    if let Some(version) = option("--version") {
        memo = memo.version(version.as_str());
    }
    memo = memo.disable(flag("--disable")).allow_race(!flag("--no-race"));
    if let Some(path) = option("--input-file") {
        memo = memo.input_file(path);
    }
    if let Some(pattern) = option("--input-glob") {
        memo = memo.input_glob(pattern.as_str());
    }
    if let Some(name) = option("--env") {
        memo = memo.env(name.as_str());
    }
    if flag("--target-independent") {
        memo = memo.target_independent();
    }
    if flag("--profile-independent") {
        memo = memo.profile_independent();
    }
    if flag("--features-independent") {
        memo = memo.features_independent();
    }
    let arg: u64 = option("--arg").and_then(|arg| arg.parse().ok()).unwrap_or(7);
    let count: u64 = option("--count").and_then(|count| count.parse().ok()).unwrap_or(1);
    let times: usize = option("--times").and_then(|times| times.parse().ok()).unwrap_or(1);
    let size: usize = option("--size").and_then(|size| size.parse().ok()).unwrap_or(16);
    let undeclared =
        option("--undeclared").map(|path| std::fs::read(path).expect("read --undeclared"));
    let with_undeclared = |mut value: Vec<u8>| {
        if let (Some(first), Some(byte)) =
            (value.first_mut(), undeclared.as_ref().and_then(|bytes| bytes.first()))
        {
            *first = *byte;
        }
        value
    };
    let mut stdout = std::io::stdout().lock();
    match command.as_str() {
        "call" => {
            // `--args 5,3,9`: exactly these arguments, in this order.
            let listed: Option<Vec<u64>> = option("--args").map(|list| {
                list.split(',').map(|arg| arg.parse().expect("--args: numbers")).collect()
            });
            let all: Vec<u64> = listed.unwrap_or_else(|| (arg..arg + count).collect());
            for _ in 0..times {
                for &arg in &all {
                    let (value, status) = if flag("--async") {
                        let compute = async { with_undeclared(compute(arg, size)) };
                        futures::executor::block_on(
                            memo.call_async_with_status(&(arg, size as u64), compute),
                        )
                    } else {
                        memo.call_with_status(&(arg, size as u64), || {
                            with_undeclared(compute(arg, size))
                        })
                    };
                    if undeclared.is_none() {
                        assert_eq!(value, expected(arg, size), "the probe got a wrong value");
                    }
                    writeln!(stdout, "{arg} {} {status}", checksum(&value)).expect("stdout");
                }
            }
            if flag("--hold") {
                // Still running, its event file open, until the test closes our stdin.
                writeln!(stdout, "holding").expect("stdout");
                stdout.flush().expect("stdout");
                std::io::copy(&mut std::io::stdin(), &mut std::io::sink()).expect("stdin");
            }
        }
        "key" => {
            let key = memo.key_for::<Vec<u8>, _>(&(arg, size as u64)).expect("encodable");
            writeln!(stdout, "{key}").expect("stdout");
        }
        "outputs" => {
            let out = option("--out").expect("outputs needs --out DIR");
            let (_, status) = memo.outputs(out).call_with_status(&arg, |step| {
                compute(arg, 0);
                let extra = undeclared.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                std::fs::write(
                    step.dir().join("generated.rs"),
                    format!("pub const ARG: u64 = {arg};\n{extra}"),
                )
                .expect("write generated.rs");
                step.directive("rustc-link-lib=probe");
                if flag("--print") {
                    // A generator that talks to cargo itself, and chatters.
                    writeln!(std::io::stdout(), "cargo:rustc-link-lib=printed").expect("stdout");
                    writeln!(std::io::stdout(), "generator chatter").expect("stdout");
                }
            });
            writeln!(stdout, "{arg} outputs {status}").expect("stdout");
        }
        "inputs" => {
            for input in memo.key_inputs() {
                writeln!(
                    stdout,
                    "{}\t{}\t{}",
                    input.kind,
                    input.name,
                    input.value.replace('\n', "\\n")
                )
                .expect("stdout");
            }
        }
        _ => return usage(),
    }
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    let _ = writeln!(
        std::io::stderr(),
        "usage: memoshelve-probe call|key|inputs [--dir DIR] [--arg N] [--times K] ..."
    );
    ExitCode::from(2)
}
