//! What attention reads from a KV cache, whatever its layout: store the keys and values of new
//! positions, and hand back those of earlier positions as contiguous chunks. The contiguous
//! cache of one sequence (`model::KvCache`) and the paged cache of many (`kv::PagedKv`) both
//! implement it; attention depends on this interface only, so data flows one way:
//! model → attention → cache.

use crate::quant::{BlockQ8_0, QK};

/// A sequence would grow past what its cache may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the sequence needs {needed} positions, the KV cache holds at most {limit}")]
pub struct ContextFull {
    pub needed: usize,
    pub limit: usize,
}

/// Rows of keys or values, `kv_dim` values each, as a cache stores them.
#[derive(Clone, Copy)]
pub enum KvRows<'a> {
    /// f16 bits, `kv_dim` per row.
    F16(&'a [u16]),
    /// Q8_0 blocks, `kv_dim / 32` per row.
    Q8_0(&'a [BlockQ8_0]),
}

impl<'a> KvRows<'a> {
    /// The f16 rows, if stored as f16.
    pub fn as_f16(self) -> Option<&'a [u16]> {
        match self {
            KvRows::F16(v) => Some(v),
            KvRows::Q8_0(_) => None,
        }
    }

    /// Columns `cols` of row `row`, e.g. one head's part of it (for Q8_0, `cols` must start
    /// and end on multiples of 32).
    pub fn slice(self, row: usize, kv_dim: usize, cols: std::ops::Range<usize>) -> KvRows<'a> {
        match self {
            KvRows::F16(v) => KvRows::F16(&v[row * kv_dim..(row + 1) * kv_dim][cols]),
            KvRows::Q8_0(v) => {
                let per_row = kv_dim / QK;
                KvRows::Q8_0(&v[row * per_row..(row + 1) * per_row][cols.start / QK..cols.end / QK])
            }
        }
    }
}

/// Consecutive positions stored contiguously: `len` rows of keys and of values.
#[derive(Clone, Copy)]
pub struct KvChunk<'a> {
    pub keys: KvRows<'a>,
    pub values: KvRows<'a>,
    pub len: usize,
}

// ANCHOR: kv_batch
/// The KV storage of the sequences in one forward step. Sequence `s` holds `len(s)` positions
/// before the step; the step appends its new tokens' keys and values layer by layer, reads
/// them back for attention, then commits them.
pub trait KvBatch: Sync {
    /// Sequences in the step.
    fn n_seqs(&self) -> usize;
    /// Positions sequence `s` holds before the step.
    fn len(&self, s: usize) -> usize;
    /// Fails unless `n` more positions fit in sequence `s`.
    fn check_room(&self, s: usize, n: usize) -> Result<(), ContextFull>;
    /// Stores the keys and values (f32, rounded to the cache's precision) of sequence `s`'s
    /// new positions at `layer`: `n × kv_dim` each.
    fn append(&mut self, s: usize, layer: usize, keys: &[f32], values: &[f32]);
    /// Counts the `n` new positions of sequence `s`, once every layer has appended them.
    fn commit(&mut self, s: usize, n: usize);
    /// Keys and values of positions `0..upto` of sequence `s` at `layer`, in order.
    fn chunks(&self, s: usize, layer: usize, upto: usize) -> Vec<KvChunk<'_>>;
}
// ANCHOR_END: kv_batch
