//! The hyper-parameters of a Llama-family model, read from the GGUF metadata — nothing about
//! SmolLM2 is hard-coded, so any Llama-architecture GGUF with supported tensor types loads.

use crate::formats::{Gguf, GgufError};
use serde::Serialize;

// ANCHOR: config
/// Shapes and constants of the forward pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlamaConfig {
    /// Transformer blocks.
    pub n_layers: usize,
    /// Width of the residual stream (embedding length).
    pub dim: usize,
    /// Hidden width of the feed-forward network.
    pub ffn_dim: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention: each serves n_heads / n_kv_heads query heads).
    pub n_kv_heads: usize,
    /// dim / n_heads.
    pub head_dim: usize,
    /// Dimensions of each head that RoPE rotates (usually head_dim).
    pub rope_dims: usize,
    pub rope_theta: f32,
    pub rms_eps: f32,
    /// Longest sequence the model was trained for.
    pub context_length: usize,
    pub vocab_size: usize,
}
// ANCHOR_END: config

/// Why a model file cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Matrix(#[from] crate::kernels::matmul::MatrixError),
    #[error("architecture `{0}` is not supported: this engine runs the Llama family (`llama`)")]
    UnsupportedArchitecture(String),
    #[error("inconsistent hyper-parameters: {0}")]
    BadConfig(String),
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    BadShape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("token id {id} is outside the vocabulary ({vocab} tokens)")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("the sequence would grow to {needed} tokens, past the context of {limit}")]
    ContextFull { needed: usize, limit: usize },
    #[error(
        "a request needs room for {needed} tokens, but the whole KV cache holds {capacity}: \
         give the cache more memory (--kv-mib) or send shorter requests"
    )]
    KvCacheTooSmall { needed: usize, capacity: usize },
    #[error("nothing to process: the token list is empty")]
    EmptyInput,
}

impl From<crate::attention::ContextFull> for ModelError {
    fn from(e: crate::attention::ContextFull) -> ModelError {
        ModelError::ContextFull {
            needed: e.needed,
            limit: e.limit,
        }
    }
}

impl LlamaConfig {
    /// Reads `<arch>.*` keys; refuses architectures other than `llama`.
    pub fn from_gguf(g: &Gguf) -> Result<LlamaConfig, ModelError> {
        let arch = g.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(ModelError::UnsupportedArchitecture(arch.into()));
        }
        let int = |key: &str| -> Result<usize, ModelError> {
            Ok(g.get_u64(&format!("{arch}.{key}"))? as usize)
        };
        let n_heads = int("attention.head_count")?;
        let dim = int("embedding_length")?;
        let n_kv_heads = match g.get(&format!("{arch}.attention.head_count_kv")) {
            Some(_) => int("attention.head_count_kv")?,
            None => n_heads,
        };
        if n_heads == 0 || n_kv_heads == 0 || dim % n_heads != 0 || n_heads % n_kv_heads != 0 {
            return Err(ModelError::BadConfig(format!(
                "{n_heads} heads, {n_kv_heads} KV heads, width {dim}: heads must divide the width and KV heads the heads"
            )));
        }
        let head_dim = dim / n_heads;
        let rope_dims = match g.get(&format!("{arch}.rope.dimension_count")) {
            Some(_) => int("rope.dimension_count")?,
            None => head_dim,
        };
        if rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(ModelError::BadConfig(format!(
                "RoPE over {rope_dims} of {head_dim} head dimensions"
            )));
        }
        let float = |key: &str, default: f64| -> Result<f32, ModelError> {
            let key = format!("{arch}.{key}");
            Ok(match g.get(&key) {
                Some(_) => g.get_f64(&key)? as f32,
                None => default as f32,
            })
        };
        let vocab_size = match g.get(&format!("{arch}.vocab_size")) {
            Some(_) => int("vocab_size")?,
            None => g.get_str_array("tokenizer.ggml.tokens")?.len(),
        };
        let context_length = int("context_length")?;
        if context_length == 0 {
            return Err(ModelError::BadConfig(format!(
                "`{arch}.context_length` is 0: the model could not hold a single token; \
                 set it to the length the model was trained for (e.g. 2048 or 8192) in the file"
            )));
        }
        Ok(LlamaConfig {
            n_layers: int("block_count")?,
            dim,
            ffn_dim: int("feed_forward_length")?,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_dims,
            rope_theta: float("rope.freq_base", 10_000.0)?,
            rms_eps: float("attention.layer_norm_rms_epsilon", 1e-5)?,
            context_length,
            vocab_size,
        })
    }

    /// Width of the keys (and values) of all KV heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
