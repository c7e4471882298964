//! The tokenizer on hand-made vocabularies, and on the course model against llama.cpp.

use super::*;
use crate::formats::Gguf;

/// A toy vocabulary: bytes of "abc " plus merges "a b" → "ab", "ab c" → "abc", "Ġ a" → "Ġa".
fn toy() -> Tokenizer {
    let tokens: Vec<String> = ["<s>", "a", "b", "c", "Ġ", "ab", "abc", "Ġa", "<|x|>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut kinds = vec![TokenKind::Normal; tokens.len()];
    kinds[0] = TokenKind::Control;
    kinds[8] = TokenKind::Control;
    Tokenizer::new(
        tokens,
        kinds,
        &["a b", "ab c", "Ġ a"],
        true,
        Some(0),
        Some(0),
        None,
        false,
        None,
    )
    .unwrap()
}

#[test]
fn merges_apply_by_rank() {
    let t = toy();
    assert_eq!(t.encode("abc", false), vec![6]);
    assert_eq!(t.encode("abcab", false), vec![6, 5]);
    assert_eq!(t.encode("cab a", false), vec![3, 5, 7]);
    assert_eq!(t.decode(&t.encode("cab a", false), false), "cab a");
}

#[test]
fn special_tokens_are_parsed_only_when_asked() {
    let t = toy();
    assert_eq!(t.encode("ab<|x|>c", true), vec![5, 8, 3]);
    let plain = t.encode("ab<|x|>c", false);
    assert!(!plain.contains(&8));
    assert_eq!(t.decode(&[5, 8, 3], true), "ab<|x|>c");
    assert_eq!(t.decode(&[5, 8, 3], false), "abc");
}

#[test]
fn stream_decoder_never_splits_a_character() {
    // A vocabulary of single bytes only: "é" (C3 A9) arrives in two tokens.
    let table = super::byte_level::byte_to_char_table();
    let tokens: Vec<String> = table.iter().map(|c| c.to_string()).collect();
    let t = Tokenizer::new(
        tokens,
        vec![TokenKind::Normal; 256],
        &[],
        false,
        None,
        None,
        None,
        false,
        None,
    )
    .unwrap();
    let ids = t.encode("é日", false);
    assert_eq!(ids.len(), 5);
    let mut d = StreamDecoder::new();
    let outs: Vec<String> = ids.iter().map(|&id| d.push(&t, id)).collect();
    assert_eq!(outs, vec!["", "é", "", "", "日"]);
    // An invalid byte becomes U+FFFD and the stream goes on; a cut character is flushed at the end.
    assert_eq!(d.push(&t, 0xFF), "\u{FFFD}");
    assert_eq!(d.push(&t, 0xE6), "");
    assert_eq!(d.pending_len(), 1);
    assert_eq!(d.finish(), "\u{FFFD}");
}

#[test]
fn long_pieces_tokenize_quickly() {
    let t = toy();
    let text = "ab".repeat(50_000);
    let start = std::time::Instant::now();
    assert_eq!(t.encode(&text, false).len(), 50_000);
    // Not a timing assertion on speed, only a guard against quadratic blow-up (seconds).
    assert!(start.elapsed().as_secs() < 20);
}

fn model_tokenizer() -> Option<Tokenizer> {
    let path = crate::assets::model_for_tests()?;
    Some(Tokenizer::from_gguf(&Gguf::open(path).unwrap()).unwrap())
}

#[test]
fn reference_tokenizations_match_llama_cpp() {
    let Some(t) = model_tokenizer() else { return };
    let reference = crate::reference::get();
    for case in &reference.tokenizer {
        assert_eq!(t.encode(&case.text, true), case.ids, "{:?}", case.text);
        assert_eq!(t.decode(&case.ids, true), case.text);
    }
    let france = crate::reference::france();
    assert_eq!(t.encode(&france.prompt, true), france.prompt_ids);
    assert_eq!(t.decode(&france.greedy_ids, true), france.greedy_text);
}

#[test]
fn the_model_file_configures_the_tokenizer() {
    let Some(t) = model_tokenizer() else { return };
    assert_eq!(t.vocab_size(), 49_152);
    assert_eq!((t.bos, t.eos), (Some(1), Some(2)));
    assert!(!t.add_bos);
    assert_eq!(
        t.encode("<|im_start|>user<|im_end|>", true),
        vec![1, 4093, 2]
    );
}

#[test]
fn chat_template_from_the_model_renders_chatml() {
    let Some(t) = model_tokenizer() else { return };
    let prompt = t
        .apply_chat_template(&[ChatMessage::new("user", "Hi!")], true)
        .unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    );
    let with_system = t
        .apply_chat_template(
            &[
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Hi!"),
            ],
            false,
        )
        .unwrap();
    assert_eq!(
        with_system,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
    );
}
