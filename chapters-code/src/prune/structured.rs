//! Structured pruning: remove whole pieces, so that the file shrinks and every token costs
//! less to decode — what zeros inside dense matrices never do.
//!
//! - **Depth**: drop whole blocks. A block whose output is nearly its input (the residual
//!   stream barely turns) matters least: its *influence* is `1 − cos(x_in, x_out)` averaged
//!   over the calibration tokens (ShortGPT's Block Influence, Men et al. 2024). The blocks
//!   kept are copied byte for byte and renumbered.
//! - **Width**: drop feed-forward channels. Channel `c` of block `l` adds `h_c · W_down[:, c]`
//!   to the residual stream; its importance is `√E[h_c²] · ‖W_down[:, c]‖` (the size of that
//!   contribution). Every block keeps its most important channels — the same number in all,
//!   since the file has one `feed_forward_length` — in their original order: gate and up lose
//!   rows (copied as they are), down loses columns (requantized to the source's format).

use super::model::{dequantized, input_of};
use crate::formats::gguf::Value;
use crate::formats::{GgmlType, Gguf, GgufWriter};
use crate::kernels::pool::ThreadPool;
use crate::model::{Llama, ModelError, Site};
use crate::quant::QK;
use crate::quant::awq::Calibration;
use crate::quant::requantize::Target;
use crate::tokenizer::TokenId;

/// `1 − cos(x_in, x_out)` of every block, averaged over the tokens of `tokens` (cut into
/// chunks of `ctx`, each on a fresh cache).
pub fn block_influence(
    model: &Llama,
    pool: &ThreadPool,
    tokens: &[TokenId],
    ctx: usize,
) -> Result<Vec<f64>, ModelError> {
    let (n, d) = (model.config.n_layers, model.config.dim);
    let mut sum = vec![0.0f64; n];
    let mut count = 0u64;
    let mut previous: Vec<f32> = vec![];
    model.observe_chunks(pool, tokens, ctx, &mut |layer, site, rows| {
        if site != Site::BlockInput {
            return;
        }
        if layer > 0 {
            for (a, b) in previous.chunks_exact(d).zip(rows.chunks_exact(d)) {
                sum[layer - 1] += 1.0 - cosine(a, b);
            }
        } else {
            count += (rows.len() / d) as u64;
        }
        previous = rows.to_vec();
    })?;
    Ok(sum.iter().map(|s| s / count.max(1) as f64).collect())
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 1.0;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// The `drop` blocks of least influence, in increasing block order.
pub fn least_influential(influence: &[f64], drop: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..influence.len()).collect();
    order.sort_by(|&a, &b| influence[a].total_cmp(&influence[b]).then(a.cmp(&b)));
    let mut chosen = order[..drop.min(order.len())].to_vec();
    chosen.sort_unstable();
    chosen
}

/// The architecture prefix of the metadata keys (`llama`).
fn arch(source: &Gguf) -> Result<String, ModelError> {
    Ok(source.get_str("general.architecture")?.to_string())
}

// ANCHOR: drop_blocks
/// `source` without the blocks in `drop`: the others are copied byte for byte and renumbered
/// `0..`, and `block_count` says how many are left.
pub fn drop_blocks(source: &Gguf, drop: &[usize]) -> Result<GgufWriter, ModelError> {
    let n = LlamaBlocks::count(source)?;
    if drop.iter().any(|&b| b >= n) || drop.len() >= n {
        return Err(ModelError::BadConfig(format!(
            "cannot drop blocks {drop:?} of a model with {n}: keep at least one"
        )));
    }
    let kept: Vec<usize> = (0..n).filter(|b| !drop.contains(b)).collect();
    let mut writer = GgufWriter::new();
    for (key, value) in &source.metadata {
        writer.meta(key, value.clone());
    }
    writer.meta(
        &format!("{}.block_count", arch(source)?),
        Value::U32(kept.len() as u32),
    );
    for info in &source.tensors {
        let data = source.tensor(&info.name)?.data.to_vec();
        match LlamaBlocks::block_of(&info.name) {
            Some((block, rest)) => {
                if let Some(new) = kept.iter().position(|&b| b == block) {
                    writer.tensor(
                        &format!("blk.{new}.{rest}"),
                        &info.dims,
                        info.ggml_type,
                        data,
                    );
                }
            }
            None => {
                writer.tensor(&info.name, &info.dims, info.ggml_type, data);
            }
        }
    }
    Ok(writer)
}
// ANCHOR_END: drop_blocks

