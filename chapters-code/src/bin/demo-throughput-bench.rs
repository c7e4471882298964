//! Throughput benchmark: N concurrent streaming clients against the real server over HTTP.

use anyhow::{Context, Result, bail};
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::engine::SchedulerConfig;
use chapters_code::serve::loadgen::{Api, LevelResult, LoadSpec, check_loopback, run_level};
use chapters_code::serve::{ServerConfig, app_state, serve_on_loopback};
use clap::Parser;
use serde_json::json;
use std::time::Duration;

/// Drive an OpenAI-compatible server with N concurrent streaming clients per level and report
/// aggregate tokens/s, time to first token (P50/P99) and inter-token latency (P50/P99, jitter),
/// measured on the client side over HTTP. By default it starts this book's server in-process
/// on a free loopback port; --url drives another server on this machine (llama-server, vLLM...).
#[derive(Parser, Debug)]
#[command(
    name = "demo-throughput-bench",
    version,
    after_help = "Examples:\n  demo-throughput-bench\n  demo-throughput-bench --concurrency 1,8,32 --max-tokens 128\n  demo-throughput-bench --url http://127.0.0.1:8081/v1/completions --model-id smollm2\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Concurrency levels (clients streaming at once): `1,4,16` or `1 4 16`.
    #[arg(long, value_delimiter = ',', num_args = 1.., default_values_t = [1, 2, 4, 8, 16])]
    concurrency: Vec<usize>,

    /// Requests each client sends per level, one after another (at least; see --min-requests).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..10_000))]
    requests_per_client: u64,

    /// Requests per level, at least: with few clients each sends more, so that a percentile
    /// never comes from a handful of values.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..100_000))]
    min_requests: u64,

    /// The endpoint to load: `completions` (a prompt) or `chat` (one user message).
    #[arg(long, value_enum, default_value_t = Api::Completions)]
    api: Api,

    /// Tokens generated per request (end-of-sequence ignored).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..4097))]
    max_tokens: u64,

    /// No client starts a new request after this many seconds of a level.
    #[arg(long, default_value_t = 120.0)]
    time_limit_s: f64,

    /// Benchmark this URL instead of starting our server (loopback only): the endpoint of
    /// --api, e.g. http://127.0.0.1:8080/v1/completions or …/v1/chat/completions.
    #[arg(long)]
    url: Option<String>,

    /// `model` to send with --url (our in-process server needs none).
    #[arg(long)]
    model_id: Option<String>,

    /// Sequences in the running batch of our server, at most.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..1025))]
    max_running: u64,
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    if cli.concurrency.is_empty() || cli.concurrency.iter().any(|&c| c == 0 || c > 1024) {
        bail!("--concurrency takes levels between 1 and 1024, e.g. 1,4,16");
    }
    if cli.time_limit_s.is_nan() || cli.time_limit_s <= 0.0 {
        bail!("--time-limit-s must be positive");
    }
    let runtime = chapters_code::serve::runtime().context("starting the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let (url, target) = match &cli.url {
        Some(url) => {
            check_loopback(url).map_err(anyhow::Error::msg)?;
            chapters_code::serve::loadgen::check_listening(url)
                .await
                .map_err(anyhow::Error::msg)?;
            (url.clone(), format!("the server at {url}"))
        }
        None => {
            let scheduler = SchedulerConfig {
                max_running: cli.max_running as usize,
                ..SchedulerConfig::default()
            };
            let config = ServerConfig {
                model_id: "bench".into(),
                max_body_bytes: 1 << 20,
                request_timeout: Duration::from_secs(600),
                log_requests: false,
            };
            let max_level = cli.concurrency.iter().copied().max().unwrap_or(1);
            let state = app_state(
                &cli.run.model_path(),
                cli.run.threads(),
                scheduler,
                max_level.max(16),
                config,
            )?;
            let base = serve_on_loopback(state)
                .await
                .context("listening on loopback")?;
            (
                format!("{base}{}", cli.api.path()),
                format!(
                    "this book's server ({} threads, batch ≤ {})",
                    cli.run.threads(),
                    cli.max_running
                ),
            )
        }
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    let spec_for = |concurrency: usize| LoadSpec {
        api: cli.api,
        concurrency,
        requests_per_client: per_client(&cli, concurrency),
        max_tokens: cli.max_tokens as usize,
        time_limit_s: cli.time_limit_s,
        model: cli.model_id.clone(),
    };

    // One short request first: connections, page faults and caches are not part of level 1.
    let warm = LoadSpec {
        requests_per_client: 1,
        max_tokens: 4,
        ..spec_for(1)
    };
    let warmup = run_level(&http, &url, &warm).await;
    if warmup.failed > 0 {
        bail!(
            "the warm-up request failed: {}",
            warmup.first_error.unwrap_or_default()
        );
    }

    let bar = progress::steps(cli.concurrency.len() as u64, "concurrency levels");
    let mut levels: Vec<LevelResult> = Vec::new();
    for &c in &cli.concurrency {
        bar.set_message(format!("{c} concurrent clients"));
        levels.push(run_level(&http, &url, &spec_for(c)).await);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let base_rate = levels[0].tokens_per_s;
    let mut table = Table::new(
        "throughput-levels",
        "Concurrent streaming clients over HTTP: throughput and latency as users see them",
        vec![
            Column::new("concurrency", "Clients"),
            Column::new("requests", "Requests"),
            Column::new("throughput", "Aggregate")
                .unit("tokens/s")
                .decimals(1),
            Column::new("scaling", "vs first row").unit("×").decimals(2),
            Column::new("ttft_p50", "TTFT P50").unit("ms").decimals(0),
            Column::new("ttft_p99", "TTFT P99").unit("ms").decimals(0),
            Column::new("ttft_n", "TTFT samples"),
            Column::new("itl_p50", "Inter-token P50")
                .unit("ms")
                .decimals(1),
            Column::new("itl_p99", "Inter-token P99")
                .unit("ms")
                .decimals(1),
            Column::new("itl_n", "Inter-token samples"),
            Column::new("jitter", "Jitter (std dev)")
                .unit("ms")
                .decimals(1),
            Column::new("failed", "Failed"),
        ],
    );
    for l in &levels {
        table.push(vec![
            json!(l.concurrency),
            json!(l.requests),
            json!(l.tokens_per_s),
            json!(l.tokens_per_s / base_rate),
            json!(l.ttft_p50_ms),
            json!(l.ttft_p99_ms),
            json!(l.ttft_samples),
            json!(l.itl_p50_ms),
            json!(l.itl_p99_ms),
            json!(l.itl_samples),
            json!(l.itl_jitter_ms),
            json!(l.failed),
        ]);
    }
    table.notes.push(format!(
        "Target: {target} ({}). Each client sends at least {} streaming requests of {} tokens one after another, and every level at least {} in all (greedy, end-of-sequence ignored); clients, server and engine share this machine's {} logical cores. Times are measured by the client, from sending the request. A P99 of fewer than 100 samples is their largest value.",
        cli.api.path(),
        cli.requests_per_client,
        cli.max_tokens,
        cli.min_requests,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    ));
    let failed: usize = levels.iter().map(|l| l.failed).sum();
    let verified = cli.demo.verify.then(|| {
        failed == 0
            && levels
                .iter()
                .all(|l| l.generated_tokens == l.requests * cli.max_tokens as usize)
    });
    let report = Report {
        demo: "throughput-bench".into(),
        provenance: Provenance::current(),
        result: json!({ "target": target, "levels": levels }),
        tables: vec![table],
        verified,
    };
    report.emit(cli.demo.output, |out| writeln!(out, "Benchmarked {target}"))?;
    if let Some(e) = levels.iter().find_map(|l| l.first_error.clone()) {
        eprintln!("{failed} requests failed; the first: {e}");
    }
    if verified == Some(false) {
        std::process::exit(1);
    }
    Ok(())
}

/// Requests each client sends at `concurrency`: --requests-per-client, or more so that the
/// level sends at least --min-requests.
fn per_client(cli: &Cli, concurrency: usize) -> usize {
    (cli.requests_per_client as usize).max((cli.min_requests as usize).div_ceil(concurrency.max(1)))
}
