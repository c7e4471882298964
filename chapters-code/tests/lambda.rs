//! The serverless handler against a real emulator of the Lambda Runtime API: cargo-lambda's
//! (`pip install cargo-lambda`), started by `demo-lambda-handler`. Good events must give the
//! in-process answer, bad events structured errors from a process that stays up, and cold
//! starts must be measured stage by stage. Skipped (with a message) where cargo-lambda is not
//! installed, unless PRODML_REQUIRE_LAMBDA is set (CI sets it).

use chapters_code::serverless::Function;
use serde_json::{Value, json};
use std::process::Command;

fn cargo_lambda() -> Option<String> {
    let candidate = std::env::var("PRODML_CARGO_LAMBDA").unwrap_or_else(|_| "cargo-lambda".into());
    let works = Command::new(&candidate)
        .args(["lambda", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(candidate);
    }
    assert!(
        std::env::var_os("PRODML_REQUIRE_LAMBDA").is_none(),
        "PRODML_REQUIRE_LAMBDA is set, but cargo-lambda ({candidate}) does not run"
    );
    eprintln!(
        "SKIPPED: the Lambda emulator tests (cargo-lambda not found: pip install cargo-lambda)"
    );
    None
}

fn demo(args: &[&str], cargo_lambda: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_demo-lambda-handler"))
        .args(args)
        .args(["--output", "json", "--cargo-lambda", cargo_lambda])
        .output()
        .expect("the demo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON report")
}

#[test]
fn the_handler_answers_through_the_emulator_and_refuses_bad_events() {
    if chapters_code::assets::model_for_tests().is_none() {
        return;
    }
    let Some(cargo_lambda) = cargo_lambda() else {
        return;
    };
    let report = demo(&["--verify", "--max-tokens", "6"], &cargo_lambda);
    assert_eq!(report["verified"], true, "{report}");
    let rows = report["tables"][0]["rows"].as_array().unwrap();
    assert!(
        rows.iter()
            .filter(|r| r["case"].as_str().unwrap().starts_with("bad:"))
            .count()
            >= 5
    );
    for row in rows {
        println!("{}: {}", row["case"], row["got"]);
    }
}

#[test]
fn cold_starts_are_measured_stage_by_stage() {
    if chapters_code::assets::model_for_tests().is_none() {
        return;
    }
    let Some(cargo_lambda) = cargo_lambda() else {
        return;
    };
    let report = demo(
        &[
            "--benchmark",
            "--cold-starts",
            "3",
            "--warm",
            "1",
            "--max-tokens",
            "2",
        ],
        &cargo_lambda,
    );
    let tables = report["tables"].as_array().unwrap();
    let cold = tables
        .iter()
        .find(|t| t["name"] == "lambda-cold-start")
        .unwrap();
    let stage = |label: &str| {
        cold["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["stage"].as_str().unwrap().contains(label))
            .map(|r| r["p50_ms"].as_f64().unwrap())
            .unwrap()
    };
    let (ready, cold_ms, map) = (stage("ready"), stage("first answer"), stage("map"));
    assert!(map > 0.0 && ready > map, "ready {ready}, map {map}");
    assert!(
        cold_ms > ready,
        "the answer after init: {cold_ms} vs {ready}"
    );
    let warm = tables.iter().find(|t| t["name"] == "lambda-warm").unwrap();
    assert_eq!(warm["rows"][0]["invocations"], 3);
}

/// Without any emulator: the handler's own validation, on events a client could send.
#[test]
fn bad_events_are_structured_errors_not_panics() {
    let Some(model) = chapters_code::assets::model_for_tests() else {
        return;
    };
    let f = Function::init(&model, 1).unwrap();
    assert!(f.init.map_ms >= 0.0 && f.init.total_ms >= f.init.validate_ms);
    for (event, mentions) in [
        (json!(null), "object"),
        (json!([1, 2]), "object"),
        (json!({}), "prompt"),
        (json!({"prompt": ""}), "empty"),
        (json!({"prompt": "Hi", "max_tokens": 0}), "max_tokens"),
        (json!({"prompt": "Hi", "max_tokens": 100000}), "max_tokens"),
        (json!({"prompt": "Hi", "top_p": -1}), "top_p"),
        (json!({"messages": "hello"}), "messages"),
        (
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            "role",
        ),
        (json!({"prompt": "Hi", "stream": true}), "stream"),
        // Token ids the model has no embedding for: refused, not an index out of bounds.
        (json!({"prompt": [1, 999_999]}), "vocabulary"),
    ] {
        let e = f.invoke(&event).expect_err(&event.to_string());
        assert_eq!(e.kind, "InvalidRequest", "{event}: {e}");
        assert!(e.message.contains(mentions), "{event}: {e}");
    }
    let ok = f
        .invoke(&json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}))
        .unwrap();
    assert_eq!(ok["object"], "chat.completion");
    assert!(ok["usage"]["completion_tokens"].as_u64().unwrap() <= 3);
}
