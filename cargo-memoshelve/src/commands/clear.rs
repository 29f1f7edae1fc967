//! `cargo memoshelve clear [--name N] [--yes]`: delete entries.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;
use serde_json::json;

use crate::cli::MemoshelveArgs;
use crate::output;

/// What memoshelve itself keeps under a root; `clear` removes these and nothing else.
const OWN_PATHS: [&str; 8] =
    ["index", "index-v5", "blobs-b3", "tmp-b3", "locks", "events.log", "events", "content-v2"];

pub(crate) fn run(args: &MemoshelveArgs, name: Option<&str>, yes: bool) -> anyhow::Result<()> {
    let store = super::store(args)?;
    let (name, entries) = match name {
        // A package name stands for its build script's entries (`build-script.<package>`).
        Some(name) => {
            let (name, entries) = super::entries_named(args, &store, name)?;
            (Some(name), entries)
        }
        None => (None, store.entries(None)?),
    };
    let bytes: u64 = entries.iter().map(|entry| entry.bytes).sum();
    let size = output::size(bytes);
    let what = match (&name, entries.len()) {
        (Some(name), _) => {
            format!("{} of {name:?} ({size})", output::count(entries.len(), "entry"))
        }
        (None, 1) => format!("the only entry ({size})"),
        (None, n) => format!("all {n} entries ({size})"),
    };
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "refusing to delete {what} from {} without --yes (not a terminal)",
                store.root().display()
            );
        }
        let mut err = std::io::stderr().lock();
        write!(err, "delete {what} from {}? [y/N] ", store.root().display())?;
        err.flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("nothing deleted");
        }
    }
    match name {
        Some(_) => {
            for entry in &entries {
                store.remove(entry)?;
            }
        }
        None => {
            for own in OWN_PATHS {
                let path = store.root().join(own);
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if let Err(err) = removed
                    && err.kind() != std::io::ErrorKind::NotFound
                {
                    bail!("cannot delete {}: {err}", path.display());
                }
            }
        }
    }
    if args.json {
        return super::print_json(
            &json!({ "name": name, "removed": entries.len(), "bytes": bytes }),
        );
    }
    writeln!(std::io::stdout(), "deleted {what}")?;
    Ok(())
}
