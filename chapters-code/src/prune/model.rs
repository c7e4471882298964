//! Pruning a whole model file: every matrix of every block, scored and masked by
//! [`super::mask`] (or pruned and repaired by [`super::sparsegpt`]), then stored at 8 bits (Q8_0 keeps a zero exactly zero); embeddings, head
//! and norms are copied unchanged. The result is an ordinary GGUF file that the engine — and
//! llama.cpp — run as they run any other: the zeros are there, the speed is not (a dense kernel
//! multiplies them like any weight).

use super::mask::{Method, Pattern, prune_rows, scores};
use super::sparsegpt::sparsegpt_row;
use crate::formats::gguf::TensorView;
use crate::formats::{Gguf, GgufWriter};
use crate::kernels::matmul::QMatrix;
use crate::kernels::pool::ThreadPool;
use crate::model::ModelError;
use crate::obs::{Hessians, LayerFactors, par_rows};
use crate::quant::awq::Calibration;
use crate::quant::requantize::Target;

/// What a method learns from the calibration text: per-channel statistics (Wanda) and the
/// input Hessians (SparseGPT); `damp` as in [`crate::obs::DAMP`].
#[derive(Clone, Copy)]
pub struct Evidence<'c> {
    pub stats: Option<&'c Calibration>,
    pub hessians: Option<&'c Hessians>,
    pub damp: f64,
}

/// A matrix dequantized to f32, row-major (`rows × cols` as in the file).
pub fn dequantized(view: TensorView<'_>) -> Result<(Vec<f32>, usize, usize), ModelError> {
    let (rows, cols) = (view.n_rows(), view.row_len());
    let m = QMatrix::from_view(view)?;
    let mut w = vec![0.0f32; rows * cols];
    for (r, row) in w.chunks_exact_mut(cols).enumerate() {
        m.row_f32(r, row);
    }
    Ok((w, rows, cols))
}

/// What pruning did to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Pruned {
    /// Block matrices pruned.
    pub matrices: usize,
    /// Of those, scored by magnitude because no input statistics exist for them.
    pub by_magnitude: usize,
    /// Weights in the pruned matrices, and how many of them are zero now.
    pub weights: u64,
    pub zeroed: u64,
    /// SparseGPT's summed OBS loss (0 for the other methods).
    pub loss: f64,
}

impl Pruned {
    /// Zeroed weights over the pruned matrices' weights.
    pub fn sparsity(&self) -> f64 {
        self.zeroed as f64 / self.weights.max(1) as f64
    }
}

