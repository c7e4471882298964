//! One transformer block of a forward step — RMSNorm → attention → residual → RMSNorm →
//! SwiGLU → residual — shared by the engine ([`super::Llama`]) and the parallel engines
//! (`crate::parallel`). A tensor-parallel shard runs this same code on its slice of the
//! weights (a config with its share of the heads and FFN columns); the only difference is
//! `reduce`, which sums the shards' partial products of the two row-parallel matrices
//! (attention output, down) before they join the residual stream. For one process `reduce`
//! does nothing.

use super::cache::KvCache;
use super::config::LlamaConfig;
use super::llama::{Layer, Site};
use super::ops::{add_in_place, rmsnorm, rope, swiglu};
use crate::attention::{self, AttentionKind, Heads, KvBatch};
use crate::kernels::matmul::{ActFormat, Acts, Matmul, QMatrix, matmul, matmul_many};
use crate::kernels::pool::ThreadPool;

/// Where the rows of a batched step come from: row r is token `positions[r]` of its
/// sequence; sequence s has `news[s]` new tokens starting at batch row `firsts[s]`.
pub struct StepRows<'s> {
    pub positions: &'s [usize],
    pub news: &'s [usize],
    pub firsts: &'s [usize],
}

/// Working buffers of one step of `rows` tokens through blocks shaped by a config.
pub struct Scratch {
    xn: Vec<f32>,   // (rows, dim): a norm's output
    q: Vec<f32>,    // (rows, n_heads · head_dim)
    k: Vec<f32>,    // (rows, n_kv_heads · head_dim)
    v: Vec<f32>,    // (rows, n_kv_heads · head_dim)
    att: Vec<f32>,  // (rows, n_heads · head_dim)
    proj: Vec<f32>, // (rows, dim): a row-parallel product, partial until reduced
    gate: Vec<f32>, // (rows, ffn_dim)
    up: Vec<f32>,   // (rows, ffn_dim)
}

impl Scratch {
    pub fn new(c: &LlamaConfig, rows: usize) -> Scratch {
        let (d, qd, kvd, f) = (c.dim, c.n_heads * c.head_dim, c.kv_dim(), c.ffn_dim);
        Scratch {
            xn: vec![0.0; rows * d],
            q: vec![0.0; rows * qd],
            k: vec![0.0; rows * kvd],
            v: vec![0.0; rows * kvd],
            att: vec![0.0; rows * qd],
            proj: vec![0.0; rows * d],
            gate: vec![0.0; rows * f],
            up: vec![0.0; rows * f],
        }
    }
}

/// The shapes and choices a block needs besides its weights.
#[derive(Clone, Copy)]
pub struct BlockShape<'c> {
    /// The (shard's) hyper-parameters: its query heads, KV heads and FFN width.
    pub config: &'c LlamaConfig,
    pub attention: AttentionKind,
}

