//! Peers measured side by side with the book's engine, on the same machine and workload. They
//! are optional (`cargo xtask bench --peer llama-cpp`): building them takes long and needs more
//! than the book itself, so neither the tests nor CI depend on them.

mod llama_bench;
mod llama_server;
mod lookup;

pub use llama_bench::llama_bench;
pub use llama_server::llama_server;
pub use lookup::llama_cpp_lookup;

/// A peer's job: measures, writes its results file, returns the path.
pub type Job = fn(&Path) -> Result<PathBuf>;

/// `cargo xtask bench --peer llama-cpp`'s jobs, by the table each writes.
pub const LLAMA_CPP_JOBS: [(&str, Job); 4] = [
    ("peer-llama-bench", llama_bench),
    ("peer-llama-cpp", llama_cpp),
    ("peer-llama-cpp-flash", llama_cpp_flash),
    ("peer-llama-cpp-lookup", llama_cpp_lookup),
];

use crate::bench_file::BenchFile;
use anyhow::{Context, Result, bail};
use chapters_code::demo::{Column, Provenance, Table};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// llama-cpp-python, pinned: the version whose outputs are the book's reference.
pub const LLAMA_CPP_PYTHON: &str = "llama-cpp-python==0.3.36";
const LLAMA_CPP_SCRIPT: &str = include_str!("llama_cpp_bench.py");
const LLAMA_CPP_FLASH_SCRIPT: &str = include_str!("llama_cpp_flash.py");

/// The Python that has llama_cpp: `$PRODML_LLAMA_CPP_PYTHON`, or a venv under `target/peers`
/// created on first use (pip builds llama.cpp from source: many minutes on two cores).
fn llama_cpp_python(root: &Path) -> Result<PathBuf> {
    if let Some(python) = std::env::var_os("PRODML_LLAMA_CPP_PYTHON") {
        return Ok(PathBuf::from(python));
    }
    let venv = root.join("target/peers/llama-cpp");
    let python = venv.join("bin/python");
    let has_it = Command::new(&python)
        .args(["-c", "import llama_cpp"])
        .status()
        .is_ok_and(|s| s.success());
    if has_it {
        return Ok(python);
    }
    eprintln!(
        "building {LLAMA_CPP_PYTHON} into {} (llama.cpp compiles from source; this takes a while)...",
        venv.display()
    );
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()?
        .success()
        && Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                LLAMA_CPP_PYTHON,
            ])
            .status()?
            .success();
    if !ok {
        bail!("could not install {LLAMA_CPP_PYTHON} (it needs a C++ compiler and PyPI)");
    }
    Ok(python)
}

const PARITY_SCRIPT: &str = include_str!("parity_reference.py");

/// `cargo xtask parity-reference`: llama.cpp's outputs for the parity suite, from builds made
/// here (see `parity_reference.py`). Returns the files written.
pub fn parity_reference(root: &Path) -> Result<Vec<PathBuf>> {
    let work = root.join("target/peers/parity");
    std::fs::create_dir_all(&work)?;
    let script = work.join("parity_reference.py");
    std::fs::write(&script, PARITY_SCRIPT)?;
    // The course model itself, whatever PRODML_MODEL says: the suite is this model's.
    let models = chapters_code::assets::models_dir();
    crate::fetch::fetch_all(&models)?;
    let model = models.join(chapters_code::assets::MODEL.file_name);
    if !model.is_file() {
        bail!(
            "the course model is not at {}: run `cargo xtask fetch-model`",
            model.display()
        );
    }
    let dir = chapters_code::parity::suite::suite_dir();
    let ok = Command::new("python3")
        .arg(&script)
        .arg(&model)
        .arg(dir.join("prompts.json"))
        .arg(&dir)
        .arg(&work)
        .status()
        .context("running python3 (the reference script needs Python 3 with pip and venv)")?
        .success();
    if !ok {
        bail!("the parity reference script failed (its output is above)");
    }
    let mut written: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("llama-"))
        })
        .collect();
    written.sort();
    Ok(written)
}

/// Best (prefill, decode) per thread count, over rounds.
type Best = std::collections::BTreeMap<i64, (f64, f64)>;

