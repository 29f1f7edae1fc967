//! `cargo memoshelve explain NAME [KEY]`: why the newest entry of a name did not hit the one before.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::bail;
use serde_json::json;

use crate::cli::MemoshelveArgs;
use crate::output;
use crate::wrapper::compile::Compiled;
use crate::wrapper::outputs::Recorded;

/// One key part that differs: `(part, before, after)`; `None` where it was absent.
type Change = (String, Option<String>, Option<String>);

pub(crate) fn run(args: &MemoshelveArgs, name: &str, against: Option<&str>) -> anyhow::Result<()> {
    let store = super::store(args)?;
    // A package name stands for its build script's entries (`build-script.<package>`).
    let (name, mut entries) = super::entries_named(args, &store, name)?;
    let name = name.as_str();
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.record.created_ms));
    let Some(newest) = entries.first() else {
        bail!(
            "no entry named {name:?} or \"build-script.{name}\" in {} (see `cargo memoshelve \
             list`)",
            store.root().display()
        );
    };
    // A build script's run and a compile keep why they missed: the first key part that
    // differed from the nearest stored entry when they ran (which may be gone since, or the
    // same level-1 key).
    let missed = newest.is_file_step().then(|| store.file_step(newest).ok()).flatten().and_then(
        |manifest| {
            if name.starts_with("build-script.") {
                Recorded::decode(&manifest.result)?.missed
            } else if name.starts_with("rustc.") {
                Compiled::decode(&manifest.result)?.missed
            } else {
                None
            }
        },
    );
    let previous = match against {
        Some(prefix) => {
            let matching: Vec<_> =
                entries.iter().filter(|entry| entry.record.key.starts_with(prefix)).collect();
            match matching[..] {
                [one] => one,
                [] => bail!("no entry of {name:?} has a key starting with {prefix:?}"),
                _ => bail!(
                    "several entries of {name:?} have keys starting with {prefix:?}: give more digits"
                ),
            }
        }
        None => match (entries.get(1), &missed) {
            (Some(previous), _) => previous,
            (None, Some(missed)) => {
                if args.json {
                    return super::print_json(&json!({
                        "name": name,
                        "newest": newest.record.key,
                        "missed": missed,
                    }));
                }
                writeln!(
                    std::io::stdout().lock(),
                    "{name}: newest {} ({}) ran because it missed on: {missed}",
                    newest.key().short(),
                    output::age(newest.record.created_ms)
                )?;
                return Ok(());
            }
            (None, None) => bail!("{name:?} has one entry only: nothing to compare it with"),
        },
    };
    let mut changes: Vec<Change> = Vec::new();
    let mut compare = |part: &str, before: &str, after: &str| {
        if before != after {
            changes.push((part.to_owned(), Some(before.to_owned()), Some(after.to_owned())));
        }
    };
    compare("version", &previous.record.version, &newest.record.version);
    compare("value type", &previous.record.type_name, &newest.record.type_name);
    let parts = |entry: &memoshelve_build::store::Entry| -> BTreeMap<String, String> {
        entry
            .record
            .inputs
            .iter()
            .map(|input| (format!("{} {}", input.kind, input.name), input.value.clone()))
            .collect()
    };
    let (before, after) = (parts(previous), parts(newest));
    let all_parts: std::collections::BTreeSet<&String> =
        before.keys().chain(after.keys()).collect();
    for &part in &all_parts {
        if before.get(part) != after.get(part) {
            changes.push((part.clone(), before.get(part).cloned(), after.get(part).cloned()));
        }
    }
    // The arguments are not stored, only a rendering of them: compare what there is.
    let arguments_differ = previous.record.args != newest.record.args;
    if arguments_differ {
        changes.push((
            "arguments".to_owned(),
            Some(previous.record.args.clone()),
            Some(newest.record.args.clone()),
        ));
    }
    // Recorded parts: every input, the version and the value type (the arguments are extra).
    let unchanged =
        all_parts.len() + 2 - changes.iter().filter(|(part, ..)| part != "arguments").count();
    // Two traced runs of a build script: the files, programs and variables they used that
    // differ (two runs of one level-1 key differ there only).
    let traced = |entry: &memoshelve_build::store::Entry| {
        let manifest = store.file_step(entry).ok()?;
        Recorded::decode(&manifest.result)?.traced
    };
    if name.starts_with("build-script.")
        && let (Some(before), Some(after)) = (traced(previous), traced(newest))
    {
        changes.extend(before.differences(&after));
    }
    // Two compiles: the sources, variables and traced inputs that differ.
    let compiled = |entry: &memoshelve_build::store::Entry| {
        Compiled::decode(&store.file_step(entry).ok()?.result)
    };
    if name.starts_with("rustc.")
        && let (Some(before), Some(after)) = (compiled(previous), compiled(newest))
    {
        changes.extend(before.differences(&after));
    }
    if args.json {
        let rows: Vec<serde_json::Value> = changes
            .iter()
            .map(|(part, before, after)| json!({ "part": part, "before": before, "after": after }))
            .collect();
        return super::print_json(&json!({
            "name": name,
            "newest": newest.record.key,
            "against": previous.record.key,
            "changes": rows,
            "unchanged": unchanged,
            "missed": missed,
        }));
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{name}: newest {} ({}) against {} ({})",
        newest.key().short(),
        output::age(newest.record.created_ms),
        previous.key().short(),
        output::age(previous.record.created_ms)
    )?;
    if let Some(missed) = &missed {
        writeln!(out, "  it ran because it missed on: {missed}")?;
    }
    if changes.is_empty() {
        writeln!(
            out,
            "  no recorded key part differs: the arguments differ beyond what is recorded"
        )?;
    }
    let shown = |value: &Option<String>| match value {
        None => "(absent)".to_owned(),
        Some(value) => {
            let value = value.replace('\0', "").replace('\n', " ");
            if value.chars().count() > 40 {
                format!("{}…", value.chars().take(40).collect::<String>())
            } else {
                value
            }
        }
    };
    let mut rows = Vec::new();
    for (part, before, after) in &changes {
        rows.push(vec![
            "  changed".to_owned(),
            part.clone(),
            shown(before),
            "->".to_owned(),
            shown(after),
        ]);
    }
    output::table(&mut out, &rows)?;
    writeln!(
        out,
        "  {} {} the same",
        output::count(unchanged, "other key part"),
        if unchanged == 1 { "is" } else { "are" }
    )?;
    Ok(())
}
