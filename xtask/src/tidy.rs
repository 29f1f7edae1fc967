//! `cargo xtask tidy`: hygiene checks that no compiler does. Also runs as `#[test] fn tidy`.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::ci::project_root;

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// Every problem found, as `path: message` lines.
pub(crate) fn problems(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    rust_files(root, &mut files);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let shown = file.strip_prefix(root).unwrap_or(file).display().to_string();
        if !text.starts_with("//!") {
            problems
                .push(format!("{shown}: does not open with a `//!` line saying what it is for"));
        }
        for (index, line) in text.lines().enumerate() {
            if line.ends_with(' ') || line.ends_with('\t') {
                problems.push(format!("{shown}:{}: trailing whitespace", index + 1));
            }
        }
        // Spelled in two halves so that this file does not match itself.
        if text.contains(concat!("#[", "should_panic")) || text.contains(concat!("#[", "ignore")) {
            problems.push(format!(
                "{shown}: a should_panic or ignore attribute: assert the behaviour instead"
            ));
        }
    }
    workflow_problems(root, &mut problems);
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap_or_default();
    for crate_dir in
        ["memoshelve-build", "memoshelve-macros", "cargo-memoshelve", "examples", "tests", "xtask"]
    {
        if !architecture.contains(&format!("`{crate_dir}/`")) {
            problems.push(format!("ARCHITECTURE.md: does not describe `{crate_dir}/`"));
        }
    }
    problems
}

const WORKFLOWS: &str = ".github/workflows";

/// The workflow files, as far as they can be checked without the hosting service (`cargo xtask
/// ci` also runs action-validator, GitHub's schema, when it is installed): `ci.yml` and
/// `release.yml` exist, each reads as YAML a line at a time (no tabs, top-level `on:` and
/// `jobs:`, every `${{` closed, every `uses:` an `owner/repo@ref`), `ci.yml` runs `.ci/run` (the
/// one script that starts the remote test servers), and `release.yml` makes the archives
/// cargo-memoshelve's `[package.metadata.binstall]` downloads, with each of its binaries.
fn workflow_problems(root: &Path, problems: &mut Vec<String>) {
    let dir = root.join(WORKFLOWS);
    for name in ["ci.yml", "release.yml"] {
        if !dir.join(name).is_file() {
            problems.push(format!("{WORKFLOWS}/{name}: missing"));
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml" || ext == "yaml"))
        .collect();
    files.sort();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let shown = file.strip_prefix(root).unwrap_or(file).display().to_string();
        yaml_problems(&shown, &text, problems);
    }
    if let Ok(ci) = std::fs::read_to_string(dir.join("ci.yml"))
        && !ci.contains(".ci/run")
    {
        problems.push(format!(
            "{WORKFLOWS}/ci.yml: does not run .ci/run, the script that starts the remote test \
             servers the tests demand under CI"
        ));
    }
    if let Ok(release) = std::fs::read_to_string(dir.join("release.yml")) {
        let manifest_path = "cargo-memoshelve/Cargo.toml";
        let manifest = std::fs::read_to_string(root.join(manifest_path)).unwrap_or_default();
        release_problems(&release, manifest_path, &manifest, problems);
    }
}

/// What a line-at-a-time reading of a workflow file can tell.
fn yaml_problems(shown: &str, text: &str, problems: &mut Vec<String>) {
    let mut top_level = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let at = format!("{shown}:{}", index + 1);
        if line.contains('\t') {
            problems.push(format!("{at}: a tab (YAML indents with spaces)"));
        }
        if !line.starts_with([' ', '#']) && !line.is_empty() {
            top_level.push(line.split(':').next().unwrap_or_default().trim_matches(['"', '\'']));
        }
        let mut rest = line;
        while let Some(start) = rest.find("${{") {
            rest = &rest[start + 3..];
            match rest.find("}}") {
                Some(end) => rest = &rest[end + 2..],
                None => {
                    problems.push(format!("{at}: `${{{{` without its `}}}}`"));
                    break;
                }
            }
        }
        let item = line.trim_start().trim_start_matches("- ");
        if let Some(value) = item.strip_prefix("uses:") {
            let value =
                value.split(" #").next().unwrap_or_default().trim().trim_matches(['"', '\'']);
            if !is_action_reference(value) {
                problems.push(format!(
                    "{at}: `uses: {value}` names no action at a version (`owner/repo@ref`, \
                     `./path` or `docker://image`)"
                ));
            }
        }
    }
    for key in ["on", "jobs"] {
        if !top_level.contains(&key) {
            problems.push(format!("{shown}: no top-level `{key}:`"));
        }
    }
}

/// `owner/repo@ref` or `owner/repo/path@ref`, a local `./path`, or `docker://image`.
fn is_action_reference(value: &str) -> bool {
    if let Some(rest) = value.strip_prefix("./").or_else(|| value.strip_prefix("docker://")) {
        return !rest.is_empty();
    }
    let Some((action, reference)) = value.split_once('@') else { return false };
    let name_char = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    let parts: Vec<&str> = action.split('/').collect();
    parts.len() >= 2
        && parts.iter().all(|part| !part.is_empty() && part.chars().all(name_char))
        && !reference.is_empty()
        && reference.chars().all(|c| name_char(c) || c == '/')
}

