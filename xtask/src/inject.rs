//! Benchmark injection: the text between `<!-- bench:NAME -->` and `<!-- /bench -->` in a
//! chapter is replaced by the rendering of `benchmarks/NAME.json`. Only those regions change;
//! markers inside code (fenced, indented or inline) are ignored; an unclosed, unopened or
//! nested marker is an error that names the file's line.

use crate::markdown::{code_ranges, inside, line_of};
use std::ops::Range;

/// One marked region of a chapter.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub name: String,
    /// Bytes between the end of the opening marker and the start of the closing one.
    pub body: Range<usize>,
    /// 1-based line of the opening marker.
    pub line: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MarkerError {
    #[error("line {line}: `<!-- bench:{name} -->` is never closed by `<!-- /bench -->`")]
    Unclosed { name: String, line: usize },
    #[error("line {line}: `<!-- /bench -->` without an opening `<!-- bench:NAME -->`")]
    Unopened { line: usize },
    #[error(
        "line {line}: `<!-- bench:{name} -->` opens inside the region `{outer}` (regions cannot nest)"
    )]
    Nested {
        name: String,
        outer: String,
        line: usize,
    },
    #[error("line {line}: `<!-- bench: -->` needs a name made of letters, digits, `-` and `_`")]
    BadName { line: usize },
}

enum Marker {
    Open(String),
    Close,
}

/// The marked regions of `text`, in order.
pub fn regions(text: &str) -> Result<Vec<Region>, MarkerError> {
    let code = code_ranges(text);
    let mut found = Vec::new();
    let mut open: Option<(String, usize, usize)> = None; // (name, body start, line)
    let mut from = 0;
    while let Some(rel) = text[from..].find("<!--") {
        let start = from + rel;
        let Some(len) = text[start..].find("-->") else {
            break;
        };
        let end = start + len + 3;
        from = end;
        if inside(&code, start) {
            continue;
        }
        let line = line_of(text, start);
        let marker = match text[start + 4..end - 3].trim() {
            "/bench" => Marker::Close,
            inner => match inner.strip_prefix("bench:") {
                Some(name) => {
                    let name = name.trim();
                    let valid = !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                    if !valid {
                        return Err(MarkerError::BadName { line });
                    }
                    Marker::Open(name.to_string())
                }
                None => continue,
            },
        };
        match (marker, open.take()) {
            (Marker::Open(name), None) => open = Some((name, end, line)),
            (Marker::Open(name), Some((outer, _, _))) => {
                return Err(MarkerError::Nested { name, outer, line });
            }
            (Marker::Close, Some((name, body_start, open_line))) => found.push(Region {
                name,
                body: body_start..start,
                line: open_line,
            }),
            (Marker::Close, None) => return Err(MarkerError::Unopened { line }),
        }
    }
    match open {
        Some((name, _, line)) => Err(MarkerError::Unclosed { name, line }),
        None => Ok(found),
    }
}

/// `text` with every region's body replaced by `render(name)`, framed by blank lines.
/// Applying it twice gives the same text as applying it once.
pub fn inject(text: &str, mut render: impl FnMut(&str) -> String) -> Result<String, MarkerError> {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for region in regions(text)? {
        out.push_str(&text[copied..region.body.start]);
        out.push_str("\n\n");
        out.push_str(render(&region.name).trim());
        out.push_str("\n\n");
        copied = region.body.end;
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(name: &str) -> String {
        format!("| {name} |\n|---|\n")
    }

    #[test]
    fn replaces_only_the_marked_region() {
        let text = "# A\n\nbefore\n<!-- bench:x -->\nold stuff\n<!-- /bench -->\nafter\n";
        let out = inject(text, render).unwrap();
        assert_eq!(
            out,
            "# A\n\nbefore\n<!-- bench:x -->\n\n| x |\n|---|\n\n<!-- /bench -->\nafter\n"
        );
    }

    #[test]
    fn is_idempotent() {
        let text = "a\n<!-- bench:one -->\n<!-- /bench -->\nb\n<!-- bench:two --><!-- /bench -->";
        let once = inject(text, render).unwrap();
        assert_eq!(inject(&once, render).unwrap(), once);
    }

    #[test]
    fn ignores_markers_in_code() {
        let text = "```text\n<!-- bench:x -->\n```\n\nUse `<!-- bench:NAME -->` like this.\n\n    <!-- /bench -->\n";
        assert_eq!(inject(text, render).unwrap(), text);
    }

    #[test]
    fn reports_bad_markers_with_their_line() {
        assert_eq!(
            regions("a\n\n<!-- bench:x -->\nno end\n"),
            Err(MarkerError::Unclosed {
                name: "x".into(),
                line: 3
            })
        );
        assert_eq!(
            regions("<!-- /bench -->"),
            Err(MarkerError::Unopened { line: 1 })
        );
        assert!(matches!(
            regions("<!-- bench:a -->\n<!-- bench:b -->\n<!-- /bench -->"),
            Err(MarkerError::Nested { line: 2, .. })
        ));
        assert_eq!(
            regions("<!-- bench:bad name -->"),
            Err(MarkerError::BadName { line: 1 })
        );
    }

    #[test]
    fn leaves_other_comments_alone() {
        let text = "<!-- a note -->\n<!-- bench:x -->\n<!-- /bench -->\n";
        assert_eq!(regions(text).unwrap().len(), 1);
    }
}
