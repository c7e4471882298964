//! One request decoded speculatively: the drafter proposes up to k tokens, the target checks
//! them all in one forward pass of k + 1 positions, the rejected positions' keys and values are
//! dropped from the cache. Stop tokens, stop strings, `max_tokens` and the context limit act
//! exactly as in [`crate::generate::generate`], token for token.

use super::budget::{Budget, DraftLength};
use super::drafter::Drafter;
use super::rule::{Mode, Verdict, distribution, draw, verify};
use crate::generate::{FinishReason, Generation, Request, StageTimes, StopMatcher};
use crate::kernels::pool::ThreadPool;
use crate::model::{KvCache, Llama, Logits, ModelError};
use crate::sampling::{Rng, argmax};
use crate::tokenizer::{StreamDecoder, TokenId, Tokenizer};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What speculation did during one request.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SpecStats {
    /// Forward passes of the target after the prefill (each verifies one draft).
    pub target_passes: usize,
    /// Draft tokens proposed, and how many of them the target accepted.
    pub drafted: usize,
    pub accepted: usize,
    /// accepted_at[i]: drafts whose position i + 1 was proposed and accepted.
    pub proposed_at: Vec<usize>,
    pub accepted_at: Vec<usize>,
    /// Wall time spent drafting, and in the target's verify passes.
    pub draft_time: Duration,
    pub verify_time: Duration,
}

impl SpecStats {
    /// Share of draft tokens accepted (α as measured; 0 when nothing was drafted).
    pub fn acceptance(&self) -> f64 {
        self.accepted as f64 / self.drafted.max(1) as f64
    }

    /// Tokens decided per target pass: accepted drafts plus the one the target adds itself.
    pub fn tokens_per_pass(&self) -> f64 {
        (self.accepted + self.target_passes) as f64 / self.target_passes.max(1) as f64
    }

    fn record(&mut self, proposed: usize, verdict: Verdict) {
        self.target_passes += 1;
        self.drafted += proposed;
        self.accepted += verdict.accepted;
        if self.proposed_at.len() < proposed {
            self.proposed_at.resize(proposed, 0);
            self.accepted_at.resize(proposed, 0);
        }
        self.proposed_at[..proposed]
            .iter_mut()
            .for_each(|n| *n += 1);
        self.accepted_at[..verdict.accepted]
            .iter_mut()
            .for_each(|n| *n += 1);
    }
}

// ANCHOR: step
/// One speculative step. `cache` holds every decided token but the last, `last`; `history` is
/// every decided token, `last` included. Drafts up to `k` tokens, verifies them with one target
/// pass over `[last, draft…]`, keeps the accepted positions' keys and values, and returns the
/// tokens decided: the accepted drafts, then the target's own.
#[allow(clippy::too_many_arguments)]
fn step(
    target: &Llama,
    pool: &ThreadPool,
    cache: &mut KvCache,
    drafter: &mut dyn Drafter,
    history: &[TokenId],
    k: usize,
    mode: &mut Mode<'_>,
    stats: &mut SpecStats,
) -> Result<Vec<TokenId>, ModelError> {
    let last = *history.last().expect("a decided token to continue from");
    let t = Instant::now();
    let mut draft = drafter.propose(pool, history, k, mode)?;
    draft.tokens.truncate(k);
    if let Some(q) = &mut draft.q {
        q.truncate(k);
    }
    stats.draft_time += t.elapsed();

    let t = Instant::now();
    let before = cache.len();
    let mut input = Vec::with_capacity(draft.tokens.len() + 1);
    input.push(last);
    input.extend_from_slice(&draft.tokens);
    let logits = target.forward(pool, cache, &input, Logits::All)?;
    let vocab = target.config.vocab_size;
    let rows: Vec<&[f32]> = logits.chunks_exact(vocab).collect();
    let verdict = verify(mode, &draft, &rows, history);
    // Keep `last` and the accepted drafts; the rest never happened.
    cache.truncate(before + 1 + verdict.accepted);
    stats.verify_time += t.elapsed();
    stats.record(draft.tokens.len(), verdict);

    let mut decided = draft.tokens[..verdict.accepted].to_vec();
    decided.push(verdict.next);
    Ok(decided)
}
// ANCHOR_END: step