/// The calibration input (0: attention, 1: feed-forward, 2: down, 3: attention output) that
/// block matrix `name` reads, and its layer; `None` for tensors outside the blocks.
pub(crate) fn input_of(name: &str) -> Option<(usize, Option<usize>)> {
    let rest = name.strip_prefix("blk.")?;
    let (layer, tensor) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let site = match tensor {
        "attn_q.weight" | "attn_k.weight" | "attn_v.weight" => Some(0),
        "ffn_gate.weight" | "ffn_up.weight" => Some(1),
        "ffn_down.weight" => Some(2),
        "attn_output.weight" => Some(3),
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
/// (Q8_0 unless a test wants otherwise). Wanda needs channel statistics and SparseGPT the
/// Hessians, both gathered on a text that is not the evaluation text.
pub fn prune_model(
    pool: &ThreadPool,
    source: &Gguf,
    method: Method,
    pattern: Pattern,
    evidence: Evidence<'_>,
    target: Target,
) -> Result<(Pruned, GgufWriter), ModelError> {
    match (method, evidence.stats, evidence.hessians) {
        (Method::Wanda, None, _) => {
            return Err(ModelError::BadConfig(
                "Wanda scores weights by their inputs: it needs calibration statistics".into(),
            ));
        }
        (Method::SparseGpt, _, None) => {
            return Err(ModelError::BadConfig(
                "SparseGPT repairs weights with the inputs' Hessians: it needs them".into(),
            ));
        }
        _ => {}
    }
    let mut factors = evidence
        .hessians
        .map(|h| LayerFactors::new(h, evidence.damp));
    let mut writer = GgufWriter::new();
    for (key, value) in &source.metadata {
        writer.meta(key, value.clone());
    }
    let mut report = Pruned {
        matrices: 0,
        by_magnitude: 0,
        weights: 0,
        zeroed: 0,
        loss: 0.0,
    };
    for info in &source.tensors {
        let view = source.tensor(&info.name)?;
        let Some((layer, site)) = input_of(&info.name).filter(|_| info.dims.len() == 2) else {
            writer.tensor(&info.name, &info.dims, info.ggml_type, view.data.to_vec());
            continue;
        };
        let (mut w, _, cols) = dequantized(view)?;
        match (method, factors.as_mut(), site) {
            (Method::SparseGpt, Some(factors), Some(site)) => {
                let f = factors.get(pool, layer, site)?;
                if f.n != cols {
                    return Err(ModelError::BadConfig(format!(
                        "the Hessian of block {layer} does not fit {} ({cols} inputs)",
                        info.name
                    )));
                }
                let zeroed = std::sync::atomic::AtomicU64::new(0);
                report.loss += par_rows(pool, &mut w, cols, &|_, row| {
                    let (z, loss) = sparsegpt_row(f, row, pattern);
                    zeroed.fetch_add(z as u64, std::sync::atomic::Ordering::Relaxed);
                    loss
                });
                report.zeroed += zeroed.into_inner();
            }
            _ => {
                let norms = match (method, evidence.stats, site) {
                    (Method::Wanda, Some(cal), Some(site)) => channel_norms(cal, layer, site),
                    _ => None,
                };
                if method != Method::Magnitude && norms.is_none() {
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
            }
        }
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
        assert_eq!(input_of("blk.0.attn_output.weight"), Some((0, Some(3))));
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
        // The first 4 of the model's blocks: SparseGPT factors every input of every block,
        // and the whole model would take minutes here.
        let full = Gguf::open(path).unwrap();
        let cut = crate::testutil::ScratchFile::new("four-blocks.gguf");
        super::super::structured::drop_blocks(&full, &(4..30).collect::<Vec<_>>())
            .unwrap()
            .write(&cut.0)
            .unwrap();
        let source = Gguf::open(&cut.0).unwrap();
        let target = Llama::load(&source).unwrap();
        let pool = ThreadPool::new(2);
        let tokens: Vec<u32> = (1..=64).map(|i| i * 37 % 4000).collect();
        let cal = crate::quant::awq::calibrate(&target, &pool, &tokens, 32).unwrap();
        let hessians = crate::obs::collect_hessians(&target, &pool, &tokens, 32).unwrap();
        let none = Evidence {
            stats: None,
            hessians: None,
            damp: crate::obs::DAMP,
        };
        for method in [Method::Wanda, Method::SparseGpt] {
            let refused = prune_model(
                &pool,
                &source,
                method,
                Pattern::Unstructured(0.5),
                none,
                Target::Q8_0,
            );
            assert!(
                refused.is_err(),
                "{method:?} without calibration is refused"
            );
        }
        let evidence = Evidence {
            stats: Some(&cal),
            hessians: Some(&hessians),
            ..none
        };
        for (method, pattern) in [
            (Method::Magnitude, Pattern::Unstructured(0.5)),
            (Method::Wanda, Pattern::Unstructured(0.5)),
            (Method::Wanda, Pattern::NOfM { n: 2, m: 4 }),
            (Method::SparseGpt, Pattern::Unstructured(0.5)),
        ] {
            let (report, writer) =
                prune_model(&pool, &source, method, pattern, evidence, Target::Q8_0).unwrap();
            let layers = target.layers.len();
            assert_eq!(report.matrices, 7 * layers);
            assert_eq!(report.by_magnitude, 0, "every input is calibrated");
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
