//! The serving API: an OpenAI-compatible HTTP server over the continuous-batching engine.

use anyhow::{Context, Result, bail};
use chapters_code::attention::AttentionKind;
use chapters_code::demo::{Column, DemoArgs, ModelArgs, OutputMode, Provenance, Report, Table};
use chapters_code::engine::speculation::DEFAULT_MAX_BATCH;
use chapters_code::engine::{DraftSource, SchedulerConfig, Speculation};
use chapters_code::serve::browser::{self, BrowserAssets};
use chapters_code::serve::{ServerConfig, app_state, router};
use chapters_code::speculative::DraftLength;
use clap::Parser;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Serve the model over an OpenAI-compatible API: POST /v1/completions, POST
/// /v1/chat/completions (plain or streamed as Server-Sent Events), GET /v1/models, GET /health,
/// GET /metrics (Prometheus). Requests are batched continuously. SIGTERM or Ctrl-C: new
/// requests get 503, requests in flight finish (up to --drain-s), then the server exits 0.
/// With --verify: start, run the OpenAI conformance checks against itself over HTTP (shapes,
/// streaming, usage, limits, stop strings, logprobs, seeds, errors), then shut down; exit
/// status 1 on a failed check. With --verify --output json the checks are printed as the
/// `api-conformance` table (the course scorecard's API correctness).
#[derive(Parser, Debug)]
#[command(
    name = "demo-serving-api",
    version,
    after_help = "Examples:\n  demo-serving-api --port 8080\n  curl -s localhost:8080/v1/chat/completions -H 'content-type: application/json' -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"temperature\":0}'\n  demo-serving-api --verify --port 0\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Address to listen on (loopback by default: put a proxy in front to expose it).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,

    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, default_value_t = 8080)]
    port: u16,

    /// The model id clients send as `model` [default: the model file's name].
    #[arg(long)]
    model_id: Option<String>,

    /// Sequences in the running batch, at most.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..1025))]
    max_running: u64,

    /// Tokens through the model per step, at most.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..65_537))]
    max_batch_tokens: u64,

    /// Attention: naive (llama.cpp's arithmetic, the parity suite's bits) or tiled
    /// (FlashAttention's algorithm: faster on long prompts, memory that does not grow with them).
    #[arg(long, default_value = "naive", value_parser = parse_attention)]
    attention: AttentionKind,

    /// Memory for the KV cache, in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..1_048_576))]
    kv_mib: u64,

    /// Requests queued or running, at most; more get 429.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..1_000_000))]
    max_queue: u64,

    /// Longest a request may run, in seconds (then 504).
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,

    /// Largest request body, in KiB (larger: 413).
    #[arg(long, default_value_t = 1024)]
    max_body_kib: u64,

    /// After SIGTERM, how long requests in flight may take to finish, in seconds.
    #[arg(long, default_value_t = 30)]
    drain_s: u64,

    /// Speculative decoding of greedy (temperature 0) requests: `ngram` (prompt lookup, no
    /// model), `self:N` (the model's first N blocks as the drafter) or `draft:PATH` (a draft
    /// model with the same vocabulary). Their tokens do not change; sampled requests decode
    /// plainly, so that a seed gives the same text under any load.
    #[arg(long, value_name = "DRAFTER", value_parser = parse_drafter)]
    speculative: Option<DraftSource>,

    /// Draft tokens per step and request, at most (adapted per request to how its drafts fare,
    /// unless --draft-fixed).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..65))]
    draft_max: u64,

    /// Always draft --draft-max tokens instead of adapting the length.
    #[arg(long)]
    draft_fixed: bool,

    /// Speculate only in steps where at most this many requests decode (a fuller batch gains
    /// nothing from drafts on a CPU: the speculative-decoding chapter's server table).
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH as u64)]
    speculate_max_batch: u64,

    /// No start-up summary and no line per request on stderr.
    #[arg(long)]
    quiet: bool,

    /// Also serve this WebAssembly build of the engine, its JavaScript and the model file under
    /// /browser/, so that the chat page at / can run the model in the browser (build it with
    /// `cargo build -p prodml-wasm --profile wasm --target wasm32-unknown-unknown`).
    #[arg(long, value_name = "PRODML_WASM.wasm")]
    wasm_module: Option<std::path::PathBuf>,

    /// The same module built with relaxed-SIMD (`RUSTFLAGS="-C
    /// target-feature=+simd128,+relaxed-simd"`), offered to the page first: several times faster
    /// where the browser has it, with the same bits.
    #[arg(long, value_name = "PRODML_WASM.wasm", requires = "wasm_module")]
    wasm_module_relaxed: Option<std::path::PathBuf>,
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    if cli.demo.benchmark {
        bail!("the server has no benchmark mode of its own: run demo-throughput-bench against it");
    }
    let path = cli.run.model_path();
    let model_id = cli.model_id.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().trim_end_matches(".Q4_1").to_string())
            .unwrap_or_else(|| "model".into())
    });
    let scheduler = SchedulerConfig {
        max_running: cli.max_running as usize,
        max_batch_tokens: cli.max_batch_tokens as usize,
        kv_budget_bytes: (cli.kv_mib as usize) << 20,
        attention: cli.attention,
        speculation: cli.speculative.clone().map(|source| Speculation {
            source,
            length: if cli.draft_fixed {
                DraftLength::Fixed(cli.draft_max as usize)
            } else {
                DraftLength::Adaptive(cli.draft_max as usize)
            },
            max_batch: cli.speculate_max_batch as usize,
        }),
        ..SchedulerConfig::default()
    };
    let config = ServerConfig {
        model_id: model_id.clone(),
        max_body_bytes: (cli.max_body_kib as usize) << 10,
        request_timeout: Duration::from_secs(cli.timeout_s.max(1)),
        log_requests: !cli.quiet,
    };
    let browser = cli
        .wasm_module
        .as_deref()
        .map(|module| BrowserAssets::new(module, cli.wasm_module_relaxed.as_deref(), &path))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let summary = startup_summary(&cli, &path, &scheduler)?;
    let state = app_state(
        &path,
        cli.run.threads(),
        scheduler,
        cli.max_queue as usize,
        config,
    )?;
    if !cli.quiet {
        eprintln!("{summary}");
    }
    let runtime = chapters_code::serve::runtime().context("starting the async runtime")?;
    runtime.block_on(serve(cli, state, model_id, browser))
}

