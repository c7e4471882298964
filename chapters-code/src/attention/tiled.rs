//! Tiled attention, FlashAttention's algorithm on a CPU. The keys and values are read in tiles
//! of [`BK`] positions; each query row keeps a running maximum `m`, a running sum `l` of
//! e^(score − m) and an unnormalized output `o`. When a tile raises the maximum, what was
//! accumulated is rescaled by e^(m_old − m_new) — so the softmax over all keys is exact without
//! ever holding a row of scores longer than one tile. Memory per task: a few tiles, whatever the
//! context length.
//!
//! Tiles are cut by position, never by batch: tile k covers positions `k·BK..(k+1)·BK` of the
//! sequence, and the keys are further grouped in segments of [`SEGMENT`] positions whose partial
//! results are merged by log-sum-exp in order. A query's arithmetic therefore depends on its
//! position and the keys only — not on how many queries share its block, which sequences share
//! the step, or the cache's layout — so tiled attention keeps batch invariance. Decoding (at
//! most [`BQ`] new tokens) runs the segments in parallel; prefill runs them in order within a
//! block of queries; both merge the same partials in the same order, so they give the same bits.

use super::tile_kernels::{self, TileInputs};
use super::{Heads, KvChunk, KvRows, SharedRows, Step};
use crate::kernels::ggml_exp::expf_nonpositive;
use crate::kernels::pool::ThreadPool;
use crate::kernels::simd;
use crate::quant::{QK, f16_to_f32};
use std::sync::Mutex;

/// Query positions per block (times the query heads of a group: the rows of one task).
pub const BQ: usize = 16;
/// Key positions per tile.
pub const BK: usize = 64;
/// Key positions per segment (a multiple of [`BK`]): the unit of the split over keys.
pub const SEGMENT: usize = 1024;

/// The running softmax of `rows` query rows: maximum, sum and unnormalized output
/// (`rows × head_dim`).
#[derive(Debug, Clone, PartialEq)]
pub struct RowState {
    pub m: Vec<f32>,
    pub l: Vec<f32>,
    pub o: Vec<f32>,
}

impl RowState {
    fn empty(rows: usize, hd: usize) -> RowState {
        RowState {
            m: vec![f32::NEG_INFINITY; rows],
            l: vec![0.0; rows],
            o: vec![0.0; rows * hd],
        }
    }
}

// ANCHOR: tile_loop
/// The online softmax of one block of query rows over the keys of positions `keys`
/// (`keys.start` a multiple of [`BK`]), starting from nothing. Row r is query position
/// `positions[r]` and sees keys `0..=positions[r]`; `q` holds its `head_dim` values, already
/// multiplied by 1/√head_dim. Compiled once per SIMD path (see `tile_kernels`): every
/// operation is written out, none fused, so each path gives the same bits.
/// `f16` converts a row of f16 bits to f32 (exactly: with F16C where the path has it).
#[inline(always)]
pub(crate) fn segment_body(
    inp: &TileInputs<'_>,
    keys: std::ops::Range<usize>,
    f16: impl Fn(&[u16], &mut [f32]) + Copy,
) -> RowState {
    let hd = inp.head_dim;
    let rows = inp.positions.len();
    let mut st = RowState::empty(rows, hd);
    let mut k_t = vec![0.0f32; hd * BK]; // the key tile, transposed: k_t[d·BK + j]
    let mut v = vec![0.0f32; BK * hd]; // the value tile: v[j·hd + d]
    let (mut s, mut p) = ([0.0f32; BK], [0.0f32; BK]);
    for k0 in keys.clone().step_by(BK) {
        let k1 = (k0 + BK).min(keys.end);
        gather_tile(inp, k0, k1, &mut k_t, &mut v, f16);
        for r in 0..rows {
            // Keys of this tile that row r sees (causal mask, by position).
            let valid = (inp.positions[r] + 1).min(k1).saturating_sub(k0);
            if valid == 0 {
                continue;
            }
            // s = q · Kᵀ for the tile: one row of the key tile per dimension.
            s.fill(0.0);
            for (d, &qd) in inp.q[r * hd..(r + 1) * hd].iter().enumerate() {
                for (s, &k) in s.iter_mut().zip(&k_t[d * BK..(d + 1) * BK]) {
                    *s += qd * k;
                }
            }
            let tile_max = s[..valid].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let m_new = st.m[r].max(tile_max);
            let alpha = expf_nonpositive(st.m[r] - m_new); // rescales what came before
            for (j, (p, &s)) in p.iter_mut().zip(&s).enumerate() {
                *p = if j < valid {
                    expf_nonpositive(s - m_new)
                } else {
                    0.0
                };
            }
            st.l[r] = st.l[r] * alpha + sum_tile(&p);
            let o = &mut st.o[r * hd..(r + 1) * hd];
            for o in o.iter_mut() {
                *o *= alpha;
            }
            for (&p, v) in p[..valid].iter().zip(v.chunks_exact(hd)) {
                for (o, &v) in o.iter_mut().zip(v) {
                    *o += p * v;
                }
            }
            st.m[r] = m_new;
        }
    }
    st
}
// ANCHOR_END: tile_loop

