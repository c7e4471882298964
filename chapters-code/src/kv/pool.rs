//! The block pool: all KV memory, allocated once, handed out block by block.

use crate::model::LlamaConfig;
use crate::quant::f32_to_f16;

/// Index of a block in the pool.
pub type BlockId = u32;

// ANCHOR: block_pool
/// Fixed-size blocks of keys and values for every layer. A block holds `block_tokens`
/// positions; its keys for one layer are `block_tokens` contiguous rows of `kv_dim` f16.
pub struct BlockPool {
    pub block_tokens: usize,
    n_layers: usize,
    kv_dim: usize,
    /// (n_blocks, n_layers, block_tokens, kv_dim) f16 bits.
    keys: Vec<u16>,
    /// Same shape as `keys`.
    values: Vec<u16>,
    /// References to each block: block tables and the prefix cache. 0 = free.
    refs: Vec<u32>,
    /// Free blocks, taken from the end.
    free: Vec<BlockId>,
}
// ANCHOR_END: block_pool

impl BlockPool {
    /// Bytes one block takes (keys and values, all layers).
    pub fn bytes_per_block(config: &LlamaConfig, block_tokens: usize) -> usize {
        2 * config.n_layers * block_tokens * config.kv_dim() * std::mem::size_of::<u16>()
    }

    /// As many blocks as fit in `budget_bytes` (at least one).
    pub fn with_budget(
        config: &LlamaConfig,
        block_tokens: usize,
        budget_bytes: usize,
    ) -> BlockPool {
        Self::new(
            config,
            block_tokens,
            Self::blocks_in_budget(config, block_tokens, budget_bytes),
        )
    }

    /// How many blocks `budget_bytes` buys (at least one), without allocating them.
    pub fn blocks_in_budget(
        config: &LlamaConfig,
        block_tokens: usize,
        budget_bytes: usize,
    ) -> usize {
        (budget_bytes / Self::bytes_per_block(config, block_tokens.max(1))).max(1)
    }

    /// A pool of `n_blocks` blocks of `block_tokens` positions.
    pub fn new(config: &LlamaConfig, block_tokens: usize, n_blocks: usize) -> BlockPool {
        let block_tokens = block_tokens.max(1);
        let len = n_blocks * config.n_layers * block_tokens * config.kv_dim();
        BlockPool {
            block_tokens,
            n_layers: config.n_layers,
            kv_dim: config.kv_dim(),
            keys: vec![0; len],
            values: vec![0; len],
            refs: vec![0; n_blocks],
            free: (0..n_blocks as BlockId).rev().collect(),
        }
    }

    /// Width of one position's keys (or values): KV heads × head size.
    pub fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    pub fn total_blocks(&self) -> usize {
        self.refs.len()
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    pub fn used_blocks(&self) -> usize {
        self.total_blocks() - self.free_blocks()
    }

    /// Bytes reserved by the whole pool.
    pub fn bytes(&self) -> usize {
        (self.keys.len() + self.values.len()) * std::mem::size_of::<u16>()
    }

    /// A free block with one reference, or `None` when the pool is full.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let b = self.free.pop()?;
        self.refs[b as usize] = 1;
        Some(b)
    }

    /// One more reference to a block in use.
    pub fn retain(&mut self, b: BlockId) {
        debug_assert!(self.refs[b as usize] > 0, "retain of a free block");
        self.refs[b as usize] += 1;
    }

    /// One reference less; the block is free again at zero.
    pub fn release(&mut self, b: BlockId) {
        let r = &mut self.refs[b as usize];
        debug_assert!(*r > 0, "release of a free block");
        *r = r.saturating_sub(1);
        if *r == 0 {
            self.free.push(b);
        }
    }

    /// References to a block.
    pub fn refs(&self, b: BlockId) -> u32 {
        self.refs[b as usize]
    }

    fn offset(&self, b: BlockId, layer: usize, slot: usize) -> usize {
        ((b as usize * self.n_layers + layer) * self.block_tokens + slot) * self.kv_dim
    }

    /// Writes one position's key and value (rounded to f16) into `slot` of block `b`.
    pub fn write(&mut self, b: BlockId, layer: usize, slot: usize, key: &[f32], value: &[f32]) {
        let at = self.offset(b, layer, slot);
        for (dst, &x) in self.keys[at..at + self.kv_dim].iter_mut().zip(key) {
            *dst = f32_to_f16(x);
        }
        for (dst, &x) in self.values[at..at + self.kv_dim].iter_mut().zip(value) {
            *dst = f32_to_f16(x);
        }
    }

    /// Keys and values of the first `slots` positions of block `b` for `layer`
    /// (slots × kv_dim each).
    pub fn rows(&self, b: BlockId, layer: usize, slots: usize) -> (&[u16], &[u16]) {
        let at = self.offset(b, layer, 0);
        let len = slots * self.kv_dim;
        (&self.keys[at..at + len], &self.values[at..at + len])
    }

    /// Copies block `from` into `to` (all layers): the copy of copy-on-write.
    pub fn copy_block(&mut self, from: BlockId, to: BlockId) {
        let size = self.n_layers * self.block_tokens * self.kv_dim;
        let (src, dst) = (self.offset(from, 0, 0), self.offset(to, 0, 0));
        self.keys.copy_within(src..src + size, dst);
        self.values.copy_within(src..src + size, dst);
    }
}
