//! The acceptance rules. Greedy: a draft token stands while it is the target's argmax. Sampling
//! (Leviathan et al. 2023): a draft token x drawn from q stands with probability min(1, p(x)/q(x));
//! the first one that falls is replaced by a draw from norm(max(0, p − q)); when all stand, one
//! bonus token is drawn from p. Either way the tokens have the target's distribution — greedy's
//! are the very tokens plain decoding picks.

use crate::sampling::{Rng, SamplingParams, apply_penalties, argmax};
use crate::tokenizer::TokenId;

/// How tokens are chosen, for the drafter and for the target.
pub enum Mode<'a> {
    Greedy,
    /// Sampling with `params` (temperature > 0), random numbers from `rng`.
    Sample {
        params: &'a SamplingParams,
        rng: &'a mut Rng,
    },
}

impl<'a> Mode<'a> {
    /// The mode that picks what plain decoding with `params` picks: [`Mode::Greedy`] for
    /// temperature 0 without penalties; otherwise sampling from [`distribution`], which at
    /// temperature 0 is one-hot on the argmax after the penalties (so `rng` decides nothing).
    pub fn for_params(params: &'a SamplingParams, rng: &'a mut Rng) -> Mode<'a> {
        let penalties_off = params.repetition_penalty == 1.0
            && params.presence_penalty == 0.0
            && params.frequency_penalty == 0.0;
        if params.temperature == 0.0 && (penalties_off || params.penalty_last_n == 0) {
            Mode::Greedy
        } else {
            Mode::Sample { params, rng }
        }
    }
}

// ANCHOR: distribution
/// The distribution [`crate::sampling::Sampler::sample`] draws from, over the whole vocabulary:
/// penalties over the recent `history`, then top-k, top-p and min-p on the temperature-1
/// probabilities, then the softmax at the temperature of what is kept; 0 elsewhere. (p and q
/// of the acceptance rule are both this, of the target's and the draft's logits.)
pub fn distribution(params: &SamplingParams, logits: &[f32], history: &[TokenId]) -> Vec<f32> {
    let mut logits = logits.to_vec();
    let recent = &history[history.len().saturating_sub(params.penalty_last_n)..];
    apply_penalties(
        &mut logits,
        recent,
        params.repetition_penalty,
        params.presence_penalty,
        params.frequency_penalty,
    );
    let mut dist = vec![0.0; logits.len()];
    if params.temperature == 0.0 {
        dist[argmax(&logits) as usize] = 1.0;
        return dist;
    }
    let mut cand: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if params.top_k > 0 {
        cand.truncate(params.top_k);
    }
    let probs = softmax(&cand, 1.0);
    if params.top_p < 1.0 {
        let mut total = 0.0;
        let keep = probs
            .iter()
            .position(|&q| {
                total += q;
                total >= params.top_p
            })
            .map_or(cand.len(), |i| i + 1);
        cand.truncate(keep.max(1));
    }
    if params.min_p > 0.0 {
        let floor = probs[0] * params.min_p;
        let keep = probs
            .iter()
            .take(cand.len())
            .take_while(|&&q| q >= floor)
            .count();
        cand.truncate(keep.max(1));
    }
    for (&(id, _), q) in cand.iter().zip(softmax(&cand, params.temperature)) {
        dist[id] = q;
    }
    dist
}
// ANCHOR_END: distribution

