//! The scheduler: one `step()` = admit, plan, one batched forward pass, sample, stream,
//! retire. Synchronous and deterministic, so that the replay demo and the tests drive it
//! directly; the server's runner calls it from its own thread.

use super::profile::{Stage, StageProfile};
use super::speculation::{SeqSpec, Speculation};
use super::{EngineRequest, Event, EventSink, Finish, RequestId, TokenLogprob};
use crate::generate::{FinishReason, StopMatcher};
use crate::kernels::pool::ThreadPool;
use crate::kv::{BlockPool, PagedKv};
use crate::model::{Llama, Logits, ModelError, SeqStep};
use crate::sampling::Sampler;
use crate::speculative::{Draft, Mode, verify};
use crate::tokenizer::{StreamDecoder, TokenId, Tokenizer};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

// ANCHOR: policy
/// How waiting requests join the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Static batching: when the batch is empty, take up to `max_running` requests and run
    /// them until *all* are done. As in a padded batch (`generate()` over a batch), a finished
    /// sequence keeps its slot and keeps being computed, its tokens thrown away, until the
    /// longest one finishes; its response is sent when it finishes, not when the batch does.
    Static,
    /// Continuous (iteration-level) batching: at every step, admit waiting requests into free
    /// slots while KV blocks allow; finished sequences leave at once.
    Continuous,
}
// ANCHOR_END: policy

/// Limits of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub policy: Policy,
    /// Sequences in the running batch, at most.
    pub max_running: usize,
    /// Tokens through the model per step, at most (decode tokens first, then prefill chunks).
    pub max_batch_tokens: usize,
    /// Positions per KV block.
    pub block_tokens: usize,
    /// Memory for the KV cache, in bytes.
    pub kv_budget_bytes: usize,
    /// How the model computes attention (naive: llama.cpp's arithmetic, the parity suite's).
    pub attention: crate::attention::AttentionKind,
    /// Speculative decoding of greedy requests (`None`: off).
    pub speculation: Option<Speculation>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            policy: Policy::Continuous,
            max_running: 16,
            max_batch_tokens: 256,
            block_tokens: crate::kv::DEFAULT_BLOCK_TOKENS,
            kv_budget_bytes: 256 << 20,
            attention: crate::attention::AttentionKind::Naive,
            speculation: None,
        }
    }
}

/// A sequence in the scheduler.
struct Seq<'m> {
    req: EngineRequest,
    /// Prompt, then every generated token; the KV cache holds the first `kv.len(id)` of them.
    tokens: Vec<TokenId>,
    prompt_len: usize,
    generated: usize,
    cached_tokens: usize,
    sampler: Sampler,
    decoder: StreamDecoder,
    stops: StopMatcher,
    /// Finished, but kept in a static batch as padding: computed, never streamed.
    padding: bool,
    /// Speculation state, made at the request's first speculative step.
    spec: Option<SeqSpec<'m>>,
    /// When the scheduler got it (its queue wait is recorded at its first admission).
    submitted: Instant,
    /// Where its sampling and detokenizing times go, if anywhere.
    profile: Option<Arc<StageProfile>>,
}

impl<'m> Seq<'m> {
    fn new(req: EngineRequest) -> Seq<'m> {
        Seq {
            tokens: req.request.prompt_ids.clone(),
            prompt_len: req.request.prompt_ids.len(),
            generated: 0,
            cached_tokens: 0,
            sampler: Sampler::new(req.request.sampling.clone()),
            decoder: StreamDecoder::new(),
            stops: StopMatcher::new(&req.request.stop_strings),
            padding: false,
            spec: None,
            submitted: Instant::now(),
            profile: None,
            req,
        }
    }

    /// Records `d` in `stage` of the profile, if there is one.
    fn record(&self, stage: Stage, d: std::time::Duration) {
        if let Some(p) = &self.profile {
            p.record(stage, d);
        }
    }

    fn finish(&self, reason: FinishReason) -> Finish {
        Finish {
            reason,
            prompt_tokens: self.prompt_len,
            completion_tokens: self.generated,
            cached_tokens: self.cached_tokens,
        }
    }
}

