//! Latency profiling: where a request's time goes inside the server (the engine's stage
//! profile), and what users see as the request rate grows — measured with an open loop, so that
//! a slow server cannot hide its slowness by slowing the load down (coordinated omission).

use anyhow::{Context, Result, bail};
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::engine::SchedulerConfig;
use chapters_code::engine::profile::StageSummary;
use chapters_code::serve::loadgen::{Api, LoadSpec, check_loopback};
use chapters_code::serve::openloop::{self, LatencyReport, OpenLoopSpec, Slo};
use chapters_code::serve::{AppState, ServerConfig, app_state, serve_on_loopback};
use clap::Parser;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Profile the server: the stages of a request inside the engine (HDR histograms, also in
/// /metrics), and TTFT, TPOT, ITL and end-to-end latency against the request rate with an
/// open-loop load (Poisson arrivals, each request timed from its intended send time), with
/// goodput under a latency objective. --llama-server or --peer-url measures llama.cpp's server
/// at the same rates in the same run. --verify checks that every stage was recorded and
/// exported, and that no request was lost.
#[derive(Parser, Debug)]
#[command(
    name = "demo-latency-profile",
    version,
    after_help = "Examples:\n  demo-latency-profile\n  demo-latency-profile --rates 1,2,4,8 --seconds 20 --verify\n  demo-latency-profile --benchmark --llama-server target/peers/llama-server/bin/llama-server\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Request rates to sweep (requests per second, Poisson arrivals).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,6,8,12")]
    rates: Vec<f64>,

    /// How long each rate sends requests (seconds): rate × seconds requests.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,

    /// Tokens each request generates (end of sequence ignored).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(2..1025))]
    max_tokens: u64,

    /// The latency objective for goodput: time to first token (ms).
    #[arg(long, default_value_t = 1000.0)]
    slo_ttft_ms: f64,

    /// The latency objective for goodput: time per output token (ms).
    #[arg(long, default_value_t = 100.0)]
    slo_tpot_ms: f64,

    /// Start llama.cpp's llama-server from this binary (same model, same threads) and measure
    /// it at the same rates [default: target/peers/llama-server/bin/llama-server when `cargo
    /// xtask peer-llama-server` has built it; none otherwise].
    #[arg(long, conflicts_with = "peer_url")]
    llama_server: Option<PathBuf>,

    /// Measure this book's server only, even where llama-server is built.
    #[arg(long, conflicts_with_all = ["llama_server", "peer_url"])]
    no_peer: bool,

    /// Measure a server already running on this machine at the same rates (its
    /// /v1/completions).
    #[arg(long)]
    peer_url: Option<String>,
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

