//! Whether a measured result still describes the code: a results file carries the commit it
//! was measured at, and a result is stale when a later commit changed the code it depends on
//! (the paths below, per table). Staleness is shown, never hidden: a scorecard built from old
//! numbers says which numbers are old.

use std::path::Path;
use std::process::Command;

/// The engine every model-running result depends on.
const ENGINE: &[&str] = &[
    "chapters-code/src/attention",
    "chapters-code/src/kernels",
    "chapters-code/src/quant",
    "chapters-code/src/model",
    "chapters-code/src/tokenizer",
    "chapters-code/src/sampling",
    "chapters-code/src/generate.rs",
    "chapters-code/src/formats",
];

/// The paths whose changes make the results of table `name` stale (besides [`ENGINE`] where
/// the table runs the model).
pub fn depends_on(name: &str) -> Vec<&'static str> {
    let (engine, own): (bool, &[&str]) = match name {
        n if n.starts_with("hardware-") => (
            false,
            &[
                "chapters-code/src/hw",
                "chapters-code/src/bin/demo-hardware-detect.rs",
                "chapters-code/benches/roofline.rs",
            ],
        ),
        n if n.starts_with("kernels-") => (
            false,
            &[
                "chapters-code/src/kernels",
                "chapters-code/src/quant",
                "chapters-code/benches/kernels.rs",
            ],
        ),
        n if n.starts_with("model-file-") => (
            false,
            &[
                "chapters-code/src/formats",
                "chapters-code/src/bin/demo-model-file.rs",
            ],
        ),
        n if n.starts_with("apr-") => (
            false,
            &[
                "chapters-code/src/formats",
                "chapters-code/src/bin/demo-apr-format.rs",
            ],
        ),
        n if n.starts_with("parity-") => (
            true,
            &[
                "chapters-code/src/parity",
                "chapters-code/tests/parity",
                "chapters-code/src/bin/demo-tgi-architecture.rs",
            ],
        ),
        "engine-speed" | "engine-contention" | "engine-memory" | "tgi-stages" => {
            (true, &["chapters-code/src/bin/demo-tgi-architecture.rs"])
        }
        "peer-llama-cpp" | "peer-llama-bench" => (
            true,
            &[
                "chapters-code/src/bin/demo-tgi-architecture.rs",
                "xtask/src/peers",
            ],
        ),
        "perplexity" => (
            true,
            &[
                "chapters-code/src/eval",
                "chapters-code/src/bin/demo-perplexity.rs",
            ],
        ),
        n if n.starts_with("quantization-") => (
            true,
            &[
                "chapters-code/src/eval",
                "chapters-code/src/bin/demo-quantization.rs",
            ],
        ),
        n if n.starts_with("kv-") || n == "batching-comparison" => (
            true,
            &[
                "chapters-code/src/engine",
                "chapters-code/src/kv",
                "chapters-code/src/bin/demo-kv-cache.rs",
                "chapters-code/src/bin/demo-continuous-batching.rs",
            ],
        ),
        n if n.starts_with("streaming-") || n == "throughput-levels" || n == "api-conformance" => (
            true,
            &[
                "chapters-code/src/engine",
                "chapters-code/src/kv",
                "chapters-code/src/serve",
                "chapters-code/src/bin/demo-streaming.rs",
                "chapters-code/src/bin/demo-throughput-bench.rs",
                "chapters-code/src/bin/demo-serving-api.rs",
            ],
        ),
        n if n.starts_with("flash-") => (true, &["chapters-code/src/bin/demo-flash-attention.rs"]),
        "peer-llama-cpp-flash" => (false, &["xtask/src/peers"]),
        "peer-llama-cpp-lookup" => (
            true,
            &[
                "chapters-code/src/speculative",
                "chapters-code/src/bin/demo-speculative-decode.rs",
                "xtask/src/peers",
            ],
        ),
        n if n.starts_with("spec-") => (
            true,
            &[
                "chapters-code/src/speculative",
                "chapters-code/src/engine",
                "chapters-code/src/kv",
                "chapters-code/src/bin/demo-speculative-decode.rs",
            ],
        ),
        n if n.starts_with("prune-") => (
            true,
            &[
                "chapters-code/src/prune",
                "chapters-code/src/obs",
                "chapters-code/src/eval",
                "chapters-code/src/bin/demo-pruning.rs",
            ],
        ),
        n if n.starts_with("distill-") => (
            true,
            &[
                "chapters-code/src/distill",
                "chapters-code/src/prune",
                "chapters-code/src/eval",
                "chapters-code/src/speculative",
                "chapters-code/src/bin/demo-distillation.rs",
            ],
        ),
        n if n.starts_with("tp-") => (
            true,
            &[
                "chapters-code/src/parallel",
                "chapters-code/src/parity",
                "chapters-code/src/bin/demo-tensor-parallel.rs",
            ],
        ),
        n if n.starts_with("wasm-") => (
            true,
            &[
                "wasm",
                "chapters-code/src/session.rs",
                "chapters-code/src/bin/demo-wasm-inference.rs",
                ".cargo/config.toml",
                "Cargo.toml",
            ],
        ),
        "coverage" => (false, &["chapters-code", "xtask"]),
        _ => (false, &["chapters-code/src"]),
    };
    let mut paths: Vec<&str> = if engine { ENGINE.to_vec() } else { Vec::new() };
    for p in own {
        if !paths.contains(p) {
            paths.push(p);
        }
    }
    paths
}

/// How current a result is.
#[derive(Debug, Clone, PartialEq)]
pub enum Freshness {
    /// No commit since the measurement changed the code the result depends on.
    Fresh,
    /// `commits` later commits changed it, the newest being `newest`.
    Stale { commits: usize, newest: String },
    /// The commit cannot be checked (not in this clone's history, measured with uncommitted
    /// changes, or no git here).
    Unknown(String),
}

impl Freshness {
    /// One cell of the scorecard.
    pub fn describe(&self) -> String {
        match self {
            Freshness::Fresh => "fresh".into(),
            Freshness::Stale { commits, newest } => {
                format!("STALE: {commits} later commit(s) changed its code, newest {newest}")
            }
            Freshness::Unknown(why) => format!("unknown: {why}"),
        }
    }

    pub fn is_fresh(&self) -> bool {
        *self == Freshness::Fresh
    }
}

/// Whether the result of table `name`, measured at `sha`, is still current at `HEAD` of the
/// repository at `root`.
pub fn check(root: &Path, name: &str, sha: &str) -> Freshness {
    if sha.ends_with("-dirty") {
        return Freshness::Unknown("measured with uncommitted changes".into());
    }
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    if git(&["cat-file", "-e", &format!("{sha}^{{commit}}")]).is_none() {
        return Freshness::Unknown(format!("commit {sha} is not in this clone's history"));
    }
    let paths = depends_on(name);
    let mut args = vec!["rev-list", "--abbrev-commit", "--abbrev=12"];
    let range = format!("{sha}..HEAD");
    args.push(&range);
    args.push("--");
    args.extend(paths.iter().copied());
    match git(&args) {
        None => Freshness::Unknown("git rev-list failed".into()),
        Some(list) if list.is_empty() => Freshness::Fresh,
        Some(list) => Freshness::Stale {
            commits: list.lines().count(),
            newest: list.lines().next().unwrap_or_default().to_string(),
        },
    }
}
