//! Which cache a command is about: `--dir`, `MEMOSHELVE_DIR`, or the configuration of the cargo
//! project found with `cargo metadata` (from `--manifest-path` or the current directory).
//!
//! The settings are read by `memoshelve_build::config`, the same code build scripts run, so the
//! command and the builds agree on the root. `cargo metadata` (cargo's own TOML reading) and the
//! `toml` crate check that reading: a setting build scripts would miss is a warning, not a
//! silent disagreement.

use std::path::Path;

use anyhow::Context;
use memoshelve_build::config::{Config, Project};
use memoshelve_build::{CacheRoot, RootSource, resolve_root_in};

use crate::cli::MemoshelveArgs;

/// The cache root in use, and the warnings met while finding it (printed unless `--quiet`).
pub(crate) fn cache_root(args: &MemoshelveArgs) -> anyhow::Result<CacheRoot> {
    locate(args).map(|(root, _)| root)
}

/// [`cache_root`] and the project it was found for.
pub(crate) fn locate(args: &MemoshelveArgs) -> anyhow::Result<(CacheRoot, Project)> {
    let env_names_dir =
        std::env::var_os("MEMOSHELVE_DIR").is_some_and(|dir| !dir.is_empty() && dir != "target");
    let (project, cargo_says) = if args.dir.is_some() || env_names_dir {
        (Project::default(), CargoSays::default())
    } else {
        cargo_project(args)?
    };
    let mut root = resolve_root_in(args.dir.as_deref(), &project)?;
    root.warnings.extend(cross_check(&project, &cargo_says, &root));
    for warning in &root.warnings {
        crate::output::warn(args, warning);
    }
    Ok((root, project))
}

/// The project of `--manifest-path` or of the current directory; an empty one outside any cargo
/// project.
fn cargo_project(args: &MemoshelveArgs) -> anyhow::Result<(Project, CargoSays)> {
    let explicit = args.manifest_path.as_deref();
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    if explicit.is_none() && !cwd.ancestors().any(|dir| dir.join("Cargo.toml").is_file()) {
        return Ok(Default::default());
    }
    let mut command = cargo_metadata::MetadataCommand::new();
    command.no_deps();
    if let Some(manifest) = explicit {
        command.manifest_path(manifest);
    }
    let metadata = match command.exec() {
        Ok(metadata) => metadata,
        Err(err) if explicit.is_some() => {
            return Err(err).with_context(|| {
                format!("cannot read the cargo project of {}", explicit.unwrap().display())
            });
        }
        Err(err) => {
            crate::output::warn(
                args,
                &format!(
                    "not reading the project's memoshelve settings: `cargo metadata` failed in \
                     {}: {err}",
                    cwd.display()
                ),
            );
            return Ok(Default::default());
        }
    };
    // The package of the manifest, or the innermost one holding the current directory.
    let package = match explicit {
        Some(manifest) => {
            let manifest = std::fs::canonicalize(manifest).unwrap_or_else(|_| manifest.to_owned());
            metadata.packages.iter().find(|package| package.manifest_path.as_std_path() == manifest)
        }
        None => metadata
            .packages
            .iter()
            .filter(|package| package_dir_of(package).is_some_and(|dir| cwd.starts_with(dir)))
            .max_by_key(|package| package.manifest_path.components().count()),
    };
    let package_dir = package.and_then(package_dir_of).map(Path::to_owned);
    let cargo_says = CargoSays {
        package: package.and_then(|package| dir_setting(&package.metadata)),
        workspace: dir_setting(&metadata.workspace_metadata),
    };
    let project = Project {
        package_dir,
        workspace_root: Some(metadata.workspace_root.clone().into_std_path_buf()),
        target_dir: Some(metadata.target_directory.clone().into_std_path_buf()),
    };
    Ok((project, cargo_says))
}

fn dir_setting(metadata: &serde_json::Value) -> Option<String> {
    metadata.get("memoshelve")?.get("dir")?.as_str().map(str::to_owned)
}

/// The `dir` cargo itself read from the package's and the workspace's metadata.
#[derive(Default)]
struct CargoSays {
    package: Option<String>,
    workspace: Option<String>,
}

/// Warnings where cargo (for `Cargo.toml`) or the `toml` crate (for `memoshelve.toml`) reads a
/// `dir` that build scripts would not.
fn cross_check(project: &Project, says: &CargoSays, root: &CacheRoot) -> Vec<String> {
    let config = Config::load(project);
    let ours = |table: &str| {
        config
            .settings
            .iter()
            .find(|setting| setting.key == "dir" && setting.table == table)
            .map(|setting| setting.value.clone())
    };
    let mut warnings = Vec::new();
    for (table, cargo, dir) in [
        ("package.metadata.memoshelve", &says.package, &project.package_dir),
        ("workspace.metadata.memoshelve", &says.workspace, &project.workspace_root),
    ] {
        if let (Some(cargo), Some(dir)) = (cargo, dir)
            && ours(table).as_ref() != Some(cargo)
        {
            warnings.push(format!(
                "cargo reads `dir = {cargo:?}` in [{table}] of {}, but build scripts do \
                 not: write it as a plain `dir = \"...\"` line under a [{table}] header",
                dir.join("Cargo.toml").display()
            ));
        }
    }
    if let RootSource::Config(setting) = &root.source
        && setting.table.is_empty()
    {
        let parsed = std::fs::read_to_string(&setting.file)
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok());
        let theirs = parsed.as_ref().and_then(|table| table.get("dir")).and_then(|v| v.as_str());
        if theirs != Some(setting.value.as_str()) {
            warnings.push(format!(
                "{} is not valid TOML or reads differently: check it with a TOML linter",
                setting.file.display()
            ));
        }
    }
    warnings
}

fn package_dir_of(package: &cargo_metadata::Package) -> Option<&Path> {
    package.manifest_path.parent().map(|dir| dir.as_std_path())
}
