//! The WebAssembly engine in a real browser: Debian's headless Chromium, driven by
//! playwright-core (`wasm/web/test-browser.mjs`), loads the page, streams the model into the
//! module from loopback, and generates — the relaxed-SIMD module offered first, as a page
//! should (Chromium takes it). The text must be the native engine's; a stop button
//! must stop; a second visit must read the model from the Cache API. Skipped (with a message)
//! where Chromium, Node or the npm packages are missing, unless PRODML_REQUIRE_WASM is set.

mod common;

use common::{build_module, build_relaxed_module, chromium, node, root, skip};
use prodml_wasm::Session;
use std::path::Path;

#[test]
fn the_page_generates_the_native_engines_text_stops_and_caches_the_model() {
    let Some(model) = chapters_code::assets::model_for_tests() else {
        return;
    };
    let Some(chromium) = chromium() else {
        return;
    };
    if !root()
        .join("wasm/web/node_modules/playwright-core")
        .exists()
    {
        skip("wasm/web/node_modules is missing (npm ci --prefix wasm/web)");
        return;
    }
    let (Some(module), Some(relaxed)) = (build_module(), build_relaxed_module()) else {
        return;
    };
    let prompts = [
        ("The capital of France is", false, 16),
        ("Name three primary colours.", true, 24),
        ("def quicksort(xs):", false, 16),
        ("東京は日本の首都です。 🌸 In English:", false, 16),
        ("What is 17 * 23? Show the steps.", true, 24),
    ];
    let list: Vec<serde_json::Value> = prompts
        .iter()
        .map(|(p, chat, n)| serde_json::json!({"prompt": p, "chat": chat, "max_tokens": n}))
        .collect();
    let dir = root().join("target/wasm-test");
    let file = dir.join("browser-prompts.json");
    std::fs::write(&file, serde_json::to_vec(&list).unwrap()).unwrap();
    let screenshot = dir.join("browser.png");
    let script = root().join("wasm/web/test-browser.mjs");
    let args: [&Path; 7] = [
        &script,
        &chromium,
        &module,
        &model,
        &file,
        &screenshot,
        &relaxed,
    ];
    let Some(report) = node(&args) else {
        return;
    };

    let mut native = Session::load(std::fs::read(&model).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), prompts.len());
    for ((prompt, chat, max), got) in prompts.iter().zip(results) {
        let ids = native.prompt_ids(prompt, *chat).unwrap();
        let (tokens, text) = native.greedy(&ids, *max).unwrap();
        let browser: Vec<u64> = got["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let native_ids: Vec<u64> = tokens.iter().map(|&t| u64::from(t)).collect();
        assert_eq!(browser, native_ids, "{prompt:?}");
        assert_eq!(got["text"], text.as_str(), "{prompt:?}");
    }
    let stop = &report["stop"];
    assert_eq!(stop["reason"], "stopped");
    assert!(stop["ids"].as_array().unwrap().len() < 400);
    assert_eq!(report["load_first"]["cached"], false);
    assert_eq!(report["load_cached"]["cached"], true);
    assert_eq!(report["load_first"]["simd128"], true);
    // Chromium has relaxed-SIMD: the page takes that module (its kernels are the relaxed ones
    // where the engine's multiply-add fuses, which every x86-64 CPU with FMA gives).
    assert_eq!(
        report["load_first"]["module"], "relaxed-simd",
        "{}",
        report["load_first"]
    );
    assert!(
        std::fs::metadata(&screenshot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false)
    );
    println!(
        "Chromium, the {} module with {} kernels: the native engine's text on {} prompts; model load {:.0} ms first, {:.0} ms from the cache; a stop after {} tokens",
        report["load_first"]["module"],
        report["load_first"]["kernels"],
        prompts.len(),
        report["load_first"]["loadMs"].as_f64().unwrap(),
        report["load_cached"]["loadMs"].as_f64().unwrap(),
        stop["ids"].as_array().unwrap().len()
    );
}
