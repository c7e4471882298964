//! How a model's matrices are cut into tensor-parallel shards, and the shards' own copies of
//! their slices.

use super::ParallelError;
use crate::formats::GgmlType;
use crate::kernels::matmul::{MatrixError, QMatrix};
use crate::model::LlamaConfig;
use std::ops::Range;

/// What shard `rank` of `n` owns: query heads, KV heads, FFN columns and vocabulary rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRanges {
    pub heads: Range<usize>,
    pub kv_heads: Range<usize>,
    pub ffn: Range<usize>,
    pub vocab: Range<usize>,
}

/// A checked split of one model over `n` shards.
#[derive(Debug, Clone)]
pub struct Plan {
    pub n: usize,
    pub shards: Vec<ShardRanges>,
}

/// Whether `n` shards can split `c` with row blocks of `block` values.
pub(crate) fn fits(c: &LlamaConfig, n: usize, block: u64) -> bool {
    let whole = |cols: usize| cols.is_multiple_of(n) && ((cols / n) as u64).is_multiple_of(block);
    n > 0
        && c.n_heads.is_multiple_of(n)
        && c.n_kv_heads.is_multiple_of(n)
        && whole(c.n_heads * c.head_dim)
        && whole(c.ffn_dim)
}

// ANCHOR: check
/// Ok if `n` shards can split `c` with row blocks of `block` values; else why not.
pub(crate) fn check(c: &LlamaConfig, n: usize, block: u64) -> Result<(), ParallelError> {
    let valid = || super::valid_sizes(c, block);
    if n == 0 {
        return Err(ParallelError::NoShards);
    }
    if !c.n_heads.is_multiple_of(n) {
        return Err(ParallelError::Heads {
            heads: c.n_heads,
            n,
            valid: valid(),
        });
    }
    if !c.n_kv_heads.is_multiple_of(n) {
        return Err(ParallelError::KvHeads {
            kv_heads: c.n_kv_heads,
            n,
            valid: valid(),
        });
    }
    // The row-parallel matrices are cut along their rows' blocks.
    for (what, cols) in [
        ("attn_output", c.n_heads * c.head_dim),
        ("ffn_down", c.ffn_dim),
    ] {
        if !cols.is_multiple_of(n) || !((cols / n) as u64).is_multiple_of(block) {
            return Err(ParallelError::Blocks {
                what: what.into(),
                cols: cols / n,
                block,
                n,
                valid: valid(),
            });
        }
    }
    Ok(())
}
// ANCHOR_END: check

impl Plan {
    /// Splits `c` over `n` shards whose weights come in blocks of `block` values (32 for
    /// Q4_1, 256 for the K-quants).
    pub fn new(c: &LlamaConfig, n: usize, block: u64) -> Result<Plan, ParallelError> {
        check(c, n, block)?;
        let share = |total: usize, r: usize| total * r / n..total * (r + 1) / n;
        let shards = (0..n)
            .map(|r| ShardRanges {
                heads: share(c.n_heads, r),
                kv_heads: share(c.n_kv_heads, r),
                ffn: share(c.ffn_dim, r),
                vocab: share(c.vocab_size, r),
            })
            .collect();
        Ok(Plan { n, shards })
    }

    /// The hyper-parameters one shard's blocks run with: its heads and FFN columns (the
    /// residual width and the vocabulary stay whole).
    pub fn shard_config(&self, c: &LlamaConfig) -> LlamaConfig {
        LlamaConfig {
            n_heads: c.n_heads / self.n,
            n_kv_heads: c.n_kv_heads / self.n,
            ffn_dim: c.ffn_dim / self.n,
            ..c.clone()
        }
    }
}

/// A shard's own copy of a slice of a matrix, stored 8-byte aligned (the kernels view rows as
/// blocks of f16 fields).
pub struct OwnedMatrix {
    name: String,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    words: Vec<u64>,
    bytes: usize,
}

impl OwnedMatrix {
    // ANCHOR: slices
    /// Rows `rows` of `m` (column-parallel: a shard's share of the outputs).
    pub fn rows_of(m: &QMatrix<'_>, rows: Range<usize>) -> OwnedMatrix {
        let bytes = (rows.start..rows.end).flat_map(|r| m.row(r).iter().copied());
        Self::collect(m, rows.len(), m.cols, bytes)
    }

    /// Columns `cols` of every row of `m` (row-parallel: a shard's share of the inputs);
    /// `cols` must fall on block boundaries (checked by [`Plan::new`]).
    pub fn cols_of(m: &QMatrix<'_>, cols: Range<usize>) -> OwnedMatrix {
        let per_block = m.ty.type_size() as usize;
        let block = m.ty.block_size() as usize;
        let bytes = cols.start / block * per_block..cols.end / block * per_block;
        let all = (0..m.rows).flat_map(|r| m.row(r)[bytes.clone()].iter().copied());
        Self::collect(m, m.rows, cols.len(), all)
    }
    // ANCHOR_END: slices

    fn collect(
        m: &QMatrix<'_>,
        rows: usize,
        cols: usize,
        bytes: impl Iterator<Item = u8>,
    ) -> OwnedMatrix {
        let bytes: Vec<u8> = bytes.collect();
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_ne_bytes(b);
        }
        OwnedMatrix {
            name: m.name.to_string(),
            ty: m.ty,
            rows,
            cols,
            words,
            bytes: bytes.len(),
        }
    }

    /// `m` dequantized to f32, whole: a model without activation rounding, to check that a
    /// split changes nothing but the order of additions.
    pub fn dequantized(m: &QMatrix<'_>) -> OwnedMatrix {
        let mut row = vec![0.0f32; m.cols];
        let bytes = (0..m.rows).flat_map(|r| {
            m.row_f32(r, &mut row);
            row.iter()
                .flat_map(|v| v.to_ne_bytes())
                .collect::<Vec<u8>>()
        });
        let mut out = Self::collect(m, m.rows, m.cols, bytes);
        out.ty = GgmlType::F32;
        out
    }

    /// Bytes of weights held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The slice as a matrix the kernels multiply.
    pub fn view(&self) -> Result<QMatrix<'_>, MatrixError> {
        // SAFETY: a u64 slice is readable as bytes; `bytes` ≤ 8 · words.len().
        let data =
            unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.bytes) };
        QMatrix::from_parts(&self.name, self.ty, self.rows, self.cols, data)
    }
}
