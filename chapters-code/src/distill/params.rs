//! The student's weights as one flat `Vec<f32>` (so that the optimizer, the gradient and the
//! finite-difference check each see one vector), cut into named views per block.
//!
//! Layout: block 0's nine tensors, block 1's, …, then the final norm. The token embedding,
//! which is also the output head (tied), is frozen and kept apart in [`Frozen`].

use crate::model::LlamaConfig;

/// The shapes of a student.
#[derive(Debug, Clone, PartialEq)]
pub struct Dims {
    pub n_blocks: usize,
    pub dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub vocab: usize,
    pub rope_dims: usize,
    pub rope_theta: f32,
    pub eps: f32,
}

/// The nine tensors of a block in layout order, by their GGUF names (`blk.N.<name>.weight`).
pub const BLOCK_TENSORS: [&str; 9] = [
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

impl Dims {
    /// A student of `n_blocks` blocks shaped like `c`.
    pub fn of(c: &LlamaConfig, n_blocks: usize) -> Dims {
        Dims {
            n_blocks,
            dim: c.dim,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            ffn_dim: c.ffn_dim,
            vocab: c.vocab_size,
            rope_dims: c.rope_dims,
            rope_theta: c.rope_theta,
            eps: c.rms_eps,
        }
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// `(rows, cols)` of each block tensor, in [`BLOCK_TENSORS`] order (norms are `1 × dim`).
    pub fn block_shapes(&self) -> [(usize, usize); 9] {
        let (d, kv, f) = (self.dim, self.kv_dim(), self.ffn_dim);
        let q = self.n_heads * self.head_dim;
        [
            (1, d),
            (q, d),
            (kv, d),
            (kv, d),
            (d, q),
            (1, d),
            (f, d),
            (f, d),
            (d, f),
        ]
    }

    /// Floats of one block.
    pub fn block_len(&self) -> usize {
        self.block_shapes().iter().map(|(r, c)| r * c).sum()
    }

    /// Floats of all trained parameters (blocks and the final norm).
    pub fn n_params(&self) -> usize {
        self.n_blocks * self.block_len() + self.dim
    }
}

// ANCHOR: block
/// One block's weights (`&[f32]`) or their gradients (`&mut [f32]`), row-major.
pub struct Block<S> {
    pub attn_norm: S, // (dim)
    pub wq: S,        // (n_heads · head_dim, dim)
    pub wk: S,        // (n_kv_heads · head_dim, dim)
    pub wv: S,        // (n_kv_heads · head_dim, dim)
    pub wo: S,        // (dim, n_heads · head_dim)
    pub ffn_norm: S,  // (dim)
    pub w_gate: S,    // (ffn_dim, dim)
    pub w_up: S,      // (ffn_dim, dim)
    pub w_down: S,    // (dim, ffn_dim)
}
// ANCHOR_END: block

impl Dims {
    fn block_range(&self, b: usize) -> std::ops::Range<usize> {
        b * self.block_len()..(b + 1) * self.block_len()
    }

    /// Block `b`'s views into a parameter-shaped vector.
    pub fn block<'a>(&self, params: &'a [f32], b: usize) -> Block<&'a [f32]> {
        let mut rest = &params[self.block_range(b)];
        let mut parts = self.block_shapes().map(|(r, c)| {
            let (head, tail) = rest.split_at(r * c);
            rest = tail;
            head
        });
        let take = |i: usize, parts: &mut [&'a [f32]; 9]| std::mem::take(&mut parts[i]);
        Block {
            attn_norm: take(0, &mut parts),
            wq: take(1, &mut parts),
            wk: take(2, &mut parts),
            wv: take(3, &mut parts),
            wo: take(4, &mut parts),
            ffn_norm: take(5, &mut parts),
            w_gate: take(6, &mut parts),
            w_up: take(7, &mut parts),
            w_down: take(8, &mut parts),
        }
    }

    /// Block `b`'s mutable views.
    pub fn block_mut<'a>(&self, params: &'a mut [f32], b: usize) -> Block<&'a mut [f32]> {
        let mut rest = &mut params[self.block_range(b)];
        let mut parts: Vec<&'a mut [f32]> = Vec::with_capacity(9);
        for (r, c) in self.block_shapes() {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(r * c);
            parts.push(head);
            rest = tail;
        }
        let mut it = parts.into_iter();
        let mut next = || it.next().unwrap_or_default();
        Block {
            attn_norm: next(),
            wq: next(),
            wk: next(),
            wv: next(),
            wo: next(),
            ffn_norm: next(),
            w_gate: next(),
            w_up: next(),
            w_down: next(),
        }
    }

    /// The final norm's weights.
    pub fn output_norm<'a>(&self, params: &'a [f32]) -> &'a [f32] {
        &params[self.n_blocks * self.block_len()..][..self.dim]
    }

    pub fn output_norm_mut<'a>(&self, params: &'a mut [f32]) -> &'a mut [f32] {
        &mut params[self.n_blocks * self.block_len()..][..self.dim]
    }

    /// Which entries are norm weights (the optimizer does not decay them).
    pub fn is_norm(&self, i: usize) -> bool {
        let block = self.n_blocks * self.block_len();
        if i >= block {
            return true;
        }
        let at = i % self.block_len();
        let (d, shapes) = (self.dim, self.block_shapes());
        let ffn_norm_at: usize = shapes[..5].iter().map(|(r, c)| r * c).sum();
        at < d || (ffn_norm_at..ffn_norm_at + d).contains(&at)
    }
}

/// What the student shares with its teacher and never changes: the token embedding, which
/// is also the output head (`vocab × dim`, dequantized to f32).
pub struct Frozen {
    pub embed: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tiny() -> Dims {
        Dims {
            n_blocks: 2,
            dim: 8,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 2,
            ffn_dim: 12,
            vocab: 11,
            rope_dims: 2,
            rope_theta: 10_000.0,
            eps: 1e-5,
        }
    }

    #[test]
    fn views_tile_the_vector_in_order() {
        let d = tiny();
        let params: Vec<f32> = (0..d.n_params()).map(|i| i as f32).collect();
        let b1 = d.block(&params, 1);
        assert_eq!(b1.attn_norm[0] as usize, d.block_len());
        assert_eq!(
            b1.w_down.last().copied(),
            Some((2 * d.block_len() - 1) as f32)
        );
        assert_eq!(d.output_norm(&params)[0] as usize, 2 * d.block_len());
        assert_eq!(b1.ffn_norm.len(), d.dim);
        let norms = (0..d.n_params()).filter(|&i| d.is_norm(i)).count();
        assert_eq!(norms, 5 * d.dim);
        assert!(d.is_norm(d.block(&params, 1).ffn_norm[3] as usize));
        let mut grads = vec![0.0; d.n_params()];
        d.block_mut(&mut grads, 0).wo[0] = 1.0;
        assert_eq!(
            grads.iter().position(|&g| g == 1.0),
            Some(d.block(&params, 0).wo[0] as usize)
        );
    }
}
