//! The scorer on synthetic results: every claim and every criterion gets a results file that
//! must pass it and one that must not, with rows in an order no real run writes (rows are found
//! by key). The prose that states a threshold is checked against [`super::thresholds`].

use super::thresholds::*;
use super::*;
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system's temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xtask-falsify-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn provenance(simd: &str) -> Provenance {
    serde_json::from_value(json!({
        "git_sha": "0123456789ab", "date_utc": "2026-12-01T00:00:00Z", "cpu_model": "test",
        "cores": 2, "simd": simd, "rustc": "rustc", "profile": "release",
        "crate_versions": {}, "command": "synthetic"
    }))
    .unwrap()
}

/// Writes `benchmarks/<name>.json` with `rows` (JSON objects; columns from their keys).
fn write(root: &Path, name: &str, rows: &Value) {
    let rows: Vec<Map<String, Value>> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_object().unwrap().clone())
        .collect();
    let mut keys: Vec<String> = rows.iter().flat_map(|r| r.keys().cloned()).collect();
    keys.sort();
    keys.dedup();
    let mut table = Table::new(name, name, keys.iter().map(|k| Column::new(k, k)).collect());
    table.rows = rows;
    BenchFile {
        table,
        provenance: provenance("avx2"),
    }
    .save(root)
    .unwrap();
}

fn with_files(files: &[(&str, Value)]) -> Scratch {
    let dir = Scratch::new();
    for (name, rows) in files {
        write(&dir.0, name, rows);
    }
    dir
}

fn claim(id: &str) -> &'static Claim {
    CLAIMS
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no claim {id}"))
}

fn verdict(id: &str, files: &[(&str, Value)]) -> Verdict {
    let dir = with_files(files);
    (claim(id).check)(&dir.0).unwrap()
}

