//! Pruning a whole model file: every matrix of every block, scored and masked by
//! [`super::mask`], then stored at 8 bits (Q8_0 keeps a zero exactly zero); embeddings, head
//! and norms are copied unchanged. The result is an ordinary GGUF file that the engine — and
//! llama.cpp — run as they run any other: the zeros are there, the speed is not (a dense kernel
//! multiplies them like any weight).

use super::mask::{Method, Pattern, prune_rows, scores};
use crate::formats::{Gguf, GgufWriter};
use crate::kernels::matmul::QMatrix;
use crate::model::ModelError;
use crate::quant::awq::Calibration;
use crate::quant::requantize::Target;

/// What pruning did to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Pruned {
    /// Block matrices pruned.
    pub matrices: usize,
    /// Of those, scored by magnitude because no input statistics exist for them (the attention
    /// output projection under Wanda: the calibration taps the three other inputs).
    pub by_magnitude: usize,
    /// Weights in the pruned matrices, and how many of them are zero now.
    pub weights: u64,
    pub zeroed: u64,
}

impl Pruned {
    /// Zeroed weights over the pruned matrices' weights.
    pub fn sparsity(&self) -> f64 {
        self.zeroed as f64 / self.weights.max(1) as f64
    }
}

/// The calibration input (0: attention, 1: feed-forward, 2: down) that block matrix `name`
/// reads, and its layer; `None` for tensors outside the blocks and for the attention output.
fn input_of(name: &str) -> Option<(usize, Option<usize>)> {
    let rest = name.strip_prefix("blk.")?;
    let (layer, tensor) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let site = match tensor {
        "attn_q.weight" | "attn_k.weight" | "attn_v.weight" => Some(0),
        "ffn_gate.weight" | "ffn_up.weight" => Some(1),
        "ffn_down.weight" => Some(2),
        "attn_output.weight" => None,
        _ => return None,
    };
    Some((layer, site))
}

/// ‖X_c‖₂ of every input channel of `site` in `layer`.
fn channel_norms(cal: &Calibration, layer: usize, site: usize) -> Option<Vec<f32>> {
    let stats = &cal.layers.get(layer)?[site];
    (!stats.sum_sq.is_empty()).then(|| stats.sum_sq.iter().map(|s| s.sqrt() as f32).collect())
}

