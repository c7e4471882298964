//! Replaying a workload through the scheduler with the real model: requests arrive at seeded
//! random points with seeded random prompt and output lengths. The batching and KV chapters
//! compare policies and caches on the same replay.
//!
//! Arrivals are counted in engine steps, not in wall time: request *i* joins the queue before
//! the first step at or after its arrival step. So which requests share a step, how many steps
//! run and how full they are depend on the workload and the policy only — a faster machine
//! gives the same step count and utilization, and only the measured seconds change.

use super::{Collect, EngineRequest, Event, Policy, Scheduler, SchedulerConfig};
use crate::generate::Request;
use crate::kernels::pool::ThreadPool;
use crate::kv::BlockPool;
use crate::model::{Llama, ModelError};
use crate::sampling::{Rng, SamplingParams};
use crate::tokenizer::{TokenId, Tokenizer};
use serde::Serialize;
use std::time::Instant;

/// The shape of a workload.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadSpec {
    pub requests: usize,
    /// Prompt tokens, uniform in [min, max].
    pub prompt_tokens: (usize, usize),
    /// Generated tokens, uniform in [min, max] (end-of-sequence is ignored, so that every
    /// policy generates exactly the same tokens).
    pub output_tokens: (usize, usize),
    /// Mean number of engine steps between arrivals (exponential; 0 = all at once).
    pub mean_interarrival_steps: f64,
    pub seed: u64,
}

/// One request of a workload.
#[derive(Debug, Clone)]
pub struct WorkloadItem {
    /// The engine step (counted from 0, fractional) at which the request arrives.
    pub arrival_step: f64,
    pub prompt: Vec<TokenId>,
    pub max_tokens: usize,
}

/// Text the prompts are cut from (any English prose would do).
const SOURCE: &str = "The history of the city begins with a small fishing village on the banks of the river. \
    Over the centuries it grew into a trading port, then an industrial centre, and today it is known for its \
    universities, its museums and its parks. Visitors come for the old town, whose narrow streets still follow \
    the lines of the medieval walls, and stay for the food, the music and the long summer evenings by the water.";

/// The requests of `spec`, in arrival order.
pub fn workload(spec: &WorkloadSpec, tokenizer: &Tokenizer) -> Vec<WorkloadItem> {
    let source = tokenizer.encode(&SOURCE.repeat(1 + spec.prompt_tokens.1 / 60), false);
    let mut rng = Rng::new(spec.seed);
    let uniform = |rng: &mut Rng, (lo, hi): (usize, usize)| {
        lo + (rng.next_u64() % (hi.max(lo) - lo + 1) as u64) as usize
    };
    let mut t = 0.0f64;
    let mut items = Vec::with_capacity(spec.requests);
    for _ in 0..spec.requests {
        let len = uniform(&mut rng, spec.prompt_tokens).clamp(1, source.len());
        let offset = uniform(&mut rng, (0, source.len() - len));
        let max_tokens = uniform(&mut rng, spec.output_tokens).max(1);
        items.push(WorkloadItem {
            arrival_step: t,
            prompt: source[offset..offset + len].to_vec(),
            max_tokens,
        });
        let u = (rng.next_f32() as f64).clamp(1e-9, 1.0 - 1e-9);
        t += -spec.mean_interarrival_steps * (1.0 - u).ln();
    }
    items
}

/// What a replay measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayResult {
    pub policy: String,
    pub requests: usize,
    pub generated_tokens: usize,
    pub seconds: f64,
    /// Generated tokens per second over the whole replay.
    pub tokens_per_s: f64,
    /// Sequences doing useful work per step ÷ batch slots, over the steps that ran (static
    /// batching's padding does not count).
    pub batch_utilization: f64,
    pub latency_p50_s: f64,
    pub latency_p99_s: f64,
    pub ttft_p50_s: f64,
    pub ttft_p99_s: f64,
    pub steps: usize,
    pub preemptions: usize,
    /// Bytes of KV holding tokens ÷ bytes of the blocks held, averaged over steps.
    pub kv_efficiency_paged: f64,
    /// The same tokens ÷ a reservation of prompt + max_tokens per running request.
    pub kv_efficiency_reserve_request: f64,
    /// The same tokens ÷ a reservation of the whole context per running request.
    pub kv_efficiency_reserve_context: f64,
    /// Peak blocks in use, and KV bytes per token of one block.
    pub peak_blocks: usize,
    pub kv_bytes_per_token: usize,
    /// Blocks held by live sequences (not by the prefix cache alone) after each step, for the
    /// KV chapter's growth curve.
    pub blocks_per_step: Vec<usize>,
    /// The tokens generated for each request, by request: greedy and batch-invariant, so
    /// every policy must give the same ones (`--verify` compares them).
    #[serde(skip)]
    pub tokens: Vec<Vec<TokenId>>,
}

/// The `q` quantile (0..=1) of `values` (nearest rank).
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Replays `items` through a scheduler with `config`, as fast as the machine runs the steps.
pub fn replay(
    model: &Llama,
    tokenizer: &Tokenizer,
    pool: &ThreadPool,
    config: SchedulerConfig,
    items: &[WorkloadItem],
) -> Result<ReplayResult, ModelError> {
    replay_with(model, tokenizer, pool, config, items, || {})
}

