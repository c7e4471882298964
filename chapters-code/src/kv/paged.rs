//! Sequences over the block pool: block tables, reservation ahead of a step, prefix caching,
//! copy-on-write, and the bookkeeping that makes "no block leaks" testable.

use super::pool::{BlockId, BlockPool};
use crate::attention::{ContextFull, KvBatch, KvChunk, KvRows};
use crate::tokenizer::TokenId;
use std::collections::HashMap;

/// A sequence's id (the engine's request id).
pub type SeqId = u64;

/// Why the paged cache refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KvError {
    #[error("the KV cache needs {needed} more blocks, {free} are free")]
    OutOfBlocks { needed: usize, free: usize },
    #[error("sequence {0} is not in the KV cache")]
    UnknownSequence(SeqId),
    #[error("sequence {0} is already in the KV cache")]
    DuplicateSequence(SeqId),
}

// ANCHOR: sequence
/// One sequence's view of the pool.
#[derive(Debug, Default, Clone)]
struct Sequence {
    /// Block table: position p lives in `blocks[p / block_tokens]`, slot `p % block_tokens`.
    blocks: Vec<BlockId>,
    /// Positions whose keys and values are stored.
    len: usize,
    /// Tokens at those positions (for prefix caching), as far as the caller told us.
    tokens: Vec<TokenId>,
    /// Prefix hash of each full block, `hashes[i]` covering tokens `0..(i + 1) · block_tokens`.
    hashes: Vec<u64>,
}
// ANCHOR_END: sequence

/// A block in the prefix cache: the cache holds one reference to it.
struct Cached {
    block: BlockId,
    last_used: u64,
}

/// The paged KV cache of many sequences.
pub struct PagedKv {
    pool: BlockPool,
    seqs: HashMap<SeqId, Sequence>,
    /// Full blocks by the hash of the tokens from position 0 to their end.
    prefix: HashMap<u64, Cached>,
    tick: u64,
    /// Blocks copied on write, and prompt tokens served from the prefix cache (counters).
    pub copies_on_write: u64,
    pub prefix_hit_tokens: u64,
}

