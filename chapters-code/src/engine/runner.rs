//! The engine on its own thread, for the server: requests come in through a channel, events go
//! out through one channel per request, and the scheduler steps while there is work. The model
//! lives on this thread; the server only holds the tokenizer.

use super::profile::StageProfile;
use super::{
    DraftSource, EngineRequest, Event, EventSink, RequestId, Scheduler, SchedulerConfig,
    Speculation,
};
use crate::formats::Gguf;
use crate::generate::Request;
use crate::kernels::pool::ThreadPool;
use crate::model::{Llama, ModelError};
use crate::tokenizer::Tokenizer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// Why a request was not taken.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SubmitError {
    #[error("the queue is full ({0} requests waiting); retry later")]
    QueueFull(usize),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Invalid(String),
}

/// A snapshot of the engine for /metrics and /health.
#[derive(Debug, Clone, Default)]
pub struct RunnerStats {
    pub waiting: usize,
    pub running: usize,
    pub blocks_used: usize,
    pub blocks_total: usize,
    pub steps: u64,
    pub preemptions: u64,
    pub prefix_hit_tokens: u64,
    /// Draft tokens verified, and accepted (speculative decoding).
    pub draft_tokens: u64,
    pub accepted_draft_tokens: u64,
}

/// Counters summed over the steps.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    steps: u64,
    preemptions: u64,
    drafted: u64,
    accepted: u64,
}

enum Command {
    Submit(EngineRequest, UnboundedSender<Event>, Instant),
    Cancel(RequestId),
}

/// The engine thread and the handles to talk to it.
pub struct Runner {
    commands: Mutex<mpsc::Sender<Command>>,
    stats: Arc<Mutex<RunnerStats>>,
    next_id: AtomicU64,
    /// Requests submitted and not finished (queue + batch): the admission limit counts these.
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    shutting_down: AtomicBool,
    /// Longest prompt the engine can take, in tokens.
    pub max_prompt_tokens: usize,
    /// Where the engine's stages (and the server's) record their times.
    pub profile: Arc<StageProfile>,
    /// The engine thread; it ends when the runner is dropped and the engine is idle.
    _thread: JoinHandle<()>,
}

/// Forwards events to each request's channel; a closed channel cancels the request.
struct Channels {
    senders: HashMap<RequestId, UnboundedSender<Event>>,
    in_flight: Arc<AtomicUsize>,
}

impl EventSink for Channels {
    fn send(&mut self, id: RequestId, event: Event) -> bool {
        let last = matches!(event, Event::Finished(_));
        let ok = self
            .senders
            .get(&id)
            .is_some_and(|tx| tx.send(event).is_ok());
        if (last || !ok) && self.senders.remove(&id).is_some() {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        ok
    }
}

/// Refuses a KV budget larger than the memory this process can count on (`usable`, when the
/// OS says), before anything is allocated: an allocation that large would abort the process.
pub fn check_kv_budget(budget_bytes: usize, usable: Option<u64>) -> Result<(), ModelError> {
    match usable {
        Some(usable) if budget_bytes as u64 > usable => Err(ModelError::BadConfig(format!(
            "a KV cache of {} MiB is more than the {} MiB of memory available here; \
             give a smaller KV budget (the server's --kv-mib)",
            budget_bytes >> 20,
            usable >> 20
        ))),
        _ => Ok(()),
    }
}

/// Why the engine did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The speculation settings: a self-draft with too many blocks, a draft file that is
    /// missing, unreadable or does not share the target's vocabulary.
    #[error("{0}")]
    Draft(String),
}

/// A [`ModelError`] about the drafter, without `BadConfig`'s "inconsistent hyper-parameters".
fn draft_error(e: ModelError) -> StartError {
    StartError::Draft(match e {
        ModelError::BadConfig(message) => message,
        e => e.to_string(),
    })
}

