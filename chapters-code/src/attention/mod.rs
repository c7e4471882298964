//! Attention over a KV cache, two ways that compute the same function:
//!
//! - [`naive`]: the scores of every new query against every visible key as one matrix per
//!   (sequence, head), a softmax per row, then the weighted sum of the values — the textbook
//!   algorithm, in llama.cpp's arithmetic (its path without `-fa`). The engine's default.
//! - [`tiled`]: FlashAttention's algorithm — blocks of keys and values, a running maximum and
//!   sum per query, the partial output rescaled when the maximum grows — which never holds
//!   more than one tile of scores. Decoding (few queries) splits the keys into fixed segments
//!   worked on in parallel and merged by log-sum-exp.
//!
//! Both read the cache through [`KvBatch`], which the contiguous and the paged cache
//! implement, and both take grouped-query heads, f16 and Q8_0 caches.

pub mod cache_view;
pub mod naive;
pub mod softmax;
pub mod tile_kernels;
pub mod tiled;

#[cfg(test)]
mod tests;

pub use cache_view::{ContextFull, KvBatch, KvChunk, KvRows};

use crate::kernels::pool::ThreadPool;

/// Which algorithm computes attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionKind {
    /// Materialized scores, llama.cpp's arithmetic (the parity suite's bits).
    #[default]
    Naive,
    /// FlashAttention's tiled online softmax.
    Tiled,
}

impl AttentionKind {
    pub const ALL: [AttentionKind; 2] = [AttentionKind::Naive, AttentionKind::Tiled];

    pub fn name(self) -> &'static str {
        match self {
            AttentionKind::Naive => "naive",
            AttentionKind::Tiled => "tiled",
        }
    }

    /// Parses a name as [`AttentionKind::name`] writes it (any case).
    pub fn parse(name: &str) -> Option<AttentionKind> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for AttentionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The head layout: `n_heads` query heads share `n_kv_heads` key/value heads (grouped-query
/// attention; `n_heads` is a multiple of `n_kv_heads`), each `head_dim` wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl Heads {
    /// Width of a query row: `n_heads · head_dim`.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of a key or value row: `n_kv_heads · head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }
}

/// One attention call of a forward step: sequence `s` of `kv` has `new[s]` new tokens (their
/// keys and values already appended at `layer`, not yet committed), whose query rows start at
/// row `firsts[s]` of `q`. Token t of sequence s sits at position `kv.len(s) + t` and attends
/// to positions `0..=kv.len(s) + t` (causal).
pub struct Step<'a> {
    pub heads: Heads,
    /// (rows, n_heads · head_dim) queries, after RoPE.
    pub q: &'a [f32],
    pub kv: &'a dyn KvBatch,
    pub layer: usize,
    pub new: &'a [usize],
    pub firsts: &'a [usize],
}

/// Attention of every new token of the step, into `out` ((rows, n_heads · head_dim)).
pub fn attend(kind: AttentionKind, pool: &ThreadPool, step: &Step<'_>, out: &mut [f32]) {
    match kind {
        AttentionKind::Naive => naive::attend(pool, step, out),
        AttentionKind::Tiled => tiled::attend(pool, step, out),
    }
}

/// Rows of an output written by disjoint pool tasks.
pub(crate) struct SharedRows(*mut f32);

impl SharedRows {
    pub(crate) fn new(out: &mut [f32]) -> SharedRows {
        SharedRows(out.as_mut_ptr())
    }

    /// Copies `src` to `out[at..at + src.len()]`.
    ///
    /// # Safety
    /// No other task writes that range while the pool runs, and it lies inside `out`.
    pub(crate) unsafe fn write(&self, at: usize, src: &[f32]) {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.0.add(at), src.len()) }
    }
}
// SAFETY: tasks write disjoint ranges, and pool.run returns after all tasks.
unsafe impl Sync for SharedRows {}
