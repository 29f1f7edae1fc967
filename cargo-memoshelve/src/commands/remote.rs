//! `cargo memoshelve remote status|push|pull`: the remote tier seen from outside a build.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use memoshelve_build::remote::{Mode, Pulled, Pushed, Remote, Settings};
use memoshelve_build::store::{Entry, Store};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::json;

use crate::cli::{MemoshelveArgs, RemoteCommand};
use crate::output;

pub(crate) fn run(args: &MemoshelveArgs, command: &RemoteCommand) -> anyhow::Result<()> {
    match command {
        RemoteCommand::Status => status(args),
        RemoteCommand::Push { used_since } => {
            let remote = open(args)?;
            let store = super::store(args)?;
            let now = output::now_ms();
            let entries: Vec<Entry> = store
                .entries(None)?
                .into_iter()
                .filter(|entry| {
                    used_since.is_none_or(|age| {
                        now.saturating_sub(entry.last_used_ms) <= age.as_millis() as u64
                    })
                })
                .collect();
            let pushed = push(args, &store, &remote, &entries)?;
            if args.json {
                super::print_json(&json!(pushed))?;
            } else {
                writeln!(std::io::stdout(), "{}", pushed.describe())?;
            }
            pushed.check()
        }
        RemoteCommand::Pull { name } => pull(args, name.as_deref()),
    }
}

/// The remote of the project (`MEMOSHELVE_REMOTE*`, then its configuration), opened.
pub(crate) fn open(args: &MemoshelveArgs) -> anyhow::Result<Remote> {
    let settings = settings(args)?.context(
        "no remote is configured: set MEMOSHELVE_REMOTE (redis://, http(s)://, s3://) or \
         `remote = \"...\"` in [workspace.metadata.memoshelve]",
    )?;
    Ok(Remote::open(settings)?)
}

fn settings(args: &MemoshelveArgs) -> anyhow::Result<Option<Settings>> {
    let (_, project) = crate::project::locate(args)?;
    Ok(Settings::resolve(&project)?)
}