async fn serve(
    cli: Cli,
    state: Arc<chapters_code::serve::AppState>,
    model_id: String,
    browser: Option<BrowserAssets>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((cli.host.as_str(), cli.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", cli.host, cli.port))?;
    let addr: SocketAddr = listener.local_addr()?;
    // One line that scripts (and the tests) read to find the port (on stderr when stdout
    // carries the JSON report).
    let listening = format!("listening on http://{addr} — model `{model_id}`");
    if cli.demo.output == OutputMode::Json {
        eprintln!("{listening}");
    } else {
        println!("{listening}");
    }
    let drain = Duration::from_secs(cli.drain_s);
    let runner = Arc::clone(&state.runner);
    let draining = Arc::new(tokio::sync::Notify::new());
    let drained = Arc::clone(&draining);
    let app = match browser {
        Some(assets) => router(state).merge(browser::routes(assets)),
        None => router(state),
    };
    // Every response says which replica answered: behind a load balancer, clients and tests
    // can attribute each request (the scaling-out chapter's failover test counts on it).
    let served_by = axum::http::HeaderValue::from_str(&addr.to_string())?;
    let app = app.layer(axum::middleware::map_response(
        move |mut response: axum::response::Response| {
            let served_by = served_by.clone();
            async move {
                response.headers_mut().insert("x-served-by", served_by);
                response
            }
        },
    ));
    // --verify: a client task checks the server; its verdict stops the server like a signal.
    let (verdict_tx, verdict_rx) = tokio::sync::oneshot::channel::<bool>();
    // Without --verify the sender stays here, unused, so the verdict never comes.
    let _unused_sender = if cli.demo.verify {
        let base = format!("http://{addr}");
        let (output, model) = (cli.demo.output, model_id.clone());
        tokio::spawn(async move {
            let _ = verdict_tx.send(self_check(&base, &model, output).await);
        });
        None
    } else {
        Some(verdict_tx)
    };
    let passed = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let verdict = Arc::clone(&passed);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            ok = verdict_rx => verdict.store(ok.unwrap_or(false), std::sync::atomic::Ordering::SeqCst),
        }
        eprintln!(
            "shutting down: new requests get 503; {} in flight may take up to {}s",
            runner.in_flight(),
            drain.as_secs()
        );
        runner.begin_shutdown();
        let waiting = Arc::clone(&runner);
        let finished = tokio::task::spawn_blocking(move || waiting.drain(drain))
            .await
            .unwrap_or(false);
        if !finished {
            eprintln!(
                "requests still running after {}s; closing anyway",
                drain.as_secs()
            );
        }
        drained.notify_one();
    });
    tokio::select! {
        result = server => result.context("serving")?,
        _ = async {
            draining.notified().await;
            // Connections get a moment to receive their last bytes, then the process ends.
            tokio::time::sleep(Duration::from_secs(2)).await;
        } => {}
    }
    eprintln!("stopped");
    if !passed.load(std::sync::atomic::Ordering::SeqCst) {
        std::process::exit(1);
    }
    Ok(())
}

