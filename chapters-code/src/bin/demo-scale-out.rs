//! Serving past one process: replicas of demo-serving-api behind nginx and SGLang's
//! cache-aware router, compared on a workload with shared prefixes, and a replica killed
//! under load.

use anyhow::{Context, Result, bail};
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::scaleout::failover::{self, FailoverReport, FailoverSpec};
use chapters_code::scaleout::nginx::{self, Balance, Nginx};
use chapters_code::scaleout::replica::{self, Replica, ReplicaSpec, free_port};
use chapters_code::scaleout::router::{self, Policy, Router};
use chapters_code::scaleout::start_replicas;
use chapters_code::scaleout::workload::{Workload, system_prompt};
use chapters_code::serve::openloop;
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Start --replicas copies of demo-serving-api on loopback (one engine thread each, pinned to
/// the cores in turn) and put load balancers in front: nginx (round-robin, least_conn, a
/// consistent hash of a session header) and SGLang's router (`pip install sglang-router`;
/// round_robin and cache_aware). Default: one short run through nginx. --benchmark: the
/// shared-prefix workload through every front, in one run (aggregate tokens/s, TTFT P50/P99,
/// prefix-cache hits). --verify: kill a replica under load behind each front and count what
/// was lost; exit 1 if anything beyond the requests in flight on it was.
#[derive(Parser, Debug)]
#[command(
    name = "demo-scale-out",
    version,
    after_help = "Examples:\n  demo-scale-out\n  demo-scale-out --verify\n  demo-scale-out --benchmark --fronts nginx-round-robin,router-cache-aware\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Replicas of the server.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..17))]
    replicas: u64,

    /// KV cache per replica, MiB (it bounds how many system prompts one replica's prefix cache
    /// holds).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(4..65_537))]
    kv_mib: u64,

    /// Distinct system prompts in the workload.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..65))]
    prefixes: u64,

    /// Sentences per system prompt (each about twenty tokens).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..201))]
    sentences: u64,

    /// Requests per front (--benchmark).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..100_001))]
    requests: u64,

    /// Mean arrival rate, requests per second (Poisson, open loop).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,

    /// Tokens generated per request.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..1025))]
    max_tokens: u64,

    /// Fronts to run, in order (comma-separated) [default: all; the router's only where it is
    /// installed].
    #[arg(long, value_delimiter = ',', value_enum)]
    fronts: Vec<FrontName>,

    /// nginx binary [default: $PRODML_NGINX, `nginx` on PATH or /usr/sbin/nginx].
    #[arg(long)]
    nginx: Option<PathBuf>,

    /// A Python with `sglang_router` installed [default: $PRODML_SGLANG_PYTHON or python3];
    /// without one the router's rows are skipped, and said.
    #[arg(long)]
    sglang_python: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

const MODEL_ID: &str = "smollm2";

/// A load balancer in front of the replicas, running.
enum Front {
    Nginx(Nginx),
    Router(Router),
}

impl Front {
    fn url(&self) -> String {
        match self {
            Front::Nginx(n) => n.url(),
            Front::Router(r) => r.url(),
        }
    }
}

/// The fronts by name, for --fronts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FrontName {
    NginxRoundRobin,
    NginxLeastConn,
    NginxHash,
    RouterRoundRobin,
    RouterCacheAware,
}

