//! Requantizing a model: every weight matrix dequantized to f32, then quantized to a target
//! format; everything else (norms) kept. K-quants need rows whose length is a multiple of 256;
//! like llama.cpp's `llama-quantize`, a tensor whose rows are not falls back to a 32-block
//! format, and the report says how many did.

use super::blocks::block_bytes;
use super::kquants::*;
use super::nf4::*;
use super::q5_0::*;
use super::quantize::*;
use crate::formats::gguf::Pod;
use crate::formats::{GgmlType, Gguf, GgufWriter};
use serde::Serialize;

// ANCHOR: target
/// A format to requantize weight matrices to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Target {
    F16,
    Q8_0,
    Q6K,
    Q5K,
    Q5_0,
    Q4K,
    Q4_1,
    Q4_0,
    /// QLoRA's NormalFloat 4 (not a GGUF type: no file is written for it).
    Nf4,
}
// ANCHOR_END: target

impl Target {
    /// Every target, largest first.
    pub const ALL: [Target; 9] = [
        Target::F16,
        Target::Q8_0,
        Target::Q6K,
        Target::Q5K,
        Target::Q5_0,
        Target::Q4K,
        Target::Q4_1,
        Target::Q4_0,
        Target::Nf4,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::F16 => "F16",
            Target::Q8_0 => "Q8_0",
            Target::Q6K => "Q6_K",
            Target::Q5K => "Q5_K",
            Target::Q5_0 => "Q5_0",
            Target::Q4K => "Q4_K",
            Target::Q4_1 => "Q4_1",
            Target::Q4_0 => "Q4_0",
            Target::Nf4 => "NF4",
        }
    }

    /// Parses a name as [`Target::name`] prints it (case-insensitive).
    pub fn parse(name: &str) -> Option<Target> {
        Target::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Weights per block.
    pub fn block(self) -> usize {
        match self {
            Target::F16 => 1,
            Target::Q6K | Target::Q5K | Target::Q4K => QK_K,
            Target::Nf4 => QK_NF4,
            _ => super::QK,
        }
    }

    /// The GGUF type, if the format has one.
    pub fn ggml_type(self) -> Option<GgmlType> {
        Some(match self {
            Target::F16 => GgmlType::F16,
            Target::Q8_0 => GgmlType::Q8_0,
            Target::Q6K => GgmlType::Q6_K,
            Target::Q5K => GgmlType::Q5_K,
            Target::Q5_0 => GgmlType::Q5_0,
            Target::Q4K => GgmlType::Q4_K,
            Target::Q4_1 => GgmlType::Q4_1,
            Target::Q4_0 => GgmlType::Q4_0,
            Target::Nf4 => return None,
        })
    }

    // ANCHOR: fallback
    /// The format a tensor with rows of `cols` weights gets: the target, or — when the rows
    /// are not whole blocks of 256 — llama-quantize's fallback (Q4_K → Q5_0, Q6_K → Q8_0;
    /// its Q5_K → Q5_1 becomes Q5_0 here, the 5-bit format we have).
    pub fn for_cols(self, cols: usize) -> Target {
        if cols.is_multiple_of(self.block()) {
            return self;
        }
        match self {
            Target::Q4K | Target::Q5K => Target::Q5_0,
            Target::Q6K => Target::Q8_0,
            _ => Target::F16,
        }
    }
    // ANCHOR_END: fallback

    /// The format of tensor `name`: as [`Target::for_cols`], except the output matrix — or
    /// the token embedding when it doubles as the output (tied, as in SmolLM2) — which
    /// llama-quantize keeps at 8 bits or more: every logit goes through it.
    pub fn for_tensor(self, cols: usize, is_output: bool, quantize_output: bool) -> Target {
        let fmt = self.for_cols(cols);
        if is_output && !quantize_output && !matches!(fmt, Target::F16 | Target::Q8_0) {
            return Target::Q8_0.for_cols(cols);
        }
        fmt
    }

    /// Quantizes `x` to this format's bytes. `x` must be a whole number of blocks
    /// ([`Target::block`]; [`Target::for_cols`] picks a format for which rows are): a partial
    /// block would otherwise be dropped without a word.
    pub fn quantize(self, x: &[f32]) -> Vec<u8> {
        assert!(
            x.len().is_multiple_of(self.block()),
            "{} quantizes whole blocks of {}; got {} values",
            self.name(),
            self.block(),
            x.len()
        );
        fn bytes<T: Pod>(blocks: Vec<T>) -> Vec<u8> {
            block_bytes(&blocks).to_vec()
        }
        match self {
            Target::F16 => x
                .iter()
                .flat_map(|&v| super::f32_to_f16(v).to_le_bytes())
                .collect(),
            Target::Q8_0 => bytes(quantize_q8_0(x)),
            Target::Q6K => bytes(quantize_q6_k(x)),
            Target::Q5K => bytes(quantize_q5_k(x)),
            Target::Q5_0 => bytes(quantize_q5_0(x)),
            Target::Q4K => bytes(quantize_q4_k(x)),
            Target::Q4_1 => bytes(quantize_q4_1(x)),
            Target::Q4_0 => bytes(quantize_q4_0(x)),
            Target::Nf4 => bytes(quantize_nf4(x)),
        }
    }

    /// Dequantizes bytes made by [`Target::quantize`] into `out`.
    pub fn dequantize(self, bytes: &[u8], out: &mut [f32]) {
        fn blocks<T: Pod + Copy>(bytes: &[u8]) -> Vec<T> {
            let size = std::mem::size_of::<T>();
            bytes
                .chunks_exact(size)
                // SAFETY: T is Pod (every bit pattern valid); read_unaligned copes with any
                // address.
                .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<T>()) })
                .collect()
        }
        match self {
            Target::F16 => {
                for (o, h) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = super::f16_to_f32(u16::from_le_bytes([h[0], h[1]]));
                }
            }
            Target::Q8_0 => dequantize_q8_0(&blocks(bytes), out),
            Target::Q6K => dequantize_q6_k(&blocks(bytes), out),
            Target::Q5K => dequantize_q5_k(&blocks(bytes), out),
            Target::Q5_0 => dequantize_q5_0(&blocks(bytes), out),
            Target::Q4K => dequantize_q4_k(&blocks(bytes), out),
            Target::Q4_1 => dequantize_q4_1(&blocks(bytes), out),
            Target::Q4_0 => dequantize_q4_0(&blocks(bytes), out),
            Target::Nf4 => dequantize_nf4(&blocks(bytes), out),
        }
    }
}

