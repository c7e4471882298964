//! The book's consistency checks. mdBook renders a missing `{{#include}}` file or anchor as
//! nothing, silently, and ignores Markdown files missing from SUMMARY.md; rustdoc compiles an
//! unlabeled fence as Rust. These checks turn each of those into an error that names the file
//! and line. `cargo xtask book` runs them, and so does `cargo test` (xtask/tests/book.rs).

use crate::bench_file;
use crate::inject;
use crate::markdown::{code_blocks, line_of};
use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with the book.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Path relative to the workspace root.
    pub file: PathBuf,
    /// 1-based line, 0 when the problem concerns the whole file.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)
        }
    }
}

/// Where the chapters are, relative to the workspace root.
pub const BOOK_SRC: &str = "book/src";
/// The file that wires chapters into doctests.
pub const DOCTEST_WIRING: &str = "chapters-code/src/lib.rs";

/// Every check, on the book under `root`. An empty list means the book is consistent.
pub fn run(root: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    let chapters = match chapter_files(root) {
        Ok(chapters) => chapters,
        Err(e) => {
            return vec![Problem {
                file: BOOK_SRC.into(),
                line: 0,
                message: format!("cannot list chapters: {e}"),
            }];
        }
    };
    problems.extend(check_summary(root, &chapters));
    match crate::charts::stale(root) {
        Ok(stale) => problems.extend(stale.into_iter().map(|path| {
            problem(
                &path,
                0,
                "chart is stale: run `cargo xtask inject` (or `cargo xtask book`)",
            )
        })),
        Err(e) => problems.push(problem(
            Path::new("images/charts"),
            0,
            format!("cannot draw: {e:#}"),
        )),
    }
    problems.extend(check_wiring(root, &chapters));
    let mut shown = String::new();
    for chapter in &chapters {
        let file = Path::new(BOOK_SRC).join(chapter);
        let text = match std::fs::read_to_string(root.join(&file)) {
            Ok(text) => text,
            Err(e) => {
                problems.push(problem(&file, 0, format!("unreadable: {e}")));
                continue;
            }
        };
        problems.extend(check_includes(root, &file, &text));
        problems.extend(check_images(root, &file, &text));
        problems.extend(check_fences(&file, &text));
        problems.extend(check_bench_regions(root, &file, &text));
        problems.extend(check_typed_numbers(&file, &text));
        shown.push_str(&text);
    }
    for chart in crate::charts::files() {
        if !shown.contains(&format!("images/charts/{chart})")) {
            problems.push(problem(
                &Path::new("images/charts").join(chart),
                0,
                "no chapter shows this chart: add `![what it shows](../images/charts/<file>)` after its table",
            ));
        }
    }
    problems
}

fn problem(file: &Path, line: usize, message: impl Into<String>) -> Problem {
    Problem {
        file: file.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// All `.md` files under `book/src` except SUMMARY.md, relative to `book/src`, sorted.
pub fn chapter_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, base, out)?;
            } else if path.extension().is_some_and(|e| e == "md")
                && let Ok(rel) = path.strip_prefix(base)
                && rel != Path::new("SUMMARY.md")
            {
                out.push(rel.to_path_buf());
            }
        }
        Ok(())
    }
    let base = root.join(BOOK_SRC);
    let mut out = Vec::new();
    walk(&base, &base, &mut out)?;
    out.sort();
    Ok(out)
}

/// Link targets of SUMMARY.md with their lines (`[Title](path.md)`; draft entries `()` skipped).
pub fn summary_entries(text: &str) -> Vec<(String, usize)> {
    use pulldown_cmark::{Event, Parser, Tag};
    Parser::new(text)
        .into_offset_iter()
        .filter_map(|(event, span)| match event {
            Event::Start(Tag::Link { dest_url, .. }) if !dest_url.is_empty() => {
                Some((dest_url.to_string(), line_of(text, span.start)))
            }
            _ => None,
        })
        .collect()
}

