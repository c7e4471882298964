//! A serverless handler: an OpenAI-style completion or chat event in, the API's completion
//! out, behind AWS's own Rust runtime (`lambda_runtime`, in `demo-lambda-handler`).
//!
//! What matters in a function is the split between the *init* phase — once per execution
//! environment: map the model file, check every tensor, build the tokenizer — and each
//! *invocation*, which must only run the model. [`Function::init`] times its own stages so that
//! a cold start can be taken apart; [`Function::invoke`] turns an event into the API's response,
//! or into a structured error for a bad event (never a panic: the environment would be torn
//! down, and the next request would pay the cold start again).

pub mod package;

use crate::formats::Gguf;
use crate::generate::{Request, default_stop_tokens, generate};
use crate::kernels::pool::ThreadPool;
use crate::model::Llama;
use crate::serve;
use crate::serve::json::{self, Envelope};
use crate::serve::request::{self, Endpoint};
use crate::tokenizer::Tokenizer;
use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Tokens an invocation generates when the event does not say (the server's default too).
pub const DEFAULT_MAX_TOKENS: usize = 64;
/// Most tokens one invocation may ask for: a function has a timeout, and an answer this long
/// already takes seconds on one vCPU.
pub const MAX_TOKENS_LIMIT: usize = 1024;

/// Where the init phase's time went, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InitTimes {
    /// Memory-mapping the GGUF file and parsing its header and tensor table.
    pub map_ms: f64,
    /// Checking every tensor the forward pass needs (shapes, types, sizes) and building views.
    pub validate_ms: f64,
    /// Building the tokenizer from the file's vocabulary and merges.
    pub tokenizer_ms: f64,
    /// The three together.
    pub total_ms: f64,
}

/// The function's state for its execution environment: built once, used by every invocation.
pub struct Function {
    // `model` borrows the mapped file, which is leaked: it lives as long as the environment.
    model: Llama<'static>,
    tokenizer: Tokenizer,
    pool: ThreadPool,
    model_id: String,
    invocations: AtomicU64,
    pub init: InitTimes,
}

/// A structured error: the Lambda runtime reports it as `errorType` and `errorMessage`.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionError {
    /// `InvalidRequest` (the event's fault) or `InternalError`.
    pub kind: &'static str,
    pub message: String,
}

impl std::fmt::Display for FunctionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for FunctionError {}

impl Function {
    // ANCHOR: init
    /// The init phase: maps `model_path` (zero-copy: the weights stay in the page cache, shared
    /// with any other process that maps them), validates it and builds the tokenizer.
    pub fn init(model_path: &Path, threads: usize) -> Result<Function, FunctionError> {
        let internal = |message: String| FunctionError {
            kind: "InternalError",
            message,
        };
        let t0 = Instant::now();
        let file = Gguf::open(model_path)
            .map_err(|e| internal(format!("{}: {e}", model_path.display())))?;
        let file: &'static Gguf = Box::leak(Box::new(file));
        let t1 = Instant::now();
        let model = Llama::load(file).map_err(|e| internal(e.to_string()))?;
        let t2 = Instant::now();
        let tokenizer = Tokenizer::from_gguf(file).map_err(|e| internal(e.to_string()))?;
        let t3 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        let model_id = model_path
            .file_stem()
            .map(|s| s.to_string_lossy().trim_end_matches(".Q4_1").to_string())
            .unwrap_or_else(|| "model".into());
        Ok(Function {
            model,
            tokenizer,
            pool: ThreadPool::new(threads.max(1)),
            model_id,
            invocations: AtomicU64::new(0),
            init: InitTimes {
                map_ms: ms(t0, t1),
                validate_ms: ms(t1, t2),
                tokenizer_ms: ms(t2, t3),
                total_ms: ms(t0, t3),
            },
        })
    }
    // ANCHOR_END: init

    // ANCHOR: invoke
    /// One invocation: `event` is the body of an OpenAI completion (`prompt`) or chat
    /// completion (`messages`) request, without streaming; the answer is the API's response.
    pub fn invoke(&self, event: &Value) -> Result<Value, FunctionError> {
        let invalid = |message: String| FunctionError {
            kind: "InvalidRequest",
            message,
        };
        let endpoint = match event {
            Value::Object(o) if o.contains_key("messages") => Endpoint::Chat,
            Value::Object(o) if o.contains_key("prompt") => Endpoint::Completions,
            Value::Object(_) => {
                return Err(invalid(
                    "the event needs `prompt` (a completion) or `messages` (a chat completion)"
                        .into(),
                ));
            }
            _ => return Err(invalid("the event must be a JSON object".into())),
        };
        let body = serde_json::to_vec(event).map_err(|e| invalid(e.to_string()))?;
        let api = request::parse(endpoint, &body).map_err(|e| {
            let body = e.body();
            invalid(
                body["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })?;
        if api.stream {
            return Err(invalid(
                "this handler answers whole completions: send `stream: false` (or none)".into(),
            ));
        }
        if let Some(model) = api.model.as_deref().filter(|m| *m != self.model_id) {
            return Err(invalid(format!(
                "this function serves `{}`, not `{model}`",
                self.model_id
            )));
        }
        let context = self.model.config.context_length;
        // The server's own checks: vocabulary, empty, room for one token at least.
        let prompt_ids = serve::prompt_ids(&self.tokenizer, &api.prompt, context - 1)
            .map_err(|e| invalid(message(&e)))?;
        let max_tokens = api.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        if max_tokens > MAX_TOKENS_LIMIT {
            return Err(invalid(format!(
                "max_tokens is {max_tokens}; this function generates at most {MAX_TOKENS_LIMIT}"
            )));
        }
        let request = Request {
            prompt_ids: prompt_ids.clone(),
            max_tokens: max_tokens.min(context - prompt_ids.len()),
            sampling: api.sampling.clone(),
            stop_tokens: if api.ignore_eos {
                Vec::new()
            } else {
                default_stop_tokens(&self.tokenizer)
            },
            stop_strings: api.stop.clone(),
        };
        let generation = generate(&self.model, &self.tokenizer, &self.pool, &request, |_| {})
            .map_err(|e| FunctionError {
                kind: "InternalError",
                message: e.to_string(),
            })?;
        let n = self.invocations.fetch_add(1, Ordering::Relaxed) + 1;
        let env = Envelope::new(endpoint, n, &self.model_id);
        let finish = crate::engine::Finish {
            reason: generation.finish_reason,
            prompt_tokens: prompt_ids.len(),
            completion_tokens: generation.generated_ids.len(),
            cached_tokens: 0,
        };
        Ok(json::response(&env, &generation.text, &finish, None))
    }
    // ANCHOR_END: invoke
}

/// An API error's message, without its HTTP status.
fn message(e: &crate::serve::errors::ApiError) -> String {
    e.body()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Milliseconds between two instants, for the logs.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
