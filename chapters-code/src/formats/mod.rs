//! Anatomy of a model file: the GGUF reader (memory-mapped, validated, zero-copy) and writer;
//! the same model in aprender's APR (plain, signed, encrypted) and in safetensors.

#[cfg(feature = "native")]
pub mod apr;
#[cfg(feature = "native")]
pub mod apr_sealed;
pub mod ggml_type;
pub mod gguf;
pub mod gguf_write;
#[cfg(feature = "native")]
pub mod safetensors_export;

#[cfg(test)]
mod gguf_tests;

pub use ggml_type::GgmlType;
pub use gguf::{Gguf, GgufError, TensorInfo, TensorView, Value};
pub use gguf_write::GgufWriter;
