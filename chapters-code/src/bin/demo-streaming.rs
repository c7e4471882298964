//! Streaming: one chat completion as Server-Sent Events, shown as it arrives and then as a
//! timeline of the events on the wire.

use anyhow::{Context, Result, bail};
use chapters_code::demo::{Column, DemoArgs, ModelArgs, OutputMode, Provenance, Report, Table};
use chapters_code::engine::SchedulerConfig;
use chapters_code::engine::replay::percentile;
use chapters_code::serve::client::{self, Streamed};
use chapters_code::serve::loadgen::check_loopback;
use chapters_code::serve::{ServerConfig, app_state, serve_on_loopback};
use clap::Parser;
use serde_json::{Value, json};
use std::io::Write;
use std::time::{Duration, Instant};

/// Stream a chat completion over Server-Sent Events from this book's server (started
/// in-process on a free loopback port, or --url): print the text as it arrives, then the
/// timeline of events (arrival time, gap, bytes). --verify checks that the streamed text equals
/// the plain response and that no stop string leaked; --benchmark times plain against
/// streamed answers side by side (time to first text, total time).
#[derive(Parser, Debug)]
#[command(
    name = "demo-streaming",
    version,
    after_help = "Examples:\n  demo-streaming\n  demo-streaming --prompt \"Write a haiku about Rust.\" --stop \"\\n\"\n  demo-streaming --url http://127.0.0.1:8080\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// The user's message.
    #[arg(
        long,
        default_value = "Translate into French: The coffee at the café is très bon."
    )]
    prompt: String,

    /// Tokens to generate, at most.
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u64).range(1..4097))]
    max_tokens: u64,

    /// Stop strings (repeat the flag for several); the stream never shows any part of one.
    /// `\n`, `\t` and `\\` are read as a newline, a tab and a backslash.
    #[arg(long, value_parser = chapters_code::demo::args::parse::stop_string)]
    stop: Vec<String>,

    /// Rounds of the plain-versus-streamed comparison (--benchmark).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..1000))]
    rounds: u64,

    /// Stream from this chat-completions URL instead of starting our server (loopback only).
    #[arg(long)]
    url: Option<String>,
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    let runtime = chapters_code::serve::runtime().context("starting the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let url = match &cli.url {
        Some(url) => {
            check_loopback(url).map_err(anyhow::Error::msg)?;
            chapters_code::serve::loadgen::check_listening(url)
                .await
                .map_err(anyhow::Error::msg)?;
            url.clone()
        }
        None => {
            let config = ServerConfig {
                model_id: "demo".into(),
                max_body_bytes: 1 << 20,
                request_timeout: Duration::from_secs(600),
                log_requests: false,
            };
            let state = app_state(
                &cli.run.model_path(),
                cli.run.threads(),
                SchedulerConfig::default(),
                16,
                config,
            )?;
            format!("{}/v1/chat/completions", serve_on_loopback(state).await?)
        }
    };
    let http = reqwest::Client::new();
    let body = json!({
        "messages": [{ "role": "user", "content": cli.prompt }],
        "max_tokens": cli.max_tokens,
        "temperature": 0,
        "stop": cli.stop,
        "stream": true,
        "stream_options": { "include_usage": true },
    });

    // Live: print each piece of text the moment it arrives.
    let live = cli.demo.output == OutputMode::Stdout;
    let streamed = client::stream(&http, &url, &body, |text| {
        if live {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    })
    .await?;
    if live {
        println!("\n");
    }

    let mut tables = vec![timeline(&streamed)];
    if cli.demo.benchmark {
        tables.push(plain_vs_streamed(&http, &url, &body, cli.rounds as usize).await?);
    }
    let verified = if cli.demo.verify {
        Some(verify(&http, &url, &body, &streamed, &cli.stop).await?)
    } else {
        None
    };
    let report = Report {
        demo: "streaming".into(),
        provenance: Provenance::current(),
        result: json!({
            "text": streamed.text,
            "finish_reason": streamed.finish_reason,
            "usage": streamed.usage,
            "events": streamed.chunks.len(),
            "arrivals_ms": streamed.arrivals.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
        }),
        tables,
        verified,
    };
    report.emit(cli.demo.output, |out| {
        writeln!(out, "{} events from {url}", streamed.chunks.len())
    })?;
    if verified == Some(false) {
        std::process::exit(1);
    }
    Ok(())
}

