//! Forward and backward of the small operations of a Llama block, for one sequence of `T`
//! tokens (row `t` = position `t`). Each backward takes what its forward saved and the
//! gradient of the output, and returns (or accumulates) the gradients of the inputs and
//! weights. The forward formulas are the engine's ([`crate::model::ops`]), in plain f32.

// ANCHOR: rmsnorm
/// y = x · r · w with r = 1/√(mean(x²) + eps), per row of `w.len()`; returns r per row.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) -> Vec<f32> {
    let d = w.len();
    let mut scales = Vec::with_capacity(x.len() / d);
    for (row, out) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let ss: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let r = 1.0 / ((ss / d as f64) as f32 + eps).sqrt();
        for ((o, &v), &g) in out.iter_mut().zip(row).zip(w) {
            *o = v * r * g;
        }
        scales.push(r);
    }
    scales
}

/// Given dy: dx = r·(dy⊙w) − x·r³/d·Σ(dy⊙w⊙x) is **added** to `dx`, and dw += Σ_rows dy⊙x·r.
pub fn rmsnorm_backward(
    x: &[f32],
    w: &[f32],
    r: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
) {
    let d = w.len();
    for (((row, dyr), dxr), &r) in x
        .chunks_exact(d)
        .zip(dy.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
        .zip(r)
    {
        let dot: f32 = row
            .iter()
            .zip(dyr)
            .zip(w)
            .map(|((&x, &g), &w)| x * g * w)
            .sum();
        let c = r * r * r * dot / d as f32;
        for i in 0..d {
            dxr[i] += r * dyr[i] * w[i] - row[i] * c;
            dw[i] += dyr[i] * row[i] * r;
        }
    }
}
// ANCHOR_END: rmsnorm

// ANCHOR: rope
/// cos and sin of every (position, pair) angle: pos · θ^(−2i/rope_dims), `T × rope_dims/2`.
pub struct RopeTable {
    cos_sin: Vec<(f32, f32)>,
    pairs: usize,
}

impl RopeTable {
    pub fn new(len: usize, rope_dims: usize, theta: f32) -> RopeTable {
        let pairs = rope_dims / 2;
        let scale = theta.powf(-2.0 / rope_dims as f32);
        let mut cos_sin = Vec::with_capacity(len * pairs);
        for pos in 0..len {
            let mut angle = pos as f32;
            for _ in 0..pairs {
                cos_sin.push((angle.cos(), angle.sin()));
                angle *= scale;
            }
        }
        RopeTable { cos_sin, pairs }
    }

    /// Rotates each head's first pairs in `x` (`T × n_heads·head_dim`, row t at position t,
    /// T at most the table's length); `inverse` turns by the
    /// opposite angle, which is the backward pass (a rotation's transpose is its inverse).
    pub fn apply(&self, x: &mut [f32], n_heads: usize, head_dim: usize, inverse: bool) {
        for (t, row) in x.chunks_exact_mut(n_heads * head_dim).enumerate() {
            let cs = &self.cos_sin[t * self.pairs..(t + 1) * self.pairs];
            for head in row.chunks_exact_mut(head_dim) {
                for (pair, &(c, s)) in head.chunks_exact_mut(2).zip(cs) {
                    let s = if inverse { -s } else { s };
                    let (x0, x1) = (pair[0], pair[1]);
                    pair[0] = x0 * c - x1 * s;
                    pair[1] = x0 * s + x1 * c;
                }
            }
        }
    }
}
// ANCHOR_END: rope

/// Heads of grouped-query attention.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

// ANCHOR: attention
/// Causal attention of one sequence: `q` is `T × n_heads·hd`, `k` and `v` are
/// `T × n_kv_heads·hd`; writes `out` (`T × n_heads·hd`) and returns the probabilities
/// (`n_heads × T × T`, zero above the diagonal) for the backward pass.
pub fn attention(h: Heads, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) -> Vec<f32> {
    let (qd, kd, hd) = (
        h.n_heads * h.head_dim,
        h.n_kv_heads * h.head_dim,
        h.head_dim,
    );
    let t_len = q.len() / qd;
    let group = h.n_heads / h.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut probs = vec![0.0f32; h.n_heads * t_len * t_len];
    out.fill(0.0);
    for head in 0..h.n_heads {
        let kv = head / group;
        for i in 0..t_len {
            let qi = &q[i * qd + head * hd..][..hd];
            let p = &mut probs[(head * t_len + i) * t_len..][..t_len];
            let mut max = f32::NEG_INFINITY;
            for (j, pj) in p.iter_mut().enumerate().take(i + 1) {
                let kj = &k[j * kd + kv * hd..][..hd];
                *pj = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
                max = max.max(*pj);
            }
            let mut sum = 0.0f32;
            for pj in &mut p[..=i] {
                *pj = (*pj - max).exp();
                sum += *pj;
            }
            let oi = &mut out[i * qd + head * hd..][..hd];
            for (j, pj) in p[..=i].iter_mut().enumerate() {
                *pj /= sum;
                let vj = &v[j * kd + kv * hd..][..hd];
                for (o, &x) in oi.iter_mut().zip(vj) {
                    *o += *pj * x;
                }
            }
        }
    }
    probs
}

/// Gradients of `q`, `k`, `v` (written, same shapes) from the gradient of the output.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    h: Heads,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    probs: &[f32],
    d_out: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let (qd, kd, hd) = (
        h.n_heads * h.head_dim,
        h.n_kv_heads * h.head_dim,
        h.head_dim,
    );
    let t_len = q.len() / qd;
    let group = h.n_heads / h.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    dq.fill(0.0);
    dk.fill(0.0);
    dv.fill(0.0);
    let mut ds = vec![0.0f32; t_len];
    for head in 0..h.n_heads {
        let kv = head / group;
        for i in 0..t_len {
            let p = &probs[(head * t_len + i) * t_len..][..=i];
            let doi = &d_out[i * qd + head * hd..][..hd];
            // dP_ij = dO_i · V_j; dS_ij = P_ij (dP_ij − Σ_j P_ij dP_ij)
            let mut weighted = 0.0f32;
            for (j, (&pj, dsj)) in p.iter().zip(ds.iter_mut()).enumerate() {
                let vj = &v[j * kd + kv * hd..][..hd];
                *dsj = doi.iter().zip(vj).map(|(a, b)| a * b).sum();
                weighted += pj * *dsj;
            }
            let qi = &q[i * qd + head * hd..][..hd];
            for (j, &pj) in p.iter().enumerate() {
                let g = pj * (ds[j] - weighted) * scale;
                let kj = &k[j * kd + kv * hd..][..hd];
                let dqi = &mut dq[i * qd + head * hd..][..hd];
                for (d, &x) in dqi.iter_mut().zip(kj) {
                    *d += g * x;
                }
                let dkj = &mut dk[j * kd + kv * hd..][..hd];
                for (d, &x) in dkj.iter_mut().zip(qi) {
                    *d += g * x;
                }
                let dvj = &mut dv[j * kd + kv * hd..][..hd];
                for (d, &x) in dvj.iter_mut().zip(doi) {
                    *d += pj * x;
                }
            }
        }
    }
}
// ANCHOR_END: attention

// ANCHOR: swiglu
/// h = silu(gate) · up, elementwise.
pub fn swiglu(gate: &[f32], up: &[f32], h: &mut [f32]) {
    for ((o, &g), &u) in h.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// d gate = dh · up · σ(g)(1 + g(1 − σ(g))), d up = dh · silu(g); written.
pub fn swiglu_backward(gate: &[f32], up: &[f32], dh: &[f32], d_gate: &mut [f32], d_up: &mut [f32]) {
    for i in 0..gate.len() {
        let g = gate[i];
        let s = 1.0 / (1.0 + (-g).exp());
        d_up[i] = dh[i] * g * s;
        d_gate[i] = dh[i] * up[i] * s * (1.0 + g * (1.0 - s));
    }
}
// ANCHOR_END: swiglu
