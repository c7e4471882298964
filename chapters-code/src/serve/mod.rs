//! An OpenAI-compatible HTTP server over the engine: completions and chat completions, plain
//! or streamed as Server-Sent Events, models, health and Prometheus metrics; errors in
//! OpenAI's shape; cancellation when a client leaves; graceful shutdown.

pub mod access_log;
pub mod browser;
pub mod client;
pub mod conformance;
pub mod errors;
pub mod json;
pub mod loadgen;
pub mod metrics;
pub mod openloop;
pub mod request;

use crate::engine::profile::Stage;
use crate::engine::{Event, Finish, RequestId, Runner, SubmitError, TokenLogprob};
use crate::generate::{FinishReason, Request, default_stop_tokens};
use crate::tokenizer::{TokenId, Tokenizer};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use errors::ApiError;
use json::Envelope;
use metrics::Metrics;
use request::{ApiRequest, Endpoint, Prompt};
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model id clients name in `model` (requests naming another get 404).
    pub model_id: String,
    /// Largest request body, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Longest a request may run (then 504, or an error event when streaming).
    pub request_timeout: Duration,
    /// One line per request on stderr (`access_log`): on for the server binary, off for the
    /// tests and the demos that start a server in their own process.
    pub log_requests: bool,
}

/// What every handler shares.
pub struct AppState {
    pub runner: Arc<Runner>,
    pub tokenizer: Arc<Tokenizer>,
    pub metrics: Arc<Metrics>,
    pub config: ServerConfig,
    pub context_length: usize,
    pub created: u64,
}

// ANCHOR: router
/// The routes of the API; anything else is a 404 in OpenAI's error shape.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(chat_page))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        // What SGLang's router (sgl-model-gateway) asks a worker when it registers it: the
        // served model's name (it stamps it on requests that name none) and its kind.
        .route("/server_info", get(server_info))
        .route("/model_info", get(model_info))
        .fallback(not_found)
        .with_state(state)
}
// ANCHOR_END: router

/// The chat page (`serve/ui/chat.html`): one file, no build step, talking to
/// `/v1/chat/completions` with streaming like any other client.
async fn chat_page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("ui/chat.html"),
    )
        .into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(
        format!("no route for {method} {}", uri.path()),
        None,
        "unknown_route",
    )
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{ "id": s.config.model_id, "object": "model", "created": s.created, "owned_by": "prodml" }],
    }))
    .into_response()
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    if s.runner.is_shutting_down() {
        return ApiError::shutting_down().into_response();
    }
    let stats = s.runner.stats();
    axum::Json(json!({ "status": "ok", "queue": stats.waiting, "running": stats.running }))
        .into_response()
}

