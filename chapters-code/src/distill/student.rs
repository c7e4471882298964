//! A student cut from its teacher's file — some blocks kept, the rest dropped — and written
//! back as an ordinary GGUF file that any Llama runtime reads.

use super::params::{BLOCK_TENSORS, Dims, Frozen};
use crate::formats::gguf::Value;
use crate::formats::{GgmlType, Gguf, GgufWriter};
use crate::model::{LlamaConfig, ModelError};
use crate::prune::model::dequantized;
use crate::quant::requantize::Target;

/// A student's trainable weights and their shapes.
pub struct Student {
    pub dims: Dims,
    /// Flat parameters, laid out as [`Dims::block`] reads them.
    pub params: Vec<f32>,
    /// The teacher's block each student block was copied from.
    pub kept: Vec<usize>,
}

impl Student {
    // ANCHOR: from_teacher
    /// The teacher's blocks `kept` (in that order), its final norm, and the frozen embedding,
    /// all dequantized to f32.
    pub fn from_teacher(teacher: &Gguf, kept: &[usize]) -> Result<(Student, Frozen), ModelError> {
        let c = LlamaConfig::from_gguf(teacher)?;
        if kept.is_empty() || kept.iter().any(|&b| b >= c.n_layers) {
            return Err(ModelError::BadConfig(format!(
                "a student keeps some of the teacher's {} blocks; asked for {kept:?}",
                c.n_layers
            )));
        }
        let dims = Dims::of(&c, kept.len());
        let mut params = Vec::with_capacity(dims.n_params());
        for &b in kept {
            for (name, (rows, cols)) in BLOCK_TENSORS.iter().zip(dims.block_shapes()) {
                let view = teacher.tensor(&format!("blk.{b}.{name}.weight"))?;
                if rows == 1 {
                    params.extend_from_slice(view.as_f32()?);
                } else {
                    let (w, r, k) = dequantized(view)?;
                    if (r, k) != (rows, cols) {
                        return Err(ModelError::BadShape {
                            name: format!("blk.{b}.{name}.weight"),
                            expected: vec![cols as u64, rows as u64],
                            found: vec![k as u64, r as u64],
                        });
                    }
                    params.extend_from_slice(&w);
                }
            }
        }
        params.extend_from_slice(teacher.tensor("output_norm.weight")?.as_f32()?);
        if teacher.tensor_info("output.weight").is_some() {
            return Err(ModelError::BadConfig(
                "the student shares the teacher's tied embedding as its head; this model has a \
                 separate output.weight"
                    .into(),
            ));
        }
        let (embed, _, _) = dequantized(teacher.tensor("token_embd.weight")?)?;
        let student = Student {
            dims,
            params,
            kept: kept.to_vec(),
        };
        Ok((student, Frozen { embed }))
    }
    // ANCHOR_END: from_teacher

    // ANCHOR: to_gguf
    /// The student as a GGUF file: the teacher's metadata and token embedding (byte for
    /// byte), `block_count` set, block matrices quantized to `format`, norms in F32, and
    /// `provenance` added as metadata.
    pub fn to_gguf(
        &self,
        teacher: &Gguf,
        format: Target,
        provenance: &[(String, Value)],
    ) -> Result<GgufWriter, ModelError> {
        let Some(ggml) = format.ggml_type() else {
            return Err(ModelError::BadConfig(format!(
                "{} has no GGUF type",
                format.name()
            )));
        };
        let d = &self.dims;
        let mut w = GgufWriter::new();
        for (key, value) in &teacher.metadata {
            w.meta(key, value.clone());
        }
        let arch = teacher.get_str("general.architecture")?.to_string();
        w.meta(
            &format!("{arch}.block_count"),
            Value::U32(d.n_blocks as u32),
        );
        for (key, value) in provenance {
            w.meta(key, value.clone());
        }
        let embd = teacher.tensor("token_embd.weight")?;
        w.tensor(
            "token_embd.weight",
            &embd.info.dims,
            embd.info.ggml_type,
            embd.data.to_vec(),
        );
        let f32_bytes = |x: &[f32]| x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        for b in 0..d.n_blocks {
            let block = d.block(&self.params, b);
            let tensors = [
                block.attn_norm,
                block.wq,
                block.wk,
                block.wv,
                block.wo,
                block.ffn_norm,
                block.w_gate,
                block.w_up,
                block.w_down,
            ];
            for ((name, (rows, cols)), x) in BLOCK_TENSORS.iter().zip(d.block_shapes()).zip(tensors)
            {
                let name = format!("blk.{b}.{name}.weight");
                if rows == 1 {
                    w.tensor(&name, &[cols as u64], GgmlType::F32, f32_bytes(x));
                } else {
                    let fmt = format.for_cols(cols);
                    let ty = fmt.ggml_type().unwrap_or(ggml);
                    w.tensor(&name, &[cols as u64, rows as u64], ty, fmt.quantize(x));
                }
            }
        }
        w.tensor(
            "output_norm.weight",
            &[d.dim as u64],
            GgmlType::F32,
            f32_bytes(d.output_norm(&self.params)),
        );
        Ok(w)
    }
    // ANCHOR_END: to_gguf
}
