//! A load generator for an OpenAI-compatible server: `concurrency` clients, each sending
//! streaming completions one after another, timed on the client side. What users feel is
//! measured here — time to first token and the gaps between tokens as they arrive over HTTP —
//! not what the engine thinks it did.

use super::client::{self, ClientError};
use crate::engine::replay::percentile;
use serde::Serialize;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Which OpenAI endpoint the clients call: the server's own [`Endpoint`].
pub use super::request::Endpoint as Api;

/// One concurrency level of a benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSpec {
    /// The endpoint the clients call (its URL must match).
    pub api: Api,
    /// Clients streaming at the same time.
    pub concurrency: usize,
    /// Requests each client sends, one after another.
    pub requests_per_client: usize,
    /// Generated tokens per request (end-of-sequence ignored, so every request generates
    /// exactly this many).
    pub max_tokens: usize,
    /// No client starts a new request after this long (seconds).
    pub time_limit_s: f64,
    /// `model` to send, if the server wants one.
    pub model: Option<String>,
}

/// What one level measured.
#[derive(Debug, Clone, Serialize)]
pub struct LevelResult {
    pub concurrency: usize,
    pub requests: usize,
    pub failed: usize,
    /// First failure's message, if any.
    pub first_error: Option<String>,
    pub generated_tokens: usize,
    /// From the first request sent to the last response read (seconds).
    pub wall_s: f64,
    /// Generated tokens of every client ÷ wall time.
    pub tokens_per_s: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    /// Time-to-first-token values the TTFT percentiles come from (one per request): a P99 of
    /// fewer than 100 values is the largest of them, and is reported as such.
    pub ttft_samples: usize,
    pub itl_p50_ms: f64,
    pub itl_p99_ms: f64,
    /// Gaps between tokens the inter-token percentiles come from.
    pub itl_samples: usize,
    /// Standard deviation of the gaps between tokens (milliseconds).
    pub itl_jitter_ms: f64,
}

/// Prompts the clients cycle through: different lengths, so that prefills differ.
pub const PROMPTS: &[&str] = &[
    "The history of the printing press begins",
    "Write a short poem about the sea.",
    "Explain how a hash map works, step by step, for a new programmer.",
    "Once upon a time, in a village at the edge of a forest, there lived",
    "List three reasons why the sky is blue:",
    "def quicksort(xs):",
    "The three laws of thermodynamics are",
    "In a production inference server, the scheduler decides",
];