/// What requantizing a model to one target gave.
#[derive(Debug, Clone, Serialize)]
pub struct Requantized {
    pub target: Target,
    /// Weight matrices requantized, and how many of them got another format (a fallback, or
    /// 8 bits for the output head).
    pub matrices: usize,
    pub fallbacks: usize,
    /// Weights in those matrices.
    pub weights: u64,
    /// Bytes those matrices take.
    pub weight_bytes: u64,
    /// Bits per weight over the requantized matrices.
    pub bits_per_weight: f64,
    /// ‖W − Ŵ‖ / ‖W‖ over every matrix, against the source model's (dequantized) weights.
    pub relative_error: f64,
    /// Size of the GGUF file written (None for formats GGUF cannot hold).
    pub file_bytes: Option<u64>,
}

/// How a tensor changes before it is quantized: weight `(r, c)` of a matrix is multiplied by
/// `rows[r] · cols[c]`; a vector (a norm's weights) by `cols`. Activation-aware quantization
/// ([`super::awq`]) scales a matrix's columns and divides the norm before it by the same
/// factors, so the model computes the same function with weights that quantize better.
#[derive(Debug, Clone, Default)]
pub struct Rescale {
    pub rows: Option<Vec<f32>>,
    pub cols: Option<Vec<f32>>,
}

/// Requantizes every 2-D tensor of `source` to `target` (with fallbacks, and the output head
/// at 8 bits unless `quantize_output`); returns the report
/// and, for GGUF types, the new file's writer (same metadata, same tensor order).
pub fn requantize(
    source: &Gguf,
    target: Target,
    quantize_output: bool,
) -> Result<(Requantized, Option<GgufWriter>), crate::model::ModelError> {
    requantize_rescaled(source, target, quantize_output, &|_| None)
}

