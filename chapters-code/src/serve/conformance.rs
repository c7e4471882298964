//! The server checked the way an OpenAI client sees it: every check sends a real request over
//! HTTP and tests the answer's shape and meaning against OpenAI's API reference — fields and
//! their types, streaming framing, usage arithmetic, limits, errors by status, `type` and
//! `param`. `demo-serving-api --verify` runs it against itself; with `--output json` the
//! results become the `api-conformance` table the course's scorecard (7.4) is scored from.

use super::client;
use serde_json::{Value, json};

/// One check and its outcome.
#[derive(Debug, Clone)]
pub struct Check {
    pub area: &'static str,
    pub what: &'static str,
    pub passed: bool,
    /// What was seen when it failed (empty when it passed).
    pub detail: String,
}

struct Suite {
    checks: Vec<Check>,
}

impl Suite {
    fn check(
        &mut self,
        area: &'static str,
        what: &'static str,
        passed: bool,
        seen: impl FnOnce() -> String,
    ) {
        let detail = if passed { String::new() } else { seen() };
        eprintln!(
            "{} {area}: {what}{}",
            if passed { "ok  " } else { "FAIL" },
            if passed {
                String::new()
            } else {
                format!(" — {detail}")
            }
        );
        self.checks.push(Check {
            area,
            what,
            passed,
            detail,
        });
    }
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    match http.post(url).json(body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!({ "transport_error": e.to_string() })),
    }
}

fn usage_adds_up(v: &Value) -> bool {
    let u = &v["usage"];
    match (
        u["prompt_tokens"].as_u64(),
        u["completion_tokens"].as_u64(),
        u["total_tokens"].as_u64(),
    ) {
        (Some(p), Some(c), Some(t)) => p > 0 && p + c == t,
        _ => false,
    }
}

fn is_error(got: &(u16, Value), status: u16, param: Option<&str>) -> bool {
    let e = &got.1["error"];
    got.0 == status
        && e["message"].as_str().is_some_and(|m| !m.is_empty())
        && e["type"].is_string()
        && e["param"].as_str() == param
}

