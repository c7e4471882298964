//! The student's forward pass over one sequence, keeping what the backward pass needs, and
//! the backward pass itself: from the loss at every position back through the head, the
//! final norm and each block, into the gradient of every trained weight.

use super::gemm::{Op, gemm};
use super::layers::{
    Heads, RopeTable, attention, attention_backward, rmsnorm, rmsnorm_backward, swiglu,
    swiglu_backward,
};
use super::loss::{Objective, Target, Terms, loss_and_grad};
use super::params::{Block, Dims, Frozen};
use crate::kernels::pool::ThreadPool;
use crate::tokenizer::TokenId;
use std::sync::Mutex;

/// What one block's forward pass keeps for its backward pass (`T` rows each).
struct Saved {
    x: Vec<f32>,     // (T, dim) block input
    r1: Vec<f32>,    // (T) attention norm's 1/rms
    xn1: Vec<f32>,   // (T, dim)
    q: Vec<f32>,     // (T, n_heads·hd), after RoPE
    k: Vec<f32>,     // (T, kv_dim), after RoPE
    v: Vec<f32>,     // (T, kv_dim)
    probs: Vec<f32>, // (n_heads, T, T)
    att: Vec<f32>,   // (T, n_heads·hd)
    x_mid: Vec<f32>, // (T, dim) after the attention's residual
    r2: Vec<f32>,    // (T)
    xn2: Vec<f32>,   // (T, dim)
    gate: Vec<f32>,  // (T, ffn_dim) before SiLU
    up: Vec<f32>,    // (T, ffn_dim)
    h: Vec<f32>,     // (T, ffn_dim) SwiGLU output
}

/// The model's pieces a pass needs.
pub struct Net<'a> {
    pub dims: &'a Dims,
    pub params: &'a [f32],
    pub frozen: &'a Frozen,
    pub rope: &'a RopeTable,
}

