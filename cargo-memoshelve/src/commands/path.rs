//! `cargo memoshelve path`: the cache root in use and why.

use std::io::Write;

use anyhow::Context;
use memoshelve_build::RootSource;
use memoshelve_build::config::Config;

use crate::cli::MemoshelveArgs;

pub(crate) fn run(args: &MemoshelveArgs) -> anyhow::Result<()> {
    let (root, project) = crate::project::locate(args)?;
    let exists = root.path.is_dir();
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let config = match &root.source {
            RootSource::Config(setting) => serde_json::json!({
                "file": setting.file,
                "table": setting.table,
                "value": setting.value,
            }),
            _ => serde_json::Value::Null,
        };
        let json = serde_json::json!({
            "path": root.path,
            "source": root.source.to_string(),
            "config": config,
            "exists": exists,
            "warnings": root.warnings,
        });
        writeln!(stdout, "{json}").context("cannot write to stdout")?;
        return Ok(());
    }
    // Only the path on stdout, so `$(cargo memoshelve path)` works; the reason goes to stderr.
    writeln!(stdout, "{}", root.path.display()).context("cannot write to stdout")?;
    let missing = if exists { "" } else { "; it does not exist yet" };
    crate::output::note(args, &format!("{} ({}){missing}", root.path.display(), root.source));
    if args.verbose {
        let shown = |dir: &Option<std::path::PathBuf>| {
            dir.as_ref().map_or("-".to_owned(), |dir| dir.display().to_string())
        };
        let mut stderr = std::io::stderr().lock();
        writeln!(stderr, "package:   {}", shown(&project.package_dir))?;
        writeln!(stderr, "workspace: {}", shown(&project.workspace_root))?;
        writeln!(stderr, "target:    {}", shown(&project.target_dir))?;
        for setting in Config::load(&project).settings {
            writeln!(
                stderr,
                "setting:   {} = {:?} in {}",
                setting.key,
                setting.value,
                setting.origin()
            )?;
        }
    }
    Ok(())
}