// ANCHOR: run
/// Runs every check against the server at `base` (`http://host:port`) serving `model`.
pub async fn run(base: &str, model: &str) -> Vec<Check> {
    let http = reqwest::Client::new();
    let mut s = Suite { checks: Vec::new() };
    let chat_url = format!("{base}/v1/chat/completions");
    let completions_url = format!("{base}/v1/completions");
    let show = |v: &Value| v.to_string().chars().take(300).collect::<String>();

    let health = http.get(format!("{base}/health")).send().await;
    s.check(
        "health",
        "GET /health answers 200",
        health.is_ok_and(|r| r.status() == 200),
        || "no 200".into(),
    );

    let models: Value = match http.get(format!("{base}/v1/models")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    s.check(
        "models",
        "GET /v1/models is a list naming the served model",
        models["object"] == "list"
            && models["data"][0]["id"] == model
            && models["data"][0]["object"] == "model",
        || show(&models),
    );

    let chat = json!({ "model": model, "messages": [{"role": "user", "content": "What is the capital of France?"}],
                       "max_tokens": 16, "temperature": 0 });
    let (status, plain) = post(&http, &chat_url, &chat).await;
    let text = plain
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    s.check(
        "chat",
        "a chat completion has OpenAI's fields: id chatcmpl-…, object, created, model, one choice with the assistant's message and a finish reason",
        status == 200
            && plain["id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-"))
            && plain["object"] == "chat.completion"
            && plain["created"].is_u64()
            && plain["model"] == model
            && plain["choices"].as_array().is_some_and(|c| c.len() == 1)
            && plain["choices"][0]["index"] == 0
            && plain["choices"][0]["message"]["role"] == "assistant"
            && !text.is_empty()
            && matches!(plain["choices"][0]["finish_reason"].as_str(), Some("stop" | "length")),
        || show(&plain),
    );
    s.check(
        "chat",
        "usage: prompt + completion = total tokens",
        usage_adds_up(&plain),
        || show(&plain["usage"]),
    );

    let mut streamed_body = chat.clone();
    streamed_body["stream"] = json!(true);
    streamed_body["stream_options"] = json!({ "include_usage": true });
    let streamed = client::stream(&http, &chat_url, &streamed_body, |_| {}).await;
    match streamed {
        Ok(st) => {
            s.check(
                "streaming",
                "a stream ends with data: [DONE]",
                st.done,
                || "no [DONE]".into(),
            );
            s.check(
                "streaming",
                "the streamed text equals the plain answer (greedy)",
                st.text == text,
                || format!("{:?} vs {:?}", st.text, text),
            );
            s.check(
                "streaming",
                "every chunk is a chat.completion.chunk with one id; the first carries the assistant role",
                !st.chunks.is_empty()
                    && st.chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == st.chunks[0]["id"])
                    && st.chunks[0]["choices"][0]["delta"]["role"] == "assistant",
                || show(&Value::Array(st.chunks.iter().take(2).cloned().collect())),
            );
            s.check(
                "streaming",
                "include_usage: a last chunk carries usage, with empty choices",
                st.usage
                    .as_ref()
                    .is_some_and(|u| usage_adds_up(&json!({ "usage": u }))),
                || format!("{:?}", st.usage),
            );
            s.check(
                "streaming",
                "the finish reason arrives in the stream",
                st.finish_reason.as_deref() == plain["choices"][0]["finish_reason"].as_str(),
                || format!("{:?}", st.finish_reason),
            );
        }
        Err(e) => s.check("streaming", "a stream can be read", false, || e.to_string()),
    }

    let completion = json!({ "model": model, "prompt": "The capital of France is", "max_tokens": 3, "temperature": 0, "ignore_eos": true });
    let (status, c) = post(&http, &completions_url, &completion).await;
    s.check(
        "completions",
        "a completion has object text_completion, id cmpl-…, choices[0].text",
        status == 200
            && c["object"] == "text_completion"
            && c["id"].as_str().is_some_and(|id| id.starts_with("cmpl-"))
            && c["choices"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty()),
        || show(&c),
    );
    s.check(
        "completions",
        "max_tokens is obeyed: exactly 3 tokens, finish reason length",
        c["usage"]["completion_tokens"] == 3 && c["choices"][0]["finish_reason"] == "length",
        || show(&c),
    );

    // A stop string taken from the answer itself (its second word, or a piece of its second
    // half), so it is certain to occur; the same request with it must give exactly the text
    // before its first occurrence.
    let stop = text
        .split_whitespace()
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| {
            text.chars()
                .skip(text.chars().count() / 2)
                .take(2)
                .collect()
        });
    let expected = text.find(stop.as_str()).map(|at| &text[..at]);
    let mut stopped = chat.clone();
    stopped["stop"] = json!([stop]);
    let (_, st) = post(&http, &chat_url, &stopped).await;
    let cut = st
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str);
    s.check(
        "stop",
        "a stop string ends the answer just before it, with finish reason stop",
        !stop.is_empty()
            && expected.is_some()
            && cut == expected
            && st["choices"][0]["finish_reason"] == "stop",
        || format!("stop {stop:?}, expected {expected:?}: {}", show(&st)),
    );

    let mut lp = chat.clone();
    lp["logprobs"] = json!(true);
    lp["top_logprobs"] = json!(3);
    lp["max_tokens"] = json!(4);
    let (_, l) = post(&http, &chat_url, &lp).await;
    let content = l
        .pointer("/choices/0/logprobs/content")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    s.check(
        "logprobs",
        "chat logprobs: one entry per token, each with token, logprob ≤ 0, bytes and 3 top_logprobs",
        !content.is_empty()
            && content.iter().all(|t| {
                t["token"].is_string()
                    && t["logprob"].as_f64().is_some_and(|p| p <= 0.0)
                    && t["bytes"].is_array()
                    && t["top_logprobs"].as_array().is_some_and(|a| a.len() == 3)
            }),
        || show(&l),
    );

    let mut seeded = chat.clone();
    seeded["temperature"] = json!(0.9);
    seeded["seed"] = json!(7);
    let (_, a) = post(&http, &chat_url, &seeded).await;
    let (_, b) = post(&http, &chat_url, &seeded).await;
    s.check(
        "seed",
        "the same seed gives the same sampled answer",
        a.pointer("/choices/0/message/content").is_some() && a["choices"] == b["choices"],
        || format!("{} / {}", show(&a), show(&b)),
    );

    let errors: [(&str, Value, u16, Option<&str>); 5] = [
        (
            "an empty messages list is a 400 naming `messages`",
            json!({ "messages": [] }),
            400,
            Some("messages"),
        ),
        (
            "a temperature out of range is a 400 naming it",
            json!({ "messages": [{"role": "user", "content": "hi"}], "temperature": 5 }),
            400,
            Some("temperature"),
        ),
        (
            "another model is a 404 naming `model`",
            json!({ "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}] }),
            404,
            Some("model"),
        ),
        (
            "tools (not supported) are a 400 naming `tools`",
            json!({ "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}] }),
            400,
            Some("tools"),
        ),
        (
            "JSON mode (not supported) is a 400 naming `response_format`",
            json!({ "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"} }),
            400,
            Some("response_format"),
        ),
    ];
    for (what, body, status, param) in errors {
        let got = post(&http, &chat_url, &body).await;
        s.check("errors", what, is_error(&got, status, param), || {
            format!("{} {}", got.0, show(&got.1))
        });
    }
    let bad_json = match http
        .post(&chat_url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    };
    s.check(
        "errors",
        "a body that is not JSON is a 400 in OpenAI's error shape",
        is_error(&bad_json, 400, None),
        || show(&bad_json.1),
    );
    let nowhere = post(&http, &format!("{base}/v1/nothing"), &json!({})).await;
    s.check(
        "errors",
        "an unknown route is a 404 in OpenAI's error shape",
        is_error(&nowhere, 404, None),
        || show(&nowhere.1),
    );
    s.checks
}
// ANCHOR_END: run
