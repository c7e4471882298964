//! GPTQ (Frantar et al. 2022): 4-bit rounding that knows what the layer's inputs look like.
//! Round-to-nearest rounds every weight on its own; GPTQ rounds the columns of a row in order
//! and lets the columns not yet rounded absorb each rounding error, weighted by the input
//! statistics (the OBS sweep of [`crate::obs`]). The output is ordinary Q4_0 blocks — a file
//! llama.cpp reads like any other — only the integers chosen differ.
//!
//! Per block of 32 weights, the scale is taken when the sweep reaches the block, from the
//! weights as the earlier errors left them: `d` = the value of largest magnitude ÷ −8,
//! rounded to f16 *before* rounding the weights to it, so that what the sweep stored is
//! exactly what a reader dequantizes.

use super::blocks::{BlockQ4_0, QK, block_bytes};
use super::f16::{f16_to_f32, f32_to_f16};
use super::requantize::{Rescale, Target};
use crate::formats::{GgmlType, Gguf, GgufWriter};
use crate::kernels::pool::ThreadPool;
use crate::model::ModelError;
use crate::obs::{Hessians, InverseFactor, LayerFactors, par_rows, sweep_row};
use crate::prune::model::{dequantized, input_of};
use std::sync::Mutex;

/// The Q4_0 scale of one block: its value of largest magnitude ÷ −8, as f16 bits.
fn block_scale(block: &[f32]) -> u16 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in block {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    f32_to_f16(max / -8.0)
}

/// `v` rounded to the 4-bit grid of scale `d`: the integer 0..=15 (Q4_0's rule: truncate
/// `v / d + 8.5`).
fn level(v: f32, d: f32) -> u8 {
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    ((v * id + 8.5) as i8).clamp(0, 15) as u8
}

// ANCHOR: gptq_row
/// One row (a whole number of 32-weight blocks) quantized to Q4_0 by GPTQ with the factor of
/// its input's Hessian. `w` is left holding the dequantized values. Returns the blocks and
/// the row's loss (see [`sweep_row`]).
pub fn gptq_q4_0_row(f: &InverseFactor, w: &mut [f32]) -> (Vec<BlockQ4_0>, f64) {
    assert!(w.len().is_multiple_of(QK), "whole blocks of {QK}");
    let mut blocks = vec![
        BlockQ4_0 {
            d: 0,
            qs: [0; QK / 2]
        };
        w.len() / QK
    ];
    let loss = sweep_row(f, w, &mut |j, row| {
        let (b, i) = (j / QK, j % QK);
        if i == 0 {
            blocks[b].d = block_scale(&row[j..j + QK]);
        }
        let d = f16_to_f32(blocks[b].d);
        let q = level(row[j], d);
        let nibble = if i < QK / 2 { q } else { q << 4 };
        blocks[b].qs[i % (QK / 2)] |= nibble;
        (i32::from(q) - 8) as f32 * d
    });
    (blocks, loss)
}
// ANCHOR_END: gptq_row

/// What GPTQ did to a model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Gptqd {
    /// Block matrices rounded by GPTQ, and the other matrices (rounded to nearest).
    pub by_gptq: usize,
    pub rounded: usize,
    /// The summed OBS loss of the GPTQ matrices.
    pub loss: f64,
    /// Bits per weight over all matrices, as stored.
    pub bits_per_weight: f64,
}

// ANCHOR: gptq_model
/// `source` with every block matrix quantized to Q4_0 by GPTQ with its input's Hessian, and
/// the other matrices (the token embedding, here also the output head) rounded to Q4_0 when
/// `quantize_output`, else kept at Q8_0 as llama-quantize keeps the head. Norms are copied.
pub fn gptq_model(
    pool: &ThreadPool,
    source: &Gguf,
    hessians: &Hessians,
    damp: f64,
    quantize_output: bool,
) -> Result<(Gptqd, GgufWriter), ModelError> {
    gptq_model_rescaled(pool, source, hessians, damp, quantize_output, &|_| None)
}
// ANCHOR_END: gptq_model