async fn server_info(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(json!({
        "model_path": s.config.model_id,
        "served_model_name": s.config.model_id,
        "max_total_tokens": s.context_length,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn model_info(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(json!({
        "model_path": s.config.model_id,
        "is_generation": true,
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
    }))
    .into_response()
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> Response {
    let text = s.metrics.render(&s.runner.stats()) + &s.runner.profile.prometheus();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn completions(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    generate_endpoint(s, Endpoint::Completions, headers, body).await
}

async fn chat_completions(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    generate_endpoint(s, Endpoint::Chat, headers, body).await
}

/// Reads the body up to the limit (413 beyond it).
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit))
}

// ANCHOR: generate_endpoint
/// Both generation endpoints: validate, tokenize, submit to the engine, then answer with one
/// JSON body or a stream of events.
async fn generate_endpoint(
    s: Arc<AppState>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let arrived = Instant::now();
    let prepared = async {
        if s.runner.is_shutting_down() {
            return Err(ApiError::shutting_down());
        }
        let bytes = read_body(&headers, body, s.config.max_body_bytes).await?;
        let api = request::parse(endpoint, &bytes)?;
        if let Some(model) = &api.model
            && model != &s.config.model_id
        {
            return Err(ApiError::not_found(
                format!(
                    "the model `{model}` does not exist; this server serves `{}`",
                    s.config.model_id
                ),
                Some("model"),
                "model_not_found",
            ));
        }
        let engine_request = to_engine_request(&s, &api).await?;
        let (id, events) = s
            .runner
            .submit(engine_request, api.logprobs, Some(s.config.request_timeout))
            .map_err(|e| match e {
                SubmitError::QueueFull(_) => ApiError::queue_full(e.to_string()),
                SubmitError::ShuttingDown => ApiError::shutting_down(),
                SubmitError::Invalid(m) => ApiError::invalid("prompt", m),
            })?;
        Ok((api, id, events))
    }
    .await;
    let (api, id, events) = match prepared {
        Ok(p) => p,
        Err(e) => {
            s.metrics.outcome("failure", e.reason());
            if s.config.log_requests {
                let outcome = access_log::Outcome::Failed {
                    status: e.status.as_u16(),
                    code: e.reason(),
                };
                eprintln!(
                    "{}",
                    access_log::line(None, endpoint.path(), &outcome, arrived, None)
                );
            }
            return e.into_response();
        }
    };
    let guard = Guard {
        state: Arc::clone(&s),
        id,
        endpoint: endpoint.path(),
        arrived,
        first_token: None,
        last_token: None,
        done: false,
    };
    if api.stream {
        let mut response = stream_response(s, api, id, events, guard).into_response();
        // Proxies such as nginx buffer a response by default, which would hold an event
        // stream back until it ends; this header tells them not to (Sse already sends
        // `Cache-Control: no-cache`).
        response.headers_mut().insert(
            header::HeaderName::from_static("x-accel-buffering"),
            header::HeaderValue::from_static("no"),
        );
        response
    } else {
        collect_response(s, api, id, events, guard).await
    }
}
// ANCHOR_END: generate_endpoint

// ANCHOR: to_engine_request
/// Prompt ids, token limits and sampling for the engine. Tokenizing is linear in the prompt's
/// bytes but not free (a 1 MiB body is a second of BPE in a debug build), so a prompt that
/// cannot fit is refused by its length in bytes first, and the rest is tokenized on tokio's
/// blocking threads, never on the async workers that serve everyone else.
async fn to_engine_request(s: &Arc<AppState>, api: &ApiRequest) -> Result<Request, ApiError> {
    let tokenizer = &s.tokenizer;
    let limit = s.runner.max_prompt_tokens;
    let prompt_ids = {
        let (tokenizer, prompt) = (Arc::clone(tokenizer), api.prompt.clone());
        let profile = Arc::clone(&s.runner.profile);
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let ids = prompt_ids(&tokenizer, &prompt, limit);
            profile.record(Stage::Tokenize, started.elapsed());
            ids
        })
        .await
        .map_err(|e| ApiError::internal(format!("tokenizing failed: {e}")))??
    };
    let room = (limit + 1).saturating_sub(prompt_ids.len()).max(1);
    let default = match api.endpoint {
        Endpoint::Completions => 16,
        Endpoint::Chat => room,
    };
    Ok(Request {
        max_tokens: api.max_tokens.unwrap_or(default).min(room),
        prompt_ids,
        sampling: api.sampling.clone(),
        stop_tokens: if api.ignore_eos {
            vec![]
        } else {
            default_stop_tokens(tokenizer)
        },
        stop_strings: api.stop.clone(),
    })
}

/// A request's prompt as token ids, checked: no more than `limit` tokens (refused by its byte
/// length before tokenizing where the vocabulary bounds it), none outside the vocabulary, not
/// empty. The HTTP server and the serverless handler both take prompts through here.
pub fn prompt_ids(
    tokenizer: &Tokenizer,
    prompt: &Prompt,
    limit: usize,
) -> Result<Vec<TokenId>, ApiError> {
    let (param, text_bytes) = match prompt {
        Prompt::Text(text) => ("prompt", text.len()),
        Prompt::Tokens(_) => ("prompt", 0),
        Prompt::Messages(m) => ("messages", m.iter().map(|m| m.content.len()).sum()),
    };
    if let Some(per_token) = tokenizer.longest_token_bytes()
        && text_bytes > limit * per_token
    {
        return Err(ApiError::too_long(
            param,
            format!(
                "the prompt has {text_bytes} bytes of text; no token holds more than {per_token}, \
                 so it needs more than the {limit} tokens this model's context leaves room for"
            ),
        ));
    }
    let ids = match prompt {
        Prompt::Tokens(ids) => {
            if let Some(bad) = ids
                .iter()
                .find(|&&id| id as usize >= tokenizer.vocab_size())
            {
                return Err(ApiError::invalid(
                    "prompt",
                    format!(
                        "token id {bad} is outside the vocabulary ({} tokens)",
                        tokenizer.vocab_size()
                    ),
                ));
            }
            ids.clone()
        }
        // Raw completions text parses special tokens, as llama-server does: the caller writes
        // the whole prompt, markers included.
        Prompt::Text(text) => tokenizer.encode(text, true),
        // Chat: only the template's markers are special; content is text.
        Prompt::Messages(messages) => tokenizer
            .encode_chat(messages, true)
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?,
    };
    if ids.is_empty() {
        return Err(ApiError::invalid(param, "the prompt is empty"));
    }
    if ids.len() > limit {
        return Err(ApiError::too_long(
            param,
            format!(
                "the prompt has {} tokens; this model's context leaves room for at most {limit}",
                ids.len()
            ),
        ));
    }
    Ok(ids)
}
// ANCHOR_END: to_engine_request

/// Metrics and cancellation for one request: records timings as tokens arrive, the outcome
/// at the end, and — if dropped before the end (the client left) — cancels the request.
struct Guard {
    state: Arc<AppState>,
    id: RequestId,
    endpoint: &'static str,
    arrived: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    done: bool,
}

impl Guard {
    fn token(&mut self) {
        let now = Instant::now();
        let m = &self.state.metrics;
        match self.last_token {
            None => {
                self.first_token = Some(now);
                m.time_to_first_token
                    .observe(now.duration_since(self.arrived).as_secs_f64())
            }
            Some(t) => m
                .inter_token_latency
                .observe(now.duration_since(t).as_secs_f64()),
        }
        self.last_token = Some(now);
    }

    fn finish(&mut self, finish: &Finish) {
        self.done = true;
        let m = &self.state.metrics;
        m.request_duration
            .observe(self.arrived.elapsed().as_secs_f64());
        m.prompt_tokens.inc_by(finish.prompt_tokens as u64);
        m.generated_tokens.inc_by(finish.completion_tokens as u64);
        match finish.reason {
            FinishReason::Timeout => m.outcome("failure", "timeout"),
            reason => m.outcome("success", json::finish_reason(reason)),
        }
        self.log(&access_log::Outcome::Finished {
            reason: json::finish_reason(finish.reason),
            prompt_tokens: finish.prompt_tokens,
            completion_tokens: finish.completion_tokens,
        });
    }

    fn fail(&mut self, reason: &'static str) {
        self.done = true;
        self.state.metrics.outcome("failure", reason);
        self.log(&access_log::Outcome::Failed {
            status: 500,
            code: reason,
        });
    }

    fn log(&self, outcome: &access_log::Outcome) {
        if self.state.config.log_requests {
            let line = access_log::line(
                Some(self.id),
                self.endpoint,
                outcome,
                self.arrived,
                self.first_token,
            );
            eprintln!("{line}");
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.state.metrics.outcome("failure", "cancelled");
            self.state.runner.cancel(self.id);
            self.log(&access_log::Outcome::Cancelled);
        }
    }
}

/// Waits for the whole generation and answers with one JSON body.
async fn collect_response(
    s: Arc<AppState>,
    api: ApiRequest,
    id: RequestId,
    mut events: UnboundedReceiver<Event>,
    mut guard: Guard,
) -> Response {
    let env = Envelope::new(api.endpoint, id, &s.config.model_id);
    let mut text = String::new();
    let mut logprobs: Vec<TokenLogprob> = Vec::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Token {
                text: piece,
                logprob,
                ..
            } => {
                guard.token();
                text.push_str(&piece);
                logprobs.extend(logprob);
            }
            Event::Text(piece) => text.push_str(&piece),
            Event::Finished(finish) => {
                guard.finish(&finish);
                if finish.reason == FinishReason::Timeout {
                    return ApiError::timeout(s.config.request_timeout.as_secs_f64())
                        .into_response();
                }
                let lp = api
                    .logprobs
                    .map(|_| json::logprobs(api.endpoint, &s.tokenizer, &logprobs, 0));
                return axum::Json(json::response(&env, &text, &finish, lp)).into_response();
            }
        }
    }
    guard.fail("internal_error");
    ApiError::internal("the engine ended the request without finishing it").into_response()
}

