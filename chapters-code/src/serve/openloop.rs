//! An open-loop load generator, and latency metrics as vLLM's serving benchmark defines them.
//!
//! A closed loop ([`super::loadgen::run_level`]) has each client wait for its answer before it
//! sends the next request: when the server stalls, the clients stop sending, and the requests
//! that *would* have arrived during the stall are never timed — Gil Tene's *coordinated
//! omission*. An open loop sends on a schedule that does not wait for the server (here Poisson
//! arrivals at a set rate, seeded), and times every request from when it *should* have been
//! sent, as wrk2 does; a stall then shows in every request it delayed.
//!
//! The metrics (vLLM `benchmarks/benchmark_serving.py`): TTFT, the time to the first non-empty
//! piece of text; TPOT, per request `(E2EL − TTFT) / (output tokens − 1)`; ITL, every gap between
//! two pieces of text (a piece may hold several tokens); E2EL, the whole request. vLLM starts
//! each clock when the request is actually sent; the open loop starts it at the intended time
//! (the two agree while the client keeps up).

use super::client::{self, Streamed};
use super::loadgen::{LoadSpec, PROMPTS, request_body};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::{Duration, Instant};

/// One open-loop run.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoopSpec {
    /// The request's shape (endpoint, tokens, model); its concurrency fields are not used.
    pub load: LoadSpec,
    /// Mean arrivals per second (Poisson).
    pub rate_per_s: f64,
    /// Requests to send.
    pub requests: usize,
    /// Seed of the arrival times.
    pub seed: u64,
}

