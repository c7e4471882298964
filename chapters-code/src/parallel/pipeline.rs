//! Pipeline parallelism, the contrast to tensor parallelism: the blocks are cut into S
//! contiguous stages, one worker each; a sequence's activations ((tokens, dim) floats) flow
//! from stage to stage, and with several sequences in flight every stage works at once, each
//! on a different sequence. Each stage keeps the KV cache of its own blocks. Nothing is
//! summed across workers, so the output is the engine's, bit for bit; what it costs is the
//! *bubble* — a stage idle while it waits for work — and one sequence is no faster than on
//! one worker.

use super::ParallelError;
use crate::kernels::matmul::{Acts, matmul};
use crate::kernels::pool::ThreadPool;
use crate::model::block::{BlockShape, run_blocks_of_one};
use crate::model::ops::rmsnorm;
use crate::model::{KvCache, Llama, ModelError};
use crate::tokenizer::TokenId;
use std::ops::Range;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

/// What a pipelined greedy run produced and how the stages spent their time.
#[derive(Debug, Clone)]
pub struct PipelineRun {
    /// Each sequence's generated tokens.
    pub tokens: Vec<Vec<TokenId>>,
    /// Blocks of each stage.
    pub stages: Vec<Range<usize>>,
    pub wall: Duration,
    /// Per stage: time spent working (the rest of `wall` it waited: the bubble).
    pub busy: Vec<Duration>,
    /// Activation bytes sent from stage to stage, all stages together.
    pub bytes_between_stages: u64,
}

impl PipelineRun {
    /// Share of the stages' time spent idle.
    pub fn bubble(&self) -> f64 {
        let busy: f64 = self.busy.iter().map(Duration::as_secs_f64).sum();
        1.0 - busy / (self.wall.as_secs_f64() * self.busy.len() as f64)
    }
}

/// A unit of work for a stage: sequence `seq`'s new tokens (stage 0) or their activations.
enum Work {
    Tokens { seq: usize, tokens: Vec<TokenId> },
    Hidden { seq: usize, x: Vec<f32> },
}

// ANCHOR: pipeline
/// Greedy-decodes `new_tokens` tokens after each prompt, the model's blocks cut into `stages`
/// stages (one thread each), every sequence in flight at once.
pub fn pipeline_greedy(
    model: &Llama<'_>,
    stages: usize,
    prompts: &[Vec<TokenId>],
    new_tokens: usize,
) -> Result<PipelineRun, ParallelError> {
    let c = &model.config;
    if stages == 0 || stages > c.n_layers {
        return Err(ParallelError::Stages {
            stages,
            blocks: c.n_layers,
        });
    }
    if prompts.is_empty() {
        return Err(ModelError::EmptyInput.into());
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0) + new_tokens;
    if prompts.iter().any(Vec::is_empty) || new_tokens == 0 {
        return Err(ModelError::EmptyInput.into());
    }
    if longest > c.context_length {
        return Err(ModelError::ContextFull {
            needed: longest,
            limit: c.context_length,
        }
        .into());
    }
    if let Some(&id) = prompts
        .iter()
        .flatten()
        .find(|&&id| id as usize >= c.vocab_size)
    {
        return Err(ModelError::TokenOutOfRange {
            id,
            vocab: c.vocab_size,
        }
        .into());
    }
    let ranges: Vec<Range<usize>> = (0..stages)
        .map(|s| c.n_layers * s / stages..c.n_layers * (s + 1) / stages)
        .collect();
    let (to_first, first_inbox) = channel::<Work>();
    let mut inboxes = vec![first_inbox];
    let mut outboxes = Vec::new();
    for _ in 1..stages {
        let (tx, rx) = channel::<Work>();
        outboxes.push(tx);
        inboxes.push(rx);
    }
    let start = Instant::now();
    let mut generated = vec![Vec::new(); prompts.len()];
    let mut busy = vec![Duration::ZERO; stages];
    let mut bytes = 0u64;
    std::thread::scope(|scope| {
        let mut outboxes = outboxes.into_iter();
        let mut handles = Vec::new();
        for (s, inbox) in inboxes.into_iter().enumerate() {
            let next = if s + 1 < stages {
                Next::Stage(outboxes.next().expect("one outbox per stage but the last"))
            } else {
                Next::Sample(to_first.clone())
            };
            let stage = Stage {
                model,
                blocks: ranges[s].clone(),
                caches: (0..prompts.len())
                    .map(|_| KvCache::with_limit(c, longest))
                    .collect(),
                pool: ThreadPool::new(1),
            };
            handles.push(scope.spawn(move || stage.run(inbox, next, prompts.len(), new_tokens)));
        }
        for (seq, p) in prompts.iter().enumerate() {
            let _ = to_first.send(Work::Tokens {
                seq,
                tokens: p.clone(),
            });
        }
        drop(to_first); // the last stage holds the only other sender to stage 0
        for (s, h) in handles.into_iter().enumerate() {
            let out = h.join().expect("a pipeline stage panicked");
            busy[s] = out.busy;
            bytes += out.bytes_sent;
            if let Some(g) = out.generated {
                generated = g;
            }
        }
    });
    Ok(PipelineRun {
        tokens: generated,
        stages: ranges,
        wall: start.elapsed(),
        busy,
        bytes_between_stages: bytes,
    })
}
// ANCHOR_END: pipeline

