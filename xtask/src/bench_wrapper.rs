//! Workload 11: transparent mode (`cargo-memoshelve` as `RUSTC_WRAPPER`).
//!
//! - Pass-through: what the front adds to a compile that is not a build script, as the median of
//!   `rustc -vV` run directly, through the front, and through `sh -c 'exec rustc -vV'` (the
//!   floor of any program in between), in alternation.
//! - `examples/native-deps` (four vendored C libraries from crates.io), copied under the bench
//!   directory: built cold by plain cargo and cold through the wrapper with an empty cache, in
//!   alternation for three rounds (medians), then through the wrapper after `cargo clean`, and
//!   at another checkout path with another target dir. The build scripts' total time of each is
//!   cargo's own figure (`--timings`), the same for every tool.
//!
//!   Then the floors of a warm build (a no-op build, everything fresh; `cp -a` of the target
//!   dir), and `cargo check` through the wrapper: cold units (its metadata-only compiles are
//!   keys of their own), then after `cargo clean`. Every compile goes through the unit cache
//!   (issue 31), so the whole warm build is what to hold against the peers'.
//!
//! - With `--peers`, mbx and kache do the same three builds (cold with an empty cache of their
//!   own, after `cargo clean`, at another path and target dir), each with a home directory of
//!   its own so that its default cache starts empty; `CARGO_HOME` and `RUSTUP_HOME` stay. mbx
//!   and kache cache rustc's outputs too, as we do; and the same two `cargo check` builds.
//!
//! - With `--heavy`, `examples/heavy-native` instead: the eight native dependencies the issue
//!   measures peers on (openssl-src, jemalloc, libgit2, sqlite, zstd, lz4, bzip2, zlib), minutes
//!   of build scripts per cold build, so one round of the cold builds instead of three.
//!
//! - With `--sccache`, the wrapper with sccache as its inner wrapper (installed by `cargo
//!   install --locked sccache` under the bench's `peers/`): the same three builds, empty caches
//!   first. Whole-build time, to hold beside mbx's (which caches rustc's outputs too).
//!
//! `--quick` (CI) measures the pass-through only, with few samples.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::bench_e2e::{build_scripts_seconds, cargo_in, timed};
use crate::ci::project_root;

