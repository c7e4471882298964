//! Reading an OpenAI request: the body is parsed as JSON, then every honored field is read
//! with its own type and range check, so that an error names the field at fault. Unknown
//! fields are ignored, as OpenAI's API does; known fields this server does not implement
//! (`tools`, `response_format` beyond text, `logit_bias`) are refused by name, as vLLM refuses
//! what it lacks, so that a client asking for JSON never gets free text with a 200.

use super::errors::ApiError;
use crate::sampling::SamplingParams;
use crate::tokenizer::ChatMessage;
use serde_json::{Map, Value};

/// Which endpoint a request came to (and which one the load generator calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `/v1/completions` with a `prompt`.
    Completions,
    /// `/v1/chat/completions` with messages (the chat template adds its tokens).
    Chat,
}

impl Endpoint {
    /// The path the endpoint is served at.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
    Messages(Vec<ChatMessage>),
}

// ANCHOR: api_request
/// A validated request.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub endpoint: Endpoint,
    pub model: Option<String>,
    pub prompt: Prompt,
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Log-probabilities: `Some(k)` = the chosen token's plus the `k` most likely.
    pub logprobs: Option<usize>,
    /// Keep generating past end-of-sequence (vLLM's and llama-server's extension), so that a
    /// benchmark gets exactly `max_tokens` from every request.
    pub ignore_eos: bool,
}
// ANCHOR_END: api_request

/// Stop strings per request, at most (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;
/// Longest stop string, in bytes: the stop matcher holds back up to this much text and scans
/// it for every token, so its length bounds the engine thread's work per token.
pub const MAX_STOP_BYTES: usize = 256;