/// Where a stage's output goes: the next stage, or (the last stage) sampling, whose token goes
/// back to stage 0.
enum Next {
    Stage(Sender<Work>),
    Sample(Sender<Work>),
}

struct Stage<'m, 'g> {
    model: &'m Llama<'g>,
    blocks: Range<usize>,
    /// One KV cache per sequence (only this stage's blocks are filled).
    caches: Vec<KvCache>,
    pool: ThreadPool,
}

struct StageOut {
    busy: Duration,
    bytes_sent: u64,
    /// The last stage's greedy tokens per sequence.
    generated: Option<Vec<Vec<TokenId>>>,
}

impl Stage<'_, '_> {
    fn run(
        mut self,
        inbox: Receiver<Work>,
        next: Next,
        seqs: usize,
        new_tokens: usize,
    ) -> StageOut {
        let c = &self.model.config;
        let shape = BlockShape {
            config: c,
            attention: self.model.attention,
        };
        let mut out = StageOut {
            busy: Duration::ZERO,
            bytes_sent: 0,
            generated: None,
        };
        let mut generated = vec![Vec::new(); seqs];
        let mut done = 0;
        let is_last = matches!(next, Next::Sample(_));
        let mut next = Some(next);
        // The inbox closes when every sender is gone: the previous stage's, or for stage 0
        // the last stage's, which it drops when every sequence is finished.
        while let Ok(work) = inbox.recv() {
            let t = Instant::now();
            let (seq, mut x) = match work {
                Work::Tokens { seq, tokens } => {
                    let mut x = vec![0.0f32; tokens.len() * c.dim];
                    for (row, &id) in x.chunks_exact_mut(c.dim).zip(&tokens) {
                        self.model.token_embd.row_f32(id as usize, row);
                    }
                    (seq, x)
                }
                Work::Hidden { seq, x } => (seq, x),
            };
            let cache = &mut self.caches[seq];
            run_blocks_of_one(
                &self.pool,
                shape,
                &self.model.layers,
                self.blocks.clone(),
                &mut x,
                cache,
            );
            match &next {
                Some(Next::Stage(tx)) => {
                    out.bytes_sent += std::mem::size_of_val(x.as_slice()) as u64;
                    let _ = tx.send(Work::Hidden { seq, x });
                }
                Some(Next::Sample(tx)) => {
                    let token = self.greedy(&x[x.len() - c.dim..]);
                    generated[seq].push(token);
                    if generated[seq].len() < new_tokens {
                        let _ = tx.send(Work::Tokens {
                            seq,
                            tokens: vec![token],
                        });
                    } else {
                        done += 1;
                        if done == seqs {
                            next = None; // drops the sender to stage 0: the pipeline drains
                        }
                    }
                }
                None => {}
            }
            out.busy += t.elapsed();
        }
        if is_last {
            out.generated = Some(generated);
        }
        out
    }

    /// The greedy next token after the last position's residual stream `x` ((dim)).
    fn greedy(&self, x: &[f32]) -> TokenId {
        let m = self.model;
        let mut normed = vec![0.0f32; x.len()];
        rmsnorm(x, m.output_norm, m.config.rms_eps, &mut normed);
        let mut logits = vec![0.0f32; m.config.vocab_size];
        matmul(
            &self.pool,
            &m.output,
            &Acts::new(m.output.act_format(), &normed, m.config.dim),
            &mut logits,
        );
        crate::sampling::argmax(&logits)
    }
}