pub(crate) fn transparent(
    out: &Path,
    front: &Path,
    quick: bool,
    peers: bool,
    heavy: bool,
    sccache: bool,
) -> anyhow::Result<Value> {
    let pass_through = pass_through(front, if quick { 15 } else { 200 })?;
    if quick {
        return Ok(json!({ "pass_through": pass_through }));
    }
    let work = out.join("transparent");
    let _ = fs::remove_dir_all(&work);
    let checkout = work.join("checkout");
    let (workload, rounds) = if heavy { ("heavy-native", 1) } else { ("native-deps", 3) };
    copy_tree(&project_root().join("examples").join(workload), &checkout)?;
    let cache = work.join("cache");
    timed(&format!("fetch {workload}"), cargo_in(&checkout).args(["fetch", "--locked"]))?;

    let sccache = if sccache { Some(install(out, "sccache", &["--locked"])?) } else { None };
    let sccache_dir = work.join("sccache");
    // A build with the wrapper on (`cache`: its root), and sccache as its inner wrapper; a label
    // with "untraced" turns tracing off (DESIGN.md section 10's budget is traced ÷ untraced).
    let run_with =
        |verb: &str, label: &str, dir: &Path, target: &Path, cache: Option<&Path>, inner: bool| {
            let mut command = cargo_in(dir);
            command.args([verb, "--locked", "--timings"]).env("CARGO_TARGET_DIR", target);
            command.env_remove("RUSTC_WRAPPER").env_remove("CARGO_BUILD_RUSTC_WRAPPER");
            command.env_remove("MEMOSHELVE_BUILD_SCRIPTS_TRACE");
            if let Some(cache) = cache {
                command.env("RUSTC_WRAPPER", front).env("MEMOSHELVE_DIR", cache);
            }
            if label.contains("untraced") {
                command.env("MEMOSHELVE_BUILD_SCRIPTS_TRACE", "0");
            }
            if let Some(sccache) = sccache.as_deref().filter(|_| inner) {
                command
                    .env("MEMOSHELVE_RUSTC_WRAPPER", sccache)
                    .env("SCCACHE_DIR", &sccache_dir)
                    .env("SCCACHE_SERVER_PORT", "4299");
            }
            let wall = timed(&format!("{workload}: {label}"), &mut command)?;
            anyhow::Ok(json!({ "wall": wall, "scripts": build_scripts_seconds(target)? }))
        };
    let build_with = |label: &str, dir: &Path, target: &Path, cache: Option<&Path>, inner: bool| {
        run_with("build", label, dir, target, cache, inner)
    };
    let cargo_build = |label: &str, dir: &Path, target: &Path, cache: Option<&Path>| {
        build_with(label, dir, target, cache, false)
    };
    // The cold builds in alternation, round after round (each from nothing: its own target dir,
    // and for the wrapper an empty cache): this machine's noise is larger than the difference.
    let (mut plain, mut cold, mut untraced) = (Vec::new(), Vec::new(), Vec::new());
    let untraced_label = "wrapper untraced, cold, empty cache";
    for round in 0..rounds {
        let target = work.join(format!("target-plain-{round}"));
        plain.push(cargo_build("plain cargo, cold", &checkout, &target, None)?);
        let _ = fs::remove_dir_all(&target);
        let untraced_cache = work.join("cache-untraced");
        let _ = fs::remove_dir_all(&untraced_cache);
        let target = work.join("target-untraced");
        let _ = fs::remove_dir_all(&target);
        untraced.push(cargo_build(untraced_label, &checkout, &target, Some(&untraced_cache))?);
        let _ = fs::remove_dir_all(&target);
        let _ = fs::remove_dir_all(&cache);
        let target = work.join("target");
        let _ = fs::remove_dir_all(&target);
        cold.push(cargo_build("wrapper, cold, empty cache", &checkout, &target, Some(&cache))?);
    }
    let mut builds = serde_json::Map::new();
    builds.insert("plain cargo, cold".to_owned(), medians(&plain));
    builds.insert(untraced_label.to_owned(), medians(&untraced));
    builds.insert("wrapper, cold, empty cache".to_owned(), medians(&cold));
    // The last round's cache serves the warm builds.
    let target = work.join("target");
    fs::remove_dir_all(&target)?;
    let label = "wrapper, after cargo clean";
    builds.insert(label.to_owned(), cargo_build(label, &checkout, &target, Some(&cache))?);
    let hit_checks = hit_checks(&target)?;
    // The floors of a build after `cargo clean` (issue 31): cargo with nothing to do, and a
    // copy of the whole target dir (what any restore must at least write).
    let label = "floor: a no-op build (everything fresh)";
    builds.insert(label.to_owned(), cargo_build(label, &checkout, &target, Some(&cache))?);
    let copy = work.join("target-copy");
    let _ = fs::remove_dir_all(&copy);
    let mut cp = Command::new("cp");
    cp.arg("-a").arg(&target).arg(&copy);
    let wall = timed("floor: a copy of the target dir", &mut cp)?;
    builds.insert("floor: a copy of the target dir".to_owned(), json!({ "wall": wall }));
    let _ = fs::remove_dir_all(&copy);
    // `cargo check`: its own compiles (metadata only) cold, then after `cargo clean`.
    for label in ["wrapper, cargo check, cold units", "wrapper, cargo check after cargo clean"] {
        fs::remove_dir_all(&target)?;
        let row = run_with("check", label, &checkout, &target, Some(&cache), false)?;
        builds.insert(label.to_owned(), row);
    }
    let moved = work.join("moved");
    copy_tree(&checkout, &moved)?;
    let label = "wrapper, another path and target dir";
    let other = work.join("target-moved");
    builds.insert(label.to_owned(), cargo_build(label, &moved, &other, Some(&cache))?);
    if let Some(sccache) = &sccache {
        // The whole build with sccache beside us (it caches the compiles, we the scripts): the
        // figure to hold against mbx's, which caches both.
        let cache = work.join("cache-sccache");
        for (label, dir, target) in [
            ("wrapper + sccache, cold, empty caches", &checkout, work.join("target-sccache")),
            ("wrapper + sccache, after cargo clean", &checkout, work.join("target-sccache")),
            (
                "wrapper + sccache, another path and target dir",
                &moved,
                work.join("target-sccache-moved"),
            ),
        ] {
            let _ = fs::remove_dir_all(&target);
            builds.insert(label.to_owned(), build_with(label, dir, &target, Some(&cache), true)?);
        }
        let _ = Command::new(sccache)
            .arg("--stop-server")
            .env("SCCACHE_SERVER_PORT", "4299")
            .stdout(Stdio::null())
            .status();
    }
    let peers =
        if peers { peer_builds(out, &work, workload, &checkout, &moved)? } else { Value::Null };
    Ok(json!({
        "pass_through": pass_through,
        "workload": workload,
        "builds": builds,
        "hit_checks": hit_checks,
        "peers": peers,
    }))
}