/// Σ p over a tile in a fixed order: 16 lanes, then a fixed tree.
#[inline(always)]
fn sum_tile(p: &[f32; BK]) -> f32 {
    let mut lanes = [0.0f32; 16];
    for chunk in p.chunks_exact(16) {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l += x;
        }
    }
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
    }
    lanes[0]
}

/// Positions `k0..k1` of this head's keys (transposed, into `k_t`) and values (into `v`) as
/// f32, zeros past `k1`.
#[inline(always)]
fn gather_tile(
    inp: &TileInputs<'_>,
    k0: usize,
    k1: usize,
    k_t: &mut [f32],
    v: &mut [f32],
    f16: impl Fn(&[u16], &mut [f32]) + Copy,
) {
    let hd = inp.head_dim;
    k_t.fill(0.0);
    v.fill(0.0);
    let mut key_row = vec![0.0f32; hd];
    for (j, pos) in (k0..k1).enumerate() {
        let (chunk, at) = inp.locate(pos);
        let head = inp.kv_head * hd..(inp.kv_head + 1) * hd;
        to_f32(
            chunk.keys.slice(at, inp.kv_dim, head.clone()),
            &mut key_row,
            f16,
        );
        for (d, &k) in key_row.iter().enumerate() {
            k_t[d * BK + j] = k;
        }
        to_f32(
            chunk.values.slice(at, inp.kv_dim, head),
            &mut v[j * hd..(j + 1) * hd],
            f16,
        );
    }
}

/// f16 bits to f32, one value at a time (the baseline path's conversion).
#[inline(always)]
pub(crate) fn f16_row_to_f32(src: &[u16], dst: &mut [f32]) {
    for (o, &h) in dst.iter_mut().zip(src) {
        *o = f16_to_f32(h);
    }
}

/// One head's row of a cache as f32.
#[inline(always)]
fn to_f32(row: KvRows<'_>, out: &mut [f32], f16: impl Fn(&[u16], &mut [f32])) {
    match row {
        KvRows::F16(h) => f16(h, out),
        KvRows::Q8_0(blocks) => {
            for (b, out) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
                let d = f16_to_f32(b.d);
                for (o, &q) in out.iter_mut().zip(&b.qs) {
                    *o = d * f32::from(q);
                }
            }
        }
    }
}

// ANCHOR: merge
/// Folds `b` (the same rows over later keys) into `a`: both rescaled to the larger maximum,
/// m = max(m_a, m_b), l = l_a·e^(m_a − m) + l_b·e^(m_b − m), o likewise.
pub fn merge(a: &mut RowState, b: &RowState, hd: usize) {
    for r in 0..a.m.len() {
        let m = a.m[r].max(b.m[r]);
        let (ca, cb) = (expf_nonpositive(a.m[r] - m), expf_nonpositive(b.m[r] - m));
        a.l[r] = a.l[r] * ca + b.l[r] * cb;
        for (oa, &ob) in a.o[r * hd..(r + 1) * hd].iter_mut().zip(&b.o[r * hd..]) {
            *oa = *oa * ca + ob * cb;
        }
        a.m[r] = m;
    }
}
// ANCHOR_END: merge

/// What one pool task computes.
#[derive(Debug, Clone, Copy)]
enum Task {
    /// Query positions `t0..t1` of sequence `s`, kv head `g`, over every segment in order.
    Block {
        s: usize,
        g: usize,
        t0: usize,
        t1: usize,
    },
    /// Every new query of sequence `s` (at most [`BQ`]), kv head `g`, over segment `seg` only.
    Split { s: usize, g: usize, seg: usize },
}