fn status(args: &MemoshelveArgs) -> anyhow::Result<()> {
    let Some(settings) = settings(args)? else {
        if args.json {
            return super::print_json(&json!({ "url": null }));
        }
        writeln!(
            std::io::stdout(),
            "no remote is configured (set MEMOSHELVE_REMOTE, or `remote` in \
             [workspace.metadata.memoshelve])"
        )?;
        return Ok(());
    };
    let remote = Remote::open(settings)?;
    let settings = remote.settings();
    // The best of three round trips: the first one also connects.
    let mut answered: Result<Duration, String> = remote.ping().map_err(|err| err.to_string());
    for _ in 0..2 {
        if let (Ok(best), Ok(again)) = (&answered, remote.ping()) {
            answered = Ok((*best).min(again));
        }
    }
    let latency_ms = answered.as_ref().ok().map(|took| took.as_secs_f64() * 1000.0);
    let error = answered.as_ref().err();
    if args.json {
        super::print_json(&json!({
            "url": settings.redacted_url(),
            "origin": settings.origin,
            "mode": settings.mode,
            "signing": settings.signing_key.is_some(),
            "build_scripts": settings.carries_build_scripts(),
            "reachable": answered.is_ok(),
            "latency_ms": latency_ms,
            "error": error,
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "remote:    {} (from {})", settings.redacted_url(), settings.origin)?;
        writeln!(out, "mode:      {}", settings.mode)?;
        let signing = if settings.signing_key.is_some() {
            "on: entries are signed, and unsigned ones are not used"
        } else {
            "off (set MEMOSHELVE_REMOTE_KEY to sign and check entries)"
        };
        writeln!(out, "signing:   {signing}")?;
        let build_scripts = match (settings.carries_build_scripts(), settings.build_scripts) {
            (true, _) => "shared, signed (MEMOSHELVE_BUILD_SCRIPTS_REMOTE=1)",
            (false, true) => {
                "kept local: MEMOSHELVE_BUILD_SCRIPTS_REMOTE=1 needs MEMOSHELVE_REMOTE_KEY"
            }
            (false, false) => "kept local (MEMOSHELVE_BUILD_SCRIPTS_REMOTE=1 and a key share them)",
        };
        writeln!(out, "build scripts: {build_scripts}")?;
        match (&latency_ms, error) {
            (Some(ms), _) => writeln!(out, "reachable: yes, {ms:.2} ms")?,
            (None, Some(error)) => writeln!(out, "reachable: no: {error}")?,
            (None, None) => unreachable!("a ping either answers or fails"),
        }
    }
    match error {
        Some(error) => Err(anyhow::anyhow!("the remote is not reachable: {error}")),
        None => Ok(()),
    }
}

/// What a push did.
#[derive(Debug, Default, Serialize)]
pub(crate) struct PushSummary {
    url: String,
    entries: usize,
    uploaded: usize,
    present: usize,
    /// Transparent mode's entries, which stay on this machine (see `push`).
    kept_local: usize,
    blobs: u64,
    bytes: u64,
    failed: Vec<serde_json::Value>,
}

impl PushSummary {
    pub(crate) fn describe(&self) -> String {
        let mut text = format!(
            "pushed {} of {} entries to {} ({} blobs, {}); {} were there already",
            self.uploaded,
            self.entries,
            self.url,
            self.blobs,
            output::size(self.bytes),
            self.present
        );
        if self.kept_local > 0 {
            text = format!(
                "{text}; {} build-script entries kept on this machine (they travel signed, with \
                 MEMOSHELVE_BUILD_SCRIPTS_REMOTE=1 and MEMOSHELVE_REMOTE_KEY)",
                self.kept_local
            );
        }
        if !self.failed.is_empty() {
            text = format!("{text}; {} failed", self.failed.len());
        }
        text
    }

    /// An error when some entries could not be pushed (each was reported).
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        if self.failed.is_empty() {
            return Ok(());
        }
        anyhow::bail!(
            "{} entries could not be pushed, the first: {}",
            self.failed.len(),
            self.failed[0]["error"].as_str().unwrap_or_default()
        )
    }
}

/// Pushes `entries` in parallel, with a progress bar. Transparent mode's entries
/// (`build-script.<package>`) are kept back unless the remote carries them: what they restore
/// is linked into binaries, so they travel only opted into and signed (`Settings::carries`).
pub(crate) fn push(
    args: &MemoshelveArgs,
    store: &Store,
    remote: &Remote,
    entries: &[Entry],
) -> anyhow::Result<PushSummary> {
    if remote.settings().mode != Mode::ReadWrite {
        anyhow::bail!(
            "the remote's mode is {}: not pushing (set MEMOSHELVE_REMOTE_MODE=read-write where \
             writing is intended, such as trusted CI)",
            remote.settings().mode
        );
    }
    let (kept, entries): (Vec<&Entry>, Vec<&Entry>) =
        entries.iter().partition(|entry| !remote.settings().carries(&entry.record.name));
    let bar = output::progress(args, entries.len() as u64, "pushing");
    let results: Vec<(&Entry, Result<Pushed, String>)> = entries
        .par_iter()
        .map(|&entry| {
            let pushed = remote.push(store, entry).map_err(|err| err.to_string());
            bar.inc(1);
            (entry, pushed)
        })
        .collect();
    bar.finish_and_clear();
    let mut summary = PushSummary {
        url: remote.settings().redacted_url(),
        entries: entries.len(),
        kept_local: kept.len(),
        ..PushSummary::default()
    };
    for (entry, pushed) in results {
        match pushed {
            Ok(Pushed::Uploaded { blobs, bytes }) => {
                summary.uploaded += 1;
                summary.blobs += blobs;
                summary.bytes += bytes;
            }
            Ok(Pushed::Present) => summary.present += 1,
            Err(error) => {
                output::warn(
                    args,
                    &format!("{} {}: {error}", entry.record.name, entry.key().short()),
                );
                summary.failed.push(
                    json!({ "name": entry.record.name, "key": entry.record.key, "error": error }),
                );
            }
        }
    }
    Ok(summary)
}

fn pull(args: &MemoshelveArgs, name: Option<&str>) -> anyhow::Result<()> {
    let remote = open(args)?;
    let root = crate::project::cache_root(args)?;
    let store = Store::create(&root.path)?;
    let keys = remote.entry_keys()?;
    let bar = output::progress(args, keys.len() as u64, "pulling");
    let results: Vec<_> = keys
        .par_iter()
        .map(|key| {
            let pulled = remote.pull(&store, key, name).map_err(|err| err.to_string());
            bar.inc(1);
            (key, pulled)
        })
        .collect();
    bar.finish_and_clear();
    let (mut fetched, mut present, mut other_names, mut missing) = (0, 0, 0, 0);
    let mut failed = Vec::new();
    for (key, pulled) in results {
        match pulled {
            Ok(Pulled::Fetched) => fetched += 1,
            Ok(Pulled::Present) => present += 1,
            Ok(Pulled::OtherName) => other_names += 1,
            Ok(Pulled::Missing) => missing += 1,
            Err(error) => {
                output::warn(args, &format!("{}: {error}", key.short()));
                failed.push(json!({ "key": key.to_hex(), "error": error }));
            }
        }
    }
    let url = remote.settings().redacted_url();
    if args.json {
        super::print_json(&json!({
            "url": url, "listed": keys.len(), "fetched": fetched, "present": present,
            "other_names": other_names, "missing": missing, "failed": failed,
        }))?;
    } else {
        writeln!(
            std::io::stdout(),
            "pulled {fetched} entries from {url} into {} ({present} were here already{})",
            store.root().display(),
            if failed.is_empty() { String::new() } else { format!(", {} failed", failed.len()) }
        )?;
    }
    if !failed.is_empty() {
        anyhow::bail!("{} remote entries could not be pulled (see the warnings)", failed.len());
    }
    Ok(())
}
