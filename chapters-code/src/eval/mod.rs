//! Measuring a model's quality: perplexity, computed the way llama.cpp's `llama-perplexity`
//! does, so that the two numbers can be compared.

pub mod bench;
pub mod perplexity;

pub use bench::{Eval, ModelBench};
pub use perplexity::{PerplexityResult, agreement, perplexity, perplexity_with_cache};
