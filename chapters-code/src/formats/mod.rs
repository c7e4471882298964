//! Anatomy of a model file: the GGUF reader (memory-mapped, validated, zero-copy) and writer.

pub mod ggml_type;
pub mod gguf;
pub mod gguf_write;

#[cfg(test)]
mod gguf_tests;

pub use ggml_type::GgmlType;
pub use gguf::{Gguf, GgufError, TensorInfo, TensorView, Value};
pub use gguf_write::GgufWriter;
