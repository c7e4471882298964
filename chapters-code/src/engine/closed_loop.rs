//! A closed-loop load through the scheduler: `clients` clients, each sending its requests one
//! after another — the next as soon as the previous finishes — so that the batch holds up to
//! `clients` requests for the whole run. Aggregate throughput against clients (the
//! speculative-decoding chapter's server table) comes from here.

use super::{Collect, EngineRequest, Event, RequestId, Scheduler};
use crate::generate::Request;
use crate::kernels::pool::ThreadPool;
use crate::model::ModelError;
use crate::tokenizer::TokenId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What a closed-loop run did.
#[derive(Debug, Clone, Default)]
pub struct ClosedLoop {
    /// Generated tokens of each request, by id: client `c`'s `n`-th request has id
    /// `c * per_client + n`.
    pub outputs: HashMap<RequestId, Vec<TokenId>>,
    pub wall: Duration,
    /// Time from each request's submission to its last event, summed.
    pub latency: Duration,
    pub steps: usize,
    pub drafted: usize,
    pub accepted: usize,
}

impl ClosedLoop {
    pub fn tokens(&self) -> usize {
        self.outputs.values().map(Vec::len).sum()
    }

    /// Generated tokens per second of wall time, all clients together.
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn mean_latency(&self) -> Duration {
        self.latency / self.outputs.len().max(1) as u32
    }
}

/// Runs `clients` clients through `scheduler`, client `c` sending `requests(c)` in order (each
/// client the same number of requests).
pub fn run(
    scheduler: &mut Scheduler,
    pool: &ThreadPool,
    clients: usize,
    requests: impl Fn(usize) -> Vec<Request>,
) -> Result<ClosedLoop, ModelError> {
    let queues: Vec<Vec<Request>> = (0..clients).map(requests).collect();
    let per_client = queues.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut sent = vec![0usize; clients];
    let mut submitted: HashMap<RequestId, Instant> = HashMap::new();
    let mut out = ClosedLoop::default();
    let start = Instant::now();
    let submit = |scheduler: &mut Scheduler,
                  c: usize,
                  sent: &mut [usize],
                  submitted: &mut HashMap<RequestId, Instant>|
     -> Result<(), ModelError> {
        let Some(request) = queues[c].get(sent[c]) else {
            return Ok(());
        };
        let id = (c * per_client + sent[c]) as RequestId;
        sent[c] += 1;
        submitted.insert(id, Instant::now());
        scheduler.submit(EngineRequest {
            id,
            request: request.clone(),
            logprobs: None,
            deadline: None,
        })
    };
    for c in 0..clients {
        submit(scheduler, c, &mut sent, &mut submitted)?;
    }
    let mut sink = Collect::default();
    while !scheduler.is_idle() {
        let report = scheduler.step(pool, &mut sink)?;
        out.steps += 1;
        out.drafted += report.drafted;
        out.accepted += report.accepted;
        for (id, event, at) in std::mem::take(&mut sink.events) {
            match event {
                Event::Token { token, .. } => out.outputs.entry(id).or_default().push(token),
                Event::Finished(_) => {
                    out.outputs.entry(id).or_default();
                    out.latency += at - submitted[&id];
                    submit(
                        scheduler,
                        id as usize / per_client,
                        &mut sent,
                        &mut submitted,
                    )?;
                }
                Event::Text(_) => {}
            }
        }
    }
    out.wall = start.elapsed();
    Ok(out)
}