// ANCHOR: replay
/// [`replay`], calling `after_step` after every step (the tests slow the engine down with it,
/// to show that nothing but the seconds changes).
pub fn replay_with(
    model: &Llama,
    tokenizer: &Tokenizer,
    pool: &ThreadPool,
    config: SchedulerConfig,
    items: &[WorkloadItem],
    mut after_step: impl FnMut(),
) -> Result<ReplayResult, ModelError> {
    let slots = config.max_running;
    let policy = config.policy;
    let mut scheduler = Scheduler::new(model, tokenizer, config);
    let mut sink = Collect::default();
    let start = Instant::now();
    // Wall-clock instant each request was queued: latencies are measured from it.
    let mut arrivals = vec![start; items.len()];
    let mut next = 0;
    // The engine-step clock: steps run so far, plus the steps skipped while idle.
    let mut clock = 0f64;
    let (mut steps, mut busy_slots, mut preemptions) = (0usize, 0usize, 0usize);
    let (mut used_sum, mut reserved_sum, mut request_sum, mut context_sum) =
        (0f64, 0f64, 0f64, 0f64);
    let mut blocks_per_step = Vec::new();
    let bytes_per_token = BlockPool::bytes_per_block(&model.config, scheduler.kv().block_tokens())
        / scheduler.kv().block_tokens();
    while next < items.len() || !scheduler.is_idle() {
        while next < items.len() && items[next].arrival_step <= clock {
            let item = &items[next];
            arrivals[next] = Instant::now();
            let request = Request {
                prompt_ids: item.prompt.clone(),
                max_tokens: item.max_tokens,
                sampling: SamplingParams::default(),
                stop_tokens: vec![],
                stop_strings: vec![],
            };
            scheduler.submit(EngineRequest {
                id: next as u64,
                request,
                logprobs: None,
                deadline: None,
            })?;
            next += 1;
        }
        if scheduler.is_idle() {
            // Nothing to run: the clock jumps to the next arrival (idle time is no step).
            if let Some(item) = items.get(next) {
                clock = clock.max(item.arrival_step.ceil());
            }
            continue;
        }
        let report = scheduler.step(pool, &mut sink)?;
        after_step();
        clock += 1.0;
        if report.sequences == 0 {
            continue;
        }
        steps += 1;
        busy_slots += report.useful;
        preemptions += report.preempted;
        // KV occupancy after the step: tokens held, blocks held, and what the two naive
        // reservations would hold for the same running requests.
        let (used, reserved) = scheduler.kv().occupancy_bytes();
        used_sum += used as f64;
        reserved_sum += reserved as f64;
        for id in scheduler.running_ids() {
            let item = &items[id as usize];
            request_sum += ((item.prompt.len() + item.max_tokens) * bytes_per_token) as f64;
            context_sum += (model.config.context_length * bytes_per_token) as f64;
        }
        blocks_per_step.push(scheduler.kv().pool().used_blocks() - scheduler.kv().cached_blocks());
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut latency = Vec::new();
    let mut ttft = Vec::new();
    let mut generated = 0;
    let mut first_token = vec![None; items.len()];
    let mut tokens = vec![Vec::new(); items.len()];
    for (id, event, at) in &sink.events {
        let i = *id as usize;
        match event {
            Event::Token { token, .. } => {
                generated += 1;
                tokens[i].push(*token);
                first_token[i].get_or_insert(*at);
            }
            Event::Finished(_) => latency.push(at.duration_since(arrivals[i]).as_secs_f64()),
            Event::Text(_) => {}
        }
    }
    for (i, t) in first_token.iter().enumerate() {
        if let Some(t) = t {
            ttft.push(t.duration_since(arrivals[i]).as_secs_f64());
        }
    }
    Ok(ReplayResult {
        policy: format!("{policy:?}").to_lowercase(),
        requests: items.len(),
        generated_tokens: generated,
        seconds,
        tokens_per_s: generated as f64 / seconds,
        batch_utilization: busy_slots as f64 / (steps.max(1) * slots) as f64,
        latency_p50_s: percentile(&mut latency.clone(), 0.5),
        latency_p99_s: percentile(&mut latency, 0.99),
        ttft_p50_s: percentile(&mut ttft.clone(), 0.5),
        ttft_p99_s: percentile(&mut ttft, 0.99),
        steps,
        preemptions,
        kv_efficiency_paged: used_sum / reserved_sum.max(1.0),
        kv_efficiency_reserve_request: used_sum / request_sum.max(1.0),
        kv_efficiency_reserve_context: used_sum / context_sum.max(1.0),
        peak_blocks: blocks_per_step.iter().copied().max().unwrap_or(0),
        kv_bytes_per_token: bytes_per_token,
        blocks_per_step,
        tokens,
    })
}
// ANCHOR_END: replay

/// A scheduler configuration for `policy` with the other limits as given.
pub fn config_for(policy: Policy, max_running: usize, kv_budget_bytes: usize) -> SchedulerConfig {
    SchedulerConfig {
        policy,
        max_running,
        kv_budget_bytes,
        ..SchedulerConfig::default()
    }
}
