//! Peers measured side by side with the book's engine, on the same machine and workload. They
//! are optional (`cargo xtask bench --peer llama-cpp`): building them takes long and needs more
//! than the book itself, so neither the tests nor CI depend on them.

use crate::bench_file::BenchFile;
use anyhow::{Context, Result, bail};
use chapters_code::demo::{Column, Provenance, Table};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// llama-cpp-python, pinned: the version whose outputs are the book's reference.
pub const LLAMA_CPP_PYTHON: &str = "llama-cpp-python==0.3.36";
const LLAMA_CPP_SCRIPT: &str = include_str!("llama_cpp_bench.py");

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

/// Runs llama.cpp's benchmark and writes `benchmarks/peer-llama-cpp.json`.
pub fn llama_cpp(root: &Path) -> Result<PathBuf> {
    let python = llama_cpp_python(root)?;
    let script = root.join("target/peers/llama_cpp_bench.py");
    std::fs::create_dir_all(script.parent().context("script path")?)?;
    std::fs::write(&script, LLAMA_CPP_SCRIPT)?;
    let model = chapters_code::assets::model_path();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
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
    let result: Value =
        serde_json::from_slice(&out.stdout).context("the llama.cpp benchmark printed no JSON")?;
    let mut table = Table::new(
        "peer-llama-cpp",
        "llama.cpp on the same machine, model and workload",
        vec![
            Column::new("threads", "Threads"),
            Column::new("prefill", "Prefill, 128-token prompt")
                .unit("tokens/s")
                .decimals(1),
            Column::new("decode", "Decode, 128 tokens")
                .unit("tokens/s")
                .decimals(1),
        ],
    );
    for row in result["rows"].as_array().cloned().unwrap_or_default() {
        table.push(vec![
            row["threads"].clone(),
            row["prefill"].clone(),
            row["decode"].clone(),
        ]);
    }
    table.notes.push(format!(
        "llama-cpp-python {} (llama.cpp built from source by pip), greedy decoding driven from Python, best of 3; its OpenMP threads spin while they wait. Build: {}",
        result["version"].as_str().unwrap_or("?"),
        result["system_info"].as_str().unwrap_or("?").trim().trim_end_matches('|').trim()
    ));
    let mut provenance = Provenance::current();
    provenance.profile = "release".into();
    provenance.command = "cargo xtask bench --peer llama-cpp".into();
    provenance.crate_versions.insert(
        "llama-cpp-python".into(),
        result["version"].as_str().unwrap_or("?").into(),
    );
    BenchFile { table, provenance }.save(root)
}
