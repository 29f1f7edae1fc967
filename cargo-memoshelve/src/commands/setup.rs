//! `cargo memoshelve setup [--global] [--undo]`: transparent mode on (or off) in a cargo config.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::json;
use toml_edit::{DocumentMut, Item, Table, value};

use crate::cli::MemoshelveArgs;

use crate::protocol::INNER_WRAPPER as INNER;

pub(crate) fn run(args: &MemoshelveArgs, global: bool, undo: bool) -> anyhow::Result<()> {
    let config = config_path(args, global)?;
    let text = match std::fs::read_to_string(&config) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", config.display())),
    };
    let mut document: DocumentMut = text.parse().with_context(|| {
        format!("{} is not valid TOML: fix it, then run this again", config.display())
    })?;
    let me = crate::protocol::sibling(crate::protocol::FRONT)
        .context("cannot tell where cargo-memoshelve is")?;
    let me_text = me.to_str().context("cargo-memoshelve's path is not UTF-8")?.to_owned();
    let current = document
        .get("build")
        .and_then(|build| build.get("rustc-wrapper"))
        .and_then(Item::as_str)
        .map(str::to_owned);
    let inner = document
        .get("env")
        .and_then(|env| env.get(INNER))
        .and_then(|inner| inner.as_str().or_else(|| inner.get("value")?.as_str()))
        .map(str::to_owned);
    let is_me = |wrapper: &str| crate::protocol::is_front(wrapper.as_ref());
    if undo {
        if current.as_deref().is_some_and(is_me) {
            let build = table(&mut document, "build")?;
            match &inner {
                Some(inner) => build["rustc-wrapper"] = value(inner.as_str()),
                None => {
                    build.remove("rustc-wrapper");
                    if build.is_empty() {
                        document.remove("build");
                    }
                }
            }
            if let Some(env) = document.get_mut("env").and_then(Item::as_table_mut) {
                env.remove(INNER);
                if env.is_empty() {
                    document.remove("env");
                }
            }
        }
    } else {
        let kept = match &current {
            Some(wrapper) if !is_me(wrapper) => Some(wrapper.clone()),
            _ => inner.clone(),
        };
        table(&mut document, "build")?["rustc-wrapper"] = value(me_text.as_str());
        if let Some(kept) = &kept {
            table(&mut document, "env")?[INNER] = value(kept.as_str());
        }
    }
    let new_text = document.to_string();
    let changed = new_text != text;
    if changed {
        if let Some(parent) = config.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        // Written whole, then renamed: an interrupted setup leaves the old file.
        let staged = config.with_extension("toml.memoshelve-tmp");
        std::fs::write(&staged, &new_text)
            .with_context(|| format!("cannot write {}", staged.display()))?;
        std::fs::rename(&staged, &config)
            .with_context(|| format!("cannot replace {}", config.display()))?;
    }
    let wrapper =
        document.get("build").and_then(|build| build.get("rustc-wrapper")).and_then(Item::as_str);
    let inner = document.get("env").and_then(|env| env.get(INNER)).and_then(Item::as_str);
    if args.json {
        return super::print_json(&json!({
            "config": config, "wrapper": wrapper, "inner": inner, "changed": changed,
        }));
    }
    let mut stderr = std::io::stderr();
    if !args.quiet {
        let what = match (undo, changed) {
            (_, false) => "unchanged",
            (false, true) => "transparent mode on",
            (true, true) => "transparent mode off",
        };
        writeln!(stderr, "memoshelve: {}: {what}", config.display())?;
        if let Some(inner) = inner {
            writeln!(stderr, "memoshelve: every other compile still goes to {inner}")?;
        }
    }
    Ok(())
}

/// The project's `.cargo/config.toml` (beside the manifest given, else in the current
/// directory), or the user's with `global`.
fn config_path(args: &MemoshelveArgs, global: bool) -> anyhow::Result<PathBuf> {
    if global {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
            .context("neither CARGO_HOME nor HOME is set: set CARGO_HOME")?;
        return Ok(home.join("config.toml"));
    }
    let dir = match &args.manifest_path {
        Some(manifest) => manifest
            .parent()
            .map(|dir| if dir.as_os_str().is_empty() { Path::new(".") } else { dir })
            .context("--manifest-path names no file")?
            .to_path_buf(),
        None => std::env::current_dir().context("cannot tell the current directory")?,
    };
    Ok(dir.join(".cargo/config.toml"))
}

/// The table `name` of `document`, made when missing.
fn table<'a>(document: &'a mut DocumentMut, name: &str) -> anyhow::Result<&'a mut Table> {
    let item = document.entry(name).or_insert_with(|| Item::Table(Table::new()));
    match item.as_table_mut() {
        Some(table) => Ok(table),
        None => bail!("`{name}` in the cargo config is not a table: make it `[{name}]`"),
    }
}
