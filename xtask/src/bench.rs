//! `cargo xtask bench`: run the criterion benches and the demos' `--benchmark` modes, store
//! each measured table as `benchmarks/<name>.json` with provenance, and re-inject the chapters.

use crate::bench_file::BenchFile;
use crate::book::cargo;
use anyhow::{Context, Result, bail};
use chapters_code::demo::provenance::command_line;
use chapters_code::demo::{Column, Provenance, Report, Table};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A demo whose `--benchmark --output json` report yields tables.
pub struct DemoJob {
    pub bin: &'static str,
    pub args: &'static [&'static str],
}

/// A criterion group turned into one table.
pub struct CriterionJob {
    /// `benches/<bench>.rs`.
    pub bench: &'static str,
    pub group: &'static str,
    pub table: &'static str,
    pub title: &'static str,
    /// Header of the first column (the benchmark ids).
    pub what: &'static str,
    /// Throughput unit after scaling by `scale` (e.g. `GFLOP/s` with 1e-9 per element/s).
    pub rate_unit: &'static str,
    pub scale: f64,
    pub notes: &'static [&'static str],
}

pub const DEMOS: &[DemoJob] = &[
    DemoJob {
        bin: "demo-hardware-detect",
        args: &["--benchmark", "--output", "json"],
    },
    DemoJob {
        bin: "demo-model-file",
        args: &["--benchmark", "--output", "json", "--verify"],
    },
    DemoJob {
        bin: "demo-tgi-architecture",
        args: &["--benchmark", "--output", "json"],
    },
    DemoJob {
        bin: "demo-tgi-architecture",
        args: &["--output", "json", "--threads", "1"],
    },
    DemoJob {
        bin: "demo-tgi-architecture",
        args: &["--output", "json", "--verify", "--max-tokens", "1"],
    },
    DemoJob {
        bin: "demo-perplexity",
        args: &["--output", "json", "--verify"],
    },
    DemoJob {
        bin: "demo-kv-cache",
        args: &["--output", "json", "--verify"],
    },
    DemoJob {
        bin: "demo-continuous-batching",
        args: &["--output", "json", "--verify"],
    },
    DemoJob {
        bin: "demo-streaming",
        args: &[
            "--benchmark",
            "--output",
            "json",
            "--verify",
            "--stop",
            "bon",
        ],
    },
    DemoJob {
        bin: "demo-serving-api",
        args: &["--verify", "--output", "json", "--port", "0"],
    },
    DemoJob {
        bin: "demo-throughput-bench",
        args: &["--output", "json", "--verify"],
    },
    DemoJob {
        bin: "demo-flash-attention",
        args: &["--benchmark", "--output", "json", "--verify"],
    },
    DemoJob {
        bin: "demo-quantization",
        args: &["--output", "json", "--verify", "--chunks", "8"],
    },
    DemoJob {
        bin: "demo-pruning",
        args: &["--benchmark", "--output", "json", "--verify"],
    },
    DemoJob {
        bin: "demo-distillation",
        args: &[
            "--benchmark",
            "--output",
            "json",
            "--verify",
            "--write",
            "models/distill",
        ],
    },
    DemoJob {
        bin: "demo-apr-format",
        args: &["--benchmark", "--output", "json", "--verify"],
    },
    DemoJob {
        bin: "demo-speculative-decode",
        args: &["--benchmark", "--output", "json", "--verify"],
    },
    DemoJob {
        bin: "demo-tensor-parallel",
        args: &["--benchmark", "--output", "json", "--verify"],
    },
    DemoJob {
        bin: "demo-lambda-handler",
        args: &["--benchmark", "--output", "json", "--verify"],
    },
    DemoJob {
        bin: "demo-latency-profile",
        args: &["--benchmark", "--output", "json", "--verify"],
    },
    DemoJob {
        bin: "demo-model-registry",
        args: &["--benchmark", "--output", "json", "--verify"],
    },
    DemoJob {
        bin: "demo-scale-out",
        args: &["--benchmark", "--output", "json", "--verify"],
    },
    DemoJob {
        bin: "demo-wasm-inference",
        args: &[
            "--benchmark",
            "--output",
            "json",
            "--verify",
            "--screenshot",
            "images/wasm-browser.png",
        ],
    },
];

