//! Splitting one model over several workers, two ways:
//!
//! - [`tensor`]: Megatron-LM's tensor parallelism. Every block's matrices are cut across N
//!   shards — Q, K, V by heads and gate/up by FFN columns (column-parallel: each shard
//!   computes its share of the outputs with no communication), the attention output and down
//!   projections by their input columns (row-parallel: each shard computes a partial sum of
//!   every output) — so each block needs two all-reduces of one `dim`-wide row per token.
//!   Each shard keeps the KV cache of its own KV heads. The embedding and the output head are
//!   split by vocabulary rows (vLLM's `VocabParallelEmbedding`): one more all-reduce for the
//!   lookup, one gather of the logits.
//! - [`pipeline`]: pipeline parallelism, the contrast. Blocks are cut into stages, one per
//!   worker; activations flow from stage to stage and several sequences are in flight, so the
//!   stages work at once on different sequences. No summation changes: its output is the
//!   engine's, bit for bit.
//!
//! [`collective`] holds the all-reduce and gather over shared buffers that the shards (threads
//! here, GPUs in production) use; [`cost`] projects measured compute and communication volumes
//! onto real interconnects.

pub mod collective;
pub mod cost;
pub mod pipeline;
pub mod split;
pub mod tensor;

#[cfg(test)]
mod tests;

pub use collective::{Collective, Kind, RankTimes, Traffic};
pub use pipeline::{PipelineRun, pipeline_greedy};
pub use split::{Plan, ShardRanges};
pub use tensor::{ShardMemory, TensorParallel, TpStats};

use crate::model::{LlamaConfig, ModelError};

/// Why a model cannot be split as asked.
#[derive(Debug, thiserror::Error)]
pub enum ParallelError {
    #[error("the tensor parallel size must be at least 1")]
    NoShards,
    // vLLM's own words for the same check, with the sizes that would work.
    #[error(
        "total number of attention heads ({heads}) must be divisible by tensor parallel size \
         ({n}); this model splits over {valid}"
    )]
    Heads {
        heads: usize,
        n: usize,
        valid: String,
    },
    #[error(
        "the number of key/value heads ({kv_heads}) must be divisible by tensor parallel size \
         ({n}) (each shard keeps whole KV heads); this model splits over {valid}"
    )]
    KvHeads {
        kv_heads: usize,
        n: usize,
        valid: String,
    },
    #[error(
        "split {n} ways, a shard's share of `{what}` ({cols} columns) is not whole blocks of \
         {block}; this model splits over {valid}"
    )]
    Blocks {
        what: String,
        cols: usize,
        block: u64,
        n: usize,
        valid: String,
    },
    #[error("{stages} pipeline stages need at least {stages} blocks; this model has {blocks}")]
    Stages { stages: usize, blocks: usize },
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// The tensor-parallel sizes a model's shapes allow (1 included), as text: "1, 3".
pub fn valid_sizes(c: &LlamaConfig, block: u64) -> String {
    (1..=c.n_heads)
        .filter(|&n| split::fits(c, n, block))
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
