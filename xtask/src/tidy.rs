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
