//! `cargo xtask bench`: the speed suite. Runs the criterion benches of `bench/` twice (release,
//! and `--profile bench-opt0`: the library as a user's build script gets it), then the end-to-end
//! timings (workload 8: the examples built cold and warm; workload 9: the build-dependency's
//! compile cost), and writes `target/memoshelve-bench/results.json` and the table of
//! `BENCHMARKS.md`. `--quick` is CI's variant: tiny sizes, short samples, one example, and the
//! table goes to `target/memoshelve-bench/BENCHMARKS.quick.md` instead (a filtered or
//! `--skip-e2e` run's to `BENCHMARKS.partial.md` there).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::ci::{cargo, project_root, step};

const USAGE: &str =
    "usage: cargo xtask bench [--quick] [--skip-e2e | --compile-only | --wrapper-only] [--peers] [--heavy] [--sccache] [FILTER]

  --quick      CI's variant: tiny sizes and samples, one example; asserts nothing about time
               and writes the table to target/memoshelve-bench/BENCHMARKS.quick.md
  --skip-e2e   only the in-process workloads (1-7, both builds); not workloads 8 and 9
  --compile-only  only workload 9, the compile cost of the build-dependency (a few minutes)
  --wrapper-only  only workload 11, transparent mode: pass-through cost, and examples/native-deps
               built cold, after `cargo clean` and at another path (a few minutes)
  --peers      also time mbx and kache on workload 11 (installed under
               target/memoshelve-bench/peers by `cargo install`, ~10 minutes each the first time),
               and Python's memoshelve, joblib.Memory and diskcache (workloads 1-4) in a
               venv under target/memoshelve-bench/venv (needs python3 and PyPI)
  --heavy      workload 11 on examples/heavy-native instead (openssl-src, jemalloc and six more
               vendored C libraries; one round of cold builds, ~5 minutes each, more with --peers)
  --sccache     workload 11 also with sccache as the wrapper's inner one (`cargo install
               --locked sccache` under target/memoshelve-bench/peers the first time)
  FILTER       passed to criterion: run only the benchmarks whose id matches it";

/// The servers the remote-hit bench runs against, by the variables `.ci/remote-servers` exports.
const REMOTES: [(&str, &str); 2] =
    [("redis", "MEMOSHELVE_TEST_REDIS"), ("http", "MEMOSHELVE_TEST_HTTP")];

/// The two builds every in-process figure is taken in.
const PROFILES: [(&str, &str); 2] = [("release", "bench"), ("opt0", "bench-opt0")];

#[derive(Default)]
struct Options {
    quick: bool,
    skip_e2e: bool,
    compile_only: bool,
    wrapper_only: bool,
    peers: bool,
    heavy: bool,
    sccache: bool,
    filter: Option<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options::default();
    for arg in args {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--skip-e2e" => options.skip_e2e = true,
            "--compile-only" => options.compile_only = true,
            "--wrapper-only" => options.wrapper_only = true,
            "--peers" => options.peers = true,
            "--heavy" => options.heavy = true,
            "--sccache" => options.sccache = true,
            "-h" | "--help" => bail!("{USAGE}"),
            flag if flag.starts_with('-') => bail!("unknown option {flag}\n\n{USAGE}"),
            filter => options.filter = Some(filter.to_owned()),
        }
    }
    let only = [options.skip_e2e, options.compile_only, options.wrapper_only];
    if only.into_iter().filter(|&set| set).count() > 1 {
        bail!("--skip-e2e, --compile-only and --wrapper-only exclude each other\n\n{USAGE}");
    }
    Ok(options)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| project_root().join("target"), PathBuf::from)
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let options = parse(args)?;
    let out = target_dir().join("memoshelve-bench");
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let started = Instant::now();

    if !options.compile_only {
        step(
            "build the CLI (release, as `cargo install` builds it)",
            cargo().args(["build", "--quiet", "--release", "--package", "cargo-memoshelve"]),
        )?;
    }
    let cli = target_dir().join("release/cargo-memoshelve");

    let mut profiles = serde_json::Map::new();
    let in_process: &[_] =
        if options.compile_only || options.wrapper_only { &[] } else { &PROFILES };
    for &(label, profile) in in_process {
        let dir = out.join(label);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        // `cargo bench` of the suite in this build, with the environment every bench reads.
        let bench = |only: &[&str]| {
            let mut command = cargo();
            command
                .args(["bench", "--package", "memoshelve-bench"])
                .args(only)
                .args(["--profile", profile, "--"])
                .args(options.filter.as_deref())
                .env("CRITERION_HOME", dir.join("criterion"))
                .env("MEMOSHELVE_BENCH_OUT", &dir)
                .env("MEMOSHELVE_BENCH_QUICK", if options.quick { "1" } else { "0" })
                .env_remove("MEMOSHELVE_DIR");
            command
        };
        let mut command = bench(&[]);
        if label == "release" {
            command.env("MEMOSHELVE_BENCH_CLI", &cli);
        }
        step(&format!("benches, {label} build"), &mut command)?;
        // The remote tier's hit, against each server `.ci/run` starts (when it is running).
        for (backend, variable) in REMOTES {
            let Some(url) = std::env::var_os(variable) else {
                eprintln!("bench: {variable} unset: no remote hit figures for {backend}");
                continue;
            };
            step(
                &format!("remote hit ({backend}), {label} build"),
                bench(&["--bench", "remote"])
                    .env("MEMOSHELVE_BENCH_REMOTE", backend)
                    .env("MEMOSHELVE_REMOTE", url)
                    .env("MEMOSHELVE_REMOTE_MODE", "read-write")
                    .env_remove("MEMOSHELVE_REMOTE_KEY"),
            )?;
        }
        profiles.insert(label.to_owned(), collect(&dir)?);
    }

    let mut e2e = Value::Null;
    let mut compile = Value::Null;
    let mut transparent = Value::Null;
    if !options.skip_e2e {
        if !options.compile_only && !options.wrapper_only {
            e2e = crate::bench_e2e::examples(&out, options.quick)?;
        }
        if !options.wrapper_only {
            compile = crate::bench_e2e::compile_cost(&out, options.quick)?;
        }
        if !options.compile_only {
            transparent = crate::bench_wrapper::transparent(
                &out,
                &cli,
                options.quick,
                options.peers,
                options.heavy,
                options.sccache,
            )?;
        }
    }
    let peers = if options.peers && !options.wrapper_only {
        crate::bench_e2e::python_peers(&out)?
    } else {
        Value::Null
    };

    let results = json!({
        "quick": options.quick,
        "machine": machine(),
        "profiles": profiles,
        "examples": e2e,
        "compile": compile,
        "transparent": transparent,
        "python_peers": peers,
        "seconds": started.elapsed().as_secs_f64(),
    });
    let results_path = out.join("results.json");
    fs::write(&results_path, serde_json::to_string_pretty(&results)?)?;
    let table = crate::bench_table::render(&results);
    // Only a complete run replaces the published table.
    let markdown = if options.quick {
        out.join("BENCHMARKS.quick.md")
    } else if options.filter.is_some()
        || options.skip_e2e
        || options.compile_only
        || options.wrapper_only
        || options.heavy
        || options.sccache
    {
        out.join("BENCHMARKS.partial.md")
    } else {
        project_root().join("BENCHMARKS.md")
    };
    crate::bench_table::write_into(&markdown, &table)?;
    eprintln!(
        "\nbench: results in {}, table in {} ({:.0} s)",
        results_path.display(),
        markdown.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// rustc's version and the CPU count: the context every figure needs.
fn machine() -> Value {
    let rustc = Command::new("rustc")
        .arg("-V")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    json!({ "rustc": rustc, "cpus": cpus, "os": std::env::consts::OS })
}

/// Every criterion estimate under `<dir>/criterion` (`<group>/<function>/new/`), as
/// `{ "group/function": { "ns": median, "bytes": throughput } }`, and the extra figures.
fn collect(dir: &Path) -> anyhow::Result<Value> {
    let mut benches = serde_json::Map::new();
    let criterion = dir.join("criterion");
    for group in read_dirs(&criterion)? {
        for function in read_dirs(&group)? {
            let new = function.join("new");
            let Ok(estimates) = fs::read_to_string(new.join("estimates.json")) else {
                continue;
            };
            let estimates: Value = serde_json::from_str(&estimates)
                .with_context(|| format!("unreadable estimates in {}", new.display()))?;
            let benchmark: Value = fs::read_to_string(new.join("benchmark.json"))
                .ok()
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or(Value::Null);
            let id = format!("{}/{}", file_name(&group), file_name(&function));
            benches.insert(
                id,
                json!({
                    "ns": estimates["median"]["point_estimate"],
                    "bytes": benchmark["throughput"]["Bytes"],
                }),
            );
        }
    }
    let mut extra = serde_json::Map::new();
    if let Ok(lines) = fs::read_to_string(dir.join("extra.jsonl")) {
        for line in lines.lines() {
            let record: Value = serde_json::from_str(line).context("unreadable extra.jsonl")?;
            let id = format!(
                "{}/{}",
                record["workload"].as_str().unwrap_or("?"),
                record["what"].as_str().unwrap_or("?")
            );
            extra.insert(id, json!({ "value": record["value"], "unit": record["unit"] }));
        }
    }
    Ok(json!({ "benches": benches, "extra": extra }))
}

fn read_dirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let Ok(entries) = fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir() && file_name(path) != "report")
        .collect();
    dirs.sort();
    Ok(dirs)
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default()
}