/// SUMMARY.md names only existing files, and every chapter file is in it.
fn check_summary(root: &Path, chapters: &[PathBuf]) -> Vec<Problem> {
    let file = Path::new(BOOK_SRC).join("SUMMARY.md");
    let Ok(text) = std::fs::read_to_string(root.join(&file)) else {
        return vec![problem(&file, 0, "missing: mdBook needs it")];
    };
    let entries = summary_entries(&text);
    let mut problems = Vec::new();
    for (target, line) in &entries {
        if !root.join(BOOK_SRC).join(target).is_file() {
            problems.push(problem(&file, *line, format!("`{target}` does not exist")));
        }
    }
    for chapter in chapters {
        let listed = entries
            .iter()
            .any(|(t, _)| Path::new(t) == chapter.as_path());
        if !listed {
            problems.push(problem(
                &Path::new(BOOK_SRC).join(chapter),
                0,
                "not listed in SUMMARY.md (mdBook would not render it)",
            ));
        }
    }
    problems
}

/// Every chapter is included as a doctest module in chapters-code/src/lib.rs.
fn check_wiring(root: &Path, chapters: &[PathBuf]) -> Vec<Problem> {
    let wiring = root.join(DOCTEST_WIRING);
    let text = std::fs::read_to_string(&wiring).unwrap_or_default();
    chapters
        .iter()
        .filter(|chapter| {
            let needle = format!(
                "include_str!(\"../../{BOOK_SRC}/{}\")",
                chapter.to_string_lossy().replace('\\', "/")
            );
            !text.contains(&needle)
        })
        .map(|chapter| {
            problem(
                &Path::new(BOOK_SRC).join(chapter),
                0,
                format!(
                    "not wired into the doctests: add `#[doc = include_str!(\"../../{BOOK_SRC}/{}\")]` to the `book` module of {DOCTEST_WIRING}",
                    chapter.display()
                ),
            )
        })
        .collect()
}

/// A parsed `{{#include path[:anchor | :from:to]}}` directive.
#[derive(Debug, PartialEq)]
pub struct Include {
    pub path: String,
    pub selector: Option<String>,
    pub line: usize,
}

/// The include directives of a chapter (`\{{#include ...}}` is an escaped, literal one).
pub fn includes(text: &str) -> Vec<Include> {
    let mut found = Vec::new();
    for directive in ["{{#include ", "{{#rustdoc_include "] {
        let mut from = 0;
        while let Some(rel) = text[from..].find(directive) {
            let start = from + rel;
            from = start + directive.len();
            if text[..start].ends_with('\\') {
                continue;
            }
            let Some(len) = text[from..].find("}}") else {
                continue;
            };
            let arg = text[from..from + len].trim();
            let (path, selector) = match arg.split_once(':') {
                Some((p, s)) => (p.to_string(), Some(s.to_string())),
                None => (arg.to_string(), None),
            };
            found.push(Include {
                path,
                selector,
                line: line_of(text, start),
            });
        }
    }
    found.sort_by_key(|i| i.line);
    found
}

/// Included files exist; anchors exist (opened and closed); line ranges are in the file.
fn check_includes(root: &Path, file: &Path, text: &str) -> Vec<Problem> {
    let dir = root
        .join(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut problems = Vec::new();
    for inc in includes(text) {
        let target = dir.join(&inc.path);
        let Ok(content) = std::fs::read_to_string(&target) else {
            problems.push(problem(
                file,
                inc.line,
                format!("included file `{}` does not exist", inc.path),
            ));
            continue;
        };
        let Some(selector) = inc.selector.as_deref() else {
            continue;
        };
        let lines = content.lines().count();
        let numbers: Vec<&str> = selector.split(':').collect();
        let is_range = numbers
            .iter()
            .all(|n| n.is_empty() || n.parse::<usize>().is_ok());
        if is_range {
            let too_far = numbers
                .iter()
                .filter_map(|n| n.parse::<usize>().ok())
                .any(|n| n == 0 || n > lines);
            if too_far {
                problems.push(problem(
                    file,
                    inc.line,
                    format!(
                        "line range `{selector}` is outside `{}` ({lines} lines)",
                        inc.path
                    ),
                ));
            }
        } else if !has_anchor(&content, selector) {
            problems.push(problem(
                file,
                inc.line,
                format!("anchor `{selector}` not found in `{}` (needs `ANCHOR: {selector}` and `ANCHOR_END: {selector}`)", inc.path),
            ));
        }
    }
    problems
}

/// Whether `content` has both `ANCHOR: name` and `ANCHOR_END: name` (as mdBook reads them).
pub fn has_anchor(content: &str, name: &str) -> bool {
    let marks = |kw: &str| {
        content.lines().any(|line| {
            line.split(kw).nth(1).is_some_and(|rest| {
                let rest = rest.trim_start();
                rest.strip_prefix(name).is_some_and(|after| {
                    !after.starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '-')
                })
            })
        })
    };
    marks("ANCHOR:") && marks("ANCHOR_END:")
}