impl FrontName {
    fn kind(self) -> FrontKind {
        match self {
            FrontName::NginxRoundRobin => FrontKind::Nginx(Balance::RoundRobin),
            FrontName::NginxLeastConn => FrontKind::Nginx(Balance::LeastConn),
            FrontName::NginxHash => FrontKind::Nginx(Balance::SessionHash),
            FrontName::RouterRoundRobin => FrontKind::Router(Policy::RoundRobin),
            FrontName::RouterCacheAware => FrontKind::Router(Policy::CacheAware),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum FrontKind {
    Nginx(Balance),
    Router(Policy),
}

impl FrontKind {
    fn label(self) -> &'static str {
        match self {
            FrontKind::Nginx(b) => b.label(),
            FrontKind::Router(p) => p.label(),
        }
    }
}

struct Tools {
    nginx: PathBuf,
    python: Option<PathBuf>,
    dir: PathBuf,
}

impl Drop for Tools {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_front(tools: &Tools, kind: FrontKind, replicas: &[Replica]) -> Result<Front> {
    let port = free_port()?;
    Ok(match kind {
        FrontKind::Nginx(balance) => {
            let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
            let dir = tools.dir.join(format!("nginx-{port}"));
            Front::Nginx(
                Nginx::start(&tools.nginx, &dir, port, &ports, balance)
                    .map_err(anyhow::Error::msg)?,
            )
        }
        FrontKind::Router(policy) => {
            let python = tools.python.as_ref().context("no sglang_router")?;
            let urls: Vec<String> = replicas.iter().map(|r| r.url()).collect();
            let log = tools.dir.join(format!("router-{port}.log"));
            Front::Router(
                Router::start(python, port, &urls, policy, MODEL_ID, &log)
                    .map_err(anyhow::Error::msg)?,
            )
        }
    })
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    if !(cli.rate.is_finite() && cli.rate > 0.0) {
        bail!(
            "--rate must be a positive number of requests per second (got {})",
            cli.rate
        );
    }
    let model = cli.run.model_path();
    chapters_code::assets::open_model(&model)?;
    let binary = replica::sibling_binary("demo-serving-api")
        .context("demo-serving-api is not next to this binary: build it (cargo build --release -p chapters-code --bins)")?;
    let nginx = cli
        .nginx
        .clone()
        .or_else(nginx::find_binary)
        .context("no nginx: install it (`apt install nginx-light`) or pass --nginx PATH")?;
    let python = router::find_python(cli.sglang_python.as_deref());
    if let (Some(p), None) = (&cli.sglang_python, &python) {
        bail!(
            "{} cannot import sglang_router: pip install sglang-router into it",
            p.display()
        );
    }
    let tools = Tools {
        nginx,
        python,
        dir: std::env::temp_dir().join(format!("prodml-scale-out-{}", std::process::id())),
    };
    std::fs::create_dir_all(&tools.dir)?;
    let spec = ReplicaSpec {
        binary,
        model,
        threads: 1,
        kv_mib: cli.kv_mib as usize,
        model_id: MODEL_ID.into(),
        drain_s: 10,
    };
    let runtime = chapters_code::serve::runtime()?;
    let names = if cli.fronts.is_empty() {
        let mut all = vec![
            FrontName::NginxRoundRobin,
            FrontName::NginxLeastConn,
            FrontName::NginxHash,
        ];
        if tools.python.is_some() {
            all.extend([FrontName::RouterRoundRobin, FrontName::RouterCacheAware]);
        }
        all
    } else {
        cli.fronts.clone()
    };
    if tools.python.is_none() && names.iter().any(|n| n.kind().label().starts_with("sglang")) {
        bail!(
            "SGLang's router is not installed: pip install sglang-router, or pass --sglang-python"
        );
    }
    let kinds: Vec<FrontKind> = names.iter().map(|n| n.kind()).collect();
    let mut tables = Vec::new();
    let mut verified = None;
    let mut summary = json!({});
    if cli.demo.benchmark {
        tables.push(runtime.block_on(routing(&cli, &tools, &spec, &kinds))?);
    }
    if cli.demo.verify {
        let fronts: Vec<FrontKind> = kinds
            .iter()
            .copied()
            // Round-robin in both: every replica has requests in flight when one is killed
            // (a cache-aware router may keep them all off the victim, and test nothing).
            .filter(|k| {
                matches!(
                    k,
                    FrontKind::Nginx(Balance::RoundRobin) | FrontKind::Router(Policy::RoundRobin)
                )
            })
            .collect();
        let table = runtime.block_on(failovers(&tools, &spec, &fronts))?;
        verified = Some(table.rows.iter().all(|r| r["pass"] == json!(true)));
        tables.push(table);
    }
    if !cli.demo.benchmark && !cli.demo.verify {
        let replicas = start_replicas(&spec, cli.replicas as usize).map_err(anyhow::Error::msg)?;
        let front = start_front(&tools, kinds[0], &replicas)?;
        let workload = workload(&cli, 12);
        let timed = runtime.block_on(openloop::run_open_loop_requests(
            &reqwest::Client::new(),
            &format!("{}/v1/chat/completions", front.url()),
            workload.requests(),
            cli.rate,
            cli.demo.seed,
        ));
        let served: Vec<Option<String>> = timed
            .iter()
            .map(|t| t.result.as_ref().ok().and_then(|s| s.served_by.clone()))
            .collect();
        summary = json!({ "front": kinds[0].label(), "served_by": served });
    }
    let report = Report {
        demo: "scale-out".into(),
        provenance: Provenance::current(),
        result: json!({
            "replicas": cli.replicas,
            "cores": std::thread::available_parallelism().map_or(1, |c| c.get()),
            "sglang_router": tools.python.is_some(),
            "summary": summary,
        }),
        tables,
        verified,
    };
    report.emit(cli.demo.output, |out| {
        writeln!(
            out,
            "{} replicas of demo-serving-api (1 engine thread each) on {} cores.",
            cli.replicas,
            std::thread::available_parallelism().map_or(1, |c| c.get())
        )?;
        if tools.python.is_none() {
            writeln!(
                out,
                "SGLang's router: not installed (pip install sglang-router), its rows skipped."
            )?;
        }
        if let Some(served) = summary.get("served_by") {
            writeln!(
                out,
                "Through {}: each request answered by {served}",
                kinds[0].label()
            )?;
        }
        Ok(())
    })
}

fn workload(cli: &Cli, requests: usize) -> Workload {
    Workload {
        prefixes: cli.prefixes as usize,
        sentences: cli.sentences as usize,
        requests,
        max_tokens: cli.max_tokens as usize,
        seed: cli.demo.seed,
        model: MODEL_ID.into(),
    }
}

/// Sum of one Prometheus sample over the replicas' `/metrics`.
fn metric_sum(replicas: &[Replica], name: &str) -> f64 {
    replicas
        .iter()
        .filter_map(|r| {
            chapters_code::child::http_get(&format!("127.0.0.1:{}", r.port), "/metrics")
        })
        .flat_map(|(_, text)| {
            text.lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

// ANCHOR: routing
/// The shared-prefix workload through each front, with fresh replicas (empty caches) for each.
async fn routing(
    cli: &Cli,
    tools: &Tools,
    spec: &ReplicaSpec,
    kinds: &[FrontKind],
) -> Result<Table> {
    let mut t = Table::new(
        "scale-out-routing",
        "Routing a shared-prefix workload across replicas",
        vec![
            Column::new("front", "Front"),
            Column::new("requests", "Requests"),
            Column::new("failed", "Failed"),
            Column::new("tokens_per_s", "Output")
                .unit("tok/s")
                .decimals(1),
            Column::new("ttft_p50_ms", "TTFT P50")
                .unit("ms")
                .decimals(0),
            Column::new("ttft_p99_ms", "TTFT P99")
                .unit("ms")
                .decimals(0),
            Column::new("prefix_hit_pct", "Prompt tokens from prefix cache")
                .unit("%")
                .decimals(0),
            Column::new("busiest_share_pct", "Busiest replica's share")
                .unit("%")
                .decimals(0),
        ],
    );
    let workload = workload(cli, cli.requests as usize);
    let bar = progress::steps(kinds.len() as u64, "routing the workload");
    for &kind in kinds {
        let replicas = start_replicas(spec, cli.replicas as usize).map_err(anyhow::Error::msg)?;
        let front = start_front(tools, kind, &replicas)?;
        let started = Instant::now();
        let timed = openloop::run_open_loop_requests(
            &reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()?,
            &format!("{}/v1/chat/completions", front.url()),
            workload.requests(),
            cli.rate,
            cli.demo.seed,
        )
        .await;
        let report = openloop::report(&timed, started.elapsed().as_secs_f64(), None);
        let hits = metric_sum(&replicas, "prodml_prefix_cache_hit_tokens");
        let prompt = metric_sum(&replicas, "prodml_prompt_tokens_total");
        let mut share = std::collections::BTreeMap::<String, usize>::new();
        for s in timed.iter().filter_map(|t| t.result.as_ref().ok()) {
            *share
                .entry(s.served_by.clone().unwrap_or_default())
                .or_default() += 1;
        }
        let busiest = share.values().max().copied().unwrap_or(0);
        t.push(vec![
            json!(kind.label()),
            json!(report.requests),
            json!(report.failed),
            json!(report.output_tokens_per_s),
            json!(report.ttft.p50_ms),
            json!(report.ttft.p99_ms),
            json!(if prompt > 0.0 {
                100.0 * hits / prompt
            } else {
                0.0
            }),
            json!(100.0 * busiest as f64 / report.requests.max(1) as f64),
        ]);
        drop(front);
        drop(replicas);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let prompt_tokens = chapters_code::tokenizer::Tokenizer::from_gguf(
        &chapters_code::assets::open_model(&spec.model)?,
    )
    .map(|tok| {
        tok.encode(&system_prompt(0, cli.sentences as usize), false)
            .len()
    })
    .unwrap_or(0);
    t.notes.push(format!(
        "{} requests per front, Poisson arrivals at {} per second (open loop, seed {}); {} system prompts of about {prompt_tokens} tokens, each request one of them plus a short question, {} tokens generated. {} replicas of demo-serving-api with one engine thread and {} MiB of KV cache each, pinned to cores in turn with taskset: {} engine threads on {cores} cores{}. Fresh replicas (empty prefix caches) for each front.",
        cli.requests,
        cli.rate,
        cli.demo.seed,
        cli.prefixes,
        cli.max_tokens,
        cli.replicas,
        cli.kv_mib,
        cli.replicas,
        if cli.replicas as usize > cores { ", oversubscribed" } else { "" },
    ));
    if tools.python.is_none() {
        t.notes.push("SGLang's router is not installed here (pip install sglang-router): its rows are missing.".into());
    }
    Ok(t)
}
// ANCHOR_END: routing

// ANCHOR: failovers
/// A replica killed under load behind each front; what was lost.
async fn failovers(tools: &Tools, spec: &ReplicaSpec, kinds: &[FrontKind]) -> Result<Table> {
    let mut t = Table::new(
        "scale-out-failover",
        "A replica killed under load, then restarted",
        vec![
            Column::new("front", "Front"),
            Column::new("requests", "Requests"),
            Column::new("failed", "Failed"),
            Column::new("in_flight", "In flight on it at the kill"),
            Column::new("lost_beyond", "Lost beyond those"),
            Column::new("served_while_down", "Answered by it while down"),
            Column::new("served_after", "Answered by it after restart"),
            Column::new("healthy_again", "Healthy in the front again"),
            Column::new("pass", "Pass"),
        ],
    );
    let run = FailoverSpec::standard(MODEL_ID);
    for &kind in kinds {
        let mut replicas = start_replicas(spec, 3).map_err(anyhow::Error::msg)?;
        let front = start_front(tools, kind, &replicas)?;
        let victim = replicas.pop().context("no replica")?;
        let url = format!("{}/v1/chat/completions", front.url());
        let (r, victim): (FailoverReport, Replica) = failover::run(&url, victim, &run)
            .await
            .map_err(anyhow::Error::msg)?;
        // Back in rotation: nginx (open source) shows it only by sending it requests again;
        // the router also says so in its worker list (a cache-aware router may rightly keep
        // the prefixes it moved on the replicas that took them over).
        let healthy_again = match &front {
            Front::Nginx(_) => Some(r.served_after_restart() > 0),
            Front::Router(router) => router.worker_healthy(&victim.url()),
        };
        let pass = r.in_flight_at_kill() > 0
            && r.lost_beyond_in_flight() == 0
            && r.served_while_down() == 0
            && healthy_again == Some(true);
        t.push(vec![
            json!(kind.label()),
            json!(r.records.len()),
            json!(r.failed()),
            json!(r.in_flight_at_kill()),
            json!(r.lost_beyond_in_flight()),
            json!(r.served_while_down()),
            json!(r.served_after_restart()),
            json!(healthy_again),
            json!(pass),
        ]);
    }
    t.notes.push(format!(
        "{} clients streaming {}-token answers for {} s through the front; the third of three replicas killed with SIGKILL at {} s and started again at {} s. Each request is attributed by the X-Served-By header the replica sends.",
        run.clients,
        run.max_tokens,
        run.end_at.as_secs(),
        run.kill_at.as_secs(),
        run.restart_at.as_secs()
    ));
    Ok(t)
}
// ANCHOR_END: failovers
