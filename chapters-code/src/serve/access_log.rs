//! One line per request on stderr, as llama-server, vLLM and TGI print: which request, which
//! endpoint, how it ended, its tokens, time to first token and total time. Off in the tests and
//! in the demos that run a server inside their own process (`ServerConfig::log_requests`).

use std::time::Instant;

/// How a request ended, for its log line.
pub enum Outcome<'a> {
    /// Answered: HTTP 200, with the finish reason and the token counts.
    Finished {
        reason: &'a str,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// Refused or failed with an HTTP status and an error code.
    Failed { status: u16, code: &'a str },
    /// The client went away before the end.
    Cancelled,
}

/// The log line of request `id` (None: refused before it got one) on `endpoint`.
pub fn line(
    id: Option<u64>,
    endpoint: &str,
    outcome: &Outcome,
    arrived: Instant,
    first_token: Option<Instant>,
) -> String {
    let ms = |t: Instant| t.duration_since(arrived).as_secs_f64() * 1e3;
    let id = id.map_or_else(|| "-".to_string(), |id| format!("{id}"));
    let total = arrived.elapsed().as_secs_f64() * 1e3;
    let ttft = first_token.map_or_else(|| "-".to_string(), |t| format!("{:.0}ms", ms(t)));
    match outcome {
        Outcome::Finished {
            reason,
            prompt_tokens,
            completion_tokens,
        } => format!(
            "request {id} {endpoint} 200 {reason}: prompt {prompt_tokens} tokens, completion {completion_tokens} tokens, ttft {ttft}, total {total:.0}ms"
        ),
        Outcome::Failed { status, code } => {
            format!("request {id} {endpoint} {status} {code}: total {total:.0}ms")
        }
        Outcome::Cancelled => {
            format!(
                "request {id} {endpoint} cancelled (client gone): ttft {ttft}, total {total:.0}ms"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_the_request_its_end_and_its_tokens() {
        let t = Instant::now();
        let l = line(
            Some(7),
            "/v1/chat/completions",
            &Outcome::Finished {
                reason: "stop",
                prompt_tokens: 12,
                completion_tokens: 30,
            },
            t,
            Some(t),
        );
        assert!(l.starts_with("request 7 /v1/chat/completions 200 stop: prompt 12 tokens, completion 30 tokens, ttft 0ms"), "{l}");
        let l = line(
            None,
            "/v1/completions",
            &Outcome::Failed {
                status: 400,
                code: "invalid_value",
            },
            t,
            None,
        );
        assert!(
            l.starts_with("request - /v1/completions 400 invalid_value"),
            "{l}"
        );
    }
}
