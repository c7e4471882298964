//! Byte-level BPE, built from the model file's own vocabulary and merge list.
//!
//! Encoding: special tokens are cut out first (when asked), the rest is pre-tokenized into
//! pieces, each piece's bytes become byte-level characters, and merges are applied — always
//! the pair with the lowest merge rank, leftmost first — until none applies.

use super::byte_level::byte_to_char_table;
use super::pretokenize::{self, PreTokenizer};
use crate::formats::{Gguf, GgufError};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::ops::Range;

/// Token id.
pub type TokenId = u32;

/// Why a tokenizer could not be built from a model file.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("tokenizer model `{0}` is not supported (only byte-level BPE, `gpt2`)")]
    UnsupportedModel(String),
    #[error(
        "pre-tokenizer `{0}` is not supported (smollm, starcoder, refact, codeshell, gpt2, default)"
    )]
    UnsupportedPreTokenizer(String),
    #[error("the vocabulary is empty")]
    EmptyVocabulary,
    #[error("token id {id} in `{key}` is outside the vocabulary of {size} tokens")]
    BadTokenId { key: String, id: i64, size: usize },
    #[error("token types ({types}) and tokens ({tokens}) differ in number")]
    TypeCountMismatch { types: usize, tokens: usize },
    #[error("token {0} decodes to nothing: the vocabulary lacks its byte")]
    MissingByte(u8),
}

/// GGUF token types (`tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Normal,
    Unknown,
    /// `<|im_start|>` and friends: never produced by BPE, only by name.
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    fn from_gguf(t: i64) -> TokenKind {
        match t {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }

    /// Control and user-defined tokens are matched by their text when parsing specials.
    pub fn is_special(self) -> bool {
        matches!(self, TokenKind::Control | TokenKind::UserDefined)
    }
}

/// A byte-level BPE tokenizer.
pub struct Tokenizer {
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    ids: HashMap<String, TokenId>,
    /// (left, right) → (rank, merged token).
    merges: HashMap<(TokenId, TokenId), (u32, TokenId)>,
    /// Token of each byte's byte-level character.
    byte_tokens: [Option<TokenId>; 256],
    /// Byte of each byte-level character (inverse of the table).
    char_bytes: HashMap<char, u8>,
    /// Special tokens by text, longest first (so the longest match wins).
    specials: Vec<(String, TokenId)>,
    /// For each first byte, the indices into `specials` of the tokens starting with it
    /// (longest first): the special-token scan looks only where one can start.
    specials_by_first_byte: Vec<Vec<usize>>,
    pre: PreTokenizer,
    /// The most bytes of text one token can stand for, when every byte has a token (or
    /// `<unk>`): a text of `n` bytes then needs at least `n / longest` tokens.
    longest_token_bytes: Option<usize>,
    pub bos: Option<TokenId>,
    pub eos: Option<TokenId>,
    pub unknown: Option<TokenId>,
    /// Whether the model wants a BOS token at the start of a prompt.
    pub add_bos: bool,
    /// `tokenizer.chat_template`, if the file has one.
    pub chat_template: Option<String>,
}

