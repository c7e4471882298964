//! The client side of streaming: an incremental Server-Sent Events parser and a streaming
//! request that records when each piece of text arrived. The tests, `demo-streaming` and
//! `demo-throughput-bench` all read the server through this module.

use serde_json::Value;
use std::time::{Duration, Instant};

// ANCHOR: sse_parser
/// Incremental SSE parser. Bytes arrive in arbitrary pieces (a TCP read can end in the middle
/// of a line, or of a UTF-8 character); an event is complete at a blank line. Only `data:`
/// fields matter here; comment lines (`:` — keep-alives) and other fields are skipped.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line being read (not yet ended by `\n`).
    line: Vec<u8>,
    /// `data:` lines of the event being read.
    data: Vec<String>,
}

impl SseParser {
    /// Feeds bytes; returns the `data` of every event they complete, in order.
    /// An event whose data is not UTF-8 is a protocol error.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        let mut events = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(std::mem::take(&mut self.data).join("\n"));
                }
                continue;
            }
            let line =
                String::from_utf8(line).map_err(|_| "an event is not valid UTF-8".to_string())?;
            if let Some(value) = line.strip_prefix("data:") {
                self.data
                    .push(value.strip_prefix(' ').unwrap_or(value).to_string());
            }
        }
        Ok(events)
    }
}
// ANCHOR_END: sse_parser

/// One streamed completion, as a client saw it.
#[derive(Debug, Clone, Default)]
pub struct Streamed {
    /// The text of every content chunk, concatenated.
    pub text: String,
    /// When each non-empty piece of text arrived, from the moment the request was sent.
    pub arrivals: Vec<Duration>,
    /// Every chunk, parsed (without the final `[DONE]`).
    pub chunks: Vec<Value>,
    pub finish_reason: Option<String>,
    /// The usage chunk's `usage`, when one came.
    pub usage: Option<Value>,
    /// True when the stream ended with `data: [DONE]`.
    pub done: bool,
    /// The `X-Served-By` response header: which replica answered (`demo-serving-api` sends its
    /// address), when there are several behind a load balancer.
    pub served_by: Option<String>,
}

impl Streamed {
    /// Time to the first piece of text.
    pub fn ttft(&self) -> Option<Duration> {
        self.arrivals.first().copied()
    }

    /// Gaps between consecutive pieces of text.
    pub fn inter_token(&self) -> Vec<Duration> {
        self.arrivals.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

/// The text a chunk carries: `choices[0].delta.content` (chat) or `choices[0].text`.
pub fn chunk_text(chunk: &Value) -> Option<&str> {
    let choice = chunk.get("choices")?.get(0)?;
    choice
        .get("delta")
        .and_then(|d| d.get("content"))
        .or_else(|| choice.get("text"))
        .and_then(Value::as_str)
}

/// Why a streamed request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the server answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("bad stream: {0}")]
    Protocol(String),
    /// The connection broke after the response had started (a server that died mid-stream).
    #[error("the stream broke after {pieces} pieces of text: {message}")]
    Broken {
        /// The `X-Served-By` header of the response that broke.
        served_by: Option<String>,
        pieces: usize,
        message: String,
    },
}

// ANCHOR: stream_request
/// POSTs `body` (which should have `"stream": true`) to `url` and reads the event stream to
/// its end, timing every piece of text. `on_text` sees each piece as it arrives.
pub async fn stream(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    on_text: impl FnMut(&str),
) -> Result<Streamed, ClientError> {
    stream_request(client.post(url).json(body), on_text).await
}

/// [`stream`] for a request built by the caller (extra headers, a timeout).
pub async fn stream_request(
    request: reqwest::RequestBuilder,
    mut on_text: impl FnMut(&str),
) -> Result<Streamed, ClientError> {
    use futures_util::StreamExt;
    let sent = Instant::now();
    let response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(ClientError::Status {
            status: status.as_u16(),
            body,
        });
    }
    let mut parser = SseParser::default();
    let mut out = Streamed {
        served_by: response
            .headers()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        ..Streamed::default()
    };
    let mut bytes = response.bytes_stream();
    while let Some(piece) = bytes.next().await {
        let piece = piece.map_err(|e| ClientError::Broken {
            served_by: out.served_by.clone(),
            pieces: out.arrivals.len(),
            message: e.to_string(),
        })?;
        for data in parser.push(&piece).map_err(ClientError::Protocol)? {
            if data == "[DONE]" {
                out.done = true;
                continue;
            }
            let chunk: Value = serde_json::from_str(&data)
                .map_err(|e| ClientError::Protocol(format!("{e}: {data}")))?;
            if let Some(error) = chunk.get("error") {
                return Err(ClientError::Protocol(format!("error event: {error}")));
            }
            if let Some(text) = chunk_text(&chunk).filter(|t| !t.is_empty()) {
                out.arrivals.push(sent.elapsed());
                out.text.push_str(text);
                on_text(text);
            }
            if let Some(reason) = chunk
                .pointer("/choices/0/finish_reason")
                .and_then(Value::as_str)
            {
                out.finish_reason = Some(reason.to_string());
            }
            if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
                out.usage = Some(usage.clone());
            }
            out.chunks.push(chunk);
        }
    }
    Ok(out)
}
// ANCHOR_END: stream_request

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_any_split_of_the_bytes() {
        let wire = "data: {\"a\":\"é\"}\n\n: keep-alive\n\ndata: one\r\ndata: two\r\n\r\nevent: x\ndata: [DONE]\n\n";
        let bytes = wire.as_bytes();
        let whole = SseParser::default().push(bytes).unwrap();
        assert_eq!(whole, vec!["{\"a\":\"é\"}", "one\ntwo", "[DONE]"]);
        // Every split point, including inside the two-byte `é`.
        for cut in 0..=bytes.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&bytes[..cut]).unwrap();
            got.extend(p.push(&bytes[cut..]).unwrap());
            assert_eq!(got, whole, "split at byte {cut}");
        }
    }

    #[test]
    fn an_unfinished_event_is_not_emitted() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: half").unwrap().is_empty());
        assert_eq!(p.push(b"\n\n").unwrap(), vec!["half"]);
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_panic() {
        assert!(SseParser::default().push(b"data: \xff\xfe\n\n").is_err());
    }

    #[test]
    fn chunk_text_reads_chat_and_completion_chunks() {
        let chat = serde_json::json!({"choices":[{"delta":{"content":"hi"}}]});
        let cmpl = serde_json::json!({"choices":[{"text":"yo"}]});
        let role = serde_json::json!({"choices":[{"delta":{"role":"assistant"}}]});
        assert_eq!(chunk_text(&chat), Some("hi"));
        assert_eq!(chunk_text(&cmpl), Some("yo"));
        assert_eq!(chunk_text(&role), None);
    }
}
