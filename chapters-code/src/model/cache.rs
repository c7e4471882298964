//! The contiguous KV cache of one sequence: for every layer, the keys and values of every
//! position so far, so that decoding a token attends to the past without recomputing it.
//! Stored as f16 by default, like llama.cpp's default cache: half the memory of f32, and the
//! same rounding as the reference; or as Q8_0 blocks (`--cache-type-k q8_0` in llama.cpp),
//! about half of that again. (The paged cache of the serving chapters replaces this with
//! blocks of f16.)

use super::config::{LlamaConfig, ModelError};
use crate::attention::{ContextFull, KvBatch, KvChunk, KvRows};
use crate::quant::quantize::quantize_acts_q8_0;
use crate::quant::{BlockQ8_0, QK, f32_to_f16};

// ANCHOR: kv_precision
/// How a KV cache stores each key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvPrecision {
    /// 16-bit floats: 2 bytes per value.
    #[default]
    F16,
    /// Q8_0 blocks: 32 values in 34 bytes (an f16 scale and 32 signed bytes), 8.5 bits per
    /// value. Each row of `kv_dim` is quantized on its own, so a block never spans two heads
    /// when the head size is a multiple of 32.
    Q8_0,
}
// ANCHOR_END: kv_precision

impl KvPrecision {
    pub const ALL: [KvPrecision; 2] = [KvPrecision::F16, KvPrecision::Q8_0];

    pub fn name(self) -> &'static str {
        match self {
            KvPrecision::F16 => "f16",
            KvPrecision::Q8_0 => "q8_0",
        }
    }

    /// Parses a name as [`KvPrecision::name`] writes it (any case).
    pub fn parse(name: &str) -> Option<KvPrecision> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Bytes of one row of `kv_dim` values.
    pub fn row_bytes(self, kv_dim: usize) -> usize {
        match self {
            KvPrecision::F16 => 2 * kv_dim,
            KvPrecision::Q8_0 => kv_dim / QK * std::mem::size_of::<BlockQ8_0>(),
        }
    }
}

impl std::fmt::Display for KvPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The rows of one layer's keys or values.
#[derive(Clone)]
enum Rows {
    /// (len, kv_dim) f16 bits.
    F16(Vec<u16>),
    /// (len, kv_dim / 32) blocks.
    Q8_0(Vec<BlockQ8_0>),
}

impl Rows {
    fn new(precision: KvPrecision) -> Rows {
        match precision {
            KvPrecision::F16 => Rows::F16(Vec::new()),
            KvPrecision::Q8_0 => Rows::Q8_0(Vec::new()),
        }
    }

    fn push(&mut self, x: &[f32]) {
        match self {
            Rows::F16(v) => v.extend(x.iter().map(|&x| f32_to_f16(x))),
            Rows::Q8_0(v) => v.extend(quantize_acts_q8_0(x)),
        }
    }

    /// Keeps the first `n` elements (f16 values or blocks).
    fn truncate_units(&mut self, n: usize) {
        match self {
            Rows::F16(v) => v.truncate(n),
            Rows::Q8_0(v) => v.truncate(n),
        }
    }

    fn clear(&mut self) {
        self.truncate_units(0);
    }

    fn bytes(&self) -> usize {
        match self {
            Rows::F16(v) => std::mem::size_of_val(v.as_slice()),
            Rows::Q8_0(v) => std::mem::size_of_val(v.as_slice()),
        }
    }

    /// The first `n` elements (f16 values or blocks).
    fn view(&self, n: usize) -> KvRows<'_> {
        match self {
            Rows::F16(v) => KvRows::F16(&v[..n]),
            Rows::Q8_0(v) => KvRows::Q8_0(&v[..n]),
        }
    }
}

// ANCHOR: kv_cache
/// Keys and values of positions `0..len`, per layer, each row `kv_dim` values stored at
/// `precision`.
pub struct KvCache {
    /// keys[layer]: (len, kv_dim), row-major.
    keys: Vec<Rows>,
    /// values[layer]: (len, kv_dim).
    values: Vec<Rows>,
    precision: KvPrecision,
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

