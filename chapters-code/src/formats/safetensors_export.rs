//! The same tensors in Hugging Face's safetensors format, for the load-time comparison of the
//! APR chapter. safetensors has no dtype for GGML blocks either: F32/F16 tensors keep their
//! dtype and shape, block-quantized ones are stored as `U8` bytes, and the header's
//! `__metadata__` records each tensor's GGML type and dims (as the APR export does).

use super::ggml_type::GgmlType;
use super::gguf::{Gguf, GgufError};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;

/// Why the safetensors file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    #[error("safetensors: {0}")]
    Format(#[from] safetensors::SafeTensorError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
}

/// The tensors of `g` as a safetensors file (tensor data unchanged).
pub fn export(g: &Gguf) -> Result<Vec<u8>, SafetensorsError> {
    let mut views = Vec::with_capacity(g.tensors.len());
    let mut table = HashMap::new();
    for t in &g.tensors {
        let data = g.tensor(&t.name)?.data;
        let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        let view = match t.ggml_type {
            GgmlType::F32 => TensorView::new(Dtype::F32, shape, data)?,
            GgmlType::F16 => TensorView::new(Dtype::F16, shape, data)?,
            _ => TensorView::new(Dtype::U8, vec![data.len()], data)?,
        };
        table.insert(
            format!("gguf.{}", t.name),
            format!("{}:{:?}", t.ggml_type, t.dims),
        );
        views.push((t.name.clone(), view));
    }
    Ok(safetensors::tensor::serialize(views, Some(table))?)
}

/// Parses the header and returns every tensor's bytes, borrowed from `bytes` (what a loader
/// does before the first matmul).
pub fn tensors(bytes: &[u8]) -> Result<Vec<(String, &[u8])>, SafetensorsError> {
    let file = SafeTensors::deserialize(bytes)?;
    Ok(file
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.data()))
        .collect())
}
