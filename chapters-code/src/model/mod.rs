//! The Llama-family model: hyper-parameters from the file, the forward pass, the KV cache.

pub mod block;
pub mod cache;
pub mod config;
/// GGML's exp, used by SwiGLU here and by attention's softmax (it lives with the kernels).
pub use crate::kernels::ggml_exp;
pub mod llama;
pub mod ops;

#[cfg(test)]
mod tests;

pub use cache::{KvCache, KvPrecision};
pub use config::{LlamaConfig, ModelError};
pub use llama::{Llama, Logits, SeqStep, Site};
