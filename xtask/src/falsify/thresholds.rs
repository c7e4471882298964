//! Every number a claim or the course's scorecard is tested against, in one place. The claims'
//! statements and the appendix's definitions spell these numbers out; the tests check that the
//! prose and these constants agree, so that a changed threshold cannot leave stale prose.

/// TGI-3: our perplexity within this many percent of llama-perplexity's.
pub const TGI3_PPL_PCT: f64 = 1.0;
/// TGI-5: one thread's decode reaches this share of the memory-bandwidth bound, in percent.
pub const TGI5_BOUND_SHARE_PCT: f64 = 50.0;
/// TGI-8: beside a second decoder, the spinning pool keeps this share of a sleeping pool's speed.
pub const TGI8_CONTENTION_PCT: f64 = 90.0;
/// KV-1: share of the reserved KV bytes that hold real tokens, in percent.
pub const KV1_EFFICIENCY_PCT: f64 = 90.0;
/// CB-2: batch slots doing useful work under continuous batching, in percent.
pub const CB2_UTILIZATION_PCT: f64 = 85.0;
/// TP-1: this many concurrent streams…
pub const TP1_CLIENTS: f64 = 8.0;
/// …get at least this multiple of one stream's aggregate throughput.
pub const TP1_SCALING_X: f64 = 2.0;
/// ST-1: streaming may make the complete answer at most this many percent slower.
pub const ST1_SLOWDOWN_PCT: f64 = 10.0;
/// QZ-1: requantizing to Q8_0 changes perplexity by less than this, in percent.
pub const QZ1_DPPL_PCT: f64 = 1.0;
/// QZ-2: a 4-bit model's compression against F16…
pub const QZ2_COMPRESSION_X: f64 = 3.5;
/// …with a perplexity at most this many percent worse.
pub const QZ2_DPPL_PCT: f64 = 10.0;
/// QZ-4: a Q8_0 KV cache takes at most this share of the f16 cache's memory, in percent…
pub const QZ4_MEMORY_PCT: f64 = 55.0;
/// …and keeps perplexity within this many percent.
pub const QZ4_DPPL_PCT: f64 = 1.0;
/// APR-1: opening and indexing the APR file, at most, in milliseconds.
pub const APR1_INDEX_MS: f64 = 100.0;
/// FA-1: naive attention's peak memory at the longest prompt, at least this many times tiled's.
pub const FA1_MEMORY_X: f64 = 20.0;
/// FA-2: the context of the prefill comparison, tokens, and tiled's speedup there, at least.
pub const FA2_CONTEXT: f64 = 4096.0;
pub const FA2_SPEEDUP_X: f64 = 1.5;
/// SD-2: n-gram speculation's decode speedup on an input-grounded task, at least.
pub const SD2_SPEEDUP_X: f64 = 1.5;
/// SD-3: the α/γ/cost formula's worst error on the n-gram rows, at most, in percent.
pub const SD3_ERROR_PCT: f64 = 20.0;
/// SD-4: the server's default speculation policy against plain decoding, at every client count,
/// at least (aggregate throughput ratio).
pub const SD4_FLOOR_X: f64 = 0.95;
/// DS-1: healing wins back at least this share of the perplexity depth pruning lost, in percent.
pub const DS1_RECOVERED_PCT: f64 = 50.0;
/// DS-2: the healed student decodes at least this many times faster than its teacher.
pub const DS2_SPEEDUP_X: f64 = 1.8;

/// MP-3: the cost model's prediction of the shards' decode speed on this machine, within this
/// many percent of the measured speed.
pub const MP3_ERROR_PCT: f64 = 25.0;

/// SV-1: a cold start is ready (model mapped, validated, tokenizer built) within this many
/// milliseconds of the process's start, at P99.
pub const SV1_READY_MS: f64 = 50.0;
/// LP-1: at the sweep's lowest rate, at least this share of the server's requests meets the
/// latency objective, in percent.
pub const LP1_ATTAINED_PCT: f64 = 99.0;