impl Tokenizer {
    // ANCHOR: from_gguf
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer, TokenizerError> {
        let model = g.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.into()));
        }
        let pre = g.get_str("tokenizer.ggml.pre").unwrap_or("default");
        let split_digits = pretokenize::known(pre)
            .ok_or_else(|| TokenizerError::UnsupportedPreTokenizer(pre.into()))?;
        let tokens: Vec<String> = g
            .get_str_array("tokenizer.ggml.tokens")?
            .into_iter()
            .map(String::from)
            .collect();
        let kinds = match g.get("tokenizer.ggml.token_type") {
            Some(_) => g
                .get_int_array("tokenizer.ggml.token_type")?
                .into_iter()
                .map(TokenKind::from_gguf)
                .collect(),
            None => vec![TokenKind::Normal; tokens.len()],
        };
        let merges = g.get_str_array("tokenizer.ggml.merges")?;
        let optional_id = |key: &str| -> Result<Option<TokenId>, TokenizerError> {
            match g.get(key) {
                None => Ok(None),
                Some(_) => {
                    let id = g.get_u64(key)?;
                    if id as usize >= tokens.len() {
                        return Err(TokenizerError::BadTokenId {
                            key: key.into(),
                            id: id as i64,
                            size: tokens.len(),
                        });
                    }
                    Ok(Some(id as TokenId))
                }
            }
        };
        let bos = optional_id("tokenizer.ggml.bos_token_id")?;
        let eos = optional_id("tokenizer.ggml.eos_token_id")?;
        let unknown = optional_id("tokenizer.ggml.unknown_token_id")?;
        let add_bos = matches!(
            g.get("tokenizer.ggml.add_bos_token"),
            Some(crate::formats::Value::Bool(true))
        );
        let chat_template = g.get_str("tokenizer.chat_template").ok().map(String::from);
        Tokenizer::new(
            tokens,
            kinds,
            &merges,
            split_digits,
            bos,
            eos,
            unknown,
            add_bos,
            chat_template,
        )
    }
    // ANCHOR_END: from_gguf

    /// Builds a tokenizer from its parts (the vocabulary, token kinds, and merges as
    /// `"left right"` strings in rank order).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tokens: Vec<String>,
        kinds: Vec<TokenKind>,
        merges: &[&str],
        split_digits: bool,
        bos: Option<TokenId>,
        eos: Option<TokenId>,
        unknown: Option<TokenId>,
        add_bos: bool,
        chat_template: Option<String>,
    ) -> Result<Tokenizer, TokenizerError> {
        if tokens.is_empty() {
            return Err(TokenizerError::EmptyVocabulary);
        }
        if kinds.len() != tokens.len() {
            return Err(TokenizerError::TypeCountMismatch {
                types: kinds.len(),
                tokens: tokens.len(),
            });
        }
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            // The first occurrence wins if a vocabulary repeats a string.
            ids.entry(t.clone()).or_insert(i as TokenId);
        }
        let mut merge_map = HashMap::with_capacity(merges.len());
        let mut joined = String::new();
        for (rank, m) in merges.iter().enumerate() {
            let Some((left, right)) = m.split_once(' ') else {
                continue;
            };
            joined.clear();
            joined.push_str(left);
            joined.push_str(right);
            let (Some(&l), Some(&r), Some(&merged)) =
                (ids.get(left), ids.get(right), ids.get(joined.as_str()))
            else {
                continue; // a merge whose result is not a token can never apply
            };
            merge_map.entry((l, r)).or_insert((rank as u32, merged));
        }
        let table = byte_to_char_table();
        let mut byte_tokens = [None; 256];
        let mut char_bytes = HashMap::with_capacity(256);
        for (b, &c) in table.iter().enumerate() {
            byte_tokens[b] = ids.get(c.to_string().as_str()).copied();
            char_bytes.insert(c, b as u8);
        }
        let mut specials: Vec<(String, TokenId)> = tokens
            .iter()
            .enumerate()
            .filter(|(i, t)| kinds[*i].is_special() && !t.is_empty())
            .map(|(i, t)| (t.clone(), i as TokenId))
            .collect();
        specials.sort_by_key(|(t, _)| Reverse(t.len()));
        let mut specials_by_first_byte = vec![Vec::new(); 256];
        for (i, (text, _)) in specials.iter().enumerate() {
            specials_by_first_byte[text.as_bytes()[0] as usize].push(i);
        }
        let every_byte_encodes = unknown.is_some() || byte_tokens.iter().all(Option::is_some);
        let longest_token_bytes =
            every_byte_encodes.then(|| tokens.iter().map(String::len).max().unwrap_or(1).max(1));
        Ok(Tokenizer {
            tokens,
            kinds,
            ids,
            merges: merge_map,
            byte_tokens,
            char_bytes,
            specials,
            specials_by_first_byte,
            pre: PreTokenizer::new(split_digits),
            longest_token_bytes,
            bos,
            eos,
            unknown,
            add_bos,
            chat_template,
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The most bytes of text one token stands for (a token's vocabulary string is never
    /// shorter than its bytes), or `None` if some byte has no token: then a text's byte length
    /// bounds nothing. The server refuses a prompt too long by this bound before tokenizing it.
    pub fn longest_token_bytes(&self) -> Option<usize> {
        self.longest_token_bytes
    }

    /// The vocabulary string of a token (byte-level characters), if the id exists.
    pub fn token_str(&self, id: TokenId) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a vocabulary string.
    pub fn token_id(&self, text: &str) -> Option<TokenId> {
        self.ids.get(text).copied()
    }

    /// The kind of a token.
    pub fn kind(&self, id: TokenId) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    // ANCHOR: encode
    /// Token ids of `text`. With `parse_special`, the text of special tokens (`<|im_start|>`)
    /// becomes those tokens; without, it is ordinary text. No BOS is added here.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<TokenId> {
        self.encode_with_text_ranges(text, parse_special.then_some(&[]))
    }

    /// Token ids of `text`, parsing special tokens everywhere except inside `text_ranges`
    /// (byte ranges, sorted and disjoint), where their spelling is ordinary text; `None`
    /// parses no specials at all. The chat encoder passes the messages' content here, so that
    /// only the template's own markers become control tokens. Linear in `text.len()`.
    pub fn encode_with_text_ranges(
        &self,
        text: &str,
        text_ranges: Option<&[Range<usize>]>,
    ) -> Vec<TokenId> {
        let mut ids = Vec::with_capacity(text.len() / 3);
        let mut pos = 0;
        while pos < text.len() {
            let special = text_ranges.and_then(|r| self.find_special(text, pos, r));
            let plain_end = special.map_or(text.len(), |(at, _, _)| at);
            for piece in self.pre.split(&text[pos..plain_end]) {
                self.encode_piece(piece, &mut ids);
            }
            match special {
                Some((at, len, id)) => {
                    ids.push(id);
                    pos = at + len;
                }
                None => break,
            }
        }
        ids
    }
    // ANCHOR_END: encode

    // ANCHOR: find_special
    /// The earliest special token in `text[from..]` that overlaps none of `text_ranges`,
    /// longest at that position: (byte offset, length, id). One pass over the bytes; at each
    /// byte only the specials that start with it are tried, so the whole encode stays linear
    /// even for a body made of nothing but `<|im_end|>`.
    fn find_special(
        &self,
        text: &str,
        from: usize,
        text_ranges: &[Range<usize>],
    ) -> Option<(usize, usize, TokenId)> {
        let bytes = text.as_bytes();
        for at in from..bytes.len() {
            for &i in &self.specials_by_first_byte[bytes[at] as usize] {
                let (special, id) = &self.specials[i];
                let end = at + special.len();
                if bytes[at..].starts_with(special.as_bytes())
                    && !overlaps_any(text_ranges, at..end)
                {
                    return Some((at, special.len(), *id));
                }
            }
        }
        None
    }
    // ANCHOR_END: find_special

    // ANCHOR: merge
    /// BPE on one piece: start from one token per byte, then repeatedly merge the adjacent
    /// pair with the lowest rank (leftmost on ties). A heap of candidate pairs keeps this
    /// O(n log n) even for long pieces.
    fn encode_piece(&self, piece: &str, out: &mut Vec<TokenId>) {
        let mut symbols: Vec<TokenId> = Vec::with_capacity(piece.len());
        for &b in piece.as_bytes() {
            match self.byte_tokens[b as usize].or(self.unknown) {
                Some(id) => symbols.push(id),
                None => continue, // a vocabulary without this byte and without <unk>
            }
        }
        let n = symbols.len();
        // Doubly linked list over positions; a merged-away position is marked dead.
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        let candidate = |l: usize, r: usize, symbols: &[TokenId]| {
            self.merges
                .get(&(symbols[l], symbols[r]))
                .map(|&(rank, merged)| Reverse((rank, l, r, merged)))
        };
        for i in 1..n {
            heap.extend(candidate(i - 1, i, &symbols));
        }
        while let Some(Reverse((rank, l, r, merged))) = heap.pop() {
            // Skip stale candidates: a side was merged away or the pair changed.
            if !alive[l] || !alive[r] || next[l] != r {
                continue;
            }
            if self.merges.get(&(symbols[l], symbols[r])) != Some(&(rank, merged)) {
                continue;
            }
            symbols[l] = merged;
            alive[r] = false;
            next[l] = next[r];
            if next[r] < n {
                prev[next[r]] = l;
            }
            if prev[l] < n {
                heap.extend(candidate(prev[l], l, &symbols));
            }
            if next[l] < n {
                heap.extend(candidate(l, next[l], &symbols));
            }
        }
        out.extend((0..n).filter(|&i| alive[i]).map(|i| symbols[i]));
    }
    // ANCHOR_END: merge

    /// The bytes a token stands for. Special tokens give their text when `render_special`,
    /// nothing otherwise; unknown ids give nothing.
    pub fn token_bytes(&self, id: TokenId, render_special: bool) -> Vec<u8> {
        let (Some(text), Some(kind)) = (self.token_str(id), self.kind(id)) else {
            return Vec::new();
        };
        if kind.is_special() || kind == TokenKind::Control {
            return if render_special {
                text.as_bytes().to_vec()
            } else {
                Vec::new()
            };
        }
        let mut bytes = Vec::with_capacity(text.len());
        for c in text.chars() {
            match self.char_bytes.get(&c) {
                Some(&b) => bytes.push(b),
                // Not a byte-level character: keep its UTF-8 (what llama.cpp does too).
                None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        bytes
    }

    /// Text of a whole sequence (invalid UTF-8 becomes U+FFFD).
    pub fn decode(&self, ids: &[TokenId], render_special: bool) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| self.token_bytes(id, render_special))
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Whether `span` shares a byte with any of `ranges` (sorted, disjoint).
fn overlaps_any(ranges: &[Range<usize>], span: Range<usize>) -> bool {
    // The first range ending after the span starts is the only one that can overlap it.
    let i = ranges.partition_point(|r| r.end <= span.start);
    ranges.get(i).is_some_and(|r| r.start < span.end)
}