// ANCHOR: run_block
/// Runs block `li` on the residual stream `x` ((rows, dim), updated in place), appending the
/// step's keys and values to `kv` (not committed). `observe` sees the inputs of the weight
/// matrices; `reduce` turns a partial row-parallel product ((rows, dim)) into the full one.
#[allow(clippy::too_many_arguments)]
pub fn run_block(
    pool: &ThreadPool,
    shape: BlockShape<'_>,
    li: usize,
    layer: &Layer<'_>,
    x: &mut [f32],
    rows: &StepRows<'_>,
    kv: &mut dyn KvBatch,
    s: &mut Scratch,
    observe: &mut dyn FnMut(usize, Site, &[f32]),
    reduce: &mut dyn FnMut(&mut [f32]),
) {
    let c = shape.config;
    let (d, kvd) = (c.dim, c.kv_dim());
    let heads = Heads {
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
    };
    observe(li, Site::BlockInput, x);
    // Attention: Q, K, V are column-parallel (a shard holds its heads' rows).
    rmsnorm(x, layer.attn_norm, c.rms_eps, &mut s.xn);
    observe(li, Site::AttnInput, &s.xn);
    let acts = ActsFor::new(&s.xn, d, &[&layer.wq, &layer.wk, &layer.wv]);
    matmul_many(
        pool,
        &mut [
            acts.product(&layer.wq, &mut s.q),
            acts.product(&layer.wk, &mut s.k),
            acts.product(&layer.wv, &mut s.v),
        ],
    );
    let p = rows.positions;
    rope(
        &mut s.q,
        p,
        c.n_heads,
        c.head_dim,
        c.rope_dims,
        c.rope_theta,
    );
    rope(
        &mut s.k,
        p,
        c.n_kv_heads,
        c.head_dim,
        c.rope_dims,
        c.rope_theta,
    );
    for (seq, (&first, &new)) in rows.firsts.iter().zip(rows.news).enumerate() {
        let r = first * kvd..(first + new) * kvd;
        kv.append(seq, li, &s.k[r.clone()], &s.v[r]);
    }
    let step = attention::Step {
        heads,
        q: &s.q,
        kv: &*kv,
        layer: li,
        new: rows.news,
        firsts: rows.firsts,
    };
    attention::attend(shape.attention, pool, &step, &mut s.att);
    observe(li, Site::AttnOutput, &s.att);
    // The output projection is row-parallel: each shard's product is a partial sum.
    let wo_acts = Acts::new(layer.wo.act_format(), &s.att, heads.q_dim());
    matmul(pool, &layer.wo, &wo_acts, &mut s.proj);
    reduce(&mut s.proj);
    add_in_place(x, &s.proj);

    // Feed-forward: gate and up column-parallel, down row-parallel.
    rmsnorm(x, layer.ffn_norm, c.rms_eps, &mut s.xn);
    observe(li, Site::FfnInput, &s.xn);
    let acts = ActsFor::new(&s.xn, d, &[&layer.w_gate, &layer.w_up]);
    matmul_many(
        pool,
        &mut [
            acts.product(&layer.w_gate, &mut s.gate),
            acts.product(&layer.w_up, &mut s.up),
        ],
    );
    swiglu(&mut s.gate, &s.up);
    observe(li, Site::DownInput, &s.gate);
    let down_acts = Acts::new(layer.w_down.act_format(), &s.gate, c.ffn_dim);
    matmul(pool, &layer.w_down, &down_acts, &mut s.proj);
    reduce(&mut s.proj);
    add_in_place(x, &s.proj);
}
// ANCHOR_END: run_block

/// Runs blocks `layers` (indices into `weights`) on `x` for one sequence of `kv`'s, then
/// commits the step's positions: what a pipeline stage does with its share of the blocks.
pub fn run_blocks_of_one(
    pool: &ThreadPool,
    shape: BlockShape<'_>,
    weights: &[Layer<'_>],
    layers: std::ops::Range<usize>,
    x: &mut [f32],
    kv: &mut KvCache,
) {
    let n = x.len() / shape.config.dim;
    let positions: Vec<usize> = (kv.len()..kv.len() + n).collect();
    let rows = StepRows {
        positions: &positions,
        news: &[n],
        firsts: &[0],
    };
    let mut scratch = Scratch::new(shape.config, n);
    for li in layers {
        run_block(
            pool,
            shape,
            li,
            &weights[li],
            x,
            &rows,
            kv,
            &mut scratch,
            &mut |_, _, _| {},
            &mut |_| {},
        );
    }
    KvBatch::commit(kv, 0, n);
}

/// One input quantized once per activation format its weight matrices need (Q, K and V
/// usually share one format, so the input is quantized once for all three).
struct ActsFor {
    made: Vec<(ActFormat, Acts)>,
}

impl ActsFor {
    fn new(x: &[f32], cols: usize, weights: &[&QMatrix]) -> ActsFor {
        let mut made: Vec<(ActFormat, Acts)> = Vec::new();
        for w in weights {
            let format = w.act_format();
            if !made.iter().any(|(f, _)| *f == format) {
                made.push((format, Acts::new(format, x, cols)));
            }
        }
        ActsFor { made }
    }

    /// The product of `w` with these activations, into `out`.
    fn product<'s, 'w>(&'s self, w: &'s QMatrix<'w>, out: &'s mut [f32]) -> Matmul<'s, 'w> {
        let format = w.act_format();
        let acts = &self
            .made
            .iter()
            .find(|(f, _)| *f == format)
            .expect("quantized in ActsFor::new")
            .1;
        Matmul { w, acts, out }
    }
}