/// Checks the speculation settings against the target; opens and checks a draft model file.
fn open_draft(
    target: &Llama,
    speculation: Option<&Speculation>,
) -> Result<Option<Gguf>, StartError> {
    let Some(spec) = speculation else {
        return Ok(None);
    };
    let DraftSource::File(path) = &spec.source else {
        super::speculation::draft_model(target, &spec.source, None).map_err(draft_error)?;
        return Ok(None);
    };
    let gguf = crate::assets::open_draft_model(path, "--speculative draft:PATH")
        .map_err(|e| StartError::Draft(format!("the draft model: {e}")))?;
    let draft = Llama::load(&gguf)
        .map_err(|e| StartError::Draft(format!("the draft model {}: {e}", path.display())))?;
    super::speculation::draft_model(target, &spec.source, Some(draft)).map_err(draft_error)?;
    Ok(Some(gguf))
}

impl Runner {
    /// Loads the model from `gguf` on a new thread and starts stepping. `max_in_flight`
    /// bounds queue + batch: more requests are refused (429).
    pub fn start(
        gguf: Gguf,
        threads: usize,
        config: SchedulerConfig,
        max_in_flight: usize,
    ) -> Result<Runner, StartError> {
        // Validate on this thread so that errors reach the caller.
        let probe = Llama::load(&gguf)?;
        let draft_gguf = open_draft(&probe, config.speculation.as_ref())?;
        check_kv_budget(
            config.kv_budget_bytes,
            crate::hw::MemoryInfo::detect().usable_bytes(),
        )?;
        let blocks = crate::kv::BlockPool::blocks_in_budget(
            &probe.config,
            config.block_tokens,
            config.kv_budget_bytes,
        );
        // from_gguf refuses a context length of 0, so this cannot wrap.
        let max_prompt_tokens =
            (blocks * config.block_tokens.max(1)).min(probe.config.context_length) - 1;
        drop(probe);
        let tokenizer =
            Tokenizer::from_gguf(&gguf).map_err(|e| ModelError::BadConfig(e.to_string()))?;
        let (tx, rx) = mpsc::channel::<Command>();
        let stats = Arc::new(Mutex::new(RunnerStats::default()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let thread_stats = Arc::clone(&stats);
        let thread_in_flight = Arc::clone(&in_flight);
        let profile = Arc::new(StageProfile::default());
        let thread_profile = Arc::clone(&profile);
        let handle = std::thread::Builder::new()
            .name("prodml-engine".into())
            .spawn(move || {
                let mut model = Llama::load(&gguf).expect("loaded once above");
                model.attention = config.attention;
                let draft = draft_gguf
                    .as_ref()
                    .map(|g| Llama::load(g).expect("loaded once above"));
                let pool = ThreadPool::new(threads);
                let mut scheduler = Scheduler::new(&model, &tokenizer, config);
                scheduler.set_profile(thread_profile);
                if let Some(mut draft) = draft {
                    draft.attention = model.attention;
                    scheduler
                        .set_draft_model(draft)
                        .expect("checked once above");
                }
                let mut channels = Channels {
                    senders: HashMap::new(),
                    in_flight: thread_in_flight,
                };
                engine_loop(&mut scheduler, &pool, &rx, &mut channels, &thread_stats);
            })
            .map_err(|e| ModelError::BadConfig(format!("cannot start the engine thread: {e}")))?;
        Ok(Runner {
            commands: Mutex::new(tx),
            stats,
            next_id: AtomicU64::new(1),
            in_flight,
            max_in_flight,
            shutting_down: AtomicBool::new(false),
            max_prompt_tokens,
            profile,
            _thread: handle,
        })
    }

    /// Queues a request; events arrive on the returned channel, ending with `Finished`.
    /// Dropping the receiver cancels the request.
    pub fn submit(
        &self,
        request: Request,
        logprobs: Option<usize>,
        timeout: Option<Duration>,
    ) -> Result<(RequestId, UnboundedReceiver<Event>), SubmitError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        if request.prompt_ids.is_empty() {
            return Err(SubmitError::Invalid("the prompt is empty".into()));
        }
        if request.prompt_ids.len() > self.max_prompt_tokens {
            return Err(SubmitError::Invalid(format!(
                "the prompt has {} tokens; this server takes at most {}",
                request.prompt_ids.len(),
                self.max_prompt_tokens
            )));
        }
        let waiting = self.in_flight.fetch_add(1, Ordering::SeqCst);
        if waiting >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull(waiting));
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = unbounded_channel();
        let deadline = timeout.map(|t| Instant::now() + t);
        let command = Command::Submit(
            EngineRequest {
                id,
                request,
                logprobs,
                deadline,
            },
            tx,
            Instant::now(),
        );
        let sent = self
            .commands
            .lock()
            .map(|c| c.send(command).is_ok())
            .unwrap_or(false);
        if !sent {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::ShuttingDown);
        }
        Ok((id, rx))
    }

    /// Cancels a request (its blocks are freed at the next step).
    pub fn cancel(&self, id: RequestId) {
        if let Ok(c) = self.commands.lock() {
            let _ = c.send(Command::Cancel(id));
        }
    }

    pub fn stats(&self) -> RunnerStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Requests queued or running.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Stops taking requests; the engine finishes those it has, then its thread ends.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Waits (up to `limit`) for the requests in flight to finish; true if they all did.
    pub fn drain(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while self.in_flight() > 0 {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

fn engine_loop(
    scheduler: &mut Scheduler,
    pool: &ThreadPool,
    rx: &mpsc::Receiver<Command>,
    channels: &mut Channels,
    stats: &Mutex<RunnerStats>,
) {
    let mut totals = Totals::default();
    loop {
        // Idle: block until something arrives (or the server is gone).
        if scheduler.is_idle() {
            match rx.recv() {
                Ok(c) => handle(scheduler, channels, c),
                Err(_) => return,
            }
        }
        while let Ok(c) = rx.try_recv() {
            handle(scheduler, channels, c);
        }
        // Requests whose client left are cancelled before they cost a step.
        let gone: Vec<RequestId> = channels
            .senders
            .iter()
            .filter(|(_, tx)| tx.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            scheduler.cancel(id);
            if channels.senders.remove(&id).is_some() {
                channels.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
        // New and cancelled requests show in /metrics now, not only after the step (a long
        // prefill would hide them).
        publish(stats, scheduler, totals);
        match scheduler.step(pool, channels) {
            Ok(report) => {
                totals.steps += u64::from(report.sequences > 0);
                totals.preemptions += report.preempted as u64;
                totals.drafted += report.drafted as u64;
                totals.accepted += report.accepted as u64;
            }
            Err(e) => {
                // A step failed (requests are validated, so this is a bug): end every running
                // request — closing its channel without `Finished` tells the server it failed —
                // rather than loop on the error.
                eprintln!("engine step failed: {e}");
                for id in scheduler.running_ids() {
                    scheduler.cancel(id);
                    if channels.senders.remove(&id).is_some() {
                        channels.in_flight.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
        }
        publish(stats, scheduler, totals);
    }
}

/// Copies the scheduler's state, and the totals, to where /metrics reads it.
fn publish(stats: &Mutex<RunnerStats>, scheduler: &Scheduler, totals: Totals) {
    if let Ok(mut s) = stats.lock() {
        let kv = scheduler.kv();
        *s = RunnerStats {
            waiting: scheduler.waiting(),
            running: scheduler.running(),
            blocks_used: kv.pool().used_blocks() - kv.cached_blocks(),
            blocks_total: kv.pool().total_blocks(),
            steps: totals.steps,
            preemptions: totals.preemptions,
            prefix_hit_tokens: kv.prefix_hit_tokens,
            draft_tokens: totals.drafted,
            accepted_draft_tokens: totals.accepted,
        };
    }
}

fn handle(scheduler: &mut Scheduler, channels: &mut Channels, command: Command) {
    match command {
        Command::Submit(req, tx, submitted) => {
            let id = req.id;
            channels.senders.insert(id, tx);
            if let Err(e) = scheduler.submit_at(req, submitted) {
                eprintln!("request {id} refused by the scheduler: {e}");
                channels.senders.remove(&id);
                channels.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Command::Cancel(id) => {
            scheduler.cancel(id);
            if channels.senders.remove(&id).is_some() {
                channels.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}
