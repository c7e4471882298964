//! llama.cpp's prompt-lookup decoding against the book's n-gram speculation, on the
//! speculative-decoding chapter's tasks: each engine's speedup over its own plain greedy
//! decoding, measured side by side in every round. Writes `benchmarks/peer-llama-cpp-lookup.json`.

use super::{ROUNDS, llama_cpp_python};
use crate::bench_file::BenchFile;
use anyhow::{Context, Result, bail};
use chapters_code::demo::{Column, Provenance, Table};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = include_str!("llama_cpp_lookup.py");

/// The demo's task names (`demo-speculative-decode --task`).
const TASKS: [&str; 5] = ["quote", "summarize", "edit-text", "edit-code", "chat"];
/// Draft lengths: short, and the demo's default.
const KS: [usize; 2] = [2, 8];
/// Tokens per task, as in the chapter's tasks table.
const MAX_TOKENS: usize = 64;

/// One (task, threads, k) cell over the rounds.
#[derive(Default)]
struct Cell {
    /// Plain decode seconds ÷ speculative decode seconds, one per round.
    ours: Vec<f64>,
    theirs: Vec<f64>,
    ours_passes: i64,
    theirs_passes: i64,
    theirs_drafted: i64,
    /// Whether llama.cpp's lookup decoding gave its plain decoding's tokens, every round.
    theirs_same: bool,
    /// Whether llama.cpp's plain tokens were ours, every round.
    parity: bool,
    /// llama.cpp's mean pass over 1 + k tokens ÷ its mean pass over one, one per round.
    theirs_cost: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// Our demo's default run on one task: (report result, plain ÷ speculative decode time).
fn ours(root: &Path, task: &str, threads: usize, k: usize) -> Result<(Value, f64)> {
    let args = [
        "--task".to_string(),
        task.into(),
        "--k".into(),
        k.to_string(),
        "--threads".into(),
        threads.to_string(),
        "--max-tokens".into(),
        MAX_TOKENS.to_string(),
        "--output".into(),
        "json".into(),
    ];
    let report = crate::bench::run_demo_with(root, "demo-speculative-decode", &args)?;
    let r = report.result;
    if r["same_tokens"] != json!(true) {
        bail!("our speculative decoding changed the tokens of task {task}: a bug, not a result");
    }
    let f = |key: &str| {
        r[key]
            .as_f64()
            .with_context(|| format!("the demo reported no {key}"))
    };
    let ratio = f("plain_decode_s")? / f("speculative_decode_s")?.max(1e-9);
    Ok((r, ratio))
}

/// llama.cpp on `tasks` (our demo's prompt ids, stops and limits) at `threads` and `k`.
fn theirs(python: &Path, script: &Path, tasks: &Path, threads: usize, k: usize) -> Result<Value> {
    let out = Command::new(python)
        .arg(script)
        .arg(chapters_code::assets::model_path())
        .arg(threads.to_string())
        .arg(k.to_string())
        .arg(tasks)
        .output()
        .context("running the llama.cpp lookup benchmark")?;
    if !out.status.success() {
        bail!(
            "the llama.cpp lookup benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("the llama.cpp lookup benchmark printed no JSON")
}

pub fn llama_cpp_lookup(root: &Path) -> Result<PathBuf> {
    let python = llama_cpp_python(root)?;
    let work = root.join("target/peers");
    std::fs::create_dir_all(&work)?;
    let script = work.join("llama_cpp_lookup.py");
    std::fs::write(&script, SCRIPT)?;
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = vec![1, all];
    threads.dedup();
    let mut cells: BTreeMap<(usize, usize, usize), Cell> = BTreeMap::new();
    let mut version = String::new();
    for round in 1..=ROUNDS {
        for &t in &threads {
            for k in KS {
                eprintln!(
                    "== prompt lookup, ours and llama.cpp's: round {round} of {ROUNDS}, {t} threads, k = {k}"
                );
                let mut ours_ids = Vec::new();
                let mut inputs = Vec::new();
                for (i, task) in TASKS.iter().enumerate() {
                    let (r, ratio) = ours(root, task, t, k)?;
                    let cell = cells.entry((i, t, k)).or_insert_with(|| Cell {
                        theirs_same: true,
                        parity: true,
                        ..Cell::default()
                    });
                    cell.ours.push(ratio);
                    cell.ours_passes = r["target_passes"].as_i64().unwrap_or(0);
                    ours_ids.push(r["generated_ids"].clone());
                    inputs.push(json!({
                        "name": task,
                        "prompt_ids": r["prompt_ids"],
                        "stop_ids": r["stop_ids"],
                        "max_tokens": r["max_tokens"],
                    }));
                }
                let tasks = work.join("lookup-tasks.json");
                std::fs::write(&tasks, serde_json::to_vec(&inputs)?)?;
                let result = theirs(&python, &script, &tasks, t, k)?;
                version = result["version"].as_str().unwrap_or("?").to_string();
                let rows = result["rows"].as_array().cloned().unwrap_or_default();
                for (i, task) in TASKS.iter().enumerate() {
                    let row = |method: &str| {
                        rows.iter()
                            .find(|r| r["task"] == json!(task) && r["method"] == json!(method))
                            .with_context(|| {
                                format!("llama.cpp reported no {method} run of {task}")
                            })
                    };
                    let (plain, lookup) = (row("plain")?, row("lookup")?);
                    let secs = |r: &Value| r["decode_s"].as_f64().unwrap_or(f64::NAN);
                    let pass = |r: &Value, n: usize| r["pass_s"][n.to_string()].as_f64();
                    let cell = cells.get_mut(&(i, t, k)).context("our run made the cell")?;
                    cell.theirs.push(secs(plain) / secs(lookup).max(1e-9));
                    cell.theirs_passes = lookup["passes"].as_i64().unwrap_or(0);
                    cell.theirs_drafted = lookup["drafted"].as_i64().unwrap_or(0);
                    cell.theirs_same &= plain["ids"] == lookup["ids"];
                    cell.parity &= plain["ids"] == ours_ids[i];
                    if let (Some(full), Some(one)) = (pass(lookup, 1 + k), pass(plain, 1)) {
                        cell.theirs_cost.push(full / one);
                    }
                }
            }
        }
    }
    let mut table = Table::new(
        "peer-llama-cpp-lookup",
        "Prompt-lookup speculation, ours and llama.cpp's, each against its own plain greedy decoding",
        vec![
            Column::new("task", "Task"),
            Column::new("threads", "Threads"),
            Column::new("k", "k"),
            Column::new("ours", "Ours: decode speedup")
                .unit("×")
                .decimals(2),
            Column::new("theirs", "llama.cpp: decode speedup")
                .unit("×")
                .decimals(2),
            Column::new("passes", "Target passes, ours / llama.cpp's"),
            Column::new("theirs_same", "llama.cpp: same tokens as its plain"),
            Column::new("theirs_cost", "llama.cpp: T(1 + k)/T(1)").decimals(2),
            Column::new("parity", "llama.cpp's plain tokens = ours"),
        ],
    );
    for ((i, t, k), cell) in cells {
        table.push(vec![
            json!(TASKS[i]),
            json!(t),
            json!(k),
            json!(median(cell.ours)),
            json!(median(cell.theirs)),
            json!(format!("{} / {}", cell.ours_passes, cell.theirs_passes)),
            json!(cell.theirs_same),
            json!(median(cell.theirs_cost)),
            json!(cell.parity),
        ]);
    }
    table.notes.push(format!(
        "Greedy, up to {MAX_TOKENS} tokens per task, the same prompt token ids in both engines; each speedup is the median over {ROUNDS} rounds of plain decode time ÷ speculative decode time (the tokens after the first), both runs of an engine back to back in each round, the two engines one after the other. Ours: `demo-speculative-decode --task T --k K` (n-gram drafter, suffixes of up to 4 tokens, fixed k). llama.cpp: llama-cpp-python {version}'s `LlamaPromptLookupDecoding(max_ngram_size=2, num_pred_tokens=k)`, which makes the model keep every position's logits; T(1 + k)/T(1): its mean pass over 1 + k tokens ÷ its mean single-token pass, timed around `Llama.eval`. Its plain tokens = ours: in every round (llama.cpp built by pip for this CPU, not one of the parity suite's reference builds)."
    ));
    let mut provenance = Provenance::current();
    provenance.profile = "release".into();
    provenance.command = "cargo xtask bench --peer llama-cpp --only lookup".into();
    provenance
        .crate_versions
        .insert("llama-cpp-python".into(), version);
    BenchFile { table, provenance }.save(root)
}
