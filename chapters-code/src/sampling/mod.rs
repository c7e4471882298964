//! Choosing the next token from the logits: greedy, or random after penalties, top-k, top-p,
//! min-p and temperature — the same chain, in the same order, as llama.cpp's default sampler.
//! The random numbers come from a seeded generator: same seed, same text.

mod rng;

pub use rng::Rng;

use crate::tokenizer::TokenId;
use serde::{Deserialize, Serialize};

// ANCHOR: params
/// How to pick tokens. The default is greedy (temperature 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 picks the most likely token (greedy); higher flattens the distribution.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities add up to p (1 = all).
    pub top_p: f32,
    /// Drop tokens less likely than min_p × the most likely one's probability (0 = none).
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of tokens already seen (1 = off).
    pub repetition_penalty: f32,
    /// Subtract from the logit of every token already seen (OpenAI's presence_penalty).
    pub presence_penalty: f32,
    /// Subtract, per occurrence, from the logit of tokens already seen (frequency_penalty).
    pub frequency_penalty: f32,
    /// How many of the last tokens the penalties look at.
    pub penalty_last_n: usize,
    pub seed: u64,
}
// ANCHOR_END: params

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: 42,
        }
    }
}

/// A parameter out of its range.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{param} = {value} is invalid: {expected}")]
pub struct ParamError {
    pub param: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl SamplingParams {
    /// Checks every parameter's range.
    pub fn validate(&self) -> Result<(), ParamError> {
        let bad = |param, value: f32, expected| {
            Err(ParamError {
                param,
                value: value.to_string(),
                expected,
            })
        };
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature", self.temperature, "a finite number ≥ 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p, "in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "in [0, 1]");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(
                "repetition_penalty",
                self.repetition_penalty,
                "a finite number > 0",
            );
        }
        for (param, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return bad(param, v, "in [-2, 2]");
            }
        }
        Ok(())
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(logits: &[f32]) -> TokenId {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as TokenId
}

/// A sampler: parameters plus the random generator's state.
pub struct Sampler {
    pub params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = Rng::new(params.seed);
        Sampler { params, rng }
    }

    // ANCHOR: sample
    /// The next token, given the logits of the last position and the tokens so far (for
    /// the penalties). `logits` is modified.
    pub fn sample(&mut self, logits: &mut [f32], history: &[TokenId]) -> TokenId {
        let p = &self.params;
        let recent = &history[history.len().saturating_sub(p.penalty_last_n)..];
        apply_penalties(
            logits,
            recent,
            p.repetition_penalty,
            p.presence_penalty,
            p.frequency_penalty,
        );
        if p.temperature == 0.0 {
            return argmax(logits);
        }
        // Candidates sorted by logit, most likely first.
        let mut cand: Vec<(TokenId, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as TokenId, l))
            .collect();
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 {
            cand.truncate(p.top_k);
        }
        let probs = softmax_of(&cand, 1.0);
        if p.top_p < 1.0 {
            let mut total = 0.0;
            let keep = probs
                .iter()
                .position(|&q| {
                    total += q;
                    total >= p.top_p
                })
                .map_or(cand.len(), |i| i + 1);
            cand.truncate(keep.max(1));
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p;
            let keep = probs
                .iter()
                .take(cand.len())
                .take_while(|&&q| q >= floor)
                .count();
            cand.truncate(keep.max(1));
        }
        let probs = softmax_of(&cand, p.temperature);
        let r = self.rng.next_f32();
        let mut total = 0.0;
        for (&(id, _), &q) in cand.iter().zip(&probs) {
            total += q;
            if r < total {
                return id;
            }
        }
        cand.last().map_or(0, |c| c.0)
    }
    // ANCHOR_END: sample
}

/// Softmax of candidates' logits divided by `temperature`.
fn softmax_of(cand: &[(TokenId, f32)], temperature: f32) -> Vec<f32> {
    let max = cand.first().map_or(0.0, |c| c.1);
    let exps: Vec<f64> = cand
        .iter()
        .map(|c| f64::from((c.1 - max) / temperature).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

/// Repetition (CTRL-style), presence and frequency penalties over the recent tokens.
pub fn apply_penalties(
    logits: &mut [f32],
    recent: &[TokenId],
    repetition: f32,
    presence: f32,
    frequency: f32,
) {
    if recent.is_empty() || (repetition == 1.0 && presence == 0.0 && frequency == 0.0) {
        return;
    }
    let mut counts: std::collections::HashMap<TokenId, u32> = std::collections::HashMap::new();
    for &t in recent {
        *counts.entry(t).or_default() += 1;
    }
    for (&t, &n) in &counts {
        let Some(l) = logits.get_mut(t as usize) else {
            continue;
        };
        if repetition != 1.0 {
            *l = if *l > 0.0 {
                *l / repetition
            } else {
                *l * repetition
            };
        }
        *l -= presence + frequency * n as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, 0.5, 2.9]
    }

    #[test]
    fn greedy_takes_the_largest_and_the_first_on_ties() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&mut logits(), &[]), 1);
        assert_eq!(argmax(&[2.0, 5.0, 5.0]), 1);
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let params = SamplingParams {
            temperature: 1.5,
            ..Default::default()
        };
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..params.clone()
            });
            (0..50)
                .map(|_| s.sample(&mut logits(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(7));
    }

    #[test]
    fn top_k_one_and_tiny_top_p_and_min_p_one_are_greedy() {
        for params in [
            SamplingParams {
                temperature: 2.0,
                top_k: 1,
                ..Default::default()
            },
            SamplingParams {
                temperature: 2.0,
                top_p: 1e-6,
                ..Default::default()
            },
            SamplingParams {
                temperature: 2.0,
                min_p: 1.0,
                ..Default::default()
            },
        ] {
            let mut s = Sampler::new(params);
            for _ in 0..20 {
                assert_eq!(s.sample(&mut logits(), &[]), 1);
            }
        }
    }

    #[test]
    fn top_k_keeps_only_the_k_best() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 5.0,
            top_k: 2,
            ..Default::default()
        });
        for _ in 0..200 {
            let t = s.sample(&mut logits(), &[]);
            assert!(t == 1 || t == 4, "{t}");
        }
    }

    #[test]
    fn penalties_lower_seen_tokens() {
        let mut l = logits();
        apply_penalties(&mut l, &[1, 1, 3], 2.0, 0.5, 0.25);
        assert_eq!(l[1], 3.0 / 2.0 - 0.5 - 0.5);
        assert_eq!(l[3], 0.5 / 2.0 - 0.5 - 0.25);
        assert_eq!(l[2], 2.0);
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 10.0,
            ..Default::default()
        });
        assert_eq!(
            s.sample(&mut logits(), &[1]),
            4,
            "the penalty moves greedy off token 1"
        );
    }

    #[test]
    fn invalid_parameters_are_named() {
        let bad = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().param, "top_p");
        let bad = SamplingParams {
            temperature: f32::NAN,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().param, "temperature");
        assert!(SamplingParams::default().validate().is_ok());
    }
}