/// The first token after the prompt, as plain decoding picks it.
fn first_token(logits: &[f32], history: &[TokenId], mode: &mut Mode<'_>) -> TokenId {
    match mode {
        Mode::Greedy => argmax(logits),
        Mode::Sample { params, rng } => {
            draw(&distribution(params, logits, history), rng.next_f32())
        }
    }
}

// ANCHOR: generate
/// Runs `request` with speculation of up to `k` tokens per target pass (a number: always up to
/// k; [`DraftLength::Adaptive`]: adapted to the verdicts). Greedy requests
/// (temperature 0) give the same tokens as [`crate::generate::generate`], bit for bit; sampled
/// ones have its distribution (not its random draws).
pub fn generate_speculative(
    target: &Llama,
    tokenizer: &Tokenizer,
    pool: &ThreadPool,
    drafter: &mut dyn Drafter,
    k: impl Into<DraftLength>,
    request: &Request,
    mut on_text: impl FnMut(&str),
) -> Result<(Generation, SpecStats), ModelError> {
    let mut budget = Budget::new(k.into());
    let params = &request.sampling;
    let mut rng = Rng::new(params.seed);
    let mut mode = Mode::for_params(params, &mut rng);
    let limit = (request.prompt_ids.len() + request.max_tokens).min(target.config.context_length);
    let mut cache = KvCache::with_limit(&target.config, limit);
    let mut decoder = StreamDecoder::new();
    let mut stops = StopMatcher::new(&request.stop_strings);
    let mut times = StageTimes::default();
    let mut stats = SpecStats::default();
    let mut history = request.prompt_ids.clone();
    let mut generated = Vec::new();
    let mut text = String::new();
    let mut finish = FinishReason::Length;

    let start = Instant::now();
    let logits = target.forward(pool, &mut cache, &request.prompt_ids, Logits::Last)?;
    // Tokens decided but not yet emitted; `cache` holds every decided token but the last.
    let mut ready = VecDeque::from([first_token(&logits, &history, &mut mode)]);
    times.prefill = start.elapsed();

    while generated.len() < request.max_tokens {
        let next = ready.pop_front().expect("a decided token");
        if request.stop_tokens.contains(&next) {
            finish = FinishReason::Stop;
            break;
        }
        generated.push(next);
        history.push(next);

        let t = Instant::now();
        let piece = decoder.push(tokenizer, next);
        let (released, hit_stop) = stops.push(&piece);
        times.detokenize += t.elapsed();
        if !released.is_empty() {
            on_text(&released);
            text.push_str(&released);
        }
        if hit_stop {
            finish = FinishReason::Stop;
            break;
        }
        // Plain decoding's cache would now hold every emitted token but this one.
        if generated.len() == request.max_tokens
            || request.prompt_ids.len() + generated.len() > limit
        {
            break;
        }
        if ready.is_empty() {
            let t = Instant::now();
            // Room for `next` and the draft in the cache, and no draft past `max_tokens`.
            let room = limit - cache.len() - 1;
            let wanted = request.max_tokens - generated.len() - 1;
            let k = budget.take().min(room).min(wanted);
            let (drafted, accepted) = (stats.drafted, stats.accepted);
            ready.extend(step(
                target, pool, &mut cache, drafter, &history, k, &mut mode, &mut stats,
            )?);
            budget.record(stats.drafted - drafted, stats.accepted - accepted);
            times.decode += t.elapsed();
        }
    }
    if finish == FinishReason::Length {
        let t = Instant::now();
        let (mut rest, hit_stop) = stops.push(&decoder.finish());
        if hit_stop {
            finish = FinishReason::Stop;
        } else {
            rest += &stops.finish();
        }
        times.detokenize += t.elapsed();
        if !rest.is_empty() {
            on_text(&rest);
            text.push_str(&rest);
        }
    }
    Ok((
        Generation {
            generated_ids: generated,
            text,
            finish_reason: finish,
            times,
        },
        stats,
    ))
}
// ANCHOR_END: generate
