//! The speed suite's end-to-end parts: workload 8 (each crate of `examples/` built after
//! `cargo clean`, with an empty cache and with a warm one), workload 9 (what adding
//! memoshelve-build as a build-dependency costs a cold build) and, with `--peers`, workload 10's
//! Python peers.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::ci::project_root;

pub(crate) fn cargo_in(dir: &Path) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(dir).env_remove("MEMOSHELVE_DIR").env_remove("RUSTFLAGS");
    command
}

pub(crate) fn timed(what: &str, command: &mut Command) -> anyhow::Result<f64> {
    eprintln!("==> {what}");
    let started = Instant::now();
    let output = command.output().with_context(|| format!("cannot start {what}"))?;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!("{what} failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    eprintln!("<== {what}: {seconds:.2} s");
    Ok(seconds)
}

/// The units of cargo's `--timings` report for the last build into `target`.
fn timed_units(target: &Path) -> anyhow::Result<Vec<Value>> {
    let report = target.join("cargo-timings/cargo-timing.html");
    let html = fs::read_to_string(&report)
        .with_context(|| format!("cargo wrote no timings report at {}", report.display()))?;
    let start = html.find("UNIT_DATA = ").context("no UNIT_DATA in the timings report")?
        + "UNIT_DATA = ".len();
    let end = start + html[start..].find("];").context("unterminated UNIT_DATA")? + 1;
    serde_json::from_str(&html[start..end]).context("unreadable UNIT_DATA")
}

/// The duration cargo's `--timings` report gives the run of `package`'s build script (cargo
/// rounds it to 10 ms).
fn build_script_seconds(target: &Path, package: &str) -> anyhow::Result<f64> {
    timed_units(target)?
        .iter()
        .find(|unit| unit["name"] == package && unit["mode"] == "run-custom-build")
        .and_then(|unit| unit["duration"].as_f64())
        .with_context(|| {
            format!("no build-script run of {package} in {}'s report", target.display())
        })
}

/// The total run time of every build script in the last build into `target`, by cargo's
/// `--timings` report.
pub(crate) fn build_scripts_seconds(target: &Path) -> anyhow::Result<f64> {
    Ok(timed_units(target)?
        .iter()
        .filter(|unit| unit["mode"] == "run-custom-build")
        .filter_map(|unit| unit["duration"].as_f64())
        .sum())
}

/// The command line cargo ran `package`'s build script with, from a `-vv` build's output
/// ("Running `ENV=value ... /path/build-script-build`", shell-quoted): its variables and program.
fn build_script_command(
    stderr: &str,
    package: &str,
) -> anyhow::Result<(Vec<(String, String)>, String)> {
    let wanted = format!("CARGO_PKG_NAME={package} ");
    let line = stderr
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("Running `")?.strip_suffix('`'))
        .find(|command| command.contains(&wanted) && command.ends_with("/build-script-build"))
        .with_context(|| format!("no build-script run of {package} in cargo's -vv output"))?;
    let mut words = shell_words(line);
    let program = words.pop().context("an empty command line")?;
    let env = words
        .into_iter()
        .map(|word| {
            let (name, value) = word.split_once('=').context("not a variable")?;
            Ok((name.to_owned(), value.to_owned()))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((env, program))
}

/// Splits a command line the way a POSIX shell does for cargo's quoting: whitespace separates
/// words, `'...'` is literal, `\x` is `x`.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        match ch {
            ' ' | '\t' => words.extend(word.take()),
            '\'' => {
                let word = word.get_or_insert_with(String::new);
                word.extend(chars.by_ref().take_while(|&ch| ch != '\''));
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            _ => word.get_or_insert_with(String::new).push(ch),
        }
    }
    words.extend(word);
    words
}

