//! Measuring a model's quality: perplexity, computed the way llama.cpp's `llama-perplexity`
//! does, so that the two numbers can be compared.

pub mod perplexity;

pub use perplexity::{PerplexityResult, agreement, perplexity, perplexity_with_cache};