/// What one step did (for metrics and the batching chapter's utilization).
#[derive(Debug, Clone, Default)]
pub struct StepReport {
    /// Sequences in the forward pass.
    pub sequences: usize,
    /// Of those, the ones doing useful work (not static-batch padding).
    pub useful: usize,
    /// Tokens through the model (decode tokens + prefill chunk tokens).
    pub tokens: usize,
    pub decode_tokens: usize,
    pub prefill_tokens: usize,
    /// Sequences preempted to free blocks (their KV is recomputed later).
    pub preempted: usize,
    /// Draft tokens verified in this step (beyond `tokens`' one per decode), and how many of
    /// them the target accepted.
    pub drafted: usize,
    pub accepted: usize,
    pub finished: usize,
    pub seconds: f64,
}

/// The scheduler and its KV cache.
pub struct Scheduler<'m> {
    model: &'m Llama<'m>,
    tokenizer: &'m Tokenizer,
    pub config: SchedulerConfig,
    kv: PagedKv,
    waiting: VecDeque<Seq<'m>>,
    running: Vec<Seq<'m>>,
    /// The draft model of a self-draft or draft-file [`Speculation`].
    draft_model: Option<Llama<'m>>,
    /// Where the stages' times go (the server's `/metrics`), if anywhere.
    profile: Option<Arc<StageProfile>>,
}