/// How each restored script's traced inputs were checked, from the runner's `runs.log`
/// (`checked: <n> inputs in <ms> ms (<k> files from the stat cache)`), largest set first.
fn hit_checks(target: &Path) -> anyhow::Result<Value> {
    let log = fs::read_to_string(target.join("debug/build/.memoshelve/runs.log"))
        .context("the runner's runs.log")?;
    let mut checks: Vec<Value> = log
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let package = fields.next()?;
            let checked = fields.find_map(|field| field.strip_prefix("checked: "))?;
            let number = |text: &str| text.trim().parse::<f64>().ok();
            let (inputs, rest) = checked.split_once(" inputs in ")?;
            let (ms, rest) = rest.split_once(" ms (")?;
            let (reused, _) = rest.split_once(' ')?;
            Some(json!({
                "package": package,
                "inputs": number(inputs)?,
                "ms": number(ms)?,
                "from_stat_cache": number(reused)?,
            }))
        })
        .collect();
    checks.sort_by(|a, b| {
        b["inputs"].as_f64().partial_cmp(&a["inputs"].as_f64()).unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(Value::Array(checks))
}

/// The peers: how each is installed and how it runs a cargo build.
const PEERS: [(&str, &[&str]); 2] = [("mbx", &["--locked"]), ("kache", &[])];

/// The three builds by each peer.
fn peer_builds(
    out: &Path,
    work: &Path,
    workload: &str,
    checkout: &Path,
    moved: &Path,
) -> anyhow::Result<Value> {
    let cargo_home = std::env::var_os("CARGO_HOME").map_or_else(
        || Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cargo"),
        std::path::PathBuf::from,
    );
    let rustup_home = std::env::var_os("RUSTUP_HOME").map_or_else(
        || Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".rustup"),
        std::path::PathBuf::from,
    );
    let mut peers = serde_json::Map::new();
    for (name, install_flags) in PEERS {
        let binary = install(out, name, install_flags)?;
        let home = work.join(format!("home-{name}"));
        let _ = fs::remove_dir_all(&home);
        fs::create_dir_all(&home)?;
        let run = |verb: &str, label: &str, dir: &Path, target: &Path| -> anyhow::Result<Value> {
            let mut command = if name == "mbx" {
                let mut command = Command::new(&binary);
                command.arg(verb);
                command
            } else {
                let mut command = cargo_in(dir);
                command.arg(verb).env("RUSTC_WRAPPER", &binary);
                command
            };
            command
                .args(["--locked", "--timings"])
                .current_dir(dir)
                .env("CARGO_TARGET_DIR", target)
                .env("HOME", &home)
                .env("XDG_CACHE_HOME", home.join(".cache"))
                .env("CARGO_HOME", &cargo_home)
                .env("RUSTUP_HOME", &rustup_home)
                .env_remove("RUSTFLAGS")
                .env_remove("MEMOSHELVE_DIR");
            let wall = timed(&format!("{workload}, {name}: {label}"), &mut command)?;
            Ok(json!({ "wall": wall, "scripts": build_scripts_seconds(target)? }))
        };
        let build = |label: &str, dir: &Path, target: &Path| run("build", label, dir, target);
        let target = work.join(format!("target-{name}"));
        let mut rows = serde_json::Map::new();
        rows.insert("cold, empty cache".to_owned(), build("cold", checkout, &target)?);
        fs::remove_dir_all(&target)?;
        rows.insert("after cargo clean".to_owned(), build("after cargo clean", checkout, &target)?);
        let other = work.join(format!("target-{name}-moved"));
        let label = "another path and target dir";
        rows.insert(label.to_owned(), build(label, moved, &other)?);
        for label in ["cargo check, cold units", "cargo check after cargo clean"] {
            fs::remove_dir_all(&target)?;
            rows.insert(label.to_owned(), run("check", label, checkout, &target)?);
        }
        peers.insert(name.to_owned(), Value::Object(rows));
    }
    Ok(Value::Object(peers))
}