/// --verify: the server checks itself over HTTP as a client would; with `--output json` the
/// checks are printed as a report holding the `api-conformance` table.
async fn self_check(base: &str, model: &str, output: OutputMode) -> bool {
    let checks = chapters_code::serve::conformance::run(base, model).await;
    let passed = checks.iter().filter(|c| c.passed).count();
    eprintln!("{passed} of {} conformance checks passed", checks.len());
    let mut table = Table::new(
        "api-conformance",
        "The server checked as an OpenAI client sees it",
        vec![
            Column::new("area", "Area"),
            Column::new("check", "Check"),
            Column::new("passed", "Passed"),
            Column::new("detail", "Seen when it failed"),
        ],
    );
    for c in &checks {
        table.push(vec![
            json!(c.area),
            json!(c.what),
            json!(if c.passed { "yes" } else { "no" }),
            json!(c.detail),
        ]);
    }
    table.notes.push(format!(
        "{passed} of {} checks pass. Each sends a real request over HTTP to the release server and checks the answer against OpenAI's API reference.",
        checks.len()
    ));
    let ok = passed == checks.len();
    let report = Report {
        demo: "serving-api".into(),
        provenance: Provenance::current(),
        result: json!({ "checks": checks.len(), "passed": passed }),
        tables: vec![table],
        verified: Some(ok),
    };
    if let Err(e) = report.emit(output, |out| {
        writeln!(out, "Conformance of the server at {base}")
    }) {
        eprintln!("cannot print the report: {e:#}");
        return false;
    }
    ok
}

/// SIGTERM (what process managers send) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// What the server runs with, in one line (as llama-server and vLLM print at start-up).
fn startup_summary(
    cli: &Cli,
    path: &std::path::Path,
    scheduler: &SchedulerConfig,
) -> Result<String> {
    let gguf = chapters_code::assets::open_model(path)?;
    let c = chapters_code::model::LlamaConfig::from_gguf(&gguf)?;
    let blocks = chapters_code::kv::BlockPool::blocks_in_budget(
        &c,
        scheduler.block_tokens,
        scheduler.kv_budget_bytes,
    );
    Ok(format!(
        "model {} ({} layers, {} heads, {} KV heads, context {}); {} threads, SIMD {}; KV cache {} MiB = {} blocks of {} tokens ({} tokens); batches of up to {} sequences, {} tokens per step; {} attention; speculation {}; queue of {}",
        path.display(),
        c.n_layers,
        c.n_heads,
        c.n_kv_heads,
        c.context_length,
        cli.run.threads(),
        chapters_code::kernels::simd_path(),
        scheduler.kv_budget_bytes >> 20,
        blocks,
        scheduler.block_tokens,
        blocks * scheduler.block_tokens,
        scheduler.max_running,
        scheduler.max_batch_tokens,
        scheduler.attention,
        match &scheduler.speculation {
            None => "off".to_string(),
            Some(s) => format!(
                "{:?}, {:?} tokens, in steps of up to {} decodes",
                s.source, s.length, s.max_batch
            ),
        },
        cli.max_queue
    ))
}

fn parse_drafter(s: &str) -> Result<DraftSource, String> {
    s.parse()
}

fn parse_attention(s: &str) -> Result<AttentionKind, String> {
    AttentionKind::parse(s).ok_or_else(|| format!("`{s}` is not an attention: naive or tiled"))
}
