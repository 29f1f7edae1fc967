//! `cargo memoshelve path`: the cache root in use and why.

use std::io::Write;

use anyhow::Context;

use crate::cli::MemoshelveArgs;

pub(crate) fn run(args: &MemoshelveArgs) -> anyhow::Result<()> {
    let root = memoshelve_build::resolve_root(args.dir.as_deref()).map_err(anyhow::Error::msg)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "path": root.path,
            "source": root.source.to_string(),
            "exists": root.path.is_dir(),
        });
        writeln!(stdout, "{json}").context("cannot write to stdout")?;
    } else {
        writeln!(stdout, "{}", root.path.display()).context("cannot write to stdout")?;
        if !root.path.is_dir() {
            writeln!(
                std::io::stderr(),
                "note: {} ({}); it does not exist yet",
                root.path.display(),
                root.source
            )
            .context("cannot write to stderr")?;
        }
    }
    Ok(())
}