// ANCHOR: attend
/// Causal grouped-query attention of every new token of the step, tiled. The rows of a task
/// are its query positions times the query heads sharing kv head `g`, so a key tile is
/// gathered once for all of them.
pub fn attend(pool: &ThreadPool, step: &Step<'_>, out: &mut [f32]) {
    let heads = step.heads;
    let mut tasks = Vec::new();
    for (s, &n) in step.new.iter().enumerate() {
        let total = step.kv.len(s) + n;
        for g in 0..heads.n_kv_heads {
            if n <= BQ {
                tasks.extend((0..total.div_ceil(SEGMENT)).map(|seg| Task::Split { s, g, seg }));
            } else {
                tasks.extend((0..n).step_by(BQ).map(|t0| Task::Block {
                    s,
                    g,
                    t0,
                    t1: (t0 + BQ).min(n),
                }));
            }
        }
    }
    let partials: Vec<Mutex<Option<RowState>>> = tasks.iter().map(|_| Mutex::new(None)).collect();
    let shared = SharedRows::new(out);
    let path = tile_kernels::path(simd());
    pool.run(tasks.len(), &|i| match tasks[i] {
        Task::Block { s, g, t0, t1 } => {
            let inp = TileInputs::new(step, s, g, t0..t1);
            let last = inp.positions.iter().max().map_or(0, |&p| p + 1);
            let mut acc: Option<RowState> = None;
            for k0 in (0..last).step_by(SEGMENT) {
                let part = tile_kernels::segment(path, &inp, k0..(k0 + SEGMENT).min(last));
                match acc.as_mut() {
                    None => acc = Some(part),
                    Some(a) => merge(a, &part, heads.head_dim),
                }
            }
            write_rows(
                step,
                &shared,
                s,
                g,
                t0..t1,
                &acc.expect("every query sees a key"),
            );
        }
        Task::Split { s, g, seg } => {
            let inp = TileInputs::new(step, s, g, 0..step.new[s]);
            let last = inp.positions.iter().max().map_or(0, |&p| p + 1);
            let keys = seg * SEGMENT..((seg + 1) * SEGMENT).min(last);
            let part = tile_kernels::segment(path, &inp, keys);
            *partials[i].lock().unwrap() = Some(part);
        }
    });
    // The split sequences: their segments' partials, merged in order.
    let mut i = 0;
    while i < tasks.len() {
        let Task::Split { s, g, .. } = tasks[i] else {
            i += 1;
            continue;
        };
        let mut acc = partials[i].lock().unwrap().take().expect("computed");
        i += 1;
        while let Some(Task::Split { s: s2, g: g2, .. }) = tasks.get(i).copied() {
            if (s2, g2) != (s, g) {
                break;
            }
            merge(
                &mut acc,
                &partials[i].lock().unwrap().take().expect("computed"),
                heads.head_dim,
            );
            i += 1;
        }
        write_rows(step, &shared, s, g, 0..step.new[s], &acc);
    }
}
// ANCHOR_END: attend

/// out = o / l for query positions `ts` of sequence `s`, query heads of kv head `g`.
fn write_rows(
    step: &Step<'_>,
    shared: &SharedRows,
    s: usize,
    g: usize,
    ts: std::ops::Range<usize>,
    st: &RowState,
) {
    let heads = step.heads;
    let (hd, group, d) = (heads.head_dim, heads.group(), heads.q_dim());
    let mut row = vec![0.0f32; hd];
    for (i, t) in ts.enumerate() {
        for gh in 0..group {
            let r = i * group + gh;
            let inv = 1.0 / st.l[r];
            for (o, &x) in row.iter_mut().zip(&st.o[r * hd..(r + 1) * hd]) {
                *o = x * inv;
            }
            let h = g * group + gh;
            // SAFETY: each (sequence, position, query head) is written by exactly one task.
            unsafe { shared.write((step.firsts[s] + t) * d + h * hd, &row) };
        }
    }
}

impl<'a> TileInputs<'a> {
    /// The inputs of query positions `ts` (new-token indices) of sequence `s`, kv head `g`.
    pub(crate) fn new(
        step: &Step<'a>,
        s: usize,
        g: usize,
        ts: std::ops::Range<usize>,
    ) -> TileInputs<'a> {
        let Heads { head_dim: hd, .. } = step.heads;
        let (group, d) = (step.heads.group(), step.heads.q_dim());
        let start = step.kv.len(s);
        let chunks = step.kv.chunks(s, step.layer, start + step.new[s]);
        let mut chunk_starts = Vec::with_capacity(chunks.len());
        let mut at = 0;
        for c in &chunks {
            chunk_starts.push(at);
            at += c.len;
        }
        let scale = 1.0 / (hd as f32).sqrt();
        let mut q = Vec::with_capacity(ts.len() * group * hd);
        let mut positions = Vec::with_capacity(ts.len() * group);
        for t in ts {
            let row = (step.firsts[s] + t) * d;
            for gh in 0..group {
                let h = g * group + gh;
                q.extend(
                    step.q[row + h * hd..row + (h + 1) * hd]
                        .iter()
                        .map(|&x| x * scale),
                );
                positions.push(start + t);
            }
        }
        TileInputs {
            q,
            positions,
            head_dim: hd,
            kv_dim: step.heads.kv_dim(),
            kv_head: g,
            chunks,
            chunk_starts,
        }
    }

    /// The chunk holding position `pos`, and the row in it.
    #[inline(always)]
    fn locate(&self, pos: usize) -> (&KvChunk<'a>, usize) {
        let i = self.chunk_starts.partition_point(|&st| st <= pos) - 1;
        (&self.chunks[i], pos - self.chunk_starts[i])
    }
}
