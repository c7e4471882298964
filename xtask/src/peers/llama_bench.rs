//! `cargo xtask bench --peer llama-cpp`'s `peer-llama-bench` job: llama.cpp's own benchmark
//! tool, `llama-bench` (pp512 and tg128), built from the same vendored sources as
//! llama-server, against the book's engine on the same workload — a 512-token prefill and
//! 128 decoded tokens at 1 thread and at every thread — in interleaved rounds.

use super::llama_server::{llama_server, run};
use super::{Best, keep_best, ours_speed};
use crate::bench_file::BenchFile;
use anyhow::{Context, Result, bail};
use chapters_code::demo::{Column, Provenance, Table};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `demo-tgi-architecture --benchmark` on pp512: its prefill column is ours.
const OURS_PP512: &[&str] = &["--benchmark", "--output", "json", "--prompt-tokens", "512"];

/// ... and on a 1-token prompt: its decode column is ours for tg128, which llama-bench measures
/// from an empty context (decoding after 512 tokens attends over 4× more keys and values).
const OURS_TG128: &[&str] = &["--benchmark", "--output", "json", "--prompt-tokens", "1"];

/// Rounds: each runs our benchmark twice and llama-bench once (about five minutes).
const ROUNDS: usize = 2;

/// Builds llama-bench next to llama-server (same build tree) unless it is there.
fn llama_bench_binary(root: &Path) -> Result<PathBuf> {
    let server = llama_server(root)?;
    let bin = server.with_file_name("llama-bench");
    if bin.exists() {
        return Ok(bin);
    }
    let build = root.join("target/peers/llama-server/build");
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    run(
        Command::new("cmake").arg("--build").arg(&build).args([
            "--target",
            "llama-bench",
            "-j",
            &jobs.to_string(),
        ]),
        "building llama-bench",
    )?;
    std::fs::copy(build.join("bin/llama-bench"), &bin)?;
    Ok(bin)
}

/// Measures both engines and writes `benchmarks/peer-llama-bench.json`.
pub fn llama_bench(root: &Path) -> Result<PathBuf> {
    let bench = llama_bench_binary(root)?;
    let model = chapters_code::assets::model_path();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let thread_list = if threads > 1 {
        format!("1,{threads}")
    } else {
        "1".into()
    };
    let (mut ours_pp, mut ours_tg, mut theirs) = (Best::new(), Best::new(), Best::new());
    let mut build = String::from("?");
    for round in 1..=ROUNDS {
        eprintln!("== side by side with llama-bench, round {round} of {ROUNDS}");
        ours_speed(root, OURS_PP512, &mut ours_pp)?;
        ours_speed(root, OURS_TG128, &mut ours_tg)?;
        let out = Command::new(&bench)
            .arg("-m")
            .arg(&model)
            .args(["-t", &thread_list, "-p", "512", "-n", "128", "-r", "3"])
            .args(["-o", "json"])
            .output()
            .context("running llama-bench")?;
        if !out.status.success() {
            bail!(
                "llama-bench failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let runs: Value =
            serde_json::from_slice(&out.stdout).context("llama-bench printed no JSON")?;
        for test in runs
            .as_array()
            .context("llama-bench's JSON is not a list")?
        {
            let (Some(t), Some(speed)) = (test["n_threads"].as_i64(), test["avg_ts"].as_f64())
            else {
                continue;
            };
            match (test["n_prompt"].as_i64(), test["n_gen"].as_i64()) {
                (Some(512), Some(0)) => keep_best(&mut theirs, t, speed, 0.0),
                (Some(0), Some(128)) => keep_best(&mut theirs, t, 0.0, speed),
                _ => {}
            }
            build = format!(
                "build {} ({}), CPU {}",
                test["build_commit"].as_str().unwrap_or("?"),
                test["build_number"].as_i64().unwrap_or(0),
                test["cpu_info"].as_str().unwrap_or("?")
            );
        }
    }
    let mut table = Table::new(
        "peer-llama-bench",
        "The book's engine and llama-bench, side by side: 512-token prefill, 128 decoded tokens",
        vec![
            Column::new("engine", "Engine"),
            Column::new("threads", "Threads"),
            Column::new("prefill", "Prefill, 512-token prompt")
                .unit("tokens/s")
                .decimals(1),
            Column::new("decode", "Decode, 128 tokens")
                .unit("tokens/s")
                .decimals(1),
            Column::new("prefill_ratio", "Prefill, ours ÷ llama.cpp")
                .unit("×")
                .decimals(2),
            Column::new("decode_ratio", "Decode, ours ÷ llama.cpp")
                .unit("×")
                .decimals(2),
        ],
    );
    let ours: Best = ours_pp
        .iter()
        .map(|(t, (p, _))| (*t, (*p, ours_tg.get(t).map_or(f64::NAN, |s| s.1))))
        .collect();
    for (engine, best) in [("chapters-code", &ours), ("llama.cpp", &theirs)] {
        for (t, (p, d)) in best {
            let (tp, td) = theirs.get(t).copied().unwrap_or((f64::NAN, f64::NAN));
            let ratio = |ours: f64, theirs: f64| {
                (engine == "chapters-code" && theirs > 0.0).then(|| ours / theirs)
            };
            table.push(vec![
                json!(engine),
                json!(t),
                json!(p),
                json!(d),
                json!(ratio(*p, tp)),
                json!(ratio(*d, td)),
            ]);
        }
    }
    table.notes.push(format!(
        "Best of {ROUNDS} interleaved rounds; ours: each round the best of 5 runs of demo-tgi-architecture --benchmark, prefill with --prompt-tokens 512, decode with --prompt-tokens 1 (tg128 decodes from an empty context); llama.cpp: llama-bench -p 512 -n 128 -r 3 (its mean of 3). llama.cpp from the llama-cpp-python {} sdist, built with GGML_NATIVE=ON: {build}. Same model file, same machine, one run.",
        super::LLAMA_CPP_PYTHON.rsplit("==").next().unwrap_or("?")
    ));
    let mut provenance = Provenance::current();
    provenance.profile = "release".into();
    provenance.command = "cargo xtask bench --peer llama-cpp --only peer-llama-bench".into();
    provenance.crate_versions.insert(
        "llama.cpp (llama-bench)".into(),
        super::LLAMA_CPP_PYTHON
            .rsplit("==")
            .next()
            .unwrap_or("?")
            .into(),
    );
    BenchFile { table, provenance }.save(root)
}
