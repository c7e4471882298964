//! Activation-aware weight quantization (AWQ, Lin et al. 2023), the part that needs no
//! training: scale each input channel of a weight matrix before rounding, and divide the
//! activations by the same factor, so that the channels that carry large activations — whose
//! weight errors cost the most — get finer steps.
//!
//! `y = W x = (W · diag(s)) (x / s)`: the product is unchanged, only what gets rounded changes.
//! The division needs no extra work at run time when it folds into what produces `x`:
//! - Q, K, V read the attention norm's output: divide the norm's weights by `s`;
//! - gate and up read the feed-forward norm's output: the same with that norm;
//! - down reads SwiGLU's output `silu(gate) · up`, linear in up's rows: divide those rows.
//!
//! (The attention output projection is left alone: its input comes from V through softmax, and
//! with grouped-query attention several heads share each V row, so the factors would have to
//! agree across heads.)
//!
//! `s = mean(|x|)^α`, with α per layer and group searched on a grid: α = 0 is plain rounding,
//! so the search never picks something worse than rounding on its own measure, the output
//! error weighted by each channel's mean square activation, Σ (ΔW)²·E[x²].

use super::requantize::{Rescale, Target};
use crate::formats::Gguf;
use crate::kernels::pool::ThreadPool;
use crate::model::{Llama, ModelError, Site};
use crate::tokenizer::TokenId;
use serde::Serialize;
use std::collections::HashMap;

