//! Our tokenizer against an independent implementation: Hugging Face `tokenizers`, built from
//! the same vocabulary and merges (read from the GGUF file) with SmolLM's pre-tokenizer
//! (isolated digits, then GPT-2's byte-level split). Both must give the same ids on a large,
//! varied text.

use chapters_code::formats::Gguf;
use chapters_code::tokenizer::Tokenizer;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper};

fn hugging_face(g: &Gguf) -> tokenizers::Tokenizer {
    let tokens = g.get_str_array("tokenizer.ggml.tokens").unwrap();
    let mut vocab = Vocab::new();
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.to_string(), i as u32);
    }
    let merges = g
        .get_str_array("tokenizer.ggml.merges")
        .unwrap()
        .iter()
        .map(|m| {
            let (a, b) = m.split_once(' ').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .unwrap();
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let pre = Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ]);
    tk.with_pre_tokenizer(Some(pre));
    tk.with_decoder(Some(ByteLevel::default()));
    let types = g.get_int_array("tokenizer.ggml.token_type").unwrap();
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| **t == 3)
        .map(|(s, _)| AddedToken::from(s.to_string(), true))
        .collect();
    tk.add_special_tokens(specials).unwrap();
    tk
}

#[test]
fn same_ids_as_hugging_face_tokenizers_on_a_large_text() {
    let (Some(model), Some(text)) = (
        chapters_code::assets::model_for_tests(),
        chapters_code::assets::perplexity_text_for_tests(),
    ) else {
        return;
    };
    let g = Gguf::open(model).unwrap();
    let ours = Tokenizer::from_gguf(&g).unwrap();
    let theirs = hugging_face(&g);
    let mut samples = vec![std::fs::read_to_string(text).unwrap()];
    samples.push(
        "Numbers 1234567 and 3.14159, emoji 🦀🚀, accents naïve café, CJK 日本語のテキスト, Greek αβγ, \
         Cyrillic привет, Arabic مرحبا, tabs\t\tand   spaces   \n\n\n new lines, symbols <>&%$#@!, \
         code: fn main() { println!(\"{}\", x); } and <|im_start|>user\nHi<|im_end|>"
            .to_string(),
    );
    for (i, text) in samples.iter().enumerate() {
        let want = theirs
            .encode(text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        let got = ours.encode(text, true);
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
        assert!(
            got == want,
            "sample {i}: {} vs {} tokens, first difference at {first_diff:?}",
            got.len(),
            want.len()
        );
        if i == 0 {
            assert!(
                got.len() > 70_000,
                "the large text gives {} tokens",
                got.len()
            );
        }
    }
}