pub const CRITERION: &[CriterionJob] = &[
    CriterionJob {
        bench: "roofline",
        group: "fma_kernels",
        table: "hardware-fma-kernels",
        title: "From the naive loop to peak compute, one thread",
        what: "Kernel",
        rate_unit: "GFLOP/s",
        scale: 1e-9,
        notes: &["Speedup is measured against the first row in the same run."],
    },
    CriterionJob {
        bench: "kernels",
        group: "q4_1_matvec",
        table: "kernels-q4_1-matvec",
        title: "Q4_1 matrix × vector, 1536 × 576, one thread",
        what: "Kernel",
        rate_unit: "GB/s of weights",
        scale: 1e-9,
        notes: &[
            "Speedup is measured against the first row in the same run. Every row's result is tested against the scalar reference.",
        ],
    },
    CriterionJob {
        bench: "kernels",
        group: "q4_1_batch",
        table: "kernels-q4_1-batch",
        title: "Q4_1 matrix × 8 tokens, 1536 × 576, one thread",
        what: "Kernel",
        rate_unit: "G multiply-adds/s",
        scale: 1e-9,
        notes: &[
            "Speedup is measured against the first row in the same run. Every tile size on every path is tested against the scalar reference, bit for bit.",
        ],
    },
    CriterionJob {
        bench: "kernels",
        group: "q8_0_stream",
        table: "kernels-q8_0-stream",
        title: "Q8_0 matrix × one token, 196608 × 576 (120 MB, read from memory), one thread",
        what: "Kernel",
        rate_unit: "GB/s of weights",
        scale: 1e-9,
        notes: &[
            "Speedup is measured against the first row in the same run. The matrix is four times the course model's output head, larger than every cache, so each pass reads it from memory; same bits on every row (tested).",
        ],
    },
    CriterionJob {
        bench: "kernels",
        group: "q4_k_matvec",
        table: "kernels-q4k-matvec",
        title: "Q4_K matrix × vector, 576 × 1536, one thread",
        what: "Kernel",
        rate_unit: "GB/s of weights",
        scale: 1e-9,
        notes: &[
            "Speedup is measured against the scalar reference in the same run. The AVX2 kernels give the scalar reference's result bit for bit (tested).",
        ],
    },
    CriterionJob {
        bench: "kernels",
        group: "q5_k_matvec",
        table: "kernels-q5k-matvec",
        title: "Q5_K matrix × vector, 576 × 1536, one thread",
        what: "Kernel",
        rate_unit: "GB/s of weights",
        scale: 1e-9,
        notes: &[
            "Speedup is measured against the scalar reference in the same run. The AVX2 kernels give the scalar reference's result bit for bit (tested).",
        ],
    },
    CriterionJob {
        bench: "kernels",
        group: "q6_k_matvec",
        table: "kernels-q6k-matvec",
        title: "Q6_K matrix × vector, 576 × 1536, one thread",
        what: "Kernel",
        rate_unit: "GB/s of weights",
        scale: 1e-9,
        notes: &[
            "Speedup is measured against the scalar reference in the same run. The AVX2 kernels give the scalar reference's result bit for bit (tested).",
        ],
    },
    CriterionJob {
        bench: "kernels",
        group: "nf4_matvec",
        table: "kernels-nf4-matvec",
        title: "NF4 matrix × f32 vector, 1536 × 576, one thread",
        what: "Kernel",
        rate_unit: "GB/s of weights",
        scale: 1e-9,
        notes: &[
            "Speedup is measured against the scalar reference in the same run. The AVX2 result is tested against the scalar reference (to rounding: the additions run in another order).",
        ],
    },
    CriterionJob {
        bench: "kernels",
        group: "f32_matvec",
        table: "kernels-f32-vs-trueno",
        title: "f32 matrix × vector, 1536 × 576, one thread: ours and trueno's",
        what: "Implementation",
        rate_unit: "GB/s of weights",
        scale: 1e-9,
        notes: &["Speedup is measured against the first row in the same run."],
    },
    CriterionJob {
        bench: "roofline",
        group: "triad_sizes",
        table: "hardware-triad-sizes",
        title: "The same triad on working sets of growing size, one thread",
        what: "Working set (three arrays)",
        rate_unit: "GB/s",
        scale: 1e-9,
        notes: &["Speedup is measured against the first row in the same run."],
    },
];