/// Field readers over the request object: absent and `null` are the same.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn number(&self, key: &str) -> Result<Option<f64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| ApiError::invalid(key, format!("`{key}` must be a number"))),
        }
    }

    fn integer(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::invalid(key, format!("`{key}` must be an integer"))),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| ApiError::invalid(key, format!("`{key}` must be true or false"))),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| ApiError::invalid(key, format!("`{key}` must be a string"))),
        }
    }

    /// A number in `range`, or the default.
    fn in_range(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<f64>,
        default: f64,
    ) -> Result<f32, ApiError> {
        let v = self.number(key)?.unwrap_or(default);
        if !range.contains(&v) {
            return Err(ApiError::invalid(
                key,
                format!(
                    "`{key}` is {v}; it must be between {} and {}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(v as f32)
    }
}

// ANCHOR: parse
/// Parses and validates a request body for `endpoint`.
pub fn parse(endpoint: Endpoint, body: &[u8]) -> Result<ApiRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_json(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(ApiError::bad_json("the body must be a JSON object"));
    };
    let f = Fields(&object);

    if let Some(n) = f.integer("n")?
        && n != 1
    {
        return Err(ApiError::invalid(
            "n",
            format!("`n` is {n}; this server generates one choice per request (n = 1)"),
        ));
    }
    if let Some(b) = f.integer("best_of")?
        && b != 1
    {
        return Err(ApiError::invalid("best_of", "`best_of` must be 1"));
    }
    if f.boolean("echo")? == Some(true) {
        return Err(ApiError::invalid("echo", "`echo` is not supported"));
    }
    if f.get("suffix").is_some() {
        return Err(ApiError::invalid("suffix", "`suffix` is not supported"));
    }

    let prompt = match endpoint {
        Endpoint::Completions => parse_prompt(f.get("prompt"))?,
        Endpoint::Chat => Prompt::Messages(parse_messages(f.get("messages"))?),
    };

    // max_completion_tokens is the newer name of max_tokens in the chat API.
    let max_tokens = match f
        .integer("max_completion_tokens")?
        .or(f.integer("max_tokens")?)
    {
        None => None,
        Some(n) if n >= 1 => Some(n as usize),
        Some(n) => {
            let key = if f.get("max_completion_tokens").is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(ApiError::invalid(
                key,
                format!("`{key}` is {n}; it must be at least 1"),
            ));
        }
    };

    let top_k = match f.integer("top_k")? {
        None => 0,
        Some(k) if k >= 0 => k as usize,
        Some(k) => {
            return Err(ApiError::invalid(
                "top_k",
                format!("`top_k` is {k}; it must be 0 (off) or more"),
            ));
        }
    };
    let seed = match f.get("seed") {
        None => rand_seed(),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_i64().map(|s| s as u64))
            .ok_or_else(|| ApiError::invalid("seed", "`seed` must be an integer"))?,
    };
    let sampling = SamplingParams {
        temperature: f.in_range("temperature", 0.0..=2.0, 1.0)?,
        top_p: f.in_range("top_p", 0.0..=1.0, 1.0)?.max(f32::MIN_POSITIVE),
        top_k,
        min_p: f.in_range("min_p", 0.0..=1.0, 0.0)?,
        presence_penalty: f.in_range("presence_penalty", -2.0..=2.0, 0.0)?,
        frequency_penalty: f.in_range("frequency_penalty", -2.0..=2.0, 0.0)?,
        seed,
        ..SamplingParams::default()
    };

    let stop = parse_stop(f.get("stop"))?;
    refuse_unsupported(&f)?;

    let stream = f.boolean("stream")?.unwrap_or(false);
    let include_usage = match f.get("stream_options") {
        None => false,
        Some(Value::Object(o)) => Fields(o)
            .boolean("include_usage")
            .map_err(|_| {
                ApiError::invalid(
                    "stream_options",
                    "`stream_options.include_usage` must be true or false",
                )
            })?
            .unwrap_or(false),
        Some(_) => {
            return Err(ApiError::invalid(
                "stream_options",
                "`stream_options` must be an object",
            ));
        }
    };

    // Completions: `logprobs` is the number of alternatives (0..=5). Chat: `logprobs` is a
    // boolean and `top_logprobs` the number (0..=20).
    let logprobs = match endpoint {
        Endpoint::Completions => match f.integer("logprobs")? {
            None => None,
            Some(k @ 0..=5) => Some(k as usize),
            Some(k) => {
                return Err(ApiError::invalid(
                    "logprobs",
                    format!("`logprobs` is {k}; it must be between 0 and 5"),
                ));
            }
        },
        Endpoint::Chat => {
            let top = match f.integer("top_logprobs")? {
                None => 0,
                Some(k @ 0..=20) => k as usize,
                Some(k) => {
                    return Err(ApiError::invalid(
                        "top_logprobs",
                        format!("`top_logprobs` is {k}; it must be between 0 and 20"),
                    ));
                }
            };
            match f.boolean("logprobs")? {
                Some(true) => Some(top),
                _ if f.get("top_logprobs").is_some() => {
                    return Err(ApiError::invalid(
                        "top_logprobs",
                        "`top_logprobs` needs `logprobs: true`",
                    ));
                }
                _ => None,
            }
        }
    };

    Ok(ApiRequest {
        endpoint,
        model: f.string("model")?,
        prompt,
        max_tokens,
        sampling,
        stop,
        stream,
        include_usage,
        logprobs,
        ignore_eos: f.boolean("ignore_eos")?.unwrap_or(false),
    })
}
// ANCHOR_END: parse

/// `stop`: a string or a list of at most [`MAX_STOP_STRINGS`], each at most [`MAX_STOP_BYTES`].
fn parse_stop(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let bad = || ApiError::invalid("stop", "`stop` must be a string or a list of strings");
    let stops = match value {
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(bad)?,
        Some(_) => return Err(bad()),
    };
    if stops.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "`stop` has {} strings; it takes at most {MAX_STOP_STRINGS}",
                stops.len()
            ),
        ));
    }
    if let Some(long) = stops.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "a stop string of {} bytes is too long; each may have at most {MAX_STOP_BYTES}",
                long.len()
            ),
        ));
    }
    Ok(stops)
}

// ANCHOR: refuse_unsupported
/// Fields of OpenAI's API this server does not implement: a 400 naming the field, never a
/// silent 200. Their harmless values pass: no tools, `tool_choice: "none"`,
/// `response_format: {"type": "text"}`, an empty `logit_bias`.
fn refuse_unsupported(f: &Fields) -> Result<(), ApiError> {
    let unsupported = |param: &str, what: &str| {
        Err(ApiError::invalid(
            param,
            format!("{what} is not supported by this server"),
        ))
    };
    match f.get("tools") {
        Some(Value::Array(tools)) if tools.is_empty() => {}
        Some(_) => return unsupported("tools", "tool calling (`tools`)"),
        None => {}
    }
    match f.get("tool_choice") {
        Some(Value::String(s)) if s == "none" => {}
        Some(_) => return unsupported("tool_choice", "tool calling (`tool_choice`)"),
        None => {}
    }
    for legacy in ["functions", "function_call"] {
        if f.get(legacy).is_some() {
            return unsupported(legacy, "function calling");
        }
    }
    if let Some(format) = f.get("response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some(other) => {
                return unsupported(
                    "response_format",
                    &format!("`response_format` of type `{other}` (only `text`)"),
                );
            }
            None => {
                return Err(ApiError::invalid(
                    "response_format",
                    "`response_format` must be an object with a `type`",
                ));
            }
        }
    }
    match f.get("logit_bias") {
        Some(Value::Object(bias)) if bias.is_empty() => {}
        Some(_) => return unsupported("logit_bias", "`logit_bias`"),
        None => {}
    }
    Ok(())
}
// ANCHOR_END: refuse_unsupported

