//! The response bodies and stream chunks of OpenAI's completions and chat completions APIs.

use super::request::Endpoint;
use crate::engine::{Finish, TokenLogprob};
use crate::generate::FinishReason;
use crate::tokenizer::Tokenizer;
use serde_json::{Value, json};

/// What every response and chunk of one request shares.
pub struct Envelope {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Envelope {
    pub fn new(endpoint: Endpoint, request_id: u64, model: &str) -> Envelope {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let prefix = match endpoint {
            Endpoint::Completions => "cmpl",
            Endpoint::Chat => "chatcmpl",
        };
        Envelope {
            endpoint,
            id: format!("{prefix}-{request_id:016x}"),
            created,
            model: model.to_string(),
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Completions, _) => "text_completion",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
        }
    }

    fn base(&self, chunk: bool, choices: Value) -> Value {
        json!({ "id": self.id, "object": self.object(chunk), "created": self.created, "model": self.model, "choices": choices })
    }
}

/// OpenAI's name of a finish reason.
pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::Timeout => "length",
        // Only the CLI's chat interrupts; a server client that goes away gets no answer at all.
        FinishReason::Interrupted => "stop",
    }
}

pub fn usage(f: &Finish) -> Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens,
        "total_tokens": f.prompt_tokens + f.completion_tokens,
        "prompt_tokens_details": { "cached_tokens": f.cached_tokens },
    })
}

/// How a token is named in log-probabilities: its text when its bytes are UTF-8 on their own,
/// else `bytes:\xf0\x9f` (OpenAI's spelling), so that the lone bytes emoji and CJK text are
/// made of keep distinct names. (Lossy text would name them all U+FFFD, and the completions
/// endpoint's `top_logprobs`, a map keyed by name, would keep one of them.)
pub fn token_label(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => bytes.iter().fold(String::from("bytes:"), |mut s, b| {
            s.push_str(&format!("\\x{b:02x}"));
            s
        }),
    }
}

/// A token's name for log-probabilities ([`token_label`]) and its exact bytes.
fn token_text(tokenizer: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tokenizer.token_bytes(id, true);
    (token_label(&bytes), bytes)
}

/// Log-probabilities of some tokens, in the endpoint's format.
pub fn logprobs(
    endpoint: Endpoint,
    tokenizer: &Tokenizer,
    items: &[TokenLogprob],
    text_offset: usize,
) -> Value {
    match endpoint {
        Endpoint::Chat => {
            let content: Vec<Value> = items
                .iter()
                .map(|lp| {
                    let (token, bytes) = token_text(tokenizer, lp.token);
                    let top: Vec<Value> = lp
                        .top
                        .iter()
                        .map(|&(t, l)| {
                            let (token, bytes) = token_text(tokenizer, t);
                            json!({ "token": token, "logprob": l, "bytes": bytes })
                        })
                        .collect();
                    json!({ "token": token, "logprob": lp.logprob, "bytes": bytes, "top_logprobs": top })
                })
                .collect();
            json!({ "content": content })
        }
        Endpoint::Completions => {
            let mut tokens = Vec::new();
            let mut token_logprobs = Vec::new();
            let mut top = Vec::new();
            let mut offsets = Vec::new();
            let mut offset = text_offset;
            for lp in items {
                // Offsets count the bytes of the text, which a token's name need not spell.
                let (name, bytes) = token_text(tokenizer, lp.token);
                offsets.push(offset);
                offset += bytes.len();
                tokens.push(name);
                token_logprobs.push(lp.logprob);
                let alternatives: serde_json::Map<String, Value> = lp
                    .top
                    .iter()
                    .map(|&(t, l)| (token_text(tokenizer, t).0, json!(l)))
                    .collect();
                top.push(Value::Object(alternatives));
            }
            json!({ "tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets })
        }
    }
}

// ANCHOR: response
/// The body of a non-streamed response.
pub fn response(env: &Envelope, text: &str, finish: &Finish, logprobs: Option<Value>) -> Value {
    let reason = finish_reason(finish.reason);
    let choice = match env.endpoint {
        Endpoint::Completions => {
            json!({ "index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason })
        }
        Endpoint::Chat => json!({
            "index": 0,
            "message": { "role": "assistant", "content": text },
            "logprobs": logprobs,
            "finish_reason": reason,
        }),
    };
    let mut body = env.base(false, json!([choice]));
    body["usage"] = usage(finish);
    body
}
// ANCHOR_END: response

// ANCHOR: chunks
/// A stream chunk carrying `text` (and, for chat, the assistant role in the first chunk).
pub fn text_chunk(
    env: &Envelope,
    text: &str,
    first: bool,
    logprobs: Option<Value>,
    with_usage_field: bool,
) -> Value {
    let choice = match env.endpoint {
        Endpoint::Completions => {
            json!({ "index": 0, "text": text, "logprobs": logprobs, "finish_reason": null })
        }
        Endpoint::Chat => {
            let delta = if first {
                json!({ "role": "assistant", "content": text })
            } else {
                json!({ "content": text })
            };
            json!({ "index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": null })
        }
    };
    let mut chunk = env.base(true, json!([choice]));
    if with_usage_field {
        chunk["usage"] = Value::Null;
    }
    chunk
}

/// The chunk that closes the choice with its finish reason.
pub fn final_chunk(env: &Envelope, finish: &Finish, with_usage_field: bool) -> Value {
    let reason = finish_reason(finish.reason);
    let choice = match env.endpoint {
        Endpoint::Completions => {
            json!({ "index": 0, "text": "", "logprobs": null, "finish_reason": reason })
        }
        Endpoint::Chat => {
            json!({ "index": 0, "delta": {}, "logprobs": null, "finish_reason": reason })
        }
    };
    let mut chunk = env.base(true, json!([choice]));
    if with_usage_field {
        chunk["usage"] = Value::Null;
    }
    chunk
}

/// The usage chunk sent after the final one when `stream_options.include_usage` is set.
pub fn usage_chunk(env: &Envelope, finish: &Finish) -> Value {
    let mut chunk = env.base(true, json!([]));
    chunk["usage"] = usage(finish);
    chunk
}
// ANCHOR_END: chunks

#[cfg(test)]
mod tests {
    use super::token_label;

    #[test]
    fn lone_bytes_keep_distinct_names_and_text_keeps_its_own() {
        assert_eq!(token_label(b" Paris"), " Paris");
        assert_eq!(token_label("é".as_bytes()), "é");
        assert_eq!(token_label(&[0xf0]), "bytes:\\xf0");
        assert_eq!(token_label(&[0xf0, 0x9f]), "bytes:\\xf0\\x9f");
        assert_ne!(token_label(&[0xf0]), token_label(&[0xf1]));
    }
}