/// llama-server, started for the run; killed when dropped.
struct Peer {
    child: Child,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts llama-server on a free loopback port with the model; returns it and its base URL.
async fn start_llama_server(bin: &PathBuf, cli: &Cli, slots: usize) -> Result<(Peer, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(bin)
        .arg("-m")
        .arg(cli.run.model_path())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["-t", &cli.run.threads().to_string()])
        .args(["-np", &slots.to_string(), "-c", &(slots * 1024).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let peer = Peer { child };
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let ok = http
            .get(format!("{base}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok((peer, base));
        }
        if Instant::now() > until {
            bail!("llama-server did not become healthy within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn load(cli: &Cli) -> LoadSpec {
    LoadSpec {
        api: Api::Completions,
        concurrency: 1,
        requests_per_client: 1,
        max_tokens: cli.max_tokens as usize,
        time_limit_s: cli.seconds,
        model: None,
    }
}

/// One open-loop run at `rate` against `url`.
async fn at_rate(
    http: &reqwest::Client,
    url: &str,
    cli: &Cli,
    rate: f64,
    slo: Slo,
) -> LatencyReport {
    let spec = OpenLoopSpec {
        load: load(cli),
        rate_per_s: rate,
        requests: ((rate * cli.seconds).round() as usize).max(2),
        seed: cli.demo.seed,
    };
    let started = Instant::now();
    let timed = openloop::run_open_loop(http, url, &spec).await;
    openloop::report(&timed, started.elapsed().as_secs_f64(), Some(slo))
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    if cli.rates.is_empty() || cli.rates.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
        bail!("--rates must be positive numbers of requests per second, e.g. 1,2,4");
    }
    if !(cli.seconds.is_finite() && cli.seconds > 0.0) {
        bail!("--seconds must be a positive number");
    }
    for (flag, v) in [
        ("--slo-ttft-ms", cli.slo_ttft_ms),
        ("--slo-tpot-ms", cli.slo_tpot_ms),
    ] {
        if !(v.is_finite() && v > 0.0) {
            bail!("{flag} must be a positive number of milliseconds, not {v}");
        }
    }
    if let Some(url) = &cli.peer_url {
        check_loopback(url).map_err(anyhow::Error::msg)?;
    }
    chapters_code::assets::open_model(&cli.run.model_path())?;
    let mut cli = cli;
    if cli.llama_server.is_none() && cli.peer_url.is_none() && !cli.no_peer {
        let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/peers/llama-server/bin/llama-server");
        cli.llama_server = built.exists().then_some(built);
    }
    let runtime = chapters_code::serve::runtime()?;
    runtime.block_on(run(cli))
}

/// The slots a server needs at the highest rate (Little's law with a margin), at least 4.
fn slots_for(cli: &Cli) -> usize {
    let top = cli.rates.iter().copied().fold(0.0, f64::max);
    ((top * 4.0).ceil() as usize).clamp(4, 64)
}

async fn run(cli: Cli) -> Result<()> {
    let slo = Slo {
        ttft_ms: cli.slo_ttft_ms,
        tpot_ms: cli.slo_tpot_ms,
    };
    let slots = slots_for(&cli);
    let state: Arc<AppState> = app_state(
        &cli.run.model_path(),
        cli.run.threads(),
        SchedulerConfig {
            max_running: slots,
            ..SchedulerConfig::default()
        },
        1024,
        ServerConfig {
            model_id: "profile".into(),
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(600),
            log_requests: false,
        },
    )?;
    let base = serve_on_loopback(Arc::clone(&state)).await?;
    let ours = format!("{base}/v1/completions");
    let http = reqwest::Client::new();
    // Warm-up (page cache, thread pool), then the stage profile starts empty.
    let _ = at_rate(&http, &ours, &cli, 2.0, slo).await;
    state.runner.profile.reset();

    let (peer, peer_url) = match (&cli.llama_server, &cli.peer_url) {
        (Some(bin), _) => {
            let (peer, base) = start_llama_server(bin, &cli, slots).await?;
            (Some(peer), Some(format!("{base}/v1/completions")))
        }
        (None, Some(url)) => (None, Some(url.clone())),
        (None, None) => (None, None),
    };
    let mut servers = vec![("this book's server", ours.clone())];
    if let Some(url) = &peer_url {
        let name = if cli.llama_server.is_some() {
            "llama-server"
        } else {
            "peer"
        };
        servers.push((name, url.clone()));
    }

    let mut sweep = Vec::new();
    let bar = progress::steps(
        (cli.rates.len() * servers.len()) as u64,
        "open-loop rates, the servers in turns",
    );
    for &rate in &cli.rates {
        for (name, url) in &servers {
            let r = at_rate(&http, url, &cli, rate, slo).await;
            sweep.push((name.to_string(), rate, r));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    drop(peer);
    let metrics_text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let stages = state.runner.profile.summaries();

    let mut tables = vec![stage_table(&stages, &cli), rate_table(&sweep, &cli, slo)];
    let verified = cli.demo.verify.then(|| {
        let every_stage = stages.iter().all(|s| s.samples > 0);
        let exported = stages.iter().all(|s| {
            metrics_text.contains(&format!(
                "prodml_stage_seconds_count{{stage=\"{}\"}} {}",
                s.stage.name(),
                s.samples
            ))
        });
        let none_lost = sweep
            .iter()
            .filter(|(n, ..)| n == "this book's server")
            .all(|(_, _, r)| r.failed == 0);
        let mut t = Table::new(
            "latency-verify",
            "Checks",
            vec![Column::new("check", "Check"), Column::new("pass", "Pass")],
        );
        t.push(vec![json!("every stage has samples"), json!(every_stage)]);
        t.push(vec![json!("/metrics exports every stage"), json!(exported)]);
        t.push(vec![json!("no request of ours failed"), json!(none_lost)]);
        let ok = every_stage && exported && none_lost;
        tables.push(t);
        ok
    });
    let report = Report {
        demo: "latency-profile".into(),
        provenance: Provenance::current(),
        result: json!({
            "stages": stages,
            "sweep": sweep.iter().map(|(n, rate, r)| json!({"server": n, "rate": rate, "report": r})).collect::<Vec<Value>>(),
        }),
        tables,
        verified,
    };
    report.emit(cli.demo.output, |out| {
        writeln!(
            out,
            "{} rates × {} s, {} tokens per request, {}",
            cli.rates.len(),
            cli.seconds,
            cli.max_tokens,
            servers
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(" and ")
        )
    })?;
    if verified == Some(false) {
        std::process::exit(1);
    }
    Ok(())
}

/// The stages of a request inside the server, from the engine's HDR histograms.
fn stage_table(stages: &[StageSummary], cli: &Cli) -> Table {
    let mut table = Table::new(
        "latency-stages",
        "Where the time goes inside the server",
        vec![
            Column::new("stage", "Stage"),
            Column::new("per", "Per"),
            Column::new("samples", "Samples"),
            Column::new("p50_ms", "P50").unit("ms").decimals(3),
            Column::new("p99_ms", "P99").unit("ms").decimals(3),
            Column::new("p999_ms", "P99.9").unit("ms").decimals(3),
            Column::new("total_s", "Total").unit("s").decimals(2),
        ],
    );
    for s in stages {
        table.push(vec![
            json!(s.stage.name()),
            json!(s.per),
            json!(s.samples),
            json!(s.p50_us as f64 / 1e3),
            json!(s.p99_us as f64 / 1e3),
            json!(s.p999_us as f64 / 1e3),
            json!(s.total_s),
        ]);
    }
    table.notes.push(format!(
        "Recorded inside this book's server over the whole rate sweep ({} rates, {} s each, {} tokens per request), as `/metrics` exports them (`prodml_stage_seconds`). HDR histograms: each value within 0.1% of the one recorded. A step's forward pass serves every sequence in the batch; a prefill step may carry decodes too.",
        cli.rates.len(),
        cli.seconds,
        cli.max_tokens
    ));
    table
}

/// Latency against the request rate, per server.
fn rate_table(sweep: &[(String, f64, LatencyReport)], cli: &Cli, slo: Slo) -> Table {
    let mut table = Table::new(
        "latency-vs-rate",
        "Latency against the request rate (open loop)",
        vec![
            Column::new("server", "Server"),
            Column::new("rate", "Rate").unit("req/s").decimals(1),
            Column::new("requests", "Requests"),
            Column::new("failed", "Failed"),
            Column::new("ttft_p50", "TTFT P50").unit("ms").decimals(0),
            Column::new("ttft_p99", "TTFT P99").unit("ms").decimals(0),
            Column::new("ttft_p999", "TTFT P99.9")
                .unit("ms")
                .decimals(0),
            Column::new("tpot_p50", "TPOT P50").unit("ms").decimals(1),
            Column::new("tpot_p99", "TPOT P99").unit("ms").decimals(1),
            Column::new("itl_p99", "ITL P99").unit("ms").decimals(1),
            Column::new("e2el_p50", "E2EL P50").unit("ms").decimals(0),
            Column::new("e2el_p99", "E2EL P99").unit("ms").decimals(0),
            Column::new("tokens_s", "Output").unit("tok/s").decimals(0),
            Column::new("goodput", "Goodput").unit("req/s").decimals(2),
            Column::new("slo_met", "Met the objective")
                .unit("%")
                .decimals(0),
        ],
    );
    for (server, rate, r) in sweep {
        table.push(vec![
            json!(server),
            json!(rate),
            json!(r.requests),
            json!(r.failed),
            json!(r.ttft.p50_ms),
            json!(r.ttft.p99_ms),
            json!(r.ttft.p999_ms),
            json!(r.tpot.p50_ms),
            json!(r.tpot.p99_ms),
            json!(r.itl.p99_ms),
            json!(r.e2el.p50_ms),
            json!(r.e2el.p99_ms),
            json!(r.output_tokens_per_s),
            json!(r.goodput_per_s.unwrap_or(0.0)),
            json!(100.0 * r.slo_attained.unwrap_or(0.0)),
        ]);
    }
    // The knee: the first rate at which fewer than 90% of the requests meet the objective.
    let mut knees = Vec::new();
    let mut names: Vec<&str> = sweep.iter().map(|(n, ..)| n.as_str()).collect();
    names.dedup();
    names.sort();
    names.dedup();
    for name in names {
        let knee = sweep
            .iter()
            .filter(|(n, ..)| n == name)
            .find(|(_, _, r)| r.slo_attained.unwrap_or(0.0) < 0.9)
            .map(|(_, rate, _)| format!("{rate} req/s"))
            .unwrap_or_else(|| "beyond the sweep".into());
        knees.push(format!("{name}: {knee}"));
    }
    table.notes.push(format!(
        "Poisson arrivals, {} s per rate, {} tokens per request (end of sequence ignored), every latency from the request's intended send time (wrk2's correction; vLLM's benchmark starts the clock at the actual send, which hides the client's own lag). TTFT: first non-empty piece of text; TPOT: (E2EL − TTFT)/(tokens − 1) per request; ITL: gaps between pieces of text; E2EL: the whole request. Goodput: requests per second that met TTFT ≤ {} ms and TPOT ≤ {} ms (DistServe's definition, vLLM's --goodput). The knee, the first rate at which fewer than 90% of the requests meet the objective — {}. Both servers {} thread(s), in turns at each rate.",
        cli.seconds,
        cli.max_tokens,
        slo.ttft_ms,
        slo.tpot_ms,
        knees.join("; "),
        cli.run.threads()
    ));
    table
}