// ANCHOR: requantize
/// [`requantize`], with tensor `name` first rescaled by `rescale(name)` where that is `Some`.
/// The reported error compares the dequantized weights, scales undone, with the source's.
pub fn requantize_rescaled(
    source: &Gguf,
    target: Target,
    quantize_output: bool,
    rescale: &dyn Fn(&str) -> Option<Rescale>,
) -> Result<(Requantized, Option<GgufWriter>), crate::model::ModelError> {
    // The output head: `output.weight`, or the token embedding when there is none (tied).
    let output = if source.tensor_info("output.weight").is_some() {
        "output.weight"
    } else {
        "token_embd.weight"
    };
    let mut writer = GgufWriter::new();
    for (key, value) in &source.metadata {
        writer.meta(key, value.clone());
    }
    let mut r = Requantized {
        target,
        matrices: 0,
        fallbacks: 0,
        weights: 0,
        weight_bytes: 0,
        bits_per_weight: 0.0,
        relative_error: 0.0,
        file_bytes: None,
    };
    let (mut err2, mut norm2) = (0.0f64, 0.0f64);
    for info in &source.tensors {
        let view = source.tensor(&info.name)?;
        let scale = rescale(&info.name);
        if info.dims.len() != 2 {
            let data = match scale.and_then(|s| s.cols) {
                Some(cols) => {
                    let v = view.as_f32()?;
                    if cols.len() != v.len() {
                        return Err(crate::model::ModelError::BadConfig(format!(
                            "rescaling {}: {} factors for {} values",
                            info.name,
                            cols.len(),
                            v.len()
                        )));
                    }
                    v.iter()
                        .zip(&cols)
                        .flat_map(|(x, c)| (x * c).to_le_bytes())
                        .collect()
                }
                None => view.data.to_vec(),
            };
            writer.tensor(&info.name, &info.dims, info.ggml_type, data);
            continue;
        }
        let (rows, cols) = (view.n_rows(), view.row_len());
        let m = crate::kernels::matmul::QMatrix::from_view(view)?;
        let mut w = vec![0.0f32; rows * cols];
        for (r, row) in w.chunks_exact_mut(cols).enumerate() {
            m.row_f32(r, row);
        }
        if let Some(s) = &scale {
            let fits = |f: &Option<Vec<f32>>, n: usize| f.as_ref().is_none_or(|f| f.len() == n);
            if !fits(&s.rows, rows) || !fits(&s.cols, cols) {
                return Err(crate::model::ModelError::BadConfig(format!(
                    "rescaling {}: factors do not match its {rows} rows of {cols}",
                    info.name
                )));
            }
        }
        let factor = |r: usize, c: usize| {
            let s = scale.as_ref();
            s.and_then(|s| s.rows.as_ref()).map_or(1.0, |f| f[r])
                * s.and_then(|s| s.cols.as_ref()).map_or(1.0, |f| f[c])
        };
        let scaled: Vec<f32> = match &scale {
            Some(_) => (0..w.len())
                .map(|i| w[i] * factor(i / cols, i % cols))
                .collect(),
            None => w.clone(),
        };
        let fmt = target.for_tensor(cols, info.name == output, quantize_output);
        let bytes = fmt.quantize(&scaled);
        let mut back = vec![0.0f32; w.len()];
        fmt.dequantize(&bytes, &mut back);
        for (i, (a, b)) in w.iter().zip(&back).enumerate() {
            let b = if scale.is_some() {
                b / factor(i / cols, i % cols)
            } else {
                *b
            };
            err2 += f64::from(a - b).powi(2);
            norm2 += f64::from(*a).powi(2);
        }
        r.matrices += 1;
        r.fallbacks += usize::from(fmt != target);
        r.weights += w.len() as u64;
        r.weight_bytes += bytes.len() as u64;
        if let Some(ty) = fmt.ggml_type() {
            writer.tensor(&info.name, &info.dims, ty, bytes);
        }
    }
    r.bits_per_weight = 8.0 * r.weight_bytes as f64 / r.weights.max(1) as f64;
    r.relative_error = (err2 / norm2.max(f64::MIN_POSITIVE)).sqrt();
    if target.ggml_type().is_some() {
        writer.meta(
            "general.file_type",
            crate::formats::Value::U32(file_type(target)),
        );
        r.file_bytes = Some(writer.to_bytes().len() as u64);
        Ok((r, Some(writer)))
    } else {
        Ok((r, None))
    }
}
// ANCHOR_END: requantize

/// llama.cpp's `general.file_type` code of the "mostly X" file.
fn file_type(target: Target) -> u32 {
    match target {
        Target::F16 => 1,
        Target::Q4_0 => 2,
        Target::Q4_1 => 3,
        Target::Q8_0 => 7,
        Target::Q5_0 => 8,
        Target::Q4K => 15, // Q4_K_M
        Target::Q5K => 17, // Q5_K_M
        Target::Q6K => 18,
        Target::Nf4 => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::pool::ThreadPool;
    use crate::model::{KvCache, Llama, Logits};

    #[test]
    fn names_parse_and_k_quants_fall_back_on_short_rows() {
        assert_eq!(Target::parse("q4_k"), Some(Target::Q4K));
        assert_eq!(Target::parse("nf4"), Some(Target::Nf4));
        assert_eq!(Target::parse("q3_k"), None);
        assert_eq!(Target::Q4K.for_cols(1536), Target::Q4K);
        assert_eq!(Target::Q4K.for_cols(576), Target::Q5_0);
        assert_eq!(Target::Q6K.for_cols(576), Target::Q8_0);
        assert_eq!(Target::Q4_0.for_tensor(576, true, false), Target::Q8_0);
        assert_eq!(Target::Q4_0.for_tensor(576, true, true), Target::Q4_0);
    }

    #[test]
    fn a_requantized_model_loads_runs_and_still_knows_paris() {
        let Some(path) = crate::assets::model_for_tests() else {
            return;
        };
        let source = Gguf::open(path).unwrap();
        let tokenizer = crate::tokenizer::Tokenizer::from_gguf(&source).unwrap();
        let prompt = tokenizer.encode("The capital of France is", true);
        let pool = ThreadPool::new(2);
        let next = |g: &Gguf| {
            let model = Llama::load(g).unwrap();
            let mut cache = KvCache::with_limit(&model.config, 64);
            let logits = model
                .forward(&pool, &mut cache, &prompt, Logits::Last)
                .unwrap();
            assert!(logits.iter().all(|v| v.is_finite()));
            crate::sampling::argmax(&logits)
        };
        let want = next(&source);
        for target in [Target::Q5_0, Target::Q4K] {
            let (report, writer) = requantize(&source, target, false).unwrap();
            let file = Gguf::from_bytes(writer.unwrap().to_bytes()).unwrap();
            assert_eq!(report.matrices, 211);
            assert_eq!(next(&file), want, "{target:?}");
        }
    }
}
