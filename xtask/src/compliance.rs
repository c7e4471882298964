//! `cargo xtask compliance` (`make compliance`): the course's quality gate, as this book runs
//! it. The course ran PMAT's quality gate (`pmat quality-gate`: cyclomatic and cognitive
//! complexity limits, zero self-admitted technical debt — no TODO/FIXME/HACK comments —, dead
//! code, lint cleanliness, documentation and a coverage threshold). PMAT is not one of our
//! dependencies; the parts of its gate that carry over are run here directly: clippy with
//! warnings as errors (which covers dead code and its complexity lints), the book's
//! consistency checks, a scan for debt markers, and the measured coverage against the
//! scorecard's threshold. `make compliance` runs `make lint` first.

use crate::bench_file::BenchFile;
use crate::falsify::thresholds::COURSE_COVERAGE_PCT;
use anyhow::Result;
use std::path::Path;

/// One gate and what it found.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// The source trees scanned for debt markers.
const SOURCES: &[&str] = &[
    "chapters-code/src",
    "chapters-code/tests",
    "chapters-code/benches",
    "xtask/src",
];

/// Comments that admit unfinished work, as PMAT's SATD check counts them.
const DEBT_MARKERS: &[&str] = &["TODO", "FIXME", "HACK", "XXX"];

/// Comment lines holding a debt marker the way such notes are written (the marker, then a
/// colon or a parenthesis):
/// `path:line: text`. Prose that names the markers (as this module's does) is not debt.
pub fn debt_markers(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in SOURCES {
        walk(&root.join(dir), &mut |path| {
            let Ok(text) = std::fs::read_to_string(path) else {
                return;
            };
            for (i, line) in text.lines().enumerate() {
                let Some(at) = line.find("//") else {
                    continue;
                };
                let comment = &line[at..];
                let is_debt = DEBT_MARKERS.iter().any(|m| {
                    comment.match_indices(m).any(|(j, _)| {
                        let before = comment[..j].chars().next_back();
                        let after = comment[j + m.len()..].chars().next();
                        !before.is_some_and(|c| c.is_ascii_alphanumeric())
                            && matches!(after, Some(':' | '('))
                    })
                });
                if is_debt {
                    let shown = path.strip_prefix(root).unwrap_or(path).display();
                    found.push(format!("{shown}:{}: {}", i + 1, line.trim()));
                }
            }
        });
    }
    found
}

fn walk(dir: &Path, visit: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            walk(&path, visit);
        } else if path.extension().is_some_and(|e| e == "rs") {
            visit(&path);
        }
    }
}

/// The measured coverage against the scorecard's threshold.
pub fn coverage_gate(root: &Path) -> Result<Gate> {
    Ok(match BenchFile::load(root, "coverage")? {
        None => Gate {
            name: "coverage",
            passed: false,
            detail: format!(
                "not measured: run `cargo xtask bench --only coverage` (needs {})",
                crate::coverage::INSTALL
            ),
        },
        Some(f) => match f.table.lookup("what", "lines", "percent") {
            Some(pct) => Gate {
                name: "coverage",
                passed: pct >= COURSE_COVERAGE_PCT,
                detail: format!(
                    "{pct:.1}% of lines (threshold {COURSE_COVERAGE_PCT}%), measured at {}",
                    f.provenance.git_sha
                ),
            },
            None => Gate {
                name: "coverage",
                passed: false,
                detail: "benchmarks/coverage.json has no line coverage".into(),
            },
        },
    })
}

/// Every gate but the lints (which `make compliance` runs first, as `make lint`).
pub fn run(root: &Path) -> Result<Vec<Gate>> {
    let book = match crate::book::check(root) {
        Ok(()) => Gate {
            name: "book consistency",
            passed: true,
            detail: "SUMMARY, includes, anchors, listings, injected tables, no typed figures"
                .into(),
        },
        Err(e) => Gate {
            name: "book consistency",
            passed: false,
            detail: format!("{e:#}"),
        },
    };
    let debt = debt_markers(root);
    let debt = Gate {
        name: "no debt markers",
        passed: debt.is_empty(),
        detail: if debt.is_empty() {
            format!("no {} in {}", DEBT_MARKERS.join("/"), SOURCES.join(", "))
        } else {
            debt.join("\n")
        },
    };
    Ok(vec![book, debt, coverage_gate(root)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_markers_are_found_in_comments_as_notes_only() {
        let dir = std::env::temp_dir().join(format!("xtask-compliance-{}", std::process::id()));
        let src = dir.join("xtask/src");
        std::fs::create_dir_all(&src).unwrap();
        let marker = ["TO", "DO"].concat(); // not spelled out here, or this file would hold one
        let text = format!(
            "// {marker}: later\nlet todos = 1; // MASTODON: fine\n// the {marker}/FIXME rule\nlet s = \"{marker}:\";\n"
        );
        std::fs::write(src.join("a.rs"), text).unwrap();
        let found = debt_markers(&dir);
        assert_eq!(found, vec![format!("xtask/src/a.rs:1: // {marker}: later")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_workspace_has_no_debt_markers() {
        let found = debt_markers(&crate::workspace_root());
        assert!(found.is_empty(), "{found:#?}");
    }
}