fn keep_best(best: &mut Best, threads: i64, prefill: f64, decode: f64) {
    let e = best.entry(threads).or_insert((0.0, 0.0));
    e.0 = e.0.max(prefill);
    e.1 = e.1.max(decode);
}

/// `demo-tgi-architecture --benchmark` as the llama-cpp-python job runs it (pp128, tg128).
const SPEED_ARGS: &[&str] = &["--benchmark", "--output", "json"];

/// Runs `demo-tgi-architecture` with `args` (a `--benchmark`) once and keeps the best prefill
/// and decode speed per thread count of the engine as it runs by default (threads that spin a
/// moment before sleeping).
fn ours_speed(root: &Path, args: &'static [&'static str], best: &mut Best) -> Result<()> {
    let demo = crate::bench::DemoJob {
        bin: "demo-tgi-architecture",
        args,
    };
    let report = crate::bench::run_demo(root, &demo)?;
    let speed = report
        .tables
        .iter()
        .find(|t| t.name == "engine-speed")
        .context("the demo reported no engine-speed table")?;
    for row in &speed.rows {
        let get = |key: &str| row.get(key).and_then(Value::as_f64);
        // The engine as it runs by default: not the row of threads that sleep at once.
        if get("spin_us") == Some(0.0) {
            continue;
        }
        if let (Some(t), Some(p), Some(d)) = (get("threads"), get("prefill"), get("decode")) {
            keep_best(best, t as i64, p, d);
        }
    }
    Ok(())
}

/// Rounds of the side-by-side: each round runs both engines, one after the other, so that
/// a noisy neighbour on a shared machine slows both alike; the best of all rounds counts.
const ROUNDS: usize = 3;