/// `[package.metadata.binstall]` (with its per-target overrides) against the archives
/// release.yml makes, and the package's binaries against the ones it puts in them.
fn release_problems(
    release: &str,
    manifest_path: &str,
    manifest: &str,
    problems: &mut Vec<String>,
) {
    let release_yml = format!("{WORKFLOWS}/release.yml");
    let strings = manifest_strings(manifest);
    let value = |section: &str, key: &str| {
        strings.iter().find(|(s, k, _)| s == section && k == key).map(|(.., v)| v.as_str())
    };
    let package = value("[package]", "name").unwrap_or_default();
    let words: Vec<&str> =
        release.split(|c: char| c.is_whitespace() || "\"';".contains(c)).collect();
    let bins: Vec<&str> = strings
        .iter()
        .filter(|(section, key, _)| section == "[[bin]]" && key == "name")
        .map(|(.., name)| name.as_str())
        .collect();
    if bins.is_empty() {
        problems.push(format!("{manifest_path}: no `[[bin]]` names"));
    }
    for bin in &bins {
        if !words.contains(bin) {
            problems.push(format!("{release_yml}: does not archive `{bin}` ({manifest_path})"));
        }
    }
    if !release.contains("\"v*\"") {
        problems.push(format!(
            "{release_yml}: not run on `v*` tags (the binstall pkg-url downloads from v{{ version }})"
        ));
    }
    let binstall = "[package.metadata.binstall]";
    let overrides = "[package.metadata.binstall.overrides.";
    let mut archives = Vec::new();
    match value(binstall, "pkg-url") {
        Some(url) => archives.push(("", url, value(binstall, "pkg-fmt").unwrap_or("tgz"))),
        None => problems.push(format!("{manifest_path}: no `pkg-url` in {binstall}")),
    }
    for (section, key, url) in &strings {
        if let Some(target) = section.strip_prefix(overrides).and_then(|s| s.strip_suffix(']'))
            && key == "pkg-url"
        {
            archives.push((target, url, value(section, "pkg-fmt").unwrap_or("tgz")));
            if !words.contains(&target) {
                problems.push(format!(
                    "{release_yml}: builds no `{target}` ({manifest_path} overrides it)"
                ));
            }
        }
    }
    // In release.yml the package's name is spelled out, the target and version are shell
    // variables, and each name is one quoted string.
    let as_shell = |template: &str| {
        expand(template, |name| match name {
            "name" => Some(package.to_owned()),
            "target" | "version" => Some(format!("${{{name}}}")),
            _ => None,
        })
    };
    for (target, url, format) in archives {
        let at = if target.is_empty() { String::new() } else { format!(" ({target})") };
        let Some(file) = url.strip_prefix("{ repo }/releases/download/v{ version }/") else {
            problems.push(format!(
                "{manifest_path}: pkg-url{at} `{url}` is not under \
                 `{{ repo }}/releases/download/v{{ version }}/`, where release.yml uploads"
            ));
            continue;
        };
        let suffix = match format {
            "tgz" => ".tar.gz",
            "zip" => ".zip",
            _ => "",
        };
        if suffix.is_empty() || !file.ends_with(suffix) {
            problems.push(format!(
                "{manifest_path}: pkg-url{at} `{url}` does not end in the suffix release.yml \
                 gives pkg-fmt `{format}`"
            ));
        }
        match as_shell(file) {
            Ok(archive) if release.contains(&format!("\"{archive}\"")) => {}
            Ok(archive) => problems.push(format!(
                "{release_yml}: makes no archive `{archive}` (the pkg-url{at} of {manifest_path})"
            )),
            Err(problem) => problems.push(format!("{manifest_path}: pkg-url{at}: {problem}")),
        }
    }
    match value(binstall, "bin-dir").map(|dir| dir.rsplit_once('/')) {
        Some(Some((dir, "{ bin }{ binary-ext }"))) => match as_shell(dir) {
            Ok(dir) if release.contains(&format!("\"{dir}\"")) => {}
            Ok(dir) => problems.push(format!(
                "{release_yml}: puts the binaries in no directory `{dir}` (bin-dir of \
                 {manifest_path})"
            )),
            Err(problem) => problems.push(format!("{manifest_path}: bin-dir: {problem}")),
        },
        _ => problems.push(format!(
            "{manifest_path}: {binstall} needs a bin-dir `<dir>/{{ bin }}{{ binary-ext }}`"
        )),
    }
}

/// A binstall template with each `{ name }` replaced, or the name it cannot replace.
fn expand(template: &str, replace: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut res = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        res.push_str(&rest[..start]);
        let end = rest[start..].find('}').ok_or_else(|| format!("`{template}`: an open `{{`"))?;
        let name = rest[start + 1..start + end].trim();
        res.push_str(&replace(name).ok_or_else(|| format!("`{template}`: `{{ {name} }}` here"))?);
        rest = &rest[start + end + 1..];
    }
    res.push_str(rest);
    Ok(res)
}

