//! Pre-tokenization: cut text into pieces before BPE, so merges never cross a word boundary.
//! The rules come from the model's `tokenizer.ggml.pre`; SmolLM's are GPT-2's regex after
//! isolating every digit (so numbers are tokenized digit by digit).

use fancy_regex::Regex;

// ANCHOR: gpt2_regex
/// GPT-2's pre-tokenizer pattern (as in Hugging Face `tokenizers`' ByteLevel): contractions,
/// optional space + letters, optional space + digits, optional space + other symbols,
/// whitespace not followed by a non-space, other whitespace.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
// ANCHOR_END: gpt2_regex

/// How a model cuts text before BPE.
pub struct PreTokenizer {
    regex: Regex,
    split_digits: bool,
}

/// `tokenizer.ggml.pre` values we implement, and whether they isolate digits.
pub fn known(pre: &str) -> Option<bool> {
    match pre {
        "smollm" | "starcoder" | "refact" | "codeshell" => Some(true),
        "gpt2" | "default" | "gpt-2" => Some(false),
        _ => None,
    }
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value we know (see [`known`]).
    pub fn new(split_digits: bool) -> PreTokenizer {
        PreTokenizer {
            regex: Regex::new(GPT2_PATTERN).expect("the GPT-2 pattern compiles"),
            split_digits,
        }
    }

    /// The pieces of `text`, in order; their concatenation is `text`.
    pub fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces = Vec::new();
        let segments: Vec<&str> = if self.split_digits {
            isolate_digits(text)
        } else {
            vec![text]
        };
        for segment in segments {
            let mut last = 0;
            for m in self.regex.find_iter(segment).flatten() {
                if m.start() > last {
                    pieces.push(&segment[last..m.start()]);
                }
                pieces.push(m.as_str());
                last = m.end();
            }
            if last < segment.len() {
                pieces.push(&segment[last..]);
            }
        }
        pieces
    }
}

/// Cuts `text` so that every numeric character (Unicode category N) is a piece of its own.
fn isolate_digits(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c.is_numeric() {
            if start < i {
                out.push(&text[start..i]);
            }
            out.push(&text[i..i + c.len_utf8()]);
            start = i + c.len_utf8();
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_gpt2_with_isolated_digits() {
        let p = PreTokenizer::new(true);
        assert_eq!(p.split("Hello, world!"), vec!["Hello", ",", " world", "!"]);
        assert_eq!(
            p.split("  leading\ttabs\n\nnew"),
            vec![" ", " leading", "\t", "tabs", "\n", "\n", "new"]
        );
        assert_eq!(
            p.split("about 311 million"),
            vec!["about", " ", "3", "1", "1", " million"]
        );
        assert_eq!(p.split("it's"), vec!["it", "'s"]);
        assert_eq!(p.split(""), Vec::<&str>::new());
        let text = "naïve café — déjà vu 日本語 ٣ ok  ";
        assert_eq!(p.split(text).concat(), text);
    }
}
