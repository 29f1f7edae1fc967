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
    // How the wrapper is named (not needed to take it out).
    let naming = if undo { None } else { Some(Naming::of(&me)?) };
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
    if let Some(naming) = &naming {
        let kept = match &current {
            Some(wrapper) if !is_me(wrapper) => Some(wrapper.clone()),
            _ => inner.clone(),
        };
        table(&mut document, "build")?["rustc-wrapper"] = value(naming.value.as_str());
        if let Some(kept) = &kept {
            table(&mut document, "env")?[INNER] = value(kept.as_str());
        }
    } else if current.as_deref().is_some_and(is_me) {
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
    let new_text = document.to_string();
    let changed = new_text != text;
    // What undo leaves empty goes: the file, and a project's `.cargo` that then holds nothing.
    let mut removed = Vec::new();
    if changed && undo && new_text.trim().is_empty() {
        std::fs::remove_file(&config)
            .with_context(|| format!("cannot remove {}", config.display()))?;
        removed.push(config.clone());
        if let Some(dot_cargo) = config.parent().filter(|dir| !global && dir.ends_with(".cargo"))
            && std::fs::remove_dir(dot_cargo).is_ok()
        {
            removed.push(dot_cargo.to_owned());
        }
    } else if changed {
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
            "config": config,
            "scope": if global { "global" } else { "project" },
            "wrapper": wrapper,
            "inner": inner,
            "changed": changed,
            "by_name": naming.as_ref().map(|naming| naming.by_name),
            "reason": naming.as_ref().map(|naming| &naming.reason),
            "removed": removed,
        }));
    }
    if args.quiet {
        return Ok(());
    }
    let mut stderr = std::io::stderr();
    let shown = config.display();
    // Which builds read the file.
    let scope = if global {
        "the user's cargo config: every project's builds read it".to_owned()
    } else {
        let dir = config.parent().and_then(Path::parent).unwrap_or(Path::new("."));
        format!("the project's cargo config: builds in {} and below read it", dir.display())
    };
    match (&naming, changed) {
        (Some(naming), true) => writeln!(
            stderr,
            "memoshelve: transparent mode on: wrote [build] rustc-wrapper = {:?} to {shown} \
             ({scope})",
            naming.value
        )?,
        (Some(naming), false) => writeln!(
            stderr,
            "memoshelve: transparent mode on already: {shown} has rustc-wrapper = {:?} \
             (unchanged)",
            naming.value
        )?,
        (None, true) if !removed.is_empty() => writeln!(
            stderr,
            "memoshelve: transparent mode off: removed {}, which held nothing else",
            removed.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(" and ")
        )?,
        (None, true) => writeln!(
            stderr,
            "memoshelve: transparent mode off: took cargo-memoshelve out of {shown}"
        )?,
        (None, false) => writeln!(
            stderr,
            "memoshelve: {shown} does not run builds through cargo-memoshelve: nothing to undo"
        )?,
    }
    if let Some(naming) = &naming {
        let why = if naming.by_name || global {
            naming.reason.clone()
        } else {
            format!("{}; until then the file names a path of this machine only", naming.reason)
        };
        let kind = if naming.by_name { "memoshelve" } else { "note" };
        writeln!(stderr, "{kind}: {why}")?;
    }
    match inner {
        Some(inner) if !undo => {
            writeln!(stderr, "memoshelve: every other compile still goes to {inner}")?
        }
        Some(inner) if changed => writeln!(stderr, "memoshelve: rustc-wrapper is {inner} again")?,
        _ => {}
    }
    Ok(())
}

/// How the config names the front: by its bare name, found on `PATH` the way cargo finds a
/// wrapper named without a directory, when the first `cargo-memoshelve` there is this one (the
/// sccache convention: the file then holds no path of this machine and can be committed); else
/// by its absolute path, since the bare name would run another one or nothing.
struct Naming {
    /// What `rustc-wrapper` is set to.
    value: String,
    by_name: bool,
    /// Why, in a sentence for the user.
    reason: String,
}

impl Naming {
    fn of(me: &Path) -> anyhow::Result<Naming> {
        let front = crate::protocol::FRONT;
        let on_path = first_on_path(&format!("{front}{}", std::env::consts::EXE_SUFFIX));
        let same = |found: &Path| {
            let real = |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| path.into());
            real(found) == real(me)
        };
        let absolute = |reason: String| -> anyhow::Result<Naming> {
            let value = me.to_str().context("cargo-memoshelve's path is not UTF-8")?.to_owned();
            Ok(Naming { value, by_name: false, reason })
        };
        let dir = me.parent().unwrap_or(Path::new("")).display();
        match on_path {
            Some(found) if same(&found) => Ok(Naming {
                value: front.to_owned(),
                by_name: true,
                reason: format!(
                    "by name: the first {front} on PATH ({}) is this one, so the file holds \
                     no path of this machine",
                    found.display()
                ),
            }),
            Some(found) => absolute(format!(
                "by absolute path: the first {front} on PATH is another one ({}), which the \
                 bare name would run; put {dir} first on PATH and run setup again to write the \
                 bare name",
                found.display()
            )),
            None => absolute(format!(
                "by absolute path: no {front} is on PATH; put {dir} on PATH and run setup \
                 again to write the bare name"
            )),
        }
    }
}

/// The first executable file `name` in a directory of `PATH`.
fn first_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    let Ok(metadata) = std::fs::metadata(path) else { return false };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        metadata.is_file()
    }
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