/// Every `key = "string"` of a manifest with the header of its table (`[package]`, `[[bin]]`):
/// a line-at-a-time reading, enough for the flat string values looked at here.
fn manifest_strings(text: &str) -> Vec<(String, String, String)> {
    let mut res = Vec::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
        } else if let Some((key, value)) = line.split_once('=')
            && let Some(value) = value.trim().strip_prefix('"').and_then(|v| v.strip_suffix('"'))
        {
            res.push((section.clone(), key.trim().to_owned(), value.to_owned()));
        }
    }
    res
}

pub(crate) fn run() -> anyhow::Result<()> {
    let problems = problems(&project_root());
    if problems.is_empty() {
        return Ok(());
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    bail!("tidy found {} problem(s)", problems.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tidy() {
        let problems = super::problems(&crate::ci::project_root());
        assert!(problems.is_empty(), "cargo xtask tidy:\n{}", problems.join("\n"));
    }

    /// The real workflows and manifest, each broken in one way: every break is reported.
    #[test]
    fn tidy_catches_a_broken_workflow() {
        let root = crate::ci::project_root();
        let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
        let (ci, release) =
            (read(".github/workflows/ci.yml"), read(".github/workflows/release.yml"));
        let manifest = read("cargo-memoshelve/Cargo.toml");
        let check = |ci: &str, release: &str, manifest: &str| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join(".github/workflows")).unwrap();
            std::fs::create_dir_all(dir.path().join("cargo-memoshelve")).unwrap();
            std::fs::write(dir.path().join(".github/workflows/ci.yml"), ci).unwrap();
            std::fs::write(dir.path().join(".github/workflows/release.yml"), release).unwrap();
            std::fs::write(dir.path().join("cargo-memoshelve/Cargo.toml"), manifest).unwrap();
            let mut problems = Vec::new();
            super::workflow_problems(dir.path(), &mut problems);
            problems
        };
        assert_eq!(check(&ci, &release, &manifest), Vec::<String>::new(), "as they are");
        let broken = |problems: Vec<String>, expected: &str| {
            assert!(problems.iter().any(|problem| problem.contains(expected)), "{problems:?}");
        };
        let edit = |text: &str, from: &str, to: &str| {
            assert!(text.contains(from), "{from}");
            text.replacen(from, to, 1)
        };
        broken(
            check(&edit(&ci, "actions/checkout@v4", "actions/checkout"), &release, &manifest),
            "names no action at a version",
        );
        broken(check(&edit(&ci, "  ci:", "\tci:"), &release, &manifest), "a tab");
        broken(check(&edit(&ci, "jobs:", "job:"), &release, &manifest), "no top-level `jobs:`");
        broken(check(&edit(&ci, ".ci/run", "cargo xtask ci"), &release, &manifest), ".ci/run");
        broken(
            check(&ci, &edit(&release, "${{ matrix.os }}", "${{ matrix.os"), &manifest),
            "without its",
        );
        broken(
            check(&ci, &edit(&release, "-v${version}.tar.gz", "-${version}.tar.gz"), &manifest),
            "makes no archive `cargo-memoshelve-${target}-v${version}.tar.gz`",
        );
        broken(
            check(&ci, &edit(&release, "v${version}.zip", "v${version}.7z"), &manifest),
            "makes no archive `cargo-memoshelve-${target}-v${version}.zip`",
        );
        broken(
            check(&ci, &edit(&release, " memoshelve-launcher;", ";"), &manifest),
            "does not archive `memoshelve-launcher`",
        );
        broken(
            check(
                &ci,
                &edit(&release, "x86_64-pc-windows-msvc", "x86_64-pc-windows-gnu"),
                &manifest,
            ),
            "builds no `x86_64-pc-windows-msvc`",
        );
        broken(check(&ci, &edit(&release, "\"v*\"", "\"*\""), &manifest), "`v*` tags");
        broken(
            check(&ci, &release, &edit(&manifest, "{ target }-v{ version }/", "{ target }/")),
            "puts the binaries in no directory `cargo-memoshelve-${target}`",
        );
        broken(
            check(&ci, &release, &edit(&manifest, "pkg-fmt = \"zip\"", "pkg-fmt = \"tgz\"")),
            "does not end in the suffix",
        );
        broken(
            check(&ci, &release, &edit(&manifest, "{ name }-{ target }", "{ name }-{ arch }")),
            "`{ arch }` here",
        );
    }

    #[test]
    fn tidy_catches_a_missing_module_doc() {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/lib.rs"), "fn main() {} \n").unwrap();
        let problems = super::problems(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(problems.iter().any(|problem| problem.contains("`//!`")), "{problems:?}");
        assert!(
            problems.iter().any(|problem| problem.contains("trailing whitespace")),
            "{problems:?}"
        );
        assert!(problems.iter().any(|problem| problem.contains("ARCHITECTURE.md")), "{problems:?}");
    }
}
