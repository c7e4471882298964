//! The serving engine: requests wait in a queue, a scheduler admits them into a running batch
//! when KV blocks allow, and every step runs one batched forward pass over all running
//! sequences — prefill chunks and decode tokens together — then samples, streams and retires.

pub mod closed_loop;
pub mod profile;
pub mod replay;
pub mod runner;
pub mod scheduler;
pub mod speculation;

#[cfg(test)]
mod spec_tests;
#[cfg(test)]
mod tests;

pub use runner::{Runner, RunnerStats, StartError, SubmitError};
pub use scheduler::{Policy, Scheduler, SchedulerConfig, StepReport};
pub use speculation::{DraftSource, Speculation};

use crate::generate::{FinishReason, Request};
use crate::tokenizer::TokenId;
use serde::Serialize;
use std::time::Instant;

/// A request's id, unique in an engine.
pub type RequestId = u64;

/// A request as the engine takes it.
#[derive(Debug, Clone)]
pub struct EngineRequest {
    pub id: RequestId,
    pub request: Request,
    /// Return log-probabilities: `Some(k)` gives the chosen token's and the `k` most likely.
    pub logprobs: Option<usize>,
    /// When the request gives up (finish reason `timeout`).
    pub deadline: Option<Instant>,
}

/// Log-probability of a token, with the most likely alternatives at that position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLogprob {
    pub token: TokenId,
    pub logprob: f32,
    pub top: Vec<(TokenId, f32)>,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finish {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
}

/// What the engine tells the owner of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A generated token and the text it completes (never part of a stop string, never half a
    /// character; may be empty).
    Token {
        token: TokenId,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    /// Text held back until the end of the request (a possible start of a stop string that
    /// never completed, or the bytes of an unfinished character).
    Text(String),
    /// The last event of a request.
    Finished(Finish),
}

/// Where events go. `send` returns false when nobody listens any more: the engine then
/// cancels the request and frees its blocks.
pub trait EventSink {
    fn send(&mut self, id: RequestId, event: Event) -> bool;
}

/// Collects events in memory (replays and tests).
#[derive(Default)]
pub struct Collect {
    pub events: Vec<(RequestId, Event, Instant)>,
}

impl EventSink for Collect {
    fn send(&mut self, id: RequestId, event: Event) -> bool {
        self.events.push((id, event, Instant::now()));
        true
    }
}
