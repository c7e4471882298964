//! The contiguous KV cache of one sequence: for every layer, the keys and values of every
//! position so far, so that decoding a token attends to the past without recomputing it.
//! Stored as f16, like llama.cpp's default cache: half the memory of f32, and the same
//! rounding as the reference. (The paged cache of the serving chapters replaces this with
//! blocks.)

use super::config::{LlamaConfig, ModelError};
use crate::quant::f32_to_f16;

// ANCHOR: kv_cache
/// Keys and values of positions `0..len`, per layer, each row `kv_dim` f16 values.
pub struct KvCache {
    /// keys[layer]: (len, kv_dim), row-major, f16 bits.
    keys: Vec<Vec<u16>>,
    /// values[layer]: (len, kv_dim), f16 bits.
    values: Vec<Vec<u16>>,
    kv_dim: usize,
    len: usize,
    limit: usize,
}
// ANCHOR_END: kv_cache

impl KvCache {
    /// An empty cache that may grow to the model's context length.
    pub fn new(config: &LlamaConfig) -> KvCache {
        Self::with_limit(config, config.context_length)
    }

    /// An empty cache that may grow to `limit` positions (at most the context length).
    pub fn with_limit(config: &LlamaConfig, limit: usize) -> KvCache {
        KvCache {
            keys: vec![Vec::new(); config.n_layers],
            values: vec![Vec::new(); config.n_layers],
            kv_dim: config.kv_dim(),
            len: 0,
            limit: limit.min(config.context_length),
        }
    }

    /// Positions stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most positions this cache may hold.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held by keys and values.
    pub fn bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|v| v.len() * 2)
            .sum()
    }

    /// Forgets everything (the allocation is kept).
    pub fn clear(&mut self) {
        self.keys
            .iter_mut()
            .chain(self.values.iter_mut())
            .for_each(Vec::clear);
        self.len = 0;
    }

    /// Fails unless `n` more positions fit.
    pub fn check_room(&self, n: usize) -> Result<(), ModelError> {
        let needed = self.len + n;
        if needed > self.limit {
            return Err(ModelError::ContextFull {
                needed,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// Appends rows of keys and values of `layer` (n × kv_dim each), rounded to f16. Every
    /// layer must get the same number of rows before [`KvCache::commit`].
    pub fn append(&mut self, layer: usize, keys: &[f32], values: &[f32]) {
        self.keys[layer].extend(keys.iter().map(|&x| f32_to_f16(x)));
        self.values[layer].extend(values.iter().map(|&x| f32_to_f16(x)));
    }

    /// Counts the `n` positions appended to every layer.
    pub fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// Keys of `layer` for positions `0..n` (n × kv_dim).
    pub fn keys(&self, layer: usize, n: usize) -> &[u16] {
        &self.keys[layer][..n * self.kv_dim]
    }

    /// Values of `layer` for positions `0..n`.
    pub fn values(&self, layer: usize, n: usize) -> &[u16] {
        &self.values[layer][..n * self.kv_dim]
    }

    /// Drops positions from `len` on (to rewind a sequence).
    pub fn truncate(&mut self, len: usize) {
        let len = len.min(self.len);
        for v in self.keys.iter_mut().chain(self.values.iter_mut()) {
            v.truncate(len * self.kv_dim);
        }
        self.len = len;
    }
}