/// Where an image link of a chapter points on disk: `images/...` (after any `../`) is the
/// workspace's `images/` folder, which `cargo xtask book` copies next to the HTML; anything
/// else is relative to the chapter.
pub fn image_source(root: &Path, chapter: &Path, link: &str) -> PathBuf {
    let in_src = chapter
        .parent()
        .unwrap_or(Path::new(""))
        .strip_prefix(BOOK_SRC)
        .unwrap_or(Path::new(""))
        .join(link);
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for part in in_src.components() {
        match part {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(p) => parts.push(p),
            _ => {}
        }
    }
    let resolved: PathBuf = parts.iter().collect();
    match resolved.strip_prefix("images") {
        Ok(rest) => root.join("images").join(rest),
        Err(_) => root.join(BOOK_SRC).join(resolved),
    }
}

/// Local images exist.
fn check_images(root: &Path, file: &Path, text: &str) -> Vec<Problem> {
    use pulldown_cmark::{Event, Options, Parser, Tag};
    Parser::new_ext(text, Options::all())
        .into_offset_iter()
        .filter_map(|(event, span)| match event {
            Event::Start(Tag::Image { dest_url, .. }) => Some((dest_url.to_string(), span)),
            _ => None,
        })
        .filter(|(url, _)| !url.contains("://"))
        .filter(|(url, _)| !image_source(root, file, url).is_file())
        .map(|(url, span)| {
            problem(
                file,
                line_of(text, span.start),
                format!("image `{url}` does not exist"),
            )
        })
        .collect()
}

/// Rustdoc's code-block attributes: a fence whose first word is one of these is Rust.
const RUSTDOC_ATTRIBUTES: &[&str] = &[
    "rust",
    "ignore",
    "should_panic",
    "no_run",
    "compile_fail",
    "edition2015",
    "edition2018",
    "edition2021",
    "edition2024",
];

/// Every code block is fenced and labeled; `ignore` is only for `{{#include}}` excerpts of
/// library code (which the crate itself compiles and tests).
fn check_fences(file: &Path, text: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    for block in code_blocks(text) {
        let Some(info) = block.info.as_deref() else {
            problems.push(problem(file, block.line, "indented code block: rustdoc compiles it as Rust; use a fence with a language (```text)"));
            continue;
        };
        let words: Vec<&str> = info
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        let Some(first) = words.first() else {
            problems.push(problem(file, block.line, "unlabeled fence: rustdoc compiles it as Rust; label it (```text, ```console, ```rust)"));
            continue;
        };
        if !RUSTDOC_ATTRIBUTES.contains(first) {
            continue;
        }
        let only_includes = block.body.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with("{{#include ") || l.starts_with("{{#rustdoc_include ")
        });
        let has_include =
            block.body.contains("{{#include ") || block.body.contains("{{#rustdoc_include ");
        if words.contains(&"ignore") && !only_includes {
            problems.push(problem(file, block.line, "`ignore` hides a listing from the tests; it is only for blocks that are nothing but `{{#include}}` of crate code"));
        } else if has_include && !words.contains(&"ignore") {
            problems.push(problem(file, block.line, "a Rust block made of `{{#include}}` must be `rust,ignore` (rustdoc cannot expand includes; the crate compiles that code)"));
        }
    }
    problems
}

/// Bench markers are well-formed and each region shows what `benchmarks/` holds.
fn check_bench_regions(root: &Path, file: &Path, text: &str) -> Vec<Problem> {
    let regions = match inject::regions(text) {
        Ok(regions) => regions,
        Err(e) => return vec![problem(file, 0, e.to_string())],
    };
    let mut problems = Vec::new();
    for region in regions {
        match bench_file::render(root, &region.name) {
            Ok(rendered) => {
                let want = format!("\n\n{}\n\n", rendered.trim());
                if text[region.body.clone()] != want {
                    problems.push(problem(
                        file,
                        region.line,
                        format!(
                            "table `{}` is stale: run `cargo xtask inject` (or `cargo xtask book`)",
                            region.name
                        ),
                    ));
                }
            }
            Err(e) => problems.push(problem(file, region.line, format!("{e:#}"))),
        }
    }
    problems
}