/// The median wall time of `runs` runs of a build script as cargo ran it, each with
/// `MEMOSHELVE_DIR` from `cache_dir(run)`.
fn time_build_script(
    (env, program): &(Vec<(String, String)>, String),
    runs: usize,
    cache_dir: impl Fn(usize) -> std::path::PathBuf,
) -> anyhow::Result<f64> {
    let manifest_dir = env
        .iter()
        .find(|(name, _)| name == "CARGO_MANIFEST_DIR")
        .map(|(_, value)| value.clone())
        .context("no CARGO_MANIFEST_DIR in the build script's environment")?;
    let mut times = Vec::new();
    for run in 0..runs {
        let mut command = Command::new(program);
        command
            .current_dir(&manifest_dir)
            .env_remove("RUSTFLAGS")
            .envs(env.iter().map(|(name, value)| (name, value)))
            .env("MEMOSHELVE_DIR", cache_dir(run));
        let started = Instant::now();
        let output = command.output().with_context(|| format!("cannot run {program}"))?;
        times.push(started.elapsed().as_secs_f64());
        if !output.status.success() {
            bail!("{program} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Builds a crate whose build script is `fn main() {}` and returns that binary: workload 8's
/// floor, the cost of starting a build script at all (loading a debug binary with the library
/// path cargo sets, the runtime's start), run with each example's environment.
fn empty_build_script(work: &Path) -> anyhow::Result<String> {
    let dir = work.join("empty-build-script");
    fs::create_dir_all(dir.join("src"))?;
    fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"empty-build-script\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
         publish = false\n\n[workspace]\n",
    )?;
    fs::write(dir.join("build.rs"), "fn main() {}\n")?;
    fs::write(dir.join("src/lib.rs"), "")?;
    let output = cargo_in(&dir)
        .args(["build", "-vv", "--offline"])
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()?;
    if !output.status.success() {
        bail!("cannot build an empty build script:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(build_script_command(&String::from_utf8_lossy(&output.stderr), "empty-build-script")?.1)
}

/// Workload 8: for each example, `cargo clean` + build with an empty cache (cold), then
/// `cargo clean` + build with the cache it left (warm): the build script's run and the whole
/// build. Quick mode builds `lookup-table` only. The build script's run is also timed
/// directly (cargo's `--timings` rounds to 10 ms, longer than a warm run): the binary cargo
/// built, with the environment cargo gave it, run again with a fresh cache dir each time
/// (cold) and with the warm cache, the median of several runs each.
pub(crate) fn examples(out: &Path, quick: bool) -> anyhow::Result<Value> {
    let examples = project_root().join("examples");
    let packages: &[&str] = if quick {
        &["lookup-table"]
    } else {
        &["lookup-table", "assets", "grammar", "protos", "cbind"]
    };
    let work = out.join("examples");
    let _ = fs::remove_dir_all(&work);
    let target = work.join("target");
    let empty = empty_build_script(&work)?;
    let runs = if quick { 3 } else { 9 };
    let mut results = serde_json::Map::new();
    for package in packages {
        let cache = work.join(format!("cache-{package}"));
        let build = |state: &str| -> anyhow::Result<(f64, f64)> {
            timed(
                &format!("cargo clean ({package})"),
                cargo_in(&examples).arg("clean").env("CARGO_TARGET_DIR", &target),
            )?;
            let whole = timed(
                &format!("{package}: {state} build"),
                cargo_in(&examples)
                    .args(["build", "--quiet", "--timings", "--package", package])
                    .env("CARGO_TARGET_DIR", &target)
                    .env("MEMOSHELVE_DIR", &cache),
            )?;
            Ok((build_script_seconds(&target, package)?, whole))
        };
        let (cold_script, cold_build) = build("cold")?;
        let (warm_script, warm_build) = build("warm")?;
        // Once more, verbosely, to learn how cargo runs the build script.
        let touched = examples.join(package).join("build.rs");
        fs::File::options()
            .write(true)
            .open(&touched)?
            .set_modified(std::time::SystemTime::now())?;
        let verbose = cargo_in(&examples)
            .args(["build", "-vv", "--package", package])
            .env("CARGO_TARGET_DIR", &target)
            .env("MEMOSHELVE_DIR", &cache)
            .output()?;
        if !verbose.status.success() {
            bail!(
                "cargo build -vv -p {package} failed:\n{}",
                String::from_utf8_lossy(&verbose.stderr)
            );
        }
        let script = build_script_command(&String::from_utf8_lossy(&verbose.stderr), package)?;
        let cold_run =
            time_build_script(&script, runs, |run| work.join(format!("cold-{package}-{run}")))?;
        let warm_run = time_build_script(&script, runs, |_| cache.clone())?;
        // The floor: a build script that does nothing, started the same way.
        let empty_run =
            time_build_script(&(script.0.clone(), empty.clone()), runs, |_| cache.clone())?;
        eprintln!(
            "<== {package}: build script run {cold_run:.4} s cold, {warm_run:.4} s warm, \
             {empty_run:.4} s for an empty one"
        );
        results.insert(
            (*package).to_owned(),
            json!({
                "cold_build_script_s": cold_script,
                "warm_build_script_s": warm_script,
                "cold_build_script_run_s": cold_run,
                "warm_build_script_run_s": warm_run,
                "empty_build_script_run_s": empty_run,
                "runs": runs,
                "cold_build_s": cold_build,
                "warm_build_s": warm_build,
            }),
        );
    }
    Ok(Value::Object(results))
}

/// Workload 9: a cold `cargo build` of an empty crate whose build script uses
/// memoshelve-build (default features; and with `macros`), beside the same crate using only
/// the crates the library cannot do without (`blake3`, `serde`, `postcard`: "bare"), and
/// those with `cacache`, the floor before format 3 ("bare+cacache"). With
/// `MEMOSHELVE_BENCH_BEFORE=<dir of another memoshelve-build>`, that one too ("before"). Each in a
/// target dir of its own, with the workspace's lock file, so versions match. The variants are
/// built in alternation, round after round (3, or 1 with `--quick`), so that a slow moment of
/// the machine falls on all of them; each ratio is of the medians. Not incremental, as a
/// dependency from crates.io is compiled.
/// The crates memoshelve-build cannot do without, as a build-dependency declares them.
const BARE: &str = "blake3 = { version = \"1.8\", default-features = false, features = [\"std\"] }\n\
     serde = { version = \"1.0.200\", features = [\"derive\"] }\n\
     postcard = { version = \"1.1\", default-features = false, features = [\"use-std\"] }\n";

pub(crate) fn compile_cost(out: &Path, quick: bool) -> anyhow::Result<Value> {
    let root = project_root();
    let library = root.join("memoshelve-build");
    let library = library.display();
    let variants: Vec<(&str, String, &str)> = {
        let mut variants = vec![
            (
                "bare",
                BARE.to_owned(),
                "let _ = (blake3::hash(b\"\"), postcard::to_allocvec(&1u8));",
            ),
            (
                "memoshelve-build",
                format!("memoshelve-build = {{ path = \"{library}\" }}\n"),
                "let _ = memoshelve_build::Memo::new(\"x\");",
            ),
        ];
        if !quick {
            variants.push((
                "bare+cacache",
                format!("{BARE}cacache = {{ version = \"=13.0.0\", default-features = false }}\n"),
                "let _ = (cacache::index::find(std::path::Path::new(\"x\"), \"k\"), \
                 blake3::hash(b\"\"), postcard::to_allocvec(&1u8));",
            ));
            if let Some(before) = std::env::var_os("MEMOSHELVE_BENCH_BEFORE") {
                let before = Path::new(&before).display().to_string();
                variants.push((
                    "before",
                    format!("memoshelve-build = {{ path = \"{before}\" }}\n"),
                    "let _ = memoshelve_build::Memo::new(\"x\");",
                ));
            }
            variants.push((
                "memoshelve-build+macros",
                format!("memoshelve-build = {{ path = \"{library}\", features = [\"macros\"] }}\n"),
                "let _ = memoshelve_build::Memo::new(\"x\");",
            ));
        }
        variants
    };
    let work = out.join("compile");
    let _ = fs::remove_dir_all(&work);
    for (label, dependencies, use_them) in &variants {
        let dir = work.join(label);
        fs::create_dir_all(dir.join("src"))?;
        fs::write(
            dir.join("Cargo.toml"),
            format!(
                "[package]\nname = \"compile-{}\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
                 publish = false\n\n[workspace]\n\n[build-dependencies]\n{dependencies}",
                label.replace('+', "-")
            ),
        )?;
        fs::write(dir.join("build.rs"), format!("fn main() {{\n    {use_them}\n}}\n"))?;
        fs::write(dir.join("src/lib.rs"), "")?;
        fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"))?;
        // Fetch first, so the timing is the compile alone.
        timed(&format!("fetch ({label})"), cargo_in(&dir).arg("fetch"))?;
    }
    let rounds = if quick { 1 } else { 3 };
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 1..=rounds {
        for ((label, _, _), samples) in variants.iter().zip(&mut samples) {
            let dir = work.join(label);
            let _ = fs::remove_dir_all(dir.join("target"));
            samples.push(timed(
                &format!("cold build with {label} as build-dependency (round {round} of {rounds})"),
                cargo_in(&dir)
                    .args(["build", "--quiet", "--offline"])
                    .env("CARGO_TARGET_DIR", dir.join("target"))
                    // The library is a path dependency here, which cargo compiles
                    // incrementally; from crates.io, as users get it, it is not (0.3-0.8 s
                    // of its compile here, measured alternating both ways).
                    .env("CARGO_INCREMENTAL", "0"),
            )?);
        }
    }
    let mut results = serde_json::Map::new();
    for ((label, _, _), mut samples) in variants.into_iter().zip(samples) {
        let dir = work.join(label);
        let crates = fs::read_dir(dir.join("target/debug/deps"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|entry| entry.file_name().to_string_lossy().ends_with(".rlib"))
                    .count()
            })
            .unwrap_or(0);
        let rounds = samples.clone();
        samples.sort_by(f64::total_cmp);
        let median = samples[samples.len() / 2];
        results.insert(
            label.to_owned(),
            json!({ "seconds": median, "rounds": rounds, "rlibs": crates }),
        );
    }
    Ok(Value::Object(results))
}

/// Workload 10's optional part: Python's memoshelve, joblib.Memory and diskcache on workloads
/// 1-4, in a venv made here, timed by `bench/peers.py`.
pub(crate) fn python_peers(out: &Path) -> anyhow::Result<Value> {
    let venv = out.join("venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        timed("create the venv", Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        timed(
            "install memoshelve (with dill, stablehash), joblib, diskcache",
            Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "memoshelve",
                "dill",
                "stablehash",
                "joblib",
                "diskcache",
            ]),
        )?;
    }
    let scratch = out.join("python-scratch");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let output = Command::new(&python)
        .arg(project_root().join("bench/peers.py"))
        .arg(&scratch)
        .output()
        .context("cannot run bench/peers.py")?;
    if !output.status.success() {
        bail!("bench/peers.py failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    serde_json::from_slice(&output.stdout).context("bench/peers.py printed no JSON")
}
