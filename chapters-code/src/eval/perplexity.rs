//! Perplexity as `llama-perplexity -c N` computes it: the text's tokens are cut into
//! non-overlapping chunks of N; each chunk runs through the model on a fresh cache in one
//! pass; only the second half of each chunk is scored (every scored token sees at least N/2
//! tokens of context); perplexity is exp(mean negative log-likelihood).

use crate::kernels::pool::ThreadPool;
use crate::model::{KvCache, KvPrecision, Llama, Logits, ModelError};
use crate::sampling::argmax;
use crate::tokenizer::TokenId;
use serde::Serialize;

/// The outcome, with the running value after each chunk (llama-perplexity prints those).
#[derive(Debug, Clone, Serialize)]
pub struct PerplexityResult {
    pub ppl: f64,
    /// Standard error of the perplexity estimate (from the spread of the per-token NLL).
    pub stderr: f64,
    pub ctx: usize,
    pub chunks: usize,
    /// Tokens of the whole text.
    pub tokens: usize,
    /// Tokens whose probability was scored.
    pub scored: usize,
    pub running_ppl: Vec<f64>,
    /// The model's most likely next token at every scored position, in order: two models
    /// agree on a text where these agree (the quantization chapter's greedy agreement).
    #[serde(skip)]
    pub predictions: Vec<TokenId>,
}

// ANCHOR: log_softmax
/// −log softmax(logits)[target], in f64.
pub fn nll(logits: &[f32], target: TokenId) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    sum.ln() - f64::from(logits[target as usize] - max)
}
// ANCHOR_END: log_softmax

/// Perplexity of `tokens` at context `ctx`, over at most `max_chunks` chunks (all if `None`).
/// `on_chunk(done, total, running_ppl)` reports progress.
pub fn perplexity(
    model: &Llama,
    pool: &ThreadPool,
    tokens: &[TokenId],
    ctx: usize,
    max_chunks: Option<usize>,
    on_chunk: impl FnMut(usize, usize, f64),
) -> Result<PerplexityResult, ModelError> {
    perplexity_with_cache(
        model,
        pool,
        tokens,
        ctx,
        max_chunks,
        KvPrecision::F16,
        on_chunk,
    )
}

// ANCHOR: perplexity
/// [`perplexity`] with the KV cache stored at `precision`.
pub fn perplexity_with_cache(
    model: &Llama,
    pool: &ThreadPool,
    tokens: &[TokenId],
    ctx: usize,
    max_chunks: Option<usize>,
    precision: KvPrecision,
    mut on_chunk: impl FnMut(usize, usize, f64),
) -> Result<PerplexityResult, ModelError> {
    if ctx < 4 || ctx > model.config.context_length {
        return Err(ModelError::BadConfig(format!(
            "context {ctx} must be between 4 and the model's {}",
            model.config.context_length
        )));
    }
    let available = tokens.len() / ctx;
    let chunks = max_chunks.map_or(available, |m| m.min(available));
    if chunks == 0 {
        return Err(ModelError::BadConfig(format!(
            "the text has {} tokens: at least {ctx} are needed for one chunk",
            tokens.len()
        )));
    }
    let vocab = model.config.vocab_size;
    let first = ctx / 2;
    let (mut sum, mut sum_sq, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut running = Vec::with_capacity(chunks);
    let mut predictions = Vec::with_capacity(chunks * (ctx - 1 - first));
    let mut cache = KvCache::with_precision(&model.config, ctx, precision)?;
    for chunk in 0..chunks {
        let ids = &tokens[chunk * ctx..(chunk + 1) * ctx];
        cache.clear();
        // Logits of positions first..ctx only: the output head is a large matrix.
        let logits = model.forward(pool, &mut cache, ids, Logits::From(first))?;
        // Position j predicts token j + 1; score j in first..ctx-1.
        for j in first..ctx - 1 {
            let row = j - first;
            let scores = &logits[row * vocab..(row + 1) * vocab];
            let v = nll(scores, ids[j + 1]);
            predictions.push(argmax(scores));
            sum += v;
            sum_sq += v * v;
            count += 1;
        }
        let ppl = (sum / count as f64).exp();
        running.push(ppl);
        on_chunk(chunk + 1, chunks, ppl);
    }
    let mean = sum / count as f64;
    let variance = (sum_sq / count as f64 - mean * mean).max(0.0);
    let ppl = mean.exp();
    Ok(PerplexityResult {
        ppl,
        stderr: ppl * (variance / (count.max(2) - 1) as f64).sqrt(),
        ctx,
        chunks,
        tokens: tokens.len(),
        scored: count,
        running_ppl: running,
        predictions,
    })
}
// ANCHOR_END: perplexity

// ANCHOR: agreement
/// Share of positions where two runs over the same tokens predict the same next token
/// (0 when either is empty or their lengths differ: they did not score the same positions).
pub fn agreement(a: &[TokenId], b: &[TokenId]) -> f64 {
    if a.is_empty() || a.len() != b.len() {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}
// ANCHOR_END: agreement

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_of_a_certain_token_is_zero_and_of_uniform_is_ln_n() {
        assert!(nll(&[0.0, 100.0, 0.0], 1) < 1e-30);
        assert!((nll(&[1.0; 8], 3) - 8f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn agreement_counts_equal_positions() {
        assert_eq!(agreement(&[1, 2, 3, 4], &[1, 2, 0, 4]), 0.75);
        assert_eq!(agreement(&[1, 2], &[1, 2, 3]), 0.0);
        assert_eq!(agreement(&[], &[]), 0.0);
    }

    #[test]
    fn first_chunks_match_llama_perplexity() {
        let (Some(model_path), Some(text_path)) = (
            crate::assets::model_for_tests(),
            crate::assets::perplexity_text_for_tests(),
        ) else {
            return;
        };
        let g = crate::formats::Gguf::open(model_path).unwrap();
        let model = Llama::load(&g).unwrap();
        let tokenizer = crate::tokenizer::Tokenizer::from_gguf(&g).unwrap();
        let text = std::fs::read_to_string(text_path).unwrap();
        let tokens = tokenizer.encode(&text, true);
        let reference = &crate::reference::get().perplexity;
        assert_eq!(tokens.len(), reference.tokens_no_bos);
        let result = perplexity(
            &model,
            &ThreadPool::new(2),
            &tokens,
            512,
            Some(2),
            |_, _, _| {},
        )
        .unwrap();
        for (ours, theirs) in result
            .running_ppl
            .iter()
            .zip(&reference.first_chunks_running_ppl)
        {
            assert!(
                (ours / theirs - 1.0).abs() < 0.01,
                "running ppl {ours} vs llama.cpp {theirs}"
            );
        }
    }
}