/// Exponents tried for `s = mean(|x|)^α`.
pub const ALPHAS: [f32; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// Per-channel statistics of one matrix input over the calibration tokens.
#[derive(Debug, Clone, Default)]
pub struct ChannelStats {
    pub sum_abs: Vec<f64>,
    pub sum_sq: Vec<f64>,
    pub tokens: u64,
}

impl ChannelStats {
    fn add(&mut self, rows: &[f32], width: usize) {
        if self.sum_abs.is_empty() {
            self.sum_abs = vec![0.0; width];
            self.sum_sq = vec![0.0; width];
        }
        for row in rows.chunks_exact(width) {
            for (j, &x) in row.iter().enumerate() {
                self.sum_abs[j] += f64::from(x.abs());
                self.sum_sq[j] += f64::from(x) * f64::from(x);
            }
            self.tokens += 1;
        }
    }

    fn mean_abs(&self) -> Vec<f64> {
        self.sum_abs
            .iter()
            .map(|s| s / self.tokens.max(1) as f64)
            .collect()
    }

    fn mean_sq(&self) -> Vec<f64> {
        self.sum_sq
            .iter()
            .map(|s| s / self.tokens.max(1) as f64)
            .collect()
    }
}

/// Statistics of the calibrated inputs of every layer: attention, feed-forward, down, and the
/// attention output projection's (AWQ scales the first three; Wanda scores all four).
#[derive(Debug, Clone)]
pub struct Calibration {
    pub layers: Vec<[ChannelStats; 4]>,
}

/// The index of a calibrated site in [`Calibration::layers`]; `None` for the residual stream.
fn site_index(site: Site) -> Option<usize> {
    match site {
        Site::AttnInput => Some(0),
        Site::FfnInput => Some(1),
        Site::DownInput => Some(2),
        Site::AttnOutput => Some(3),
        Site::BlockInput => None,
    }
}

// ANCHOR: calibrate
/// Runs `tokens`, cut into chunks of `ctx` (each on a fresh cache), through `model` and
/// gathers the statistics of every matrix input.
pub fn calibrate(
    model: &Llama,
    pool: &ThreadPool,
    tokens: &[TokenId],
    ctx: usize,
) -> Result<Calibration, ModelError> {
    let c = &model.config;
    let mut cal = Calibration {
        layers: vec![Default::default(); c.n_layers],
    };
    model.observe_chunks(pool, tokens, ctx, &mut |layer, site, rows| {
        let width = if site == Site::DownInput {
            c.ffn_dim
        } else {
            c.dim
        };
        if let Some(i) = site_index(site) {
            cal.layers[layer][i].add(rows, width);
        }
    })?;
    Ok(cal)
}
// ANCHOR_END: calibrate

/// The factors chosen for one group of matrices that share an input.
#[derive(Debug, Clone, Serialize)]
pub struct GroupChoice {
    pub layer: usize,
    pub group: &'static str,
    pub alpha: f32,
    /// The weighted output error with the chosen α, relative to plain rounding's (α = 0).
    pub error_vs_rounding: f64,
}

/// What AWQ decided for a model: the factors for every tensor, and the α of every group.
pub struct AwqPlan {
    pub rescales: HashMap<String, Rescale>,
    pub choices: Vec<GroupChoice>,
}

impl AwqPlan {
    /// The rescale of tensor `name` (for [`super::requantize::requantize_rescaled`]).
    pub fn rescale(&self, name: &str) -> Option<Rescale> {
        self.rescales.get(name).cloned()
    }
}

/// The matrix `name` of `g`, dequantized: `(weights row-major, rows, cols)`.
fn matrix(g: &Gguf, name: &str) -> Result<(Vec<f32>, usize, usize), ModelError> {
    crate::prune::model::dequantized(g.tensor(name)?)
}

// ANCHOR: search
/// Σ over the matrices of Σ_ij (W_ij − Ŵ_ij)² · E[x_j²], where Ŵ is `W · diag(s)` quantized
/// to `target` and divided by `s` again: the expected squared output error of the group,
/// ignoring correlations between channels.
fn weighted_error(
    mats: &[(Vec<f32>, usize, usize)],
    s: &[f32],
    msq: &[f64],
    target: Target,
) -> f64 {
    let mut err = 0.0;
    for (w, _, cols) in mats {
        let fmt = target.for_cols(*cols);
        let scaled: Vec<f32> = w.iter().enumerate().map(|(i, x)| x * s[i % cols]).collect();
        let mut back = vec![0.0f32; w.len()];
        fmt.dequantize(&fmt.quantize(&scaled), &mut back);
        for (i, (a, b)) in w.iter().zip(&back).enumerate() {
            let j = i % cols;
            err += f64::from(a - b / s[j]).powi(2) * msq[j];
        }
    }
    err
}

/// `mean_abs^α`, normalized so that the largest and smallest factor straddle 1 (AWQ's
/// normalization: √(max·min) = 1).
fn factors(mean_abs: &[f64], alpha: f32) -> Vec<f32> {
    let raw: Vec<f64> = mean_abs
        .iter()
        .map(|m| m.max(1e-8).powf(f64::from(alpha)))
        .collect();
    let (lo, hi) = raw
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let mid = (lo * hi).sqrt();
    raw.iter().map(|v| (v / mid) as f32).collect()
}

/// The α of `ALPHAS` with the smallest weighted error for the group, its factors, and its
/// error relative to α = 0.
fn search(
    mats: &[(Vec<f32>, usize, usize)],
    stats: &ChannelStats,
    target: Target,
) -> (f32, Vec<f32>, f64) {
    let (mean_abs, msq) = (stats.mean_abs(), stats.mean_sq());
    let mut best: Option<(f32, Vec<f32>, f64)> = None;
    let mut rounding = 0.0;
    for alpha in ALPHAS {
        let s = factors(&mean_abs, alpha);
        let err = weighted_error(mats, &s, &msq, target);
        if alpha == 0.0 {
            rounding = err;
        }
        if best.as_ref().is_none_or(|b| err < b.2) {
            best = Some((alpha, s, err));
        }
    }
    let (alpha, s, err) = best.expect("ALPHAS is not empty");
    (alpha, s, err / rounding.max(f64::MIN_POSITIVE))
}
// ANCHOR_END: search

// ANCHOR: plan
/// Chooses the factors of every layer's three groups for quantizing `source` to `target`.
pub fn plan(source: &Gguf, target: Target, cal: &Calibration) -> Result<AwqPlan, ModelError> {
    let mut rescales: HashMap<String, Rescale> = HashMap::new();
    let mut choices = Vec::new();
    for (layer, stats) in cal.layers.iter().enumerate() {
        let name = |t: &str| format!("blk.{layer}.{t}.weight");
        let inverse = |s: &[f32]| s.iter().map(|v| 1.0 / v).collect::<Vec<f32>>();
        let groups: [(&'static str, &[&str], &str); 3] = [
            ("attention", &["attn_q", "attn_k", "attn_v"], "attn_norm"),
            ("feed-forward", &["ffn_gate", "ffn_up"], "ffn_norm"),
            ("down", &["ffn_down"], "ffn_up"),
        ];
        for (g, (group, mats, producer)) in groups.into_iter().enumerate() {
            let weights = mats
                .iter()
                .map(|m| matrix(source, &name(m)))
                .collect::<Result<Vec<_>, _>>()?;
            let (alpha, s, relative) = search(&weights, &stats[g], target);
            choices.push(GroupChoice {
                layer,
                group,
                alpha,
                error_vs_rounding: relative,
            });
            for m in mats {
                rescales.entry(name(m)).or_default().cols = Some(s.clone());
            }
            // The producer divides: a norm's weights, or (for down) up's rows.
            let p = rescales.entry(name(producer)).or_default();
            if producer == "ffn_up" {
                p.rows = Some(inverse(&s));
            } else {
                p.cols = Some(inverse(&s));
            }
        }
    }
    Ok(AwqPlan { rescales, choices })
}
// ANCHOR_END: plan

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KvCache, Logits};
    use crate::testutil::wave;

    #[test]
    fn alpha_zero_is_plain_rounding_and_the_search_never_does_worse() {
        let (rows, cols) = (8, 64);
        // Channel j's activations scale like 1 + j: a few channels dominate the output.
        let mut stats = ChannelStats::default();
        let acts: Vec<f32> = (0..16 * cols)
            .map(|i| wave(1, i as u32)[0] * (1 + i % cols) as f32)
            .collect();
        stats.add(&acts, cols);
        let w = wave(rows * cols, 3);
        let mats = vec![(w, rows, cols)];
        assert!(factors(&stats.mean_abs(), 0.0).iter().all(|&f| f == 1.0));
        let (alpha, s, relative) = search(&mats, &stats, Target::Q4_0);
        assert!(relative <= 1.0);
        assert_eq!(s.len(), cols);
        // With such skewed activations, scaling helps.
        assert!(
            alpha > 0.0 && relative < 1.0,
            "alpha {alpha}, relative {relative}"
        );
    }

    #[test]
    fn factors_straddle_one() {
        let s = factors(&[1.0, 4.0, 16.0], 0.5);
        assert!((s[0] * s[2] - 1.0).abs() < 1e-6);
        assert!(s[0] < 1.0 && s[2] > 1.0);
    }

    #[test]
    fn awq_keeps_the_function_when_nothing_is_rounded_away() {
        // F16 barely rounds: with AWQ's rescaling folded into the norms and up's rows, the
        // model must predict the same next token with the same logits to f16 precision.
        let Some(path) = crate::assets::model_for_tests() else {
            return;
        };
        let source = Gguf::open(path).unwrap();
        let model = Llama::load(&source).unwrap();
        let tokenizer = crate::tokenizer::Tokenizer::from_gguf(&source).unwrap();
        let pool = ThreadPool::new(2);
        let calib = tokenizer.encode(
            "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
            true,
        );
        let cal = calibrate(&model, &pool, &calib, calib.len()).unwrap();
        assert_eq!(cal.layers[0][0].tokens, calib.len() as u64);
        let plan = plan(&source, Target::F16, &cal).unwrap();
        // Force a strong rescale (α = 1) to make the check bite.
        let mut forced = HashMap::new();
        for (layer, stats) in cal.layers.iter().enumerate() {
            let s = factors(&stats[1].mean_abs(), 1.0);
            let inv: Vec<f32> = s.iter().map(|v| 1.0 / v).collect();
            for m in ["ffn_gate", "ffn_up"] {
                forced.insert(
                    format!("blk.{layer}.{m}.weight"),
                    Rescale {
                        rows: None,
                        cols: Some(s.clone()),
                    },
                );
            }
            forced.insert(
                format!("blk.{layer}.ffn_norm.weight"),
                Rescale {
                    rows: None,
                    cols: Some(inv),
                },
            );
        }
        let logits = |g: &Gguf| {
            let m = Llama::load(g).unwrap();
            let mut cache = KvCache::with_limit(&m.config, 64);
            let prompt = tokenizer.encode("The capital of France is", true);
            m.forward(&pool, &mut cache, &prompt, Logits::Last).unwrap()
        };
        // The reference: the same F16 requantization without rescaling (the source's own
        // logits differ more, since its Q4_1 matrices take 8-bit activations).
        let (_, plain) = super::super::requantize::requantize(&source, Target::F16, false).unwrap();
        let want = logits(&Gguf::from_bytes(plain.unwrap().to_bytes()).unwrap());
        for rescale in [&|n: &str| plan.rescale(n) as Option<Rescale>, &|n: &str| {
            forced.get(n).cloned() as Option<Rescale>
        }] as [&dyn Fn(&str) -> Option<Rescale>; 2]
        {
            let (_, writer) =
                super::super::requantize::requantize_rescaled(&source, Target::F16, false, rescale)
                    .unwrap();
            let g = Gguf::from_bytes(writer.unwrap().to_bytes()).unwrap();
            let got = logits(&g);
            assert_eq!(
                crate::sampling::argmax(&got),
                crate::sampling::argmax(&want)
            );
            let max_diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(max_diff < 0.05, "logits moved by {max_diff}");
        }
    }
}
