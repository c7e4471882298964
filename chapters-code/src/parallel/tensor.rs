//! Megatron-style tensor parallelism of the Llama forward pass over N shards. Each shard is a
//! thread here (a GPU in production) that owns its slice of every matrix and the KV cache of
//! its KV heads; it runs the engine's own block ([`run_block`]) with its share of the heads
//! and FFN columns, and sums the row-parallel products with the other shards through
//! [`Collective`].

use super::ParallelError;
use super::collective::{Collective, Kind, RankComm, RankTimes, Traffic};
use super::split::{OwnedMatrix, Plan, ShardRanges};
use crate::attention::AttentionKind;
use crate::kernels::matmul::{Acts, QMatrix, matmul};
use crate::kernels::pool::ThreadPool;
use crate::model::block::{BlockShape, Scratch, StepRows, run_block};
use crate::model::llama::{Layer, wanted_rows};
use crate::model::ops::rmsnorm;
use crate::model::{KvCache, Llama, LlamaConfig, Logits, ModelError, SeqStep};
use crate::tokenizer::TokenId;
use std::time::{Duration, Instant};

/// One block's slices: Q, K, V, gate and up by rows (outputs), output and down by columns
/// (inputs).
struct ShardBlock {
    wq: OwnedMatrix,   // (heads · head_dim, dim)
    wk: OwnedMatrix,   // (kv_heads · head_dim, dim)
    wv: OwnedMatrix,   // (kv_heads · head_dim, dim)
    wo: OwnedMatrix,   // (dim, heads · head_dim)
    gate: OwnedMatrix, // (ffn share, dim)
    up: OwnedMatrix,   // (ffn share, dim)
    down: OwnedMatrix, // (dim, ffn share)
}

impl ShardBlock {
    // ANCHOR: cut
    fn cut(l: &Layer<'_>, r: &ShardRanges, head_dim: usize) -> ShardBlock {
        let heads = r.heads.start * head_dim..r.heads.end * head_dim;
        let kv = r.kv_heads.start * head_dim..r.kv_heads.end * head_dim;
        ShardBlock {
            wq: OwnedMatrix::rows_of(&l.wq, heads.clone()),
            wk: OwnedMatrix::rows_of(&l.wk, kv.clone()),
            wv: OwnedMatrix::rows_of(&l.wv, kv),
            wo: OwnedMatrix::cols_of(&l.wo, heads),
            gate: OwnedMatrix::rows_of(&l.w_gate, r.ffn.clone()),
            up: OwnedMatrix::rows_of(&l.w_up, r.ffn.clone()),
            down: OwnedMatrix::cols_of(&l.w_down, r.ffn.clone()),
        }
    }
    // ANCHOR_END: cut

    fn matrices(&self) -> [&OwnedMatrix; 7] {
        [
            &self.wq, &self.wk, &self.wv, &self.wo, &self.gate, &self.up, &self.down,
        ]
    }

    fn layer<'s>(
        &'s self,
        attn_norm: &'s [f32],
        ffn_norm: &'s [f32],
    ) -> Result<Layer<'s>, ModelError> {
        Ok(Layer {
            attn_norm,
            wq: self.wq.view()?,
            wk: self.wk.view()?,
            wv: self.wv.view()?,
            wo: self.wo.view()?,
            ffn_norm,
            w_gate: self.gate.view()?,
            w_up: self.up.view()?,
            w_down: self.down.view()?,
        })
    }
}

/// Everything one shard owns.
struct Shard<'g> {
    ranges: ShardRanges,
    blocks: Vec<ShardBlock>,
    /// (attention norm, FFN norm) per block: small, every shard keeps them whole.
    norms: Vec<(&'g [f32], &'g [f32])>,
    /// Its vocabulary rows of the embedding table.
    embedding: OwnedMatrix,
    /// Its vocabulary rows of the output head; `None` when the head is the embedding (tied).
    head: Option<OwnedMatrix>,
    cache: KvCache,
    pool: ThreadPool,
}

/// Bytes one shard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMemory {
    /// Its weight slices, plus the norms every shard keeps.
    pub weights: usize,
    /// Its KV cache as filled now.
    pub kv: usize,
}

/// What the shards did since the last [`TensorParallel::reset_stats`].
#[derive(Debug, Clone, Default)]
pub struct TpStats {
    pub forwards: u64,
    /// Positions processed (prompt and generated tokens).
    pub tokens: u64,
    /// Wall time of the forward calls, thread start and join included.
    pub wall: Duration,
    /// Per rank.
    pub ranks: Vec<RankTimes>,
    pub traffic: Traffic,
}

