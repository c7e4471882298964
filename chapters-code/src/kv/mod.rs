//! The KV cache, paged: keys and values live in fixed-size blocks of a pool sized from a
//! memory budget; each sequence has a block table mapping its positions to blocks, so memory
//! is reserved 16 tokens at a time instead of for the longest possible sequence. Blocks have
//! reference counts: sequences that share a prompt prefix share its blocks (prefix caching),
//! and a shared partial block is copied before it is written (copy-on-write).

pub mod paged;
pub mod pool;

#[cfg(test)]
mod tests;

// The interface attention reads through lives with attention; re-exported where it was.
pub use crate::attention::{KvBatch, KvChunk, KvRows};
pub use paged::{PagedKv, PagedStep, SeqId};
pub use pool::{BlockId, BlockPool};

/// Tokens per block, vLLM's and TGI's default.
pub const DEFAULT_BLOCK_TOKENS: usize = 16;