/// Softmax of (id, logit) pairs sorted most likely first, at `temperature`.
fn softmax(cand: &[(usize, f32)], temperature: f32) -> Vec<f32> {
    let max = cand.first().map_or(0.0, |c| c.1);
    let exps: Vec<f64> = cand
        .iter()
        .map(|c| f64::from((c.1 - max) / temperature).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

/// The token at which the running sum of `dist` first exceeds `r` ∈ [0, 1) (the last token
/// with mass when rounding leaves the sum short of `r`).
pub fn draw(dist: &[f32], r: f32) -> TokenId {
    let mut total = 0.0;
    let mut last = 0;
    for (i, &q) in dist.iter().enumerate() {
        if q > 0.0 {
            total += q;
            last = i;
            if r < total {
                return i as TokenId;
            }
        }
    }
    last as TokenId
}

// ANCHOR: residual
/// norm(max(0, p − q)): what a rejection draws from. It has mass only where the target wants a
/// token more than the draft proposed it, which makes up exactly what rejections took away.
pub fn residual(p: &[f32], q: &[f32]) -> Vec<f32> {
    let mut r: Vec<f32> = p.iter().zip(q).map(|(&p, &q)| (p - q).max(0.0)).collect();
    let sum: f64 = r.iter().map(|&x| f64::from(x)).sum();
    if sum > 0.0 {
        r.iter_mut().for_each(|x| *x = (f64::from(*x) / sum) as f32);
        r
    } else {
        // p ≤ q everywhere means p == q, where no rejection happens; rounding can still get here.
        p.to_vec()
    }
}
// ANCHOR_END: residual

/// A verified draft: how many draft tokens stand, and the token after them (the target's
/// correction at the first rejected position, or the bonus token when all stand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub accepted: usize,
    pub next: TokenId,
}

// ANCHOR: verify_greedy
/// Greedy verification. `rows[i]` is the target's logits after the context and the first `i`
/// draft tokens (`draft.len() + 1` rows).
pub fn verify_greedy(draft: &[TokenId], rows: &[&[f32]]) -> Verdict {
    assert_eq!(
        rows.len(),
        draft.len() + 1,
        "one row per draft token, and one after"
    );
    for (i, &d) in draft.iter().enumerate() {
        let best = argmax(rows[i]);
        if best != d {
            return Verdict {
                accepted: i,
                next: best,
            };
        }
    }
    Verdict {
        accepted: draft.len(),
        next: argmax(rows[draft.len()]),
    }
}
// ANCHOR_END: verify_greedy

// ANCHOR: verify_sampled
/// Speculative sampling. `p[i]` is the target's distribution after the context and the first
/// `i` draft tokens (`draft.tokens.len() + 1` of them).
pub fn verify_sampled(draft: &super::Draft, p: &[Vec<f32>], rng: &mut Rng) -> Verdict {
    verify_sampled_with(draft, p, rng, residual)
}

/// [`verify_sampled`] with the rejection's distribution given (tests break it on purpose).
pub(crate) fn verify_sampled_with(
    draft: &super::Draft,
    p: &[Vec<f32>],
    rng: &mut Rng,
    on_reject: fn(&[f32], &[f32]) -> Vec<f32>,
) -> Verdict {
    assert_eq!(
        p.len(),
        draft.tokens.len() + 1,
        "one p per draft token, and one after"
    );
    for (i, &x) in draft.tokens.iter().enumerate() {
        let (px, qx) = (p[i][x as usize], draft.q_of(i));
        // Accept with probability min(1, p(x) / q(x)): u < p/q ⇔ u·q < p.
        if rng.next_f32() * qx < px {
            continue;
        }
        let next = match &draft.q {
            Some(q) => draw(&on_reject(&p[i], &q[i]), rng.next_f32()),
            None => {
                let mut one_hot = vec![0.0; p[i].len()];
                one_hot[x as usize] = 1.0;
                draw(&on_reject(&p[i], &one_hot), rng.next_f32())
            }
        };
        return Verdict { accepted: i, next };
    }
    let last = draft.tokens.len();
    Verdict {
        accepted: last,
        next: draw(&p[last], rng.next_f32()),
    }
}
// ANCHOR_END: verify_sampled

// ANCHOR: verify
/// Verifies `draft` with the rule of `mode`. `rows[i]` is the target's logits after `history`
/// (every decided token) and the first `i` draft tokens: `draft.tokens.len() + 1` rows.
pub fn verify(
    mode: &mut Mode<'_>,
    draft: &super::Draft,
    rows: &[&[f32]],
    history: &[TokenId],
) -> Verdict {
    match mode {
        Mode::Greedy => verify_greedy(&draft.tokens, rows),
        Mode::Sample { params, rng } => {
            let mut seen = history.to_vec();
            let mut p = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                p.push(distribution(params, row, &seen));
                if let Some(&d) = draft.tokens.get(i) {
                    seen.push(d);
                }
            }
            verify_sampled(draft, &p, rng)
        }
    }
}
// ANCHOR_END: verify