/// Chains a block's tokens onto the hash of what precedes them (FNV-1a, 64 bits: collisions
/// are vanishingly unlikely for the few thousand blocks a pool holds).
fn chain_hash(previous: u64, tokens: &[TokenId]) -> u64 {
    let mut h = previous ^ 0xcbf2_9ce4_8422_2325;
    for &t in tokens {
        for byte in t.to_le_bytes() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl PagedKv {
    pub fn new(pool: BlockPool) -> PagedKv {
        PagedKv {
            pool,
            seqs: HashMap::new(),
            prefix: HashMap::new(),
            tick: 0,
            copies_on_write: 0,
            prefix_hit_tokens: 0,
        }
    }

    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    pub fn block_tokens(&self) -> usize {
        self.pool.block_tokens
    }

    /// Sequences present.
    pub fn n_sequences(&self) -> usize {
        self.seqs.len()
    }

    /// Positions stored for `id`.
    pub fn len(&self, id: SeqId) -> Option<usize> {
        self.seqs.get(&id).map(|s| s.len)
    }

    /// Blocks held by the prefix cache alone (reusable, or evictable when memory runs out).
    pub fn cached_blocks(&self) -> usize {
        self.prefix
            .values()
            .filter(|c| self.pool.refs(c.block) == 1)
            .count()
    }

    /// Blocks that could be handed out now: free ones plus those only the cache holds.
    pub fn available_blocks(&self) -> usize {
        self.pool.free_blocks() + self.cached_blocks()
    }

    /// Blocks needed to hold `n` more positions in sequence `id` (or in a new one if absent).
    pub fn blocks_needed(&self, id: SeqId, n: usize) -> usize {
        let b = self.pool.block_tokens;
        let (len, have) = self
            .seqs
            .get(&id)
            .map_or((0, 0), |s| (s.len, s.blocks.len()));
        (len + n).div_ceil(b).saturating_sub(have)
    }

    // ANCHOR: add_sequence
    /// Adds a sequence for `prompt`. Full blocks of the prompt already in the prefix cache are
    /// shared, not recomputed; returns how many prompt tokens they cover (always fewer than
    /// the prompt, so that the last token is computed and gives logits).
    pub fn add_sequence(&mut self, id: SeqId, prompt: &[TokenId]) -> Result<usize, KvError> {
        if self.seqs.contains_key(&id) {
            return Err(KvError::DuplicateSequence(id));
        }
        let b = self.pool.block_tokens;
        let mut seq = Sequence::default();
        let mut hash = 0;
        for block in prompt.chunks_exact(b) {
            if seq.len + b > prompt.len().saturating_sub(1) {
                break;
            }
            hash = chain_hash(hash, block);
            let Some(cached) = self.prefix.get_mut(&hash) else {
                break;
            };
            self.tick += 1;
            cached.last_used = self.tick;
            self.pool.retain(cached.block);
            seq.blocks.push(cached.block);
            seq.hashes.push(hash);
            seq.tokens.extend_from_slice(block);
            seq.len += b;
        }
        let reused = seq.len;
        self.prefix_hit_tokens += reused as u64;
        self.seqs.insert(id, seq);
        Ok(reused)
    }
    // ANCHOR_END: add_sequence

    /// A new sequence `child` sharing every block of `parent` (parallel sampling). The first
    /// write to a shared partial block copies it.
    pub fn fork(&mut self, parent: SeqId, child: SeqId) -> Result<(), KvError> {
        if self.seqs.contains_key(&child) {
            return Err(KvError::DuplicateSequence(child));
        }
        let seq = self
            .seqs
            .get(&parent)
            .ok_or(KvError::UnknownSequence(parent))?
            .clone();
        for &block in &seq.blocks {
            self.pool.retain(block);
        }
        self.seqs.insert(child, seq);
        Ok(())
    }

    // ANCHOR: reserve
    /// Makes room for `n` more positions of `id`: allocates the blocks they need (evicting
    /// cached prefix blocks nobody uses if the pool is full), and copies a shared last block
    /// before it is written. All or nothing: on failure nothing changed.
    pub fn reserve(&mut self, id: SeqId, n: usize) -> Result<(), KvError> {
        let b = self.pool.block_tokens;
        let seq = self.seqs.get(&id).ok_or(KvError::UnknownSequence(id))?;
        let partial_shared = !seq.len.is_multiple_of(b)
            && n > 0
            && seq
                .blocks
                .get(seq.len / b)
                .is_some_and(|&blk| self.pool.refs(blk) > 1);
        let needed = self.blocks_needed(id, n) + usize::from(partial_shared);
        if needed > self.available_blocks() {
            return Err(KvError::OutOfBlocks {
                needed,
                free: self.available_blocks(),
            });
        }
        while self.pool.free_blocks() < needed {
            self.evict_one();
        }
        if partial_shared {
            let seq = self.seqs.get_mut(&id).expect("checked above");
            let old = seq.blocks[seq.len / b];
            let copy = self.pool.allocate().expect("reserved above");
            self.pool.copy_block(old, copy);
            self.pool.release(old);
            seq.blocks[seq.len / b] = copy;
            self.copies_on_write += 1;
        }
        for _ in 0..self.blocks_needed(id, n) {
            let block = self.pool.allocate().expect("reserved above");
            self.seqs
                .get_mut(&id)
                .expect("checked above")
                .blocks
                .push(block);
        }
        Ok(())
    }
    // ANCHOR_END: reserve

    /// Drops the least recently used prefix-cache block that only the cache holds.
    fn evict_one(&mut self) {
        let victim = self
            .prefix
            .iter()
            .filter(|(_, c)| self.pool.refs(c.block) == 1)
            .min_by_key(|(_, c)| c.last_used)
            .map(|(h, _)| *h);
        if let Some(h) = victim
            && let Some(c) = self.prefix.remove(&h)
        {
            self.pool.release(c.block);
        }
    }

    /// Records the tokens at the sequence's newest positions (after a step), and puts blocks
    /// that became full into the prefix cache.
    pub fn record_tokens(&mut self, id: SeqId, tokens: &[TokenId]) {
        let b = self.pool.block_tokens;
        let Some(seq) = self.seqs.get_mut(&id) else {
            return;
        };
        seq.tokens.extend_from_slice(tokens);
        while (seq.hashes.len() + 1) * b <= seq.tokens.len().min(seq.len) {
            let i = seq.hashes.len();
            let previous = seq.hashes.last().copied().unwrap_or(0);
            let hash = chain_hash(previous, &seq.tokens[i * b..(i + 1) * b]);
            seq.hashes.push(hash);
            let block = seq.blocks[i];
            self.tick += 1;
            if let Some(c) = self.prefix.get_mut(&hash) {
                c.last_used = self.tick;
            } else {
                self.pool.retain(block);
                self.prefix.insert(
                    hash,
                    Cached {
                        block,
                        last_used: self.tick,
                    },
                );
            }
        }
    }

    // ANCHOR: truncate
    /// Keeps the first `len` positions of `id` and forgets the rest (speculative decoding's
    /// rejected drafts): releases the blocks past them and the tokens and prefix hashes they
    /// held. A kept partial block that the prefix cache or a fork shares is copied by the next
    /// [`PagedKv::reserve`] before it is written, so cached blocks never change. Record only
    /// the tokens that stand ([`PagedKv::record_tokens`] after truncating), so that no block of
    /// rejected tokens enters the prefix cache. A `len` at or past the end changes nothing.
    pub fn truncate(&mut self, id: SeqId, len: usize) -> Result<(), KvError> {
        let b = self.pool.block_tokens;
        let seq = self.seqs.get_mut(&id).ok_or(KvError::UnknownSequence(id))?;
        if len >= seq.len {
            return Ok(());
        }
        for block in seq.blocks.drain(len.div_ceil(b)..) {
            self.pool.release(block);
        }
        seq.len = len;
        seq.tokens.truncate(len);
        seq.hashes.truncate(len / b);
        Ok(())
    }
    // ANCHOR_END: truncate

    /// Removes a sequence and releases its blocks (finish, cancel or preemption). Blocks the
    /// prefix cache also holds stay cached.
    pub fn free_sequence(&mut self, id: SeqId) {
        if let Some(seq) = self.seqs.remove(&id) {
            for block in seq.blocks {
                self.pool.release(block);
            }
        }
    }

    /// Empties the prefix cache (its blocks go back to the pool unless a sequence uses them).
    pub fn clear_prefix_cache(&mut self) {
        for (_, c) in self.prefix.drain() {
            self.pool.release(c.block);
        }
    }

    /// Bytes of KV holding positions of live sequences, and bytes of the blocks they hold
    /// (the memory-efficiency ratio of the chapter). Shared blocks count once.
    pub fn occupancy_bytes(&self) -> (usize, usize) {
        let b = self.pool.block_tokens;
        let per_block = self.pool.bytes() / self.pool.total_blocks().max(1);
        let mut seen = std::collections::HashSet::new();
        let (mut used, mut reserved) = (0, 0);
        for seq in self.seqs.values() {
            for (i, &block) in seq.blocks.iter().enumerate() {
                if seen.insert(block) {
                    reserved += per_block;
                    let filled = seq.len.saturating_sub(i * b).min(b);
                    used += per_block * filled / b;
                }
            }
        }
        (used, reserved)
    }

    /// The sequences `ids`, in order, as the KV storage of one forward step.
    pub fn step<'a>(&'a mut self, ids: &'a [SeqId]) -> Result<PagedStep<'a>, KvError> {
        if let Some(&missing) = ids.iter().find(|id| !self.seqs.contains_key(id)) {
            return Err(KvError::UnknownSequence(missing));
        }
        Ok(PagedStep { kv: self, ids })
    }
}

/// The sequences of one step; see [`PagedKv::step`].
pub struct PagedStep<'a> {
    kv: &'a mut PagedKv,
    ids: &'a [SeqId],
}

impl PagedStep<'_> {
    fn seq(&self, s: usize) -> &Sequence {
        &self.kv.seqs[&self.ids[s]]
    }
}

