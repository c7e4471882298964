//! The chat page's switch to the in-browser engine: `demo-serving-api`'s routes with
//! `/browser/` (the module, its JavaScript, the model), in Debian's headless Chromium
//! (`wasm/web/test-ui-switch.mjs`). Two turns of one conversation must be the native engine's
//! greedy text for the same conversation, a long answer must stop, and the page must not have
//! called the API. Skipped (with a message) where the tools are missing, unless
//! PRODML_REQUIRE_WASM is set.

mod common;

use chapters_code::engine::SchedulerConfig;
use chapters_code::serve::browser::{self, BrowserAssets};
use chapters_code::serve::{ServerConfig, app_state, router, serve_app_on_loopback};
use chapters_code::tokenizer::ChatMessage;
use common::{build_module, chromium, node, playwright, root};
use prodml_wasm::Session;
use std::path::Path;
use std::time::Duration;

#[test]
fn the_chat_page_runs_the_model_in_the_browser_when_switched() {
    let Some(model) = chapters_code::assets::model_for_tests() else {
        return;
    };
    let Some(chromium) = chromium() else {
        return;
    };
    if !playwright() {
        return;
    }
    let Some(module) = build_module() else {
        return;
    };
    let config = ServerConfig {
        model_id: "smollm2-switch-test".into(),
        max_body_bytes: 64 << 10,
        request_timeout: Duration::from_secs(120),
        log_requests: false,
    };
    let scheduler = SchedulerConfig {
        kv_budget_bytes: 16 << 20,
        ..SchedulerConfig::default()
    };
    let state = app_state(&model, 1, scheduler, 8, config).expect("the server starts");
    let assets = BrowserAssets::new(&module, None, &model).expect("the module and model are there");
    let runtime = chapters_code::serve::runtime().unwrap();
    let app = router(state).merge(browser::routes(assets));
    let base = runtime.block_on(serve_app_on_loopback(app)).unwrap();

    let (q1, q2) = (
        "What is the capital of France? Answer in one sentence.",
        "And what is the capital of Italy?",
    );
    let screenshot = root().join("target/wasm-test/ui-switch.png");
    let script = root().join("wasm/web/test-ui-switch.mjs");
    let base_arg = Path::new(&base);
    let args: [&Path; 6] = [
        &script,
        &chromium,
        base_arg,
        &screenshot,
        Path::new(q1),
        Path::new(q2),
    ];
    let Some(report) = node(&args) else {
        return;
    };

    // The same conversation through the native engine.
    let mut native = Session::load(std::fs::read(&model).unwrap()).unwrap();
    let mut conversation = vec![ChatMessage::new("user", q1)];
    let json = |c: &Vec<ChatMessage>| serde_json::to_string(c).unwrap();
    let ids = native.conversation_ids(&json(&conversation)).unwrap();
    let (_, answer1) = native.greedy(&ids, 24).unwrap();
    conversation.push(ChatMessage::new("assistant", &answer1));
    conversation.push(ChatMessage::new("user", q2));
    let ids = native.conversation_ids(&json(&conversation)).unwrap();
    let (_, answer2) = native.greedy(&ids, 24).unwrap();

    assert_eq!(report["answer1"], answer1.as_str(), "{report}");
    assert_eq!(report["answer2"], answer2.as_str(), "{report}");
    assert!(!report["stopped_answer"].as_str().unwrap().is_empty());
    assert_eq!(report["api_calls"], 0, "the page called the API: {report}");
    assert_eq!(report["load"]["simd128"], true);
    println!(
        "the chat page's in-browser engine (Chromium) answered a two-turn conversation with the native engine's text ({answer1:?}, {answer2:?}); model loaded in {:.0} ms; {}",
        report["load"]["loadMs"].as_f64().unwrap(),
        report["status"]
    );
}
