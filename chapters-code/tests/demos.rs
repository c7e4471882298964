//! Every demo binary explains itself with `--help`, and the hardware demo prints a JSON report
//! with provenance and verified measurements.

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .args(args)
        .output()
        .expect("the demo binary runs")
}

#[test]
fn hardware_demo_has_a_useful_help() {
    let out = run(env!("CARGO_BIN_EXE_demo-hardware-detect"), &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--output",
        "--benchmark",
        "--verify",
        "--seed",
        "--threads",
        "--model-bytes",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
    assert!(
        help.contains("roofline"),
        "--help should say what the demo does"
    );
}

#[test]
fn hardware_demo_json_carries_provenance_and_verified_measurements() {
    let out = run(
        env!("CARGO_BIN_EXE_demo-hardware-detect"),
        &[
            "--output",
            "json",
            "--verify",
            "--array-mib",
            "24",
            "--threads",
            "2",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["verified"], true);
    let p = &report["provenance"];
    for key in [
        "git_sha",
        "date_utc",
        "cpu_model",
        "simd",
        "rustc",
        "command",
    ] {
        assert!(
            p[key].as_str().is_some_and(|s| !s.is_empty()),
            "provenance.{key}"
        );
    }
    assert!(p["cores"].as_u64().unwrap() >= 1);
    let tables = report["tables"].as_array().unwrap();
    let roofline = tables
        .iter()
        .find(|t| t["name"] == "hardware-roofline")
        .unwrap();
    let bandwidth = roofline["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["measurement"] == "memory bandwidth (triad)")
        .unwrap();
    assert!(bandwidth["value"].as_f64().unwrap() > 0.0);
}

#[test]
fn stdout_is_the_course_spelling_of_output_stdout() {
    let bin = env!("CARGO_BIN_EXE_demo-hardware-detect");
    let out = run(bin, &["--stdout", "--array-mib", "3", "--threads", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout)
            .trim_start()
            .starts_with('{'),
        "text, not JSON"
    );
    let both = run(bin, &["--stdout", "--output", "json"]);
    assert_eq!(both.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    let out = run(
        env!("CARGO_BIN_EXE_demo-hardware-detect"),
        &["--output", "xml"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}

#[test]
fn every_demo_explains_its_flags() {
    for (bin, flags) in [
        (
            env!("CARGO_BIN_EXE_demo-tgi-architecture"),
            &[
                "--prompt",
                "--max-tokens",
                "--temperature",
                "--chat",
                "--stream",
                "--output",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-perplexity"),
            &["--file", "--ctx", "--chunks", "--output"][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-model-file"),
            &["--model", "--benchmark", "--output"][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-kv-cache"),
            &["--requests", "--kv-mib", "--max-running", "--output"][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-continuous-batching"),
            &[
                "--requests",
                "--interarrival-steps",
                "--output-tokens",
                "--verify",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-serving-api"),
            &[
                "--port",
                "--host",
                "--max-queue",
                "--timeout-s",
                "--drain-s",
                "--kv-mib",
                "--attention",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-streaming"),
            &["--prompt", "--stop", "--url", "--benchmark"][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-quantization"),
            &[
                "--formats",
                "--chunks",
                "--quantize-output",
                "--write",
                "--verify",
                "--awq",
                "--calibration-chunks",
                "--decode-tokens",
                "--decode-runs",
                "--kv-caches",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-apr-format"),
            &[
                "--dir",
                "--force",
                "--runs",
                "--tokens",
                "--benchmark",
                "--verify",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-flash-attention"),
            &[
                "--prompt-tokens",
                "--contexts",
                "--decode-tokens",
                "--benchmark",
                "--verify",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-speculative-decode"),
            &[
                "--k",
                "--drafter",
                "--max-tokens",
                "--benchmark",
                "--verify",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-pruning"),
            &[
                "--methods",
                "--patterns",
                "--chunks",
                "--calibration-chunks",
                "--drop-blocks",
                "--ffn-keep",
                "--write",
                "--benchmark",
                "--verify",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-distillation"),
            &[
                "--keep",
                "--steps",
                "--lr",
                "--alpha",
                "--temperature",
                "--divergence",
                "--top-k",
                "--write",
                "--benchmark",
                "--verify",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-tensor-parallel"),
            &[
                "--shards",
                "--prompt",
                "--max-tokens",
                "--prompts",
                "--decode-tokens",
                "--rounds",
                "--sequences",
                "--benchmark",
                "--verify",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-wasm-inference"),
            &[
                "--module",
                "--chromium",
                "--prompt",
                "--chat",
                "--max-tokens",
                "--screenshot",
                "--rounds",
                "--benchmark",
                "--verify",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-latency-profile"),
            &[
                "--rates",
                "--seconds",
                "--max-tokens",
                "--slo-ttft-ms",
                "--slo-tpot-ms",
                "--llama-server",
                "--peer-url",
                "--no-peer",
                "--benchmark",
                "--verify",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-lambda-handler"),
            &[
                "--prompt",
                "--max-tokens",
                "--cargo-lambda",
                "--cold-starts",
                "--warm",
                "--benchmark",
                "--verify",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-model-registry"),
            &[
                "--registry",
                "--reference",
                "--cache",
                "--prompt",
                "keygen",
                "push",
                "pull",
                "--benchmark",
                "--verify",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-scale-out"),
            &[
                "--replicas",
                "--kv-mib",
                "--prefixes",
                "--sentences",
                "--requests",
                "--rate",
                "--max-tokens",
                "--fronts",
                "--nginx",
                "--sglang-python",
                "--benchmark",
                "--verify",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_demo-throughput-bench"),
            &["--concurrency", "--max-tokens", "--url", "--time-limit-s"][..],
        ),
    ] {
        let out = run(bin, &["--help"]);
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in flags.iter().chain(&["--stdout"]) {
            assert!(help.contains(flag), "{bin} --help lacks {flag}");
        }
        // Ends with examples, each a command of this demo (or a client of it).
        let examples = help
            .split("Examples:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{bin} --help has no examples"));
        let name = std::path::Path::new(bin)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let lines: Vec<&str> = examples.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!((2..=4).contains(&lines.len()), "{bin}: {lines:?}");
        assert!(
            lines.iter().any(|l| l.trim_start().starts_with(name)),
            "{bin}: {lines:?}"
        );
    }
}

#[test]
fn the_benchmark_refuses_servers_on_other_machines() {
    let out = run(
        env!("CARGO_BIN_EXE_demo-throughput-bench"),
        &["--url", "http://example.com/v1/completions"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
}

#[test]
fn tgi_json_has_ids_text_and_timings_for_scripts() {
    if chapters_code::assets::model_for_tests().is_none() {
        return;
    }
    let out = run(
        env!("CARGO_BIN_EXE_demo-tgi-architecture"),
        &["--output", "json", "--max-tokens", "8", "--threads", "1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &report["result"];
    let france = chapters_code::reference::france();
    let ids = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&r["prompt_ids"]), france.prompt_ids);
    assert_eq!(ids(&r["generated_ids"]), france.greedy_ids[..8]);
    assert!(france.greedy_text.starts_with(r["text"].as_str().unwrap()));
    for stage in ["load", "tokenize", "prefill", "decode", "detokenize"] {
        assert!(
            r["timings_ms"][stage].as_f64().is_some(),
            "timing of {stage}"
        );
    }
    assert!(r["tokens_per_s"]["decode"].as_f64().unwrap() > 0.0);
}

#[test]
fn perplexity_json_has_ppl_and_tokens() {
    if chapters_code::assets::model_for_tests().is_none()
        || chapters_code::assets::perplexity_text_for_tests().is_none()
    {
        return;
    }
    let out = run(
        env!("CARGO_BIN_EXE_demo-perplexity"),
        &["--output", "json", "--chunks", "1", "--verify"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["result"]["ppl"].as_f64().unwrap() > 1.0);
    assert_eq!(report["result"]["tokens"], 75_678);
    assert_eq!(report["verified"], true);
}

/// The tensor-parallelism chapter's run, shortened: two suite prompts, a few decoded tokens,
/// one round. Every table comes out, the shards stay inside the parity bars, and the bytes they
/// exchange are the formula's.
#[test]
fn tensor_parallel_demo_reports_every_table_and_verifies() {
    if chapters_code::assets::model_for_tests().is_none()
        || chapters_code::assets::perplexity_text_for_tests().is_none()
    {
        return;
    }
    let args = [
        "--output",
        "json",
        "--verify",
        "--benchmark",
        "--prompts",
        "2",
        "--max-tokens",
        "6",
        "--decode-tokens",
        "4",
        "--rounds",
        "1",
        "--sequences",
        "2",
    ];
    let out = run(env!("CARGO_BIN_EXE_demo-tensor-parallel"), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified"], true);
    let tables = report["tables"].as_array().unwrap();
    let table = |name: &str| {
        tables
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no table {name}"))
    };
    for name in [
        "tp-shards",
        "tp-traffic",
        "tp-agreement",
        "tp-collectives",
        "tp-speed",
        "tp-pipeline",
        "tp-projection",
        "tp-verdict",
    ] {
        assert!(
            !table(name)["rows"].as_array().unwrap().is_empty(),
            "{name}"
        );
    }
    let rows = |name: &str| table(name)["rows"].as_array().unwrap().clone();
    assert!(rows("tp-traffic").iter().all(|r| r["equal"] == true));
    assert!(rows("tp-pipeline").iter().all(|r| r["same_tokens"] == true));
    assert_eq!(rows("tp-shards").len(), 4); // one shard, then three
    let speed = rows("tp-speed");
    assert_eq!(speed.len(), 4);
    assert!(
        speed
            .iter()
            .all(|r| r["decode_tok_s"].as_f64().unwrap() > 0.0)
    );
    assert!(speed[3]["predicted_tok_s"].as_f64().unwrap() > 0.0);
    assert_eq!(report["result"]["valid_shards"], "1, 3");
}

/// The short version of the distillation chapter's run: a 2-block student, 2 steps of one
/// 16-token sequence. It trains (the held-out loss goes down: `--verify`), writes a GGUF file
/// that the engine loads, and caches the teacher's logits so that a second run reads them.
#[test]
fn distillation_demo_heals_a_tiny_student_and_writes_it() {
    if chapters_code::assets::model_for_tests().is_none()
        || chapters_code::assets::training_text_for_tests().is_none()
    {
        return;
    }
    let dir = std::env::temp_dir().join(format!("prodml-distill-{}", std::process::id()));
    let dir_arg = dir.display().to_string();
    let args = [
        "--keep",
        "2",
        "--steps",
        "2",
        "--batch",
        "1",
        "--seq-len",
        "16",
        "--held-out",
        "1",
        "--chunks",
        "1",
        "--decode-tokens",
        "0",
        "--output",
        "json",
        "--verify",
        "--cache-dir",
        &dir_arg,
        "--write",
        &dir_arg,
    ];
    let first = run(env!("CARGO_BIN_EXE_demo-distillation"), &args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(report["verified"], true);
    assert!(report["result"]["teacher_cache_seconds"].as_f64().is_some());
    let kept = report["result"]["kept_blocks"].as_array().unwrap();
    assert_eq!(kept.len(), 2);
    let student = dir.join("student-2of30-forward.Q4_1.gguf");
    let gguf = chapters_code::formats::Gguf::open(&student).unwrap();
    let model = chapters_code::model::Llama::load(&gguf).unwrap();
    assert_eq!(model.layers.len(), 2);
    assert!(gguf.get("distill.teacher_blocks").is_some());
    assert!(
        dir.join("student-2of30-forward.Q4_1.gguf.training.json")
            .is_file()
    );
    // The second run reads the teacher's logits from the cache and trains the same weights.
    let second = run(env!("CARGO_BIN_EXE_demo-distillation"), &args);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let again: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert!(
        again["result"]["teacher_cache_seconds"].is_null(),
        "the cache was not reused"
    );
    assert_eq!(
        again["result"]["healed_ppl"],
        report["result"]["healed_ppl"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_sampling_parameters_are_refused_with_their_name() {
    let out = run(
        env!("CARGO_BIN_EXE_demo-tgi-architecture"),
        &["--top-p", "0", "--model", "/nonexistent"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("top_p"));
}

#[test]
fn apr_demo_refuses_to_overwrite_files_in_a_kept_directory() {
    let dir = std::env::temp_dir().join(format!("prodml-apr-keep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mine = dir.join("model.apr");
    std::fs::write(&mine, b"the reader's own file").unwrap();
    // Refused before the model is even opened: no model is needed for this test.
    let out = run(
        env!("CARGO_BIN_EXE_demo-apr-format"),
        &["--dir", dir.to_str().unwrap(), "--model", "/nonexistent"],
    );
    let kept = std::fs::read(&mine).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(kept, b"the reader's own file");
}

#[test]
fn apr_demo_round_trips_the_model_and_rejects_every_attack_it_should() {
    if chapters_code::assets::model_for_tests().is_none() {
        return;
    }
    let out = run(
        env!("CARGO_BIN_EXE_demo-apr-format"),
        &["--output", "json", "--verify", "--tokens", "4"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified"], true);
    let r = &report["result"];
    assert_eq!(r["identical_tensors"], r["tensors"]);
    assert_eq!(r["greedy_gguf"], r["greedy_apr"]);
    // Only the genuine files, and the attacker's file under aprender's default check, open.
    let accepted: Vec<bool> = r["attacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["accepted"].as_bool().unwrap())
        .collect();
    assert_eq!(
        accepted,
        [true, false, false, false, true, false, true, false, false]
    );
}