// ANCHOR: stream_response
/// Streams the generation as Server-Sent Events: a first chunk (chat: the assistant role),
/// one chunk per piece of text, a final chunk with the finish reason, the usage chunk if
/// asked, then `[DONE]`. Dropping the stream (the client left) drops the guard, which cancels.
fn stream_response(
    s: Arc<AppState>,
    api: ApiRequest,
    id: RequestId,
    events: UnboundedReceiver<Event>,
    guard: Guard,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    struct St {
        s: Arc<AppState>,
        api: ApiRequest,
        env: Envelope,
        events: UnboundedReceiver<Event>,
        guard: Guard,
        first: bool,
        offset: usize,
        pending: std::collections::VecDeque<String>,
        ended: bool,
        /// When the last event went to the HTTP layer: it asks for the next one once that one
        /// is written, and the time between is the write.
        handed_over: Option<Instant>,
    }
    let env = Envelope::new(api.endpoint, id, &s.config.model_id);
    let state = St {
        s,
        api,
        env,
        events,
        guard,
        first: true,
        offset: 0,
        pending: Default::default(),
        ended: false,
        handed_over: None,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if let Some(at) = st.handed_over.take() {
            st.s.runner.profile.record(Stage::Write, at.elapsed());
        }
        loop {
            if let Some(data) = st.pending.pop_front() {
                st.handed_over = Some(Instant::now());
                return Some((Ok(SseEvent::default().data(data)), st));
            }
            if st.ended {
                return None;
            }
            let usage_field = st.api.include_usage;
            match st.events.recv().await {
                Some(Event::Token { text, logprob, .. }) => {
                    st.guard.token();
                    let lp = logprob.map(|lp| {
                        json::logprobs(st.api.endpoint, &st.s.tokenizer, &[lp], st.offset)
                    });
                    if text.is_empty() && lp.is_none() && !st.first {
                        continue; // nothing to say yet (half a character, a possible stop string)
                    }
                    st.offset += text.len();
                    let chunk = json::text_chunk(&st.env, &text, st.first, lp, usage_field);
                    st.first = false;
                    st.pending.push_back(chunk.to_string());
                }
                Some(Event::Text(text)) => {
                    st.offset += text.len();
                    let chunk = json::text_chunk(&st.env, &text, st.first, None, usage_field);
                    st.first = false;
                    st.pending.push_back(chunk.to_string());
                }
                Some(Event::Finished(finish)) => {
                    st.guard.finish(&finish);
                    if finish.reason == FinishReason::Timeout {
                        let error = ApiError::timeout(st.s.config.request_timeout.as_secs_f64());
                        st.pending.push_back(error.body().to_string());
                    } else {
                        if st.first {
                            st.pending.push_back(
                                json::text_chunk(&st.env, "", true, None, usage_field).to_string(),
                            );
                        }
                        st.pending.push_back(
                            json::final_chunk(&st.env, &finish, usage_field).to_string(),
                        );
                        if usage_field {
                            st.pending
                                .push_back(json::usage_chunk(&st.env, &finish).to_string());
                        }
                    }
                    st.pending.push_back("[DONE]".into());
                    st.ended = true;
                }
                None => {
                    st.guard.fail("internal_error");
                    st.pending.push_back(
                        ApiError::internal("the engine ended the request without finishing it")
                            .body()
                            .to_string(),
                    );
                    st.ended = true;
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
// ANCHOR_END: stream_response

/// A state for tests and the demo binary: the engine on its own thread, the tokenizer here.
pub fn app_state(
    gguf_path: &std::path::Path,
    threads: usize,
    scheduler: crate::engine::SchedulerConfig,
    max_in_flight: usize,
    config: ServerConfig,
) -> anyhow::Result<Arc<AppState>> {
    let gguf = crate::assets::open_model(gguf_path)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let context_length = crate::model::LlamaConfig::from_gguf(&gguf)?.context_length;
    let runner = Runner::start(gguf, threads, scheduler, max_in_flight)?;
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Arc::new(AppState {
        runner: Arc::new(runner),
        tokenizer: Arc::new(tokenizer),
        metrics: Arc::new(Metrics::new()),
        config,
        context_length,
        created,
    }))
}

/// Serves `state` on a free loopback port from the current tokio runtime; returns the base URL
/// (`http://127.0.0.1:PORT`). The demos that need a server and the tests start one this way.
pub async fn serve_on_loopback(state: Arc<AppState>) -> std::io::Result<String> {
    serve_app_on_loopback(router(state)).await
}

/// [`serve_on_loopback`] for a router of one's own (the API's, merged with more routes).
pub async fn serve_app_on_loopback(app: Router) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}

/// The async runtime of the server and client demos: two worker threads (the engine has its
/// own thread; HTTP work is light).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}