impl Net<'_> {
    fn heads(&self) -> Heads {
        Heads {
            n_heads: self.dims.n_heads,
            n_kv_heads: self.dims.n_kv_heads,
            head_dim: self.dims.head_dim,
        }
    }

    /// y = x·Wᵀ: `x` is `T × cols`, `w` is `rows × cols`, `y` is `T × rows`.
    fn linear(pool: &ThreadPool, x: &[f32], w: &[f32], cols: usize, y: &mut [f32]) {
        let (t, rows) = (x.len() / cols, w.len() / cols);
        gemm(pool, t, cols, rows, x, Op::N, w, Op::T, 0.0, y);
    }

    /// Backward of y = x·Wᵀ: dx (+)= dy·W (`beta` 0 writes, 1 adds), dW += dyᵀ·x.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        pool: &ThreadPool,
        x: &[f32],
        w: &[f32],
        cols: usize,
        dy: &[f32],
        dx: &mut [f32],
        beta: f32,
        dw: &mut [f32],
    ) {
        let (t, rows) = (x.len() / cols, w.len() / cols);
        gemm(pool, t, rows, cols, dy, Op::N, w, Op::N, beta, dx);
        gemm(pool, rows, t, cols, dy, Op::T, x, Op::N, 1.0, dw);
    }

    fn block_forward(
        &self,
        pool: &ThreadPool,
        b: &Block<&[f32]>,
        x: Vec<f32>,
    ) -> (Saved, Vec<f32>) {
        let d = self.dims;
        let (t, dim, kvd, f) = (x.len() / d.dim, d.dim, d.kv_dim(), d.ffn_dim);
        let qd = d.n_heads * d.head_dim;
        let mut xn1 = vec![0.0; t * dim];
        let r1 = rmsnorm(&x, b.attn_norm, d.eps, &mut xn1);
        let (mut q, mut k, mut v) = (vec![0.0; t * qd], vec![0.0; t * kvd], vec![0.0; t * kvd]);
        Self::linear(pool, &xn1, b.wq, dim, &mut q);
        Self::linear(pool, &xn1, b.wk, dim, &mut k);
        Self::linear(pool, &xn1, b.wv, dim, &mut v);
        self.rope.apply(&mut q, d.n_heads, d.head_dim, false);
        self.rope.apply(&mut k, d.n_kv_heads, d.head_dim, false);
        let mut att = vec![0.0; t * qd];
        let probs = attention(self.heads(), &q, &k, &v, &mut att);
        let mut x_mid = vec![0.0; t * dim];
        Self::linear(pool, &att, b.wo, qd, &mut x_mid);
        for (m, &xi) in x_mid.iter_mut().zip(&x) {
            *m += xi;
        }
        let mut xn2 = vec![0.0; t * dim];
        let r2 = rmsnorm(&x_mid, b.ffn_norm, d.eps, &mut xn2);
        let (mut gate, mut up, mut h) = (vec![0.0; t * f], vec![0.0; t * f], vec![0.0; t * f]);
        Self::linear(pool, &xn2, b.w_gate, dim, &mut gate);
        Self::linear(pool, &xn2, b.w_up, dim, &mut up);
        swiglu(&gate, &up, &mut h);
        let mut out = vec![0.0; t * dim];
        Self::linear(pool, &h, b.w_down, f, &mut out);
        for (o, &m) in out.iter_mut().zip(&x_mid) {
            *o += m;
        }
        let saved = Saved {
            x,
            r1,
            xn1,
            q,
            k,
            v,
            probs,
            att,
            x_mid,
            r2,
            xn2,
            gate,
            up,
            h,
        };
        (saved, out)
    }

    /// Given d(block output), returns d(block input) and adds the weights' gradients to `g`.
    fn block_backward(
        &self,
        pool: &ThreadPool,
        b: &Block<&[f32]>,
        s: &Saved,
        d_out: Vec<f32>,
        g: &mut Block<&mut [f32]>,
    ) -> Vec<f32> {
        let d = self.dims;
        let (t, dim, kvd, f) = (s.x.len() / d.dim, d.dim, d.kv_dim(), d.ffn_dim);
        let qd = d.n_heads * d.head_dim;
        // Feed-forward: out = x_mid + h·W_downᵀ.
        let mut dh = vec![0.0; t * f];
        Self::linear_backward(pool, &s.h, b.w_down, f, &d_out, &mut dh, 0.0, g.w_down);
        let (mut d_gate, mut d_up) = (vec![0.0; t * f], vec![0.0; t * f]);
        swiglu_backward(&s.gate, &s.up, &dh, &mut d_gate, &mut d_up);
        let mut dxn2 = vec![0.0; t * dim];
        Self::linear_backward(
            pool, &s.xn2, b.w_gate, dim, &d_gate, &mut dxn2, 0.0, g.w_gate,
        );
        Self::linear_backward(pool, &s.xn2, b.w_up, dim, &d_up, &mut dxn2, 1.0, g.w_up);
        let mut dx_mid = d_out;
        rmsnorm_backward(&s.x_mid, b.ffn_norm, &s.r2, &dxn2, &mut dx_mid, g.ffn_norm);
        // Attention: x_mid = x + att·Woᵀ.
        let mut d_att = vec![0.0; t * qd];
        Self::linear_backward(pool, &s.att, b.wo, qd, &dx_mid, &mut d_att, 0.0, g.wo);
        let (mut dq, mut dk, mut dv) = (vec![0.0; t * qd], vec![0.0; t * kvd], vec![0.0; t * kvd]);
        attention_backward(
            self.heads(),
            &s.q,
            &s.k,
            &s.v,
            &s.probs,
            &d_att,
            &mut dq,
            &mut dk,
            &mut dv,
        );
        self.rope.apply(&mut dq, d.n_heads, d.head_dim, true);
        self.rope.apply(&mut dk, d.n_kv_heads, d.head_dim, true);
        let mut dxn1 = vec![0.0; t * dim];
        Self::linear_backward(pool, &s.xn1, b.wq, dim, &dq, &mut dxn1, 0.0, g.wq);
        Self::linear_backward(pool, &s.xn1, b.wk, dim, &dk, &mut dxn1, 1.0, g.wk);
        Self::linear_backward(pool, &s.xn1, b.wv, dim, &dv, &mut dxn1, 1.0, g.wv);
        let mut dx = dx_mid;
        rmsnorm_backward(&s.x, b.attn_norm, &s.r1, &dxn1, &mut dx, g.attn_norm);
        dx
    }

    fn embed(&self, tokens: &[TokenId]) -> Vec<f32> {
        let dim = self.dims.dim;
        let mut x = Vec::with_capacity(tokens.len() * dim);
        for &id in tokens {
            x.extend_from_slice(&self.frozen.embed[id as usize * dim..][..dim]);
        }
        x
    }

    // ANCHOR: train_sequence
    /// Forward and backward over one sequence: `inputs[t]` predicts `targets[t]`. Adds
    /// `scale · ∂loss/∂params` to `grads` and returns the summed loss terms of its positions.
    pub fn train_sequence(
        &self,
        pool: &ThreadPool,
        obj: &Objective,
        inputs: &[TokenId],
        targets: &[Target],
        scale: f32,
        grads: &mut [f32],
    ) -> Terms {
        let d = self.dims;
        let mut x = self.embed(inputs);
        let mut saved = Vec::with_capacity(d.n_blocks);
        for l in 0..d.n_blocks {
            let (s, out) = self.block_forward(pool, &d.block(self.params, l), x);
            saved.push(s);
            x = out;
        }
        let (terms, mut dx) = self.head(pool, obj, &x, targets, scale, grads);
        for l in (0..d.n_blocks).rev() {
            let mut g = d.block_mut(grads, l);
            dx = self.block_backward(pool, &d.block(self.params, l), &saved[l], dx, &mut g);
        }
        terms
    }
    // ANCHOR_END: train_sequence

    /// Forward only: the summed loss terms of a sequence (held-out loss, gradient checks).
    pub fn loss(
        &self,
        pool: &ThreadPool,
        obj: &Objective,
        inputs: &[TokenId],
        targets: &[Target],
    ) -> Terms {
        let d = self.dims;
        let mut x = self.embed(inputs);
        for l in 0..d.n_blocks {
            x = self.block_forward(pool, &d.block(self.params, l), x).1;
        }
        let mut scratch = vec![0.0; d.n_params()];
        self.head(pool, obj, &x, targets, 1.0, &mut scratch).0
    }

    /// Final norm, tied head and loss; returns the loss terms and d(last block's output), and
    /// adds the final norm's gradient. Rows go through the head 32 at a time (a 32 × vocab
    /// block of logits, not T × vocab).
    fn head(
        &self,
        pool: &ThreadPool,
        obj: &Objective,
        x: &[f32],
        targets: &[Target],
        scale: f32,
        grads: &mut [f32],
    ) -> (Terms, Vec<f32>) {
        let d = self.dims;
        let (dim, vocab) = (d.dim, d.vocab);
        let norm_w = d.output_norm(self.params);
        let mut xn = vec![0.0; x.len()];
        let r = rmsnorm(x, norm_w, d.eps, &mut xn);
        let mut dxn = vec![0.0; x.len()];
        let mut terms = Terms::default();
        const ROWS: usize = 32;
        let mut logits = vec![0.0f32; ROWS * vocab];
        for (c, (rows, d_rows)) in xn
            .chunks(ROWS * dim)
            .zip(dxn.chunks_mut(ROWS * dim))
            .enumerate()
        {
            let n = rows.len() / dim;
            let logits = &mut logits[..n * vocab];
            gemm(
                pool,
                n,
                dim,
                vocab,
                rows,
                Op::N,
                &self.frozen.embed,
                Op::T,
                0.0,
                logits,
            );
            // The rows' losses in parallel (a softmax over the vocabulary each), summed in
            // row order.
            let slots: Vec<Mutex<(&mut [f32], Terms)>> = logits
                .chunks_exact_mut(vocab)
                .map(|row| Mutex::new((row, Terms::default())))
                .collect();
            pool.run(slots.len(), &|i| {
                let mut slot = slots[i].lock().unwrap_or_else(|e| e.into_inner());
                let (row, out) = &mut *slot;
                *out = loss_and_grad(obj, row, &targets[c * ROWS + i], scale);
            });
            for slot in slots {
                terms += slot.into_inner().unwrap_or_else(|e| e.into_inner()).1;
            }
            gemm(
                pool,
                n,
                vocab,
                dim,
                logits,
                Op::N,
                &self.frozen.embed,
                Op::N,
                0.0,
                d_rows,
            );
        }
        let mut dx = vec![0.0; x.len()];
        rmsnorm_backward(x, norm_w, &r, &dxn, &mut dx, d.output_norm_mut(grads));
        (terms, dx)
    }
}
