//! `cargo xtask book`: inject the measured tables, check the book, run every listing, then
//! render the HTML with mdBook (as a library) and the Mermaid preprocessor (in-process).

use crate::{bench_file, checks, inject};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where mdBook writes the HTML (`[build] build-dir` in book.toml).
pub fn html_dir(root: &Path) -> PathBuf {
    root.join("target/book")
}

/// Rewrites every chapter's bench regions from `benchmarks/`; returns the files that changed.
pub fn inject_all(root: &Path) -> Result<Vec<PathBuf>> {
    let mut changed = crate::charts::write_all(root)?;
    for chapter in checks::chapter_files(root)? {
        let path = root.join(checks::BOOK_SRC).join(&chapter);
        let text = std::fs::read_to_string(&path)?;
        let mut failure = None;
        let out = inject::inject(&text, |name| {
            bench_file::render(root, name).unwrap_or_else(|e| {
                failure.get_or_insert(e);
                String::new()
            })
        })
        .with_context(|| format!("{}", path.display()))?;
        if let Some(e) = failure {
            return Err(e.context(format!("rendering the tables of {}", path.display())));
        }
        if out != text {
            std::fs::write(&path, out)?;
            changed.push(path);
        }
    }
    Ok(changed)
}

/// Runs all book checks; an error lists every problem.
pub fn check(root: &Path) -> Result<()> {
    let problems = checks::run(root);
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    bail!(
        "the book has {} problem(s):\n{}",
        problems.len(),
        list.join("\n")
    )
}

/// Runs the chapters' listings (`cargo test --doc -p chapters-code`).
pub fn run_listings(root: &Path) -> Result<()> {
    eprintln!("running every listing of the book (cargo test --doc -p chapters-code)...");
    let status = Command::new(cargo())
        .current_dir(root)
        .args(["test", "--doc", "-p", "chapters-code"])
        .status()
        .context("running cargo test --doc")?;
    if !status.success() {
        bail!("a listing failed: see the test output above (it names the chapter file and line)");
    }
    Ok(())
}

/// The `cargo` that runs us (so that toolchain overrides carry over).
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Copies `mermaid.min.js` from the mdbook-mermaid crate's sources (found through
/// `cargo metadata`) to `book/theme/`, where book.toml's `additional-js` expects it.
pub fn install_mermaid_js(root: &Path) -> Result<()> {
    let out = Command::new(cargo())
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let manifest = meta["packages"]
        .as_array()
        .and_then(|pkgs| pkgs.iter().find(|p| p["name"] == "mdbook-mermaid"))
        .and_then(|p| p["manifest_path"].as_str())
        .context("mdbook-mermaid is not in the dependency graph (xtask/Cargo.toml)")?;
    let source = Path::new(manifest)
        .parent()
        .context("manifest path has no parent")?
        .join("src/bin/assets/mermaid.min.js");
    let target = root.join("book/theme/mermaid.min.js");
    let same = std::fs::metadata(&target)
        .ok()
        .zip(std::fs::metadata(&source).ok())
        .is_some_and(|(a, b)| a.len() == b.len());
    if !same {
        std::fs::copy(&source, &target)
            .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
    }
    Ok(())
}

/// Renders the HTML; returns the path of its index.html.
pub fn render(root: &Path) -> Result<PathBuf> {
    install_mermaid_js(root)?;
    let mut book = mdbook_driver::MDBook::load(root).context("loading book.toml")?;
    book.with_preprocessor(mdbook_mermaid::Mermaid);
    book.build().context("mdBook build")?;
    let html = html_dir(root);
    copy_dir(&root.join("images"), &html.join("images"))?;
    let summary = std::fs::read_to_string(root.join(checks::BOOK_SRC).join("SUMMARY.md"))?;
    let missing: Vec<String> = checks::summary_entries(&summary)
        .into_iter()
        .map(|(target, _)| Path::new(&target).with_extension("html"))
        .filter(|page| !html.join(page).is_file())
        .map(|page| page.display().to_string())
        .collect();
    if !missing.is_empty() {
        bail!("mdBook wrote no HTML for: {}", missing.join(", "));
    }
    Ok(html.join("index.html"))
}

/// Copies the files of `from` (one level: diagrams) into `to`.
/// Copies `from` into `to`, subdirectories included (`images/charts/`).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name() else {
            continue;
        };
        if path.is_dir() {
            copy_dir(&path, &to.join(name))?;
        } else if path.is_file() {
            std::fs::copy(&path, to.join(name))?;
        }
    }
    Ok(())
}
