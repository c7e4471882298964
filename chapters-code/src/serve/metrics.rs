//! `/metrics` in the Prometheus text format, through the official Rust client
//! (`prometheus-client`). Names follow TGI and vLLM in spirit: request outcomes by reason,
//! queue and batch sizes, KV blocks, token counts, and latency histograms.

use crate::engine::RunnerStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `success` or `failure`.
    pub outcome: &'static str,
    /// `stop`, `length` for successes; the error code (`invalid_value`, `queue_full`,
    /// `shutting_down`, `timeout`, `cancelled`, ...) for failures.
    pub reason: &'static str,
}

// ANCHOR: metrics
/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<Outcome, Counter>,
    pub prompt_tokens: Counter,
    pub generated_tokens: Counter,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub request_duration: Histogram,
    queue_size: Gauge,
    running_batch: Gauge,
    kv_blocks_used: Gauge,
    kv_blocks_total: Gauge,
    engine_steps: Gauge,
    preemptions: Gauge,
    prefix_cache_hit_tokens: Gauge,
    draft_tokens: Gauge,
    accepted_draft_tokens: Gauge,
}
// ANCHOR_END: metrics

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("prodml");
        let m = Metrics {
            requests: Family::default(),
            prompt_tokens: Counter::default(),
            generated_tokens: Counter::default(),
            // 1 ms to about 65 s.
            time_to_first_token: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            // 1 ms to about 4 s.
            inter_token_latency: Histogram::new(exponential_buckets(0.001, 2.0, 13)),
            request_duration: Histogram::new(exponential_buckets(0.01, 2.0, 15)),
            queue_size: Gauge::default(),
            running_batch: Gauge::default(),
            kv_blocks_used: Gauge::default(),
            kv_blocks_total: Gauge::default(),
            engine_steps: Gauge::default(),
            preemptions: Gauge::default(),
            prefix_cache_hit_tokens: Gauge::default(),
            draft_tokens: Gauge::default(),
            accepted_draft_tokens: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests by outcome and reason",
            m.requests.clone(),
        );
        registry.register(
            "prompt_tokens",
            "Prompt tokens of finished requests",
            m.prompt_tokens.clone(),
        );
        registry.register(
            "generated_tokens",
            "Generated tokens",
            m.generated_tokens.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Time from arrival to the first token",
            m.time_to_first_token.clone(),
        );
        registry.register(
            "inter_token_latency_seconds",
            "Time between consecutive tokens of a request",
            m.inter_token_latency.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from arrival to the end of a request",
            m.request_duration.clone(),
        );
        registry.register(
            "queue_size",
            "Requests waiting to join the batch",
            m.queue_size.clone(),
        );
        registry.register(
            "batch_size",
            "Sequences in the running batch",
            m.running_batch.clone(),
        );
        registry.register(
            "kv_blocks_used",
            "KV cache blocks held by sequences",
            m.kv_blocks_used.clone(),
        );
        registry.register(
            "kv_blocks_total",
            "KV cache blocks in the pool",
            m.kv_blocks_total.clone(),
        );
        registry.register(
            "engine_steps",
            "Batched forward passes run",
            m.engine_steps.clone(),
        );
        registry.register(
            "preemptions",
            "Sequences preempted to free KV blocks",
            m.preemptions.clone(),
        );
        registry.register(
            "prefix_cache_hit_tokens",
            "Prompt tokens served from the prefix cache",
            m.prefix_cache_hit_tokens.clone(),
        );
        registry.register(
            "draft_tokens",
            "Draft tokens verified (speculative decoding)",
            m.draft_tokens.clone(),
        );
        registry.register(
            "accepted_draft_tokens",
            "Draft tokens the model accepted (speculative decoding)",
            m.accepted_draft_tokens.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a request's outcome.
    pub fn outcome(&self, outcome: &'static str, reason: &'static str) {
        self.requests
            .get_or_create(&Outcome { outcome, reason })
            .inc();
    }

    /// The text exposition, with the engine's gauges refreshed from `stats`.
    pub fn render(&self, stats: &RunnerStats) -> String {
        self.queue_size.set(stats.waiting as i64);
        self.running_batch.set(stats.running as i64);
        self.kv_blocks_used.set(stats.blocks_used as i64);
        self.kv_blocks_total.set(stats.blocks_total as i64);
        self.engine_steps.set(stats.steps as i64);
        self.preemptions.set(stats.preemptions as i64);
        self.prefix_cache_hit_tokens
            .set(stats.prefix_hit_tokens as i64);
        self.draft_tokens.set(stats.draft_tokens as i64);
        self.accepted_draft_tokens
            .set(stats.accepted_draft_tokens as i64);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