/// A seed for requests that give none (OpenAI's default is not deterministic either).
fn rand_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (std::process::id() as u64).rotate_left(32)
}

/// `prompt`: a string, a one-string list, or a list of token ids.
fn parse_prompt(value: Option<&Value>) -> Result<Prompt, ApiError> {
    let bad = || {
        ApiError::invalid(
            "prompt",
            "`prompt` must be a string, a list with one string, or a list of token ids",
        )
    };
    match value {
        None => Err(ApiError::invalid("prompt", "`prompt` is required")),
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => Ok(Prompt::Text(
            items[0].as_str().unwrap_or_default().to_string(),
        )),
        Some(Value::Array(items)) if items.iter().all(Value::is_u64) && !items.is_empty() => {
            let ids: Option<Vec<u32>> = items
                .iter()
                .map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok()))
                .collect();
            ids.map(Prompt::Tokens).ok_or_else(bad)
        }
        Some(Value::Array(items)) if items.len() > 1 && items.iter().all(Value::is_string) => {
            Err(ApiError::invalid(
                "prompt",
                "one prompt per request: a list of several prompts is not supported",
            ))
        }
        Some(_) => Err(bad()),
    }
}

/// `messages`: a non-empty list of `{role, content}`; content a string or a list of text parts.
fn parse_messages(value: Option<&Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(Value::Array(items)) = value else {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must be a list of messages",
        ));
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty",
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let param = format!("messages[{i}]");
            let obj = m.as_object().ok_or_else(|| {
                ApiError::invalid(
                    &param,
                    "a message must be an object with `role` and `content`",
                )
            })?;
            let role = match obj.get("role").and_then(Value::as_str) {
                Some(r @ ("system" | "user" | "assistant")) => r,
                Some("developer") => "system",
                Some(other) => {
                    return Err(ApiError::invalid(
                        &format!("{param}.role"),
                        format!("role `{other}` is not supported (system, user, assistant)"),
                    ));
                }
                None => {
                    return Err(ApiError::invalid(
                        &format!("{param}.role"),
                        "`role` is required",
                    ));
                }
            };
            let content = match obj.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let texts: Option<Vec<&str>> = parts
                        .iter()
                        .map(|p| {
                            (p.get("type").and_then(Value::as_str) == Some("text"))
                                .then(|| p.get("text").and_then(Value::as_str))
                                .flatten()
                        })
                        .collect();
                    texts
                        .ok_or_else(|| {
                            ApiError::invalid(
                                &format!("{param}.content"),
                                "only text content parts are supported",
                            )
                        })?
                        .concat()
                }
                // Only an assistant turn may come without content (OpenAI: when it made tool calls).
                Some(Value::Null) | None if role == "assistant" => String::new(),
                Some(Value::Null) | None => {
                    return Err(ApiError::invalid(
                        &format!("{param}.content"),
                        "`content` is required",
                    ));
                }
                Some(_) => {
                    return Err(ApiError::invalid(
                        &format!("{param}.content"),
                        "`content` must be a string or a list of text parts",
                    ));
                }
            };
            Ok(ChatMessage::new(role, &content))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(body: &str) -> Result<ApiRequest, ApiError> {
        parse(Endpoint::Chat, body.as_bytes())
    }

    #[test]
    fn a_full_chat_request_is_read() {
        let r = chat(r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}],
            "max_completion_tokens":7,"temperature":0,"top_p":0.5,"top_k":4,"min_p":0.1,"seed":3,"stop":["\n"],
            "presence_penalty":0.5,"frequency_penalty":-0.5,"stream":true,"stream_options":{"include_usage":true},
            "logprobs":true,"top_logprobs":2,"n":1,"user":"x","unknown_field":[1,2]}"#).unwrap();
        assert_eq!(
            r.prompt,
            Prompt::Messages(vec![
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Hi")
            ])
        );
        assert_eq!(
            (r.max_tokens, r.stream, r.include_usage, r.logprobs),
            (Some(7), true, true, Some(2))
        );
        assert_eq!(
            (r.sampling.temperature, r.sampling.top_k, r.sampling.seed),
            (0.0, 4, 3)
        );
        assert_eq!(r.stop, vec!["\n"]);
    }

    #[test]
    fn completions_take_a_string_a_list_or_token_ids() {
        let p = |body: &str| parse(Endpoint::Completions, body.as_bytes()).map(|r| r.prompt);
        assert_eq!(p(r#"{"prompt":"a"}"#), Ok(Prompt::Text("a".into())));
        assert_eq!(p(r#"{"prompt":["a"]}"#), Ok(Prompt::Text("a".into())));
        assert_eq!(
            p(r#"{"prompt":[1,2,3]}"#),
            Ok(Prompt::Tokens(vec![1, 2, 3]))
        );
        assert_eq!(
            p(r#"{"prompt":["a","b"]}"#).unwrap_err().param.as_deref(),
            Some("prompt")
        );
        assert_eq!(
            p(r#"{"prompt":5}"#).unwrap_err().param.as_deref(),
            Some("prompt")
        );
        assert_eq!(p(r#"{}"#).unwrap_err().param.as_deref(), Some("prompt"));
    }

    #[test]
    fn every_bad_value_names_its_field() {
        let cases = [
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                "temperature",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
                "temperature",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"top_p":1.5}"#,
                "top_p",
            ),
            (r#"{"messages":[{"role":"user","content":"x"}],"n":2}"#, "n"),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                "max_tokens",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"stop":[1]}"#,
                "stop",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"top_logprobs":3}"#,
                "top_logprobs",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"frequency_penalty":5}"#,
                "frequency_penalty",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"seed":"x"}"#,
                "seed",
            ),
            (
                r#"{"messages":[{"role":"robot","content":"x"}]}"#,
                "messages[0].role",
            ),
            (r#"{"messages":[{"role":"user"}]}"#, "messages[0].content"),
            (r#"{"messages":[]}"#, "messages"),
            (r#"{"messages":"hi"}"#, "messages"),
        ];
        for (body, param) in cases {
            let err = chat(body).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{body}");
            assert_eq!(err.status, 400);
        }
    }

    #[test]
    fn unsupported_fields_are_refused_by_name_and_their_harmless_values_pass() {
        let with = |extra: &str| {
            chat(&format!(
                r#"{{"messages":[{{"role":"user","content":"x"}}],{extra}}}"#
            ))
        };
        let tool = r#"[{"type":"function","function":{"name":"f","parameters":{}}}]"#;
        let refused = [
            (format!(r#""tools":{tool}"#), "tools"),
            (r#""tool_choice":"auto""#.to_string(), "tool_choice"),
            (
                r#""tool_choice":{"type":"function","function":{"name":"f"}}"#.to_string(),
                "tool_choice",
            ),
            (r#""functions":[{"name":"f"}]"#.to_string(), "functions"),
            (
                r#""response_format":{"type":"json_object"}"#.to_string(),
                "response_format",
            ),
            (
                r#""response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{}}}"#
                    .to_string(),
                "response_format",
            ),
            (r#""response_format":"json""#.to_string(), "response_format"),
            (r#""logit_bias":{"1234":100}"#.to_string(), "logit_bias"),
        ];
        for (extra, param) in refused {
            let err = with(&extra).unwrap_err();
            assert_eq!(
                (err.status.as_u16(), err.param.as_deref()),
                (400, Some(param)),
                "{extra}"
            );
        }
        for harmless in [
            r#""tools":[]"#,
            r#""tool_choice":"none""#,
            r#""response_format":{"type":"text"}"#,
            r#""logit_bias":{}"#,
            r#""logit_bias":null"#,
        ] {
            assert!(with(harmless).is_ok(), "{harmless}");
        }
        let completion = parse(
            Endpoint::Completions,
            br#"{"prompt":"x","logit_bias":{"5":-100}}"#,
        );
        assert_eq!(completion.unwrap_err().param.as_deref(), Some("logit_bias"));
    }

    #[test]
    fn stop_strings_are_bounded_in_count_and_length() {
        let stops = |v: Value| {
            chat(&json!({"messages":[{"role":"user","content":"x"}], "stop": v}).to_string())
        };
        assert!(stops(json!(vec!["a"; MAX_STOP_STRINGS])).is_ok());
        assert!(stops(json!("s".repeat(MAX_STOP_BYTES))).is_ok());
        let too_many = stops(json!(vec!["a"; MAX_STOP_STRINGS + 1])).unwrap_err();
        assert_eq!(too_many.param.as_deref(), Some("stop"));
        let too_long = stops(json!(["ok", "s".repeat(MAX_STOP_BYTES + 1)])).unwrap_err();
        assert_eq!(
            (too_long.status.as_u16(), too_long.param.as_deref()),
            (400, Some("stop"))
        );
        assert!(
            too_long.message.contains("at most 256"),
            "{}",
            too_long.message
        );
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_refused() {
        assert_eq!(chat("{not json").unwrap_err().code, Some("invalid_json"));
        assert_eq!(chat("[1,2]").unwrap_err().code, Some("invalid_json"));
    }
}