/// How each claim's statement writes its thresholds (`{}` stands for the value).
pub const CLAIM_PROSE: &[(&str, f64, &str)] = &[
    ("TGI-3", TGI3_PPL_PCT, "within {}%"),
    ("TGI-5", TGI5_BOUND_SHARE_PCT, "at least {}%"),
    ("TGI-8", TGI8_CONTENTION_PCT, "at least {}%"),
    ("KV-1", KV1_EFFICIENCY_PCT, "at least {}%"),
    ("CB-2", CB2_UTILIZATION_PCT, "at or above {}%"),
    ("TP-1", TP1_CLIENTS, "{} concurrent streams"),
    ("TP-1", TP1_SCALING_X, "at least {}×"),
    ("ST-1", ST1_SLOWDOWN_PCT, "more than {}% slower"),
    ("QZ-1", QZ1_DPPL_PCT, "less than {}%"),
    ("QZ-2", QZ2_COMPRESSION_X, "at least {}×"),
    ("QZ-2", QZ2_DPPL_PCT, "at most {}% worse"),
    ("QZ-4", QZ4_MEMORY_PCT, "at most {}%"),
    ("QZ-4", QZ4_DPPL_PCT, "within {}%"),
    ("DS-1", DS1_RECOVERED_PCT, "at least {}%"),
    ("DS-2", DS2_SPEEDUP_X, "at least {}×"),
    ("APR-1", APR1_INDEX_MS, "at most {} ms"),
    ("FA-1", FA1_MEMORY_X, "at most 1/{} of"),
    ("FA-2", FA2_SPEEDUP_X, "at least {}×"),
    ("SD-2", SD2_SPEEDUP_X, "at least {}×"),
    ("SD-3", SD3_ERROR_PCT, "within {}%"),
    ("SD-4", SD4_FLOOR_X, "at least {}×"),
    ("MP-3", MP3_ERROR_PCT, "within {}%"),
    ("SV-1", SV1_READY_MS, "within {} ms"),
    ("LP-1", LP1_ATTAINED_PCT, "at least {}%"),
];

// The course's 100-point scorecard (its section 7), read strictly: see the appendix.

/// 7.1: one stream's decode speed, tokens per second.
pub const COURSE_DECODE_TOK_S: f64 = 250.0;
/// 7.1: the 99th percentile of one stream's inter-token latency through the server, ms.
pub const COURSE_P99_ITL_MS: f64 = 10.0;
/// 7.2: a quantized model file this many times smaller than the F16 file…
pub const COURSE_COMPRESSION_X: f64 = 3.5;
/// …whose perplexity is at most this many percent worse than the source file's.
pub const COURSE_COMPRESSION_DPPL_PCT: f64 = 10.0;
/// 7.3: per-token latency of the model in WebAssembly, ms.
pub const COURSE_WASM_MS: f64 = 50.0;
/// 7.3: cold start of the serverless handler to its first answer, ms.
pub const COURSE_COLD_START_MS: f64 = 500.0;
/// 7.6: line coverage of the workspace by `cargo test`, percent.
pub const COURSE_COVERAGE_PCT: f64 = 95.0;
/// Points needed to pass, of 100.
pub const COURSE_PASS_POINTS: u32 = 90;

/// How the appendix writes the course's targets (`{}` stands for the value).
pub const COURSE_PROSE: &[(f64, &str)] = &[
    (COURSE_DECODE_TOK_S, "≥ {} tokens/s"),
    (COURSE_P99_ITL_MS, "≤ {} ms"),
    (COURSE_COMPRESSION_X, "≥ {}×"),
    (COURSE_COMPRESSION_DPPL_PCT, "at most {}% worse"),
    (COURSE_WASM_MS, "≤ {} ms per token"),
    (COURSE_COLD_START_MS, "≤ {} ms"),
    (COURSE_COVERAGE_PCT, "≥ {}%"),
    (COURSE_PASS_POINTS as f64, "at least {} points"),
];

/// A threshold as prose writes it: `1`, `3.5`, `250`.
pub fn written(template: &str, value: f64) -> String {
    template.replace("{}", &format!("{value}"))
}