    /// An empty f16 cache that may grow to `limit` positions (at most the context length).
    pub fn with_limit(config: &LlamaConfig, limit: usize) -> KvCache {
        Self::empty(config, limit, KvPrecision::F16)
    }

    /// An empty cache at `precision` that may grow to `limit` positions. Q8_0 needs a head
    /// size that is a multiple of 32.
    pub fn with_precision(
        config: &LlamaConfig,
        limit: usize,
        precision: KvPrecision,
    ) -> Result<KvCache, ModelError> {
        if precision == KvPrecision::Q8_0 && !config.head_dim.is_multiple_of(QK) {
            return Err(ModelError::BadConfig(format!(
                "a Q8_0 KV cache needs a head size that is a multiple of {QK}; this model's is {}",
                config.head_dim
            )));
        }
        Ok(Self::empty(config, limit, precision))
    }

    fn empty(config: &LlamaConfig, limit: usize, precision: KvPrecision) -> KvCache {
        KvCache {
            keys: vec![Rows::new(precision); config.n_layers],
            values: vec![Rows::new(precision); config.n_layers],
            precision,
            kv_dim: config.kv_dim(),
            len: 0,
            limit: limit.min(config.context_length),
        }
    }

    /// How keys and values are stored.
    pub fn precision(&self) -> KvPrecision {
        self.precision
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
        self.keys.iter().chain(&self.values).map(Rows::bytes).sum()
    }

    /// Forgets everything (the allocation is kept).
    pub fn clear(&mut self) {
        self.keys
            .iter_mut()
            .chain(self.values.iter_mut())
            .for_each(Rows::clear);
        self.len = 0;
    }

    /// Fails unless `n` more positions fit.
    pub fn check_room(&self, n: usize) -> Result<(), ContextFull> {
        let needed = self.len + n;
        if needed > self.limit {
            return Err(ContextFull {
                needed,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// Appends rows of keys and values of `layer` (n × kv_dim each), rounded to the cache's
    /// precision. Every layer must get the same number of rows before [`KvCache::commit`].
    pub fn append(&mut self, layer: usize, keys: &[f32], values: &[f32]) {
        self.keys[layer].push(keys);
        self.values[layer].push(values);
    }

    /// Counts the `n` positions appended to every layer.
    pub fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// f16 values or Q8_0 blocks per position.
    fn units_per_row(&self) -> usize {
        match self.precision {
            KvPrecision::F16 => self.kv_dim,
            KvPrecision::Q8_0 => self.kv_dim / QK,
        }
    }

    /// Keys of `layer` for positions `0..n` (n × kv_dim).
    pub fn keys(&self, layer: usize, n: usize) -> KvRows<'_> {
        self.keys[layer].view(n * self.units_per_row())
    }

    /// Values of `layer` for positions `0..n`.
    pub fn values(&self, layer: usize, n: usize) -> KvRows<'_> {
        self.values[layer].view(n * self.units_per_row())
    }

    /// Drops positions from `len` on (to rewind a sequence).
    pub fn truncate(&mut self, len: usize) {
        let len = len.min(self.len);
        let units = len * self.units_per_row();
        for v in self.keys.iter_mut().chain(self.values.iter_mut()) {
            v.truncate_units(units);
        }
        self.len = len;
    }
}

/// The contiguous cache holds one sequence: index 0.
impl KvBatch for KvCache {
    fn n_seqs(&self) -> usize {
        1
    }

    fn len(&self, _s: usize) -> usize {
        KvCache::len(self)
    }

    fn check_room(&self, _s: usize, n: usize) -> Result<(), ContextFull> {
        KvCache::check_room(self, n)
    }

    fn append(&mut self, _s: usize, layer: usize, keys: &[f32], values: &[f32]) {
        KvCache::append(self, layer, keys, values);
    }

    fn commit(&mut self, _s: usize, n: usize) {
        KvCache::commit(self, n);
    }

    fn chunks(&self, _s: usize, layer: usize, upto: usize) -> Vec<KvChunk<'_>> {
        vec![KvChunk {
            keys: self.keys(layer, upto),
            values: self.values(layer, upto),
            len: upto,
        }]
    }
}