// ANCHOR: gptq_awq
/// [`gptq_model`] after AWQ: every tensor multiplied by its factors first (`rescale`, as
/// [`crate::quant::awq::AwqPlan::rescale`] gives them: input channels of a matrix scaled up by
/// `s`, the norm or matrix before it scaled down), so that the model computes the same
/// function; GPTQ then rounds each rescaled matrix with the Hessian of its rescaled inputs
/// (`x / s`, see [`crate::obs::Hessian::scaled`]).
pub fn gptq_model_rescaled(
    pool: &ThreadPool,
    source: &Gguf,
    hessians: &Hessians,
    damp: f64,
    quantize_output: bool,
    rescale: &dyn Fn(&str) -> Option<Rescale>,
) -> Result<(Gptqd, GgufWriter), ModelError> {
    let mut factors = LayerFactors::new(hessians, damp);
    let mut writer = GgufWriter::new();
    for (key, value) in &source.metadata {
        writer.meta(key, value.clone());
    }
    let mut report = Gptqd {
        by_gptq: 0,
        rounded: 0,
        loss: 0.0,
        bits_per_weight: 0.0,
    };
    let (mut bits, mut weights) = (0u64, 0u64);
    for info in &source.tensors {
        let view = source.tensor(&info.name)?;
        let scale = rescale(&info.name);
        let mismatch = |what: &str| {
            ModelError::BadConfig(format!("rescaling {}: {what} do not fit", info.name))
        };
        if info.dims.len() != 2 {
            let data = match scale.as_ref().and_then(|s| s.cols.as_ref()) {
                Some(c) => {
                    let v = view.as_f32()?;
                    if c.len() != v.len() {
                        return Err(mismatch("the factors"));
                    }
                    v.iter()
                        .zip(c)
                        .flat_map(|(x, c)| (x * c).to_le_bytes())
                        .collect()
                }
                None => view.data.to_vec(),
            };
            writer.tensor(&info.name, &info.dims, info.ggml_type, data);
            continue;
        }
        let (mut w, rows, cols) = dequantized(view)?;
        let col_scales = scale.as_ref().and_then(|s| s.cols.clone());
        if let Some(s) = &scale {
            if s.rows.as_ref().is_some_and(|f| f.len() != rows)
                || col_scales.as_ref().is_some_and(|f| f.len() != cols)
            {
                return Err(mismatch("the row or column factors"));
            }
            for (r, row) in w.chunks_exact_mut(cols).enumerate() {
                let fr = s.rows.as_ref().map_or(1.0, |f| f[r]);
                for (c, x) in row.iter_mut().enumerate() {
                    *x *= fr * col_scales.as_ref().map_or(1.0, |f| f[c]);
                }
            }
        }
        let inverse: Option<Vec<f32>> = col_scales.map(|c| c.iter().map(|s| 1.0 / s).collect());
        let data = match input_of(&info.name) {
            Some((layer, Some(site))) if cols.is_multiple_of(QK) => {
                let f = factors.get_scaled(pool, layer, site, inverse.as_deref())?;
                if f.n != cols {
                    return Err(ModelError::BadConfig(format!(
                        "the Hessian of block {layer} does not fit {} ({cols} inputs)",
                        info.name
                    )));
                }
                let out: Vec<Mutex<Vec<BlockQ4_0>>> =
                    (0..rows).map(|_| Mutex::new(vec![])).collect();
                report.loss += par_rows(pool, &mut w, cols, &|r, row| {
                    let (blocks, loss) = gptq_q4_0_row(f, row);
                    *out[r].lock().unwrap_or_else(|e| e.into_inner()) = blocks;
                    loss
                });
                report.by_gptq += 1;
                let blocks: Vec<BlockQ4_0> = out
                    .into_iter()
                    .flat_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
                    .collect();
                (GgmlType::Q4_0, block_bytes(&blocks).to_vec())
            }
            _ => {
                let is_output = info.name == "output.weight"
                    || (info.name == "token_embd.weight"
                        && source.tensor_info("output.weight").is_none());
                let fmt = Target::Q4_0.for_tensor(cols, is_output, quantize_output);
                report.rounded += 1;
                let ty = fmt.ggml_type().unwrap_or(GgmlType::F16);
                (ty, fmt.quantize(&w))
            }
        };
        bits += 8 * data.1.len() as u64;
        weights += (rows * cols) as u64;
        writer.tensor(&info.name, &info.dims, data.0, data.1);
    }
    report.bits_per_weight = bits as f64 / weights.max(1) as f64;
    Ok((report, writer))
}
// ANCHOR_END: gptq_awq

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::pool::ThreadPool;
    use crate::obs::Hessian;
    use crate::obs::test_inputs::{correlated as inputs, output_error};
    use crate::quant::quantize::{dequantize_q4_0, quantize_q4_0};
    use crate::sampling::Rng;

    #[test]
    fn a_gptq_model_file_reads_back_and_runs() {
        use crate::model::{KvCache, Llama, Logits};
        let Some(path) = crate::assets::model_for_tests() else {
            return;
        };
        // Two blocks of the model keep the test short.
        let full = Gguf::open(path).unwrap();
        let cut = crate::testutil::ScratchFile::new("gptq-two-blocks.gguf");
        crate::prune::structured::drop_blocks(&full, &(2..30).collect::<Vec<_>>())
            .unwrap()
            .write(&cut.0)
            .unwrap();
        let source = Gguf::open(&cut.0).unwrap();
        let model = Llama::load(&source).unwrap();
        let pool = ThreadPool::new(2);
        let tokens: Vec<u32> = (1..=64).map(|i| i * 31 % 7000).collect();
        let hessians = crate::obs::collect_hessians(&model, &pool, &tokens, 32).unwrap();
        let (report, writer) = gptq_model(&pool, &source, &hessians, 0.01, true).unwrap();
        assert_eq!(report.by_gptq, 14);
        assert_eq!(report.rounded, 1, "the tied embedding");
        assert!((report.bits_per_weight - 4.5).abs() < 1e-9, "{report:?}");
        let file = crate::testutil::ScratchFile::new("gptq.gguf");
        writer.write(&file.0).unwrap();
        let quantized = Gguf::open(&file.0).unwrap();
        assert!(
            quantized
                .tensors
                .iter()
                .filter(|t| t.dims.len() == 2)
                .all(|t| t.ggml_type == GgmlType::Q4_0)
        );
        let m = Llama::load(&quantized).unwrap();
        let mut cache = KvCache::with_limit(&m.config, 8);
        let logits = m
            .forward(&pool, &mut cache, &tokens[..4], Logits::Last)
            .unwrap();
        assert!(logits.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn an_awq_then_gptq_model_computes_what_gptq_alone_does_when_the_factors_are_powers_of_two() {
        use crate::model::{KvCache, Llama, Logits};
        use crate::quant::requantize::Rescale;
        let Some(path) = crate::assets::model_for_tests() else {
            return;
        };
        let full = Gguf::open(path).unwrap();
        let cut = crate::testutil::ScratchFile::new("gptq-awq-two-blocks.gguf");
        crate::prune::structured::drop_blocks(&full, &(2..30).collect::<Vec<_>>())
            .unwrap()
            .write(&cut.0)
            .unwrap();
        let source = Gguf::open(&cut.0).unwrap();
        let model = Llama::load(&source).unwrap();
        let pool = ThreadPool::new(2);
        let tokens: Vec<u32> = (1..=64).map(|i| i * 37 % 9000).collect();
        let hessians = crate::obs::collect_hessians(&model, &pool, &tokens, 32).unwrap();
        // Q, K, V of block 0 take inputs halved (attn_norm × 0.5) and columns doubled.
        let dim = model.config.dim;
        let rescale = |name: &str| match name {
            "blk.0.attn_norm.weight" => Some(Rescale {
                rows: None,
                cols: Some(vec![0.5; dim]),
            }),
            "blk.0.attn_q.weight" | "blk.0.attn_k.weight" | "blk.0.attn_v.weight" => {
                Some(Rescale {
                    rows: None,
                    cols: Some(vec![2.0; dim]),
                })
            }
            _ => None,
        };
        let run = |writer: GgufWriter| {
            let g = Gguf::from_bytes(writer.to_bytes()).unwrap();
            let m = Llama::load(&g).unwrap();
            let mut cache = KvCache::with_limit(&m.config, 8);
            m.forward(&pool, &mut cache, &tokens[..6], Logits::Last)
                .unwrap()
        };
        let plain = run(gptq_model(&pool, &source, &hessians, 0.01, true).unwrap().1);
        let awq = run(
            gptq_model_rescaled(&pool, &source, &hessians, 0.01, true, &rescale)
                .unwrap()
                .1,
        );
        let worst = plain
            .iter()
            .zip(&awq)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        // The same integers and exactly doubled scales; only the activations' 8-bit rounding
        // sees the halved norm, so the logits agree closely, not bit for bit.
        assert!(worst < 0.05, "max |Δ logit| {worst}");
    }

    #[test]
    fn on_the_models_own_matrices_gptq_lowers_the_calibration_error_below_rounding() {
        use crate::model::Llama;
        let Some(path) = crate::assets::model_for_tests() else {
            return;
        };
        let full = Gguf::open(path).unwrap();
        let cut = crate::testutil::ScratchFile::new("gptq-loss-blocks.gguf");
        crate::prune::structured::drop_blocks(&full, &(2..30).collect::<Vec<_>>())
            .unwrap()
            .write(&cut.0)
            .unwrap();
        let source = Gguf::open(&cut.0).unwrap();
        let model = Llama::load(&source).unwrap();
        let pool = ThreadPool::new(2);
        let text = crate::assets::read_text(&crate::assets::perplexity_text_path()).unwrap();
        let tokenizer = crate::tokenizer::Tokenizer::from_gguf(&source).unwrap();
        let tokens = tokenizer.encode(&text, true);
        let hessians = crate::obs::collect_hessians(&model, &pool, &tokens[..2048], 512).unwrap();
        let held = crate::obs::collect_hessians(&model, &pool, &tokens[2048..4096], 512).unwrap();
        for (name, site) in [
            ("blk.1.attn_q.weight", 0),
            ("blk.1.ffn_up.weight", 1),
            ("blk.1.ffn_down.weight", 2),
            ("blk.1.attn_output.weight", 3),
        ] {
            let h = &hessians.layers[1][site];
            let f = h.inverse_factor(&pool, 0.01).unwrap();
            let (w, rows, cols) = dequantized(source.tensor(name).unwrap()).unwrap();
            // (w − ŵ) H (w − ŵ)ᵀ with the undamped H, summed over rows.
            let err_with = |h: &crate::obs::Hessian, hat: &[f32]| -> f64 {
                let mut total = 0.0;
                for r in 0..rows {
                    let d: Vec<f64> = (0..cols)
                        .map(|c| f64::from(w[r * cols + c] - hat[r * cols + c]))
                        .collect();
                    for i in 0..cols {
                        let hi = &h.sum[i * cols..(i + 1) * cols];
                        total += d[i] * hi.iter().zip(&d).map(|(a, b)| a * b).sum::<f64>();
                    }
                }
                total / h.tokens as f64
            };
            let mut gptq = w.clone();
            for row in gptq.chunks_exact_mut(cols) {
                gptq_q4_0_row(&f, row);
            }
            let mut rtn = vec![0.0f32; w.len()];
            dequantize_q4_0(&quantize_q4_0(&w), &mut rtn);
            let (g, r) = (err_with(h, &gptq), err_with(h, &rtn));
            let hh = &held.layers[1][site];
            println!(
                "{name}: calibration output error GPTQ {g:.4e}, rounding {r:.4e}; held-out GPTQ {:.4e} rounding {:.4e}",
                err_with(hh, &gptq),
                err_with(hh, &rtn)
            );
            assert!(g < r, "{name}: GPTQ {g} vs rounding {r}");
        }
    }

    #[test]
    fn the_blocks_hold_what_the_sweep_computed() {
        let pool = ThreadPool::new(2);
        let cols = 96;
        let x = inputs(400, cols, 1);
        let mut h = Hessian::new(cols);
        h.add(&pool, &x);
        let f = h.inverse_factor(&pool, 0.01).unwrap();
        let mut rng = Rng::new(2);
        let w: Vec<f32> = (0..cols).map(|_| rng.next_f32() - 0.5).collect();
        let mut swept = w.clone();
        let (blocks, _) = gptq_q4_0_row(&f, &mut swept);
        let mut back = vec![0.0f32; cols];
        dequantize_q4_0(&blocks, &mut back);
        assert_eq!(back, swept, "a reader dequantizes exactly the swept values");
    }

    #[test]
    fn after_awq_gptq_rounds_the_rescaled_matrix_as_the_original_one() {
        // Scaling every input channel of a row by 2 and its inputs by 1/2 (the Hessian by
        // 1/4) computes the same product; GPTQ then picks the same integers with twice the
        // scales (powers of two are exact): the rescaling is consistent with the Hessian.
        let pool = ThreadPool::new(2);
        let cols = 128;
        let mut h = Hessian::new(cols);
        h.add(&pool, &inputs(300, cols, 9));
        let mut rng = Rng::new(3);
        let w: Vec<f32> = (0..cols).map(|_| rng.next_f32() - 0.5).collect();
        let (plain, _) = gptq_q4_0_row(&h.inverse_factor(&pool, 0.01).unwrap(), &mut w.clone());
        let halves = vec![0.5f32; cols];
        let f = h.scaled(&halves).inverse_factor(&pool, 0.01).unwrap();
        let (scaled, _) = gptq_q4_0_row(&f, &mut w.iter().map(|x| 2.0 * x).collect::<Vec<_>>());
        for (a, b) in plain.iter().zip(&scaled) {
            assert_eq!(a.qs, b.qs);
            assert_eq!(2.0 * f16_to_f32(a.d), f16_to_f32(b.d));
        }
    }

    #[test]
    fn gptq_beats_round_to_nearest_on_the_layer_output() {
        // Reviewers' inputs differ: several seeds and widths, every one must win.
        let pool = ThreadPool::new(2);
        for (cols, seed) in [(64, 3), (128, 4), (192, 5), (320, 6)] {
            let x = inputs(3 * cols, cols, seed);
            let mut h = Hessian::new(cols);
            h.add(&pool, &x);
            let f = h.inverse_factor(&pool, 0.01).unwrap();
            let mut rng = Rng::new(seed + 50);
            let (mut gptq, mut rtn) = (0.0, 0.0);
            for _ in 0..8 {
                let w: Vec<f32> = (0..cols).map(|_| rng.next_f32() - 0.5).collect();
                let mut swept = w.clone();
                gptq_q4_0_row(&f, &mut swept);
                let mut rounded = vec![0.0f32; cols];
                dequantize_q4_0(&quantize_q4_0(&w), &mut rounded);
                gptq += output_error(&x, &w, &swept);
                rtn += output_error(&x, &w, &rounded);
            }
            println!("cols {cols}: GPTQ output error {gptq:.4}, round-to-nearest {rtn:.4}");
            assert!(gptq < 0.8 * rtn, "cols {cols}: GPTQ {gptq} vs RTN {rtn}");
        }
    }

    #[test]
    fn with_no_input_correlation_gptq_rounds_like_round_to_nearest() {
        // H = I (every channel alone, equally loud): no column can help another, so the sweep
        // must pick exactly the levels plain rounding picks.
        let pool = ThreadPool::new(1);
        let cols = 64;
        let mut x = vec![0.0f32; cols * cols];
        for i in 0..cols {
            x[i * cols + i] = 1.0;
        }
        let mut h = Hessian::new(cols);
        h.add(&pool, &x);
        let f = h.inverse_factor(&pool, 0.0).unwrap();
        let mut rng = Rng::new(8);
        let w: Vec<f32> = (0..cols).map(|_| rng.next_f32() - 0.5).collect();
        let mut swept = w.clone();
        gptq_q4_0_row(&f, &mut swept);
        for (block, out) in w.chunks_exact(QK).zip(swept.chunks_exact(QK)) {
            let d = f16_to_f32(block_scale(block));
            for (v, o) in block.iter().zip(out) {
                assert_eq!(*o, (i32::from(level(*v, d)) - 8) as f32 * d);
            }
        }
    }
}