// ANCHOR: prune_model
/// `source` with every block matrix pruned by `method` to `pattern` and stored as `target`
/// (Q8_0 unless a test wants otherwise). Wanda needs `cal`, statistics gathered on a text that
/// is not the evaluation text.
pub fn prune_model(
    source: &Gguf,
    method: Method,
    pattern: Pattern,
    cal: Option<&Calibration>,
    target: Target,
) -> Result<(Pruned, GgufWriter), ModelError> {
    if method == Method::Wanda && cal.is_none() {
        return Err(ModelError::BadConfig(
            "Wanda scores weights by their inputs: it needs calibration statistics".into(),
        ));
    }
    let mut writer = GgufWriter::new();
    for (key, value) in &source.metadata {
        writer.meta(key, value.clone());
    }
    let mut report = Pruned {
        matrices: 0,
        by_magnitude: 0,
        weights: 0,
        zeroed: 0,
    };
    for info in &source.tensors {
        let view = source.tensor(&info.name)?;
        let Some((layer, site)) = input_of(&info.name).filter(|_| info.dims.len() == 2) else {
            writer.tensor(&info.name, &info.dims, info.ggml_type, view.data.to_vec());
            continue;
        };
        let (rows, cols) = (view.n_rows(), view.row_len());
        let m = QMatrix::from_view(view)?;
        let mut w = vec![0.0f32; rows * cols];
        for (r, row) in w.chunks_exact_mut(cols).enumerate() {
            m.row_f32(r, row);
        }
        let norms = match (method, cal, site) {
            (Method::Wanda, Some(cal), Some(site)) => channel_norms(cal, layer, site),
            _ => None,
        };
        if method == Method::Wanda && norms.is_none() {
            report.by_magnitude += 1;
        }
        if norms.as_ref().is_some_and(|n| n.len() != cols) {
            return Err(ModelError::BadConfig(format!(
                "the calibration of layer {layer} does not fit {} ({cols} inputs)",
                info.name
            )));
        }
        let s = scores(method, &w, cols, norms.as_deref());
        report.zeroed += prune_rows(&mut w, &s, cols, pattern) as u64;
        report.weights += w.len() as u64;
        report.matrices += 1;
        let fmt = target.for_tensor(cols, false, true);
        let ty = fmt.ggml_type().ok_or_else(|| {
            ModelError::BadConfig(format!("{} is not a format of a GGUF file", fmt.name()))
        })?;
        writer.tensor(&info.name, &info.dims, ty, fmt.quantize(&w));
    }
    Ok((report, writer))
}
// ANCHOR_END: prune_model

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_block_matrix_knows_its_calibrated_input() {
        assert_eq!(input_of("blk.3.attn_k.weight"), Some((3, Some(0))));
        assert_eq!(input_of("blk.12.ffn_up.weight"), Some((12, Some(1))));
        assert_eq!(input_of("blk.0.ffn_down.weight"), Some((0, Some(2))));
        assert_eq!(input_of("blk.0.attn_output.weight"), Some((0, None)));
        assert_eq!(input_of("blk.0.attn_norm.weight"), None);
        assert_eq!(input_of("token_embd.weight"), None);
        assert_eq!(input_of("output.weight"), None);
    }

    #[test]
    fn a_pruned_model_file_has_the_zeros_it_reports_and_runs() {
        use crate::kernels::pool::ThreadPool;
        use crate::model::{KvCache, Llama, Logits};
        let Some(path) = crate::assets::model_for_tests() else {
            return;
        };
        let source = Gguf::open(path).unwrap();
        let target = Llama::load(&source).unwrap();
        let pool = ThreadPool::new(2);
        let tokens: Vec<u32> = (1..=64).map(|i| i * 37 % 4000).collect();
        let cal = crate::quant::awq::calibrate(&target, &pool, &tokens, 32).unwrap();
        assert!(
            prune_model(
                &source,
                Method::Wanda,
                Pattern::Unstructured(0.5),
                None,
                Target::Q8_0
            )
            .is_err(),
            "Wanda without calibration is refused"
        );
        for (method, pattern) in [
            (Method::Magnitude, Pattern::Unstructured(0.5)),
            (Method::Wanda, Pattern::Unstructured(0.5)),
            (Method::Wanda, Pattern::NOfM { n: 2, m: 4 }),
        ] {
            let (report, writer) =
                prune_model(&source, method, pattern, Some(&cal), Target::Q8_0).unwrap();
            let layers = target.layers.len();
            assert_eq!(report.matrices, 7 * layers);
            let expect_magnitude = if method == Method::Wanda { layers } else { 0 };
            assert_eq!(report.by_magnitude, expect_magnitude);
            assert!((report.sparsity() - 0.5).abs() < 1e-3, "{report:?}");
            let file = crate::testutil::ScratchFile::new("pruned.gguf");
            writer.write(&file.0).unwrap();
            let pruned = Gguf::open(&file.0).unwrap();
            // The zeros survive 8-bit storage: count them in one matrix.
            let m = QMatrix::from_view(pruned.tensor("blk.0.ffn_down.weight").unwrap()).unwrap();
            let mut row = vec![0.0f32; m.cols];
            let mut zeros = 0;
            for r in 0..m.rows {
                m.row_f32(r, &mut row);
                zeros += row.iter().filter(|x| **x == 0.0).count();
            }
            assert!(zeros * 2 >= m.rows * m.cols, "{zeros} zeros");
            // And the engine runs it.
            let model = Llama::load(&pruned).unwrap();
            let mut cache = KvCache::with_limit(&model.config, 8);
            let logits = model
                .forward(&pool, &mut cache, &tokens[..4], Logits::Last)
                .unwrap();
            assert!(logits.iter().all(|x| x.is_finite()));
        }
    }
}