/// What every rank reads and nobody changes during a forward call.
struct Common<'g> {
    config: LlamaConfig,
    shard_config: LlamaConfig,
    output_norm: &'g [f32],
    attention: AttentionKind,
    vocab_starts: Vec<usize>,
}

/// A model split over N tensor-parallel shards.
pub struct TensorParallel<'g> {
    common: Common<'g>,
    shards: Vec<Shard<'g>>,
    collective: Collective,
    stats: TpStats,
}

impl<'g> TensorParallel<'g> {
    /// Cuts `model` into `n` shards, each with a KV cache of up to `context` positions and a
    /// pool of `threads_per_shard` threads. `n` must divide the query heads and the KV heads,
    /// and leave whole quantization blocks in the row-parallel matrices.
    pub fn new(
        model: &Llama<'g>,
        n: usize,
        context: usize,
        threads_per_shard: usize,
    ) -> Result<TensorParallel<'g>, ParallelError> {
        let c = &model.config;
        let block = model
            .layers
            .iter()
            .flat_map(|l| [l.wo.ty, l.w_down.ty])
            .map(|t| t.block_size())
            .max()
            .unwrap_or(1);
        let plan = Plan::new(c, n, block)?;
        let shard_config = plan.shard_config(c);
        let shards = plan
            .shards
            .iter()
            .map(|r| {
                let shard = Shard {
                    ranges: r.clone(),
                    blocks: model
                        .layers
                        .iter()
                        .map(|l| ShardBlock::cut(l, r, c.head_dim))
                        .collect(),
                    norms: model
                        .layers
                        .iter()
                        .map(|l| (l.attn_norm, l.ffn_norm))
                        .collect(),
                    embedding: OwnedMatrix::rows_of(&model.token_embd, r.vocab.clone()),
                    head: (!model.tied_output)
                        .then(|| OwnedMatrix::rows_of(&model.output, r.vocab.clone())),
                    cache: KvCache::with_limit(&shard_config, context),
                    pool: ThreadPool::new(threads_per_shard),
                };
                // Every view is checked once here, so forward calls cannot fail on them.
                for (b, &(a, f)) in shard.blocks.iter().zip(&shard.norms) {
                    b.layer(a, f)?;
                }
                shard.embedding.view()?;
                if let Some(h) = &shard.head {
                    h.view()?;
                }
                Ok(shard)
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(TensorParallel {
            common: Common {
                config: c.clone(),
                shard_config,
                output_norm: model.output_norm,
                attention: model.attention,
                vocab_starts: plan.shards.iter().map(|r| r.vocab.start).collect(),
            },
            shards,
            collective: Collective::new(n),
            stats: TpStats {
                ranks: vec![RankTimes::default(); n],
                ..TpStats::default()
            },
        })
    }

    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The hyper-parameters each shard's blocks run with.
    pub fn shard_config(&self) -> &LlamaConfig {
        &self.common.shard_config
    }

    /// What each shard owns.
    pub fn ranges(&self) -> Vec<ShardRanges> {
        self.shards.iter().map(|s| s.ranges.clone()).collect()
    }

    /// Positions in the KV cache.
    pub fn len(&self) -> usize {
        self.shards[0].cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties every shard's KV cache.
    pub fn clear(&mut self) {
        self.shards.iter_mut().for_each(|s| s.cache.clear());
    }

    pub fn stats(&self) -> &TpStats {
        &self.stats
    }

    pub fn reset_stats(&mut self) {
        self.stats = TpStats {
            ranks: vec![RankTimes::default(); self.shards.len()],
            ..TpStats::default()
        };
    }

    /// Bytes each shard holds.
    pub fn memory(&self) -> Vec<ShardMemory> {
        self.shards
            .iter()
            .map(|s| {
                let matrices: usize = s
                    .blocks
                    .iter()
                    .flat_map(|b| b.matrices())
                    .chain([&s.embedding])
                    .chain(s.head.as_ref())
                    .map(OwnedMatrix::bytes)
                    .sum();
                let norms: usize = s.norms.iter().map(|(a, f)| 4 * (a.len() + f.len())).sum();
                ShardMemory {
                    weights: matrices + norms + 4 * self.common.output_norm.len(),
                    kv: s.cache.bytes(),
                }
            })
            .collect()
    }

    // ANCHOR: forward
    /// Runs `tokens` (the sequence's next tokens) through every shard at once and returns the
    /// logits `which` asks for, as [`Llama::forward`] does.
    pub fn forward(&mut self, tokens: &[TokenId], which: Logits) -> Result<Vec<f32>, ModelError> {
        let c = &self.common.config;
        if tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(ModelError::TokenOutOfRange {
                id,
                vocab: c.vocab_size,
            });
        }
        // Checked before any rank starts: a rank that stopped half-way would leave the others
        // waiting at a barrier for ever.
        self.shards[0].cache.check_room(tokens.len())?;
        let start = Instant::now();
        let (common, collective) = (&self.common, &self.collective);
        let mut results: Vec<(Option<Vec<f32>>, RankTimes, Traffic)> = Vec::new();
        std::thread::scope(|scope| {
            let (first, rest) = self.shards.split_first_mut().expect("at least one shard");
            let handles: Vec<_> = rest
                .iter_mut()
                .enumerate()
                .map(|(i, shard)| {
                    let comm = collective.rank(i + 1);
                    scope.spawn(move || run_rank(shard, common, comm, tokens, which))
                })
                .collect();
            results.push(run_rank(first, common, collective.rank(0), tokens, which));
            for h in handles {
                results.push(h.join().expect("a shard panicked"));
            }
        });
        self.stats.wall += start.elapsed();
        self.stats.forwards += 1;
        self.stats.tokens += tokens.len() as u64;
        for (r, (_, times, traffic)) in results.iter().enumerate() {
            self.stats.ranks[r].merge(times);
            self.stats.traffic.merge(traffic);
        }
        Ok(results.swap_remove(0).0.unwrap_or_default())
    }
    // ANCHOR_END: forward
}

// ANCHOR: run_rank
/// One shard's part of a forward call. Returns the logits on rank 0.
fn run_rank(
    shard: &mut Shard<'_>,
    common: &Common<'_>,
    mut comm: RankComm<'_>,
    tokens: &[TokenId],
    which: Logits,
) -> (Option<Vec<f32>>, RankTimes, Traffic) {
    let start = Instant::now();
    let (c, d, n) = (&common.config, common.config.dim, tokens.len());
    // Vocabulary-parallel embedding: the shard that owns a token's row writes it, the others
    // zeros; the all-reduce adds them (exactly: x + 0 = x).
    let embedding = shard.embedding.view().expect("checked in new");
    let mut x = vec![0.0f32; n * d];
    for (row, &id) in x.chunks_exact_mut(d).zip(tokens) {
        if shard.ranges.vocab.contains(&(id as usize)) {
            embedding.row_f32(id as usize - shard.ranges.vocab.start, row);
        }
    }
    comm.all_reduce(Kind::Embedding, &mut x);

    let positions: Vec<usize> = (shard.cache.len()..shard.cache.len() + n).collect();
    let rows = StepRows {
        positions: &positions,
        news: &[n],
        firsts: &[0],
    };
    let shape = BlockShape {
        config: &common.shard_config,
        attention: common.attention,
    };
    let mut scratch = Scratch::new(&common.shard_config, n);
    for (li, (block, &(attn_norm, ffn_norm))) in shard.blocks.iter().zip(&shard.norms).enumerate() {
        let layer = block.layer(attn_norm, ffn_norm).expect("checked in new");
        run_block(
            &shard.pool,
            shape,
            li,
            &layer,
            &mut x,
            &rows,
            &mut shard.cache,
            &mut scratch,
            &mut |_, _, _| {},
            &mut |partial| comm.all_reduce(Kind::Block, partial),
        );
    }
    shard.cache.commit(n);

    // Vocabulary-parallel head: each shard scores its rows of the vocabulary; rank 0 gathers.
    let wanted = wanted_rows(
        &[SeqStep {
            tokens,
            logits: which,
        }],
        &[0],
    )
    .remove(0);
    let mut normed = vec![0.0f32; wanted.len() * d];
    rmsnorm(
        &x[wanted.start * d..wanted.end * d],
        common.output_norm,
        c.rms_eps,
        &mut normed,
    );
    let head: QMatrix<'_> = shard
        .head
        .as_ref()
        .unwrap_or(&shard.embedding)
        .view()
        .expect("checked in new");
    let mut local = vec![0.0f32; wanted.len() * head.rows];
    matmul(
        &shard.pool,
        &head,
        &Acts::new(head.act_format(), &normed, d),
        &mut local,
    );
    let logits = comm.gather(&local, wanted.len(), &common.vocab_starts, c.vocab_size);
    comm.times.total = start.elapsed();
    (logits, comm.times, comm.traffic)
}
// ANCHOR_END: run_rank