/// Runs llama.cpp and the book's engine on the same workload, interleaved, and writes
/// `benchmarks/peer-llama-cpp.json`.
pub fn llama_cpp(root: &Path) -> Result<PathBuf> {
    let python = llama_cpp_python(root)?;
    let script = root.join("target/peers/llama_cpp_bench.py");
    std::fs::create_dir_all(script.parent().context("script path")?)?;
    std::fs::write(&script, LLAMA_CPP_SCRIPT)?;
    let model = chapters_code::assets::model_path();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut ours, mut theirs) = (Best::new(), Best::new());
    let mut version = String::new();
    let mut system_info = String::new();
    for round in 1..=ROUNDS {
        eprintln!("== side by side with llama.cpp, round {round} of {ROUNDS}");
        ours_speed(root, SPEED_ARGS, &mut ours)?;
        let out = Command::new(&python)
            .arg(&script)
            .arg(&model)
            .arg(threads.to_string())
            .output()
            .context("running the llama.cpp benchmark")?;
        if !out.status.success() {
            bail!(
                "the llama.cpp benchmark failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let result: Value = serde_json::from_slice(&out.stdout)
            .context("the llama.cpp benchmark printed no JSON")?;
        for row in result["rows"].as_array().cloned().unwrap_or_default() {
            if let (Some(t), Some(p), Some(d)) = (
                row["threads"].as_i64(),
                row["prefill"].as_f64(),
                row["decode"].as_f64(),
            ) {
                keep_best(&mut theirs, t, p, d);
            }
        }
        version = result["version"].as_str().unwrap_or("?").to_string();
        system_info = result["system_info"]
            .as_str()
            .unwrap_or("?")
            .trim()
            .trim_end_matches('|')
            .trim()
            .to_string();
    }
    let mut table = Table::new(
        "peer-llama-cpp",
        "The book's engine and llama.cpp, side by side: same machine, model and workload",
        vec![
            Column::new("engine", "Engine"),
            Column::new("threads", "Threads"),
            Column::new("prefill", "Prefill, 128-token prompt")
                .unit("tokens/s")
                .decimals(1),
            Column::new("decode", "Decode, 128 tokens")
                .unit("tokens/s")
                .decimals(1),
        ],
    );
    for (engine, best) in [("chapters-code", &ours), ("llama.cpp", &theirs)] {
        for (t, (p, d)) in best {
            table.push(vec![json!(engine), json!(t), json!(p), json!(d)]);
        }
    }
    table.notes.push(format!(
        "Best of {ROUNDS} interleaved rounds, each itself a best of several runs. llama.cpp: llama-cpp-python {version}, built from source by pip, decoding driven from Python; its OpenMP threads spin while they wait. Build: {system_info}."
    ));
    let mut provenance = Provenance::current();
    provenance.profile = "release".into();
    provenance.command = "cargo xtask bench --peer llama-cpp".into();
    provenance
        .crate_versions
        .insert("llama-cpp-python".into(), version);
    BenchFile { table, provenance }.save(root)
}

/// The context lengths and decoded tokens of `demo-flash-attention --benchmark`'s defaults.
const FLASH_CONTEXTS: &str = "128,256,512,1024,2048,4096,8176";
const FLASH_DECODE_TOKENS: &str = "16";

/// llama.cpp with and without its flash attention at the flash-attention chapter's context
/// lengths; writes `benchmarks/peer-llama-cpp-flash.json`.
pub fn llama_cpp_flash(root: &Path) -> Result<PathBuf> {
    let python = llama_cpp_python(root)?;
    let script = root.join("target/peers/llama_cpp_flash.py");
    std::fs::create_dir_all(script.parent().context("script path")?)?;
    std::fs::write(&script, LLAMA_CPP_FLASH_SCRIPT)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("== llama.cpp with and without flash attention, contexts {FLASH_CONTEXTS}");
    let out = Command::new(&python)
        .arg(&script)
        .arg(chapters_code::assets::model_path())
        .arg(threads.to_string())
        .arg(FLASH_CONTEXTS)
        .arg(FLASH_DECODE_TOKENS)
        .arg(chapters_code::assets::perplexity_text_path())
        .output()
        .context("running the llama.cpp flash-attention benchmark")?;
    if !out.status.success() {
        bail!(
            "the llama.cpp flash-attention benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let result: Value = serde_json::from_slice(&out.stdout)
        .context("the llama.cpp flash-attention benchmark printed no JSON")?;
    let rows = result["rows"].as_array().cloned().unwrap_or_default();
    let get = |fa: bool, n: i64, key: &str| {
        rows.iter()
            .find(|r| r["flash_attn"] == json!(fa) && r["context"].as_i64() == Some(n))
            .and_then(|r| r[key].as_f64())
    };
    let mut table = Table::new(
        "peer-llama-cpp-flash",
        "llama.cpp without and with flash attention (-fa), by context length, whole model",
        vec![
            Column::new("context", "Context").unit("tokens"),
            Column::new("prefill_off", "Prefill, no -fa")
                .unit("tokens/s")
                .decimals(1),
            Column::new("prefill_fa", "Prefill, -fa")
                .unit("tokens/s")
                .decimals(1),
            Column::new("decode_off", "Decode, no -fa")
                .unit("tokens/s")
                .decimals(1),
            Column::new("decode_fa", "Decode, -fa")
                .unit("tokens/s")
                .decimals(1),
        ],
    );
    let mut contexts: Vec<i64> = rows.iter().filter_map(|r| r["context"].as_i64()).collect();
    contexts.sort_unstable();
    contexts.dedup();
    for n in contexts {
        table.push(vec![
            json!(n),
            json!(get(false, n, "prefill")),
            json!(get(true, n, "prefill")),
            json!(get(false, n, "decode")),
            json!(get(true, n, "decode")),
        ]);
    }
    let version = result["version"].as_str().unwrap_or("?").to_string();
    table.notes.push(format!(
        "llama-cpp-python {version}, {threads} threads, context 8192, batches of 512. Prefill: the first n tokens of the reference text in one call; decode: the next {FLASH_DECODE_TOKENS} tokens one by one, teacher-forced, driven from Python. One run of each."
    ));
    let mut provenance = Provenance::current();
    provenance.profile = "release".into();
    provenance.command = "cargo xtask bench --peer llama-cpp".into();
    provenance
        .crate_versions
        .insert("llama-cpp-python".into(), version);
    BenchFile { table, provenance }.save(root)
}