// ANCHOR: run_level
/// Runs one level against `url` (a completions endpoint) and summarizes it.
pub async fn run_level(http: &reqwest::Client, url: &str, spec: &LoadSpec) -> LevelResult {
    let started = Instant::now();
    let limit = Duration::from_secs_f64(spec.time_limit_s);
    let clients = (0..spec.concurrency).map(|c| {
        let (http, url, spec) = (http.clone(), url.to_string(), spec.clone());
        tokio::spawn(async move {
            let mut results: Vec<Result<client::Streamed, ClientError>> = Vec::new();
            for r in 0..spec.requests_per_client {
                if started.elapsed() >= limit {
                    break;
                }
                let body = request_body(&spec, PROMPTS[(c + r * spec.concurrency) % PROMPTS.len()]);
                results.push(client::stream(&http, &url, &body, |_| {}).await);
            }
            results
        })
    });
    let mut streams = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    for handle in clients.collect::<Vec<_>>() {
        // A client task that panicked lost its results: count it as one failure, not as none.
        let results = handle.await.unwrap_or_else(|e| {
            vec![Err(ClientError::Protocol(format!(
                "the client task failed: {e}"
            )))]
        });
        for result in results {
            match result {
                Ok(s) if s.done => streams.push(s),
                Ok(_) => {
                    failed += 1;
                    first_error
                        .get_or_insert_with(|| "the stream ended without [DONE]".to_string());
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    summarize(spec.concurrency, &streams, failed, first_error, wall_s)
}
// ANCHOR_END: run_level

/// A streaming request with usage, greedy, end-of-sequence ignored: the prompt as `prompt`
/// (completions) or as one user message (chat).
pub fn request_body(spec: &LoadSpec, prompt: &str) -> Value {
    let input = match spec.api {
        Api::Completions => ("prompt", json!(prompt)),
        Api::Chat => ("messages", json!([{ "role": "user", "content": prompt }])),
    };
    let mut body = json!({
        input.0: input.1,
        "max_tokens": spec.max_tokens,
        "temperature": 0,
        "ignore_eos": true,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    if let Some(model) = &spec.model {
        body["model"] = json!(model);
    }
    body
}

fn summarize(
    concurrency: usize,
    streams: &[client::Streamed],
    failed: usize,
    first_error: Option<String>,
    wall_s: f64,
) -> LevelResult {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut ttft: Vec<f64> = streams.iter().filter_map(|s| s.ttft()).map(ms).collect();
    let mut gaps: Vec<f64> = streams
        .iter()
        .flat_map(|s| s.inter_token())
        .map(ms)
        .collect();
    // Tokens as the server counted them (a piece of text may hold several); pieces otherwise.
    let generated_tokens: usize = streams
        .iter()
        .map(|s| {
            s.usage
                .as_ref()
                .and_then(|u| u["completion_tokens"].as_u64())
                .map_or(s.arrivals.len(), |n| n as usize)
        })
        .sum();
    let mean = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
    let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len().max(1) as f64;
    LevelResult {
        concurrency,
        requests: streams.len() + failed,
        failed,
        first_error,
        generated_tokens,
        wall_s,
        tokens_per_s: generated_tokens as f64 / wall_s.max(1e-9),
        ttft_samples: ttft.len(),
        itl_samples: gaps.len(),
        ttft_p50_ms: percentile(&mut ttft, 0.50),
        ttft_p99_ms: percentile(&mut ttft, 0.99),
        itl_p50_ms: percentile(&mut gaps, 0.50),
        itl_p99_ms: percentile(&mut gaps, 0.99),
        itl_jitter_ms: var.sqrt(),
    }
}

/// Refuses anything but a loopback URL: the benchmark floods its target, so it only targets
/// this machine.
pub fn check_loopback(url: &str) -> Result<(), String> {
    let authority = authority(url)
        .ok_or_else(|| format!("`{url}`: only http:// URLs on this machine are benchmarked"))?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "`{url}` is not on this machine: the benchmark only drives loopback servers (127.0.0.1, ::1, localhost)"
        ))
    }
}

/// The `host[:port]` of an `http://` URL.
fn authority(url: &str) -> Option<&str> {
    url.strip_prefix("http://")?.split('/').next()
}

/// Whether something accepts connections at `url`'s host and port (a checked loopback URL);
/// the error says how to start a server. Run before a benchmark or a stream, so that a wrong
/// port is one clear line, not "error sending request" from every client.
pub async fn check_listening(url: &str) -> Result<(), String> {
    let authority = authority(url).unwrap_or(url);
    let address = if authority
        .rsplit(':')
        .next()
        .is_some_and(|p| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let connect = tokio::net::TcpStream::connect(address.as_str());
    match tokio::time::timeout(std::time::Duration::from_secs(5), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "nothing answers at {url} ({e}): is the server running? Start one with \
             `cargo run --release -p chapters-code --bin demo-serving-api -- --port 8080`, \
             or leave out --url to run one inside this process"
        )),
        Err(_) => Err(format!(
            "{url} did not accept a connection within 5 s: is the server running and not overloaded?"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_url_says_to_start_the_server() {
        // A port just freed by a listener that was closed: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = check_listening(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_err();
        assert!(e.contains("is the server running?"), "{e}");
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", live.local_addr().unwrap());
        assert_eq!(check_listening(&url).await, Ok(()));
    }

    #[test]
    fn only_loopback_urls_are_benchmarked() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1/v1",
            "http://[::1]:80/",
            "http://127.0.0.9",
        ] {
            assert!(check_loopback(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://127.0.0.1",
            "http://example.com",
            "http://10.0.0.1:80",
            "ftp://localhost",
            "http://localhost.evil.com",
        ] {
            assert!(check_loopback(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn summary_percentiles_and_jitter_come_from_the_arrivals() {
        let ms = Duration::from_millis;
        let s = client::Streamed {
            arrivals: vec![ms(100), ms(110), ms(130), ms(140)],
            usage: Some(json!({"completion_tokens": 4})),
            done: true,
            ..Default::default()
        };
        let r = summarize(1, &[s], 0, None, 2.0);
        assert_eq!(r.generated_tokens, 4);
        assert_eq!(r.tokens_per_s, 2.0);
        assert_eq!(r.ttft_p50_ms, 100.0);
        assert_eq!(r.itl_p50_ms, 10.0);
        assert_eq!(r.itl_p99_ms, 20.0);
        // gaps 10, 20, 10: mean 13.33, std dev 4.71
        assert!((r.itl_jitter_ms - 4.714).abs() < 1e-3);
    }
}