/// Runs every job whose table or binary name contains `filter`; returns the files written.
pub fn run(root: &Path, filter: Option<&str>) -> Result<Vec<PathBuf>> {
    let wanted = |name: &str| filter.is_none_or(|f| name.contains(f));
    let mut written = Vec::new();
    let mut benches: Vec<&str> = Vec::new();
    for job in CRITERION
        .iter()
        .filter(|j| wanted(j.table) || wanted(j.bench))
    {
        if !benches.contains(&job.bench) {
            benches.push(job.bench);
        }
    }
    let criterion_home = root.join("target/criterion");
    for bench in benches {
        let args = ["bench", "-p", "chapters-code", "--bench", bench];
        eprintln!("== cargo {}", args.join(" "));
        let started = std::time::SystemTime::now();
        let status = Command::new(cargo())
            .current_dir(root)
            .args(args)
            .env("CRITERION_HOME", &criterion_home)
            .status()
            .context("running cargo bench")?;
        if !status.success() {
            bail!("cargo bench --bench {bench} failed");
        }
        let mut provenance = Provenance::current();
        provenance.profile = "release".into();
        provenance.command = format!("cargo {}", args.join(" "));
        for job in CRITERION.iter().filter(|j| j.bench == bench) {
            let table = criterion_table(&criterion_home, job, started)?;
            let file = BenchFile {
                table,
                provenance: provenance.clone(),
            };
            written.push(file.save(root)?);
        }
    }
    // A demo job is wanted by its binary's name or by its whole command (`bin args…`), so
    // that one of a binary's several jobs can be re-run alone.
    let jobs: Vec<&DemoJob> = DEMOS
        .iter()
        .filter(|j| wanted(j.bin) || wanted(&format!("{} {}", j.bin, j.args.join(" "))))
        .collect();
    // Some demos start others (demo-scale-out runs demo-serving-api replicas): every binary
    // comes from this one build, never from an older one left in target/.
    if !jobs.is_empty() {
        let status = Command::new(cargo())
            .current_dir(root)
            .args(["build", "--release", "-q", "-p", "chapters-code", "--bins"])
            .status()
            .context("building the demos")?;
        if !status.success() {
            bail!("cargo build --release -p chapters-code --bins failed");
        }
    }
    for job in jobs {
        let report = run_demo(root, job)?;
        for table in report.tables {
            let file = BenchFile {
                table,
                provenance: report.provenance.clone(),
            };
            written.push(file.save(root)?);
        }
    }
    // Coverage: the whole test suite instrumented (slow). Without the tool, a full run says how
    // to get it and goes on; asked for by name, it fails.
    if wanted("coverage") {
        if crate::coverage::available(root) || filter.is_some() {
            written.push(crate::coverage::run(root)?);
        } else {
            eprintln!(
                "== coverage skipped: `cargo llvm-cov` is not installed ({})",
                crate::coverage::INSTALL
            );
        }
    }
    Ok(written)
}

/// Runs a demo in release mode and returns its JSON report, with the provenance's command set
/// to the exact cargo command that ran it.
pub fn run_demo(root: &Path, job: &DemoJob) -> Result<Report> {
    run_demo_with(root, job.bin, job.args)
}

/// [`run_demo`] with arguments made at run time.
pub fn run_demo_with<S: AsRef<str>>(root: &Path, bin: &str, demo_args: &[S]) -> Result<Report> {
    let mut args = vec![
        "run",
        "--release",
        "-q",
        "-p",
        "chapters-code",
        "--bin",
        bin,
        "--",
    ];
    args.extend(demo_args.iter().map(AsRef::as_ref));
    eprintln!("== cargo {}", args.join(" "));
    let out = Command::new(cargo())
        .current_dir(root)
        .args(&args)
        .stderr(Stdio::inherit())
        .output()
        .context("running a demo")?;
    if !out.status.success() {
        bail!("{bin} failed ({})", out.status);
    }
    let mut report: Report = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{bin} did not print a JSON report"))?;
    report.provenance.command =
        format!("cargo {}", command_line(args.iter().map(|s| s.to_string())));
    Ok(report)
}

/// Reads criterion's estimates for one group: one row per benchmark run since `since`, in the
/// order criterion ran them, with time per iteration, throughput, and speedup over the first.
pub fn criterion_table(
    criterion_home: &Path,
    job: &CriterionJob,
    since: std::time::SystemTime,
) -> Result<Table> {
    let group_dir = criterion_home.join(job.group);
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(&group_dir)
        .with_context(|| format!("no criterion results in {}", group_dir.display()))?
    {
        let dir = entry?.path();
        let (Ok(meta), Ok(est)) = (
            read_json(&dir.join("new/benchmark.json")),
            read_json(&dir.join("new/estimates.json")),
        ) else {
            continue;
        };
        let id = meta["function_id"].as_str().unwrap_or("?").to_string();
        let ns = est["slope"]["point_estimate"]
            .as_f64()
            .or_else(|| est["mean"]["point_estimate"].as_f64())
            .context("estimates.json without a point estimate")?;
        let per_iter = meta["throughput"]
            .as_object()
            .and_then(|t| t.values().next())
            .and_then(Value::as_f64)
            .context("the benchmark declares no throughput")?;
        let modified = std::fs::metadata(dir.join("new/estimates.json"))?.modified()?;
        if modified < since {
            continue; // a benchmark that no longer exists, or was not run this time
        }
        rows.push((modified, id, ns, per_iter));
    }
    if rows.is_empty() {
        bail!("criterion wrote no results for group `{}`", job.group);
    }
    rows.sort_by_key(|r| r.0);
    let mut table = Table::new(
        job.table,
        job.title,
        vec![
            Column::new("what", job.what),
            Column::new("time", "Time per call").unit("µs").decimals(1),
            Column::new("rate", "Throughput")
                .unit(job.rate_unit)
                .decimals(1),
            Column::new("speedup", "Speedup").unit("×").decimals(1),
        ],
    );
    let base_rate = rows[0].3 / rows[0].2;
    for (_, id, ns, per_iter) in &rows {
        let rate = per_iter / ns; // units per nanosecond
        table.push(vec![
            json!(id),
            json!(ns / 1e3),
            json!(rate * 1e9 * job.scale),
            json!(rate / base_rate),
        ]);
    }
    table.notes = job.notes.iter().map(|s| s.to_string()).collect();
    Ok(table)
}

fn read_json(path: &Path) -> Result<Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}
