//! Coordinated omission, shown: a server that stalls on purpose for one second, measured by a
//! closed loop (one client, next request after the last answer) and by the open loop (Poisson
//! arrivals, timed from the intended send). The open loop's percentiles must include the stall;
//! the closed loop's hide it (one slow request among many fast ones), though its maximum shows
//! that the stall happened. No model: the server answers a fixed stream instantly.

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::post;
use chapters_code::serve::loadgen::{Api, LoadSpec};
use chapters_code::serve::openloop::{self, OpenLoopSpec};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STALL_AFTER: Duration = Duration::from_millis(1000);
const STALL: Duration = Duration::from_millis(1000);
const RUN: Duration = Duration::from_millis(3000);

/// A server whose answers are instant, except that from 1 s after its first request until
/// 1 s later nothing is answered (every request then waits for the stall to end) — a garbage
/// collection, a swap storm, a model reload.
async fn stalling_server() -> String {
    let first: Arc<Mutex<Option<Instant>>> = Arc::default();
    let app = Router::new().route(
        "/v1/completions",
        post(move || {
            let first = Arc::clone(&first);
            async move {
                let now = Instant::now();
                let t0 = *first.lock().unwrap().get_or_insert(now);
                let (from, to) = (t0 + STALL_AFTER, t0 + STALL_AFTER + STALL);
                if now >= from && now < to {
                    tokio::time::sleep(to - now).await;
                }
                let mut body = String::new();
                for piece in ["a", "b", "c", "d"] {
                    body += &format!("data: {{\"choices\":[{{\"index\":0,\"text\":\"{piece}\"}}]}}\n\n");
                }
                body += "data: {\"choices\":[],\"usage\":{\"completion_tokens\":4}}\n\ndata: [DONE]\n\n";
                ([("content-type", "text/event-stream")], body).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/completions", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn load() -> LoadSpec {
    LoadSpec {
        api: Api::Completions,
        concurrency: 1,
        requests_per_client: 1,
        max_tokens: 4,
        time_limit_s: RUN.as_secs_f64(),
        model: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_loop_sees_a_stall_that_the_closed_loop_hides() {
    let http = reqwest::Client::new();

    let url = stalling_server().await;
    let started = Instant::now();
    let closed = openloop::run_closed_loop(&http, &url, &load(), 1, RUN).await;
    let closed = openloop::report(&closed, started.elapsed().as_secs_f64(), None);

    let url = stalling_server().await;
    let spec = OpenLoopSpec {
        load: load(),
        rate_per_s: 50.0,
        requests: (50.0 * RUN.as_secs_f64()) as usize,
        seed: 11,
    };
    let started = Instant::now();
    let open = openloop::run_open_loop(&http, &url, &spec).await;
    let open = openloop::report(&open, started.elapsed().as_secs_f64(), None);

    println!(
        "closed loop: {} requests, TTFT P50 {:.1} ms, P99 {:.1} ms, max {:.0} ms",
        closed.requests, closed.ttft.p50_ms, closed.ttft.p99_ms, closed.ttft.max_ms
    );
    println!(
        "open loop ({} req/s): {} requests, TTFT P50 {:.1} ms, P90 {:.0} ms, P99 {:.0} ms, max {:.0} ms",
        spec.rate_per_s,
        open.requests,
        open.ttft.p50_ms,
        open.ttft.p90_ms,
        open.ttft.p99_ms,
        open.ttft.max_ms
    );
    assert_eq!((closed.failed, open.failed), (0, 0));
    // The stall happened to both: one request of the closed loop waited through it …
    assert!(closed.ttft.max_ms >= 0.8 * STALL.as_millis() as f64);
    // … but a closed loop sends nothing while it waits, so that is one sample among hundreds.
    assert!(closed.requests > 200, "{} requests", closed.requests);
    assert!(
        closed.ttft.p99_ms < 100.0,
        "closed P99 {}",
        closed.ttft.p99_ms
    );
    // The open loop kept sending: about a third of its requests fell in the stall.
    assert!(open.ttft.p90_ms >= 300.0, "open P90 {}", open.ttft.p90_ms);
    assert!(open.ttft.p99_ms >= 0.8 * STALL.as_millis() as f64);
}