/// Block numbering of a Llama GGUF file.
struct LlamaBlocks;

impl LlamaBlocks {
    fn count(source: &Gguf) -> Result<usize, ModelError> {
        Ok(crate::model::LlamaConfig::from_gguf(source)?.n_layers)
    }

    /// `blk.7.attn_q.weight` → `(7, "attn_q.weight")`.
    fn block_of(name: &str) -> Option<(usize, &str)> {
        let (block, rest) = name.strip_prefix("blk.")?.split_once('.')?;
        Some((block.parse().ok()?, rest))
    }
}

/// The importance of every feed-forward channel of every block: `√E[h²] · ‖W_down[:, c]‖`.
pub fn channel_importance(source: &Gguf, cal: &Calibration) -> Result<Vec<Vec<f64>>, ModelError> {
    let mut out = Vec::with_capacity(cal.layers.len());
    for (layer, stats) in cal.layers.iter().enumerate() {
        let down = &stats[2];
        let (w, rows, cols) = dequantized(source.tensor(&format!("blk.{layer}.ffn_down.weight"))?)?;
        if down.sum_sq.len() != cols {
            return Err(ModelError::BadConfig(format!(
                "the calibration of block {layer} has {} feed-forward channels, the file {cols}",
                down.sum_sq.len()
            )));
        }
        let mut col_sq = vec![0.0f64; cols];
        for row in w.chunks_exact(cols).take(rows) {
            for (s, &v) in col_sq.iter_mut().zip(row) {
                *s += f64::from(v) * f64::from(v);
            }
        }
        let tokens = down.tokens.max(1) as f64;
        out.push(
            down.sum_sq
                .iter()
                .zip(&col_sq)
                .map(|(h, c)| (h / tokens).sqrt() * c.sqrt())
                .collect(),
        );
    }
    Ok(out)
}

