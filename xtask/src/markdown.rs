//! What we need to know about a Markdown file's structure: where its code is (fenced blocks,
//! indented blocks, inline code), so that markers and directives inside code are left alone.

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};
use std::ops::Range;

/// One fenced or indented code block.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeBlock {
    /// Info string of a fenced block (`rust,ignore`); `None` for an indented block.
    pub info: Option<String>,
    /// The code inside, as written.
    pub body: String,
    /// Byte range of the whole block, fences included.
    pub span: Range<usize>,
    /// 1-based line of the block's first line.
    pub line: usize,
}

/// The code blocks of `text`, in order.
pub fn code_blocks(text: &str) -> Vec<CodeBlock> {
    let mut blocks = Vec::new();
    let mut current: Option<CodeBlock> = None;
    for (event, span) in Parser::new_ext(text, Options::all()).into_offset_iter() {
        match event {
            Event::Start(Tag::CodeBlock(kind)) => {
                current = Some(CodeBlock {
                    info: match kind {
                        CodeBlockKind::Fenced(info) => Some(info.to_string()),
                        CodeBlockKind::Indented => None,
                    },
                    body: String::new(),
                    line: line_of(text, span.start),
                    span,
                });
            }
            Event::Text(t) => {
                if let Some(block) = current.as_mut() {
                    block.body.push_str(&t);
                }
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some(block) = current.take() {
                    blocks.push(block);
                }
            }
            _ => {}
        }
    }
    blocks
}

/// Byte ranges of all code in `text`: blocks and inline code spans.
pub fn code_ranges(text: &str) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = Parser::new_ext(text, Options::all())
        .into_offset_iter()
        .filter_map(|(event, span)| match event {
            Event::Start(Tag::CodeBlock(_)) | Event::Code(_) => Some(span),
            _ => None,
        })
        .collect();
    ranges.sort_by_key(|r| r.start);
    ranges
}

/// Whether byte `pos` lies inside one of `ranges`.
pub fn inside(ranges: &[Range<usize>], pos: usize) -> bool {
    ranges.iter().any(|r| r.contains(&pos))
}

/// 1-based line number of byte `pos`.
pub fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fenced_and_indented_blocks_with_lines() {
        let text = "# T\n\n```rust,ignore\nlet x = 1;\n```\n\n    indented\n\nand `inline` code\n";
        let blocks = code_blocks(text);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].info.as_deref(), Some("rust,ignore"));
        assert_eq!(blocks[0].body, "let x = 1;\n");
        assert_eq!(blocks[0].line, 3);
        assert_eq!(blocks[1].info, None);
        assert_eq!(blocks[1].line, 7);
        let ranges = code_ranges(text);
        assert_eq!(ranges.len(), 3);
        assert!(inside(&ranges, text.find("inline").unwrap()));
        assert!(!inside(&ranges, text.find("and").unwrap()));
    }
}