type Files = Vec<(&'static str, Value)>;

/// Per claim: results it must hold on, and results that must falsify it.
fn claim_cases() -> Vec<(&'static str, Files, Files)> {
    let fma = |simd: f64| {
        vec![(
            "hardware-fma-kernels",
            json!([{"what": "SIMD, 12 chains", "rate": simd}, {"what": "SIMD, 1 chain", "rate": 3.0},
                   {"what": "scalar, 1 chain", "rate": 1.0}]),
        )]
    };
    let triad = |two: f64| {
        vec![(
            "hardware-roofline",
            json!([{"measurement": "peak f32 compute (AVX2 FMA)", "threads": 2, "value": 999.0},
                   {"measurement": "memory bandwidth (triad)", "threads": 2, "value": two},
                   {"measurement": "memory bandwidth (triad)", "threads": 1, "value": 10.0}]),
        )]
    };
    let sizes = |l1: f64| {
        vec![(
            "hardware-triad-sizes",
            json!([{"what": "384 MiB (DRAM)", "rate": 7.0}, {"what": "384 KiB (L2)", "rate": 80.0},
                   {"what": "24 KiB (L1)", "rate": l1}]),
        )]
    };
    let bars = |rows: Value| vec![("parity-bars", rows)];
    let bar =
        |id: &str, holds: bool| json!({"id": id, "holds": holds, "measured": "m", "limit": "l"});
    let ppl = |ours: f64| {
        vec![(
            "perplexity",
            json!([{"engine": "llama.cpp b4747 (llama-perplexity)", "ppl": 27.2},
                   {"engine": "chapters-code", "ppl": ours}]),
        )]
    };
    let peer = |ours2: f64| {
        vec![(
            "peer-llama-bench",
            json!([{"engine": "llama.cpp", "threads": 2, "decode": 62.0},
                   {"engine": "chapters-code", "threads": 2, "decode": ours2},
                   {"engine": "chapters-code", "threads": 1, "decode": 46.0},
                   {"engine": "llama.cpp", "threads": 1, "decode": 45.0}]),
        )]
    };
    let speed = |share1: f64, spin2: f64, sleep2: f64| {
        vec![(
            "engine-speed",
            json!([{"threads": 2, "spin_us": 200.0, "decode": spin2, "share": 25.0},
                   {"threads": 2, "spin_us": 0.0, "decode": sleep2, "share": 22.0},
                   {"threads": 1, "spin_us": null, "decode": 46.0, "share": share1}]),
        )]
    };
    let contention = |spun: f64| {
        vec![(
            "engine-contention",
            json!([{"threads": 2, "spin_us": 200.0, "total": spun},
                   {"threads": 2, "spin_us": 0.0, "total": 84.0}]),
        )]
    };
    let kv = |paged: f64| {
        vec![(
            "kv-efficiency",
            json!([{"scheme": "each request reserves the full context", "efficiency": 1.0},
                   {"scheme": "paged, blocks of 16 tokens", "efficiency": paged}]),
        )]
    };
    let batching = |cont: f64, util: f64| {
        vec![(
            "batching-comparison",
            json!([{"policy": "continuous", "throughput": cont, "utilization": util},
                   {"policy": "static", "throughput": 54.0, "utilization": 60.0}]),
        )]
    };
    let levels = |eight: f64| {
        vec![(
            "throughput-levels",
            json!([{"concurrency": 8, "throughput": eight}, {"concurrency": 4, "throughput": 100.0},
                   {"concurrency": 1, "throughput": 61.0}]),
        )]
    };
    let streaming = |total: f64| {
        vec![(
            "streaming-vs-plain",
            json!([{"mode": "streamed (SSE)", "first": 73.0, "total": total},
                   {"mode": "plain JSON", "first": 223.0, "total": 223.0}]),
        )]
    };
    let formats = |rows: Value| vec![("quantization-formats", rows)];
    let gptq = |rows: Value| vec![("prune-gptq", rows)];
    let sparsity = |rows: Value| vec![("prune-sparsity", rows)];
    let distilled = |recovered: f64, speedup: f64| {
        vec![(
            "distill-quality",
            json!([{"model": "teacher", "ppl": 32.0, "speedup": 1.0},
                   {"model": "pruned to 12 blocks, not healed", "ppl": 9000.0, "recovered": 0.0},
                   {"model": "healed, forward KL", "ppl": 300.0, "recovered": recovered,
                    "speedup": speedup}]),
        )]
    };
    let kv_cache = |dppl: f64| {
        vec![(
            "quantization-kv-cache",
            json!([{"cache": "q8_0", "per_token": 12240, "dppl": dppl},
                   {"cache": "f16", "per_token": 23040, "dppl": null}]),
        )]
    };
    let flash_memory = |longest: f64| {
        vec![(
            "flash-memory",
            json!([{"context": 512, "ratio": 3.0}, {"context": 8176, "ratio": longest},
                   {"context": 4096, "ratio": 40.0}]),
        )]
    };
    let flash_speed = |at_4k: f64, decode_longest: f64| {
        vec![(
            "flash-speed",
            json!([{"context": 4096, "prefill_speedup": at_4k, "decode_ratio": 0.5},
                   {"context": 8176, "prefill_speedup": 3.0, "decode_ratio": decode_longest},
                   {"context": 128, "prefill_speedup": 1.0, "decode_ratio": 0.5}]),
        )]
    };
    let invariance = |last: bool| {
        vec![(
            "flash-invariance",
            json!([{"way": "a", "same_bits": true}, {"way": "b", "same_bits": last}]),
        )]
    };
    let spec_verify = |last: bool| {
        vec![(
            "spec-verify",
            json!([{"task": "a", "same": true}, {"task": "b", "same": last}]),
        )]
    };
    let spec_tasks = |speedup: f64, predicted: f64| {
        vec![(
            "spec-tasks",
            json!([
                {"task": "quote", "grounded": true, "threads": 1, "method": "plain", "decode_speedup": 1.0, "predicted": null},
                {"task": "quote", "grounded": true, "threads": 1, "method": "ngram, k = 4", "decode_speedup": speedup, "predicted": predicted},
                {"task": "chat", "grounded": false, "threads": 1, "method": "ngram, k = 4", "decode_speedup": 2.0, "predicted": 2.0},
                {"task": "quote", "grounded": true, "threads": 2, "method": "ngram, k = 4", "decode_speedup": 3.0, "predicted": 1.0}
            ]),
        )]
    };
    let spec_server = |one: f64, eight: f64, same: bool| {
        vec![(
            "spec-server",
            json!([
                {"clients": 1, "method": "plain", "speedup": 1.0, "same": true},
                {"clients": 1, "method": "ngram, every step", "speedup": 0.5, "same": true},
                {"clients": 1, "method": "ngram, while ≤ 4 decode (default)", "speedup": one, "same": same},
                {"clients": 8, "method": "ngram, while ≤ 4 decode (default)", "speedup": eight, "same": true}
            ]),
        )]
    };
    let tp_agreement = |within: bool| {
        vec![(
            "tp-agreement",
            json!([{"shards": 3, "within_bars": within}, {"shards": 1, "within_bars": true}]),
        )]
    };
    let tp_traffic = |equal: bool| {
        vec![(
            "tp-traffic",
            json!([{"collective": "a", "equal": true}, {"collective": "b", "equal": equal}]),
        )]
    };
    let tp_speed = |predicted: f64| {
        vec![(
            "tp-speed",
            json!([
                {"config": "engine", "threads": 1, "decode_tok_s": 100.0, "predicted_tok_s": null},
                {"config": "tensor parallel, 3 shards", "threads": 3, "decode_tok_s": 50.0, "predicted_tok_s": predicted},
                {"config": "tensor parallel, 1 shard", "threads": 1, "decode_tok_s": 90.0, "predicted_tok_s": 10.0}
            ]),
        )]
    };
    let cold = |ready: f64| {
        vec![(
            "lambda-cold-start",
            json!([{"stage": "map the GGUF file", "p50_ms": 1.0, "p99_ms": 2.0},
                   {"stage": "process start → ready (init done)", "p50_ms": 10.0, "p99_ms": ready},
                   {"stage": "process start → first answer received", "p50_ms": 300.0, "p99_ms": 400.0}]),
        )]
    };
    let lambda_verify = |last: bool| {
        vec![(
            "lambda-verify",
            json!([{"case": "completion", "pass": true}, {"case": "bad: no prompt", "pass": last}]),
        )]
    };
    let registry_verify = |last: bool| {
        vec![(
            "registry-verify",
            json!([{"case": "signed by the trusted key", "pass": true}, {"case": "changed blob", "pass": last}]),
        )]
    };
    let failover = |last: bool| {
        vec![(
            "scale-out-failover",
            json!([{"front": "nginx round-robin", "pass": true}, {"front": "sglang-router round_robin", "pass": last}]),
        )]
    };
    let routing = |ca_ttft: f64, ca_hit: f64| {
        vec![(
            "scale-out-routing",
            json!([{"front": "sglang-router round_robin", "ttft_p50_ms": 4000.0, "prefix_hit_pct": 40.0},
                   {"front": "sglang-router cache_aware", "ttft_p50_ms": ca_ttft, "prefix_hit_pct": ca_hit}]),
        )]
    };
    let rates = |met: f64| {
        vec![(
            "latency-vs-rate",
            json!([{"server": "this book's server", "rate": 4.0, "slo_met": 50.0},
                   {"server": "this book's server", "rate": 1.0, "slo_met": met},
                   {"server": "llama-server", "rate": 0.5, "slo_met": 10.0}]),
        )]
    };
    let apr = |ms: f64| {
        vec![(
            "apr-load",
            json!([{"format": "GGUF", "index_ms": 500.0}, {"format": "APR v2", "index_ms": ms}]),
        )]
    };
    let security = |last: &str| {
        vec![(
            "apr-security",
            json!([{"opened_with": "aprender's default (key in the file)", "safe": "no"},
                   {"opened_with": "the publisher's key", "safe": "yes"},
                   {"opened_with": "the publisher's key", "safe": last}]),
        )]
    };
    vec![
        ("HW-1", fma(9.0), fma(7.0)),
        ("HW-2", triad(20.0), triad(9.0)),
        ("HW-3", sizes(55.0), sizes(5.0)),
        (
            "TGI-1",
            bars(json!([bar("delta", true), bar("margin", false)])),
            bars(json!([bar("delta", false)])),
        ),
        (
            "TGI-2",
            bars(json!([
                bar("margin", true),
                bar("agreement-avx", true),
                bar("agreement-avx2", true)
            ])),
            bars(json!([
                bar("margin", true),
                bar("agreement-avx", true),
                bar("agreement-avx2", false)
            ])),
        ),
        (
            "TGI-9",
            bars(json!([bar("batch-invariance", true)])),
            bars(json!([bar("batch-invariance", false)])),
        ),
        (
            "TGI-10",
            bars(json!([bar("simd-AVX2", true), bar("simd-NEON", true)])),
            bars(json!([bar("simd-AVX2", true), bar("simd-NEON", false)])),
        ),
        ("TGI-3", ppl(27.4), ppl(27.6)),
        ("TGI-4", peer(66.0), peer(60.0)),
        ("TGI-5", speed(55.0, 69.0, 56.0), speed(45.0, 69.0, 56.0)),
        ("TGI-6", speed(35.0, 69.0, 56.0), speed(35.0, 40.0, 56.0)),
        ("TGI-7", speed(35.0, 69.0, 56.0), speed(35.0, 50.0, 56.0)),
        ("TGI-8", contention(80.0), contention(70.0)),
        ("KV-1", kv(91.0), kv(89.0)),
        ("CB-1", batching(80.0, 88.0), batching(50.0, 88.0)),
        ("CB-2", batching(80.0, 88.0), batching(80.0, 80.0)),
        ("TP-1", levels(130.0), levels(120.0)),
        ("ST-1", streaming(228.0), streaming(250.0)),
        (
            "QZ-1",
            formats(json!([{"format": "F16", "dppl": 5.0}, {"format": "Q8_0", "dppl": 0.1}])),
            formats(json!([{"format": "F16", "dppl": 0.0}, {"format": "Q8_0", "dppl": 1.5}])),
        ),
        (
            "QZ-2",
            gptq(
                json!([{"recipe": "Q4_0, round to nearest", "vs_f16": 3.56, "dppl": 25.0},
                        {"recipe": "Q4_0, GPTQ", "vs_f16": 3.56, "dppl": 30.0},
                        {"recipe": "Q4_0, AWQ + GPTQ", "vs_f16": 3.56, "dppl": 8.0}]),
            ),
            gptq(
                json!([{"recipe": "Q4_0, round to nearest", "vs_f16": 3.56, "dppl": 25.0},
                        {"recipe": "Q4_0, GPTQ", "vs_f16": 3.56, "dppl": 12.0}]),
            ),
        ),
        (
            "PR-1",
            sparsity(
                json!([{"method": "magnitude", "pattern": "50%", "ppl": 600.0},
                            {"method": "Wanda", "pattern": "70%", "ppl": 900.0},
                            {"method": "Wanda", "pattern": "50%", "ppl": 70.0}]),
            ),
            sparsity(
                json!([{"method": "magnitude", "pattern": "50%", "ppl": 60.0},
                            {"method": "Wanda", "pattern": "50%", "ppl": 70.0}]),
            ),
        ),
        (
            "QZ-3",
            formats(
                json!([{"format": "Q4_0 + AWQ", "ppl": 37.0}, {"format": "Q4_0", "ppl": 38.0}]),
            ),
            formats(
                json!([{"format": "Q4_0 + AWQ", "ppl": 39.0}, {"format": "Q4_0", "ppl": 38.0}]),
            ),
        ),
        ("QZ-4", kv_cache(0.03), kv_cache(2.0)),
        ("APR-1", apr(50.0), apr(150.0)),
        ("APR-2", security("yes"), security("no")),
        ("FA-1", flash_memory(30.0), flash_memory(12.0)),
        ("FA-2", flash_speed(1.8, 1.1), flash_speed(1.2, 1.1)),
        ("DS-1", distilled(60.0, 2.0), distilled(40.0, 2.0)),
        ("MP-1", tp_agreement(true), tp_agreement(false)),
        ("MP-2", tp_traffic(true), tp_traffic(false)),
        ("MP-3", tp_speed(55.0), tp_speed(70.0)),
        ("SV-1", cold(45.0), cold(55.0)),
        ("SV-2", lambda_verify(true), lambda_verify(false)),
        ("LP-1", rates(100.0), rates(95.0)),
        ("MR-1", registry_verify(true), registry_verify(false)),
        ("SO-1", failover(true), failover(false)),
        ("SO-2", routing(150.0, 85.0), routing(4500.0, 85.0)),
        ("SO-2", routing(150.0, 85.0), routing(150.0, 30.0)),
        ("MP-3", tp_speed(45.0), tp_speed(30.0)),
        ("DS-2", distilled(60.0, 1.9), distilled(60.0, 1.7)),
        ("FA-3", flash_speed(1.8, 1.05), flash_speed(1.8, 0.9)),
        ("FA-4", invariance(true), invariance(false)),
        ("SD-1", spec_verify(true), spec_verify(false)),
        ("SD-2", spec_tasks(1.6, 1.6), spec_tasks(1.4, 1.4)),
        ("SD-3", spec_tasks(1.6, 1.5), spec_tasks(1.6, 1.2)),
        (
            "SD-4",
            spec_server(1.3, 0.97, true),
            spec_server(1.3, 0.9, true),
        ),
        (
            "SD-4",
            spec_server(1.3, 1.0, true),
            spec_server(0.99, 1.0, true),
        ),
        (
            "SD-4",
            spec_server(1.3, 1.0, true),
            spec_server(1.3, 1.0, false),
        ),
    ]
}

#[test]
fn every_claim_holds_on_passing_results_and_is_falsified_by_failing_ones() {
    let cases = claim_cases();
    for c in CLAIMS {
        assert!(
            cases.iter().any(|(id, _, _)| *id == c.id),
            "claim {} has no synthetic cases",
            c.id
        );
    }
    for (id, pass, fail) in cases {
        let v = verdict(id, &pass);
        assert!(
            matches!(v, Verdict::Holds(_)),
            "{id} on passing results: {v:?}"
        );
        let v = verdict(id, &fail);
        assert!(
            matches!(v, Verdict::Falsified(_)),
            "{id} on failing results: {v:?}"
        );
        // Without its results, a claim is never held: it says what is missing.
        let v = verdict(id, &[]);
        assert!(
            matches!(v, Verdict::NotMeasured(_)),
            "{id} without results: {v:?}"
        );
        // The claim names the files it reads, so the scorecard can show their commit.
        for (name, _) in &pass {
            assert!(
                claim(id).tables.contains(name),
                "{id} reads {name} but does not name it"
            );
        }
    }
}

fn outcome(section: &str, index: usize, files: &[(&str, Value)]) -> (u32, Outcome) {
    let c = CRITERIA
        .iter()
        .filter(|c| c.section == section)
        .nth(index)
        .unwrap();
    let dir = with_files(files);
    (c.points, (c.score)(&dir.0).unwrap())
}

#[test]
fn every_criterion_is_met_by_passing_results_and_missed_by_failing_ones() {
    let speed = |tok_s: f64| {
        vec![(
            "engine-speed",
            json!([{"threads": 2, "spin_us": 0.0, "decode": 999.0},
                   {"threads": 2, "spin_us": 200.0, "decode": tok_s},
                   {"threads": 1, "spin_us": null, "decode": 46.0}]),
        )]
    };
    let itl = |ms: f64| {
        vec![(
            "throughput-levels",
            json!([{"concurrency": 4, "itl_p99": 1.0}, {"concurrency": 1, "itl_p99": ms}]),
        )]
    };
    let formats = |x: f64, dppl: f64| {
        vec![(
            "quantization-formats",
            json!([{"format": "source", "vs_f16": 2.8, "dppl": null},
                   {"format": "Q2_K", "vs_f16": 6.0, "dppl": 40.0},
                   {"format": "Q4_0", "vs_f16": x, "dppl": dppl}]),
        )]
    };
    let conformance = |last: &str| {
        vec![(
            "api-conformance",
            json!([{"check": "a", "passed": "yes"}, {"check": "b", "passed": last}]),
        )]
    };
    let bars = |id: &str, holds: bool| {
        vec![(
            "parity-bars",
            json!([{"id": "delta", "holds": false}, {"id": id, "holds": holds, "measured": "m"}]),
        )]
    };
    let coverage = |pct: f64| {
        vec![(
            "coverage",
            json!([{"what": "functions", "percent": 99.0}, {"what": "lines", "percent": pct}]),
        )]
    };
    let wasm = |tok_s: f64| {
        vec![(
            "wasm-speed",
            json!([{"phase": "decode", "node_tok_s": 10.0, "chromium_tok_s": tok_s},
                   {"phase": "prefill (to the first token)", "node_tok_s": 10.0, "chromium_tok_s": 90.0}]),
        )]
    };
    let cold = |p99: f64| {
        vec![(
            "lambda-cold-start",
            json!([{"stage": "process start → ready (init done)", "p99_ms": 600.0},
                   {"stage": "process start → first answer received", "p99_ms": p99}]),
        )]
    };
    let cases: Vec<(&str, usize, Files, Files)> = vec![
        ("7.1 Inference performance", 0, speed(260.0), speed(249.0)),
        ("7.1 Inference performance", 1, itl(9.5), itl(19.0)),
        (
            "7.2 Model optimization",
            0,
            formats(3.6, 8.0),
            formats(3.4, 8.0),
        ),
        (
            "7.4 API correctness",
            0,
            conformance("yes"),
            conformance("no"),
        ),
        (
            "7.5 Reproducibility",
            0,
            bars("batch-invariance", true),
            bars("batch-invariance", false),
        ),
        (
            "7.5 Reproducibility",
            1,
            bars("simd-AVX2", true),
            bars("simd-AVX2", false),
        ),
        ("7.3 Edge deployment", 0, wasm(21.0), wasm(19.0)),
        ("7.3 Edge deployment", 1, cold(450.0), cold(550.0)),
        ("7.6 Code quality", 0, coverage(96.0), coverage(80.0)),
    ];
    for (section, i, pass, fail) in cases {
        let (points, o) = outcome(section, i, &pass);
        assert!(
            matches!(o, Outcome::Met(_)),
            "{section} #{i} on passing results: {o:?}"
        );
        assert!(points > 0);
        let (_, o) = outcome(section, i, &fail);
        assert!(
            matches!(o, Outcome::Missed(_)),
            "{section} #{i} on failing results: {o:?}"
        );
        let (_, o) = outcome(section, i, &[]);
        assert!(
            matches!(o, Outcome::NotMeasured(_)),
            "{section} #{i} without results: {o:?}"
        );
    }
    // A compression that breaks the model does not count: Q2_K's 6× is over the ΔPPL bound.
    let (_, o) = outcome("7.2 Model optimization", 0, &formats(3.0, 8.0));
    assert!(
        matches!(o, Outcome::Missed(ref e) if e.contains("Q4_0")),
        "{o:?}"
    );
}

#[test]
fn the_matrix_has_the_courses_sections_and_100_points() {
    assert_eq!(SECTIONS.iter().map(|s| s.1).sum::<u32>(), 100);
    for (name, max) in SECTIONS {
        let sum: u32 = CRITERIA
            .iter()
            .filter(|c| c.section == *name)
            .map(|c| c.points)
            .sum();
        assert_eq!(sum, *max, "{name}");
    }
    assert!(
        CRITERIA
            .iter()
            .all(|c| SECTIONS.iter().any(|s| s.0 == c.section))
    );
}

#[test]
fn a_scoring_run_totals_the_points_and_names_each_source() {
    let dir = with_files(&[
        (
            "parity-bars",
            json!([{"id": "batch-invariance", "holds": true, "measured": "11 of 11"},
                               {"id": "simd-AVX2", "holds": true, "measured": "d"}]),
        ),
        ("coverage", json!([{"what": "lines", "percent": 50.0}])),
    ]);
    let summary = run(&dir.0).unwrap();
    assert_eq!(summary.points, 15, "7.5's two criteria and nothing else");
    assert!(!summary.passes_course());
    let card = BenchFile::load(&dir.0, "scorecard").unwrap().unwrap();
    let row = card
        .table
        .rows
        .iter()
        .find(|r| r["section"] == "7.5 Reproducibility")
        .unwrap();
    // Not a git repository here: the commit is shown and its freshness is unknown, not "fresh".
    let measured = row["measured"].as_str().unwrap();
    assert!(
        measured.contains("parity-bars.json @ 0123456789ab (unknown"),
        "{measured}"
    );
    assert!(
        card.table.notes[0].starts_with("Total: 15 of 100 points"),
        "{:?}",
        card.table.notes
    );
    assert!(
        card.table
            .notes
            .iter()
            .any(|n| n.starts_with("Oldest measurement used: "))
    );
}

#[test]
fn every_criterion_has_its_definition_and_each_definition_states_its_threshold() {
    let defs = super::course::definitions();
    assert_eq!(defs.len(), CRITERIA.len());
    let all: String = defs
        .iter()
        .map(|d| format!("{} {} {}", d.course_says, d.strictly, d.scored_from))
        .collect();
    for (value, template) in &COURSE_PROSE[..COURSE_PROSE.len() - 1] {
        let text = written(template, *value);
        assert!(all.contains(&text), "no definition says `{text}`");
    }
    for (c, d) in CRITERIA.iter().zip(&defs) {
        for t in c.tables {
            assert!(
                d.scored_from.contains(t),
                "{}: {} not in {}",
                c.target,
                t,
                d.scored_from
            );
        }
    }
}

#[test]
fn thresholds_and_the_prose_that_states_them_agree() {
    for (id, value, template) in CLAIM_PROSE {
        let text = written(template, *value);
        assert!(
            claim(id).statement.contains(&text),
            "{id}'s statement does not say `{text}`: {}",
            claim(id).statement
        );
    }
    let appendix =
        std::fs::read_to_string(crate::workspace_root().join("book/src/appendix/falsification.md"))
            .unwrap();
    for (value, template) in COURSE_PROSE {
        let text = written(template, *value);
        assert!(
            appendix.contains(&text),
            "the appendix does not define `{text}`"
        );
    }
    for (value, template) in &COURSE_PROSE[..COURSE_PROSE.len() - 1] {
        let text = written(template, *value).replace(" per token", "");
        assert!(
            CRITERIA.iter().any(|c| c.target.contains(&text)),
            "no criterion's target says `{text}`"
        );
    }
}

#[test]
fn results_are_stale_once_their_code_changes() {
    let dir = Scratch::new();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&dir.0)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    let touch = |path: &str, text: &str| {
        let p = dir.0.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    touch("chapters-code/src/hw/cpu.rs", "1");
    touch("chapters-code/src/kernels/dot.rs", "1");
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "measured here"]);
    let measured = git(&["rev-parse", "--short=12", "HEAD"]);
    touch("chapters-code/src/kernels/dot.rs", "2");
    git(&["commit", "-q", "-am", "a kernel changes"]);
    let changed = git(&["rev-parse", "--short=12", "HEAD"]);
    use freshness::{Freshness, check};
    assert_eq!(
        check(&dir.0, "hardware-roofline", &measured),
        Freshness::Fresh
    );
    assert_eq!(
        check(&dir.0, "kernels-q4_1-matvec", &measured),
        Freshness::Stale {
            commits: 1,
            newest: changed.clone()
        }
    );
    assert!(matches!(
        check(&dir.0, "engine-speed", &measured),
        Freshness::Stale { .. }
    ));
    assert_eq!(check(&dir.0, "engine-speed", &changed), Freshness::Fresh);
    assert!(matches!(
        check(&dir.0, "engine-speed", "deadbeef0000"),
        Freshness::Unknown(_)
    ));
    assert!(matches!(
        check(&dir.0, "engine-speed", &format!("{changed}-dirty")),
        Freshness::Unknown(_)
    ));
}
