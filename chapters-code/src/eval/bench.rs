//! What the compression chapters measure on every model they make: perplexity on the
//! reference text, the greedy next-token predictions (for agreement with the source), and
//! decode speed, taken in turns with the source model so that a slow stretch of a shared
//! machine slows both.

use super::perplexity::perplexity;
use crate::formats::Gguf;
use crate::generate::{Request, generate};
use crate::kernels::pool::ThreadPool;
use crate::model::{Llama, ModelError};
use crate::sampling::SamplingParams;
use crate::tokenizer::{TokenId, Tokenizer};

/// What one model measured.
pub struct Eval {
    pub ppl: f64,
    /// The greedy prediction at every scored position.
    pub predictions: Vec<TokenId>,
    pub decode_tok_s: Option<f64>,
}

/// The texts and the machinery every evaluation shares.
pub struct ModelBench {
    pub pool: ThreadPool,
    pub tokenizer: Tokenizer,
    /// The reference text's tokens.
    pub scored: Vec<TokenId>,
    /// Chunks of 512 tokens scored for perplexity.
    pub chunks: usize,
    /// Tokens decoded greedily for a speed measurement.
    pub decode_tokens: usize,
}

impl ModelBench {
    /// Perplexity and predictions of `gguf`, and its decode speed when `decode` is set.
    pub fn evaluate(&self, gguf: &Gguf, decode: bool) -> Result<Eval, ModelError> {
        let model = Llama::load(gguf)?;
        let r = perplexity(
            &model,
            &self.pool,
            &self.scored,
            512,
            Some(self.chunks),
            |_, _, _| {},
        )?;
        let decode_tok_s = if decode && self.decode_tokens > 0 {
            Some(self.decode_speed(&model)?)
        } else {
            None
        };
        Ok(Eval {
            ppl: r.ppl,
            predictions: r.predictions,
            decode_tok_s,
        })
    }

    /// Greedy decode speed after the text's first 32 tokens (tokens/s of one run).
    pub fn decode_speed(&self, model: &Llama) -> Result<f64, ModelError> {
        let request = Request {
            prompt_ids: self.scored.iter().copied().take(32).collect(),
            max_tokens: self.decode_tokens,
            sampling: SamplingParams::default(),
            stop_tokens: vec![],
            stop_strings: vec![],
        };
        Ok(generate(model, &self.tokenizer, &self.pool, &request, |_| {})?.decode_tokens_per_s())
    }

    /// `model`'s decode speed and its ratio to `source`'s, measured in turns (source, model,
    /// source, …): medians of `rounds`.
    pub fn paired_speed(
        &self,
        source: &Llama,
        model: &Llama,
        rounds: usize,
    ) -> Result<(f64, f64), ModelError> {
        let mut speeds = Vec::with_capacity(rounds);
        let mut ratios = Vec::with_capacity(rounds);
        for _ in 0..rounds.max(1) {
            let base = self.decode_speed(source)?;
            let ours = self.decode_speed(model)?;
            speeds.push(ours);
            ratios.push(ours / base);
        }
        Ok((median(&speeds), median(&ratios)))
    }
}

/// The median of `values` (the upper one of an even count), NaN for none: what the benchmarks
/// report over their rounds.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