/// A tool from crates.io, installed once under the bench's `peers/` directory: its binary.
fn install(out: &Path, name: &str, flags: &[&str]) -> anyhow::Result<std::path::PathBuf> {
    let root = out.join("peers").join(name);
    let binary = root.join("bin").join(name);
    if !binary.is_file() {
        timed(
            &format!("cargo install {name} (once)"),
            cargo_in(out).args(["install", "--root"]).arg(&root).args(flags).arg(name),
        )?;
    }
    Ok(binary)
}

/// The medians of the rounds' `wall` and `scripts`, with the rounds.
fn medians(rounds: &[Value]) -> Value {
    let median_of = |field: &str| {
        let mut values: Vec<f64> =
            rounds.iter().filter_map(|round| round[field].as_f64()).collect();
        median(&mut values)
    };
    json!({ "wall": median_of("wall"), "scripts": median_of("scripts"), "rounds": rounds })
}

/// Medians, in milliseconds, of `rustc -vV` direct, through the front, and through `sh`'s exec.
fn pass_through(front: &Path, samples: usize) -> anyhow::Result<Value> {
    let sysroot = Command::new("rustc").args(["--print", "sysroot"]).output()?;
    let sysroot = String::from_utf8(sysroot.stdout).context("a UTF-8 sysroot")?;
    let rustc = Path::new(sysroot.trim()).join("bin/rustc");
    let rustc_text = rustc.to_str().context("a UTF-8 rustc path")?;
    let variants: [(&str, Vec<&std::ffi::OsStr>); 3] = [
        ("direct", vec![rustc.as_os_str(), "-vV".as_ref()]),
        ("front", vec![front.as_os_str(), rustc.as_os_str(), "-vV".as_ref()]),
        (
            "sh_exec",
            vec![
                "/bin/sh".as_ref(),
                "-c".as_ref(),
                "exec \"$0\" -vV".as_ref(),
                rustc_text.as_ref(),
            ],
        ),
    ];
    let mut times: [Vec<f64>; 3] = Default::default();
    eprintln!("==> pass-through: {samples} rounds of rustc -vV, direct / front / sh exec");
    for _ in 0..samples {
        for (index, (label, argv)) in variants.iter().enumerate() {
            let started = Instant::now();
            let status = Command::new(argv[0])
                .args(&argv[1..])
                // Cargo sets CARGO for its wrapper.
                .env("CARGO", "cargo")
                .stdout(Stdio::null())
                .status()
                .with_context(|| format!("cannot run the {label} variant"))?;
            if !status.success() {
                bail!("rustc -vV ({label}) failed: {status}");
            }
            times[index].push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let [direct, front, sh_exec] = times.map(|mut times| median(&mut times));
    Ok(json!({
        "samples": samples,
        "direct_ms": direct,
        "front_ms": front,
        "sh_exec_ms": sh_exec,
        "added_ms": front - direct,
        "floor_added_ms": sh_exec - direct,
    }))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Copies a crate's tree, leaving out `target/`.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() == "target" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}