impl<'m> Scheduler<'m> {
    pub fn new(
        model: &'m Llama<'m>,
        tokenizer: &'m Tokenizer,
        config: SchedulerConfig,
    ) -> Scheduler<'m> {
        let pool =
            BlockPool::with_budget(&model.config, config.block_tokens, config.kv_budget_bytes);
        // A self-draft is made here; a draft file is loaded by the caller and handed over with
        // `set_draft_model`. An invalid one leaves requests decoding plainly: the runner
        // checks the settings (`speculation::draft_model`) before it starts.
        let draft_model = config.speculation.as_ref().and_then(|s| {
            super::speculation::draft_model(model, &s.source, None)
                .ok()
                .flatten()
        });
        Scheduler {
            model,
            draft_model,
            tokenizer,
            kv: PagedKv::new(pool),
            waiting: VecDeque::new(),
            running: Vec::new(),
            config,
            profile: None,
        }
    }

    /// Records the stages' times in `profile` from now on.
    pub fn set_profile(&mut self, profile: Arc<StageProfile>) {
        self.profile = Some(profile);
    }

    /// Queues a request. Refuses one that can never fit: longer than the context or than the
    /// whole KV cache.
    pub fn submit(&mut self, req: EngineRequest) -> Result<(), ModelError> {
        self.submit_at(req, Instant::now())
    }

    /// [`Self::submit`] for a request handed over at `submitted` (its queue wait counts from
    /// there: the runner's channel is part of the queue).
    pub fn submit_at(&mut self, req: EngineRequest, submitted: Instant) -> Result<(), ModelError> {
        let needed = req.request.prompt_ids.len() + 1;
        let limit = self.model.config.context_length;
        if req.request.prompt_ids.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        if needed > limit {
            return Err(ModelError::ContextFull { needed, limit });
        }
        let capacity = self.kv.pool().total_blocks() * self.kv.block_tokens();
        if needed > capacity {
            return Err(ModelError::KvCacheTooSmall { needed, capacity });
        }
        let mut seq = Seq::new(req);
        seq.profile = self.profile.clone();
        seq.submitted = submitted;
        self.waiting.push_back(seq);
        Ok(())
    }

    /// Cancels a request wherever it is; its blocks go back to the pool. True if it existed.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        if let Some(i) = self.waiting.iter().position(|s| s.req.id == id) {
            self.waiting.remove(i);
            return true;
        }
        if let Some(i) = self.running.iter().position(|s| s.req.id == id) {
            self.running.remove(i);
            self.kv.free_sequence(id);
            return true;
        }
        false
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Ids of the running requests.
    pub fn running_ids(&self) -> Vec<RequestId> {
        self.running.iter().map(|s| s.req.id).collect()
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    pub fn kv(&self) -> &PagedKv {
        &self.kv
    }

    /// Hands over the draft model of a `draft:PATH` speculation, checked against the target.
    pub fn set_draft_model(&mut self, draft: Llama<'m>) -> Result<(), ModelError> {
        let Some(spec) = &self.config.speculation else {
            return Err(ModelError::BadConfig("speculation is off".into()));
        };
        self.draft_model = super::speculation::draft_model(self.model, &spec.source, Some(draft))?;
        Ok(())
    }

    // ANCHOR: admit
    /// Moves waiting requests into the batch while slots and blocks allow.
    fn admit(&mut self) {
        if self.config.policy == Policy::Static && !self.running.is_empty() {
            return; // the batch runs to completion before anyone joins
        }
        while self.running.len() < self.config.max_running {
            let Some(seq) = self.waiting.front() else {
                break;
            };
            // Admission control: the whole prompt plus one token must fit in the free blocks.
            let needed = (seq.tokens.len() + 1).div_ceil(self.kv.block_tokens());
            if needed > self.kv.available_blocks() {
                break;
            }
            let mut seq = self.waiting.pop_front().expect("front exists");
            match self.kv.add_sequence(seq.req.id, &seq.tokens) {
                Ok(cached) => {
                    if seq.generated == 0 {
                        seq.cached_tokens = cached;
                        if seq.tokens.len() == seq.prompt_len {
                            // First admission (a preempted request comes back with tokens).
                            seq.record(Stage::QueueWait, seq.submitted.elapsed());
                        }
                    }
                    self.running.push(seq);
                }
                Err(_) => {
                    self.waiting.push_front(seq); // an id still in the cache: retry later
                    break;
                }
            }
        }
    }
    // ANCHOR_END: admit

    /// Frees the youngest running sequence's blocks and puts it back at the head of the queue;
    /// it will recompute its KV (prompt and tokens so far) when admitted again.
    fn preempt_youngest(&mut self) -> bool {
        // Padding of a static batch goes first: it does no useful work.
        if let Some(i) = self.running.iter().position(|s| s.padding) {
            let seq = self.running.remove(i);
            self.kv.free_sequence(seq.req.id);
            return true;
        }
        let Some(i) = self
            .running
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| s.req.id)
            .map(|(i, _)| i)
        else {
            return false;
        };
        let seq = self.running.remove(i);
        self.kv.free_sequence(seq.req.id);
        self.waiting.push_front(seq);
        true
    }

    // ANCHOR: step
    /// One iteration: admit, plan the batch within the token and block budgets (preempting if
    /// blocks run out), run one batched forward pass, sample, stream, retire.
    pub fn step(
        &mut self,
        pool: &ThreadPool,
        sink: &mut dyn EventSink,
    ) -> Result<StepReport, ModelError> {
        let started = Instant::now();
        let mut report = StepReport::default();
        self.expire(sink);
        self.admit();
        self.draft(pool)?;

        // Plan: every sequence feeds the tokens its KV lacks; decodes (one token) first, then
        // prefill chunks with what is left of the token budget.
        let plan = loop {
            match self.plan() {
                Some(plan) => break plan,
                None => {
                    if !self.preempt_youngest() {
                        return Ok(report);
                    }
                    report.preempted += 1;
                }
            }
        };
        if plan.is_empty() {
            return Ok(report);
        }
        let ids: Vec<RequestId> = plan.iter().map(|p| self.running[p.seq].req.id).collect();
        // A speculating sequence feeds its last token and its draft, and wants every logit.
        let inputs: Vec<Vec<TokenId>> = plan
            .iter()
            .map(|p| {
                let seq = &self.running[p.seq];
                let mut input = seq.tokens[p.from..p.to].to_vec();
                if let (true, Some(spec)) = (p.drafted > 0, &seq.spec) {
                    input.extend_from_slice(&spec.draft.tokens);
                }
                input
            })
            .collect();
        let steps: Vec<SeqStep> = plan
            .iter()
            .zip(&inputs)
            .map(|(p, input)| SeqStep {
                tokens: input,
                logits: if p.drafted > 0 {
                    Logits::All
                } else {
                    Logits::Last
                },
            })
            .collect();
        for p in &plan {
            report.tokens += p.to - p.from + p.drafted;
            report.drafted += p.drafted;
            if p.to - p.from == 1 && p.from >= self.running[p.seq].prompt_len {
                report.decode_tokens += 1;
            } else {
                report.prefill_tokens += p.to - p.from;
            }
        }
        report.sequences = plan.len();
        report.useful = plan.iter().filter(|p| !self.running[p.seq].padding).count();
        let mut step_kv = self
            .kv
            .step(&ids)
            .map_err(|e| ModelError::BadConfig(e.to_string()))?;
        let forward = Instant::now();
        let logits = self.model.forward_batch(pool, &mut step_kv, &steps)?;
        if let Some(profile) = &self.profile {
            let stage = if report.prefill_tokens > 0 {
                Stage::PrefillStep
            } else {
                Stage::DecodeStep
            };
            profile.record(stage, forward.elapsed());
        }
        let max_len = self.max_len();
        let vocab = self.model.config.vocab_size;

        // Sample where a sequence has fed all its tokens; stream; retire.
        let mut done: Vec<usize> = Vec::new();
        for (p, mut logits) in plan.iter().zip(logits) {
            let seq = &mut self.running[p.seq];
            if p.drafted > 0 {
                let (accepted, outcome) = verify_and_stream(
                    seq,
                    p,
                    &mut self.kv,
                    &logits,
                    vocab,
                    self.tokenizer,
                    max_len,
                    sink,
                )?;
                report.accepted += accepted;
                if let Some(reason) = outcome {
                    if let Some(reason) = reason {
                        sink.send(seq.req.id, Event::Finished(seq.finish(reason)));
                        report.finished += 1;
                    }
                    done.push(p.seq); // speculation is never static-batch padding
                }
                continue;
            }
            let new_tokens = seq.tokens[p.from..p.to].to_vec();
            self.kv.record_tokens(seq.req.id, &new_tokens);
            if p.to < seq.tokens.len() {
                continue; // a prefill chunk: more prompt to feed
            }
            if seq.padding {
                // Static-batch padding: computed like the others, thrown away.
                seq.tokens.push(crate::sampling::argmax(&logits));
                if seq.tokens.len() >= max_len {
                    done.push(p.seq);
                }
                continue;
            }
            if let Some(reason) = sample_and_stream(seq, &mut logits, self.tokenizer, max_len, sink)
            {
                if let Some(reason) = reason {
                    sink.send(seq.req.id, Event::Finished(seq.finish(reason)));
                    report.finished += 1;
                }
                if self.config.policy == Policy::Static && reason.is_some() {
                    seq.padding = true; // keeps its slot until the whole batch is done
                } else {
                    done.push(p.seq);
                }
            }
        }
        if self.config.policy == Policy::Static && self.running.iter().all(|s| s.padding) {
            done.extend(0..self.running.len()); // the batch is over
        }
        done.sort_unstable_by(|a, b| b.cmp(a));
        done.dedup();
        for i in done {
            let seq = self.running.remove(i);
            self.kv.free_sequence(seq.req.id);
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
    // ANCHOR_END: step

    // ANCHOR: draft
    /// Drafts for this step: every greedy request that decodes one token proposes up to its
    /// budget's length, oldest first, within the step's spare tokens — unless more than
    /// `max_batch` requests decode, where drafting costs more than it saves.
    fn draft(&mut self, pool: &ThreadPool) -> Result<(), ModelError> {
        for seq in &mut self.running {
            if let Some(spec) = &mut seq.spec {
                spec.draft = Draft::default();
            }
        }
        // A static batch keeps its padding semantics: no speculation there.
        let Some(speculation) = &self.config.speculation else {
            return Ok(());
        };
        if self.config.policy == Policy::Static {
            return Ok(());
        }
        let mut decoding: Vec<usize> = (0..self.running.len())
            .filter(|&i| {
                let s = &self.running[i];
                s.generated > 0 && self.kv.len(s.req.id) == Some(s.tokens.len() - 1)
            })
            .collect();
        if decoding.len() > speculation.max_batch {
            return Ok(());
        }
        decoding.sort_by_key(|&i| self.running[i].req.id);
        let mut spare = self.config.max_batch_tokens.saturating_sub(decoding.len());
        let max_len = self.max_len();
        for i in decoding {
            let seq = &self.running[i];
            if spare == 0 {
                break;
            }
            if seq.padding || !Speculation::applies_to(&seq.sampler.params) {
                continue;
            }
            if seq.spec.is_none() {
                let limit = (seq.prompt_len + seq.req.request.max_tokens + 1).min(max_len);
                let spec = SeqSpec::new(
                    speculation,
                    self.draft_model.as_ref(),
                    &seq.sampler.params,
                    limit,
                );
                self.running[i].spec = spec;
            }
            let seq = &mut self.running[i];
            let Some(spec) = &mut seq.spec else {
                continue;
            };
            // No draft past `max_tokens` or the end of the cache.
            let wanted = seq.req.request.max_tokens.saturating_sub(seq.generated + 1);
            let room = max_len.saturating_sub(seq.tokens.len());
            let k = spec.budget.take().min(wanted).min(room).min(spare);
            if k == 0 {
                continue;
            }
            let mut mode = Mode::for_params(&seq.sampler.params, &mut spec.rng);
            let mut draft = spec.drafter.propose(pool, &seq.tokens, k, &mut mode)?;
            draft.tokens.truncate(k);
            if let Some(q) = &mut draft.q {
                q.truncate(k);
            }
            spare -= draft.tokens.len();
            spec.draft = draft;
        }
        Ok(())
    }
    // ANCHOR_END: draft

    /// Longest sequence that can run: the context, or the whole KV pool if smaller.
    fn max_len(&self) -> usize {
        let capacity = self.kv.pool().total_blocks() * self.kv.block_tokens();
        self.model.config.context_length.min(capacity)
    }

    /// Finishes requests past their deadline.
    fn expire(&mut self, sink: &mut dyn EventSink) {
        let now = Instant::now();
        let late = |s: &Seq| s.req.deadline.is_some_and(|d| now >= d);
        let mut expired: Vec<Seq> = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() {
            if late(&self.waiting[i]) {
                expired.extend(self.waiting.remove(i));
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < self.running.len() {
            if late(&self.running[i]) {
                let seq = self.running.remove(i);
                self.kv.free_sequence(seq.req.id);
                expired.push(seq);
            } else {
                i += 1;
            }
        }
        for seq in expired {
            sink.send(
                seq.req.id,
                Event::Finished(seq.finish(FinishReason::Timeout)),
            );
        }
    }

    /// The tokens each running sequence feeds this step, with their blocks reserved; `None`
    /// when even the decodes do not fit in the blocks (the caller preempts and retries).
    fn plan(&mut self) -> Option<Vec<Planned>> {
        let mut budget = self.config.max_batch_tokens.max(1);
        let mut plan = Vec::new();
        // Decodes first: one token each, oldest first.
        let mut order: Vec<usize> = (0..self.running.len()).collect();
        order.sort_by_key(|&i| self.running[i].req.id);
        let mut prefills = Vec::new();
        for &i in &order {
            let seq = &self.running[i];
            let have = self.kv.len(seq.req.id).unwrap_or(0);
            let missing = seq.tokens.len() - have;
            if missing == 1 && seq.generated > 0 {
                if budget == 0 {
                    continue;
                }
                let id = seq.req.id;
                let mut drafted = seq.spec.as_ref().map_or(0, |s| s.draft.tokens.len());
                // A draft that does not fit in the token budget or the blocks is dropped.
                if drafted > 0
                    && (1 + drafted > budget || self.kv.reserve(id, 1 + drafted).is_err())
                {
                    if let Some(spec) = &mut self.running[i].spec {
                        spec.draft = Draft::default();
                    }
                    drafted = 0;
                }
                if drafted == 0 && self.kv.reserve(id, 1).is_err() {
                    return None;
                }
                plan.push(Planned {
                    seq: i,
                    from: have,
                    to: have + 1,
                    drafted,
                });
                budget -= 1 + drafted;
            } else {
                prefills.push((i, have));
            }
        }
        for (i, have) in prefills {
            let seq = &self.running[i];
            let chunk = (seq.tokens.len() - have).min(budget);
            if chunk == 0 {
                continue;
            }
            // A prefill chunk takes what the blocks allow; with none, it waits a step.
            let fits = (1..=chunk)
                .rev()
                .find(|&n| self.kv.blocks_needed(seq.req.id, n) <= self.kv.available_blocks());
            let Some(n) = fits else { continue };
            if self.kv.reserve(seq.req.id, n).is_err() {
                continue;
            }
            plan.push(Planned {
                seq: i,
                from: have,
                to: have + n,
                drafted: 0,
            });
            budget -= n;
        }
        if plan.is_empty() && !self.running.is_empty() {
            // Nothing could be scheduled: blocks are exhausted by partial prefills.
            return None;
        }
        Some(plan)
    }
}

/// One sequence's part of a step: feed `tokens[from..to]`, then its draft's `drafted` tokens.
struct Planned {
    seq: usize,
    from: usize,
    to: usize,
    drafted: usize,
}

// ANCHOR: sample_and_stream
/// After a sequence's last fed token: samples the next, streams its text, and tells whether
/// the sequence is done — `Some(Some(reason))` finished, `Some(None)` the listener left.
fn sample_and_stream(
    seq: &mut Seq,
    logits: &mut [f32],
    tokenizer: &Tokenizer,
    max_len: usize,
    sink: &mut dyn EventSink,
) -> Option<Option<FinishReason>> {
    let started = Instant::now();
    let logprob = seq.req.logprobs.map(|k| token_logprobs(logits, k));
    let next = seq.sampler.sample(logits, &seq.tokens);
    seq.record(Stage::Sampling, started.elapsed());
    stream_token(seq, next, logprob, tokenizer, max_len, sink)
}

/// Streams the decided token `next` (or finishes at a stop token); the result as
/// [`sample_and_stream`]'s. `logprob`: the log-softmax of its position and the top tokens.
fn stream_token(
    seq: &mut Seq,
    next: TokenId,
    logprob: Option<Logprobs>,
    tokenizer: &Tokenizer,
    max_len: usize,
    sink: &mut dyn EventSink,
) -> Option<Option<FinishReason>> {
    let id = seq.req.id;
    if seq.req.request.stop_tokens.contains(&next) {
        return match flush(seq, sink) {
            Some(_) => Some(Some(FinishReason::Stop)),
            None => Some(None),
        };
    }
    seq.tokens.push(next);
    seq.generated += 1;
    let started = Instant::now();
    let piece = seq.decoder.push(tokenizer, next);
    let (text, hit_stop) = seq.stops.push(&piece);
    seq.record(Stage::Detokenize, started.elapsed());
    let logprob = logprob.map(|(all, top)| TokenLogprob {
        token: next,
        logprob: all[next as usize],
        top,
    });
    if !sink.send(
        id,
        Event::Token {
            token: next,
            text,
            logprob,
        },
    ) {
        return Some(None);
    }
    if hit_stop {
        return Some(Some(FinishReason::Stop));
    }
    if seq.generated >= seq.req.request.max_tokens || seq.tokens.len() >= max_len {
        return match flush(seq, sink) {
            Some(true) => Some(Some(FinishReason::Stop)),
            Some(false) => Some(Some(FinishReason::Length)),
            None => Some(None),
        };
    }
    None
}

// ANCHOR: verify_and_stream
/// After a speculative step of `p.drafted` draft tokens: verifies the draft against the
/// target's `logits` (one row of `vocab` per fed position), keeps the keys and values of the
/// last token and the accepted drafts and forgets the rest, then streams the accepted tokens
/// and the target's own, one by one, as plain decoding would (a stop token, a stop string or
/// `max_tokens` among them ends the request there). Returns the accepted count and the outcome
/// of [`sample_and_stream`].
#[allow(clippy::too_many_arguments)]
fn verify_and_stream(
    seq: &mut Seq,
    p: &Planned,
    kv: &mut PagedKv,
    logits: &[f32],
    vocab: usize,
    tokenizer: &Tokenizer,
    max_len: usize,
    sink: &mut dyn EventSink,
) -> Result<(usize, Option<Option<FinishReason>>), ModelError> {
    let spec = seq.spec.as_mut().expect("a planned draft has its state");
    let draft = std::mem::take(&mut spec.draft);
    let rows: Vec<&[f32]> = logits.chunks_exact(vocab).collect();
    let verdict = {
        let mut mode = Mode::for_params(&seq.sampler.params, &mut spec.rng);
        verify(&mut mode, &draft, &rows, &seq.tokens)
    };
    spec.budget.record(draft.tokens.len(), verdict.accepted);
    let id = seq.req.id;
    kv.truncate(id, p.from + 1 + verdict.accepted)
        .map_err(|e| ModelError::BadConfig(e.to_string()))?;
    let mut stood = vec![seq.tokens[p.from]];
    stood.extend_from_slice(&draft.tokens[..verdict.accepted]);
    kv.record_tokens(id, &stood);
    let decided = draft.tokens[..verdict.accepted]
        .iter()
        .copied()
        .chain([verdict.next]);
    for (row, token) in rows.iter().zip(decided) {
        let logprob = seq.req.logprobs.map(|k| token_logprobs(row, k));
        if let Some(outcome) = stream_token(seq, token, logprob, tokenizer, max_len, sink) {
            return Ok((verdict.accepted, Some(outcome)));
        }
    }
    Ok((verdict.accepted, None))
}
// ANCHOR_END: verify_and_stream

/// Sends the text held back at the end of a request (an incomplete character, a possible start
/// of a stop string that never completed). `Some(hit_stop)`, or `None` if the listener left.
fn flush(seq: &mut Seq, sink: &mut dyn EventSink) -> Option<bool> {
    let (rest, hit) = seq.stops.push(&seq.decoder.finish());
    let text = if hit {
        rest
    } else {
        rest + &seq.stops.finish()
    };
    if !text.is_empty() && !sink.send(seq.req.id, Event::Text(text)) {
        return None;
    }
    Some(hit)
}
// ANCHOR_END: sample_and_stream

/// A position's log-softmax over the vocabulary, and its most likely tokens.
type Logprobs = (Vec<f32>, Vec<(TokenId, f32)>);

/// Log-softmax of `logits` and the `k` most likely tokens with their log-probabilities.
fn token_logprobs(logits: &[f32], k: usize) -> Logprobs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max
        + logits
            .iter()
            .map(|&l| f64::from(l - max).exp())
            .sum::<f64>()
            .ln() as f32;
    let all: Vec<f32> = logits.iter().map(|&l| l - lse).collect();
    let mut order: Vec<usize> = (0..all.len()).collect();
    let k = k.min(order.len());
    if k > 0 {
        order.select_nth_unstable_by(k - 1, |&a, &b| all[b].total_cmp(&all[a]));
    }
    let mut top: Vec<(TokenId, f32)> = order[..k].iter().map(|&i| (i as TokenId, all[i])).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    (all, top)
}
