//! llama.cpp's outputs for the course model (`tests/reference/smollm2-llamacpp.json`): the
//! reference our tokenizer, forward pass and perplexity are checked against, in tests and by
//! the demos' `--verify`.

use serde::Deserialize;
use std::sync::OnceLock;

/// The reference file, compiled in.
pub const JSON: &str = include_str!("../tests/reference/smollm2-llamacpp.json");

#[derive(Debug, Deserialize)]
pub struct Reference {
    pub model: ModelFacts,
    pub greedy: std::collections::BTreeMap<String, Greedy>,
    pub tokenizer: Vec<Tokenization>,
    pub perplexity: Perplexity,
}

#[derive(Debug, Deserialize)]
pub struct ModelFacts {
    pub gguf_bytes: u64,
    pub gguf_sha256: String,
}

/// A greedy continuation: prompt ids, the generated ids, and the last prompt position's
/// top-5 logits as (id, value).
#[derive(Debug, Deserialize)]
pub struct Greedy {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
    pub greedy_text: String,
    pub last_pos_top5: Vec<(u32, f32)>,
    pub last_pos_logsumexp: f32,
}

#[derive(Debug, Deserialize)]
pub struct Tokenization {
    pub text: String,
    pub ids: Vec<u32>,
}

/// llama-perplexity's result on the reference text at context 512.
#[derive(Debug, Deserialize)]
pub struct Perplexity {
    pub tokens_no_bos: usize,
    pub ppl: f64,
    pub stderr: f64,
    /// Running perplexity after the first 1, 2, 3, 4 chunks.
    pub first_chunks_running_ppl: Vec<f64>,
}

/// The parsed reference.
pub fn get() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| serde_json::from_str(JSON).expect("the compiled-in reference JSON parses"))
}

/// The greedy reference of the course ("The capital of France is").
pub fn france() -> &'static Greedy {
    &get().greedy["france"]
}
