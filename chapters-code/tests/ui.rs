//! The web UI (`serve/ui/chat.html`, served at `/`) in a real browser: Debian's headless
//! Chromium, driven by playwright-core (`wasm/web/test-ui.mjs`), types a question and watches
//! the answer stream in, stops a long answer (the server is left with nothing running), and
//! shows the server's error for a request it refuses. Skipped (with a message) where Chromium,
//! Node or the npm packages are missing, unless PRODML_REQUIRE_BROWSER is set (CI sets it).

use chapters_code::assets;
use chapters_code::engine::SchedulerConfig;
use chapters_code::serve::{ServerConfig, app_state, serve_on_loopback};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn skip(why: &str) {
    assert!(
        std::env::var_os("PRODML_REQUIRE_BROWSER").is_none(),
        "PRODML_REQUIRE_BROWSER is set, but {why}"
    );
    eprintln!("SKIPPED: the web UI's browser test ({why})");
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_streams_stops_and_shows_errors() {
    let Some(model) = assets::model_for_tests() else {
        return;
    };
    let chromium = std::env::var_os("PRODML_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return skip(&format!("no Chromium at {}", chromium.display()));
    }
    if !root()
        .join("wasm/web/node_modules/playwright-core")
        .exists()
    {
        return skip("wasm/web/node_modules is missing (npm ci --prefix wasm/web)");
    }
    let config = ServerConfig {
        model_id: "smollm2-ui-test".into(),
        max_body_bytes: 64 << 10,
        request_timeout: Duration::from_secs(120),
        log_requests: false,
    };
    let scheduler = SchedulerConfig {
        kv_budget_bytes: 32 << 20,
        ..SchedulerConfig::default()
    };
    let state = app_state(&model, 1, scheduler, 8, config).expect("the server starts");
    let base = serve_on_loopback(Arc::clone(&state)).await.unwrap();

    // What the API answers without streaming: the page must show the same greedy text.
    let expected: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({
            "messages": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
            "temperature": 0, "max_tokens": 48,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = expected["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    // A stream tells proxies not to buffer it (nginx reads X-Accel-Buffering).
    let streamed = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({
            "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 2, "stream": true,
        }))
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        streamed
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
    assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
    let _ = streamed.text().await;

    let screenshot = root().join("target/ui-test.png");
    let script = root().join("wasm/web/test-ui.mjs");
    let base_for_node = base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(&script)
            .arg(&chromium)
            .arg(&base_for_node)
            .arg(&screenshot)
            .output()
    })
    .await
    .unwrap();
    let out = match out {
        Ok(out) => out,
        Err(_) => return skip("`node` is not on PATH"),
    };
    assert!(
        out.status.success(),
        "the browser test failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["answer"], expected.as_str());
    assert!(
        report["lengths_seen_while_streaming"].as_u64().unwrap() >= 2,
        "the answer did not grow while streaming: {report}"
    );
    assert!(!report["stopped_answer"].as_str().unwrap().is_empty());
    assert_eq!(
        report["running_after_stop"], 0,
        "a stopped request still runs"
    );
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("temperature"), "{error}");
    println!("web UI in Chromium: streamed {expected:?}, stopped a long answer, showed {error:?}");
}