/// Intended send times, from the start of the run: Poisson arrivals at `rate_per_s` (gaps drawn
/// from the exponential distribution, inverse-transform sampling of a seeded xorshift).
pub fn poisson_schedule(rate_per_s: f64, requests: usize, seed: u64) -> Vec<Duration> {
    // splitmix64 of the seed: xorshift's first outputs from a small state are small numbers
    // (a seed of 7 would open with gaps of several mean gaps).
    let mut state = {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) | 1
    };
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // (0, 1]: 53 random bits, never 0.
        ((state >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    let mut t = 0.0f64;
    (0..requests)
        .map(|_| {
            let at = Duration::from_secs_f64(t);
            t += -uniform().ln() / rate_per_s;
            at
        })
        .collect()
}

/// One request's stream with its clock's origin: `delay` is how much later than its origin the
/// request was actually sent (0 for a closed loop, whose origin is the send).
#[derive(Debug, Clone)]
pub struct Timed {
    pub delay: Duration,
    pub result: Result<Streamed, String>,
}

impl Timed {
    /// Arrival times of the pieces of text, from the origin.
    fn arrivals(&self) -> Option<Vec<Duration>> {
        let s = self.result.as_ref().ok().filter(|s| s.done)?;
        Some(s.arrivals.iter().map(|a| *a + self.delay).collect())
    }
}

// ANCHOR: run_open_loop
/// Sends `spec.requests` requests to `url` at their scheduled times, each in its own task (no
/// request waits for another), and returns every request timed from its intended send time.
pub async fn run_open_loop(http: &reqwest::Client, url: &str, spec: &OpenLoopSpec) -> Vec<Timed> {
    let requests = (0..spec.requests)
        .map(|i| (request_body(&spec.load, PROMPTS[i % PROMPTS.len()]), None))
        .collect();
    run_open_loop_requests(http, url, requests, spec.rate_per_s, spec.seed).await
}

/// [`run_open_loop`] for bodies made by the caller, each with an optional `X-Session-ID`
/// header (what session-affinity load balancers hash).
pub async fn run_open_loop_requests(
    http: &reqwest::Client,
    url: &str,
    requests: Vec<(serde_json::Value, Option<String>)>,
    rate_per_s: f64,
    seed: u64,
) -> Vec<Timed> {
    let schedule = poisson_schedule(rate_per_s, requests.len(), seed);
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = schedule
        .into_iter()
        .zip(requests)
        .map(|(at, (body, session))| {
            let (http, url) = (http.clone(), url.to_string());
            tokio::spawn(async move {
                let intended = start + at;
                tokio::time::sleep_until(intended).await;
                // Late if the machine could not keep up: counted, not hidden.
                let delay = tokio::time::Instant::now() - intended;
                let mut request = http.post(&url).json(&body);
                if let Some(session) = session {
                    request = request.header("x-session-id", session);
                }
                let result = client::stream_request(request, |_| {})
                    .await
                    .map_err(|e| e.to_string());
                Timed { delay, result }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.unwrap_or_else(|e| Timed {
            delay: Duration::ZERO,
            result: Err(format!("the request task failed: {e}")),
        }));
    }
    out
}
// ANCHOR_END: run_open_loop

/// A closed loop for comparison: `clients` clients, each sending its next request when the last
/// one ended, until `duration` has passed; every request timed from its actual send.
pub async fn run_closed_loop(
    http: &reqwest::Client,
    url: &str,
    load: &LoadSpec,
    clients: usize,
    duration: Duration,
) -> Vec<Timed> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (http, url, load) = (http.clone(), url.to_string(), load.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                let mut i = c;
                while start.elapsed() < duration {
                    let body = request_body(&load, PROMPTS[i % PROMPTS.len()]);
                    let result = client::stream(&http, &url, &body, |_| {})
                        .await
                        .map_err(|e| e.to_string());
                    out.push(Timed {
                        delay: Duration::ZERO,
                        result,
                    });
                    i += clients;
                }
                out
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.extend(task.await.unwrap_or_default());
    }
    out
}

/// Percentiles of one metric, in milliseconds, from an HDR histogram (microsecond values, three
/// significant digits: each value within 0.1% of the one recorded).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1e3;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            samples: h.len(),
            mean_ms: h.mean() / 1e3,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// A latency objective per request (DistServe's goodput, as vLLM's `--goodput`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Slo {
    pub ttft_ms: f64,
    pub tpot_ms: f64,
}

/// A run's latencies, throughput and goodput.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub requests: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    /// From the first intended send to the last answer (seconds).
    pub wall_s: f64,
    pub completed_per_s: f64,
    pub output_tokens_per_s: f64,
    pub ttft: Percentiles,
    pub tpot: Percentiles,
    pub itl: Percentiles,
    pub e2el: Percentiles,
    /// Latest a request was sent after its intended time (the client's own lag), ms.
    pub max_send_delay_ms: f64,
    /// Requests per second that met `slo` (TTFT and TPOT), or None without one.
    pub goodput_per_s: Option<f64>,
    /// The share of all requests (failed ones included) that met `slo`.
    pub slo_attained: Option<f64>,
    pub slo: Option<Slo>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to one hour, three significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// The metrics of `timed` (one run), with `wall_s` its duration.
pub fn report(timed: &[Timed], wall_s: f64, slo: Option<Slo>) -> LatencyReport {
    let us = |d: Duration| (d.as_micros() as u64).max(1);
    let (mut ttft, mut tpot, mut itl, mut e2el) =
        (histogram(), histogram(), histogram(), histogram());
    let (mut failed, mut first_error, mut tokens, mut good) = (0, None, 0usize, 0usize);
    for t in timed {
        let Some(arrivals) = t.arrivals() else {
            failed += 1;
            if first_error.is_none() {
                first_error = Some(match &t.result {
                    Err(e) => e.clone(),
                    Ok(_) => "the stream ended without [DONE]".into(),
                });
            }
            continue;
        };
        let Some(&first) = arrivals.first() else {
            failed += 1;
            first_error.get_or_insert_with(|| "no text came back".into());
            continue;
        };
        let last = *arrivals.last().unwrap_or(&first);
        let streamed = t.result.as_ref().ok();
        let output = streamed
            .and_then(|s| s.usage.as_ref())
            .and_then(|u| u["completion_tokens"].as_u64())
            .map_or(arrivals.len(), |n| n as usize);
        tokens += output;
        ttft.saturating_record(us(first));
        e2el.saturating_record(us(last));
        for gap in arrivals.windows(2) {
            itl.saturating_record(us(gap[1] - gap[0]));
        }
        let tpot_ms = if output > 1 {
            let v = (last - first) / (output as u32 - 1);
            tpot.saturating_record(us(v));
            Some(v.as_secs_f64() * 1e3)
        } else {
            None
        };
        if let Some(slo) = slo {
            let ttft_ok = first.as_secs_f64() * 1e3 <= slo.ttft_ms;
            if ttft_ok && tpot_ms.is_none_or(|v| v <= slo.tpot_ms) {
                good += 1;
            }
        }
    }
    let wall = wall_s.max(1e-9);
    LatencyReport {
        requests: timed.len(),
        failed,
        first_error,
        wall_s,
        completed_per_s: (timed.len() - failed) as f64 / wall,
        output_tokens_per_s: tokens as f64 / wall,
        ttft: Percentiles::of(&ttft),
        tpot: Percentiles::of(&tpot),
        itl: Percentiles::of(&itl),
        e2el: Percentiles::of(&e2el),
        max_send_delay_ms: timed
            .iter()
            .map(|t| t.delay.as_secs_f64() * 1e3)
            .fold(0.0, f64::max),
        goodput_per_s: slo.map(|_| good as f64 / wall),
        slo_attained: slo.map(|_| good as f64 / timed.len().max(1) as f64),
        slo,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_arrivals_have_the_rate_and_the_spread_of_an_exponential() {
        let s = poisson_schedule(20.0, 20_000, 7);
        let gaps: Vec<f64> = s.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // Exponential: mean 1/λ = 50 ms, standard deviation equal to the mean.
        assert!((mean - 0.05).abs() < 0.002, "mean gap {mean}");
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.05,
            "cv {}",
            var.sqrt() / mean
        );
        assert_eq!(s[0], Duration::ZERO);
        assert_eq!(s, poisson_schedule(20.0, 20_000, 7), "seeded");
        // Small seeds too: the first arrivals spread like the rest (no run of long gaps).
        for seed in 0..50 {
            let first = poisson_schedule(1.0, 11, seed)[10].as_secs_f64();
            assert!(
                first < 30.0,
                "seed {seed}: ten gaps of mean 1 s took {first} s"
            );
        }
    }

    /// Equal within the histogram's precision (three significant digits).
    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= want.abs() * 1e-3 + 1e-3
    }

    #[test]
    fn metrics_follow_vllms_definitions() {
        let ms = Duration::from_millis;
        let stream = |arrivals: Vec<Duration>, tokens: u64| Streamed {
            arrivals,
            usage: Some(serde_json::json!({ "completion_tokens": tokens })),
            done: true,
            ..Default::default()
        };
        let timed = vec![
            // Sent 10 ms late: every time counts from the intended send.
            Timed {
                delay: ms(10),
                result: Ok(stream(vec![ms(90), ms(110), ms(140)], 4)),
            },
            Timed {
                delay: Duration::ZERO,
                result: Ok(stream(vec![ms(300)], 1)),
            },
            Timed {
                delay: Duration::ZERO,
                result: Err("refused".into()),
            },
        ];
        let r = report(
            &timed,
            2.0,
            Some(Slo {
                ttft_ms: 200.0,
                tpot_ms: 30.0,
            }),
        );
        assert_eq!((r.requests, r.failed), (3, 1));
        assert_eq!(r.first_error.as_deref(), Some("refused"));
        assert_eq!(r.ttft.samples, 2);
        assert!(close(r.ttft.p50_ms, 100.0), "{}", r.ttft.p50_ms);
        assert!(close(r.ttft.max_ms, 300.0), "{}", r.ttft.max_ms);
        // TPOT: (150 − 100) / (4 − 1) for the first request; none for a one-token answer.
        assert_eq!(r.tpot.samples, 1);
        assert!(close(r.tpot.p50_ms, 50.0 / 3.0), "{}", r.tpot.p50_ms);
        // ITL: the gaps between pieces, 20 and 30 ms.
        assert_eq!(r.itl.samples, 2);
        assert!(close(r.itl.max_ms, 30.0), "{}", r.itl.max_ms);
        assert!(close(r.e2el.max_ms, 300.0), "{}", r.e2el.max_ms);
        assert_eq!(r.output_tokens_per_s, 2.5);
        // Goodput: the first request meets both objectives, the second misses TTFT.
        assert_eq!(r.goodput_per_s, Some(0.5));
        assert_eq!(r.slo_attained, Some(1.0 / 3.0));
        assert_eq!(r.max_send_delay_ms, 10.0);
    }
}