/// The first events of the stream: when each arrived and what it carried.
fn timeline(s: &Streamed) -> Table {
    let mut table = Table::new(
        "streaming-timeline",
        "The first events of one streamed chat completion, as the client received them",
        vec![
            Column::new("event", "Event"),
            Column::new("at", "Arrived at").unit("ms").decimals(1),
            Column::new("gap", "Gap").unit("ms").decimals(1),
            Column::new("bytes", "UTF-8 bytes"),
            Column::new("text", "Text (escaped)"),
        ],
    );
    let mut last = None;
    let pieces = s
        .chunks
        .iter()
        .filter_map(client::chunk_text)
        .filter(|t| !t.is_empty());
    for (i, (text, at)) in pieces.zip(&s.arrivals).take(16).enumerate() {
        let ms = at.as_secs_f64() * 1e3;
        table.push(vec![
            json!(i + 1),
            json!(ms),
            last.map_or(Value::Null, |l: f64| json!(ms - l)),
            json!(text.len()),
            json!(format!("{text:?}")),
        ]);
        last = Some(ms);
    }
    let mut gaps: Vec<f64> = s
        .inter_token()
        .iter()
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    table.notes.push(format!(
        "{} pieces of text in all. Time to first token {:.0}, gaps between pieces P50 {:.1} and P99 {:.1} (milliseconds). The first event also carries the assistant role; after the last piece come a chunk with the finish reason and one with the usage.",
        s.arrivals.len(),
        s.ttft().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        percentile(&mut gaps, 0.5),
        percentile(&mut gaps, 0.99),
    ));
    table
}

// ANCHOR: plain_vs_streamed
/// The same request, plain and streamed, alternating `rounds` times: when does the first text
/// reach the client, and when is the answer complete?
async fn plain_vs_streamed(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    rounds: usize,
) -> Result<Table> {
    let mut plain_total = Vec::new();
    let (mut stream_first, mut stream_total) = (Vec::new(), Vec::new());
    let mut plain_body = body.clone();
    plain_body["stream"] = json!(false);
    plain_body
        .as_object_mut()
        .map(|o| o.remove("stream_options"));
    for _ in 0..rounds {
        let t = Instant::now();
        let r = http.post(url).json(&plain_body).send().await?;
        if !r.status().is_success() {
            bail!(
                "the plain request failed: {}",
                r.text().await.unwrap_or_default()
            );
        }
        r.bytes().await?;
        plain_total.push(t.elapsed().as_secs_f64() * 1e3);

        let t = Instant::now();
        let s = client::stream(http, url, body, |_| {}).await?;
        stream_total.push(t.elapsed().as_secs_f64() * 1e3);
        stream_first.push(s.ttft().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3));
    }
    // ANCHOR_END: plain_vs_streamed
    let plain_p50 = percentile(&mut plain_total, 0.5);
    let (first_p50, total_p50) = (
        percentile(&mut stream_first, 0.5),
        percentile(&mut stream_total, 0.5),
    );
    let mut table = Table::new(
        "streaming-vs-plain",
        "The same chat completion, plain and streamed, side by side",
        vec![
            Column::new("mode", "Response"),
            Column::new("first", "First text visible (P50)")
                .unit("ms")
                .decimals(0),
            Column::new("total", "Complete (P50)")
                .unit("ms")
                .decimals(0),
        ],
    );
    table.push(vec![
        json!("plain JSON"),
        json!(plain_p50),
        json!(plain_p50),
    ]);
    table.push(vec![
        json!("streamed (SSE)"),
        json!(first_p50),
        json!(total_p50),
    ]);
    table.notes.push(format!(
        "{rounds} rounds, alternating. Streaming shows the first text {:.1}× sooner; the complete answer takes {:.2}× the plain response's time.",
        plain_p50 / first_p50,
        total_p50 / plain_p50
    ));
    Ok(table)
}

/// The streamed text equals the plain answer, the stream ended with `[DONE]`, and no stop
/// string shows up in it.
async fn verify(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    streamed: &Streamed,
    stops: &[String],
) -> Result<bool> {
    let mut plain_body = body.clone();
    plain_body["stream"] = json!(false);
    let plain: Value = http
        .post(url)
        .json(&plain_body)
        .send()
        .await?
        .json()
        .await?;
    let plain_text = plain
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut ok = true;
    if plain_text != streamed.text {
        eprintln!(
            "mismatch: plain {plain_text:?}\n        streamed {:?}",
            streamed.text
        );
        ok = false;
    }
    if !streamed.done {
        eprintln!("the stream did not end with [DONE]");
        ok = false;
    }
    if let Some(stop) = stops.iter().find(|s| streamed.text.contains(s.as_str())) {
        eprintln!("the stop string {stop:?} leaked into the stream");
        ok = false;
    }
    Ok(ok)
}
