//! Compiles the `getenv` interposer (`shim/getenv.rs`) that the processes of a traced build
//! script preload, so that `src/wrapper/trace/env.rs` can embed it. Linux with glibc only.
//!
//! A shim that does not compile never fails the build: a `cargo::warning` says why, and
//! `--cfg memoshelve_no_env_shim` makes the runner report the watch as unavailable (as it is
//! on every other target).
//!
//! The shim is compiled with its own flags, not the outer build's `RUSTFLAGS`: it is loaded
//! into programs that are not ours, and flags meant for this crate graph (`+crt-static`,
//! coverage, sanitizers, `-D warnings`) would break or bloat it. Lints it raises come back as
//! warnings.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The file `src/wrapper/trace/env.rs` includes from OUT_DIR (keep the two in step).
const SHIM: &str = "memoshelve-env-shim.so";

/// The shim's crate root (`shim/files.rs` and `shim/page.rs` are its modules).
const SOURCE: &str = "shim/getenv.rs";

const NO_SHIM_CFG: &str = "memoshelve_no_env_shim";

fn main() {
    println!("cargo::rerun-if-changed=shim");
    println!("cargo::rerun-if-env-changed=RUSTC_LINKER");
    println!("cargo::rustc-check-cfg=cfg({NO_SHIM_CFG})");
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os != "linux" || target_env != "gnu" {
        println!("cargo::rustc-cfg={NO_SHIM_CFG}");
        return;
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let shim = out_dir.join(SHIM);
    match compile(&shim) {
        Ok(lints) => {
            let headlines = lints.lines().filter(|line| {
                (line.starts_with("warning") && !line.contains("emitted")) || line.contains("-->")
            });
            for line in headlines {
                println!("cargo::warning={SOURCE}: {}", line.trim());
            }
        }
        Err(why) => {
            // Never leave an earlier build's shim to be mistaken for this one's.
            let _ = std::fs::remove_file(&shim);
            println!(
                "cargo::warning=the getenv interposer ({SOURCE}) did not compile, so traced \
                 build scripts' environment reads will not be watched: {why}"
            );
            println!("cargo::rustc-cfg={NO_SHIM_CFG}");
        }
    }
}

/// Compiles the shim into `shim`; what rustc printed (lints), or why it failed.
fn compile(shim: &Path) -> Result<String, String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").map_err(|_| "TARGET is unset".to_owned())?;
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is unset")?;
    let mut command = Command::new(&rustc);
    command
        .args([
            "--crate-name",
            "memoshelve_env_shim",
            "--crate-type",
            "cdylib",
            "--edition",
            "2024",
        ])
        .args(["-C", "panic=abort", "-C", "opt-level=2", "-C", "debuginfo=0"])
        // One unit: split in several, the link keeps core's unwinding tables, whose
        // `rust_eh_personality` no process the shim is loaded into defines.
        .args(["-C", "codegen-units=1"])
        // Drops the local symbol table only: `getenv` stays in the dynamic one (`nm -D`).
        .args(["-C", "strip=symbols"])
        .args(["--target", &target])
        .arg("-o")
        .arg(shim)
        .arg(Path::new(&manifest_dir).join(SOURCE));
    // The linker configured for the target (`target.<triple>.linker`), as cargo resolved it.
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        let mut arg = std::ffi::OsString::from("linker=");
        arg.push(linker);
        command.arg("-C").arg(arg);
    }
    let output = command
        .output()
        .map_err(|err| format!("cannot run {}: {err}", Path::new(&rustc).display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        // rustc's headlines (`error: ...`), without the source excerpts under them.
        let mut headlines: Vec<&str> =
            stderr.lines().filter(|line| line.starts_with("error")).take(4).collect();
        if headlines.is_empty() {
            headlines = stderr.lines().filter(|line| !line.trim().is_empty()).take(4).collect();
        }
        return Err(format!("rustc {}: {}", output.status, headlines.join("; ")));
    }
    if !shim.is_file() {
        return Err(format!("rustc wrote no {}", shim.display()));
    }
    Ok(stderr)
}