/// A measured-looking figure typed into prose ("12 GB/s", "35 tok/s") outside the injected
/// regions and tables: figures must come from `benchmarks/`.
fn check_typed_numbers(file: &Path, text: &str) -> Vec<Problem> {
    let pattern =
        regex::Regex::new(r"[0-9][0-9.,]* ?(tok/s|tokens/s|ms|µs|GB/s|MB/s|GFLOP/s|x faster)\b")
            .expect("valid pattern");
    let regions = inject::regions(text).unwrap_or_default();
    let in_region = |pos: usize| regions.iter().any(|r| r.body.contains(&pos));
    let mut problems = Vec::new();
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += line.len();
        if line.trim_start().starts_with('|') || in_region(start) || line.contains("<!-- bench") {
            continue;
        }
        if let Some(m) = pattern.find(line) {
            problems.push(problem(
                file,
                i + 1,
                format!("`{}` looks like a measured figure typed by hand: inject it from benchmarks/ instead", m.as_str()),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_include_directives_and_skips_escaped_ones() {
        let text =
            "a\n{{#include ../x.rs:anchor}}\n\\{{#include ../y.rs}}\n{{#include ../z.rs:3:9}}\n";
        let found = includes(text);
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[0],
            Include {
                path: "../x.rs".into(),
                selector: Some("anchor".into()),
                line: 2
            }
        );
        assert_eq!(found[1].selector.as_deref(), Some("3:9"));
    }

    #[test]
    fn anchors_must_be_opened_and_closed_with_the_exact_name() {
        let src = "// ANCHOR: dot\nfn dot() {}\n// ANCHOR_END: dot\n// ANCHOR: dot_simd\n";
        assert!(has_anchor(src, "dot"));
        assert!(!has_anchor(src, "dot_simd"), "never closed");
        assert!(!has_anchor(src, "do"), "prefix of another name");
    }

    #[test]
    fn fences_need_labels_and_ignore_is_for_includes_only() {
        let file = Path::new("c.md");
        let ok = "```rust\nassert!(true);\n```\n\n```rust,ignore\n{{#include ../x.rs:a}}\n```\n\n```text\nhi\n```\n";
        assert!(check_fences(file, ok).is_empty());
        let bad = "```\nplain\n```\n\n```rust,ignore\nlet x = 1;\n```\n\n```rust\n{{#include ../x.rs:a}}\n```\n\n    indented\n";
        let lines: Vec<usize> = check_fences(file, bad).iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![1, 5, 9, 13]);
    }

    #[test]
    fn typed_figures_are_flagged_outside_tables_and_regions() {
        let file = Path::new("c.md");
        let text = "We reach 35 tok/s here.\n| 12 GB/s | table |\n<!-- bench:x -->\n40 ms\n<!-- /bench -->\nno numbers\n";
        let found = check_typed_numbers(file, text);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, 1);
    }

    #[test]
    fn images_resolve_to_the_workspace_images_folder() {
        let root = Path::new("/r");
        let chapter = Path::new("book/src/week1/hardware.md");
        assert_eq!(
            image_source(root, chapter, "../images/a.svg"),
            Path::new("/r/images/a.svg")
        );
        assert_eq!(
            image_source(root, Path::new("book/src/introduction.md"), "images/a.svg"),
            Path::new("/r/images/a.svg")
        );
        assert_eq!(
            image_source(root, chapter, "pic.png"),
            Path::new("/r/book/src/week1/pic.png")
        );
    }

    #[test]
    fn summary_links_are_listed_with_lines() {
        let text =
            "# Summary\n\n[Intro](introduction.md)\n\n- [HW](week1/hardware.md)\n- [Draft]()\n";
        assert_eq!(
            summary_entries(text),
            vec![
                ("introduction.md".to_string(), 3),
                ("week1/hardware.md".to_string(), 5)
            ]
        );
    }
}