// ANCHOR: shrink_ffn
/// `source` with `keep` feed-forward channels per block (a multiple of 32, the block size of
/// the quantized rows), the most important by `importance` (from [`channel_importance`]).
pub fn shrink_ffn(
    source: &Gguf,
    importance: &[Vec<f64>],
    keep: usize,
) -> Result<GgufWriter, ModelError> {
    let ffn = crate::model::LlamaConfig::from_gguf(source)?.ffn_dim;
    if keep == 0 || keep > ffn || !keep.is_multiple_of(QK) {
        return Err(ModelError::BadConfig(format!(
            "keep {keep} of {ffn} feed-forward channels: give a multiple of {QK} from {QK} to {ffn}"
        )));
    }
    let mut writer = GgufWriter::new();
    for (key, value) in &source.metadata {
        writer.meta(key, value.clone());
    }
    writer.meta(
        &format!("{}.feed_forward_length", arch(source)?),
        Value::U32(keep as u32),
    );
    let kept_of = |layer: usize| -> Result<Vec<usize>, ModelError> {
        let imp = importance
            .get(layer)
            .filter(|v| v.len() == ffn)
            .ok_or_else(|| ModelError::BadConfig(format!("no importance for block {layer}")))?;
        let mut order: Vec<usize> = (0..ffn).collect();
        order.sort_by(|&a, &b| imp[b].total_cmp(&imp[a]).then(a.cmp(&b)));
        let mut kept = order[..keep].to_vec();
        kept.sort_unstable();
        Ok(kept)
    };
    for info in &source.tensors {
        let view = source.tensor(&info.name)?;
        let name = info.name.as_str();
        let Some((layer, Some(site))) = input_of(name) else {
            writer.tensor(name, &info.dims, info.ggml_type, view.data.to_vec());
            continue;
        };
        let kept = kept_of(layer)?;
        if name.ends_with("ffn_gate.weight") || name.ends_with("ffn_up.weight") {
            // Rows are whole blocks: copy the kept ones as they are.
            let row_bytes = view.data.len() / view.n_rows();
            let data: Vec<u8> = kept
                .iter()
                .flat_map(|&r| {
                    view.data[r * row_bytes..(r + 1) * row_bytes]
                        .iter()
                        .copied()
                })
                .collect();
            writer.tensor(name, &[info.dims[0], keep as u64], info.ggml_type, data);
        } else if site == 2 {
            let (w, _, cols) = dequantized(view)?;
            let cut: Vec<f32> = w
                .chunks_exact(cols)
                .flat_map(|row| kept.iter().map(move |&c| row[c]))
                .collect();
            let target = match info.ggml_type {
                GgmlType::Q4_0 => Target::Q4_0,
                GgmlType::Q8_0 => Target::Q8_0,
                GgmlType::F16 | GgmlType::F32 => Target::F16,
                _ => Target::Q4_1,
            };
            let fmt = target.for_cols(keep);
            let ty = fmt.ggml_type().unwrap_or(GgmlType::Q8_0);
            writer.tensor(name, &[keep as u64, info.dims[1]], ty, fmt.quantize(&cut));
        } else {
            writer.tensor(name, &info.dims, info.ggml_type, view.data.to_vec());
        }
    }
    Ok(writer)
}
// ANCHOR_END: shrink_ffn

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KvCache, Logits};

    #[test]
    fn the_least_influential_blocks_come_back_in_block_order() {
        let influence = [0.5, 0.1, 0.3, 0.05, 0.9];
        assert_eq!(least_influential(&influence, 2), vec![1, 3]);
        assert_eq!(least_influential(&influence, 0), Vec::<usize>::new());
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-12);
    }

    #[test]
    fn dropped_blocks_and_channels_give_smaller_models_that_run() {
        let Some(path) = crate::assets::model_for_tests() else {
            return;
        };
        let source = Gguf::open(path).unwrap();
        let model = Llama::load(&source).unwrap();
        let pool = ThreadPool::new(2);
        let tokens: Vec<u32> = (1..=64).map(|i| i * 53 % 5000).collect();
        let influence = block_influence(&model, &pool, &tokens, 32).unwrap();
        assert_eq!(influence.len(), model.layers.len());
        assert!(
            influence.iter().all(|&b| (0.0..=2.0).contains(&b)),
            "{influence:?}"
        );
        let drop = least_influential(&influence, 10);
        assert!(drop_blocks(&source, &(0..30).collect::<Vec<_>>()).is_err());

        let file = crate::testutil::ScratchFile::new("shallow.gguf");
        drop_blocks(&source, &drop).unwrap().write(&file.0).unwrap();
        let shallow = Gguf::open(&file.0).unwrap();
        let small = Llama::load(&shallow).unwrap();
        assert_eq!(small.layers.len(), 20);
        // A kept block is the original's, byte for byte.
        let first_kept = (0..30).find(|b| !drop.contains(b)).unwrap();
        assert_eq!(
            shallow.tensor("blk.0.ffn_down.weight").unwrap().data,
            source
                .tensor(&format!("blk.{first_kept}.ffn_down.weight"))
                .unwrap()
                .data
        );

        let cal = crate::quant::awq::calibrate(&model, &pool, &tokens, 32).unwrap();
        let importance = channel_importance(&source, &cal).unwrap();
        assert!(
            shrink_ffn(&source, &importance, 100).is_err(),
            "not a multiple of 32"
        );
        let file = crate::testutil::ScratchFile::new("narrow.gguf");
        shrink_ffn(&source, &importance, 1024)
            .unwrap()
            .write(&file.0)
            .unwrap();
        let narrow_file = Gguf::open(&file.0).unwrap();
        let narrow = Llama::load(&narrow_file).unwrap();
        assert_eq!(narrow.config.ffn_dim, 1024);
        assert!(narrow.bytes_per_token() < model.bytes_per_token());
        for m in [&small, &narrow] {
            let mut cache = KvCache::with_limit(&m.config, 8);
            let logits = m
                .forward(&pool, &mut cache, &tokens[..4], Logits::Last)
                .unwrap();
            assert!(logits.iter().all(|x| x.is_finite()));
        }
        // Keeping every channel changes nothing but the down projection's requantization.
        let all = shrink_ffn(&source, &importance, 1536).unwrap().to_bytes();
        assert!(!all.is_empty());
    }
}