impl KvBatch for PagedStep<'_> {
    fn n_seqs(&self) -> usize {
        self.ids.len()
    }

    fn len(&self, s: usize) -> usize {
        self.seq(s).len
    }

    fn check_room(&self, s: usize, n: usize) -> Result<(), ContextFull> {
        let seq = self.seq(s);
        let capacity = seq.blocks.len() * self.kv.pool.block_tokens;
        if seq.len + n > capacity {
            return Err(ContextFull {
                needed: seq.len + n,
                limit: capacity,
            });
        }
        Ok(())
    }

    fn append(&mut self, s: usize, layer: usize, keys: &[f32], values: &[f32]) {
        let b = self.kv.pool.block_tokens;
        let kv_dim = self.kv.pool.kv_dim();
        let id = self.ids[s];
        let start = self.kv.seqs[&id].len;
        let rows = keys.chunks_exact(kv_dim).zip(values.chunks_exact(kv_dim));
        for (i, (k, v)) in rows.enumerate() {
            let p = start + i;
            let block = self.kv.seqs[&id].blocks[p / b];
            self.kv.pool.write(block, layer, p % b, k, v);
        }
    }

    fn commit(&mut self, s: usize, n: usize) {
        let id = self.ids[s];
        if let Some(seq) = self.kv.seqs.get_mut(&id) {
            seq.len += n;
        }
    }

    fn chunks(&self, s: usize, layer: usize, upto: usize) -> Vec<KvChunk<'_>> {
        let b = self.kv.pool.block_tokens;
        let seq = self.seq(s);
        let mut out = Vec::with_capacity(upto.div_ceil(b));
        let mut covered = 0;
        for &block in &seq.blocks {
            if covered >= upto {
                break;
            }
            let len = (upto - covered).min(b);
            let (keys, values) = self.kv.pool.rows(block, layer, len);
            out.push(KvChunk {
                keys: KvRows::F16(keys),
                values: KvRows::F16(values),
                len,
            });
            covered += len;
        }
        out
    }
}
